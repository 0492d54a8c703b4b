"""The soak's judge: what became of each VM after a run, and the tally.

Pure (no lab): `classify(obs)` takes what the soak observed of one VM after a
run (its copies on every host, the guest's own integrity count, the swap
store's page count) and names the outcome; `Tally` adds the runs up into the
table and the JSON object. The rules, each a line below:

* two running copies is split brain: a corruption, whatever else holds;
* one running copy: `migrated` (at the destination), `stayed` (at the source:
  the migration failed or was cancelled before its commit point), `ok` (a VM
  that was not migrated, still where it was); its memverify sweep must have
  completed with no new error (each error is a corruption), and it must not be
  `stalled` (no whole sweep within the bound: a vCPU waits on a page, which is
  a VM lost for its users);
  a destination that lost its migration connection after switchover in post-copy
  or agile's tail (link cut, either agiled killed) and so waits on pages still
  at the source, even after the soak's `migrate --recover`, is
  `stalled-needs-recover`: counted with the stranded;
* no running copy:
  - a copy paused and fenced by a migration past its commit point is
    `fenced-paused`: whole, but not running although the soak asked for
    `migrate --recover`; counted apart (`vms_stranded`), not as lost;
  - the fault itself killed the VM's only running QEMU (the source's before the
    commit point, the destination's after it) is `killed-by-fault`: what a host
    crash does, expected, counted apart;
  - a stock VM (plain QEMU: its RAM is QEMU's own anonymous memory, which
    agiled never reads or writes) whose guest broke inside (panic, oops, BUG,
    memverify dying, on a console) after it was moved by one of QEMU's own
    modes, with no running copy or a running one that no longer sweeps, is
    `lost-to-qemu`; so is one whose QEMU, asked after the soak's wait, says it
    runs the guest while the guest printed not one status line on that
    console since QEMU's own migration brought it there (it hung inside,
    silently: soak seed 7, run 113 of session 12 and run 119 of session 13);
    bad pages such a guest reports are `corruptions_by_qemu`:
    QEMU 7.2's RAM migration under TCG breaks stock guests on this machine
    with no agiled at all (docs/reliability.md, finding 2,
    scripts/qemu-migration-check.py). Counted apart (`vms_lost_to_qemu`) as
    the baseline's loss, not the product's, and listed with the failures;
  - anything else is `lost`;
* pages lost: agiled's own count of pages the store lost (`lost_pages`) plus
  any shortfall of the store's pages for the VM's namespace against the pages
  agiled says are offloaded there.
"""

from .soak_plan import PHASES

SWITCHOVER = PHASES.index("switchover")
AFTER_SWITCHOVER = PHASES.index("after-switchover")
OUTCOMES = ("migrated", "stayed", "ok", "fenced-paused", "stalled-needs-recover", "killed-by-fault", "lost-to-qemu",
            "stalled", "lost", "duplicate")
# Faults that end the migration connection; after switchover, post-copy and agile's tail then leave the
# destination's vCPUs waiting on pages still at the source (docs/migration.md, "Failure safety").
CONNECTION_FAULTS = ("link-cut", "kill-src-agiled", "kill-dst-agiled")
TAIL_MODES = ("postcopy", "agile")


def _killed_its_only_qemu(obs):
    """The injected fault killed the QEMU that held the VM's running copy."""
    at = obs.get("phase_at")
    if at is None or not obs.get("migrated"):
        return False
    if obs.get("qemu_killed") is False:  # a kill-qemu fault that found no QEMU to kill killed nothing
        return False
    if obs["fault"] in ("kill-qemu-src", "kill-qemu-dst") and obs.get("killed_copy_state") == "running":
        # What the QEMU was doing when it was killed beats the phase, which was read a poll earlier: a
        # destination that already ran the VM (post-copy switches over within one poll), a source whose
        # migration had already failed.
        return True
    if obs["fault"] == "kill-qemu-src":
        # Before switchover the source runs the VM; a qemu-* mode shows no switchover (its QEMU switches on
        # its own), so any phase before `completed` may have been the source's copy.
        return at <= SWITCHOVER or (obs.get("mode", "").startswith("qemu-") and at < len(PHASES) - 1)
    if obs["fault"] == "kill-qemu-dst":
        # After switchover the destination's copy is the VM (post-copy: the only complete one too). So it
        # was if the migration completed: the source lets go only after the destination's `cont` ran the
        # guest (a QEMU dead before `cont` fails the ACK, and the source keeps the VM). The copy's state,
        # read right before the kill, can say `incoming` 25 ms before that (CI rehearsal 10, run 7).
        return (at >= AFTER_SWITCHOVER or obs.get("mode", "").startswith("qemu-")
                or obs.get("report_status") == "completed")
    return False


def _lost_its_source_after_switchover(obs, host):
    return (obs.get("migrated") and host == obs.get("dst") and obs.get("fault") in CONNECTION_FAULTS
            and obs.get("mode") in TAIL_MODES and obs.get("phase_at") == AFTER_SWITCHOVER)


