//! Moving a request's keys from a migrating slot's source group to its target
//! before the request is served there.

use std::sync::Arc;
use std::time::Duration;

use kodis_common::big_key;
use tokio::time::Instant;

use bytes::Bytes;

use crate::backend::BackendPool;
use crate::error::BackendError;
use crate::reply;
use crate::session::Session;

/// Keys of one request to move from a source group to the group their slot is
/// migrating to, before the request is served.
#[derive(Debug)]
pub struct KeyMove {
    /// The source group's master.
    pub source: Arc<BackendPool>,
    /// The target group's master, `host:port`.
    pub target: Arc<str>,
    /// The keys.
    pub keys: Vec<Bytes>,
}

/// First wait for a key in flight; doubled after each look, up to [`MAX_WAIT`].
const FIRST_WAIT: Duration = Duration::from_millis(1);
/// Longest wait between two looks at keys in flight.
const MAX_WAIT: Duration = Duration::from_millis(10);

/// What the source says of a request's keys before they are `MIGRATE`d.
#[derive(Debug, PartialEq, Eq)]
enum Split {
    /// None is in flight: `MIGRATE` moves those present (all small).
    Small,
    /// At least one is being moved in pieces by the dashboard (it may have been
    /// hidden just now, by this very call): the request waits.
    InFlight,
}

