"""The checker finds what it claims to: each figure from a made-up history.

python3 -m unittest deploy/compose/chaos/test_check.py (run first by `make chaos`)."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check  # noqa: E402


def rec(kind, key, value, t0, t1, status="ok", res="OK"):
    return ("c1", kind, key, value, t0, t1, status, res)


class CheckTest(unittest.TestCase):
    def test_clean_history_is_clean(self):
        h = [
            rec("set", "r:{c1}", 1, 0.0, 0.1),
            rec("once", "o:{c1}:1", 1, 0.1, 0.2),
            rec("wait", "o:{c1}:1", 1, 0.2, 0.3, res=1),
            rec("incr", "c:{c1}", None, 0.3, 0.4, res=1),
            rec("get", "r:{c1}", None, 0.5, 0.6, res="c1:1"),
            rec("getc", "c:{c1}", None, 0.5, 0.6, res="1"),
        ]
        f = {"r:{c1}": "c1:1", "o:{c1}:1": "c1:1", "c:{c1}": "1"}
        r = check.check(h, f)
        self.assertEqual((r["lost"], r["stale"], r["impossible"]), (0, 0, 0))
        self.assertEqual(r["wait_acked"], 1)

    def test_lost_writes(self):
        h = [
            rec("once", "o:{c1}:1", 1, 0.0, 0.1),
            rec("wait", "o:{c1}:1", 1, 0.1, 0.2, res=1),
            rec("once", "o:{c1}:2", 2, 0.2, 0.3),
            rec("incr", "c:{c1}", None, 0.3, 0.4, res=5),
            rec("incr", "c:{c1}", None, 0.4, 0.5, res=5),  # handed out again: 1 lost
            rec("set", "r:{c1}", 3, 0.5, 0.6),
        ]
        f = {"o:{c1}:1": None, "o:{c1}:2": "c1:2", "c:{c1}": "5", "r:{c1}": "c1:2"}
        r = check.check(h, f)
        self.assertEqual(r["lost_once"], 1)
        self.assertEqual(r["lost_wait"], 1)
        self.assertEqual(r["lost_incr"], 1)
        self.assertEqual(r["lost_reg"], 1)
        self.assertEqual(r["lost"], 3)

    def test_stale_and_impossible_reads(self):
        h = [
            rec("set", "r:{c1}", 1, 0.0, 0.1),
            rec("set", "r:{c1}", 2, 0.2, 0.3),
            rec("set", "r:{c1}", 3, 0.4, 0.5, status="err", res="READONLY You can't write"),
            rec("set", "r:{c1}", 4, 5.0, 5.1),
            rec("incr", "c:{c1}", None, 0.0, 0.1, res=1),
            rec("incr", "c:{c1}", None, 0.1, 0.2, res=2),
            rec("get", "r:{c1}", None, 1.0, 1.1, res="c1:1"),  # stale: 2 acked before
            rec("get", "r:{c1}", None, 1.0, 1.1, res=None),  # stale: nil
            rec("get", "r:{c1}", None, 1.0, 1.1, res="c1:9"),  # never written
            rec("get", "r:{c1}", None, 1.0, 1.1, res="c1:4"),  # written after the read
            rec("get", "r:{c1}", None, 1.0, 1.1, res="c1:3"),  # refused write
            rec("getc", "c:{c1}", None, 1.0, 1.1, res="1"),  # below acked 2
            rec("getc", "c:{c1}", None, 1.0, 1.1, res="7"),  # above the 2 sent
        ]
        f = {"r:{c1}": "c1:4", "c:{c1}": "2"}
        r = check.check(h, f)
        self.assertEqual(r["stale"], 3)
        self.assertEqual(r["lost_reg"], 1)  # SET 2, acknowledged, read as 1 and nil
        self.assertEqual(r["impossible"], 4)

    def test_unwritable_time(self):
        h = [
            rec("set", "r:{c1}", 1, 0.0, 0.1),
            rec("set", "r:{c1}", 2, 1.0, 3.0, status="fail", res="TimeoutError: x"),
            rec("set", "r:{c1}", 3, 3.0, 3.0, status="err", res="ERR backend down"),
            rec("set", "r:{c1}", 4, 3.5, 4.5),
        ]
        r = check.check(h, {"r:{c1}": "c1:4"})
        self.assertAlmostEqual(r["unwritable_s"], 3.5)
        self.assertEqual(r["errors"]["ERR"], 1)
        self.assertEqual(r["errors"]["no reply (TimeoutError)"], 1)


if __name__ == "__main__":
    unittest.main()
