//! Moving big keys in pieces during a slot migration (docs/big-key-migration.md).
//!
//! A big key is first *hidden* on the source by `split_big` (renamed to its
//! `moving:` name and listed in its slot's in-flight hash; the proxies hold requests
//! for it from then on). Then, with every command O(chunk) on both servers:
//!
//! 1. its elements are copied in chunks to its `incoming:` name on the target
//!    (HSCAN/SSCAN/ZSCAN/LRANGE/XRANGE/GETRANGE -> HSET/SADD/ZADD/RPUSH/XADD/APPEND),
//!    reading the next chunk while the last one is written;
//! 2. its absolute expiry is set on the copy, its state becomes `renaming` on the
//!    source, and `RENAMENX incoming key` makes it visible on the target;
//! 3. `HDEL inflight key; UNLINK moving:key` in one transaction on the source
//!    (UNLINK frees the value in a background thread).
//!
//! The hidden key is the truth until step 3, so a crash anywhere is recovered by
//! starting over (the copy is dropped), except after the rename: a key on the
//! target with the state `renaming` and no copy left is the renamed copy (no client
//! writes it while it is in flight), and only step 3 is left.

use std::time::Duration;

use kodis_common::big_key::{self, HIDDEN, RENAMING};
use kodis_common::slot::key_slot;

use crate::error::ApiError;
use crate::servers::Servers;

/// Members of the in-flight hashes among `KEYS`, flat: key, state, key, state...
const IN_FLIGHT: &str = "local r = {} for _, h in ipairs(KEYS) do \
    local m = redis.call('HGETALL', h) for i = 1, #m do r[#r + 1] = m[i] end end return r";

/// Most in-flight hashes looked at by one script call (each an O(1) miss when
/// empty): keeps the call well under a millisecond.
const HASHES_PER_CALL: usize = 512;

/// How long a replica of the target may take to acknowledge a big key made visible
/// there before the move is retried (see `Mover::target_replicated`).
pub const REPLICA_WAIT: Duration = Duration::from_secs(5);

/// `master_repl_offset` of an `INFO replication` text; `None` unless it is a master.
fn master_offset(info: &str) -> Option<i64> {
    if !info.lines().any(|l| l.trim_end() == "role:master") {
        return None;
    }
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The acknowledged offsets of a master's online replicas (`slaveN:...,state=online,
/// offset=N,...` lines of `INFO replication`).
fn replica_offsets(info: &str) -> Vec<i64> {
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
        .filter_map(|l| {
            l.split(',')
                .find_map(|f| f.strip_prefix("offset="))
                .and_then(|v| v.trim().parse().ok())
        })
        .collect()
}

/// How big keys are told apart and moved.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A key with at least this many elements is big.
    pub elements: u64,
    /// A key of at least this many bytes is big.
    pub bytes: u64,
    /// Elements per command of the copy (strings: KiB per piece).
    pub chunk: usize,
    /// Most elements (string KiB) copied per second, as the migration's keys per
    /// second limit counts small keys: one element costs the servers about what a
    /// small key does (0: no limit).
    pub per_sec: u64,
}

/// Where a big key's move stands, for `kodis migrations`.
pub trait Report: Sync {
    /// `copied` of `total` elements (bytes for a string) of `key`, of type `kind`,
    /// are on the target.
    fn copied(&self, key: &[u8], kind: &str, copied: u64, total: u64);
}

/// `split_big` on `source` for `keys`: whether each is in flight (hidden before, or
/// now because it is big). A big key that cannot move in pieces (a module's type)
/// fails the call, naming it; nothing is hidden then.
pub async fn split(
    servers: &Servers,
    source: &str,
    keys: &[Vec<u8>],
    limits: &Limits,
) -> Result<Vec<bool>, ApiError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let names = big_key::split_big_keys(keys.iter().map(Vec::as_slice));
    let args = [
        limits.elements.to_string().into_bytes(),
        limits.bytes.to_string().into_bytes(),
    ];
    let flags: Vec<u8> = servers
        .bulk_eval(source, big_key::SPLIT_BIG, &names, &args)
        .await?;
    Ok(flags.iter().map(|&f| f == b'1').collect())
}

