//! Names and the server-side script of moving big keys in pieces (see
//! `docs/big-key-migration.md`), shared by the proxy and the migrator.
//!
//! A key above a size threshold is not moved with one `MIGRATE` (which blocks both
//! servers for as long as the key takes to serialize and load): it is *hidden* on the
//! source (renamed, and listed in its slot's in-flight hash), copied in chunks to a
//! temporary key on the target, made visible there, and only then removed from the
//! source. Every name used for that lives in the key's own slot, through a fixed tag
//! per slot, so the slot is not empty on the source while a move is unfinished.

use std::sync::OnceLock;

use crate::slot::{key_slot, SLOT_COUNT};

/// Default of `--migrate-big-key-elements`: a hash, list, set, zset or stream with at
/// least this many elements moves in pieces.
pub const DEFAULT_ELEMENTS: u64 = 5_000;
/// Default of `--migrate-big-key-bytes`: a key using at least this many bytes
/// (`STRLEN` of a string, `MEMORY USAGE` of the rest) moves in pieces.
pub const DEFAULT_BYTES: u64 = 1024 * 1024;

/// What follows a slot's `{tag}` in every name of the migrator's: the NUL keeps them
/// apart from any name a client would use.
const MARK: &[u8] = b"\0kodis:";

/// State of a key in flight: hidden on the source, being copied.
pub const HIDDEN: &str = "hidden";
/// State of a key in flight: copied; the copy is being made visible on the target
/// (set before its `RENAMENX` there, so that a restarted migrator knows a key on the
/// target under that name is its own copy).
pub const RENAMING: &str = "renaming";

/// For every slot, a short string whose slot it is (computed once: decimal numbers
/// in order, the first of each slot kept).
fn tags() -> &'static [String] {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    TAGS.get_or_init(|| {
        let mut tags: Vec<Option<String>> = vec![None; SLOT_COUNT as usize];
        let mut missing = SLOT_COUNT as usize;
        let mut i: u64 = 0;
        while missing > 0 {
            let s = i.to_string();
            let t = &mut tags[key_slot(s.as_bytes()) as usize];
            if t.is_none() {
                *t = Some(s);
                missing -= 1;
            }
            i += 1;
        }
        tags.into_iter().flatten().collect()
    })
}

/// The tag of `slot`: `key_slot(tag) == slot`.
pub fn slot_tag(slot: u16) -> &'static str {
    &tags()[usize::from(slot % SLOT_COUNT)]
}

fn name(slot: u16, what: &[u8], key: &[u8]) -> Vec<u8> {
    let tag = slot_tag(slot).as_bytes();
    let mut n = Vec::with_capacity(tag.len() + 2 + MARK.len() + what.len() + key.len());
    n.push(b'{');
    n.extend_from_slice(tag);
    n.push(b'}');
    n.extend_from_slice(MARK);
    n.extend_from_slice(what);
    n.extend_from_slice(key);
    n
}

/// The hash, on a source, of the keys of `slot` being moved in pieces: field the
/// key, value its state ([`HIDDEN`] or [`RENAMING`]).
pub fn inflight_hash(slot: u16) -> Vec<u8> {
    name(slot, b"inflight", b"")
}

/// The name `key` has on the source while it moves in pieces.
pub fn moving_key(key: &[u8]) -> Vec<u8> {
    name(key_slot(key), b"moving:", key)
}

/// The name of the copy of `key` being built on the target.
pub fn incoming_key(key: &[u8]) -> Vec<u8> {
    name(key_slot(key), b"incoming:", key)
}

/// Whether `key` is one of the migrator's names (`{tag}\0kodis:...`).
pub fn is_internal(key: &[u8]) -> bool {
    key.first() == Some(&b'{')
        && key
            .iter()
            .position(|&b| b == b'}')
            .is_some_and(|end| key[end + 1..].starts_with(MARK))
}

