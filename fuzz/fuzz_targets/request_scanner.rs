//! Arbitrary bytes into the request scanner: no panic, and feeding them in two pieces
//! (split at a point chosen by the input) gives what one scan of the whole gives.
#![no_main]

use kodis_common::resp::{Limits, RequestScanner};
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
    let mut whole = RequestScanner::new(limits);
    let mut pieces = RequestScanner::new(limits);
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
            Ok(Some(p)) => {
                assert!(p.len > 0 && p.len <= buf.len());
                for &(s, e) in &p.args {
                    assert!(s <= e && e <= p.len);
                }
                off += p.len;
            }
            _ => break,
        }
    }
});
