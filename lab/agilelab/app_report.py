"""The application run's report.md (table, the rule behind every figure) and
app.png (throughput per window with min-max bars; run 1's client timeline)."""
import os

from .appcsv import parse
from .config import MIB
from .report import spread_cell, store_label
from .stamp import stamp_lines

# (metric, column title, format, scale)
COLUMNS = (("ops_before", "ops/s before", "{:.0f}", 1), ("ops_during", "ops/s during", "{:.0f}", 1),
           ("ops_after", "ops/s after", "{:.0f}", 1), ("p99_during_us", "p99 during (ms)", "{:.1f}", 1e-3),
           ("p99_after_us", "p99 after (ms)", "{:.1f}", 1e-3), ("blackout_ms", "longest blackout (ms)", "{:.0f}", 1),
           ("blackout_before_ms", "blackout before (ms, noise)", "{:.0f}", 1),
           ("migration_time_s", "migration (s)", "{:.2f}", 1), ("downtime_ms", "engine downtime (ms)", "{:.0f}", 1),
           ("bytes_on_wire", "on wire (MiB)", "{:.0f}", 1 / MIB),
           ("intervals_missing", "missing intervals", "{:.0f}", 1))

RULES = """\
How each figure is made (lab/agilelab/appcsv.py; the client's CSV is `loadgen/<run>.csv`):

* All figures come from agile-loadgen's own CSV on the client host (one row per interval of
  `interval_ms`, ops completed in it and their p99), on the client's clock. Migration start and
  end are the lab's times of `agilectl migrate` being called and returning, shifted by the time
  loadgen was launched (spawned directly into the client's namespace: the shift is off by at
  most a fork+exec, a few ms).
* **Windows**: before = from 1 s after the load starts (connection set-up) to migration start;
  during = migration start to end; after = migration end to the end of the load (at least
  `after` s). An interval belongs to the window that holds its midpoint.
* **Missing is not zero**: an interval with no row in the CSV (or a row that does not parse) is
  missing. It is left out of throughput (ops and time) and ends a blackout run rather than
  extending it; `missing intervals` counts them over the whole run.
* **ops/s** of a window = completed ops in its present intervals / their total length.
* **p99** of a window = the ops-weighted 99th percentile of its intervals' p99s (the CSV has no
  per-request latencies; this is at least the window's true 98th percentile). Requests stuck in a
  stall complete after it, so the stall shows in their latency.
* **Longest blackout** = the longest run of consecutive present intervals with zero completed ops,
  from migration start to the end of the load (a switchover stall may straddle migration end), in
  ms = run length x `interval_ms`. `blackout before` is the same over the before window: the noise
  floor of this shared machine (TCG guests, 2 cores), not a migration effect.
* **engine downtime** is the migration engine's own figure (agiled's report), beside it for
  comparison; migration time and bytes on the wire likewise.
* Over repeats, cells give the median (min..max) over the runs that have the figure, [n/N] when
  only n of N runs have it (a migration cut off at the time limit has no migration time).
"""


