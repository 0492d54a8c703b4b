"""The workload's own account of its work, read from a VM's serial console
log file directly (whatever agiled's state for the VM, on either host).

memtouch and memverify print a status line every second with a cumulative
`ops=` count (guest/README.md); memtouch also prints `max_gap_ms=`, its
longest stall in that second. Work between two reads is the difference of
the counters, so a line the lab missed, or a VM agiled could not report on
(a stock VM migrating, one in state `incoming`), loses nothing: only a
console that cannot be read at all makes a sample missing.
"""
import os
import re

STATUS_RE = re.compile(r"(?:memtouch|memverify): .*\bops=(\d+)")
GAP_RE = re.compile(r"\bmax_gap_ms=(\d+)")
GUEST_CLOCK_RE = re.compile(r"\bt_ms=(\d+)")


class ConsoleReader:
    """Follows one serial.log: the newest cumulative ops and the status lines
    that appeared since the last poll."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = ""
        self.ops = None  # newest cumulative count seen, None = none yet

    def poll(self):
        """Reads what was appended; returns the new status lines as
        (ops, max_gap_ms or None, guest t_ms or None). Returns None if the
        file cannot be read. self.mtime: the file's last write (wall clock)."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                size, self.mtime = st.st_size, st.st_mtime
                if size < self.offset:  # a new file under the same name: start over
                    self.offset, self.partial = 0, ""
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return None
        self.offset += len(data)
        text = self.partial + data.decode("utf-8", "replace")
        lines = text.split("\n")
        self.partial = lines.pop()  # an unfinished line waits for the next poll
        out = []
        for line in lines:
            m = STATUS_RE.search(line)
            if not m:
                continue
            g = GAP_RE.search(line)
            c = GUEST_CLOCK_RE.search(line)
            ops = int(m.group(1))
            out.append((ops, int(g.group(1)) if g else None, int(c.group(1)) if c else None))
            self.ops = ops if self.ops is None else max(self.ops, ops)
        return out


class VmWork:
    """A VM's work across the hosts it may run on: the guest's counter goes
    on from the source's last value at the destination (it is in guest
    memory), so the VM's count is the largest seen on any of them."""

    def __init__(self, paths):
        self.readers = [ConsoleReader(p) for p in paths]

    def poll(self):
        """(cumulative ops or None when no console could be read,
        longest max_gap_ms among the new lines or None,
        {path: that console's newest ops or None})."""
        gaps, per_console, readable = [], {}, False
        for r in self.readers:
            new = r.poll()
            if new is None:
                per_console[r.path] = None
                continue
            readable = True
            per_console[r.path] = r.ops
            gaps += [g for _, g, _ in new if g is not None]
        counts = [r.ops for r in self.readers if r.ops is not None]
        ops = max(counts) if readable and counts else None
        return ops, (max(gaps) if gaps else None), per_console


class LineTimes:
    """When, by the host's clock, each of a VM's status lines was written,
    beside the guest's own clock (memtouch t_ms) and its longest stall
    (max_gap_ms). Under TCG the guest's clock stands still while QEMU has the
    VM stopped, so a stop is in no max_gap_ms; it shows as host time between
    two lines that the guest's clock does not have. A line's write time is
    the file's mtime when a poll finds exactly that one new line at the end
    (poll often: every line then comes alone), so a late poll does not move
    it; lines found together get no time."""

    def __init__(self, paths, wall_to_t):
        self.readers = [ConsoleReader(p) for p in paths]
        self.wall_to_t = wall_to_t  # wall clock -> the experiment's t (s)
        self.lines = []  # {t_s, t_ms, max_gap_ms}, t_s None when unknown

    def poll(self):
        for r in self.readers:
            new = r.poll()
            if not new:
                continue
            for i, (_, gap, t_ms) in enumerate(new):
                if t_ms is None:
                    continue
                last = i == len(new) - 1 and r.partial == ""
                self.lines.append({"t_s": round(self.wall_to_t(r.mtime), 3) if last and len(new) == 1 else None,
                                   "t_ms": t_ms, "max_gap_ms": gap})


def stalls(lines):
    """Per line: the host time the guest's clock did not see since the
    previous line (hidden_ms: host interval - guest interval, clipped at 0)
    and stall_ms = max_gap_ms + hidden_ms, the longest the workload could
    have stood still in that interval, by the host's clock. Lines in guest
    clock order (across hosts: the guest's clock migrates with it)."""
    out = []
    prev = None
    for ln in sorted(lines, key=lambda x: x["t_ms"]):
        row = dict(ln, hidden_ms=None, stall_ms=None)
        if prev and prev["t_s"] is not None and ln["t_s"] is not None and ln["max_gap_ms"] is not None:
            hidden = (ln["t_s"] - prev["t_s"]) * 1000 - (ln["t_ms"] - prev["t_ms"])
            row["hidden_ms"] = round(max(0.0, hidden))
            row["stall_ms"] = ln["max_gap_ms"] + row["hidden_ms"]
        out.append(row)
        prev = ln
    return out
