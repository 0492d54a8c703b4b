"""What the experiment samples while it runs, each in a thread of its own:
the hosts' memory (cgroups) and the machine's swap traffic, and the VMs'
workload throughput."""
import threading
import time

from .cgroups import Cgroups
from .config import EXPERIMENT_VMS, MIGRATION_SOURCE, MIGRATION_TARGET, PROC_VMSTAT, SAMPLED_HOSTS
from .util import parse_kv

MEMORY_KEYS = ("usage", "swap", "pgmajfault")


def memory_row(st, t):
    """One row: global swap-in/out pages and each sampled host's usage, swap, major faults."""
    vm = parse_kv(PROC_VMSTAT)
    row = {"t_s": round(t, 3), "pswpin": vm["pswpin"], "pswpout": vm["pswpout"]}
    cg = Cgroups(st["cgroup_version"])
    for h in SAMPLED_HOSTS:
        s = cg.stats(st["hosts"][h]["cgroup"])
        for k in MEMORY_KEYS:
            if s.get(k) is not None:
                row[f"{h}_{k}"] = s[k]
    return row


def vm_hosts(vm):
    """Where a VM may be: the migrated one on either end, the others at the source."""
    return (MIGRATION_SOURCE, MIGRATION_TARGET) if vm == "mig" else (MIGRATION_SOURCE,)


def throughput_row(agileds, t):
    row = {"t_s": round(t, 3)}
    for vm in EXPERIMENT_VMS:
        for host in vm_hosts(vm):
            s = agileds.stat(host, vm, timeout=2)
            g = (s or {}).get("guest", {})
            # The guest's own last report; "paused" counts like "running" so agiled's
            # pause (visible in stat) and QEMU's own (not visible) are sampled alike.
            row[f"{vm}@{host}"] = g.get("ops/s") if s and s.get("state") in ("running", "paused") else None
            if vm == "mig" and s:
                row[f"mig@{host}_resident"] = (s.get("pages") or {}).get("resident")
    return row


class Samplers:
    """Runs the memory sampler every mem_interval s and the throughput
    sampler every second, from t0 (time.monotonic()), until stop()."""

    def __init__(self, st, agileds, t0, mem_interval):
        self.mem_rows, self.vm_rows = [], []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(lambda: memory_row(st, time.monotonic() - t0),
                                                      self.mem_rows, mem_interval), daemon=True),
            threading.Thread(target=self._loop, args=(lambda: throughput_row(agileds, time.monotonic() - t0),
                                                      self.vm_rows, 1.0), daemon=True)]

    def _loop(self, sample, rows, interval):
        while not self._stop.is_set():
            tick = time.monotonic()
            rows.append(sample())
            self._stop.wait(max(0.05, interval - (time.monotonic() - tick)))

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
