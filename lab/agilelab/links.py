"""The hosts' links: tc tbf rate limits, one per direction."""
from .util import run


def tbf_params(rate_bps):
    # burst: ~1 ms at line rate, at least a few full-size (GSO) packets, so the
    # shaper reaches its rate; limit: ~20 ms of queue at line rate.
    burst = max(int(rate_bps / 8 / 1000), 64 * 1024)
    limit = max(int(rate_bps / 8 * 0.02), 2 * burst)
    return {"burst": burst, "limit": limit}


def add_tbf(ns, dev, st):
    t = st["tbf"]
    run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf", "rate", str(st["rate_bps"]) + "bit",
         "burst", str(t["burst"]), "limit", str(t["limit"])])
