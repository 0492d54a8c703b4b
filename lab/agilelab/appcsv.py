"""The application run's figures from agile-loadgen's CSV (tools/loadgen:
one row per --interval-ms, `t_ms,ops,ops_per_s,p50_us,p99_us,errors`, t_ms =
the interval's end since the client started). Pure: no lab, no processes, so
tests/lab_appcsv_test.py checks it on synthetic CSV with known answers.

Rules (report.md repeats them):
* Interval i covers (i x I, (i + 1) x I] ms of the client's clock (I =
  --interval-ms); a row is placed by its t_ms. An interval with no row, or a
  row that does not parse, is MISSING: the client could not take that sample.
  A missing interval is not zero: it is left out of throughput (numerator and
  denominator) and ends a blackout run instead of extending it (a blackout is
  never made longer by data we do not have); each window counts its missing
  intervals.
* An interval belongs to the window that holds its midpoint.
* Throughput of a window = completed ops in its present intervals / their
  total length.
* p99 of a window = the ops-weighted 99th percentile of its intervals' p99s
  (the CSV has no per-request latencies; this is >= the true 98th percentile
  of the window's requests, and a request that waited out a stall is counted
  in the interval where it completed, with the stall in its latency).
  Intervals with no ops weigh nothing.
* Blackout of a window = the longest run of consecutive present intervals
  with zero completed ops, in ms (run length x I).
"""
import csv
import io

FIELDS = ("t_ms", "ops", "ops_per_s", "p50_us", "p99_us", "errors")


def parse(text):
    """Rows of a loadgen CSV (text) as dicts of numbers; a row that does not
    parse is dropped (it becomes a missing interval)."""
    rows = []
    for r in csv.DictReader(io.StringIO(text)):
        try:
            rows.append({"t_ms": int(r["t_ms"]), "ops": int(r["ops"]), "p99_us": int(r["p99_us"]),
                         "errors": int(r["errors"])})
        except (KeyError, TypeError, ValueError):
            continue
    return rows


def slots(rows, interval_ms, duration_ms):
    """[(start_ms, end_ms, row or None)] for every interval of the run, in
    order: interval i ends at min((i + 1) x I, duration); None = missing."""
    by_index = {}
    n = -(-duration_ms // interval_ms)
    for k, r in enumerate(rows):
        i = max(0, (r["t_ms"] - 1) // interval_ms)
        if i in by_index and k == len(rows) - 1:
            # loadgen's last row, stopped by SIGTERM just past an interval's end, is a partial interval whose
            # t_ms (floored to the ms) can equal the previous row's: it is the run's last interval.
            i = n - 1
        by_index.setdefault(i, r)
    return [(i * interval_ms, min((i + 1) * interval_ms, duration_ms), by_index.get(i)) for i in range(n)]


def in_window(slot, window):
    start, end = window
    mid = (slot[0] + slot[1]) / 2
    return start <= mid < end


def weighted_percentile(pairs, q):
    """The smallest value v of (value, weight) pairs such that the weight at or below v is >= q of all."""
    pairs = sorted((v, w) for v, w in pairs if w > 0)
    total = sum(w for _, w in pairs)
    if total <= 0:
        return None
    acc = 0
    for v, w in pairs:
        acc += w
        if acc >= q * total:
            return v
    return pairs[-1][0]


def longest_zero_run_ms(window_slots):
    best = cur = 0
    for start, end, r in window_slots:
        if r is not None and r["ops"] == 0:
            cur += end - start
            best = max(best, cur)
        else:
            cur = 0  # ops completed, or missing: the run ends
    return best


def window_figures(all_slots, window):
    """Throughput (ops/s), p99 (us), blackout (ms), intervals and missing ones, errors, in one window."""
    ws = [s for s in all_slots if in_window(s, window)]
    present = [s for s in ws if s[2] is not None]
    span_ms = sum(e - b for b, e, _ in present)
    ops = sum(r["ops"] for _, _, r in present)
    return {"ops_per_s": ops * 1000.0 / span_ms if span_ms > 0 else None,
            "p99_us": weighted_percentile([(r["p99_us"], r["ops"]) for _, _, r in present], 0.99),
            "blackout_ms": longest_zero_run_ms(ws) if present else None,
            "intervals": len(ws), "missing": len(ws) - len(present),
            "errors": sum(r["errors"] for _, _, r in present)}


def app_figures(text, interval_ms, duration_ms, t_mig_ms, t_end_ms, warmup_ms=1000):
    """The per-run figures of the application run from the client's CSV, on
    the client's clock: before = [warmup, migration start), during =
    [migration start, migration end), after = [migration end, end of load);
    blackout_ms over during + after (a switchover stall may straddle the
    end of migration), blackout_before_ms for scale (the noise floor)."""
    s = slots(parse(text), interval_ms, duration_ms)
    before = window_figures(s, (warmup_ms, t_mig_ms))
    during = window_figures(s, (t_mig_ms, t_end_ms))
    after = window_figures(s, (t_end_ms, duration_ms))
    both = window_figures(s, (t_mig_ms, duration_ms))
    return {"ops_before": before["ops_per_s"], "ops_during": during["ops_per_s"], "ops_after": after["ops_per_s"],
            "p99_before_us": before["p99_us"], "p99_during_us": during["p99_us"], "p99_after_us": after["p99_us"],
            "blackout_ms": both["blackout_ms"], "blackout_before_ms": before["blackout_ms"],
            "errors_from_migration": both["errors"],
            "intervals_missing": sum(1 for x in s if x[2] is None), "intervals": len(s),
            "intervals_missing_from_migration": both["missing"]}
