"""Small helpers every module uses: errors, logging, running commands, sizes,
reading and writing small files."""
import re
import os
import shlex
import subprocess
import sys

# Set by the CLI's -v: print every command run.
VERBOSE = False


class LabError(Exception):
    pass


def log(msg):
    print(f"agile-lab: {msg}", file=sys.stderr, flush=True)


def vlog(msg):
    if VERBOSE:
        log(msg)


def run(argv, check=True, capture=True, input=None, env=None):
    """Runs argv (env: extra environment, e.g. a secret kept off the command line); returns
    CompletedProcess. Raises LabError when check fails."""
    vlog("$ " + " ".join(shlex.quote(a) for a in argv))
    p = subprocess.run(argv, input=input, text=True, env={**os.environ, **env} if env else None,
                       stdout=subprocess.PIPE if capture else None,
                       stderr=subprocess.PIPE if capture else None)
    if check and p.returncode != 0:
        err = (p.stderr or "").strip() if capture else ""
        raise LabError(f"{' '.join(argv)} failed (rc={p.returncode}){': ' + err if err else ''}")
    return p


def parse_size(s):
    """'512M', '2G', '1048576' -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(i?B)?\s*", str(s), re.I)
    if not m:
        raise LabError(f"bad size '{s}' (want e.g. 512M, 2G)")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(m.group(1)) * mult


def fmt_size(n):
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.1f}{unit}"
    return f"{n}B"


def parse_rate(s):
    """'1gbit', '100mbit', '500kbit' -> bits per second."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)", s.strip().lower())
    if not m:
        raise LabError(f"bad bandwidth '{s}' (want e.g. 1gbit, 100mbit)")
    return int(float(m.group(1)) * {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9}[m.group(2)])


def open_or_empty(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def parse_kv(path):
    """'key value' lines (memory.stat, /proc/vmstat) -> {key: int}."""
    out = {}
    for line in open_or_empty(path).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def read_int(path, default=None):
    try:
        with open(path) as f:
            v = f.read().strip()
        return int(v) if v not in ("max", "") else None
    except (OSError, ValueError):
        return default


def write(path, value):
    vlog(f"write {path} <- {value}")
    with open(path, "w") as f:
        f.write(value)


def tail(path, n=8):
    lines = open_or_empty(path).splitlines()
    return "\n".join("    " + line for line in lines[-n:])


def strip_dashdash(a):
    return a[1:] if a and a[0] == "--" else a
