"""agile-lab soak: migrations that try to lose data.

  lab/agile-lab soak --runs N --seed S [--json] [--from K] [--plan-only] [--time-budget SEC] [--out DIR]

One lab (prefix `soak`): three VM hosts h1, h2, h3, each with an agiled, and
agile-memd with --data-dir. Three memverify VMs at high rewrite rates (a1, a2
under agiled; s1 a stock VM for QEMU's own modes), their sizes and rates drawn
from the seed. Each run, from the seed alone (soak_plan.py): one VM, a random
other host, a mode the VM can use, an offload fraction (agile VMs: `vm offload`
right before the migration), and a fault injected at a phase of the migration:
kill -9 of the source or destination agiled (restarted with the same state dir:
re-adoption is under test), of agile-memd (restarted on its data dir), of the
source's or destination's QEMU; the source's or destination's link cut or
throttled to a trickle for T s; a cancel.

After each run, for EVERY VM: its copies on all hosts (exactly one must run;
a paused copy with no running one is resumed with `vm resume`, never --force;
a migration paused after switchover by a lost link or agiled is recovered with
`migrate --recover` once the fault is over, as an operator would),
a whole memverify sweep after the run with no new error, and agile-memd
holding at least the pages agiled says are offloaded in the VM's namespace.
soak_verdict.py names the outcome; a VM with no running copy is started again
(its next incarnation) so the next runs have it. Prints the schedule first,
then a line per run and the table; --json prints one object (runs,
corruptions, vms_lost, pages_lost, ...). Exit status 1 when corruptions,
vms_lost or pages_lost is non-zero. A stock guest whose kernel crashed after
QEMU's own migration is counted apart (`vms_lost_to_qemu`, soak_verdict.py).
Needs root. CI runs `make soak` (10 runs); long soaks are run by hand
(docs/reliability.md).
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from .config import DEFAULT_BUILD, MEMD_HOST, MEMD_METRICS, MIB
from .daemons import daemon_rec, kill_daemon, restart_daemon
from .procs import alive
from .faults import cut_link, restore_link, throttle_link
from .lifecycle import down, up, up_options
from .soak_plan import HOSTS, PHASES, VMS, describe, phase_index, schedule, vm_spec
from .soak_verdict import Tally, classify
from .state import Lab, agiled_url, serial_log
from .util import LabError
from .vms import start_agile_vm

SOAK_PREFIX = "soak"
SWEEP_RE = re.compile(r"memverify: sweep=(\d+)")
STATUS_RE = re.compile(r"memverify: (?:ok|FAIL) pages=\d+ gen=\d+ errors=(\d+)")
BAD_RE = re.compile(r"memverify: BAD page=(\d+) reason=(\w+)")
NS_RE = re.compile(r'^agile_memd_namespace_pages\{namespace="([^"]*)",owner="([^"]*)"\}\s+(\S+)', re.M)
# A migration job, or a VM settling after one, that has not ended after this long is itself a finding.
SETTLING_STATES = ("incoming", "starting", "stopping")
# How long a migration may sit paused after switchover (post-copy recovery) before the soak runs
# `migrate --recover`, as an operator would once the fault is over.
RECOVER_AFTER_S = 3.0


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] soak: {msg}", file=sys.stderr, flush=True)


class Soak:
    def __init__(self, a):
        self.a = a
        self.lab = Lab(a.prefix)
        self.st = None
        self.kind = {vm: kind for vm, kind, _ in VMS}
        self.where = {vm: host for vm, _, host in VMS}
        self.incarnation = {vm: 0 for vm, _, _ in VMS}
        self.errors_seen = {vm: 0 for vm, _, _ in VMS}
        self.killed_copy_state = None  # state of the QEMU copy a kill-qemu fault killed, this run

    # ---- agilectl ----------------------------------------------------------------
    def ctl(self, host, *args, timeout=30):
        """agilectl --json ARGS on HOST: (exit status, the JSON answer or {})."""
        argv = [self.st["build"]["agilectl"], "-H", agiled_url(self.st["hosts"][host]), "--json", *args]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return 124, {"error": {"message": f"agilectl {' '.join(args)}: no answer in {timeout} s"}}
        try:
            out = json.loads(p.stdout) if p.stdout.strip() else {}
        except ValueError:
            out = {"raw": p.stdout[-500:]}
        if p.returncode != 0 and not out.get("error"):
            out["error"] = {"message": p.stderr.strip()[-500:]}
        return p.returncode, out

    def stat(self, host, vm):
        """`vm stat`, or None when HOST's agiled has no such VM. An agiled that does not answer (exit status 3:
        restarting, re-adopting) is waited for, never taken for "no copy here"."""
        t0 = time.monotonic()
        while True:
            rc, s = self.ctl(host, "vm", "stat", vm, timeout=10)
            if rc != 3 or time.monotonic() - t0 > 120:
                return s if rc == 0 else None
            time.sleep(1)

    def console(self, host, vm, lines=400):
        text = self.console_or_none(host, vm, lines)
        return "" if text is None else text

    def console_or_none(self, host, vm, lines=400):
        """The console's last LINES lines, or None when it could not be read (missing, not empty)."""
        rc, c = self.ctl(host, "vm", "console", vm, "--lines", str(lines), timeout=10)
        return c.get("text", "") if rc == 0 else None

    def copies(self, vm):
        out = {}
        for h in HOSTS:
            s = self.stat(h, vm)
            if s is None:
                continue
            out[h] = {"state": s.get("state"), "fenced": bool(s.get("fenced")), "lost_pages": s.get("lost_pages", 0),
                      "damaged": s.get("damaged", False), "health": s.get("health"), "pid": s.get("pid"),
                      "offloaded": (s.get("pages") or {}).get("offloaded", 0),
                      "store_vm_id": (s.get("offload") or {}).get("store_vm_id"),
                      # A destination whose migration failed past switchover keeps a terminal
                      # status (phase failed-after-switchover): settled, not migrating.
                      "migrating": bool(s.get("migration")) and
                      (s.get("migration") or {}).get("phase") != "failed-after-switchover"}
        return out

    # ---- the lab and its VMs --------------------------------------------------------
    def up(self):
        try:
            down(self.a.prefix, quiet=True)
        except LabError as e:
            log(f"down before up: {e}")
        agiled_args = [f"--migrate-peer-timeout-ms={self.a.peer_timeout_ms}"]
        up(up_options(self.a.prefix, hosts=",".join(HOSTS), bandwidth=self.a.bandwidth, host_mem=self.a.host_mem,
                      swap="0", build=self.a.build, memd_data_dir=True, agiled_args=agiled_args))
        self.st = self.lab.require_up()

    def start_vm(self, vm, host):
        spec = vm_spec(self.a.seed, vm, self.incarnation[vm])
        wargs = f"size_mib={spec['size_mib']} rate={spec['rate']} seed={spec['seed']}"
        p, _ = start_agile_vm(self.lab, host, vm, memory=f"{spec['memory_mib']}M", workload="memverify",
                              workload_args=wargs, net=False, stock=self.kind[vm] == "stock")
        if p.returncode != 0:
            raise LabError(f"vm start {vm} on {host}: {p.stderr.strip()[-500:]}")
        self.where[vm] = host
        self.errors_seen[vm] = 0
        log(f"{vm} (incarnation {self.incarnation[vm]}) started on {host}: {spec['memory_mib']}M, {wargs}")

    def wait_swept(self, vms_hosts, bound):
        """Waits until each (vm, host) has completed two more memverify sweeps than now (so one whole sweep
        ran entirely after this call). Returns {vm: (done, waited_s)}."""
        t0 = time.monotonic()
        base = {vm: last_int(SWEEP_RE, self.console(h, vm)) for vm, h in vms_hosts}
        done = {}
        while len(done) < len(vms_hosts) and time.monotonic() - t0 < bound:
            for vm, h in vms_hosts:
                if vm not in done and last_int(SWEEP_RE, self.console(h, vm)) >= base[vm] + 2:
                    done[vm] = time.monotonic() - t0
            time.sleep(1)
        waited = time.monotonic() - t0
        return {vm: (vm in done, round(done.get(vm, waited), 1)) for vm, _ in vms_hosts}

    def memd_namespaces(self):
        """{namespace: (owner, pages)} from agile-memd's metrics (read from inside the memd host)."""
        ns = self.st["hosts"][MEMD_HOST]["netns"]
        code = ("import sys,urllib.request;sys.stdout.write(urllib.request.urlopen("
                f"'http://{MEMD_METRICS}/metrics',timeout=5).read().decode())")
        p = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=20)
        if p.returncode != 0:
            return None
        return {m.group(1): (m.group(2), int(float(m.group(3)))) for m in NS_RE.finditer(p.stdout)}

    # ---- one run ------------------------------------------------------------------
    def run(self, plan):
        vm, mode = plan["vm"], plan["mode"]
        self.killed_copy_state = None
        src = self.where[vm]
        dst = [h for h in HOSTS if h != src][plan["dst_index"]]
        rec = {"src": src, "dst": dst}
        if plan["offload"]:
            s = self.stat(src, vm) or {}
            keep = int((s.get("memory_bytes") or 0) * (1 - plan["offload"])) // MIB
            rc, o = self.ctl(src, "vm", "offload", vm, "--resident", f"{keep}M", timeout=180)
            rec["offload"] = {"resident_target_mib": keep, "pages_offloaded": o.get("pages_offloaded"),
                              "error": (o.get("error") or {}).get("message") if rc else None}
        target = self.st["hosts"][dst]["listen"]
        rc, m = self.ctl(src, "migrate", vm, "--to", target, "--mode", mode, "--detach", timeout=60)
        if rc != 0:
            rec["start_error"] = (m.get("error") or {}).get("message")
        phase_at = self.wait_phase(src, vm, PHASES.index(plan["phase"])) if rc == 0 else None
        rec["fault_done"] = self.inject(plan, src, dst) if rc == 0 else "not injected: the migration did not start"
        rec["report_status"] = self.wait_end(src, vm)
        if self.recover_note:
            rec["recover"] = self.recover_note
        return phase_at, rec

    def wait_phase(self, src, vm, want):
        t0 = time.monotonic()
        idx = 0
        while time.monotonic() - t0 < self.a.migration_timeout:
            rc, s = self.ctl(src, "migrate", "status", vm, timeout=10)
            if rc != 0:  # the job is gone (it ended long ago, or agiled restarted): past every phase
                return len(PHASES) - 1
            idx = phase_index(s.get("phase"), s.get("running"))
            if idx >= want:
                return idx
            time.sleep(0.02)
        return idx

    def inject(self, plan, src, dst):
        f = plan["fault"]
        vm = plan["vm"]
        try:
            if f in ("kill-src-agiled", "kill-dst-agiled", "kill-memd"):
                host = {"kill-src-agiled": src, "kill-dst-agiled": dst, "kill-memd": MEMD_HOST}[f]
                kill_daemon(self.lab, host)
                time.sleep(plan["down_s"])
                t = time.monotonic()
                restart_daemon(self.lab, host)
                self.st = self.lab.require_up()
                return f"{host} killed, restarted after {plan['down_s']} s, serving {time.monotonic() - t:.1f} s later"
            if f in ("kill-qemu-src", "kill-qemu-dst"):
                host = src if f == "kill-qemu-src" else dst
                s = self.stat(host, vm)
                if not s or not s.get("pid"):
                    return f"no QEMU of {vm} on {host} to kill"
                os.kill(int(s["pid"]), signal.SIGKILL)
                self.killed_copy_state = s.get("state") or "unknown"
                return f"QEMU {s['pid']} on {host} ({s.get('state')}) killed"
            if f in ("link-cut", "throttle"):
                host = src if plan["side"] == "src" else dst
                try:
                    if f == "link-cut":
                        cut_link(self.st, host)
                    else:
                        throttle_link(self.st, host, plan["rate"])
                    time.sleep(plan["for_s"])
                finally:
                    restore_link(self.st, host)
                return f"{host}'s link {'cut' if f == 'link-cut' else 'at ' + plan['rate']} for {plan['for_s']} s"
            if f == "cancel":
                rc, c = self.ctl(src, "migrate", "--cancel", vm, timeout=30)
                return "cancel sent" if rc == 0 else f"cancel refused: {(c.get('error') or {}).get('message')}"
        except (LabError, OSError) as e:
            return f"fault {f} failed: {e}"
        return f"unknown fault {f}"

    def wait_end(self, src, vm):
        """The migration job's final status at the source, once it ended; then every copy settled."""
        t0 = time.monotonic()
        status = "unknown"
        paused_since = None
        self.recover_note = None
        while time.monotonic() - t0 < self.a.migration_timeout:
            rc, s = self.ctl(src, "migrate", "status", vm, timeout=10)
            if rc != 0:
                status = "gone (agiled restarted)" if rc == 4 else f"status failed rc={rc}"
                break
            if not s.get("running"):
                status = s.get("status", "ended")
                break
            # Paused after switchover (the fault is over by now): the source re-dials on its own with backoff;
            # an operator would not wait for it, and nor does the soak (once per run).
            if s.get("phase") == "postcopy-paused":
                paused_since = paused_since or time.monotonic()
                if self.recover_note is None and time.monotonic() - paused_since >= RECOVER_AFTER_S:
                    rc, r = self.ctl(src, "migrate", "--recover", vm, timeout=60)
                    self.recover_note = ("migrate --recover after "
                                         f"{time.monotonic() - paused_since:.1f} s paused: "
                                         + ("accepted" if rc == 0 else
                                            f"refused rc={rc} {(r.get('error') or {}).get('message')}"))
                    log(self.recover_note)
            else:
                paused_since = None
            time.sleep(0.5)
        else:
            status = f"still running after {self.a.migration_timeout} s"
        t1 = time.monotonic()
        while True:
            c = self.copies(vm)
            busy = [f"{h}: {x['state']}{' (migrating)' if x['migrating'] else ''}" for h, x in c.items()
                    if x["state"] in SETTLING_STATES or x["migrating"]]
            if not busy:
                break
            if time.monotonic() - t1 > self.a.settle_timeout:
                status += f"; not settled after {self.a.settle_timeout:.0f} s ({', '.join(busy)})"
                break
            time.sleep(1)
        return status

    # ---- after each run: every VM --------------------------------------------------------
    def revive_crashed(self, rec):
        """A daemon that died without being killed by the soak is a finding; it is started again, as systemd's
        Restart=on-failure would, so that later runs still have three hosts."""
        st = self.lab.require_up()
        for host in HOSTS + (MEMD_HOST,):
            d = daemon_rec(st, host)
            if d and not alive(d):
                log(f"{host}'s daemon (pid {d['pid']}) died on its own; log {d['log']}; starting it again")
                rec.setdefault("daemon_crashes", []).append(host)
                try:
                    restart_daemon(self.lab, host)
                except LabError as e:
                    log(f"could not restart {host}'s daemon: {e}")
        self.st = self.lab.require_up()

    def check_all(self, plan, phase_at, rec):
        self.revive_crashed(rec)
        obs = {}
        for vm, kind, _ in VMS:
            c = self.copies(vm)
            resumed = None
            if not any(x["state"] == "running" for x in c.values()):
                for h, x in c.items():
                    if x["state"] == "paused":
                        rc, _ = self.ctl(h, "vm", "resume", vm, timeout=30)
                        if rc == 0:
                            resumed = h
                            c = self.copies(vm)
                            break
            # Only the consoles of this run's QEMUs: the migrated VM's source and destination, or where a
            # bystander runs. Another host may still hold an earlier incarnation's console, ending in that
            # one's panic, which says nothing about this run (soak 14 named such hosts beside the real one).
            involved = (rec["src"], rec["dst"]) if vm == plan["vm"] else (self.where[vm],)
            panics = [h for h in HOSTS if h in involved and not any(x["state"] == "running" for x in c.values())
                      and guest_crashed(serial_log(self.st["hosts"][h], vm))]
            obs[vm] = {"vm": vm, "kind": kind, "copies": c, "resumed": resumed, "guest_crashed_on": panics, "migrated": vm == plan["vm"],
                       "src": rec["src"] if vm == plan["vm"] else self.where[vm],
                       "dst": rec["dst"] if vm == plan["vm"] else None, "mode": plan["mode"], "fault": plan["fault"],
                       "phase_at": phase_at if vm == plan["vm"] else None, "report_status": rec.get("report_status"),
                       "killed_copy_state": self.killed_copy_state if vm == plan["vm"] else None,
                       "qemu_killed": vm == plan["vm"] and self.killed_copy_state is not None}
        single = [(vm, next(h for h, x in o["copies"].items() if x["state"] == "running"))
                  for vm, o in obs.items() if sum(x["state"] == "running" for x in o["copies"].values()) == 1]
        swept = self.wait_swept(single, self.a.sweep_timeout)
        for vm, h in single:
            read = self.console_or_none(h, vm)
            text = read or ""
            errors = last_int(STATUS_RE, text, None)
            bad = [f"{p}:{r}" for p, r in BAD_RE.findall(text)]
            # The guest's count is cumulative (in guest memory, so it migrates); a restarted guest starts at 0.
            new = 0 if errors is None else errors - self.errors_seen[vm] if errors >= self.errors_seen[vm] else errors
            if errors is not None:
                self.errors_seen[vm] = errors
            # BAD lines after the last status line are in no count yet: memverify died (or stalled) before it
            # could print one. Each is a page the guest saw wrong.
            last_status = max((m.end() for m in STATUS_RE.finditer(text)), default=0)
            new += len(BAD_RE.findall(text[last_status:]))
            if not swept[vm][0] and guest_crashed(serial_log(self.st["hosts"][h], vm)):
                obs[vm]["guest_crashed_on"] = [h]
            obs[vm]["sweep"] = {"done": swept[vm][0], "waited_s": swept[vm][1], "errors_new": new,
                                "bad": " ".join(bad[-8:])}
            if not swept[vm][0] and self.kind[vm] == "stock":
                # Whether a stock guest hung inside (soak_verdict: lost-to-qemu, silent): QEMU's own word on
                # whether it runs the guest (`vm stat` asks QEMU for stock VMs), taken after the wait, and how
                # many status lines the guest printed there (None: the console could not be read).
                after = self.stat(h, vm)
                obs[vm]["sweep"]["qemu_state"] = after.get("state") if after else None
                obs[vm]["sweep"]["status_lines"] = None if read is None else len(STATUS_RE.findall(read))
        namespaces = self.memd_namespaces()
        rec["memd_namespaces"] = len(namespaces) if namespaces is not None else None
        live_ns = set()
        for vm, h in single:
            x = self.copies(vm).get(h) or {}
            sid = x.get("store_vm_id")
            if sid:
                live_ns.add(sid)
            if self.kind[vm] == "agile" and namespaces is not None:
                held = namespaces.get(sid, (None, 0))[1] if sid else 0
                obs[vm]["memd"] = {"offloaded": x.get("offloaded", 0), "held": held}
        if namespaces is not None:
            orphans = {k: v for k, v in namespaces.items() if k not in live_ns}
            rec["memd_orphan_namespaces"] = len(orphans)
            rec["memd_orphan_pages"] = sum(p for _, p in orphans.values())
        verdicts = [classify(o) for o in obs.values()]
        rec["observed"] = obs  # what the verdicts were drawn from: classify() can be rerun on summary.json
        cleaned = []
        for v in verdicts:
            if v["outcome"] in ("migrated", "stayed", "ok"):
                self.where[v["vm"]] = v["running_on"][0]
                # A copy left behind next to the running one (lost, crashed, paused and fenced) would make a
                # later migration back to its host refuse (`already-exists`): acknowledge it, as an operator would.
                for h, x in obs[v["vm"]]["copies"].items():
                    if h != v["running_on"][0] and x["state"] != "running":
                        rc, _ = self.ctl(h, "vm", "stop", v["vm"], timeout=60)
                        cleaned.append(f"{v['vm']}@{h} ({x['state']}{', fenced' if x['fenced'] else ''}): "
                                       f"{'stopped' if rc == 0 else 'stop failed rc=' + str(rc)}")
        if cleaned:
            rec["cleaned"] = cleaned
        return verdicts

    def keep_consoles(self, run, vm):
        """The consoles and QEMU logs of every copy of VM, before `vm stop` and the next incarnation on that
        host overwrite them: <out>/consoles/run<N>-<vm>-<host>-{serial,qemu}.log."""
        d = os.path.join(self.a.out, "consoles")
        os.makedirs(d, exist_ok=True)
        for h in HOSTS:
            src_dir = os.path.dirname(serial_log(self.st["hosts"][h], vm))
            for name in ("serial.log", "qemu.log"):
                try:
                    shutil.copyfile(os.path.join(src_dir, name), os.path.join(d, f"run{run}-{vm}-{h}-{name}"))
                except OSError:
                    pass

    def replace_dead(self, verdicts, run):
        """A VM with no (single) running copy is stopped everywhere and started again, so later runs have it."""
        for v in verdicts:
            if v["outcome"] in ("migrated", "stayed", "ok"):
                continue
            vm = v["vm"]
            self.keep_consoles(run, vm)
            for h in HOSTS:
                self.ctl(h, "vm", "stop", vm, timeout=60)
            self.incarnation[vm] += 1
            host = self.where[vm]
            try:
                self.start_vm(vm, host)
                self.wait_swept([(vm, host)], self.a.boot_timeout)
            except LabError as e:
                log(f"could not start {vm} again: {e}")