/// The keys in flight on `source` among the keys of `slots`, with their state.
pub async fn in_flight(
    servers: &Servers,
    source: &str,
    slots: impl IntoIterator<Item = u16>,
) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
    let hashes: Vec<Vec<u8>> = slots.into_iter().map(big_key::inflight_hash).collect();
    let mut out = Vec::new();
    for part in hashes.chunks(HASHES_PER_CALL) {
        let flat: Vec<Vec<u8>> = servers.bulk_eval(source, IN_FLIGHT, part, &[]).await?;
        let mut it = flat.into_iter();
        while let (Some(k), Some(s)) = (it.next(), it.next()) {
            out.push((k, s));
        }
    }
    Ok(out)
}

fn server_error(addr: &str, cause: String) -> ApiError {
    ApiError::Server {
        addr: addr.to_string(),
        cause,
    }
}

/// One big key's move from `source` to `target`.
pub struct Mover<'a> {
    /// The servers' connections.
    pub servers: &'a Servers,
    /// The source master.
    pub source: &'a str,
    /// The target master.
    pub target: &'a str,
    /// Chunk sizes.
    pub limits: Limits,
}

impl std::fmt::Debug for Mover<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mover")
            .field("source", &self.source)
            .field("target", &self.target)
            .finish()
    }
}

/// What the next chunk is read from.
enum Reader {
    /// HSCAN, SSCAN or ZSCAN from a cursor.
    Scan {
        cmd: &'static str,
        cursor: Option<u64>,
    },
    /// LRANGE from an index.
    List { next: i64, len: i64 },
    /// GETRANGE from an offset.
    Str { next: i64, len: i64 },
    /// XRANGE after an ID (`None`: from the start; `Some("")`: done).
    Stream { after: Option<String> },
}

