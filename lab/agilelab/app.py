"""agile-lab experiment --app redis: the experiment with a real application.

Per mode (all seven by default, interleaved across --repeat like the memory
experiment), on a fresh lab: the migrated VM `mig` runs redis (stock VM for
the qemu-* modes), `co1`/`co2` run memtouch as in the experiment, under the
same memory pressure (src's cgroup, agiled --host-budget for agile);
agile-loadgen on the client host drives redis for the whole run (baseline,
migration, --after seconds after it) at --interval-ms (10 ms) resolution;
the figures come from the client's CSV alone (appcsv: throughput
before/during/after, p99 during/after, the longest blackout).
Output (--out): summary.json (`stamp`, `config`, `run_order`,
`app.<mode>.<metric>` = {median, min, max, n}, `app.<mode>.runs`), report.md,
app.png, loadgen/<run>.csv + .json (the client's own output), reports/<run>.json.
"""
import json
import os
import signal
import subprocess
import time

from .aggregate import spread
from .appcsv import app_figures
from .app_report import write_app_report
from .config import DEFAULT_STORE, EXPERIMENT_VMS, MIGRATED_VM, MIGRATION_SOURCE, MIGRATION_TARGET, REDIS_PORT, CLIENT_HOST
from .experiment import Run, workload_mib
from .guestdisk import base_image, check_memory, disk_flags, guest_stamp, make_overlay
from .metrics import migration_figures
from .procs import enter_host
from .runs import log, run_modes
from .stamp import stamp
from .state import serial_log
from .util import parse_size
from .vms import make_tap, start_agile_vm

# The per-run figures that are folded across repeats, in the table's order.
APP_METRICS = ("ops_before", "ops_during", "ops_after", "p99_before_us", "p99_during_us", "p99_after_us",
               "blackout_ms", "blackout_before_ms", "migration_time_s", "downtime_ms", "bytes_on_wire",
               "errors_from_migration", "reconnects", "intervals_missing", "intervals_missing_from_migration")


