//! Arbitrary bytes into the reply scanner: no panic, and feeding them in two pieces
//! (split at a point chosen by the input) gives what one scan of the whole gives.
#![no_main]

use kodis_common::resp::{Limits, ReplyScanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else {
        return;
    };
    // Small limits so the fuzzer reaches the limit checks with short inputs.
    let limits = Limits {
        max_bulk_len: 64,
        max_array_len: 16,
        max_inline_len: 64,
    };
    let mut off = 0;
    let mut whole = ReplyScanner::new(limits);
    let mut pieces = ReplyScanner::new(limits);
    while off < data.len() {
        let buf = &data[off..];
        let all = whole.scan(buf);
        let cut = usize::from(split) % (buf.len() + 1);
        let first = pieces.scan(&buf[..cut]);
        let second = match first {
            Ok(None) => pieces.scan(buf),
            done => done,
        };
        assert_eq!(all, second, "split at {cut}");
        match all {
            Ok(Some(n)) => {
                assert!(n > 0 && n <= buf.len());
                let frame = &buf[..n];
                // The helpers accept what the scanner accepted.
                if frame[0] == b'*' && !frame.starts_with(b"*-1\r\n") {
                    let parts = kodis_common::resp::array_elements(frame).expect("array");
                    // The elements follow the header back to back up to the frame's end.
                    let header = n - parts.iter().map(|p| p.len()).sum::<usize>();
                    assert!(frame[..header].ends_with(b"\r\n"));
                }
                if frame[0] == b':' {
                    assert!(kodis_common::resp::reply_integer(frame).is_some());
                }
                off += n;
            }
            _ => break,
        }
    }
});
