#!/usr/bin/env python3
"""The lab's swap-store choice without a lab: `experiment --store` parsing,
the run plan (agile once per store, interleaved repeats, entry keys and tags),
the shared run loop (a failed run is recorded and the loop goes on, every run
taken down with its logs kept, its report written, Ctrl-C -> 130), the report's
store column and side-by-side table, targets per store, the --app table, and
the Redis Cluster's node command line. ctest: lab_store."""
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
from agilelab import runs  # noqa: E402
from agilelab.aggregate import fold  # noqa: E402
from agilelab.app import fold_app  # noqa: E402
from agilelab.app_report import app_table  # noqa: E402
from agilelab.experiment import options  # noqa: E402
from agilelab.metrics import targets, targets_by_store  # noqa: E402
from agilelab.redis_cluster import node_argv, node_ports, seeds, store_url  # noqa: E402
from agilelab.report import spread_cell, store_table, table  # noqa: E402


def agile_run(store, k, t, impact):
    return {"mode": "agile", "key": runs.entry_key("agile", store), "store": store, "run": k, "ok": True,
            "migration_time_s": t, "impact_migrated": impact, "impact_colocated": 0.5, "bytes_on_wire": 100 << 20,
            "resident_after_offload_bytes": 300 << 20, "offload_wait_s": 10.0}


def summary_of(entries, stores):
    return {"stores": stores, "modes": {k: fold(rs, ("migration_time_s",)) for k, rs in entries.items()}}


class Options(unittest.TestCase):
    def test_store_list(self):
        self.assertEqual(options(["--short"]).stores, ["memd"])
        self.assertEqual(options(["--short", "--store", "memd,redis-cluster"]).stores, ["memd", "redis-cluster"])
        self.assertEqual(options(["--short", "--store", "redis-cluster"]).stores, ["redis-cluster"])

    def test_bad_store_is_refused(self):
        for bad in ("nfs", "memd,memd", ",", "memd,redis"):
            with self.assertRaises(SystemExit, msg=bad), contextlib.redirect_stderr(io.StringIO()):
                options(["--short", "--store", bad])


class Plan(unittest.TestCase):
    def test_agile_once_per_store_others_once_interleaved(self):
        p = runs.plan(["agile", "precopy", "qemu-precopy"], 2, ["memd", "redis-cluster"])
        self.assertEqual([t for t, _ in p], ["agile", "agile@redis-cluster", "precopy", "qemu-precopy",
                                             "agile_r2", "agile@redis-cluster_r2", "precopy_r2", "qemu-precopy_r2"])
        cases = dict(p)
        self.assertEqual(cases["agile@redis-cluster"]["store"], "redis-cluster")
        self.assertEqual(cases["agile@redis-cluster"]["lab_store"], "redis-cluster")
        self.assertEqual(cases["agile_r2"], {"key": "agile", "mode": "agile", "store": "memd", "lab_store": "memd",
                                             "run": 2})
        # The store plays no part in the other modes: no store label, a lab with the first store.
        self.assertIsNone(cases["qemu-precopy"]["store"])
        self.assertEqual(cases["precopy"]["lab_store"], "memd")

    def test_one_store_keeps_the_old_names(self):
        p = runs.plan(["agile", "qemu-postcopy"], 1)
        self.assertEqual([t for t, _ in p], ["agile", "qemu-postcopy"])
        # Only the cluster: the entry says so, and the others' lab runs the cluster too.
        p = dict(runs.plan(["agile", "postcopy"], 1, ["redis-cluster"]))
        self.assertEqual(list(p), ["agile@redis-cluster", "postcopy"])
        self.assertEqual(p["postcopy"]["lab_store"], "redis-cluster")


class RunAll(unittest.TestCase):
    def setUp(self):
        self.downs = []
        self.saved = runs.down
        runs.down = lambda prefix, keep_logs=None, quiet=False: self.downs.append((prefix, keep_logs))
        self.out = tempfile.mkdtemp(prefix="lab_store_test-")

    def tearDown(self):
        runs.down = self.saved
        shutil.rmtree(self.out, ignore_errors=True)

    def test_failure_is_recorded_and_the_loop_goes_on(self):
        planned = runs.plan(["agile", "qemu-precopy"], 1, ["memd", "redis-cluster"])
        seen = []

        def run_one(case, tag):
            if case["store"] == "redis-cluster":
                raise RuntimeError("cluster down")
            return {"mode": case["mode"], "ok": True, "migration_time_s": 1.5}
        rc = runs.run_all("tst", self.out, planned, run_one, lambda case, res: seen.append(res))
        self.assertEqual(rc, 1)
        self.assertEqual([r["timelines"] for r in seen], ["agile", "agile@redis-cluster", "qemu-precopy"])
        failed = seen[1]
        self.assertEqual((failed["ok"], failed["error"], failed["store"], failed["key"]),
                         (False, "cluster down", "redis-cluster", "agile@redis-cluster"))
        self.assertNotIn("lab_store", failed)
        # Every run was taken down with its logs kept under its own tag, and its report written.
        self.assertEqual(self.downs, [("tst", os.path.join(self.out, "logs", t)) for t, _ in planned])
        with open(os.path.join(self.out, "reports", "agile@redis-cluster.json")) as f:
            self.assertEqual(json.load(f)["error"], "cluster down")

    def test_interrupt_takes_the_lab_down(self):
        def run_one(case, tag):
            raise KeyboardInterrupt
        rc = runs.run_all("tst", self.out, runs.plan(["agile"], 3), run_one, lambda c, r: None)
        self.assertEqual(rc, 130)
        self.assertEqual(self.downs[-1], ("tst", None))


