"""The soak's schedule: every run's migration and fault, from a seed alone.

Pure (no lab, no clock): `schedule(seed, runs)` gives the same list for the
same seed, and run i's draw depends only on (seed, i), so `--runs 10` is the
first ten runs of `--runs 300` and a failure of run 57 replays with
`--seed S --from 57` (FoundationDB's rule: every fault from a seed).
What is chosen at run time (which host the VM is on now) is drawn here as an
index (`dst_index`: which of the other hosts), so the schedule does not depend
on what happened in earlier runs.
"""
import random

HOSTS = ("h1", "h2", "h3")
# Each VM, its kind and the host it starts on. Stock VMs (plain QEMU, no
# shim) are the only ones QEMU's own modes can migrate.
VMS = (("a1", "agile", "h1"), ("a2", "agile", "h2"), ("s1", "stock", "h3"))
AGILE_MODES = ("agile", "precopy", "postcopy")
STOCK_MODES = ("qemu-precopy", "qemu-postcopy", "qemu-precopy-tuned", "qemu-hybrid")
FAULTS = ("kill-src-agiled", "kill-dst-agiled", "kill-memd", "kill-qemu-src", "kill-qemu-dst", "link-cut",
          "throttle", "cancel")
# A migration's phases in order, as `migrate status` shows them (sender.cc's Progress names): the fault goes
# in at the first poll that sees the scheduled phase or a later one.
PHASES = ("handshake", "precopy", "switchover", "after-switchover", "completed")
# `qemu-postcopy` (QEMU asked to switch to its own post-copy) counts as `precopy`, as it did while agiled
# reported it as `qemu-migrate`: faults drawn for after-switchover still go in once QEMU's migration is over.
PROGRESS_PHASE = {"handshake": 0, "storage": 0, "precopy": 1, "qemu-migrate": 1, "qemu-postcopy": 1,
                  "stop-and-copy": 2,
                  "device-state": 2, "switched-over": 3, "postcopy-tail": 3, "postcopy-push": 3,
                  "postcopy-paused": 3}
OFFLOAD_FRACTIONS = (0.0, 0.25, 0.5, 0.67, 0.9)
TRICKLE_RATES = ("64kbit", "256kbit", "1mbit")
VM_MEMORY_MIB = (256, 320, 384)


def phase_index(progress_phase, running):
    """The PHASES index of a `migrate status` answer: its progress phase, or
    `completed` once the job no longer runs."""
    if not running:
        return len(PHASES) - 1
    return PROGRESS_PHASE.get(progress_phase or "handshake", 0)


def _rng(seed, *what):
    # A str seed is hashed with SHA-512 by random.seed: stable across runs and Python versions.
    return random.Random(":".join(["agile-soak", str(seed)] + [str(w) for w in what]))


def vm_spec(seed, vm, incarnation):
    """A VM's size and memverify load for its k-th start (a lost VM is
    started again, as incarnation k+1, with a fresh draw)."""
    r = _rng(seed, "vm", vm, incarnation)
    mem = r.choice(VM_MEMORY_MIB)
    # memverify needs ~128 MiB of guest beyond its area (guest/README.md).
    size = r.randrange(48, mem - 160 + 1, 16)
    return {"memory_mib": mem, "size_mib": size, "rate": r.choice((2000, 4000, 8000)),
            "seed": r.randrange(1, 1 << 30)}


def run_plan(seed, i):
    """Run i (1-based) of the soak with this seed."""
    r = _rng(seed, "run", i)
    vm, kind, _ = r.choice(VMS)
    mode = r.choice(AGILE_MODES if kind == "agile" else STOCK_MODES)
    fault = r.choice(FAULTS)
    p = {"run": i, "vm": vm, "kind": kind, "mode": mode, "dst_index": r.randrange(len(HOSTS) - 1),
         "offload": r.choice(OFFLOAD_FRACTIONS) if kind == "agile" else 0.0,
         "fault": fault, "phase": r.choice(PHASES)}
    if fault in ("kill-src-agiled", "kill-dst-agiled", "kill-memd"):
        p["down_s"] = round(r.uniform(0.2, 3.0), 1)      # how long the daemon stays dead
    if fault in ("link-cut", "throttle"):
        p["side"] = r.choice(("src", "dst"))
        p["for_s"] = round(r.uniform(1.0, 20.0), 1)      # around the 15 s io timeout on purpose
    if fault == "throttle":
        p["rate"] = r.choice(TRICKLE_RATES)
    return p


def schedule(seed, runs, first=1):
    return [run_plan(seed, i) for i in range(first, first + runs)]


def describe(p):
    """One line for the printed schedule."""
    extra = []
    if p["offload"]:
        extra.append(f"offload {p['offload']:.0%}")
    if "down_s" in p:
        extra.append(f"down {p['down_s']}s")
    if "for_s" in p:
        extra.append(f"{p['side']} link {p.get('rate', 'down')} for {p['for_s']}s")
    return (f"run {p['run']:>4}: {p['vm']} ({p['kind']}) {p['mode']:<18} to other host #{p['dst_index']}  "
            f"fault {p['fault']:<15} at {p['phase']:<16} {', '.join(extra)}").rstrip()
