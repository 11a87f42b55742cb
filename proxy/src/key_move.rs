//! Moving a request's keys from a migrating slot's source group to its target
//! before the request is served there.

use std::sync::Arc;

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

impl Session {
    /// Moves keys with `MIGRATE ... KEYS` from their source group to the target, one
    /// command per source; `NOKEY` (nothing there) is fine. Returns the error reply
    /// to send instead of serving the request if a move fails.
    pub(crate) async fn move_keys(&self, moves: Vec<KeyMove>) -> Result<(), Bytes> {
        let cfg = &self.ctx.config;
        for m in moves {
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
            let mut frame = Vec::new();
            kodis_common::resp::encode_array_header(&mut frame, args.len());
            for a in &args {
                kodis_common::resp::encode_bulk(&mut frame, a);
            }
            self.ctx.metrics.keys_moved.inc_by(m.keys.len() as u64);
            let rx = m.source.send(self.conn(), Bytes::from(frame)).await;
            let answer = rx.await.unwrap_or_else(|_| {
                Err(BackendError::ConnectionLost {
                    addr: m.source.addr().clone(),
                })
            });
            match answer {
                Ok(b) if b.starts_with(b"+OK") || b.starts_with(b"+NOKEY") => {}
                Ok(b) => {
                    let text = String::from_utf8_lossy(&b[1..]).trim_end().to_string();
                    return Err(reply::error(&format!(
                        "TRYAGAIN kodis-proxy could not move the key from {} to {}: {text}",
                        m.source.addr(),
                        m.target
                    )));
                }
                Err(e) => return Err(e.to_resp()),
            }
        }
        Ok(())
    }
}
