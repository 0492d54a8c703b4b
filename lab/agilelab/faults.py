"""Faults the soak injects into a lab's network: a host's link cut (`ip link
set down`) or throttled to a trickle (tbf at a tiny rate, both directions),
and put back as `up` made it. Daemon kills are daemons.kill_daemon /
restart_daemon; a QEMU kill is a plain SIGKILL of the pid agiled reports."""
from .links import add_tbf, tbf_params
from .util import parse_rate, run


def _ends(st, host):
    """(namespace, device) of both ends of HOST's link: its uplink and its port in the switch."""
    h = st["hosts"][host]
    return [(h["netns"], h["uplink"]), (st["switch"]["netns"], h["port"])]


def cut_link(st, host):
    """Both ends down: nothing crosses, and neither side gets a carrier loss the other does not."""
    for ns, dev in _ends(st, host):
        run(["ip", "-n", ns, "link", "set", "dev", dev, "down"])


def restore_link(st, host):
    for ns, dev in _ends(st, host):
        run(["ip", "-n", ns, "link", "set", "dev", dev, "up"])
        add_tbf(ns, dev, st)


def throttle_link(st, host, rate):
    """tbf at RATE (e.g. 64kbit) on both ends; the queue sized as `up` sizes it for that rate."""
    t = tbf_params(parse_rate(rate))
    for ns, dev in _ends(st, host):
        run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate,
             "burst", str(t["burst"]), "limit", str(t["limit"])])
