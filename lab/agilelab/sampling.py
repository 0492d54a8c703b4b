"""What the experiment samples while it runs, each in a thread of its own:
the hosts' memory (cgroups) and the machine's swap traffic, and the VMs'
work as their workloads count it."""
import threading
import time

from .cgroups import Cgroups
from .config import (EXPERIMENT_VMS, MIGRATED_VM, MIGRATION_SOURCE, MIGRATION_TARGET, PROC_VMSTAT,
                     SAMPLED_HOSTS)
from .guestlog import LineTimes, VmWork
from .state import serial_log
from .util import parse_kv

MEMORY_KEYS = ("usage", "swap", "pgmajfault")
LINE_POLL_S = 0.1


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
    return (MIGRATION_SOURCE, MIGRATION_TARGET) if vm == MIGRATED_VM else (MIGRATION_SOURCE,)


class WorkSampler:
    """Every VM's work from its own cumulative counter, read from its serial
    console files (guestlog); a VM whose consoles cannot be read is missing
    (None), never zero."""

    def __init__(self, st, agileds, vms=EXPERIMENT_VMS):
        self.agileds = agileds
        self.work = {vm: VmWork([serial_log(st["hosts"][h], vm) for h in vm_hosts(vm)]) for vm in vms}
        self.hosts_of = {vm: vm_hosts(vm) for vm in vms}
        self.last = {}  # vm -> (t, ops) of its last readable sample

    def row(self, t):
        row = {"t_s": round(t, 3)}
        for vm, work in self.work.items():
            ops, gap, per_console = work.poll()
            row[f"{vm}_ops"] = ops
            # The rate since the VM's previous readable sample (over a missing
            # stretch, its average across it).
            prev = self.last.get(vm)
            row[f"{vm}_ops_per_s"] = (ops - prev[1]) / (t - prev[0]) if ops is not None and prev and t > prev[0] \
                else None
            if ops is not None:
                self.last[vm] = (t, ops)
            row[f"{vm}_max_gap_ms"] = gap
            if len(self.hosts_of[vm]) > 1:
                for host, console_ops in zip(self.hosts_of[vm], per_console.values()):
                    row[f"{vm}@{host}_ops"] = console_ops
        # agiled's view of the migrated VM's resident pages, where it has one.
        for host in self.hosts_of[MIGRATED_VM]:
            s = self.agileds.stat(host, MIGRATED_VM, timeout=2)
            row[f"{MIGRATED_VM}@{host}_resident"] = (s.get("pages") or {}).get("resident") if s else None
        return row


class Samplers:
    """Runs the memory sampler every mem_interval s, the work sampler every
    second and the migrated VM's status-line clock every LINE_POLL_S, from t0
    (time.monotonic()), until stop()."""

    def __init__(self, st, agileds, t0, mem_interval, vms=EXPERIMENT_VMS):
        self.mem_rows, self.vm_rows = [], []
        self._stop = threading.Event()
        work = WorkSampler(st, agileds, vms)
        # The experiment's t of a wall-clock time (file mtimes are wall clock).
        wall_offset = time.time() - (time.monotonic() - t0)
        self.line_times = LineTimes([serial_log(st["hosts"][h], MIGRATED_VM) for h in vm_hosts(MIGRATED_VM)],
                                    lambda wall: wall - wall_offset)
        self._threads = [
            threading.Thread(target=self._loop, args=(lambda: memory_row(st, time.monotonic() - t0),
                                                      self.mem_rows, mem_interval), daemon=True),
            threading.Thread(target=self._loop, args=(lambda: work.row(time.monotonic() - t0),
                                                      self.vm_rows, 1.0), daemon=True),
            # Often enough that each status line (one a second) is found alone.
            threading.Thread(target=self._loop, args=(self.line_times.poll, None, LINE_POLL_S), daemon=True)]

    def _loop(self, sample, rows, interval):
        while not self._stop.is_set():
            tick = time.monotonic()
            row = sample()
            if rows is not None:
                rows.append(row)
            self._stop.wait(max(0.05, interval - (time.monotonic() - tick)))

    def start(self):
        for t in self._threads:
            t.start()

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(5)
