#!/usr/bin/env python3
"""What moving small keys costs the servers, two ways, against two bare redis-servers.

The migrator's way: per batch, `split_big` (common/src/big_key.rs, read from the
source tree) then `MIGRATE ... KEYS`. The way left out (issue 17): the dashboard
itself hides each key and DUMPs it in one script, RESTOREs it on the target, then
deletes the hidden copy and its in-flight entry. Copy-then-delete is only safe with
the key hidden meanwhile (else a proxy can move the key, a client delete it on the
target, and the late RESTORE bring it back), so the hiding is part of its cost.

Prints, per way: the wall time, keys/s, and the source's and the target's server
time from INFO commandstats (microseconds a key). Same keys, same servers, in turn.

    python3 benches/key_move_cost.py                 # 200,000 keys of 100 bytes
    python3 benches/key_move_cost.py --keys 50000 --batch 100

Stdlib only (benches/kodis_bench.py); needs redis-server.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import kodis_bench as kb
from migration import key_slot

SRC = Path(__file__).resolve().parent.parent / "common" / "src" / "big_key.rs"

# Hide each key as split_big does (state `renaming`: the copy is made under the key's
# own name on the target), DUMP it and read its absolute expiry, in one atomic step.
HIDE_AND_DUMP = r"""
local out = {}
for i = 1, #KEYS / 3 do
  local k, set = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local d = redis.call('DUMP', k)
  if d then
    out[#out + 1] = d
    out[#out + 1] = redis.call('PEXPIRETIME', k)
    redis.call('HSET', set, k, 'renaming')
    redis.call('RENAME', k, KEYS[3 * i])
  else
    out[#out + 1] = false
    out[#out + 1] = -2
  end
end
return out
"""

FINISH = r"""
for i = 1, #KEYS / 2 do redis.call('HDEL', KEYS[2 * i - 1], KEYS[2 * i]) end
redis.call('UNLINK', unpack(ARGV))
return 0
"""


def split_big_source() -> str:
    text = SRC.read_text()
    return text.split('pub const SPLIT_BIG: &str = r#"', 1)[1].split('"#;', 1)[0]


def slot_tags() -> list[bytes]:
    """For every slot, the first decimal number hashing to it (as common::big_key)."""
    tags: list[bytes | None] = [None] * 16384
    missing, i = 16384, 0
    while missing:
        t = str(i).encode()
        s = key_slot(t)
        if tags[s] is None:
            tags[s] = t
            missing -= 1
        i += 1
    return tags  # type: ignore[return-value]


TAGS = slot_tags()


def name(key: bytes, what: bytes) -> bytes:
    return b"{" + TAGS[key_slot(key)] + b"}\0kodis:" + what + key


def inflight(key: bytes) -> bytes:
    """The in-flight hash of `key`'s slot."""
    return b"{" + TAGS[key_slot(key)] + b"}\0kodis:inflight"


def split_keys(keys: list[bytes]) -> list[bytes]:
    """`KEYS` of a split_big call: key, its slot's in-flight hash, its moving name."""
    out: list[bytes] = []
    for k in keys:
        out += [k, inflight(k), name(k, b"moving:")]
    return out


def call(c: kb.Client, *args: bytes | str):
    c.send(kb.resp(*args))
    return c.reply()


def pipeline(c: kb.Client, cmds: list[list[bytes | str]]) -> list:
    c.send(b"".join(kb.resp(*a) for a in cmds))
    return [c.reply() for _ in cmds]


def usec(port: int) -> dict[str, int]:
    raw = kb.command(port, b"INFO", b"commandstats").decode()
    out = {}
    for line in raw.splitlines():
        if line.startswith("cmdstat_"):
            name_, fields = line.split(":", 1)
            f = dict(kv.split("=") for kv in fields.split(","))
            out[name_[8:]] = int(f["usec"])
    return out


def total(stats: dict[str, int]) -> int:
    # A script's time includes its inner calls: count EVAL, not them, and the rest.
    inner = {"hexists", "type", "strlen", "memory|usage", "hlen", "llen", "scard",
             "zcard", "xlen", "hset", "rename", "dump", "pexpiretime", "hdel", "unlink"}
    return sum(v for k, v in stats.items() if k not in inner and k != "config|resetstat")


def fill(src: kb.Client, dst: kb.Client, n: int, size: int) -> list[bytes]:
    call(src, "FLUSHALL")
    call(dst, "FLUSHALL")
    keys = [b"key:%08d" % i for i in range(n)]
    value = b"x" * size
    for i in range(0, n, 5000):
        pipeline(src, [["SET", k, value] for k in keys[i:i + 5000]])
    return keys


def migrate_way(src, src_port, dst_port, keys, batch, split):
    for i in range(0, len(keys), batch):
        b = keys[i:i + batch]
        call(src, "EVAL", split, str(3 * len(b)), *split_keys(b), "5000", str(1 << 20))
        call(src, "MIGRATE", kb.HOST, str(dst_port), "", "0", "5000", "KEYS", *b)


def dump_way(src, dst, keys, batch):
    for i in range(0, len(keys), batch):
        b = keys[i:i + batch]
        out = call(src, "EVAL", HIDE_AND_DUMP, str(3 * len(b)), *split_keys(b))
        cmds = []
        for j, k in enumerate(b):
            payload, at = out[2 * j], int(out[2 * j + 1])
            if payload is None:
                continue
            cmds.append(["RESTORE", k, str(max(at, 0)), payload, "REPLACE"] +
                        (["ABSTTL"] if at > 0 else []))
        pipeline(dst, cmds)
        flat: list[bytes] = []
        for k in b:
            flat += [inflight(k), k]
        call(src, "EVAL", FINISH, str(len(flat)), *flat, *[name(k, b"moving:") for k in b])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keys", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100, help="value bytes")
    ap.add_argument("--batch", type=int, default=500, help="keys a call")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    exe = shutil.which("redis-server")
    if not exe:
        print("redis-server is missing (scripts/install-deps.sh)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kodis-move-cost-"))
    children = kb.Children(tmp)
    try:
        _, sp = kb.start_redis(children, exe, "source")
        _, dp = kb.start_redis(children, exe, "target")
        src, dst = kb.Client(sp), kb.Client(dp)
        split = split_big_source()
        rows = []
        for r in range(a.rounds):
            for way in ("split_big + MIGRATE", "hide + DUMP, RESTORE, delete"):
                keys = fill(src, dst, a.keys, a.size)
                call(src, "CONFIG", "RESETSTAT")
                call(dst, "CONFIG", "RESETSTAT")
                t = time.monotonic()
                if way.startswith("split"):
                    migrate_way(src, sp, dp, keys, a.batch, split)
                else:
                    dump_way(src, dst, keys, a.batch)
                wall = time.monotonic() - t
                moved = int(call(dst, "DBSIZE"))
                left = int(call(src, "DBSIZE"))
                if moved != a.keys or left != 0:
                    print(f"{way}: {moved} keys on the target, {left} left", file=sys.stderr)
                    return 1
                s, d = total(usec(sp)), total(usec(dp))
                rows.append((r + 1, way, wall, a.keys / wall, s / a.keys, d / a.keys))
        print(f"{a.keys:,} keys of {a.size} bytes, {a.batch} a call, "
              f"command: python3 benches/key_move_cost.py --keys {a.keys} --size {a.size} "
              f"--batch {a.batch}\n")
        print("| round | way | wall | keys/s | source µs/key | target µs/key |")
        print("|---:|---|---:|---:|---:|---:|")
        for r, way, wall, kps, s, d in rows:
            print(f"| {r} | {way} | {wall:.2f} s | {kps:,.0f} | {s:.2f} | {d:.2f} |")
        return 0
    finally:
        children.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
