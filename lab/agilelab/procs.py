"""Processes the lab starts: spawned inside a host (namespace + cgroup),
recorded with their start time so a reused pid is never mistaken for ours."""
import contextlib
import os
import shlex
import subprocess
import time

from .netns import setns_net
from .util import LabError, tail, vlog


def proc_start_time(pid):
    """Start time of pid in clock ticks, or None if it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(rec):
    """rec = {'pid': .., 'start': ..}: the very process we started is running."""
    if not rec or not rec.get("pid"):
        return False
    st = proc_start_time(rec["pid"])
    return st is not None and st == rec.get("start")


def kill_rec(rec, sig):
    if alive(rec):
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec["pid"], sig)


def wait_gone(recs, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(alive(r) for r in recs):
            return True
        time.sleep(0.05)
    return not any(alive(r) for r in recs)


def enter_host(ns, cgroup_dir):
    """In a child before exec: join the host's cgroup, then its network namespace."""
    if cgroup_dir:
        with open(os.path.join(cgroup_dir, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))
    if ns:
        setns_net(ns)


def spawn(argv, ns, cgroup_dir, log_path):
    """Starts a long-lived process inside host ns + cgroup, detached from us
    (own session, stdio to log_path). Returns {'pid', 'start', 'argv', 'log'}."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    vlog(f"spawn in {ns}: " + " ".join(shlex.quote(a) for a in argv))
    with open(log_path, "ab") as logf:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                             start_new_session=True, close_fds=True,
                             preexec_fn=lambda: enter_host(ns, cgroup_dir))
    start = None
    for _ in range(100):
        start = proc_start_time(p.pid)
        if start is not None:
            break
        time.sleep(0.01)
    return {"pid": p.pid, "start": start, "argv": argv, "log": log_path}


def listening(pid, port):
    """True if the network namespace of pid has a TCP socket listening on port."""
    for name in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{name}") as f:
                next(f)
                for line in f:
                    cols = line.split()
                    if int(cols[1].rsplit(":", 1)[1], 16) == port and cols[3] == "0A":
                        return True
        except OSError:
            pass
    return False


def wait_for(pred, timeout, what, rec=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        if rec is not None and not alive(rec):
            raise LabError(f"{what}: process exited; log {rec['log']}:\n{tail(rec['log'])}")
        time.sleep(0.05)
    raise LabError(f"{what}: not ready after {timeout} s" + (f"; log {rec['log']}:\n{tail(rec['log'])}" if rec else ""))
