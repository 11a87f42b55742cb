//! The slot function: which of the 16384 slots a key belongs to.
//!
//! Exactly Redis Cluster's: CRC16/XMODEM of the key's hash tag, modulo 16384. The hash
//! tag is the part between the first `{` and the next `}` when that part is non-empty;
//! otherwise the whole key.

/// Number of slots keys are spread over.
pub const SLOT_COUNT: u16 = 16384;

/// The part of `key` that is hashed: its hash tag when it has a non-empty one.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`, in `0..16384`.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOT_COUNT
}

/// The slot range `[start, end]` that group `i` of `n` owns when slots are split evenly:
/// `floor(i*16384/n) ..= floor((i+1)*16384/n) - 1`.
pub fn even_split(i: usize, n: usize) -> (u16, u16) {
    let total = SLOT_COUNT as usize;
    let start = i * total / n;
    let end = (i + 1) * total / n - 1;
    (start as u16, end as u16)
}

/// Golden vectors: `(key, slot)` pairs as Redis Cluster's `CLUSTER KEYSLOT` gives
/// them. They pin the slot function; `common/tests/keyslot.rs` checks each one against
/// a real redis-server.
pub const GOLDEN_VECTORS: &[(&[u8], u16)] = &[
    (b"", 0),
    (b"foo", 12182),
    (b"bar", 5061),
    (b"key", 12539),
    (b"123456789", 12739),
    (b"{user1000}.following", 3443),
    (b"{user1000}.followers", 3443),
    (b"foo{}{bar}", 8363),
    (b"foo{{bar}}zap", 4015),
    (b"foo{bar}{zap}", 5061),
    (b"{}", 15257),
    (b"a{b", 13340),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_vectors() {
        for &(key, slot) in GOLDEN_VECTORS {
            assert_eq!(
                key_slot(key),
                slot,
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn hash_tags() {
        assert_eq!(hash_tag(b"{user}.a"), b"user");
        assert_eq!(hash_tag(b"a{}b"), b"a{}b");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        assert_eq!(hash_tag(b"x{y}z{w}"), b"y");
    }

    #[test]
    fn even_split_covers_all_slots() {
        for n in 1..=7 {
            let mut next = 0u32;
            for i in 0..n {
                let (s, e) = even_split(i, n);
                assert_eq!(s as u32, next);
                next = e as u32 + 1;
            }
            assert_eq!(next, SLOT_COUNT as u32);
        }
        assert_eq!(even_split(0, 2), (0, 8191));
        assert_eq!(even_split(1, 2), (8192, 16383));
    }
}