def _broken_by_qemus_own_migration(obs, crashed=True):
    """A stock guest moved by QEMU's own RAM migration (and, with `crashed`, whose console then showed it broke
    inside): agiled held none of its RAM."""
    return (obs.get("kind") == "stock" and obs.get("migrated") and obs.get("mode", "").startswith("qemu-")
            and (bool(obs.get("guest_crashed_on")) or not crashed))


def _hung_after_qemus_own_migration(obs):
    """A stock guest moved by QEMU's own RAM migration that QEMU says it runs, yet that printed no status line on
    its new console: it hung inside. Both facts must have been read; a sample that could not be is no evidence."""
    sweep = obs.get("sweep") or {}
    return (_broken_by_qemus_own_migration(obs, crashed=False) and sweep.get("qemu_state") == "running"
            and sweep.get("status_lines") == 0)


def classify(obs):
    copies = obs.get("copies") or {}
    running = sorted(h for h, c in copies.items() if c.get("state") == "running")
    paused = sorted(h for h, c in copies.items() if c.get("state") == "paused")
    v = {"vm": obs["vm"], "outcome": None, "corruptions": 0, "vm_lost": False, "pages_lost": 0,
         "stranded": False, "expected_loss": False, "lost_to_qemu": False, "qemu_corruptions": 0, "notes": [], "running_on": running,
         "migrated": bool(obs.get("migrated"))}
    notes = v["notes"]
    lost_pages = sum(int(c.get("lost_pages") or 0) for c in copies.values())
    mem = obs.get("memd") or {}
    if mem.get("held") is not None and mem.get("offloaded"):
        short = max(0, int(mem["offloaded"]) - int(mem["held"]))
        if short:
            notes.append(f"memd holds {mem['held']} pages of the namespace, agiled says {mem['offloaded']} offloaded")
        lost_pages += short
    v["pages_lost"] = lost_pages
    if obs.get("resumed"):
        notes.append(f"paused copy on {obs['resumed']} resumed by the soak (vm resume, no --force)")
    if len(running) > 1:
        v["outcome"] = "duplicate"
        v["corruptions"] += 1
        notes.append(f"running on {', '.join(running)} at once (split brain)")
    elif len(running) == 1:
        host = running[0]
        if not obs.get("migrated"):
            v["outcome"] = "ok"
            if obs.get("src") and host != obs["src"]:
                notes.append(f"not migrated, but now running on {host} instead of {obs['src']}")
        else:
            v["outcome"] = "migrated" if host == obs.get("dst") else "stayed"
            rep = obs.get("report_status")
            if v["outcome"] == "stayed" and rep == "completed":
                notes.append("the migration reported completed but the VM runs at the source")
        sweep = obs.get("sweep") or {}
        errors = int(sweep.get("errors_new") or 0)
        if errors:
            v["corruptions"] += errors
            notes.append(f"memverify: {errors} bad pages ({sweep.get('bad', '')})".rstrip(" ()"))
        if v["corruptions"] and _broken_by_qemus_own_migration(obs, crashed=False):
            # Bad pages in a stock guest right after QEMU moved its RAM: QEMU's corruption, shown apart.
            v["qemu_corruptions"], v["corruptions"] = v["corruptions"], 0
            v["lost_to_qemu"] = True
        if not sweep.get("done") and _broken_by_qemus_own_migration(obs):
            v["outcome"] = "lost-to-qemu"
            v["lost_to_qemu"] = True
            notes.append(f"no whole memverify sweep within {sweep.get('waited_s', '?')} s; the guest broke inside "
                         f"(its console on {host}) after QEMU's own migration")
        elif not sweep.get("done") and _hung_after_qemus_own_migration(obs):
            v["outcome"] = "lost-to-qemu"
            v["lost_to_qemu"] = True
            notes.append(f"no whole memverify sweep within {sweep.get('waited_s', '?')} s; QEMU on {host} says the "
                         "guest runs, but it printed no status line there after QEMU's own migration (it hung inside)")
        elif not sweep.get("done") and _lost_its_source_after_switchover(obs, host):
            v["outcome"] = "stalled-needs-recover"
            v["stranded"] = True
            notes.append(f"no whole memverify sweep within {sweep.get('waited_s', '?')} s after the migration "
                         "connection was lost past switchover: pages still at the source, not recovered")
        elif not sweep.get("done"):
            v["outcome"] = "stalled"
            v["vm_lost"] = True
            notes.append(f"no whole memverify sweep within {sweep.get('waited_s', '?')} s "
                         f"(health {copies[host].get('health', '?')})")
    else:
        fenced = [h for h in paused if copies[h].get("fenced")]
        if fenced:
            v["outcome"] = "fenced-paused"
            v["stranded"] = True
            notes.append(f"paused and fenced on {fenced[0]}: past its commit point, not recovered")
        elif _killed_its_only_qemu(obs):
            v["outcome"] = "killed-by-fault"
            v["expected_loss"] = True
        elif _broken_by_qemus_own_migration(obs):
            v["outcome"] = "lost-to-qemu"
            v["lost_to_qemu"] = True
        else:
            v["outcome"] = "lost"
            v["vm_lost"] = True
            states = ", ".join(f"{h}: {c.get('state')}" for h, c in sorted(copies.items())) or "no copy anywhere"
            notes.append(f"no running copy ({states})")
        if obs.get("guest_crashed_on"):
            notes.append(f"the guest kernel crashed (panic/oops on its console on {', '.join(obs['guest_crashed_on'])})")
    return v