class Report(unittest.TestCase):
    def entries(self):
        return {"agile": [agile_run("memd", 1, 2.0, 1.0), agile_run("memd", 2, 4.0, 3.0)],
                "agile@redis-cluster": [agile_run("redis-cluster", 1, 3.0, 2.0), agile_run("redis-cluster", 2, 5.0, 6.0)],
                "qemu-precopy": [{"mode": "qemu-precopy", "key": "qemu-precopy", "store": None, "run": k, "ok": True,
                                  "migration_time_s": 12.0, "impact_migrated": 8.0, "impact_colocated": 4.0}
                                 for k in (1, 2)]}

    def test_table_labels_rows_by_store(self):
        s = summary_of(self.entries(), ["memd", "redis-cluster"])
        rows = {line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
                for line in table(s).splitlines()[2:]}
        self.assertEqual(sorted(rows), ["agile/memd", "agile/redis-cluster", "qemu-precopy/-"])
        # median (min..max) of each store's own runs: 3.00 (2.00..4.00) on memd, 4.00 (3.00..5.00) on the cluster
        self.assertIn("| 3.00 (2.00..4.00) |", rows["agile/memd"])
        self.assertIn("| 4.00 (3.00..5.00) |", rows["agile/redis-cluster"])

    def test_store_table_side_by_side(self):
        s = summary_of(self.entries(), ["memd", "redis-cluster"])
        lines = store_table(s).splitlines()
        self.assertTrue(lines[0].startswith("| store | entry | ok runs |"))
        self.assertTrue(lines[2].startswith("| memd | `agile` | 2/2 | 300 (300..300) | 10 (10..10) | 3.00 (2.00..4.00) |"), lines[2])
        self.assertTrue(lines[3].startswith("| redis-cluster | `agile@redis-cluster` | 2/2 |"), lines[3])
        self.assertIsNone(store_table(summary_of({"agile": self.entries()["agile"]}, ["memd"])))

    def test_targets_per_store(self):
        s = summary_of(self.entries(), ["memd", "redis-cluster"])
        by = targets_by_store(s)
        self.assertEqual(sorted(by), ["memd", "redis-cluster"])
        self.assertAlmostEqual(by["memd"]["time_ratio_qemu_precopy_over_agile"], 12.0 / 3.0)
        self.assertAlmostEqual(by["redis-cluster"]["time_ratio_qemu_precopy_over_agile"], 12.0 / 4.0)
        self.assertEqual(by["memd"], targets(s))
        # impact (median): memd 2.0 <= 8/2 met; cluster 4.0 <= 4 met; lost work is clipped at 0.
        self.assertTrue(by["redis-cluster"]["impact_target_2x_met_migrated"])
        self.assertEqual(by["redis-cluster"]["impact_agile_lost_migrated"], 4.0)

    def test_app_table_has_a_store_column(self):
        app = {"agile": fold_app([{"mode": "agile", "store": "memd", "ok": True, "ops_during": 1000.0}]),
               "agile@redis-cluster": fold_app([{"mode": "agile", "store": "redis-cluster", "ok": False,
                                                  "ops_during": 500.0}]),
               "qemu-postcopy": fold_app([{"mode": "qemu-postcopy", "store": None, "ok": True}])}
        lines = app_table({"app": app}).splitlines()
        self.assertTrue(lines[0].startswith("| mode | store | ok runs | ops/s before | ops/s during |"))
        self.assertTrue(lines[2].startswith("| agile | memd | 1/1 | - | 1000 |"), lines[2])
        self.assertTrue(lines[3].startswith("| agile | redis-cluster | 0/1 | - | 500 |"), lines[3])
        self.assertTrue(lines[4].startswith("| qemu-postcopy | - | 1/1 |"), lines[4])

    def test_spread_cell(self):
        self.assertEqual(spread_cell({"median": 2.0, "min": 1.0, "max": 3.0, "n": 2}, "{:.1f}", 1, 3),
                         "2.0 (1.0..3.0) [2/3]")
        self.assertEqual(spread_cell({"median": None, "min": None, "max": None, "n": 0}), "-")


class RedisNodes(unittest.TestCase):
    def test_three_masters_three_replicas_tls_only(self):
        self.assertEqual(node_ports(), [7001, 7002, 7003, 7004, 7005, 7006])
        self.assertEqual(seeds("10.77.0.2"), "10.77.0.2:7001,10.77.0.2:7002,10.77.0.2:7003")
        self.assertEqual(store_url("10.77.0.2", "/x/h.password"),
                         "redis-cluster://10.77.0.2:7001,10.77.0.2:7002,10.77.0.2:7003?password-file=/x/h.password")
        argv = node_argv("/usr/bin/redis-server", "/lab/redis/admin.conf", "10.77.0.2", 7004, "/lab/redis/7004",
                         "/lab/pki/redis")
        self.assertEqual(argv[:2], ["/usr/bin/redis-server", "/lab/redis/admin.conf"])  # config file first
        opt = dict(zip(argv[2::2], argv[3::2]))
        self.assertEqual((opt["--port"], opt["--tls-port"], opt["--bind"]), ("0", "7004", "10.77.0.2"))
        for k in ("--tls-cluster", "--tls-replication", "--tls-auth-clients", "--cluster-enabled"):
            self.assertEqual(opt[k], "yes", k)
        self.assertNotIn("requirepass", " ".join(argv))  # the admin password stays in the config file


if __name__ == "__main__":
    unittest.main()