impl Mover<'_> {
    async fn src<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T, ApiError> {
        self.servers.bulk(self.source, cmd).await
    }

    async fn dst<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> Result<T, ApiError> {
        self.servers.bulk(self.target, cmd).await
    }

    /// Moves `key`, in flight with `state`, to the target; done when it returns Ok:
    /// visible on the target, gone from the source and from the in-flight hash.
    pub async fn move_key(
        &self,
        key: &[u8],
        state: &[u8],
        report: &dyn Report,
    ) -> Result<(), ApiError> {
        let slot = key_slot(key);
        let (hash, moving, incoming) = (
            big_key::inflight_hash(slot),
            big_key::moving_key(key),
            big_key::incoming_key(key),
        );
        let on_target: i64 = self.dst(redis::cmd("EXISTS").arg(key)).await?;
        if on_target > 0 {
            let copy: i64 = self.dst(redis::cmd("EXISTS").arg(&incoming)).await?;
            if state == RENAMING.as_bytes() && copy == 0 {
                // A migrator stopped between the rename and step 3.
                self.target_replicated(key).await?;
                return self.finish(&hash, key, &moving).await;
            }
            return Err(self.busy(key));
        }
        // From the start: a copy left by a stopped migrator is dropped.
        let _: i64 = self.dst(redis::cmd("UNLINK").arg(&incoming)).await?;
        if state != HIDDEN.as_bytes() {
            let _: i64 = self
                .src(redis::cmd("HSET").arg(&hash).arg(key).arg(HIDDEN))
                .await?;
        }
        let kind: String = self.src(redis::cmd("TYPE").arg(&moving)).await?;
        if kind == "none" {
            // Expired while hidden: nothing to move.
            return self.finish(&hash, key, &moving).await;
        }
        let expire_at: i64 = self.src(redis::cmd("PEXPIRETIME").arg(&moving)).await?;
        self.copy(key, &kind, &moving, &incoming, report).await?;
        let still: i64 = self.src(redis::cmd("EXISTS").arg(&moving)).await?;
        if still == 0 {
            // Expired during the copy: so would the copy have.
            let _: i64 = self.dst(redis::cmd("UNLINK").arg(&incoming)).await?;
            return self.finish(&hash, key, &moving).await;
        }
        if expire_at > 0 {
            let _: i64 = self
                .dst(redis::cmd("PEXPIREAT").arg(&incoming).arg(expire_at))
                .await?;
        }
        let _: i64 = self
            .src(redis::cmd("HSET").arg(&hash).arg(key).arg(RENAMING))
            .await?;
        let renamed: Result<i64, ApiError> = self
            .dst(redis::cmd("RENAMENX").arg(&incoming).arg(key))
            .await;
        match renamed {
            Ok(1) => {}
            Ok(_) => return Err(self.busy(key)),
            // The copy expired on the target the moment its expiry was set (the
            // hidden key is about to): nothing to make visible.
            Err(ApiError::Server { cause, .. }) if cause.contains("no such key") => {}
            Err(e) => return Err(e),
        }
        self.target_replicated(key).await?;
        self.finish(&hash, key, &moving).await
    }

    /// Returns once a replica of the target has all the target master has now (at
    /// once when it has none online): the source's copy is removed only after that,
    /// so a failover of the target right after the rename cannot lose the key. Past
    /// [`REPLICA_WAIT`] it fails, and the move is tried again (from its last step).
    async fn target_replicated(&self, key: &[u8]) -> Result<(), ApiError> {
        let info: String = self.dst(redis::cmd("INFO").arg("replication")).await?;
        let Some(goal) = master_offset(&info) else {
            return Ok(());
        };
        let deadline = tokio::time::Instant::now() + REPLICA_WAIT;
        let mut info = info;
        loop {
            let offsets = replica_offsets(&info);
            if offsets.is_empty() || offsets.iter().any(|&o| o >= goal) {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(server_error(
                    self.target,
                    format!(
                        "kodis: no replica of the target acknowledged big key {:?} within \
                         {REPLICA_WAIT:?}; its source copy is kept and the move retried",
                        String::from_utf8_lossy(key)
                    ),
                ));
            }
            // WAIT makes the master ask its replicas for their offsets at once
            // (they report them by themselves only every second).
            let _: i64 = self.dst(redis::cmd("WAIT").arg(1).arg(50)).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            info = self.dst(redis::cmd("INFO").arg("replication")).await?;
        }
    }

    fn busy(&self, key: &[u8]) -> ApiError {
        server_error(
            self.target,
            format!(
                "BUSYKEY kodis: key {:?} exists on the target while it moves in pieces \
                 from {}; delete one of them (the migration resumes by itself)",
                String::from_utf8_lossy(key),
                self.source
            ),
        )
    }

    /// Step 3: out of the in-flight hash and off the source, in one transaction.
    async fn finish(&self, hash: &[u8], key: &[u8], moving: &[u8]) -> Result<(), ApiError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HDEL")
            .arg(hash)
            .arg(key)
            .ignore()
            .cmd("UNLINK")
            .arg(moving)
            .ignore();
        let () = self.servers.bulk_pipe(self.source, &pipe).await?;
        Ok(())
    }

    /// Step 1 and a stream's last ID and counters.
    async fn copy(
        &self,
        key: &[u8],
        kind: &str,
        moving: &[u8],
        incoming: &[u8],
        report: &dyn Report,
    ) -> Result<(), ApiError> {
        let (len_cmd, mut reader) = match kind {
            "hash" => (
                "HLEN",
                Reader::Scan {
                    cmd: "HSCAN",
                    cursor: Some(0),
                },
            ),
            "set" => (
                "SCARD",
                Reader::Scan {
                    cmd: "SSCAN",
                    cursor: Some(0),
                },
            ),
            "zset" => (
                "ZCARD",
                Reader::Scan {
                    cmd: "ZSCAN",
                    cursor: Some(0),
                },
            ),
            "list" => ("LLEN", Reader::List { next: 0, len: 0 }),
            "string" => ("STRLEN", Reader::Str { next: 0, len: 0 }),
            "stream" => ("XLEN", Reader::Stream { after: None }),
            other => {
                return Err(server_error(
                    self.source,
                    format!(
                        "kodis: key {:?} has the type {other}, which cannot move in pieces: \
                         move it by hand",
                        String::from_utf8_lossy(key)
                    ),
                ))
            }
        };
        let total: i64 = self.src(redis::cmd(len_cmd).arg(moving)).await?;
        if let Reader::List { len, .. } | Reader::Str { len, .. } = &mut reader {
            *len = total;
        }
        let total = total.max(0) as u64;
        report.copied(key, kind, 0, total);
        let mut copied = 0u64;
        let mut write: Option<(redis::Pipeline, u64)> = None;
        loop {
            let send = async {
                match &write {
                    Some((p, _)) => self.servers.bulk_pipe::<()>(self.target, p).await,
                    None => Ok(()),
                }
            };
            let (read, sent) = tokio::join!(self.next(&mut reader, moving, incoming), send);
            sent?;
            if let Some((_, n)) = write.take() {
                copied += n;
                report.copied(key, kind, copied.min(total), total);
                // Spread the chunks so that the long-run rate stays under the limit.
                let units = if kind == "string" {
                    n.div_ceil(1024)
                } else {
                    n
                };
                if let Some(ms) = (units * 1000).checked_div(self.limits.per_sec) {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            match read? {
                // An empty step of a scan: nothing to send.
                Some((_, 0)) => {}
                Some(chunk) => write = Some(chunk),
                None => break,
            }
        }
        if kind == "stream" {
            self.stream_ids(moving, incoming).await?;
            crate::stream_groups::copy(
                self.servers,
                self.source,
                self.target,
                moving,
                incoming,
                self.limits.chunk,
            )
            .await?;
        }
        report.copied(key, kind, total, total);
        Ok(())
    }

    /// The next chunk as commands for the target, and how many elements it holds;
    /// `None`: all read.
    async fn next(
        &self,
        reader: &mut Reader,
        moving: &[u8],
        incoming: &[u8],
    ) -> Result<Option<(redis::Pipeline, u64)>, ApiError> {
        let chunk = self.limits.chunk;
        let mut pipe = redis::pipe();
        match reader {
            Reader::Scan { cmd, cursor } => {
                let Some(c) = *cursor else {
                    return Ok(None);
                };
                let (next, items): (u64, Vec<Vec<u8>>) = self
                    .src(redis::cmd(cmd).arg(moving).arg(c).arg("COUNT").arg(chunk))
                    .await?;
                *cursor = (next != 0).then_some(next);
                if items.is_empty() {
                    // An empty step of the scan; the next one may not be.
                    return Ok(Some((pipe, 0)));
                }
                let n = match *cmd {
                    "HSCAN" => {
                        pipe.cmd("HSET").arg(incoming).arg(&items).ignore();
                        items.len() / 2
                    }
                    "SSCAN" => {
                        pipe.cmd("SADD").arg(incoming).arg(&items).ignore();
                        items.len()
                    }
                    _ => {
                        // ZSCAN gives member, score; ZADD takes score, member.
                        let c = pipe.cmd("ZADD").arg(incoming);
                        for pair in items.chunks(2) {
                            if let [member, score] = pair {
                                c.arg(score).arg(member);
                            }
                        }
                        c.ignore();
                        items.len() / 2
                    }
                };
                Ok(Some((pipe, n as u64)))
            }
            Reader::List { next, len } => {
                if *next >= *len {
                    return Ok(None);
                }
                let last = *next + chunk as i64 - 1;
                let items: Vec<Vec<u8>> = self
                    .src(redis::cmd("LRANGE").arg(moving).arg(*next).arg(last))
                    .await?;
                *next = last + 1;
                if items.is_empty() {
                    return Ok(None);
                }
                pipe.cmd("RPUSH").arg(incoming).arg(&items).ignore();
                Ok(Some((pipe, items.len() as u64)))
            }
            Reader::Str { next, len } => {
                if *next >= *len {
                    return Ok(None);
                }
                let last = *next + (chunk as i64) * 1024 - 1;
                let piece: Vec<u8> = self
                    .src(redis::cmd("GETRANGE").arg(moving).arg(*next).arg(last))
                    .await?;
                *next = last + 1;
                if piece.is_empty() {
                    return Ok(None);
                }
                pipe.cmd("APPEND").arg(incoming).arg(&piece).ignore();
                Ok(Some((pipe, piece.len() as u64)))
            }
            Reader::Stream { after } => {
                let start = match after.as_deref() {
                    Some("") => return Ok(None),
                    Some(id) => format!("({id}"),
                    None => "-".to_string(),
                };
                let entries: Vec<(String, Vec<Vec<u8>>)> = self
                    .src(
                        redis::cmd("XRANGE")
                            .arg(moving)
                            .arg(&start)
                            .arg("+")
                            .arg("COUNT")
                            .arg(chunk),
                    )
                    .await?;
                let Some((last, _)) = entries.last() else {
                    *after = Some(String::new());
                    return Ok(None);
                };
                *after = Some(if entries.len() < chunk {
                    String::new()
                } else {
                    last.clone()
                });
                for (id, fields) in &entries {
                    pipe.cmd("XADD").arg(incoming).arg(id).arg(fields).ignore();
                }
                Ok(Some((pipe, entries.len() as u64)))
            }
        }
    }

    /// Gives the copy of a stream the source's last ID, entries-added counter and
    /// max deleted ID (XADD set them from the copied entries only).
    async fn stream_ids(&self, moving: &[u8], incoming: &[u8]) -> Result<(), ApiError> {
        let info: Vec<redis::Value> = self
            .src(redis::cmd("XINFO").arg("STREAM").arg(moving))
            .await?;
        let field = |name: &str| -> Option<String> {
            info.chunks(2).find_map(|p| match p {
                [redis::Value::BulkString(n), v] if n.as_slice() == name.as_bytes() => {
                    redis::from_redis_value::<String>(v.clone()).ok()
                }
                _ => None,
            })
        };
        let (Some(last), Some(added), Some(deleted)) = (
            field("last-generated-id"),
            field("entries-added"),
            field("max-deleted-entry-id"),
        ) else {
            return Err(server_error(
                self.source,
                "kodis: XINFO STREAM lacks last-generated-id, entries-added or \
                 max-deleted-entry-id (Redis 7 or later is needed)"
                    .into(),
            ));
        };
        let _: String = self
            .dst(
                redis::cmd("XSETID")
                    .arg(incoming)
                    .arg(&last)
                    .arg("ENTRIESADDED")
                    .arg(&added)
                    .arg("MAXDELETEDID")
                    .arg(&deleted),
            )
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A master's offset and its online replicas' offsets are read from `INFO
    /// replication`; a replica's text has no master offset to wait for.
    #[test]
    fn replication_offsets_are_read_from_info() {
        let master = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
                      slave0:ip=127.0.0.1,port=7001,state=online,offset=120,lag=0\r\n\
                      slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=0\r\n\
                      master_failover_state:no-failover\r\nmaster_repl_offset:150\r\n";
        assert_eq!(master_offset(master), Some(150));
        assert_eq!(replica_offsets(master), vec![120]);
        let replica = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
                       master_repl_offset:150\r\n";
        assert_eq!(master_offset(replica), None);
        assert!(replica_offsets("role:master\r\nconnected_slaves:0\r\n").is_empty());
    }
}
