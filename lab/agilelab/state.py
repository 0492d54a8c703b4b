"""A lab's state file: everything it made or plans to make, written before
each step, under a lock (several agile-lab commands may run at once)."""
import contextlib
import fcntl
import json
import os

from .config import AGILED_SERIAL_LOG, PREFIX_RE, SHM_ROOT, STATE_ROOT, SWAP_ROOT
from .util import LabError, log


class Lab:
    def __init__(self, prefix):
        if not PREFIX_RE.match(prefix):
            raise LabError(f"bad prefix '{prefix}': 1-8 characters, [a-z][a-z0-9]*")
        self.prefix = prefix
        self.dir = os.path.join(STATE_ROOT, prefix)
        self.state_file = os.path.join(self.dir, "state.json")
        self.swap_dir = os.path.join(SWAP_ROOT, prefix)
        self.shm_dir = os.path.join(SHM_ROOT, prefix)
        self.state = None

    def ns(self, host):
        return f"{self.prefix}-{host}"

    # A lock around every read-modify-write of the state (e.g. a migration
    # driver making taps while another command runs).
    @contextlib.contextmanager
    def locked(self):
        os.makedirs(self.dir, exist_ok=True)
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self.state = self.load()
            yield self.state
        finally:
            os.close(fd)

    def load(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            log(f"warning: unreadable state file {self.state_file}: {e}")
            return None

    def save(self):
        os.makedirs(self.dir, exist_ok=True)
        tmp = self.state_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def require_up(self):
        st = self.load()
        if not st or st.get("phase") != "up":
            raise LabError(f"lab '{self.prefix}' is not up (agile-lab up --prefix {self.prefix})")
        return st

    def host(self, st, name):
        h = st["hosts"].get(name)
        if not h:
            raise LabError(f"no host '{name}' in lab '{self.prefix}' (hosts: {', '.join(st['hosts'])})")
        return h


def agiled_socket(h):
    """The unix socket of a VM host's agiled (not namespaced: reachable from here)."""
    return os.path.join(h["state_dir"], "agiled.sock")


def agiled_url(h):
    return "unix:" + agiled_socket(h)


def serial_log(h, vm):
    """Where HOST's agiled writes VM's serial console (whatever its state)."""
    return os.path.join(h["state_dir"], "vms", vm, AGILED_SERIAL_LOG)
