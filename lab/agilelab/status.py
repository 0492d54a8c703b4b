"""`status`: hosts, addresses, memory and swap, daemons, VMs."""
import os

from .cgroups import Cgroups
from .config import PROC_SWAPS
from .netns import netns_exists
from .procs import alive
from .state import agiled_socket
from .util import fmt_size, open_or_empty


def host_status(st, name, h):
    cg = Cgroups(st["cgroup_version"])
    s = {"name": name, "role": h["role"], "netns": h["netns"], "netns_ok": netns_exists(h["netns"]),
         "ip": h["ip"], "cgroup": h["cgroup"], "memory": cg.stats(h["cgroup"]) if os.path.isdir(h["cgroup"]) else None,
         "processes": len(Cgroups.procs(h["cgroup"])) if os.path.isdir(h["cgroup"]) else 0}
    if h.get("swap"):
        sw = dict(h["swap"])
        for line in open_or_empty(PROC_SWAPS).splitlines()[1:]:
            cols = line.split()
            if cols[0] == sw["file"]:
                sw["used_bytes"] = int(cols[3]) * 1024
        s["swap"] = sw
    if h.get("agiled"):
        s["agiled"] = {"pid": h["agiled"]["pid"], "alive": alive(h["agiled"]), "listen": h["listen"],
                       "socket": agiled_socket(h), "log": h["agiled"]["log"]}
    if h.get("memd"):
        s["memd"] = {"pid": h["memd"]["pid"], "alive": alive(h["memd"]), "listen": h["listen"], "log": h["memd"]["log"]}
    if h.get("redis"):
        s["redis"] = [{"pid": r["pid"], "alive": alive(r), "log": r["log"]} for r in h["redis"]]
    return s


def status_json(lab, st):
    return {"prefix": lab.prefix, "phase": st.get("phase"), "subnet": st["subnet"], "bandwidth": st["bandwidth"],
            "switch": st["switch"], "cgroup_version": st["cgroup_version"], "memd_addr": st["memd_addr"],
            "store": st.get("store", "memd"),
            "hosts": [host_status(st, n, h) for n, h in st["hosts"].items()],
            "vms": st.get("vms", {})}


def print_status(lab, st):
    j = status_json(lab, st)
    print(f"lab {j['prefix']} ({j['phase']}): subnet {j['subnet']}, links {j['bandwidth']} (tbf both ways), "
          f"cgroup v{j['cgroup_version']}, switch netns {j['switch']['netns']}, store {j['store']}")
    print(f"{'HOST':<8} {'ROLE':<7} {'NETNS':<14} {'IP':<14} {'MEM USED/LIMIT':<18} {'SWAP USED/MAX':<16} "
          f"{'PROCS':>5}  DAEMON")
    for h in j["hosts"]:
        m = h["memory"] or {}
        mem = f"{fmt_size(m.get('usage') or 0)}/{fmt_size(m['limit']) if m.get('limit') else '-'}"
        sw = h.get("swap")
        # The host's pages in swap (cgroup accounting), against its swap
        # limit; which swap file they went to is up to the kernel.
        swap = f"{fmt_size(m.get('swap') or 0)}/{fmt_size(sw['bytes'])}" if sw else "-"
        d = h.get("agiled") or h.get("memd")
        daemon = ""
        if h.get("redis"):
            dead = sum(1 for r in h["redis"] if not r["alive"])
            daemon = f"redis-cluster {len(h['redis'])} nodes" + (f", {dead} DEAD" if dead else "")
        if d:
            daemon = f"{'agiled' if 'agiled' in h else 'agile-memd'} {d['listen']} pid {d['pid']}" + \
                ("" if d["alive"] else " DEAD")
        print(f"{h['name']:<8} {h['role']:<7} {h['netns']:<14} {h['ip']:<14} {mem:<18} {swap:<16} "
              f"{h['processes']:>5}  {daemon}")
    files = [h["swap"] for h in j["hosts"] if h.get("swap")]
    if files:
        print("swap files (global: any host's pages can go to any of them): " +
              ", ".join(f"{f['file']} {fmt_size(f.get('used_bytes', 0))} used, prio {f['priority']}" for f in files))
    for name, v in j["vms"].items():
        print(f"vm {name}: ip {v['ip']} mac {v['mac']} tap {v['tap']} on {', '.join(v.get('taps', [])) or '-'}")