class Tally:
    """Adds the runs up: faults by kind and phase, outcomes, the totals."""

    def __init__(self):
        self.runs = 0
        self.rows = []
        self.faults = {}          # kind -> phase -> count
        self.outcomes = {}        # outcome -> count (every VM checked after every run)
        self.migration_outcomes = {}
        self.corruptions = self.vms_lost = self.pages_lost = self.vms_stranded = self.killed = 0
        self.lost_to_qemu = self.qemu_corruptions = 0
        self.failures = []        # (run, vm, outcome, notes)

    def add(self, plan, phase_at, verdicts, extra=None):
        self.runs += 1
        phase = PHASES[phase_at] if phase_at is not None else "not injected"
        self.faults.setdefault(plan["fault"], {}).setdefault(phase, 0)
        self.faults[plan["fault"]][phase] += 1
        for v in verdicts:
            self.outcomes[v["outcome"]] = self.outcomes.get(v["outcome"], 0) + 1
            if v["migrated"]:
                self.migration_outcomes[v["outcome"]] = self.migration_outcomes.get(v["outcome"], 0) + 1
            self.corruptions += v["corruptions"]
            self.vms_lost += int(v["vm_lost"])
            self.pages_lost += v["pages_lost"]
            self.vms_stranded += int(v["stranded"])
            self.killed += int(v["expected_loss"])
            self.lost_to_qemu += int(v["lost_to_qemu"] and v["outcome"] == "lost-to-qemu")
            self.qemu_corruptions += v["qemu_corruptions"]
            if v["corruptions"] or v["vm_lost"] or v["pages_lost"] or v["stranded"] or v["lost_to_qemu"]:
                self.failures.append({"run": plan["run"], "vm": v["vm"], "outcome": v["outcome"],
                                      "notes": v["notes"]})
        self.rows.append({"plan": plan, "phase_at": phase, "verdicts": verdicts, **(extra or {})})

    @property
    def daemon_crashes(self):
        """agiled / agile-memd found dead without the soak killing it (the soak starts them again)."""
        return sum(len(r.get("daemon_crashes", [])) for r in self.rows)

    def failed(self):
        return bool(self.corruptions or self.vms_lost or self.pages_lost)

    def as_json(self):
        return {"runs": self.runs, "corruptions": self.corruptions, "vms_lost": self.vms_lost,
                "pages_lost": self.pages_lost, "vms_stranded": self.vms_stranded,
                "daemon_crashes": self.daemon_crashes, "vms_killed_by_fault": self.killed,
                "vms_lost_to_qemu": self.lost_to_qemu, "corruptions_by_qemu": self.qemu_corruptions,
                "faults": self.faults, "outcomes": self.outcomes, "migration_outcomes": self.migration_outcomes,
                "failures": self.failures, "run_results": self.rows}

    def table(self):
        out = [f"runs {self.runs}   corruptions {self.corruptions}   vms_lost {self.vms_lost}   "
               f"pages_lost {self.pages_lost}   vms_stranded (fenced-paused) {self.vms_stranded}   "
               f"vms_killed_by_fault {self.killed}   vms_lost_to_qemu (stock guest broken by QEMU's own migration) "
               f"{self.lost_to_qemu}   corruptions_by_qemu {self.qemu_corruptions}   "
               f"daemon_crashes (not injected) {self.daemon_crashes}", ""]
        phases = list(PHASES) + ["not injected"]
        out.append(f"{'fault':<16}" + "".join(f"{p:>17}" for p in phases) + f"{'total':>7}")
        for kind in sorted(self.faults):
            row = self.faults[kind]
            out.append(f"{kind:<16}" + "".join(f"{row.get(p, 0):>17}" for p in phases) + f"{sum(row.values()):>7}")
        out.append("")
        out.append("outcome of the migrated VM: " + ", ".join(f"{k} {n}" for k, n in sorted(self.migration_outcomes.items())))
        out.append("outcome of every VM checked: " + ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items())))
        for f in self.failures:
            out.append(f"  run {f['run']} {f['vm']}: {f['outcome']}: {'; '.join(f['notes'])}")
        return "\n".join(out)
