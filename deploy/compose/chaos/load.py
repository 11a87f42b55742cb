"""The chaos suite's load: lanes writing through the proxies, every attempt recorded.

A lane is one client connection to one proxy that owns one hash tag `{RUN-cN}` (RUN: random per load), so all its
keys live in one slot (one group) and only it writes them, one request at a time:

- `r:{cN}`       a register, SET to `cN:<seq>` (seq grows by one per attempt);
- `o:{cN}:<seq>` a key written once, to `cN:<seq>`; every tenth is followed by WAIT 1
                 on the same connection, and recorded as WAIT-acknowledged when WAIT
                 answers 1 or more;
- `c:{cN}`       a counter, INCR;
- reads: GET of its own register, and GET of another lane's register and counter (a
  lane of the other proxy half the time, through this lane's proxy).

Every attempt is one record: (lane, kind, key, value, t0, t1, status, result), with
status `ok` (a reply), `err` (an error reply) or `fail` (no reply: timeout, connection
closed; the write may or may not have happened). Times are time.monotonic(). A lane
whose connection fails reconnects to the other proxy, as a Service would send it.
"""

import asyncio
import random
import threading
import time

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

WAIT_EVERY = 10

# redis-py turns some error codes into classes and drops the code from the message.
CODES = (
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.AuthenticationError, "NOAUTH"),
    (redis.exceptions.BusyLoadingError, "LOADING"),
)


def error_text(e):
    """The error reply as the server sent it: code first."""
    for cls, code in CODES:
        if isinstance(e, cls):
            return "%s %s" % (code, e)
    return str(e)


class Lane:
    def __init__(self, idx, targets, timeout, run):
        self.idx = idx
        self.tag = "%s-c%d" % (run, idx)
        self.targets = targets  # [(host, port)], the first preferred
        self.ti = 0
        self.timeout = timeout
        self.seq = 0
        self.client = None

    def reg(self):
        return "r:{%s}" % self.tag

    def counter(self):
        return "c:{%s}" % self.tag

    def once(self, seq):
        return "o:{%s}:%d" % (self.tag, seq)

    def value(self, seq):
        return "%s:%d" % (self.tag, seq)

    async def connect(self):
        if self.client is None:
            host, port = self.targets[self.ti]
            self.client = aredis.Redis(
                host=host,
                port=port,
                socket_timeout=self.timeout,
                socket_connect_timeout=2,
                retry=Retry(NoBackoff(), 0),
                single_connection_client=True,
                decode_responses=True,
            )
        return self.client

    async def drop(self, rotate=False):
        """Closes the connection; with rotate, the next one goes to the next proxy (as a
        Service sends a new connection to another endpoint when one is gone)."""
        if rotate:
            self.ti = (self.ti + 1) % len(self.targets)
        c, self.client = self.client, None
        if c is not None:
            try:
                await asyncio.wait_for(c.aclose(), 1)
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


class Load:
    """Runs lanes on an asyncio loop in a thread until stop(); `history` is the record."""

    def __init__(self, targets, lanes_per_target=12, rate=20.0, timeout=10.0, seed=1):
        self.targets = targets  # [(host, port)]
        self.rate = rate  # iterations per second per lane
        self.history = []
        self.lanes = []
        self.rng = random.Random(seed)
        run = "%06x" % random.getrandbits(24)  # keys of each run are new
        for t_i, (host, port) in enumerate(targets):
            order = [(host, port)] + [t for t in targets if t != (host, port)]
            for j in range(lanes_per_target):
                self.lanes.append(Lane(t_i * lanes_per_target + j, order, timeout, run))
        self._stop = threading.Event()
        self._thread = None
        self.started = None
        self.stopped = None

    # ------------------------------------------------------------------ running
    def start(self):
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.stopped = time.monotonic()

    def _main(self):
        asyncio.run(self._run_all())

    async def _run_all(self):
        await asyncio.gather(*(self._run_lane(lane) for lane in self.lanes))
        for lane in self.lanes:
            await lane.drop()

    async def _call(self, lane, kind, key, value, *args):
        t0 = time.monotonic()
        try:
            c = await lane.connect()
            res = await c.execute_command(*args)
            status = "ok"
        except redis.ResponseError as e:
            res, status = error_text(e), "err"
        except (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.TimeoutError) as e:
            res, status = "%s: %s" % (type(e).__name__, e), "fail"
            await lane.drop(rotate=isinstance(e, (redis.ConnectionError, OSError)))
        except Exception as e:  # noqa: BLE001 - recorded, the lane goes on
            res, status = "%s: %s" % (type(e).__name__, e), "fail"
            await lane.drop()
        t1 = time.monotonic()
        self.history.append((lane.tag, kind, key, value, t0, t1, status, res))
        return status, res

    async def _run_lane(self, lane):
        rng = random.Random(self.rng.random())
        period = 1.0 / self.rate
        others = [o for o in self.lanes if o is not lane]
        await asyncio.sleep(rng.random() * period)
        while not self._stop.is_set():
            t = time.monotonic()
            lane.seq += 1
            seq = lane.seq
            await self._call(lane, "set", lane.reg(), seq, "SET", lane.reg(), lane.value(seq))
            st, _ = await self._call(
                lane, "once", lane.once(seq), seq, "SET", lane.once(seq), lane.value(seq)
            )
            if st == "ok" and seq % WAIT_EVERY == 0:
                await self._call(lane, "wait", lane.once(seq), seq, "WAIT", 1, 1000)
            await self._call(lane, "incr", lane.counter(), None, "INCR", lane.counter())
            await self._call(lane, "get", lane.reg(), None, "GET", lane.reg())
            o = rng.choice(others)
            await self._call(lane, "get", o.reg(), None, "GET", o.reg())
            await self._call(lane, "getc", o.counter(), None, "GET", o.counter())
            rest = period - (time.monotonic() - t)
            if rest > 0:
                await asyncio.sleep(rest)

    # ------------------------------------------------------------- final read
    def final_read(self, host, port, deadline_s=120):
        """Reads every register, counter and once key ever attempted, retrying each batch
        until it is answered (the cluster may still be settling)."""
        keys = []
        for lane in self.lanes:
            keys.append(lane.reg())
            keys.append(lane.counter())
        keys.extend(sorted({rec[2] for rec in self.history if rec[1] == "once"}))
        final = {}
        deadline = time.monotonic() + deadline_s
        c = redis.Redis(host=host, port=port, socket_timeout=10, decode_responses=True)
        i = 0
        last_err = None
        while i < len(keys):
            batch = keys[i : i + 200]
            try:
                vals = c.mget(batch)
            except redis.RedisError as e:
                last_err = e
                if time.monotonic() > deadline:
                    raise RuntimeError("final read failed: %s" % e) from e
                time.sleep(0.2)
                continue
            final.update(zip(batch, vals))
            i += len(batch)
        c.close()
        _ = last_err
        return final