class AppRun(Run):
    def start_vms(self, mode, wargs):
        """mig runs redis (with its NIC), co1/co2 memtouch; ready when redis has preloaded its keys and
        the memtouch VMs report work. With --guest disk, mig boots the Debian image from an overlay on the
        lab's shared storage (guestdisk.py); co1/co2, the memory pressure beside it, stay kernel guests:
        memtouch fills 78% of their memory, which would leave Debian no room."""
        a = self.a
        stock = mode.startswith("qemu-")
        rargs = f"keys={a.redis_keys} value_bytes={a.value_bytes}"
        for vm in self.vms:
            redis = vm == MIGRATED_VM
            disk = disk_flags(make_overlay(self.lab.prefix, vm, self.disk_image)) \
                if redis and a.guest == "disk" else ()
            p, _ = start_agile_vm(self.lab, MIGRATION_SOURCE, vm, memory=a.vm_memory,
                                  workload="redis" if redis else "memtouch",
                                  workload_args=rargs if redis else wargs, net=redis, stock=stock, disk_flags=disk)
            if p.returncode != 0:
                raise RuntimeError(f"agile-vm {vm}: {p.stderr.strip()[-800:]}")
        console = serial_log(self.agileds.st["hosts"][MIGRATION_SOURCE], MIGRATED_VM)
        want = f"redis: ok keys={a.redis_keys} "
        t_boot = time.monotonic()
        ready = set()
        while time.monotonic() - t_boot < a.boot_timeout and len(ready) < len(self.vms):
            for vm in self.vms:
                if vm == MIGRATED_VM:
                    if tail_has(console, want):
                        ready.add(vm)
                    elif tail_has(console, "redis: FAIL"):
                        # The guest powers off after it: waiting out the boot timeout would show nothing more.
                        raise RuntimeError(f"redis failed in {vm}: {last_line_with(console, 'redis: FAIL')}")
                    continue
                s = self.stat(MIGRATION_SOURCE, vm)
                if s and (s.get("guest") or {}).get("ops/s"):
                    ready.add(vm)
            time.sleep(1)
        if len(ready) < len(self.vms):
            raise RuntimeError(f"VMs not ready after {a.boot_timeout}s: {set(self.vms) - ready}")
        return time.monotonic() - t_boot

    def start_loadgen(self, tag):
        """agile-loadgen in the client host (namespace + cgroup), spawned directly (no agile-lab exec in
        between) so its clock starts within a fork+exec of our launch time; runs until SIGTERM."""
        a = self.a
        st = self.lab.require_up()  # fresh: the VM's address was allocated after the lab came up
        h = st["hosts"][CLIENT_HOST]
        ip = st["vms"][MIGRATED_VM]["ip"]
        d = os.path.join(a.out, "loadgen")
        os.makedirs(d, exist_ok=True)
        csv_path = os.path.join(d, f"{tag}.csv")
        # Long enough for the slowest migration (the cut-off) and the after window; stopped by SIGTERM.
        duration = a.baseline + (getattr(a, "cutoff", None) or a.window + 120) + a.after + 60
        argv = [os.path.join(self.build, "bin", "agile-loadgen"), "--server", f"{ip}:{REDIS_PORT}",
                "--connections", str(a.connections), "--pipeline", str(a.pipeline), "--keys", str(a.redis_keys),
                "--value-bytes", str(a.value_bytes), "--interval-ms", str(a.interval_ms),
                "--duration", str(duration), "--out", csv_path]
        t = time.monotonic()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: enter_host(h["netns"], h["cgroup"]))
        return p, t, csv_path

    def run_mode(self, mode, tag=None, store=DEFAULT_STORE):
        a = self.a
        tag = tag or mode
        res = {"mode": mode, "ok": False}
        vm_mem = parse_size(a.vm_memory)
        wargs = f"size_mib={workload_mib(vm_mem)} hot_mib={self.hot_mib()} write_pct={a.write_pct}"
        budget_native = self.start_lab(mode, res, store)
        log(f"{mode}: lab up; {'stock ' if mode.startswith('qemu-') else ''}VMs of {a.vm_memory}: mig redis "
            f"(keys={a.redis_keys} value_bytes={a.value_bytes}), co1/co2 memtouch ({wargs})")
        t_boot = self.start_vms(mode, wargs)
        log(f"{mode}: redis loaded, memtouch running after {t_boot:.0f}s; settling {a.settle}s")
        self.settle_and_offload(mode, res, budget_native, vm_mem)
        with self.lab.locked() as st:
            make_tap(self.lab, st, MIGRATION_TARGET, MIGRATED_VM)  # where the VM's NIC will be
        p, t_lg, csv_path = self.start_loadgen(tag)
        try:
            time.sleep(a.baseline)
            t_mig = time.monotonic()
            log(f"{mode}: baseline done ({a.baseline}s of load); migrating mig src -> dst")
            rep = self.migrate(mode)
            t_end = time.monotonic()
            log(f"{mode}: migration {'ok' if rep.get('ok') else 'FAILED: ' + str(rep.get('error'))} in "
                f"{t_end - t_mig:.1f}s")
            # The window from migration start, and at least --after s after its end.
            left = max(a.window - (time.monotonic() - t_mig), a.after - (time.monotonic() - t_end))
            if left > 0:
                time.sleep(left)
        finally:
            p.send_signal(signal.SIGTERM)  # loadgen ends its last interval and writes its summary
            try:
                out, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
        crash = guest_crash(self.lab.require_up(), MIGRATED_VM)
        if crash:
            log(f"{mode}: the migrated guest crashed: {crash}")
        lg = parse_summary(out)
        if lg is None:
            raise RuntimeError(f"agile-loadgen gave no summary (rc {p.returncode}): {err.strip()[-400:]}")
        with open(os.path.join(a.out, "loadgen", f"{tag}.json"), "w") as f:
            json.dump(lg, f, indent=2)
        with open(csv_path) as f:
            text = f.read()
        duration_ms = int(round(lg["duration_s"] * 1000))
        res.update(migration_figures(rep))
        res.update(app_figures(text, a.interval_ms, duration_ms, (t_mig - t_lg) * 1000, (t_end - t_lg) * 1000))
        res.update({"ok": bool(rep.get("ok")), "error": rep.get("error"), "report": rep, "guest_crash": crash,
                    "t_migration_start_ms": (t_mig - t_lg) * 1000, "t_migration_end_ms": (t_end - t_lg) * 1000,
                    "load_duration_ms": duration_ms, "reconnects": lg.get("reconnects"),
                    "loadgen_errors": lg.get("errors"), "loadgen_ops": lg.get("ops"),
                    # loadgen's own longest zero run over the whole load: a cross-check (>= blackout_ms).
                    "loadgen_longest_zero_run_ms": lg.get("longest_zero_run_ms"),
                    "csv": os.path.relpath(csv_path, a.out)})
        return res


def tail_has(path, text, nbytes=4096):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - nbytes))
            return text in f.read().decode(errors="replace")
    except OSError:
        return False


def last_line_with(path, text):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if text in line]
    except OSError:
        return None
    return lines[-1][:200] if lines else None