/// `split_big`: for each key (`KEYS` in threes: the key, [`inflight_hash`] of its
/// slot, [`moving_key`] of it; `ARGV`: the elements and bytes thresholds) answers
/// one character: `1` if it is in flight (hidden before, or hidden now because it is
/// big), `0` otherwise (small, or absent: `MIGRATE` moves it). Hiding is
/// `HSET inflight key hidden` then `RENAME key moving:key`, both O(1), in the script's one
/// atomic step (a key named twice is hidden once). A big key of a module's type is refused with an error naming it
/// (nothing is hidden then); the sizes come from O(1) commands (`MEMORY USAGE`
/// samples 5 elements).
///
/// Two commands per small string (`TYPE`, `STRLEN`), three per other small key: the
/// in-flight hash is asked only about absent keys (a hidden key is absent under its
/// name, and nothing writes a key of a migrating slot on its source), and
/// `MEMORY USAGE` only when the length is below the elements threshold. Sizes are not
/// guessed from `MEMORY USAGE` alone: it samples a list's first nodes, so a list whose
/// head nodes are small can have far more elements than its estimate has bytes.
pub const SPLIT_BIG: &str = r#"
local elements, bytes, HIDDEN = tonumber(ARGV[1]), tonumber(ARGV[2]), 'hidden'
local out, big, seen = {}, {}, {}
for i = 1, #KEYS / 3 do
  local k = KEYS[3 * i - 2]
  out[i] = '0'
  local t = redis.call('TYPE', k)['ok']
  if t == 'none' then
    if redis.call('HEXISTS', KEYS[3 * i - 1], k) == 1 then out[i] = '1' end
  else
    local len, size = -1, 0
    if t == 'string' then len = 0; size = redis.call('STRLEN', k)
    else
      if t == 'hash' then len = redis.call('HLEN', k)
      elseif t == 'list' then len = redis.call('LLEN', k)
      elseif t == 'set' then len = redis.call('SCARD', k)
      elseif t == 'zset' then len = redis.call('ZCARD', k)
      elseif t == 'stream' then len = redis.call('XLEN', k) end
      if len < elements then
        size = redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '5') or 0
      end
    end
    if len >= elements or size >= bytes then
      if len < 0 then
        return redis.error_reply('KODIS key ' .. k .. ' has the module type ' .. t ..
          ' and is too big to move in pieces: move it by hand')
      end
      if not seen[k] then big[#big + 1] = i; seen[k] = true end
      out[i] = '1'
    end
  end
end
for _, i in ipairs(big) do
  redis.call('HSET', KEYS[3 * i - 1], KEYS[3 * i - 2], HIDDEN)
  redis.call('RENAME', KEYS[3 * i - 2], KEYS[3 * i])
end
return table.concat(out)
"#;

/// The `KEYS` of a `split_big` call for `keys`, in order.
pub fn split_big_keys<'a>(keys: impl IntoIterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for k in keys {
        out.push(k.to_vec());
        out.push(inflight_hash(key_slot(k)));
        out.push(moving_key(k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_lives_in_its_keys_slot() {
        for slot in 0..SLOT_COUNT {
            assert_eq!(key_slot(slot_tag(slot).as_bytes()), slot);
            assert_eq!(key_slot(&inflight_hash(slot)), slot);
        }
        for key in [&b"plain"[..], b"{user1}:x", b"a}b{", b"{}odd", b"\0"] {
            let slot = key_slot(key);
            for n in [moving_key(key), incoming_key(key)] {
                assert_eq!(key_slot(&n), slot, "{n:?}");
                assert!(is_internal(&n));
                assert!(n.ends_with(key));
            }
        }
        assert!(!is_internal(b"{user1}:x"));
        assert!(!is_internal(b"kodis:inflight"));
        // Fixed for ever: a proxy and a dashboard of different builds must agree.
        assert_eq!(slot_tag(0), "3560");
        assert_eq!(inflight_hash(0), b"{3560}\0kodis:inflight");
    }
}
