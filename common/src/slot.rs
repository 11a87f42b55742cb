//! The slot function: which of the 16384 slots a key belongs to.
//!
//! Exactly Redis Cluster's: CRC16/XMODEM of the key's hash tag, modulo 16384. The hash
//! tag is the part between the first `{` and the next `}` when that part is non-empty;
//! otherwise the whole key.

/// Number of slots keys are spread over.
pub const SLOT_COUNT: u16 = 16384;

/// The part of `key` that is hashed: its hash tag when it has a non-empty one.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = memchr::memchr(b'{', key) {
        if let Some(len) = memchr::memchr(b'}', &key[open + 1..]) {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The slot of `key`, in `0..16384`.
#[inline]
pub fn key_slot(key: &[u8]) -> u16 {
    crc16_xmodem(hash_tag(key)) % SLOT_COUNT
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection), as Redis Cluster
/// hashes keys. Every request's key goes through it, so it takes eight bytes per step
/// from eight tables ("slicing by 8") instead of one byte per step from one: about a
/// third of the instructions of the byte loop on a 16-byte key (benches/callgrind.py).
/// The `crc16` crate is the reference it is tested against.
pub fn crc16_xmodem(data: &[u8]) -> u16 {
    let t = &CRC_TABLES;
    let mut crc: u16 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // The state folds into the first two bytes; each table is one byte's effect
        // followed by that many zero bytes.
        let x = crc ^ u16::from_be_bytes([c[0], c[1]]);
        crc = t[7][usize::from(x >> 8)]
            ^ t[6][usize::from(x & 0xff)]
            ^ t[5][usize::from(c[2])]
            ^ t[4][usize::from(c[3])]
            ^ t[3][usize::from(c[4])]
            ^ t[2][usize::from(c[5])]
            ^ t[1][usize::from(c[6])]
            ^ t[0][usize::from(c[7])];
    }
    for &b in chunks.remainder() {
        crc = (crc << 8) ^ t[0][usize::from((crc >> 8) as u8 ^ b)];
    }
    crc
}

/// `CRC_TABLES[k][b]`: the CRC of byte `b` followed by `k` zero bytes, from state 0.
static CRC_TABLES: [[u16; 256]; 8] = crc_tables();

const fn crc_tables() -> [[u16; 256]; 8] {
    let mut t = [[0u16; 256]; 8];
    let mut b = 0;
    while b < 256 {
        let mut crc = (b as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        t[0][b] = crc;
        b += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut b = 0;
        while b < 256 {
            let prev = t[k - 1][b];
            t[k][b] = (prev << 8) ^ t[0][(prev >> 8) as usize];
            b += 1;
        }
        k += 1;
    }
    t
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

    proptest::proptest! {
        /// The sliced CRC gives the `crc16` crate's answer for every input length.
        #[test]
        fn crc_matches_the_crc16_crate(data in proptest::collection::vec(proptest::num::u8::ANY, 0..100)) {
            proptest::prop_assert_eq!(
                crc16_xmodem(&data),
                crc16::State::<crc16::XMODEM>::calculate(&data)
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
