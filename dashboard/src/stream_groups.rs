//! A big stream's consumer groups, copied to its copy on the target after its entries
//! (see [`crate::big_keys`]): each group with its last delivered ID and entries-read
//! counter, its consumers, and its pending entries list with each entry's consumer,
//! idle time and delivery count. `MIGRATE` carries all of that for a small stream;
//! for one moved in pieces it is rebuilt with commands stock Redis has:
//! `XGROUP CREATE ... ENTRIESREAD`, `XGROUP CREATECONSUMER`, and
//! `XCLAIM ... IDLE RETRYCOUNT FORCE JUSTID`, which puts an entry in a consumer's
//! pending list as it was, read in chunks with `XPENDING`.
//!
//! The stream is hidden while this runs (clients' requests for it are held), so the
//! groups do not change meanwhile. Not carried over: a consumer's seen and active
//! times (Redis has no command that sets them: they start again at the copy), and a
//! pending entry whose message was deleted (`XDEL`) from the stream (`XCLAIM` cannot
//! claim a message that is not there; the source would drop it at the next claim
//! anyway). Both are logged.

use redis::Value;
use tracing::warn;

use crate::error::ApiError;
use crate::servers::Servers;

/// What was copied: groups, consumers and pending entries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Consumer groups created on the target.
    pub groups: u64,
    /// Consumers created on the target.
    pub consumers: u64,
    /// Pending entries claimed on the target.
    pub pending: u64,
}

/// One consumer group as `XINFO GROUPS` shows it.
#[derive(Debug)]
struct Group {
    name: Vec<u8>,
    last_delivered: Vec<u8>,
    /// `None` when Redis does not know it (a group created at an arbitrary ID).
    entries_read: Option<i64>,
    pending: i64,
}

/// Copies the consumer groups of stream `from` on `source` to stream `to` on
/// `target` (whose entries and last ID are already copied), reading the pending
/// entries `chunk` at a time.
pub async fn copy(
    servers: &Servers,
    source: &str,
    target: &str,
    from: &[u8],
    to: &[u8],
    chunk: usize,
) -> Result<Copied, ApiError> {
    let mut copied = Copied::default();
    let groups: Vec<Value> = servers
        .bulk(source, redis::cmd("XINFO").arg("GROUPS").arg(from))
        .await?;
    for g in &groups {
        let g = group(g).ok_or_else(|| unexpected(source, "XINFO GROUPS", g))?;
        let mut create = redis::cmd("XGROUP");
        create
            .arg("CREATE")
            .arg(to)
            .arg(&g.name)
            .arg(&g.last_delivered);
        if let Some(n) = g.entries_read {
            create.arg("ENTRIESREAD").arg(n);
        }
        let () = servers.bulk(target, &mut create).await?;
        copied.groups += 1;

        let consumers: Vec<Value> = servers
            .bulk(
                source,
                redis::cmd("XINFO").arg("CONSUMERS").arg(from).arg(&g.name),
            )
            .await?;
        if !consumers.is_empty() {
            let mut pipe = redis::pipe();
            for c in &consumers {
                let name = field(c, "name")
                    .and_then(bytes)
                    .ok_or_else(|| unexpected(source, "XINFO CONSUMERS", c))?;
                pipe.cmd("XGROUP")
                    .arg("CREATECONSUMER")
                    .arg(to)
                    .arg(&g.name)
                    .arg(name)
                    .ignore();
            }
            let () = servers.bulk_pipe(target, &pipe).await?;
            copied.consumers += consumers.len() as u64;
        }

        let claimed = copy_pending(servers, source, target, from, to, &g.name, chunk).await?;
        copied.pending += claimed;
        if i64::try_from(claimed).unwrap_or(i64::MAX) < g.pending {
            warn!(
                stream = %String::from_utf8_lossy(from),
                group = %String::from_utf8_lossy(&g.name),
                pending = g.pending,
                claimed,
                "pending entries of deleted messages are not carried over"
            );
        }
    }
    Ok(copied)
}

