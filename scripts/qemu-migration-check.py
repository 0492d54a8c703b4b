#!/usr/bin/env python3
"""docs/reliability.md finding 2 in isolation: a stock memverify guest migrated
by plain QEMU (TCG) between two QEMUs on loopback - no agiled, no shim, no lab -
with one set of capabilities; after each migration the destination's console is
watched for 15 s for a guest kernel crash or a memverify error. One JSON line
per trial. Needs the guest image (make guest).

Usage: scripts/qemu-migration-check.py CONFIG TRIALS [GUEST_DIR] [OUT_DIR]
CONFIG: plain | multifd | auto-converge | tuned (multifd + auto-converge).
QEMU_ACCEL (environment): the -accel value of both QEMUs, default tcg (multi-threaded
TCG); e.g. QEMU_ACCEL=tcg,thread=single for single-threaded TCG."""
import json, os, re, socket, subprocess, sys, time

G = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "guest")
ACCEL = os.environ.get("QEMU_ACCEL", "tcg")
OUT = sys.argv[4] if len(sys.argv) > 4 else "/tmp/agile-qemu-migration-check"
CONFIGS = {
    "plain": {},
    "multifd": {"multifd": True},
    "auto-converge": {"auto-converge": True},
    "tuned": {"multifd": True, "auto-converge": True},
}

class Qmp:
    def __init__(self, path):
        for _ in range(300):
            try:
                self.s = socket.socket(socket.AF_UNIX); self.s.connect(path); break
            except OSError:
                time.sleep(0.05)
        self.f = self.s.makefile("rw")
        self.f.readline(); self.cmd("qmp_capabilities")
    def cmd(self, c, **a):
        self.f.write(json.dumps({"execute": c, "arguments": a} if a else {"execute": c}) + "\n"); self.f.flush()
        while True:
            r = json.loads(self.f.readline())
            if "return" in r: return r["return"]
            if "error" in r: raise RuntimeError(f"{c}: {r['error']}")

def qemu(d, name, incoming, seed):
    argv = ["/usr/bin/qemu-system-x86_64", "-name", name, "-machine", "q35", "-accel", ACCEL, "-smp", "1", "-m", "256M",
            "-kernel", f"{G}/vmlinuz", "-initrd", f"{G}/initrd.img", "-append",
            f"console=ttyS0 quiet panic=-1 agile.workload=memverify memverify.rate=4000 memverify.seed={seed} memverify.size_mib=48",
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", f"file:{d}/{name}.serial",
            "-qmp", f"unix:{d}/{name}.qmp,server=on,wait=off"]
    if incoming: argv += ["-incoming", "defer"]
    return subprocess.Popen(argv, stdout=open(f"{d}/{name}.log", "w"), stderr=subprocess.STDOUT)

def trial(cfg, n):
    d = f"{OUT}/{cfg}-{n}"
    os.makedirs(d, exist_ok=True)
    procs = []
    try:
        procs.append(qemu(d, "src", False, 1000 + n))
        qs = Qmp(f"{d}/src.qmp")
        t0 = time.time()  # the guest's memverify is running once it reports a sweep
        while time.time() - t0 < 120 and "sweep=" not in open(f"{d}/src.serial", errors="replace").read():
            time.sleep(0.5)
        procs.append(qemu(d, "dst", True, 1000 + n))
        qd = Qmp(f"{d}/dst.qmp")
        caps = [{"capability": k, "state": v} for k, v in CONFIGS[cfg].items()]
        for q in (qs, qd):
            if caps:
                q.cmd("migrate-set-capabilities", capabilities=caps)
            q.cmd("migrate-set-parameters", **{"multifd-channels": 2})
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        qd.cmd("migrate-incoming", uri=f"tcp:127.0.0.1:{port}")
        qs.cmd("migrate", uri=f"tcp:127.0.0.1:{port}")
        while True:
            st = qs.cmd("query-migrate")
            if st["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.05)
        time.sleep(15)
        con = open(f"{d}/dst.serial", errors="replace").read()
        crash = bool(re.search(r"Kernel panic|BUG:|Oops|general protection|Segmentation fault", con))
        errs = [int(x) for x in re.findall(r"errors=(\d+)", con)]
        print(json.dumps({"config": cfg, "accel": ACCEL, "trial": n, "status": st["status"], "downtime": st.get("downtime"),
                          "crash": crash, "max_errors": max(errs) if errs else None,
                          "dst_alive": procs[1].poll() is None, "dir": d}), flush=True)
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in CONFIGS or not sys.argv[2].isdigit():
        sys.exit(__doc__)
    for n in range(int(sys.argv[2])):
        trial(sys.argv[1], n)
