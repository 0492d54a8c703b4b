"""The experiment's figures (matplotlib): throughput.png, memory.png,
summary.png, from a results folder's summary.json and timelines/*.csv."""
import csv
import json
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import MIB  # noqa: E402
from .report import fmt  # noqa: E402


def load_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None, "None") else None) for k, v in r.items()} for r in rows]


def first_run(r):
    """The figures of a mode's first run (its timelines are the ones plotted): over repeated runs the entry's
    own fields are medians; a summary from before --repeat has the one run's figures."""
    runs = r.get("runs")
    return {**runs[0], "n_runs": len(runs)} if runs else r


def run_label(mode, r):
    return f"{mode} (run 1 of {r['n_runs']})" if r.get("n_runs", 1) > 1 else mode


def mode_panels(out, s, modes, kind):
    """A figure with one panel per mode, and (ax, mode, summary, rows, t_migration_start) for each mode that
    has a `kind` timeline; panels without one are titled as such."""
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 2.4 * len(modes) + 0.6), sharex=True, squeeze=False)
    panels = []
    for ax, mode in zip(axes[:, 0], modes):
        r = first_run(s["modes"][mode])
        rows = load_csv(os.path.join(out, "timelines", f"{r.get('timelines') or mode}_{kind}.csv"))
        t_mig = r.get("t_migration_start_s")
        if not rows or t_mig is None:
            ax.set_title(f"{mode}: no data ({r.get('error')})", fontsize=9)
            continue
        panels.append((ax, mode, r, rows, t_mig))
    return fig, axes, panels


def save(fig, out, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=90)
    plt.close(fig)


def plot_throughput(out, s, modes):
    fig, axes, panels = mode_panels(out, s, modes, "throughput")
    for ax, mode, r, rows, t_mig in panels:
        base = r.get("baseline_ops_per_s") or {}
        for vm, color in (("mig", "tab:red"), ("co1", "tab:blue"), ("co2", "tab:green")):
            xs, ys = [], []
            b = base.get(vm) or 0
            for row in rows:
                v = row.get(f"{vm}_ops_per_s")
                xs.append(row["t_s"] - t_mig)
                # A missing sample is a gap in the line, not a drop to zero.
                ys.append(100.0 * v / b if v is not None and b else float("nan"))
            label = {"mig": "migrated VM", "co1": "co-located 1", "co2": "co-located 2"}[vm]
            ax.plot(xs, ys, color=color, lw=1.4 if vm == "mig" else 1.0, label=label)
        ax.axvline(0, color="k", ls="--", lw=0.8)
        if r.get("switchover_s") is not None:
            ax.axvline(r["switchover_s"], color="tab:orange", ls=":", lw=1)
        if r.get("migration_time_s") is not None:
            ax.axvline(r["migration_time_s"], color="k", ls=":", lw=1)
        ax.axhline(100, color="grey", lw=0.5)
        ax.set_ylabel("% of baseline")
        ax.set_ylim(0, max(200, ax.get_ylim()[1] if ax.get_ylim()[1] < 400 else 400))
        ax.set_title(f"{run_label(mode, r)}: migration {fmt(r.get('migration_time_s'))} s, impact migrated "
                     f"{fmt(r.get('impact_migrated'), '{:.1f}')} s, co-located {fmt(r.get('impact_colocated'), '{:.1f}')} s"
                     " of baseline work lost", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("seconds since migration start (dashed: start, orange: switchover, dotted: end)")
    fig.suptitle("memtouch work rate (from its cumulative op counter) relative to each VM's no-migration baseline "
                 "(1 s samples; gaps: console unreadable)", fontsize=10)
    save(fig, out, "throughput.png")


def plot_memory(out, s, modes):
    fig, axes, panels = mode_panels(out, s, modes, "memory")
    for ax, mode, r, rows, t_mig in panels:
        xs = [row["t_s"] - t_mig for row in rows]
        for key, color, label in (("src_usage", "tab:red", "src memory"), ("src_swap", "tab:purple", "src swap"),
                                  ("dst_usage", "tab:blue", "dst memory"), ("dst_swap", "tab:cyan", "dst swap"),
                                  ("memd_usage", "tab:olive", "memd (swap store)")):
            ax.plot(xs, [(row.get(key) or 0) / MIB for row in rows], color=color, label=label, lw=1.1)
        lim = (r.get("host_mem_bytes") or 0) / MIB
        if lim:
            ax.axhline(lim, color="k", lw=0.8, ls="--")
        ax.axvline(0, color="k", ls="--", lw=0.8)
        if r.get("source_relief_s") is not None:
            ax.axvline(r["source_relief_s"], color="tab:green", lw=1.2)
        ax2 = ax.twinx()
        sin = [0.0]
        for a, b in zip(rows, rows[1:]):
            dt = max(1e-3, b["t_s"] - a["t_s"])
            sin.append((b["pswpin"] - a["pswpin"]) * 4096 / MIB / dt)
        ax2.fill_between(xs, sin, color="tab:grey", alpha=0.3, lw=0)
        ax2.set_ylabel("swap-in MiB/s", fontsize=8)
        ax.set_ylabel("MiB")
        ax.set_title(f"{run_label(mode, r)}: source relieved {fmt(r.get('source_relief_s'), '{:.1f}')} s after migration start "
                     f"(green); dashed: RAM budget; grey: swap-in rate (machine)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel("seconds since migration start")
    fig.suptitle("memory use and swap of the hosts (memory cgroups), sampled every 250 ms", fontsize=11)
    save(fig, out, "memory.png")


def plot_summary(out, s, modes):
    n = len(modes)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    for ax, (key, title, scale) in zip(axes, (("migration_time_s", "migration time (s)", 1),
                                              ("impact_migrated", "impact, migrated VM (s lost)", 1),
                                              ("impact_colocated", "impact, co-located (s lost)", 1),
                                              ("bytes_on_wire", "bytes on wire (MiB)", 1 / MIB))):
        vals = [(s["modes"][m].get(key) or 0) * scale for m in modes]
        # Over repeated runs: bar = median, error bar = min..max.
        lo, hi = [], []
        for m, v in zip(modes, vals):
            st = (s["modes"][m].get("metrics") or {}).get(key) or {}
            lo.append(v - st["min"] * scale if st.get("n", 0) > 1 else 0)
            hi.append(st["max"] * scale - v if st.get("n", 0) > 1 else 0)
        ax.bar(range(n), vals, color=["tab:green" if m == "agile" else "tab:grey" for m in modes],
               yerr=[lo, hi] if any(lo) or any(hi) else None, capsize=4, ecolor="k")
        ax.set_xticks(range(n))
        ax.set_xticklabels(modes, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    reps = max((s["modes"][m].get("repeats") or 1) for m in modes) if modes else 1
    if reps > 1:
        fig.suptitle(f"median of {reps} runs per mode; error bars: min to max", fontsize=9)
    save(fig, out, "summary.png")


def plot_all(out):
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    modes = list(s["modes"])
    plot_throughput(out, s, modes)
    plot_memory(out, s, modes)
    plot_summary(out, s, modes)