impl Session {
    /// Moves a request's keys from their source group to the target, one source at a
    /// time, before the request is served there. Returns the error reply to send
    /// instead if a move fails.
    ///
    /// Per source: `split_big` first (see [`kodis_common::big_key`]): it hides each
    /// big key (the dashboard moves it in pieces) and says whether any key is in
    /// flight. If one is, the request is held, asking again with backoff, until the
    /// dashboard has made it visible on the target and taken it out of the in-flight
    /// set (a `-TRYAGAIN` after `migrate_timeout_ms`); other sessions go on. Then
    /// `MIGRATE ... KEYS` moves the rest; `NOKEY` (nothing there) is fine.
    ///
    /// The dashboard makes a key visible on the target before it takes it out of
    /// the in-flight set, so "not in flight" after a MIGRATE means: on the target,
    /// or nowhere.
    pub(crate) async fn move_keys(&self, moves: Vec<KeyMove>) -> Result<(), Bytes> {
        let cfg = &self.ctx.config;
        for m in moves {
            let deadline = Instant::now() + Duration::from_millis(cfg.migrate_timeout_ms);
            loop {
                self.wait_in_flight(&m, deadline).await?;
                self.migrate(&m).await?;
                // Once more after the MIGRATE: the dashboard may have hidden one of
                // the keys in between (its threshold may be lower than this proxy's);
                // MIGRATE then skipped it, and it is not on the target yet. After the
                // MIGRATE no key of `m` is left visible on the source to be hidden.
                if self.split_big(&m).await? == Split::Small {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Asks `split_big` until none of the keys of `m` is in flight, with backoff;
    /// `-TRYAGAIN` past `deadline`.
    async fn wait_in_flight(&self, m: &KeyMove, deadline: Instant) -> Result<(), Bytes> {
        let mut wait = FIRST_WAIT;
        while self.split_big(m).await? == Split::InFlight {
            if Instant::now() + wait > deadline {
                return Err(reply::error(&format!(
                    "TRYAGAIN kodis: a key of this request is being moved from {} to {} \
                     in pieces; not done within {} ms",
                    m.source.addr(),
                    m.target,
                    self.ctx.config.migrate_timeout_ms
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_WAIT);
        }
        Ok(())
    }

    /// Sends `frame` to the source of `m` and waits for its reply.
    async fn ask(&self, m: &KeyMove, frame: Vec<u8>) -> Result<Bytes, Bytes> {
        let rx = m.source.send(self.conn(), Bytes::from(frame)).await;
        rx.await
            .unwrap_or_else(|_| {
                Err(BackendError::ConnectionLost {
                    addr: m.source.addr().clone(),
                })
            })
            .map_err(|e| e.to_resp())
    }

    /// One `split_big` call on the source of `m` for its keys.
    async fn split_big(&self, m: &KeyMove) -> Result<Split, Bytes> {
        let cfg = &self.ctx.config;
        let names = big_key::split_big_keys(m.keys.iter().map(|k| k.as_ref()));
        let (n, elements, bytes) = (
            names.len().to_string(),
            cfg.migrate_big_key_elements.to_string(),
            cfg.migrate_big_key_bytes.to_string(),
        );
        let mut args: Vec<&[u8]> = vec![b"EVAL", big_key::SPLIT_BIG.as_bytes(), n.as_bytes()];
        args.extend(names.iter().map(Vec::as_slice));
        args.extend([elements.as_bytes(), bytes.as_bytes()]);
        let answer = self.ask(m, frame(&args)).await?;
        match split_answer(&answer) {
            Some(s) => Ok(s),
            None => {
                let text = String::from_utf8_lossy(answer.get(1..).unwrap_or_default())
                    .trim_end()
                    .to_string();
                Err(reply::error(&format!(
                    "TRYAGAIN kodis-proxy could not move the key from {} to {}: {text}",
                    m.source.addr(),
                    m.target
                )))
            }
        }
    }

    /// `MIGRATE ... KEYS` of the keys of `m`.
    async fn migrate(&self, m: &KeyMove) -> Result<(), Bytes> {
        let cfg = &self.ctx.config;
        let Some((host, port)) = m.target.rsplit_once(':') else {
            return Err(reply::error(&format!(
                "ERR kodis: bad target address {}",
                m.target
            )));
        };
        let timeout = cfg.migrate_timeout_ms.to_string();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            b"",
            b"0",
            timeout.as_bytes(),
        ];
        // The target logs MIGRATE in as `default`, not as the data-plane user:
        // MIGRATE sends SELECT to its target, which that user may not run.
        if let Some(pw) = &cfg.backend_password {
            args.extend([b"AUTH".as_slice(), pw.as_bytes()]);
        }
        args.push(b"KEYS");
        args.extend(m.keys.iter().map(|k| k.as_ref()));
        self.ctx.metrics.keys_moved.inc_by(m.keys.len() as u64);
        let b = self.ask(m, frame(&args)).await?;
        if b.starts_with(b"+OK") || b.starts_with(b"+NOKEY") {
            return Ok(());
        }
        let text = String::from_utf8_lossy(b.get(1..).unwrap_or_default())
            .trim_end()
            .to_string();
        Err(reply::error(&format!(
            "TRYAGAIN kodis-proxy could not move the key from {} to {}: {text}",
            m.source.addr(),
            m.target
        )))
    }
}

/// A RESP array of bulk strings.
fn frame(args: &[&[u8]]) -> Vec<u8> {
    let mut frame = Vec::new();
    kodis_common::resp::encode_array_header(&mut frame, args.len());
    for a in args {
        kodis_common::resp::encode_bulk(&mut frame, a);
    }
    frame
}

/// `split_big`'s answer (a bulk string of `0`s and `1`s); `None`: an error.
fn split_answer(reply: &[u8]) -> Option<Split> {
    let rest = reply.strip_prefix(b"$")?;
    let end = rest.iter().position(|&b| b == b'\r')?;
    let body = rest.get(end + 2..)?;
    let len: usize = std::str::from_utf8(&rest[..end]).ok()?.parse().ok()?;
    let flags = body.get(..len)?;
    if flags.contains(&b'1') {
        Some(Split::InFlight)
    } else {
        Some(Split::Small)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_answers() {
        assert_eq!(split_answer(b"$3\r\n000\r\n"), Some(Split::Small));
        assert_eq!(split_answer(b"$3\r\n010\r\n"), Some(Split::InFlight));
        assert_eq!(split_answer(b"$0\r\n\r\n"), Some(Split::Small));
        assert_eq!(
            split_answer(b"-KODIS stream s has consumer groups\r\n"),
            None
        );
        assert_eq!(split_answer(b"$3\r\n0"), None);
    }
}
