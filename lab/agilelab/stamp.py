"""What a report was made with: git commit, kernel, QEMU, CPU, date and the
exact command, for summary.json's `stamp` and the top of every report.md."""
import os
import platform
import shlex
import subprocess
import sys
import time

from .config import ROOT

QEMU = "/usr/bin/qemu-system-x86_64"  # agiled's default --qemu, which the lab does not change


def _out(argv, cwd=None):
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=10)
        return p.stdout.strip() if p.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def cpu_model():
    model, n = None, 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    model = model or line.split(":", 1)[1].strip()
                    n += 1
    except OSError:
        pass
    return f"{model or platform.processor() or platform.machine()} x {n or os.cpu_count()}"


def command():
    """The command line as run, the program relative to the repository when it lies inside it."""
    prog = os.path.realpath(sys.argv[0]) if sys.argv and sys.argv[0] else "lab/agile-lab"
    if prog.startswith(ROOT + os.sep):
        prog = os.path.relpath(prog, ROOT)
    return shlex.join([prog] + sys.argv[1:])


def stamp():
    commit = _out(["git", "rev-parse", "HEAD"], cwd=ROOT)
    dirty = _out(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT)
    u = platform.uname()
    qemu = _out([QEMU, "--version"])
    return {"git_commit": commit, "git_dirty": bool(dirty) if dirty is not None else None,
            "kernel": f"{u.system} {u.release} {u.version}", "qemu": qemu.splitlines()[0] if qemu else None,
            "cpu": cpu_model(), "date": time.strftime("%Y-%m-%d %H:%M:%S %z"), "command": command()}


def stamp_lines(st):
    """report.md's lines for a stamp (empty for a summary that has none)."""
    if not st:
        return []
    commit = (st.get("git_commit") or "?")[:12] + (" (with uncommitted changes)" if st.get("git_dirty") else "")
    lines = [f"Made {st.get('date')} from commit `{commit}`; kernel `{st.get('kernel')}`; `{st.get('qemu')}`; "
             f"CPU {st.get('cpu')}.", "", f"Command: `{st.get('command')}`", ""]
    if st.get("guest"):
        lines += [f"Guest: {guest_line(st['guest'])}.", ""]
    return lines


def guest_line(g):
    """The stamp's guest (guestdisk.guest_stamp) in words; reports from before it have none."""
    if g.get("kind") != "disk":
        return "kernel (our kernel+initramfs, `--guest kernel`)"
    inputs = (g.get("image_inputs_sha256") or "unknown")[:12]
    size = f"{g['image_bytes'] / (1 << 20):.0f} MiB" if g.get("image_bytes") else "size unknown"
    vms = ", ".join(f"`{v}`" for v in g.get("disk_vms") or [])
    return (f"disk (`--guest disk`): {vms} booted by {g.get('boot')} from its own qcow2 overlay of "
            f"`{g.get('image')}` ({size}, build inputs sha256 {inputs}) on the lab's shared storage; "
            f"the other VMs are kernel guests")
