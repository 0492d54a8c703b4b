#!/usr/bin/env python3
"""lab/agilelab/soak_plan.py (the schedule from a seed) and soak_verdict.py
(the outcome of each VM after a run, the tally): no lab, no root. ctest: lab_soak."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lab"))
from agilelab.soak_plan import (AGILE_MODES, FAULTS, PHASES, STOCK_MODES, VMS, phase_index, schedule,  # noqa: E402
                                vm_spec)
from agilelab.soak_verdict import Tally, classify  # noqa: E402


class Schedule(unittest.TestCase):
    def test_same_seed_same_schedule_and_runs_are_prefix_stable(self):
        self.assertEqual(schedule(42, 50), schedule(42, 50))
        # Run i depends on (seed, i) only: a shorter soak is the start of a longer one, --from replays a run.
        self.assertEqual(schedule(42, 10), schedule(42, 50)[:10])
        self.assertEqual(schedule(42, 1, first=37), schedule(42, 50)[36:37])
        self.assertNotEqual(schedule(42, 50), schedule(43, 50))

    def test_every_fault_phase_and_mode_is_drawn_and_modes_fit_the_vm(self):
        runs = schedule(5, 600)
        self.assertEqual({p["fault"] for p in runs}, set(FAULTS))
        self.assertEqual({p["phase"] for p in runs}, set(PHASES))
        self.assertEqual({p["mode"] for p in runs}, set(AGILE_MODES) | set(STOCK_MODES))
        kinds = {vm: kind for vm, kind, _ in VMS}
        for p in runs:
            self.assertEqual(p["kind"], kinds[p["vm"]])
            self.assertIn(p["mode"], AGILE_MODES if p["kind"] == "agile" else STOCK_MODES)
            self.assertIn(p["dst_index"], (0, 1))
            if p["kind"] == "stock":
                self.assertEqual(p["offload"], 0.0)  # stock VMs have no swap store
            if p["fault"] in ("link-cut", "throttle"):
                self.assertIn(p["side"], ("src", "dst"))
                self.assertTrue(1.0 <= p["for_s"] <= 20.0)
            if p["fault"] == "throttle":
                self.assertIn("rate", p)
            if p["fault"] in ("kill-src-agiled", "kill-dst-agiled", "kill-memd"):
                self.assertTrue(0.2 <= p["down_s"] <= 3.0)
        self.assertGreater(len({p["offload"] for p in runs if p["kind"] == "agile"}), 3)

    def test_vm_specs_leave_the_guest_room_and_change_with_the_incarnation(self):
        for vm, _, _ in VMS:
            for k in range(20):
                s = vm_spec(3, vm, k)
                self.assertLessEqual(s["size_mib"] + 160, s["memory_mib"])
                self.assertGreaterEqual(s["size_mib"], 48)
                self.assertEqual(s, vm_spec(3, vm, k))
        self.assertNotEqual([vm_spec(3, "a1", k) for k in range(5)], [vm_spec(4, "a1", k) for k in range(5)])

    def test_phase_index_follows_the_senders_progress_names(self):
        self.assertEqual(phase_index("handshake", True), PHASES.index("handshake"))
        self.assertEqual(phase_index("precopy", True), PHASES.index("precopy"))
        self.assertEqual(phase_index("qemu-migrate", True), PHASES.index("precopy"))
        self.assertEqual(phase_index("stop-and-copy", True), PHASES.index("switchover"))
        self.assertEqual(phase_index("device-state", True), PHASES.index("switchover"))
        self.assertEqual(phase_index("switched-over", True), PHASES.index("after-switchover"))
        self.assertEqual(phase_index("switched-over", False), PHASES.index("completed"))
        for after in ("postcopy-tail", "postcopy-push", "postcopy-paused"):
            self.assertEqual(phase_index(after, True), PHASES.index("after-switchover"), after)
        self.assertEqual(phase_index(None, True), 0)


def obs(copies, migrated=True, fault="link-cut", phase="precopy", sweep=None, memd=None, mode="agile", **kw):
    o = {"vm": "a1", "kind": "agile", "copies": copies, "migrated": migrated, "src": "h1",
         "dst": "h2" if migrated else None, "mode": mode, "fault": fault,
         "phase_at": PHASES.index(phase) if migrated else None, "report_status": "failed",
         "sweep": sweep if sweep is not None else {"done": True, "waited_s": 4.0, "errors_new": 0}, "memd": memd}
    o.update(kw)
    return o


RUN = {"state": "running"}


class Classify(unittest.TestCase):
    def test_one_running_copy_with_a_clean_sweep(self):
        v = classify(obs({"h2": RUN}, report_status="completed"))
        self.assertEqual((v["outcome"], v["corruptions"], v["vm_lost"], v["pages_lost"]), ("migrated", 0, False, 0))
        self.assertEqual(classify(obs({"h1": RUN}))["outcome"], "stayed")
        self.assertEqual(classify(obs({"h1": RUN}, migrated=False))["outcome"], "ok")
        self.assertIn("reported completed", " ".join(classify(obs({"h1": RUN}, report_status="completed"))["notes"]))

    def test_two_running_copies_are_a_corruption(self):
        v = classify(obs({"h1": RUN, "h2": RUN}))
        self.assertEqual(v["outcome"], "duplicate")
        self.assertEqual(v["corruptions"], 1)

    def test_memverify_errors_are_corruptions_and_no_sweep_is_a_lost_vm(self):
        v = classify(obs({"h2": RUN}, sweep={"done": True, "errors_new": 3, "bad": "12:stale"}))
        self.assertEqual((v["outcome"], v["corruptions"]), ("migrated", 3))
        v = classify(obs({"h2": {"state": "running", "health": "degraded"}}, sweep={"done": False, "waited_s": 90}))
        self.assertEqual(v["outcome"], "stalled")
        self.assertTrue(v["vm_lost"])
        self.assertIn("degraded", " ".join(v["notes"]))

    def test_a_destination_stalled_on_its_source_after_switchover_is_stranded_not_lost(self):
        stalled = {"done": False, "waited_s": 90}
        v = classify(obs({"h2": RUN}, fault="link-cut", phase="after-switchover", mode="postcopy", sweep=stalled))
        self.assertEqual((v["outcome"], v["stranded"], v["vm_lost"]), ("stalled-needs-recover", True, False))
        # Not before switchover, not in precopy (nothing is left at the source), not a memd kill.
        for kw in ({"phase": "precopy"}, {"mode": "precopy"}, {"fault": "kill-memd"}):
            args = dict(fault="link-cut", phase="after-switchover", mode="postcopy", sweep=stalled)
            args.update(kw)
            self.assertEqual(classify(obs({"h2": RUN}, **args))["outcome"], "stalled", kw)

    def test_pages_lost_from_agiled_and_from_a_store_shortfall(self):
        self.assertEqual(classify(obs({"h2": {"state": "running", "lost_pages": 5}}))["pages_lost"], 5)
        self.assertEqual(classify(obs({"h2": RUN}, memd={"offloaded": 100, "held": 90}))["pages_lost"], 10)
        # More in the store than offloaded (a refaulted page's old copy) loses nothing.
        self.assertEqual(classify(obs({"h2": RUN}, memd={"offloaded": 100, "held": 140}))["pages_lost"], 0)

    def test_no_running_copy(self):
        v = classify(obs({"h1": {"state": "paused", "fenced": True}}, phase="after-switchover"))
        self.assertEqual((v["outcome"], v["stranded"], v["vm_lost"]), ("fenced-paused", True, False))
        # The fault killed the VM's only running QEMU: expected, not lost.
        for fault, phase in (("kill-qemu-src", "precopy"), ("kill-qemu-src", "switchover"),
                             ("kill-qemu-dst", "after-switchover"), ("kill-qemu-dst", "completed")):
            v = classify(obs({}, fault=fault, phase=phase))
            self.assertEqual((v["outcome"], v["vm_lost"], v["expected_loss"]), ("killed-by-fault", False, True),
                             (fault, phase))
        # A destination QEMU killed before switchover must leave the source running: gone is lost.
        v = classify(obs({"h1": {"state": "crashed"}}, fault="kill-qemu-dst", phase="precopy"))
        self.assertEqual((v["outcome"], v["vm_lost"]), ("lost", True))
        self.assertIn("h1: crashed", " ".join(v["notes"]))
        v = classify(obs({}, fault="cancel", guest_crashed_on=["h3"]))
        self.assertEqual(v["outcome"], "lost")
        self.assertIn("guest kernel crashed", " ".join(v["notes"]))
        # ... unless the destination QEMU it killed already ran the VM (the phase was read a poll earlier).
        v = classify(obs({"h1": {"state": "crashed"}}, fault="kill-qemu-dst", phase="switchover",
                         killed_copy_state="running"))
        self.assertEqual(v["outcome"], "killed-by-fault")
        # ... or the migration completed, which the source allows only after the destination ran the VM
        # (its state read `incoming` right before the kill: CI rehearsal 10, run 7).
        v = classify(obs({"h2": {"state": "crashed"}}, fault="kill-qemu-dst", phase="switchover",
                         mode="postcopy", killed_copy_state="incoming", report_status="completed"))
        self.assertEqual((v["outcome"], v["vm_lost"]), ("killed-by-fault", False))
        v = classify(obs({"h2": {"state": "crashed"}}, fault="kill-qemu-dst", phase="switchover",
                         mode="postcopy", killed_copy_state="incoming", report_status="failed"))
        self.assertEqual((v["outcome"], v["vm_lost"]), ("lost", True))
        v = classify(obs({"h1": {"state": "lost"}}, fault="kill-qemu-src", phase="completed",
                         killed_copy_state="running"))
        self.assertEqual(v["outcome"], "killed-by-fault")
        self.assertEqual(classify(obs({}, fault="kill-qemu-src", phase="completed"))["outcome"], "lost")
        # Killing an agiled never excuses a missing VM; nor does a QEMU kill of a VM not migrated.
        self.assertTrue(classify(obs({"h2": {"state": "lost"}}, fault="kill-dst-agiled",
                                     phase="after-switchover"))["vm_lost"])
        self.assertTrue(classify(obs({}, migrated=False, fault="kill-qemu-src"))["vm_lost"])
        # A stock guest whose kernel crashed after QEMU's own migration is QEMU's loss, counted apart; never an
        # agile VM's, never without the crash on a console, never a VM that was not migrated.
        stock = dict(kind="stock", mode="qemu-precopy-tuned", fault="throttle", phase="completed")
        v = classify(obs({"h2": {"state": "exited"}}, guest_crashed_on=["h2"], **stock))
        self.assertEqual((v["outcome"], v["vm_lost"], v["lost_to_qemu"]), ("lost-to-qemu", False, True))
        self.assertIn("guest kernel crashed", " ".join(v["notes"]))
        self.assertEqual(classify(obs({"h2": {"state": "exited"}}, **stock))["outcome"], "lost")
        self.assertEqual(classify(obs({}, migrated=False, guest_crashed_on=["h2"], **stock))["outcome"], "lost")
        self.assertEqual(classify(obs({}, mode="postcopy", guest_crashed_on=["h2"]))["outcome"], "lost")
        # Running but broken inside (no sweep, a BUG on its console) after QEMU's own migration; its bad pages are
        # QEMU's corruptions, shown apart. The same bad pages in an agile VM are the product's.
        v = classify(obs({"h2": RUN}, sweep={"done": False, "waited_s": 90, "errors_new": 1}, guest_crashed_on=["h2"],
                         **stock))
        self.assertEqual((v["outcome"], v["vm_lost"], v["corruptions"], v["qemu_corruptions"]),
                         ("lost-to-qemu", False, 0, 1))
        v = classify(obs({"h2": RUN}, sweep={"done": False, "waited_s": 90}, **stock))
        self.assertEqual((v["outcome"], v["vm_lost"]), ("stalled", True))  # no sign it broke inside: lost
        # Hung inside, silently (seed 7, run 119 of session 13): QEMU says it runs the guest, which printed not
        # one status line there. Each fact must have been read; a guest that printed and then stopped, one that
        # QEMU holds paused, an agile VM, or a VM not moved by QEMU's own migration stays lost.
        silent = {"done": False, "waited_s": 90, "qemu_state": "running", "status_lines": 0}
        v = classify(obs({"h2": RUN}, sweep=silent, **stock))
        self.assertEqual((v["outcome"], v["vm_lost"], v["lost_to_qemu"]), ("lost-to-qemu", False, True))
        self.assertIn("hung inside", " ".join(v["notes"]))
        for not_evidence in ({"status_lines": None}, {"status_lines": 3}, {"qemu_state": "paused"},
                             {"qemu_state": None}):
            v = classify(obs({"h2": RUN}, sweep={**silent, **not_evidence}, **stock))
            self.assertEqual((v["outcome"], v["vm_lost"]), ("stalled", True), not_evidence)
        self.assertEqual(classify(obs({"h2": RUN}, sweep=silent, mode="postcopy"))["outcome"], "stalled")
        self.assertEqual(classify(obs({"h2": RUN}, sweep=silent, **{**stock, "mode": "postcopy"}))["outcome"],
                         "stalled")
        self.assertEqual(classify(obs({"h2": RUN}, sweep=silent, migrated=False, **stock))["outcome"], "stalled")
        v = classify(obs({"h2": RUN}, sweep={"done": True, "errors_new": 2}, **stock))
        self.assertEqual((v["outcome"], v["corruptions"], v["qemu_corruptions"]), ("migrated", 0, 2))
        v = classify(obs({"h2": RUN}, sweep={"done": False, "waited_s": 90, "errors_new": 1}, guest_crashed_on=["h2"]))
        self.assertEqual((v["outcome"], v["corruptions"], v["vm_lost"]), ("stalled", 1, True))
        # A kill-qemu fault that found no QEMU to kill (seed 6, run 63) excuses nothing.
        v = classify(obs({}, fault="kill-qemu-dst", phase="handshake", mode="qemu-precopy", kind="stock",
                         qemu_killed=False))
        self.assertEqual(v["outcome"], "lost")
        # qemu-* modes show no switchover: a source QEMU killed while QEMU migrates is the VM's.
        self.assertEqual(classify(obs({}, fault="kill-qemu-src", phase="precopy", mode="qemu-postcopy"))["outcome"],
                         "killed-by-fault")


class TallyTest(unittest.TestCase):
    def test_counts_and_exit_rule(self):
        t = Tally()
        p1 = {"run": 1, "vm": "a1", "fault": "cancel"}
        t.add(p1, PHASES.index("precopy"), [classify(obs({"h1": RUN})), classify(obs({"h3": RUN}, migrated=False))])
        self.assertFalse(t.failed())
        p2 = {"run": 2, "vm": "a1", "fault": "link-cut"}
        t.add(p2, PHASES.index("after-switchover"), [classify(obs({"h1": {"state": "paused", "fenced": True}}))])
        self.assertFalse(t.failed())  # stranded is reported, apart from lost
        p3 = {"run": 3, "vm": "a1", "fault": "kill-memd"}
        t.add(p3, None, [classify(obs({"h2": {"state": "running", "lost_pages": 2}},
                                      sweep={"done": True, "errors_new": 1}))])
        self.assertTrue(t.failed())
        p4 = {"run": 4, "vm": "s1", "fault": "cancel"}
        t.add(p4, PHASES.index("completed"), [classify(obs({}, kind="stock", mode="qemu-postcopy",
                                                           guest_crashed_on=["h2"], fault="cancel"))])
        j = t.as_json()
        self.assertEqual((j["runs"], j["corruptions"], j["vms_lost"], j["pages_lost"], j["vms_stranded"]),
                         (4, 1, 0, 2, 1))
        self.assertEqual(j["vms_lost_to_qemu"], 1)
        self.assertEqual(j["faults"], {"cancel": {"precopy": 1, "completed": 1}, "link-cut": {"after-switchover": 1},
                                       "kill-memd": {"not injected": 1}})
        self.assertEqual(j["migration_outcomes"], {"stayed": 1, "fenced-paused": 1, "migrated": 1, "lost-to-qemu": 1})
        self.assertEqual([f["run"] for f in j["failures"]], [2, 3, 4])
        table = t.table()
        self.assertIn("corruptions 1", table)
        self.assertIn("run 3 a1: migrated", table)


if __name__ == "__main__":
    unittest.main()
