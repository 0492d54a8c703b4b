"""The plan of a lab (hosts, addresses, limits), written before anything is
created, and the network it describes: a switch namespace with a bridge, one
namespace per host joined to it by a rate-limited veth link."""
import ipaddress
import os
import time

from .cgroups import Cgroups
from .config import (AGILED_PORT, BRIDGE, CLIENT_HOST, CLIENT_OCTET, HOST_RE, MEMD_HOST, MEMD_OCTET, MEMD_PORT,
                     RESERVED_HOSTS, STORES, SWITCH, UPLINK, VM_HOST_FIRST_OCTET)
from .daemons import build_paths
from .links import add_tbf, tbf_params
from .netns import create_netns
from .util import LabError, parse_rate, parse_size, run


def plan(lab, args):
    """The full description of the lab, written before anything is created."""
    net = ipaddress.ip_network(args.subnet, strict=True)
    if net.prefixlen != 24 or not net.is_private:
        raise LabError(f"--subnet must be a private /24 (got {args.subnet})")
    vm_hosts = [h.strip() for h in args.hosts.split(",") if h.strip()]
    if not vm_hosts:
        raise LabError("--hosts names no host")
    if len(set(vm_hosts)) != len(vm_hosts) or len(vm_hosts) > 80:
        raise LabError("--hosts: names must be distinct (at most 80)")
    for h in vm_hosts:
        if not HOST_RE.match(h) or h in RESERVED_HOSTS:
            raise LabError(f"bad host name '{h}': [a-z][a-z0-9]{{0,11}}, not {sorted(RESERVED_HOSTS)}")
    store = getattr(args, "store", None) or STORES[0]
    if store not in STORES:
        raise LabError(f"--store must be one of {', '.join(STORES)} (got {store})")
    rate = parse_rate(args.bandwidth)
    host_mem = parse_size(args.host_mem)
    swap = parse_size(args.swap)
    base = net.network_address
    cg = Cgroups()
    hosts = {}
    order = [(MEMD_HOST, "memd", MEMD_OCTET), (CLIENT_HOST, "client", CLIENT_OCTET)] + \
            [(h, "vm", VM_HOST_FIRST_OCTET + i) for i, h in enumerate(vm_hosts)]
    for name, role, octet in order:
        h = {
            "role": role,
            "netns": lab.ns(name),
            "ip": str(base + octet),
            "port": name,  # its veth end in the switch namespace
            "uplink": UPLINK,
            "bridge": BRIDGE if role == "vm" else None,
            "cgroup": cg.path(lab.prefix, name),
            "mem_limit": host_mem if role == "vm" else None,
            "swap": None,
        }
        if role == "vm" and swap > 0:
            h["swap"] = {"file": os.path.join(lab.swap_dir, f"{name}.swap"), "bytes": swap,
                         "priority": args.swap_priority, "active": False}
            h["swap_limit"] = swap
        if role == "vm":
            h["state_dir"] = os.path.join(lab.dir, name)
            h["agiled_id"] = f"{lab.prefix}-{name}"
            h["listen"] = f"{h['ip']}:{AGILED_PORT}"
        hosts[name] = h
    memd_ip = hosts[MEMD_HOST]["ip"]
    hosts[MEMD_HOST]["listen"] = f"{memd_ip}:{MEMD_PORT}"
    return {
        "prefix": lab.prefix,
        "phase": "creating",
        "created_at": time.time(),
        "subnet": str(net),
        "bandwidth": args.bandwidth,
        "rate_bps": rate,
        "tbf": tbf_params(rate),
        "cgroup_version": cg.version,
        "cgroup_root": cg.path(lab.prefix),
        "switch": {"netns": lab.ns(SWITCH), "bridge": BRIDGE},
        "hosts": hosts,
        "memd_addr": hosts[MEMD_HOST]["listen"],
        "store": store,  # what the memd host runs and the agileds' --store names (daemons.py)
        "swap_dir": lab.swap_dir,
        "shm_dir": lab.shm_dir,
        "build": build_paths(args.build),
        "vms": {},
        "stock": {},
    }


def up_network(lab, st):
    sw = st["switch"]["netns"]
    create_netns(lab, sw)
    run(["ip", "-n", sw, "link", "add", "name", BRIDGE, "type", "bridge", "forward_delay", "0", "stp_state", "0"])
    run(["ip", "-n", sw, "link", "set", "dev", BRIDGE, "up"])
    prefixlen = ipaddress.ip_network(st["subnet"]).prefixlen
    for name, h in st["hosts"].items():
        ns = h["netns"]
        create_netns(lab, ns)
        # Created directly in the two namespaces: a veth never exists in the
        # root namespace, not even for a moment.
        run(["ip", "-n", sw, "link", "add", "name", h["port"], "type", "veth", "peer", "name", h["uplink"], "netns", ns])
        run(["ip", "-n", sw, "link", "set", "dev", h["port"], "master", BRIDGE])
        run(["ip", "-n", sw, "link", "set", "dev", h["port"], "up"])
        addr_dev = h["uplink"]
        if h["bridge"]:
            run(["ip", "-n", ns, "link", "add", "name", h["bridge"], "type", "bridge", "forward_delay", "0", "stp_state", "0"])
            run(["ip", "-n", ns, "link", "set", "dev", h["uplink"], "master", h["bridge"]])
            run(["ip", "-n", ns, "link", "set", "dev", h["bridge"], "up"])
            addr_dev = h["bridge"]
        run(["ip", "-n", ns, "link", "set", "dev", h["uplink"], "up"])
        run(["ip", "-n", ns, "addr", "add", f"{h['ip']}/{prefixlen}", "dev", addr_dev])
        # The link's two directions: host -> switch, switch -> host.
        add_tbf(ns, h["uplink"], st)
        add_tbf(sw, h["port"], st)
        h["net_up"] = True
        lab.save()


def up_cgroups(lab, st):
    cg = Cgroups(st["cgroup_version"])
    st["cgroup_created"] = True
    lab.save()
    for name, h in st["hosts"].items():
        cg.create(lab.prefix, name, h["mem_limit"], h.get("swap_limit"))
