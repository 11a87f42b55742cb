#!/usr/bin/env python3
"""Client-library test: redis-py against kodis-proxy over two real redis-servers.

redis-py sends CLIENT SETINFO on connect, reads INFO, pipelines, and parses every
reply type; this checks that a stock client library works through the proxy as it
would against one Redis. Usage: redis_py_smoke.py PATH/TO/kodis-proxy
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import redis

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ping(port, log, deadline=20.0):
    end = time.monotonic() + deadline
    last = None
    while time.monotonic() < end:
        try:
            if redis.Redis(port=port, socket_timeout=1, protocol=2).ping():
                return
        except redis.RedisError as e:
            last = e
            time.sleep(0.05)
    with open(log, "rb") as f:
        sys.stderr.write(f.read()[-3000:].decode(errors="replace"))
    raise SystemExit(f"nothing answers PING on port {port}: {last!r}")


def start(argv, log):
    with open(log, "wb") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    procs.append(p)
    return p


TMP = tempfile.mkdtemp(prefix="kodis-redis-py-")


def main(proxy_bin):
    tmp = TMP
    ports = []
    for i in range(2):
        port = free_port()
        d = os.path.join(tmp, str(i))
        os.mkdir(d)
        log = os.path.join(d, "redis.out")
        start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--dir", d], log)
        wait_ping(port, log)
        ports.append(port)
    pport = free_port()
    log = os.path.join(tmp, "proxy.out")
    start([proxy_bin, "--listen", f"127.0.0.1:{pport}", "--admin-listen", f"127.0.0.1:{free_port()}",
           "--group", f"127.0.0.1:{ports[0]}", "--group", f"127.0.0.1:{ports[1]}"], log)
    wait_ping(pport, log)

    passed, failed = 0, 0

    def check(name, fn):
        nonlocal passed, failed
        try:
            fn()
            passed += 1
            print(f"ok   {name}")
        except Exception as e:  # report every failure, then exit non-zero
            failed += 1
            print(f"FAIL {name}: {e!r}")

    # RESP2 here; RESP3 (redis-py 8's default) in its own check below.
    r = redis.Redis(port=pport, decode_responses=True, client_name="smoke", protocol=2)
    direct = [redis.Redis(port=p, decode_responses=True) for p in ports]

    def basics():
        assert r.ping()
        assert r.set("user:1", "alice") and r.get("user:1") == "alice"
        assert r.incr("counter") == 1 and r.incrby("counter", 41) == 42
        assert r.client_getname() == "smoke"
        assert r.info()["redis_version"].startswith("7.")

    def multi_key():
        keys = [f"k{i}" for i in range(100)]
        assert r.mset({k: k.upper() for k in keys})
        assert r.mget(keys + ["missing"]) == [k.upper() for k in keys] + [None]
        held = [d.dbsize() for d in direct]
        assert all(n > 0 for n in held), held
        assert r.exists(*keys) == 100
        assert r.delete(*keys[:50]) == 50
        assert r.dbsize() == sum(d.dbsize() for d in direct)

    def types():
        r.hset("h", mapping={"a": "1", "b": "2"})
        assert r.hgetall("h") == {"a": "1", "b": "2"}
        r.rpush("l", "x", "y", "z")
        assert r.lrange("l", 0, -1) == ["x", "y", "z"]
        r.zadd("z", {"m": 1.5})
        assert r.zscore("z", "m") == 1.5
        r.sadd("{s}1", "a", "b")
        r.sadd("{s}2", "b")
        assert r.sinter("{s}1", "{s}2") == {"b"}
        assert r.xadd("stream", {"f": "v"}, id="1-1") == "1-1"

    def pipeline():
        p = r.pipeline(transaction=False)
        for i in range(200):
            p.set(f"p{i}", i)
            p.get(f"p{i}")
        out = p.execute()
        assert out[1::2] == [str(i) for i in range(200)]

    def resp3():
        # redis-py 8 opens with HELLO 3 by default: the client's own choice, unchanged.
        r3 = redis.Redis(port=pport, decode_responses=True)
        assert r3.ping()
        r3.hset("h3", mapping={"a": "1"})
        assert r3.hgetall("h3") == {"a": "1"}
        r3.zadd("z3", {"m": 2.5})
        assert r3.zscore("z3", "m") == 2.5
        assert r3.smembers("nothing") == set()
        p = r3.pubsub()
        p.subscribe("chan3")
        assert p.get_message(timeout=5)["type"] == "subscribe"
        assert r3.publish("chan3", "hello") == 1
        m = p.get_message(timeout=5)
        assert m["type"] == "message" and m["data"] == "hello", m
        p.close()

    def errors():
        try:
            r.rename("a", "b")
            raise AssertionError("no CROSSSLOT")
        except redis.exceptions.ClusterCrossSlotError:
            pass  # redis-py's class for a -CROSSSLOT reply
        try:
            r.execute_command("MONITOR")
            raise AssertionError("MONITOR was not refused")
        except redis.ResponseError as e:
            assert "refuses 'MONITOR'" in str(e), str(e)
        assert r.ping()

    def whole_keyspace():
        r.mset({f"scan:{i}": i for i in range(300)})
        seen = set(r.scan_iter(match="scan:*", count=50))
        assert seen == {f"scan:{i}" for i in range(300)}, len(seen)
        assert set(r.keys("scan:1*")) == {f"scan:{i}" for i in range(300) if str(i).startswith("1")}
        assert r.randomkey() is not None

    def scripts():
        assert r.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, "{e}k", "v") == "OK"
        assert r.get("{e}k") == "v"

    def transactions():
        p = r.pipeline(transaction=True)
        p.set("{cart:9}:items", 1).incr("{cart:9}:items").get("{cart:9}:items")
        assert p.execute() == [True, 2, "2"]

        # The optimistic-locking recipe from redis-py's README.
        def add_one(pipe):
            n = int(pipe.get("{cart:9}:items") or 0)
            pipe.multi()
            pipe.set("{cart:9}:items", n + 1)
        assert r.transaction(add_one, "{cart:9}:items") == [True]
        assert r.get("{cart:9}:items") == "3"

        # A write by another client between WATCH and EXEC aborts.
        with r.pipeline() as pipe:
            pipe.watch("{cart:9}:items")
            r2 = redis.Redis(port=pport, decode_responses=True, protocol=2)
            r2.set("{cart:9}:items", 100)
            pipe.multi()
            pipe.incr("{cart:9}:items")
            try:
                pipe.execute()
                raise AssertionError("EXEC ran although the watched key changed")
            except redis.WatchError:
                pass
        assert r.get("{cart:9}:items") == "100"

    def blocking():
        import threading
        got = []
        worker = redis.Redis(port=pport, decode_responses=True, protocol=2)
        t = threading.Thread(target=lambda: got.append(worker.blpop(["jobs"], timeout=10)))
        t.start()
        deadline = time.time() + 10
        while time.time() < deadline and sum(
                d.info("clients")["blocked_clients"] for d in direct) == 0:
            time.sleep(0.01)
        r.rpush("jobs", "job-1")
        t.join(15)
        assert got == [("jobs", "job-1")], got
        assert r.blpop(["jobs"], timeout=0.2) is None
        assert r.wait(0, 100) == 0

    def pubsub():
        p = r.pubsub()
        p.subscribe("orders", "audit")
        p.psubscribe("user.*")
        for _ in range(3):
            assert p.get_message(timeout=5)["type"] in ("subscribe", "psubscribe")
        assert r.publish("orders", "o1") == 1
        assert r.publish("user.7", "u7") == 1
        got = [p.get_message(timeout=5) for _ in range(2)]
        assert [(m["type"], m["channel"], m["data"]) for m in got] == [
            ("message", "orders", "o1"), ("pmessage", "user.7", "u7")], got
        assert r.pubsub_numsub("orders") == [("orders", 1)]
        p.close()

    for name, fn in [("basics", basics), ("multi-key split and merge", multi_key),
                     ("data types", types), ("pipeline of 400", pipeline),
                     ("scan_iter, keys, randomkey", whole_keyspace),
                     ("errors keep the connection", errors), ("EVAL with a key", scripts),
                     ("RESP3: maps, doubles, push messages", resp3),
                     ("MULTI/EXEC, WATCH", transactions),
                     ("BLPOP from a thread, WAIT", blocking),
                     ("Pub/Sub across groups", pubsub)]:
        check(name, fn)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        code = main(sys.argv[1] if len(sys.argv) > 1 else "target/debug/kodis-proxy")
    finally:
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(code)
