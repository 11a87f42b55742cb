//! Moving the keys of a request in a migrating slot to their new owner before it is
//! served there (see [`crate::key_move`] for the move itself).

use super::Session;
use crate::error::BackendError;
use crate::key_move::{
    could_not_move, dedup, frame, split_answer, KeyMove, Split, FIRST_WAIT, MAX_WAIT,
};
use crate::reply;
use bytes::Bytes;
use kodis_common::big_key;
use std::time::Duration;
use tokio::time::Instant;

impl Session {
    /// Moves a request's keys from their source group to the target, one source at a
    /// time, before the request is served there. Returns the error reply to send
    /// instead if a move fails.
    ///
    /// Per source, three commands back to back on this session's connection (one
    /// round trip; the source runs them in order):
    ///
    /// 1. `split_big` (see [`kodis_common::big_key`]) hides each big key, which the
    ///    dashboard then moves in pieces, so that the MIGRATE never moves one whole;
    /// 2. `MIGRATE ... KEYS` moves the rest (`NOKEY`: none there, or all hidden);
    /// 3. `split_big` again: is any key in flight? The dashboard may have hidden one
    ///    before the MIGRATE (its threshold may be lower than this proxy's); after the
    ///    MIGRATE no key of the request is left visible on the source to be hidden.
    ///
    /// While a key is in flight the request is held, the three sent again with
    /// backoff, until the dashboard has made the key visible on the target and then
    /// taken it out of the in-flight hash (`-TRYAGAIN` after `migrate_timeout_ms`).
    /// Other sessions go on; requests behind this one on its session wait, as
    /// replies go back in order.
    pub(crate) async fn move_keys(&self, moves: Vec<KeyMove>) -> Result<(), Bytes> {
        let cfg = &self.ctx.config;
        for mut m in moves {
            dedup(&mut m.keys);
            let deadline = Instant::now() + Duration::from_millis(cfg.migrate_timeout_ms);
            let mut wait = FIRST_WAIT;
            let split = self.split_frame(&m);
            let migrate = self.migrate_frame(&m)?;
            self.ctx.metrics.keys_moved.inc_by(m.keys.len() as u64);
            loop {
                let hide = self.send(&m, split.clone()).await;
                let moved = self.send(&m, migrate.clone()).await;
                let check = self.send(&m, split.clone()).await;
                self.split_reply(&m, hide.await)?;
                self.migrate_reply(&m, moved.await)?;
                if self.split_reply(&m, check.await)? == Split::Small {
                    self.ctx.moved_keys.remember(m.epoch, &m.keys);
                    break;
                }
                if Instant::now() + wait > deadline {
                    return Err(reply::error(&format!(
                        "TRYAGAIN kodis: a key of this request is being moved from {} to {} \
                         in pieces; not done within {} ms",
                        m.source.addr(),
                        m.target,
                        cfg.migrate_timeout_ms
                    )));
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_WAIT);
            }
        }
        Ok(())
    }

    /// Queues `frame` on this session's connection to the source of `m`.
    async fn send(&self, m: &KeyMove, frame: Bytes) -> crate::backend::ReplyRx {
        m.source.send(self.conn(), frame).await
    }

    /// The `split_big` call for the keys of `m`.
    fn split_frame(&self, m: &KeyMove) -> Bytes {
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
        Bytes::from(frame(&args))
    }

    /// `MIGRATE ... KEYS` of the keys of `m`.
    fn migrate_frame(&self, m: &KeyMove) -> Result<Bytes, Bytes> {
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
        Ok(Bytes::from(frame(&args)))
    }

    /// The reply that came on `rx`, or the error reply for the client.
    fn answer(
        m: &KeyMove,
        rx: Result<crate::backend::BackendResult, crate::reply_slot::Closed>,
    ) -> Result<Bytes, Bytes> {
        rx.unwrap_or_else(|_| {
            Err(BackendError::ConnectionLost {
                addr: m.source.addr().clone(),
            })
        })
        .map_err(|e| e.to_resp())
    }

    /// What `split_big` said, or the error reply for the client.
    fn split_reply(
        &self,
        m: &KeyMove,
        rx: Result<crate::backend::BackendResult, crate::reply_slot::Closed>,
    ) -> Result<Split, Bytes> {
        let answer = Self::answer(m, rx)?;
        split_answer(&answer).ok_or_else(|| could_not_move(m, &answer))
    }

    /// `OK` or `NOKEY` from MIGRATE, or the error reply for the client.
    fn migrate_reply(
        &self,
        m: &KeyMove,
        rx: Result<crate::backend::BackendResult, crate::reply_slot::Closed>,
    ) -> Result<(), Bytes> {
        let b = Self::answer(m, rx)?;
        if b.starts_with(b"+OK") || b.starts_with(b"+NOKEY") {
            return Ok(());
        }
        Err(could_not_move(m, &b))
    }
}
