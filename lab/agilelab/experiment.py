"""agile-lab experiment: the seed paper's experiment, five modes side by side.

  lab/agile-lab experiment [--short] [--out results/NAME] [--modes agile,precopy,...]
                           [--bandwidth 1gbit] [--prefix exp] [--repeat N]

For every mode, in one run and one after the other, on a FRESH lab (up ... down):
  * host `src` whose RAM (memory cgroup) is smaller than its VMs' memory, 3 VMs
    running memtouch (working set 25% of VM memory, the rest filled once and cold):
    `mig` (the one to migrate) and `co1`, `co2` (left behind);
  * stock modes (qemu-*) run stock VMs (anonymous RAM under the host cgroup, host
    swap); agile/precopy/postcopy run agiled VMs. agile: advance offloading of every
    VM's cold pages to agile-memd (agiled --host-budget when agiled has it, else
    `agilectl vm offload --resident <wss + margin>`), precopy/postcopy: no offloading
    (the host kernel swaps the guest RAM file like any other memory);
  * a no-migration baseline period, then `agilectl migrate mig --to dst`, then a
    fixed observation window;
  * sampled: memory/swap of src, dst and memd cgroups + global swap-in/out every
    250 ms; every second, every VM's work from memtouch's cumulative op counter
    and longest stall, read from its serial console files on src and dst; the
    migrated VM's status lines timed by the host's clock (guest downtime).
--repeat N (default 3, 1 with --short): N runs per mode, interleaved (A B C, A B C, ...); tables give the
median (min..max), summary.png the median with min-max error bars, the timeline plots run 1.
Output (--out): summary.json (stamp: git commit, kernel, QEMU, CPU, date, command; per mode the raw `runs`,
`metrics` {name: {median, min, max, n}}, and each metric's median under its own name), report.md,
timelines/*.csv, reports/*.json (run k > 1 of a mode: <mode>_r<k>), PNG plots.
--store memd,redis-cluster: agile runs once on each swap store (entries agile, agile@redis-cluster; the other
modes do not use the store and run once), side by side in the report (lab/README.md, "The swap store").
--app redis: the migrated VM runs redis driven by agile-loadgen from the client host (--guest disk: booted
from build/guest/debian.qcow2, lab/agilelab/guestdisk.py); figures from the
client's CSV (lab/agilelab/app.py, appcsv.py; lab/README.md, "A real application").
Needs root; uses its own lab prefix (default exp) and always takes it down.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import time

from .config import (DEFAULT_BUILD, DEFAULT_STORE, EXPERIMENT_MODES, EXPERIMENT_PREFIX, EXPERIMENT_VMS, GUESTS, MIB,
                     MIGRATION_SOURCE, MIGRATION_TARGET, ROOT, STORES, UPLINK)
from .control import Agileds
from .guestdisk import BOOT_TIMEOUT_S
from .daemons import agiled_has_host_budget
from .guestlog import stalls
from .lifecycle import up, up_options
from .aggregate import fold
from .cgroups import Cgroups
from .metrics import metrics, targets, targets_by_store
from .netns import tx_bytes
from .report import table, write_report
from .runs import entry_key, log, run_modes, with_down
from .sampling import Samplers
from .stamp import stamp
from .state import Lab
from .util import parse_size
from .vms import start_agile_vm

VMS = EXPERIMENT_VMS
# The summary's leading figures, in this order (the rest of a mode's result follows).
HEADLINE = ("migration_time_s", "switchover_s", "downtime_ms", "guest_downtime_ms", "bytes_on_wire", "impact_migrated",
            "impact_colocated", "source_relief_s")
# A guest needs ~90M for its kernel and initramfs; QEMU's TCG cache ~90M on the host.
GUEST_OVERHEAD_MIB = 96
AGILED_OVERHEAD_MIB = 64


class Run:
    def __init__(self, a, vms=VMS):
        self.a = a
        self.vms = list(vms)
        self.build = os.path.abspath(a.build)
        self.lab = Lab(a.prefix)
        self.agileds = None

    def stat(self, host, vm):
        return self.agileds.stat(host, vm)

    # ---- one mode --------------------------------------------------------------
    def start_lab(self, mode, res, store=DEFAULT_STORE):
        a = self.a
        opts = dict(hosts=f"{MIGRATION_SOURCE},{MIGRATION_TARGET}", bandwidth=a.bandwidth, host_mem=a.host_mem,
                    swap=a.swap, build=self.build, store=store)
        budget_native = False
        if mode == "agile" and not a.emulate_offload and agiled_has_host_budget(os.path.join(self.build, "bin", "agiled")):
            budget_native = True
            # The budget is for the VMs' guest RAM only: leave room for QEMU (TCG cache) and agiled.
            hot_mib = self.hot_mib()
            budget = parse_size(a.host_budget) if a.host_budget else \
                max(len(self.vms) * (hot_mib + a.margin_mib) * MIB,
                    parse_size(a.host_mem) - len(self.vms) * GUEST_OVERHEAD_MIB * MIB - AGILED_OVERHEAD_MIB * MIB)
            opts["host_budget"] = f"{budget // MIB}M"
            res["host_budget_bytes"] = budget
        with_down(self.lab.prefix)
        up(up_options(self.lab.prefix, **opts))
        self.agileds = Agileds(self.lab.require_up())
        if getattr(a, "dst_mem", None):
            # The target gets RAM of its own size (the sweep: room for the whole VM it receives).
            st = self.agileds.st
            Cgroups(st["cgroup_version"]).set_limits(st["hosts"][MIGRATION_TARGET]["cgroup"], parse_size(a.dst_mem),
                                                     parse_size(a.swap))
            res["dst_mem_bytes"] = parse_size(a.dst_mem)
        res["offload"] = ("agiled --host-budget" if budget_native else "emulated: vm offload --resident wss+margin") \
            if mode == "agile" else "none"
        return budget_native

    def hot_mib(self):
        return int(parse_size(self.a.vm_memory) * 0.25 / MIB) if self.a.hot_mib is None else self.a.hot_mib

    def start_vms(self, mode, wargs):
        a = self.a
        for vm in self.vms:
            p, _ = start_agile_vm(self.lab, MIGRATION_SOURCE, vm, memory=a.vm_memory, workload="memtouch",
                                  workload_args=wargs, net=False, stock=mode.startswith("qemu-"))
            if p.returncode != 0:
                raise RuntimeError(f"agile-vm {vm}: {p.stderr.strip()[-800:]}")
        # Filled and running its hot set: every VM reports ops/s > 0.
        t_boot = time.monotonic()
        ready = set()
        while time.monotonic() - t_boot < a.boot_timeout and len(ready) < len(self.vms):
            for vm in self.vms:
                s = self.stat(MIGRATION_SOURCE, vm)
                if s and (s.get("guest") or {}).get("ops/s"):
                    ready.add(vm)
                if s and s.get("state") not in (None, "running", "starting", "booting"):
                    raise RuntimeError(f"VM {vm} is {s.get('state')} (guest OOM? see logs/)")
            time.sleep(1)
        if len(ready) < len(self.vms):
            raise RuntimeError(f"VMs not running memtouch after {a.boot_timeout}s: {set(self.vms) - ready}")
        return time.monotonic() - t_boot

    def settle_and_offload(self, mode, res, budget_native, vm_mem):
        """Lets the running VMs settle, then (agile) brings them within budget: agiled's own advance
        offloading when it has --host-budget, else emulated."""
        time.sleep(self.a.settle)
        if mode == "agile" and budget_native:
            self.wait_for_budget(mode, res)
        elif mode == "agile":
            self.emulate_offload(mode, res, vm_mem, self.hot_mib())

    def wait_for_budget(self, mode, res):
        """Advance offloading by agiled itself: wait (bounded) until the VMs' resident RAM is within budget,
        the steady state the paper's scenario assumes (VMs that have run under pressure for a while).
        Young VMs are not offloaded before agiled's 15 s warm-up, and the offload competes with three
        TCG guests for two cores, so the bound is generous; the wait ends as soon as the budget is met."""
        a = self.a
        t_w = time.monotonic()
        while True:
            resid = sum(((self.stat(MIGRATION_SOURCE, vm) or {}).get("pages") or {}).get("resident", 0) * 4096
                        for vm in self.vms)
            bound = getattr(a, "budget_wait", None) or max(a.settle * 3, 45)
            if resid <= res["host_budget_bytes"] * 1.05 or time.monotonic() - t_w > bound:
                break
            time.sleep(1)
        res["resident_after_offload_bytes"] = resid
        res["offload_wait_s"] = time.monotonic() - t_w
        log(f"{mode}: agiled --host-budget {res['host_budget_bytes'] // MIB}M: VMs resident {resid / MIB:.0f}M "
            f"after {a.settle + time.monotonic() - t_w:.0f}s")

    def emulate_offload(self, mode, res, vm_mem, hot_mib):
        """Advance offloading, emulated: every VM keeps ~ its working set + margin resident."""
        a = self.a
        offl = {}
        for vm in self.vms:
            s = self.stat(MIGRATION_SOURCE, vm) or {}
            wss = (s.get("wss") or {}).get("windows_bytes", {}).get("10s") or s.get("wss_bytes") or 0
            keep = max(int(wss + a.margin_mib * MIB), (hot_mib + a.margin_mib) * MIB)
            keep = min(keep, vm_mem)
            self.agileds.call(MIGRATION_SOURCE, "vm", "offload", vm, "--resident", f"{keep // MIB}M", timeout=120)
            offl[vm] = {"wss_bytes": wss, "resident_target": keep}
        res["offload_targets"] = offl
        log(f"{mode}: offloaded cold pages: " + ", ".join(
            f"{vm} wss {o['wss_bytes'] / MIB:.0f}M -> keep {o['resident_target'] / MIB:.0f}M" for vm, o in offl.items()))
        time.sleep(2)

    def migrate(self, mode):
        """The migration of mig; its report (ok False with an error if it failed or was cut off)."""
        a = self.a
        target = self.agileds.st["hosts"][MIGRATION_TARGET]["listen"]
        margs = ["migrate", "mig", "--to", target, "--mode", mode, "--max-downtime", str(a.max_downtime)]
        if a.cap_bandwidth:
            margs += ["--bandwidth", a.bandwidth]
        cutoff = getattr(a, "cutoff", None) or a.window + 120
        try:
            return self.agileds.call(MIGRATION_SOURCE, *margs, timeout=cutoff)
        except subprocess.TimeoutExpired:
            # Still iterating (QEMU's pre-copy has no round cap): a lower bound on its time, not a failure
            # of the run. Cancel it so the VM keeps running at src and the window sees that.
            try:
                self.agileds.call(MIGRATION_SOURCE, "migrate", "--cancel", "mig", timeout=30)
            except Exception as e:
                log(f"{mode}: cancel after the cut-off: {e}")
            return {"ok": False, "timed_out_after_s": cutoff,
                    "error": f"did not complete within {cutoff} s (cut off while still migrating)"}
        except Exception as e:
            return {"ok": False, "error": str(e)}

    def run_mode(self, mode, tag=None, store=DEFAULT_STORE):
        """One run of `mode` on a fresh lab whose swap store is `store`; its timelines are written as
        timelines/<tag>_*.csv (tag: runs.run_tag)."""
        a = self.a
        res = {"mode": mode, "ok": False}
        vm_mem = parse_size(a.vm_memory)
        size_mib = workload_mib(vm_mem)
        hot_mib = self.hot_mib()
        wargs = f"size_mib={size_mib} hot_mib={hot_mib} write_pct={a.write_pct}"
        budget_native = self.start_lab(mode, res, store)
        limit = parse_size(a.host_mem)
        log(f"{mode}: lab up; starting {len(self.vms)} {'stock ' if mode.startswith('qemu-') else ''}VMs of "
            f"{a.vm_memory} ({wargs})")
        t_boot = self.start_vms(mode, wargs)
        log(f"{mode}: all VMs running memtouch after {t_boot:.0f}s; settling {a.settle}s")
        self.settle_and_offload(mode, res, budget_native, vm_mem)
        # ---- baseline, migration, observation ---------------------------------
        t0 = time.monotonic()
        samplers = Samplers(self.agileds.st, self.agileds, t0, a.mem_interval, self.vms)
        samplers.start()
        src_ns = self.agileds.st["hosts"][MIGRATION_SOURCE]["netns"]
        try:
            time.sleep(a.baseline)
            tx0 = tx_bytes(src_ns, UPLINK)
            t_mig = time.monotonic() - t0
            log(f"{mode}: baseline done ({a.baseline}s); migrating mig src -> dst")
            rep = self.migrate(mode)
            t_end = time.monotonic() - t0
            tx1 = tx_bytes(src_ns, UPLINK)
            log(f"{mode}: migration {'ok' if rep.get('ok') else 'FAILED: ' + str(rep.get('error'))} in "
                f"{t_end - t_mig:.1f}s (report total {rep.get('total_time_ms', 0):.0f} ms)")
            # The window from migration start, and at least `tail` s after its end (the sweep: source relief
            # of a migration that outlasts the window).
            left = max(a.window - (time.monotonic() - t0 - t_mig), getattr(a, "tail", 0) - (time.monotonic() - t0 - t_end))
            if left > 0:
                time.sleep(left)
        finally:
            samplers.stop()
        after = {h: self.stat(h, "mig") for h in (MIGRATION_TARGET, MIGRATION_SOURCE)}
        res.update({"ok": bool(rep.get("ok")), "error": rep.get("error"), "t_migration_start_s": t_mig,
                    "t_migration_end_s": t_end, "report": rep, "src_eth0_tx_bytes": (tx1 - tx0) if tx0 and tx1 else None,
                    "vm_memory_bytes": vm_mem, "workload": wargs, "host_mem_bytes": limit,
                    "mig_at_dst_after": bool(after[MIGRATION_TARGET] and after[MIGRATION_TARGET].get("state") == "running"),
                    "mig_left_at_src": bool(after[MIGRATION_SOURCE])})
        line_stalls = stalls(samplers.line_times.lines)
        write_timelines(a.out, tag or mode, {"memory": samplers.mem_rows, "throughput": samplers.vm_rows,
                                      "guest_lines": line_stalls})
        res.update(metrics(a, res, samplers.mem_rows, samplers.vm_rows, line_stalls, self.vms))
        return res


def workload_mib(vm_mem):
    """memtouch's size_mib in a VM of vm_mem bytes: ~78% of it, leaving the guest its kernel and initramfs."""
    return min(int(vm_mem * 0.78 / MIB), vm_mem // MIB - GUEST_OVERHEAD_MIB)


def write_timelines(out, tag, tables):
    """timelines/<tag>_<name>.csv for each {name: rows}; a value that could
    not be read (None) is an empty field."""
    d = os.path.join(out, "timelines")
    os.makedirs(d, exist_ok=True)
    for name, rows in tables.items():
        if not rows:
            continue
        keys = []
        for r in rows:
            keys += [k for k in r if k not in keys]
        with open(os.path.join(d, f"{tag}_{name}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)


def options(argv):
    ap = argparse.ArgumentParser(prog="agile-lab experiment", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--short", action="store_true", help="small VMs and short phases (make demo: <= 5 min)")
    ap.add_argument("--out", help="results folder (default results/full, results/short with --short)")
    ap.add_argument("--modes", default=",".join(EXPERIMENT_MODES))
    ap.add_argument("--bandwidth", default="1gbit", help="lab link rate (tc tbf), also the migration cap")
    ap.add_argument("--no-cap", dest="cap_bandwidth", action="store_false",
                    help="do not pass --bandwidth to migrate (the link alone limits)")
    ap.add_argument("--prefix", default=EXPERIMENT_PREFIX)
    ap.add_argument("--store", default=DEFAULT_STORE, help="swap store(s), comma-separated, of " + ", ".join(STORES) +
                    ": with two, agile runs on each (entries agile and agile@redis-cluster, side by side in the "
                    "report); the other modes do not use the store and run once, on the first")
    ap.add_argument("--build", default=DEFAULT_BUILD)
    ap.add_argument("--vm-memory")
    ap.add_argument("--host-mem", help="src/dst RAM budget (cgroup limit)")
    ap.add_argument("--swap", default="2G")
    ap.add_argument("--hot-mib", type=int, help="memtouch hot set (default 25%% of VM memory)")
    ap.add_argument("--write-pct", type=int, default=2,
                    help="memtouch writes in %% (20: the hot set is rewritten faster than 1 Gbit/s and pre-copy never converges)")
    ap.add_argument("--host-budget", help="agile: agiled --host-budget (default: host-mem - 96M per VM - 64M)")
    ap.add_argument("--margin-mib", type=int, default=32, help="agile: resident = wss + margin")
    ap.add_argument("--baseline", type=float, help="seconds of no-migration baseline")
    ap.add_argument("--window", type=float, help="seconds observed from migration start (impact window)")
    ap.add_argument("--settle", type=float, help="seconds after all VMs run before measuring")
    ap.add_argument("--boot-timeout", type=float,
                    help="seconds for the VMs to boot and start working (default 180; 600 with --guest disk)")
    ap.add_argument("--max-downtime", type=int, default=300)
    ap.add_argument("--relief-hold", type=float, default=2.0)
    ap.add_argument("--mem-interval", type=float, default=0.25)
    ap.add_argument("--emulate-offload", action="store_true",
                    help="agile: use vm offload even if agiled has --host-budget")
    ap.add_argument("--repeat", type=int, help="runs per mode, interleaved across modes (default 3; 1 with --short); "
                    "tables give the median and min-max, plots the median with min-max error bars")
    ap.add_argument("--no-plots", action="store_true")
    g = ap.add_argument_group("--app redis: a real application (lab/agilelab/app.py; lab/README.md)")
    g.add_argument("--app", choices=["redis"], help="migrate a redis VM driven by agile-loadgen from the client "
                   "host and report what the client saw (throughput, p99, blackout) instead of memtouch's work")
    g.add_argument("--redis-keys", type=int, default=50000, help="keys preloaded in the guest and used by the client")
    g.add_argument("--value-bytes", type=int, default=256)
    g.add_argument("--connections", type=int, default=4, help="loadgen connections")
    g.add_argument("--pipeline", type=int, default=4, help="loadgen pipeline depth per connection")
    g.add_argument("--interval-ms", type=int, default=10, help="loadgen CSV interval: the blackout's resolution")
    g.add_argument("--after", type=float, default=10, help="seconds of load at least after the migration ends")
    g.add_argument("--guest", choices=GUESTS, default="kernel",
                   help="the redis VM's guest: kernel (our kernel+initramfs) or disk (build/guest/debian.qcow2, "
                   "`make guest-disk`, booted by firmware from a qcow2 overlay on the lab's shared storage; "
                   "lab/agilelab/guestdisk.py)")
    g.add_argument("--reanalyze", action="store_true", help="recompute the figures of the finished --app run in "
                   "--out from its own files (no lab, no VMs) and rewrite summary.json and report.md")
    a = ap.parse_args(argv)
    if a.repeat is None:
        a.repeat = 1 if a.short else 3
    if a.repeat < 1:
        ap.error("--repeat must be >= 1")
    a.stores = [x for x in a.store.split(",") if x]
    if not a.stores or any(x not in STORES for x in a.stores) or len(set(a.stores)) != len(a.stores):
        ap.error(f"--store: distinct names of {', '.join(STORES)}, comma-separated (got {a.store})")
    # Defaults: VMs whose memory exceeds src's budget by ~1.3x; moving one VM relieves it.
    d = dict(vm_memory="256M", host_mem="640M", baseline=6, window=20, settle=4) if a.short else \
        dict(vm_memory="512M", host_mem="1280M", baseline=20, window=40, settle=15)
    for k, v in d.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.boot_timeout is None:
        a.boot_timeout = BOOT_TIMEOUT_S[a.guest]
    if a.guest != "kernel" and not a.app:
        ap.error("--guest disk is for --app redis (the memory experiment's memtouch sizes assume the kernel guest)")
    name = ("app-" if a.app else "") + ("disk-" if a.guest == "disk" else "") + ("short" if a.short else "full")
    a.out = os.path.abspath(a.out or os.path.join(ROOT, "results", name))
    return a


def main(argv=None):
    a = options(sys.argv[1:] if argv is None else argv)
    if getattr(a, "reanalyze", False):
        from .app import reanalyze
        return reanalyze(a)
    if os.geteuid() != 0:
        sys.exit("agile-lab experiment: needs root")
    modes = [m for m in a.modes.split(",") if m]
    for m in modes:
        if m not in EXPERIMENT_MODES:
            sys.exit(f"unknown mode {m}")
    if a.app:
        from .app import main_app
        return main_app(a, modes)
    os.makedirs(os.path.join(a.out, "reports"), exist_ok=True)
    r = Run(a)
    t_start = time.monotonic()
    summary = {"experiment": "agile-lab experiment", "short": a.short, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
               "stamp": stamp(), "repeat": a.repeat, "stores": a.stores,
               "config": {k: getattr(a, k) for k in ("vm_memory", "host_mem", "swap", "bandwidth", "baseline",
                                                     "window", "settle", "write_pct", "margin_mib", "max_downtime",
                                                     "cap_bandwidth")},
               "vms": VMS, "run_order": [], "modes": {}}
    summary["config"]["hot_mib"] = r.hot_mib()
    rc = run_modes(a, modes, r, summary, "modes", lambda rs: fold(rs, HEADLINE), HEADLINE)
    summary["wall_s"] = time.monotonic() - t_start
    summary["targets"] = targets(summary, entry_key("agile", a.stores[0]))
    summary["targets_by_store"] = targets_by_store(summary)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    if not a.no_plots and summary["modes"]:
        try:
            from .plots import plot_all  # matplotlib: only when plotting
            plot_all(a.out)
        except Exception as e:  # the numbers are written; a plot failure must not lose them
            log(f"plots failed: {e!r}")
    write_report(a.out, summary)
    print()
    print(table(summary))
    print(f"\nresults in {a.out} ({summary['wall_s']:.0f} s); targets: {json.dumps(summary['targets'])}")
    return rc