def guest_crash(st, vm):
    return crash_in({f"{h} console": serial_log(st["hosts"][h], vm) for h in (MIGRATION_SOURCE, MIGRATION_TARGET)})


def crash_in(paths):
    """The first kernel oops/panic line on the VM's consoles (src, dst), or None: a client that sees no
    replies after a migration may be looking at a dead guest, and the report says so."""
    for label, path in paths.items():
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if "Kernel panic" in line or "kernel BUG" in line or "Oops:" in line:
                        return f"{label}: {line.strip()[:200]}"
        except OSError:
            continue
    return None


def parse_summary(out):
    """loadgen's JSON summary: the last line of its stdout that parses."""
    for line in reversed((out or "").splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def fold_app(runs):
    """app.<mode>: each metric as {median, min, max, n} over the runs that have it, the raw runs, ok counts."""
    out = {k: spread([r.get(k) for r in runs]) for k in APP_METRICS}
    out["mode"], out["store"] = runs[0].get("mode"), runs[0].get("store")  # labels of the entry
    out["runs"] = [{k: v for k, v in r.items() if k != "report"} for r in runs]
    out["ok_runs"] = sum(1 for r in runs if r.get("ok"))
    out["guest_crashes"] = sum(1 for r in runs if r.get("guest_crash"))
    out["repeats"] = len(runs)
    out["migration_time_lower_bound_s"] = next((r["migration_time_lower_bound_s"] for r in runs
                                                if r.get("migration_time_lower_bound_s")), None)
    return out


def reanalyze(a):
    """--reanalyze: the figures again from a finished run's own files (reports/<run>.json with the lab's
    times, loadgen/<run>.{csv,json}, logs/<run>/ consoles), summary.json and report.md rewritten; for an
    analysis fixed after the VMs ran. The stamp is the run's, with `reanalyzed` added."""
    with open(os.path.join(a.out, "summary.json")) as f:
        summary = json.load(f)
    runs = {}
    for tag in summary["run_order"]:
        with open(os.path.join(a.out, "reports", f"{tag}.json")) as f:
            res = json.load(f)
        if res.get("csv"):
            with open(os.path.join(a.out, res["csv"])) as f:
                text = f.read()
            res.update(app_figures(text, summary["config"]["interval_ms"], res["load_duration_ms"],
                                   res["t_migration_start_ms"], res["t_migration_end_ms"]))
            res["guest_crash"] = crash_in({f"logs/{tag}/{h}/vms/{MIGRATED_VM}/serial.log":
                                           os.path.join(a.out, "logs", tag, h, "vms", MIGRATED_VM, "serial.log")
                                           for h in (MIGRATION_SOURCE, MIGRATION_TARGET)})
        runs.setdefault(res.get("key") or res["mode"], []).append(res)
    summary["app"] = {mode: fold_app(rs) for mode, rs in runs.items()}
    summary["stamp"]["reanalyzed"] = stamp()["date"]
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print(write_app_report(a.out, summary, plots=not a.no_plots))
    return 0


def main_app(a, modes):
    r = AppRun(a, EXPERIMENT_VMS)
    # Before any lab comes up: a missing image or too small a VM is the user's to fix, not a failed run.
    r.disk_image = base_image(r.build) if a.guest == "disk" else None
    check_memory(a.guest, parse_size(a.vm_memory) // (1 << 20))
    t_start = time.monotonic()
    summary = {"experiment": "agile-lab experiment --app redis", "short": a.short,
               "stamp": {**stamp(), "guest": guest_stamp(a.guest, r.disk_image, MIGRATED_VM)},
               "repeat": a.repeat, "stores": a.stores,
               "config": {k: getattr(a, k) for k in ("vm_memory", "host_mem", "swap", "bandwidth", "baseline",
                                                     "window", "after", "settle", "write_pct", "max_downtime",
                                                     "redis_keys", "value_bytes", "connections", "pipeline",
                                                     "interval_ms", "guest", "boot_timeout")},
               "vms": {MIGRATED_VM: "redis", **{vm: "memtouch" for vm in EXPERIMENT_VMS if vm != MIGRATED_VM}},
               "run_order": [], "app": {}}
    summary["config"]["hot_mib"] = r.hot_mib()
    rc = run_modes(a, modes, r, summary, "app", fold_app, APP_METRICS[:8])
    summary["wall_s"] = time.monotonic() - t_start
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    table = write_app_report(a.out, summary, plots=not a.no_plots)
    print()
    print(table)
    print(f"\nresults in {a.out} ({summary['wall_s']:.0f} s)")
    return rc
