#!/usr/bin/env python3
"""lab/agilelab/appcsv.py on synthetic loadgen CSV with known answers: the
windows, the blackout (zeros count, missing intervals do not), throughput
that leaves missing intervals out, the ops-weighted p99, loadgen's SIGTERM-partial last
row, and the guest-crash scan of the consoles. ctest: lab_appcsv."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
from agilelab.appcsv import app_figures, parse, slots, weighted_percentile, window_figures  # noqa: E402

HEADER = "t_ms,ops,ops_per_s,p50_us,p99_us,errors\n"


def csv_of(rows, interval=10):
    """rows: [(index, ops, p99_us, errors)] -> loadgen CSV text (t_ms = interval end)."""
    return HEADER + "".join(f"{(i + 1) * interval},{ops},{ops * 1000 // interval},0,{p99},{err}\n"
                            for i, ops, p99, err in rows)


class AppCsv(unittest.TestCase):
    def test_known_run(self):
        # 10 ms intervals, 6 s of load. Migration from 2000 to 4000 ms.
        # before: 100 ops per interval, p99 500 us; during: 50 ops, p99 2000, except a
        # 300 ms blackout (30 zero intervals at 3000-3300 ms) and 5 missing intervals at
        # 3500-3550; after: 100 ops, p99 800, the first interval has the stalled requests
        # (10 ops at p99 300000 us).
        rows = []
        for i in range(600):
            t = i * 10
            if t < 2000:
                rows.append((i, 100, 500, 0))
            elif 3000 <= t < 3300:
                rows.append((i, 0, 0, 1 if t == 3000 else 0))
            elif 3500 <= t < 3550:
                continue  # missing
            elif t < 4000:
                rows.append((i, 50, 2000, 0))
            elif t == 4000:
                rows.append((i, 10, 300000, 0))
            else:
                rows.append((i, 100, 800, 0))
        f = app_figures(csv_of(rows), 10, 6000, 2000, 4000)
        self.assertAlmostEqual(f["ops_before"], 10000.0)  # 100 ops / 10 ms, warm-up second excluded
        # during: 200 intervals, 5 missing, 30 zero, 165 x 50 ops over 195 present intervals (1950 ms)
        self.assertAlmostEqual(f["ops_during"], 165 * 50 * 1000 / 1950)
        self.assertAlmostEqual(f["ops_after"], (10 + 199 * 100) * 1000 / 2000)
        self.assertEqual(f["blackout_ms"], 300)
        self.assertEqual(f["blackout_before_ms"], 0)
        self.assertEqual(f["p99_during_us"], 2000)
        self.assertEqual(f["p99_after_us"], 800)  # 10 of 19910 ops at 300 ms: under 1%
        self.assertEqual(f["p99_before_us"], 500)
        self.assertEqual(f["intervals"], 600)
        self.assertEqual(f["intervals_missing"], 5)
        self.assertEqual(f["intervals_missing_from_migration"], 5)
        self.assertEqual(f["errors_from_migration"], 1)

    def test_missing_is_not_zero(self):
        # zeros 0..9 (100 ms), missing 10..19, zeros 20..24 (50 ms): missing ends the run.
        rows = [(i, 0, 0, 0) for i in range(10)] + [(i, 0, 0, 0) for i in range(20, 25)] + \
            [(i, 5, 100, 0) for i in range(25, 30)]
        s = slots(parse(csv_of(rows)), 10, 300)
        w = window_figures(s, (0, 300))
        self.assertEqual(w["blackout_ms"], 100)
        self.assertEqual(w["missing"], 10)
        self.assertAlmostEqual(w["ops_per_s"], 25 * 1000 / 200)  # 25 ops over 20 present intervals

    def test_blackout_at_the_end_and_all_missing(self):
        rows = [(i, 7, 100, 0) for i in range(5)] + [(i, 0, 0, 0) for i in range(5, 12)]
        s = slots(parse(csv_of(rows)), 10, 120)
        self.assertEqual(window_figures(s, (0, 120))["blackout_ms"], 70)
        empty = window_figures(slots([], 10, 100), (0, 100))
        self.assertIsNone(empty["ops_per_s"])
        self.assertIsNone(empty["blackout_ms"])
        self.assertIsNone(empty["p99_us"])
        self.assertEqual(empty["missing"], 10)

    def test_garbage_row_is_missing_and_short_last_row(self):
        text = HEADER + "10,5,500,0,100,0\n20,x,0,0,0,0\n30,5,500,0,100,0\n35,2,400,0,90,0\n"
        s = slots(parse(text), 10, 35)
        self.assertEqual([x[2] is None for x in s], [False, True, False, False])
        self.assertEqual(s[-1][:2], (30, 35))
        self.assertAlmostEqual(window_figures(s, (0, 35))["ops_per_s"], 12 * 1000 / 25)

    def test_sigterm_partial_last_row(self):
        # Seen: stopped at 26010.6 ms, loadgen wrote 26010 for interval 2600 and again for the 0.6 ms tail.
        text = HEADER + "26000,16,1600,0,7135,0\n26010,0,0,0,0,0\n26010,4,4749,0,20607,0\n"
        s = slots(parse(text), 10, 26011)
        self.assertEqual(len(s), 2602)
        self.assertEqual([x[2]["ops"] for x in s[-3:]], [16, 0, 4])
        self.assertEqual(s[-1][:2], (26010, 26011))

    def test_weighted_percentile(self):
        self.assertEqual(weighted_percentile([(1, 98), (1000, 2)], 0.99), 1000)
        self.assertEqual(weighted_percentile([(1, 99), (1000, 1)], 0.99), 1)
        self.assertEqual(weighted_percentile([(5, 0)], 0.99), None)


class GuestCrash(unittest.TestCase):
    def test_crash_found_on_either_console(self):
        import tempfile
        from agilelab.app import crash_in
        with tempfile.TemporaryDirectory() as d:
            ok, bad = os.path.join(d, "src.log"), os.path.join(d, "dst.log")
            with open(ok, "w") as f:
                f.write("redis: ok keys=50000 used_memory=1 clients=5 cmds=1 ops_per_sec=1\n")
            self.assertIsNone(crash_in({"src": ok, "gone": os.path.join(d, "missing.log")}))
            with open(bad, "w") as f:
                f.write("[   36.13] list_add corruption.\n[   36.14] kernel BUG at lib/list_debug.c:30!\n")
            self.assertEqual(crash_in({"src": ok, "dst": bad}), "dst: [   36.14] kernel BUG at lib/list_debug.c:30!")

    def test_redis_failure_line_ends_the_boot_wait(self):
        import tempfile
        from agilelab.app import last_line_with
        with tempfile.TemporaryDirectory() as d:
            log = os.path.join(d, "serial.log")
            self.assertIsNone(last_line_with(log, "redis: FAIL"))  # no console yet
            with open(log, "w") as f:
                f.write("agile-net: up dev=enp0s2 ip=10.77.0.100/24\nredis: FAIL no PONG after 180 s\n"
                        "agile-guest: workload exited rc=1\n")
            self.assertEqual(last_line_with(log, "redis: FAIL"), "redis: FAIL no PONG after 180 s")
            self.assertIsNone(last_line_with(log, "redis: ok"))


if __name__ == "__main__":
    unittest.main()