/// Copies group `group`'s pending entries list, `chunk` entries a round trip; how
/// many the target took.
async fn copy_pending(
    servers: &Servers,
    source: &str,
    target: &str,
    from: &[u8],
    to: &[u8],
    group: &[u8],
    chunk: usize,
) -> Result<u64, ApiError> {
    let mut start = b"-".to_vec();
    let mut claimed = 0u64;
    loop {
        let entries: Vec<Value> = servers
            .bulk(
                source,
                redis::cmd("XPENDING")
                    .arg(from)
                    .arg(group)
                    .arg(&start)
                    .arg("+")
                    .arg(chunk.max(1)),
            )
            .await?;
        let Some(last) = entries.last() else {
            return Ok(claimed);
        };
        let mut pipe = redis::pipe();
        for e in &entries {
            let (id, consumer, idle, deliveries) =
                pending_entry(e).ok_or_else(|| unexpected(source, "XPENDING", e))?;
            pipe.cmd("XCLAIM")
                .arg(to)
                .arg(group)
                .arg(consumer)
                .arg(0)
                .arg(id)
                .arg("IDLE")
                .arg(idle)
                .arg("RETRYCOUNT")
                .arg(deliveries)
                .arg("FORCE")
                .arg("JUSTID");
        }
        // Each XCLAIM answers the IDs it claimed: none for a deleted message.
        let answers: Vec<Vec<Value>> = servers.bulk_pipe(target, &pipe).await?;
        claimed += answers.iter().map(|ids| ids.len() as u64).sum::<u64>();
        let (last_id, ..) =
            pending_entry(last).ok_or_else(|| unexpected(source, "XPENDING", last))?;
        if entries.len() < chunk.max(1) {
            return Ok(claimed);
        }
        // Exclusive start (Redis 6.2+): the next chunk begins after the last ID.
        start = [&b"("[..], last_id].concat();
    }
}

/// The fields of an `XINFO` entry: a map in RESP3, name/value pairs in RESP2.
fn field<'v>(v: &'v Value, name: &str) -> Option<&'v Value> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| bytes(k) == Some(name.as_bytes()))
            .map(|(_, v)| v),
        Value::Array(items) => items
            .chunks(2)
            .find(|p| bytes(&p[0]) == Some(name.as_bytes()))
            .and_then(|p| p.get(1)),
        _ => None,
    }
}

/// The bytes of a bulk or simple string.
fn bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        _ => None,
    }
}

/// One entry of `XINFO GROUPS`.
fn group(v: &Value) -> Option<Group> {
    Some(Group {
        name: field(v, "name").and_then(bytes)?.to_vec(),
        last_delivered: field(v, "last-delivered-id").and_then(bytes)?.to_vec(),
        entries_read: field(v, "entries-read").and_then(int),
        pending: field(v, "pending").and_then(int)?,
    })
}

/// One entry of the extended `XPENDING`: ID, consumer, idle milliseconds, deliveries.
fn pending_entry(v: &Value) -> Option<(&[u8], &[u8], i64, i64)> {
    let Value::Array(f) = v else { return None };
    match f.as_slice() {
        [id, consumer, idle, deliveries] => {
            Some((bytes(id)?, bytes(consumer)?, int(idle)?, int(deliveries)?))
        }
        _ => None,
    }
}

fn unexpected(addr: &str, cmd: &str, v: &Value) -> ApiError {
    ApiError::Server {
        addr: addr.to_string(),
        cause: format!("kodis: unexpected {cmd} entry: {v:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// XINFO GROUPS entries are read in RESP2 (pairs) and RESP3 (maps), a nil
    /// entries-read included; a malformed XPENDING entry is refused.
    #[test]
    fn group_and_pending_entries_are_read_in_both_protocols() {
        let resp2 = Value::Array(vec![
            b("name"),
            b("g"),
            b("pending"),
            Value::Int(3),
            b("last-delivered-id"),
            b("5-0"),
            b("entries-read"),
            Value::Nil,
        ]);
        let g = group(&resp2).expect("a group");
        assert_eq!(
            (
                g.name.as_slice(),
                g.last_delivered.as_slice(),
                g.entries_read,
                g.pending
            ),
            (&b"g"[..], &b"5-0"[..], None, 3)
        );
        let resp3 = Value::Map(vec![
            (b("name"), b("h")),
            (b("last-delivered-id"), b("7-1")),
            (b("entries-read"), Value::Int(9)),
            (b("pending"), Value::Int(0)),
        ]);
        let g = group(&resp3).expect("a group");
        assert_eq!((g.name.as_slice(), g.entries_read), (&b"h"[..], Some(9)));
        let e = Value::Array(vec![b("1-0"), b("alice"), Value::Int(50), Value::Int(2)]);
        assert_eq!(pending_entry(&e), Some((&b"1-0"[..], &b"alice"[..], 50, 2)));
        assert_eq!(pending_entry(&Value::Array(vec![b("1-0")])), None);
    }
}