def app_table(s):
    lines = ["| mode | store | ok runs | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in COLUMNS) + " |"]
    for mode, m in s["app"].items():
        n = m.get("repeats") or 1
        cells = [spread_cell(m.get(k), f, sc, n) for k, _, f, sc in COLUMNS]
        if m.get("migration_time_lower_bound_s") and not (m.get("migration_time_s") or {}).get("n"):
            cells[7] = f"> {m['migration_time_lower_bound_s']:.0f} (cut off)"
        lines.append(f"| {m.get('mode') or mode} | {store_label(m)} | {m.get('ok_runs', 0)}/{n} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_app_report(out, s, plots=True):
    c = s["config"]
    n_rep = s.get("repeat") or 1
    L = ["# Redis under migration: what the client sees", ""]
    L += stamp_lines(s.get("stamp"))
    if (s.get("stamp") or {}).get("reanalyzed"):
        L += [f"Figures recomputed from the run's own files (`--reanalyze`) on {s['stamp']['reanalyzed']}.", ""]
    L += [f"{s.get('wall_s', 0):.0f} s wall; {n_rep} run{'s' if n_rep > 1 else ''} per mode, in the order "
          f"{', '.join(s.get('run_order') or [])}.", "",
          f"Setup: src RAM {c['host_mem']} (memory cgroup) + {c['swap']} swap, links {c['bandwidth']}; VMs of "
          f"{c['vm_memory']}: `mig` runs redis ({c['redis_keys']} keys x {c['value_bytes']} B)"
          f"{' in the disk-booted Debian guest' if c.get('guest') == 'disk' else ''} and is migrated, "
          f"`co1`, `co2` run memtouch (hot {c['hot_mib']} MiB, {c['write_pct']}% writes) and stay; stock VMs "
          f"for the qemu-* modes. Client: agile-loadgen, {c['connections']} connections x pipeline "
          f"{c['pipeline']}, 90% GET, every {c['interval_ms']} ms; {c['baseline']} s of load before the "
          f"migration, at least {c['after']} s after it (window {c['window']} s from its start). Swap store: "
          f"{' and '.join(s.get('stores') or ['memd'])} (column `store`; '-': the mode does not use the store).", "",
          app_table(s), ""]
    failed = {mode: m["runs"][0].get("error") for mode, m in s["app"].items()
              if m.get("ok_runs", 0) < (m.get("repeats") or 1) and m.get("runs")}
    if failed:
        L += ["Runs not ok (first error): " + "; ".join(f"{k}: {v}" for k, v in failed.items()), ""]
    crashed = [f"{r.get('timelines')}: {r['guest_crash']}" for m in s["app"].values() for r in m.get("runs", [])
               if r.get("guest_crash")]
    if crashed:
        L += ["**The migrated guest crashed** (kernel oops/panic on its console; the client's figures after it "
              "measure a dead server): " + "; ".join(crashed), ""]
    L += [RULES]
    if plots and plot_app(out, s):
        L += ["", "![throughput per window and the client's timeline](app.png)"]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    return app_table(s)


def timeline(path, interval_ms, bucket_ms=100):
    """(t_s, ops/s) of a loadgen CSV summed into bucket_ms buckets (readable at plot scale)."""
    try:
        with open(path) as f:
            rows = parse(f.read())
    except OSError:
        return [], []
    agg = {}
    for r in rows:
        b = (r["t_ms"] - 1) // bucket_ms
        agg[b] = agg.get(b, 0) + r["ops"]
    ts = sorted(agg)
    return [(b + 1) * bucket_ms / 1000 for b in ts], [agg[b] * 1000 / bucket_ms for b in ts]


def plot_app(out, s):
    """app.png; False (and no figure) without matplotlib or data: the numbers are in summary.json anyway."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    modes = [m for m, v in s["app"].items() if v.get("runs") and v["runs"][0].get("csv")]
    if not modes:
        return False
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8))
    width = 0.8 / 3
    for j, (k, label) in enumerate((("ops_before", "before"), ("ops_during", "during"), ("ops_after", "after"))):
        med, lo, hi = [], [], []
        for mode in modes:
            st = s["app"][mode].get(k) or {}
            v = st.get("median")
            med.append(v or 0)
            lo.append((v - st["min"]) if v is not None else 0)
            hi.append((st["max"] - v) if v is not None else 0)
        ax1.bar([i + (j - 1) * width for i in range(len(modes))], med, width, yerr=[lo, hi], capsize=3, label=label)
    ax1.set_xticks(range(len(modes)))
    ax1.set_xticklabels(modes)
    ax1.set_ylabel("redis ops/s (client)")
    ax1.legend()
    ax1.set_title("client throughput per window: median, min-max bars")
    for mode in modes:
        r1 = s["app"][mode]["runs"][0]
        if not r1.get("csv"):
            continue
        t, v = timeline(os.path.join(out, r1["csv"]), s["config"]["interval_ms"])
        line, = ax2.plot(t, v, label=mode, linewidth=0.8)
        for key in ("t_migration_start_ms", "t_migration_end_ms"):
            if r1.get(key) is not None:
                ax2.axvline(r1[key] / 1000, color=line.get_color(), linestyle=":", linewidth=0.8)
    ax2.set_xlabel("s since the client started (dotted: migration start, end)")
    ax2.set_ylabel("ops/s (100 ms buckets)")
    ax2.set_title("run 1 of each mode")
    ax2.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "app.png"), dpi=100)
    plt.close(fig)
    return True
