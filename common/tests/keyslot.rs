//! The slot function against a real redis-server: `CLUSTER KEYSLOT` must agree on the
//! golden vectors and on random keys, with and without hash tags.
#![allow(clippy::unwrap_used)]

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use kodis_common::slot::{key_slot, GOLDEN_VECTORS as GOLDEN};
use kodis_common::test_util::{encode, read_reply, RedisServer};

/// A cluster-mode server, and the directory of its cluster config file (dropped after
/// the server, which is killed first).
fn cluster_server() -> (RedisServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nodes.conf");
    let server = RedisServer::start_with(&[
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        conf.to_str().unwrap(),
    ]);
    (server, dir)
}

/// Asks the server for the slot of every key, pipelined on one connection.
fn keyslots(server: &RedisServer, keys: &[Vec<u8>]) -> Vec<u16> {
    let mut conn = TcpStream::connect(server.addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    for k in keys {
        out.extend_from_slice(&encode(&[b"CLUSTER", b"KEYSLOT", k]));
    }
    conn.write_all(&out).unwrap();
    let mut reader = BufReader::new(conn);
    keys.iter()
        .map(|k| {
            let reply = read_reply(&mut reader).unwrap();
            let text = std::str::from_utf8(&reply).unwrap();
            text.strip_prefix(':')
                .and_then(|t| t.trim_end().parse().ok())
                .unwrap_or_else(|| panic!("reply {text:?} for key {k:?}"))
        })
        .collect()
}

/// A small deterministic generator, so a failure names a reproducible key.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.next() % (max_len + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn keyslot_matches_redis() {
    let (server, _dir) = cluster_server();

    let golden: Vec<Vec<u8>> = GOLDEN.iter().map(|(k, _)| k.to_vec()).collect();
    let slots = keyslots(&server, &golden);
    for (&(key, want), got) in GOLDEN.iter().zip(slots) {
        assert_eq!(got, want, "redis disagrees with golden vector {key:?}");
        assert_eq!(
            key_slot(key),
            want,
            "key_slot disagrees with golden vector {key:?}"
        );
    }

    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let keys: Vec<Vec<u8>> = (0..1000)
        .map(|i| match i % 4 {
            0 => rng.bytes(30),
            1 => {
                // A tag somewhere inside random bytes.
                let mut k = rng.bytes(8);
                k.push(b'{');
                k.extend(rng.bytes(6));
                k.push(b'}');
                k.extend(rng.bytes(8));
                k
            }
            2 => format!("user:{}", rng.next() % 1_000_000).into_bytes(),
            // Braces sprinkled at random: empty tags, unclosed tags, nested ones.
            _ => (0..rng.next() % 12)
                .map(|_| b"{}ab"[(rng.next() % 4) as usize])
                .collect(),
        })
        .collect();
    let slots = keyslots(&server, &keys);
    for (key, got) in keys.iter().zip(slots) {
        assert_eq!(key_slot(key), got, "key {key:?}");
    }
}