# What a guest that broke inside prints: the kernel's own reports, and the
# guest init's line when memverify itself died (a segfault on a bad pointer).
CRASH_SIGNS = ("Kernel panic", "Oops:", "BUG:", "general protection fault", "agile-guest: workload exited")


def guest_crashed(path):
    """The guest's own crash report at the end of a console (panic, oops, BUG, the workload dying): the VM broke
    inside."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read().decode(errors="replace")
    except OSError:
        return False
    return any(sign in tail for sign in CRASH_SIGNS)


def last_int(rx, text, default=0):
    m = rx.findall(text)
    return int(m[-1]) if m else default


def options(argv):
    ap = argparse.ArgumentParser(prog="agile-lab soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--from", dest="first", type=int, default=1, help="first run of the schedule (replay one run)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout (the schedule and runs go to stderr)")
    ap.add_argument("--plan-only", action="store_true", help="print the schedule and stop (no lab, no root)")
    ap.add_argument("--time-budget", type=float, default=0, help="start no run after this many seconds (0 = no limit)")
    ap.add_argument("--out", help="summary.json and the lab's logs (default /tmp/agile-soak-<seed>)")
    ap.add_argument("--prefix", default=SOAK_PREFIX)
    ap.add_argument("--build", default=DEFAULT_BUILD)
    ap.add_argument("--bandwidth", default="1gbit")
    ap.add_argument("--host-mem", default="2G", help="RAM of each VM host (it may hold all three VMs)")
    ap.add_argument("--peer-timeout-ms", type=int, default=30000,
                    help="agiled --migrate-peer-timeout-ms (default 120000 there; shorter so a lost peer costs a run less)")
    ap.add_argument("--migration-timeout", type=float, default=300, help="bound on a migration job and on settling")
    ap.add_argument("--settle-timeout", type=float, default=120,
                    help="bound on every copy leaving incoming/starting/stopping and migration after the job ended")
    ap.add_argument("--sweep-timeout", type=float, default=90, help="bound on two memverify sweeps of every VM")
    ap.add_argument("--boot-timeout", type=float, default=180)
    a = ap.parse_args(argv)
    if a.runs < 1 or a.first < 1:
        ap.error("--runs and --from must be >= 1")
    a.out = os.path.abspath(a.out or f"/tmp/agile-soak-{a.seed}")
    return a


def main(argv=None):
    a = options(sys.argv[1:] if argv is None else argv)
    plan = schedule(a.seed, a.runs, a.first)
    out = sys.stderr if a.json else sys.stdout
    print(f"soak schedule, seed {a.seed}, runs {a.first}..{a.first + a.runs - 1}:", file=out)
    for p in plan:
        print("  " + describe(p), file=out)
    out.flush()
    if a.plan_only:
        return 0
    if os.geteuid() != 0:
        sys.exit("agile-lab soak: needs root")

    def on_signal(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)
    os.makedirs(a.out, exist_ok=True)
    s = Soak(a)
    tally = Tally()
    t_start = time.monotonic()
    rc = 0
    try:
        s.up()
        for vm, _, host in VMS:
            s.start_vm(vm, host)
        ready = s.wait_swept([(vm, host) for vm, _, host in VMS], a.boot_timeout)
        if not all(ok for ok, _ in ready.values()):
            raise LabError(f"VMs not sweeping after {a.boot_timeout} s: {ready}")
        for p in plan:
            if a.time_budget and time.monotonic() - t_start > a.time_budget:
                log(f"time budget of {a.time_budget:.0f} s spent: stopping after {tally.runs} runs")
                break
            t = time.monotonic()
            log(describe(p))
            phase_at, rec = s.run(p)
            verdicts = s.check_all(p, phase_at, rec)
            rec["wall_s"] = round(time.monotonic() - t, 1)
            tally.add(p, phase_at, verdicts, rec)
            log(f"run {p['run']}: {rec['src']}->{rec['dst']} fault at "
                f"{PHASES[phase_at] if phase_at is not None else '-'}: {rec['fault_done']}; migration "
                f"{rec['report_status']}; " + "; ".join(
                    f"{v['vm']} {v['outcome']}" + (f" ({'; '.join(v['notes'])})" if v["notes"] else "")
                    for v in verdicts) + (f"; cleaned {', '.join(rec['cleaned'])}" if rec.get("cleaned") else "")
                + f" [{rec['wall_s']} s]")
            s.replace_dead(verdicts, p["run"])
            s.revive_crashed(rec)
            with open(os.path.join(a.out, "summary.json"), "w") as f:
                json.dump({"seed": a.seed, **tally.as_json()}, f, indent=2)
    except KeyboardInterrupt:
        log("interrupted")
        rc = 130
    except (LabError, RuntimeError) as e:
        log(f"FAILED: {e}")
        rc = 2
    finally:
        try:
            down(a.prefix, keep_logs=os.path.join(a.out, "logs"), quiet=True)
        except LabError as e:
            log(f"down: {e}")
    result = {"seed": a.seed, "wall_s": round(time.monotonic() - t_start), **tally.as_json()}
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    if a.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(tally.table())
        print(f"\nsummary and logs in {a.out} ({result['wall_s']} s)")
    if tally.failed():
        return 1
    return rc
