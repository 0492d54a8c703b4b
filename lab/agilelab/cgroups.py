"""Hosts' RAM as memory cgroups: v1 (memory controller mounted on its own) or
v2 (unified hierarchy with the memory controller)."""
import os

from .config import CGROUP_FS
from .util import LabError, open_or_empty, parse_kv, read_int, write


class Cgroups:
    def __init__(self, version=None):
        if version is None:
            if os.path.exists(os.path.join(CGROUP_FS, "memory", "memory.limit_in_bytes")):
                version = 1
            elif "memory" in open_or_empty(os.path.join(CGROUP_FS, "cgroup.controllers")).split():
                version = 2
            else:
                raise LabError(f"no memory cgroup controller found under {CGROUP_FS}")
        self.version = version
        self.base = os.path.join(CGROUP_FS, "memory") if version == 1 else CGROUP_FS

    def path(self, prefix, host=None):
        return os.path.join(self.base, prefix, host) if host else os.path.join(self.base, prefix)

    def create(self, prefix, host, mem_limit, swap_limit):
        """mem_limit/swap_limit in bytes, None = unlimited."""
        top = self.path(prefix)
        os.makedirs(top, exist_ok=True)
        if self.version == 2:
            # Children only get memory.* files if the parents delegate it.
            for d in (self.base, top):
                ctl = os.path.join(d, "cgroup.subtree_control")
                if "memory" not in open_or_empty(ctl).split():
                    write(ctl, "+memory")
        p = self.path(prefix, host)
        os.makedirs(p, exist_ok=True)
        if self.version == 1:
            if mem_limit is not None:
                write(os.path.join(p, "memory.limit_in_bytes"), str(mem_limit))
                memsw = os.path.join(p, "memory.memsw.limit_in_bytes")
                if swap_limit is not None and os.path.exists(memsw):
                    # memsw counts memory + swap; it must stay >= the memory limit.
                    write(memsw, str(mem_limit + swap_limit))
        else:
            if mem_limit is not None:
                write(os.path.join(p, "memory.max"), str(mem_limit))
            if swap_limit is not None and os.path.exists(os.path.join(p, "memory.swap.max")):
                write(os.path.join(p, "memory.swap.max"), str(swap_limit))
        return p

    def set_limits(self, path, mem_limit, swap_limit):
        """Changes an existing cgroup's limits (bytes). v1: memsw must stay >=
        the memory limit at every step, so raising writes memsw first."""
        if self.version == 1:
            limit = os.path.join(path, "memory.limit_in_bytes")
            memsw = os.path.join(path, "memory.memsw.limit_in_bytes")
            steps = [(limit, mem_limit)]
            if os.path.exists(memsw):
                raising = mem_limit > (read_int(limit) or 0)
                step = (memsw, mem_limit + swap_limit)
                steps = [step] + steps if raising else steps + [step]
            for f, v in steps:
                write(f, str(v))
        else:
            write(os.path.join(path, "memory.max"), str(mem_limit))
            if os.path.exists(os.path.join(path, "memory.swap.max")):
                write(os.path.join(path, "memory.swap.max"), str(swap_limit))

    @staticmethod
    def procs(path):
        pids = []
        for dirpath, _, files in os.walk(path):
            if "cgroup.procs" in files:
                pids += [int(x) for x in open_or_empty(os.path.join(dirpath, "cgroup.procs")).split()]
        return pids

    def stats(self, path):
        """usage, limit, swap (this cgroup's pages in swap), rss, shmem,
        pgmajfault; a key is None when the file could not be read."""
        s = {}
        if self.version == 1:
            s["usage"] = read_int(os.path.join(path, "memory.usage_in_bytes"))
            s["limit"] = read_int(os.path.join(path, "memory.limit_in_bytes"))
            memsw = read_int(os.path.join(path, "memory.memsw.usage_in_bytes"))
            if memsw is not None and s["usage"] is not None:
                s["swap"] = max(0, memsw - s["usage"])
            stat = parse_kv(os.path.join(path, "memory.stat"))
            if "total_swap" in stat:
                s["swap"] = stat["total_swap"]  # this cgroup's pages in swap, wherever they went
            s["rss"] = stat.get("total_rss")
            s["shmem"] = stat.get("total_shmem")
            s["pgmajfault"] = stat.get("total_pgmajfault")
            if s["limit"] is not None and s["limit"] >= 1 << 60:
                s["limit"] = None
        else:
            s["usage"] = read_int(os.path.join(path, "memory.current"))
            s["limit"] = read_int(os.path.join(path, "memory.max"))
            s["swap"] = read_int(os.path.join(path, "memory.swap.current"))
            stat = parse_kv(os.path.join(path, "memory.stat"))
            s["rss"] = stat.get("anon")
            s["shmem"] = stat.get("shmem")
            s["pgmajfault"] = stat.get("pgmajfault")
        return s
