"""Hosts as network namespaces: create, list, enter."""
import ctypes
import json
import os

from .config import NETNS_DIR
from .util import run

CLONE_NEWNET = 0x40000000
_libc = None


def netns_exists(ns):
    return os.path.exists(os.path.join(NETNS_DIR, ns))


def netns_list():
    p = run(["ip", "netns", "list"], check=False)
    return [line.split()[0] for line in p.stdout.splitlines() if line.strip()]


def netns_pids(ns):
    p = run(["ip", "netns", "pids", ns], check=False)
    return [int(x) for x in p.stdout.split() if x.isdigit()]


def setns_net(ns):
    """Moves the calling process (thread) into network namespace ns."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns({ns}): {os.strerror(e)}")
    finally:
        os.close(fd)


def ns_sysctl(ns, *settings):
    run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", *settings])


def create_netns(lab, ns):
    lab.state.setdefault("netns_created", [])
    if ns not in lab.state["netns_created"]:
        lab.state["netns_created"].append(ns)
        lab.save()  # recorded before it exists: down removes it even if we die now
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "dev", "lo", "up"])
    # No IPv6 chatter (router/neighbour solicitations, MLD) on the links.
    ns_sysctl(ns, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")


def tx_bytes(ns, dev):
    """Bytes sent by dev in ns so far, or None."""
    try:
        p = run(["ip", "-n", ns, "-s", "-j", "link", "show", dev], check=False)
        return json.loads(p.stdout)[0]["stats64"]["tx"]["bytes"]
    except (ValueError, LookupError, TypeError):
        return None
