//! Blocking commands (BLPOP, BLMOVE, BZPOPMIN, XREAD BLOCK, ...) and WAIT. Each runs
//! on a dedicated backend connection (see [`crate::dedicated`]) once every earlier
//! reply of the client is in, and the session serves nothing else until it answers,
//! as Redis does for a blocked client. Timeouts are the client's; past a command's own
//! timeout plus `backend_timeout_ms` the proxy gives up on a server that does not
//! answer (frozen, hung), closing the connection, so no client blocks for ever on it.
//!
//! This module holds what the session needs to know of blocking commands; the session's
//! side (the commands as a client sends them) is `crate::session::blocking`.

use std::time::Duration;

use kodis_common::resp::Request;

/// Channel WAIT publishes an empty message to first (see [`Session::wait`]).
pub const WAIT_CHANNEL: &str = "__kodis__:wait";

/// How long the client asked `req` to block: `None` for ever (a timeout of 0), and
/// when it cannot be read (the server then answers an error at once).
pub(crate) fn own_timeout(req: &Request) -> Option<Duration> {
    let text = |i: usize| std::str::from_utf8(req.arg(i)).ok();
    let secs = |i: usize| {
        let s: f64 = text(i)?.parse().ok()?;
        (s > 0.0)
            .then(|| Duration::try_from_secs_f64(s).ok())
            .flatten()
    };
    let millis = |i: usize| {
        let ms: u64 = text(i)?.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    };
    let name = req.arg(0).to_ascii_uppercase();
    match name.as_slice() {
        b"BLMPOP" | b"BZMPOP" => secs(1),
        b"WAIT" => millis(2),
        b"WAITAOF" => millis(3),
        b"XREAD" | b"XREADGROUP" => {
            // BLOCK comes before STREAMS (after it, a key may be named "BLOCK").
            let end = (1..req.argc())
                .find(|&i| req.arg(i).eq_ignore_ascii_case(b"STREAMS"))
                .unwrap_or(req.argc());
            (1..end)
                .find(|&i| req.arg(i).eq_ignore_ascii_case(b"BLOCK"))
                .and_then(|i| millis(i + 1))
        }
        // BLPOP, BRPOP, BZPOPMIN, BZPOPMAX, BLMOVE, BRPOPLPUSH: the last argument.
        _ => secs(req.argc().checked_sub(1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        let frame = kodis_common::resp::encode_command(args);
        let mut scanner = kodis_common::resp::RequestScanner::new(Default::default());
        match scanner.scan(&frame) {
            Ok(Some(parsed)) => Request::new(bytes::Bytes::from(frame), parsed),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_blocking_command_s_own_timeout_is_read_where_it_is() {
        let ms = Duration::from_millis;
        assert_eq!(
            own_timeout(&req(&["BLPOP", "a", "b", "1.5"])),
            Some(ms(1500))
        );
        assert_eq!(
            own_timeout(&req(&["blmove", "a", "b", "LEFT", "RIGHT", "2"])),
            Some(ms(2000))
        );
        assert_eq!(
            own_timeout(&req(&["BZMPOP", "0.25", "1", "z", "MIN"])),
            Some(ms(250))
        );
        assert_eq!(own_timeout(&req(&["WAIT", "1", "300"])), Some(ms(300)));
        assert_eq!(
            own_timeout(&req(&["WAITAOF", "0", "1", "40"])),
            Some(ms(40))
        );
        assert_eq!(
            own_timeout(&req(&[
                "XREAD", "COUNT", "2", "block", "70", "STREAMS", "s", "$"
            ])),
            Some(ms(70))
        );
        // A key named BLOCK after STREAMS is a key.
        assert_eq!(
            own_timeout(&req(&["XREAD", "STREAMS", "BLOCK", "5", "0", "$"])),
            None
        );
        // 0 blocks for ever; nonsense (the server refuses it) and huge values: no bound.
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "0"])), None);
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "soon"])), None);
        assert_eq!(own_timeout(&req(&["BLPOP", "a", "1e300"])), None);
    }
}
