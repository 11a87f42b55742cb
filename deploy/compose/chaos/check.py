"""Checks a load history (see load.py) and the final values read after the fault healed.

Figures (all counts):
- lost:        acknowledged writes not there at the end: once keys acknowledged but
               missing or different, INCRs acknowledged whose result was handed out
               again (the counter went back) or is above the final value, registers
               whose final value is older than their last acknowledged SET, and
               register SETs acknowledged and later read older (a later SET hides
               them from the final read);
- lost_wait:   of the lost once keys, those WAIT-acknowledged (WAIT 1 answered >= 1);
- stale:       reads older than a write acknowledged before the read started (a
               register at an older seq or nil, a counter below an acknowledged INCR
               result);
- impossible:  reads of a value never written, written only after the read ended, or
               written by a request that got an error saying it did not run (READONLY,
               NOREPLICAS, ...), or a counter above the INCRs sent;
- unwritable:  the longest time, over registers and counters, from the first attempt
               after an acknowledged write to the next acknowledged write;
- errors:      error replies and failed requests (no reply), by kind.
"""

import collections

# Error replies that say the command did not run.
REFUSED = ("READONLY", "NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "NOPERM", "NOAUTH")


def refused(status, res):
    return status == "err" and str(res).split(" ", 1)[0] in REFUSED


def parse_value(v):
    """'cN:seq' -> ('cN', seq), else None."""
    if not isinstance(v, str) or ":" not in v:
        return None
    tag, _, seq = v.rpartition(":")
    try:
        return tag, int(seq)
    except ValueError:
        return None


def tag_of(key):
    return key[key.index("{") + 1 : key.index("}")]


def error_kind(status, res):
    s = str(res)
    if status == "err":
        return s.split(" ", 1)[0] if s else "ERR"
    return "no reply (%s)" % s.split(":", 1)[0]


def check(history, final, end=None):
    out = {
        "ops": len(history),
        "acked_writes": 0,
        "lost": 0,
        "lost_once": 0,
        "lost_incr": 0,
        "lost_reg": 0,
        "lost_wait": 0,
        "wait_acked": 0,
        "stale": 0,
        "impossible": 0,
        "unwritable_s": 0.0,
        "unwritable_key": None,
        "errors": collections.Counter(),
        "error_samples": {},
        "lost_samples": [],
        "lost_times": [],
        "bad_reads": [],
    }
    if end is None:
        end = max((r[5] for r in history), default=0.0)

    regs = collections.defaultdict(dict)  # key -> seq -> record
    onces = {}  # key -> record
    waited = set()  # once keys WAIT-acknowledged
    incrs = collections.defaultdict(list)  # key -> records
    reads = []
    writes_by_key = collections.defaultdict(list)
    for rec in history:
        _lane, kind, key, value, _t0, _t1, status, res = rec
        if status != "ok":
            k = error_kind(status, res)
            out["errors"][k] += 1
            out["error_samples"].setdefault(k, str(res)[:160])
        if kind == "set":
            regs[key][value] = rec
            writes_by_key[key].append(rec)
        elif kind == "once":
            onces[key] = rec
        elif kind == "wait":
            if status == "ok" and isinstance(res, int) and res >= 1:
                waited.add(key)
        elif kind == "incr":
            incrs[key].append(rec)
            writes_by_key[key].append(rec)
        elif kind in ("get", "getc"):
            reads.append(rec)

    # --- lost writes
    for key, rec in onces.items():
        value_sent = "%s:%d" % (tag_of(key), rec[3])
        if rec[6] == "ok":
            out["acked_writes"] += 1
            if key in waited:
                out["wait_acked"] += 1
            if final.get(key) != value_sent:
                out["lost_once"] += 1
                out["lost_times"].append(rec[5])
                if key in waited:
                    out["lost_wait"] += 1
                if len(out["lost_samples"]) < 5:
                    out["lost_samples"].append((key, round(rec[5], 3), final.get(key)))
        elif refused(rec[6], rec[7]) and final.get(key) == value_sent:
            out["impossible"] += 1
            out["bad_reads"].append(("refused once write present", key, rec[7]))
    for key, recs in incrs.items():
        acked = [r[7] for r in recs if r[6] == "ok" and isinstance(r[7], int)]
        out["acked_writes"] += len(acked)
        distinct = set(acked)
        fin = final.get(key)
        fin = int(fin) if fin is not None else 0
        out["lost_incr"] += (len(acked) - len(distinct)) + sum(1 for v in distinct if v > fin)
    for key, by_seq in regs.items():
        acked = [s for s, r in by_seq.items() if r[6] == "ok"]
        out["acked_writes"] += len(acked)
        if not acked:
            continue
        got = parse_value(final.get(key))
        if got is None or got[1] < max(acked):
            out["lost_reg"] += 1
    out["lost"] = out["lost_once"] + out["lost_incr"] + out["lost_reg"]

    # --- reads
    lost_seen = set()  # (register, seq): acknowledged, then read older: gone
    acked_incr = {}
    for key, recs in incrs.items():
        acked_incr[key] = sorted((r[5], r[7]) for r in recs if r[6] == "ok")
    for rec in reads:
        _lane, kind, key, _v, t0, t1, status, res = rec
        if status != "ok":
            continue
        if kind == "get":
            by_seq = regs.get(key, {})
            last_acked = max(
                (s for s, r in by_seq.items() if r[6] == "ok" and r[5] < t0), default=None
            )
            if res is None:
                if last_acked is not None:
                    lost_seen.add((key, last_acked))
                    out["stale"] += 1
                    out["bad_reads"].append(("nil register", key, last_acked))
                continue
            got = parse_value(res)
            if got is None or got[0] != tag_of(key) or got[1] not in by_seq:
                out["impossible"] += 1
                out["bad_reads"].append(("never written", key, res))
                continue
            w = by_seq[got[1]]
            if w[4] > t1:
                out["impossible"] += 1
                out["bad_reads"].append(("written after the read", key, res))
            elif refused(w[6], w[7]):
                out["impossible"] += 1
                out["bad_reads"].append(("refused write read", key, res, w[7]))
            elif last_acked is not None and got[1] < last_acked:
                out["stale"] += 1
                out["bad_reads"].append(("stale register", key, res, last_acked))
                lost_seen.add((key, last_acked))
        else:  # counter
            v = int(res) if res is not None else 0
            best = 0
            for t_ack, r in acked_incr.get(key, ()):
                if t_ack >= t0:
                    break
                best = max(best, r)
            sent = sum(1 for r in incrs.get(key, ()) if r[4] < t1)
            if v < best:
                out["stale"] += 1
                out["bad_reads"].append(("counter below acked INCR", key, v, best))
            elif v > sent:
                out["impossible"] += 1
                out["bad_reads"].append(("counter above INCRs sent", key, v, sent))

    # A register SET acknowledged and then read older was lost even when a later SET
    # hides it from the final read (counted once per write; not twice with the above).
    for key, seq in lost_seen:
        got = parse_value(final.get(key))
        if got is not None and got[1] >= max(s for s, r in regs[key].items() if r[6] == "ok"):
            out["lost_reg"] += 1
            out["lost_times"].append(regs[key][seq][5])
    out["lost"] = out["lost_once"] + out["lost_incr"] + out["lost_reg"]

    # --- longest time a key could not be written
    for key, recs in writes_by_key.items():
        first_try = None
        for r in recs:  # one lane writes a key, one request at a time: in order
            if first_try is None:
                first_try = r[4]
            if r[6] == "ok":
                gap = r[5] - first_try
                if gap > out["unwritable_s"]:
                    out["unwritable_s"], out["unwritable_key"] = gap, key
                first_try = None
        if first_try is not None and end - first_try > out["unwritable_s"]:
            out["unwritable_s"], out["unwritable_key"] = end - first_try, key + " (never again)"
    out["bad_reads"] = out["bad_reads"][:10]
    return out
