//! The error replies a session composes itself, worded as Redis words them.

use bytes::Bytes;
use kodis_common::resp::Request;

use crate::reply;

/// Redis's own text for an unknown command.
pub(crate) fn unknown_command(req: &Request) -> Bytes {
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        String::from_utf8_lossy(&req.arg(0)[..req.arg(0).len().min(128)])
    );
    for i in 1..req.argc().min(4) {
        let a = req.arg(i);
        msg.push_str(&format!(
            "'{}' ",
            String::from_utf8_lossy(&a[..a.len().min(64)])
        ));
    }
    reply::error(&msg)
}

/// Redis's own text for a wrong argument count.
pub(crate) fn wrong_args(name: &str) -> Bytes {
    reply::error(&format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    ))
}

/// The error for a refused command: names it and says why.
pub(crate) fn refused(name: &str, why: &str) -> Bytes {
    reply::error(&format!("ERR kodis-proxy refuses '{name}': {why}"))
}

/// Redis Cluster's error for a key whose slot no group owns (yet).
pub(crate) fn clusterdown() -> Bytes {
    reply::error("CLUSTERDOWN Hash slot not served")
}

/// Redis Cluster's error for keys in different slots.
pub(crate) fn crossslot() -> Bytes {
    reply::error("CROSSSLOT Keys in request don't hash to the same slot")
}
