#!/usr/bin/python3
"""Plots and report.md for an `agile-lab experiment` results folder.

  /usr/bin/python3 lab/plot.py RESULTS_DIR

Reads summary.json and timelines/*.csv; writes throughput.png (memtouch ops/s of
the migrated VM and the co-located VMs per mode, relative to each VM's baseline),
memory.png (src and dst memory use and swap per mode, with swap-in activity),
summary.png (bars) and report.md. Needs matplotlib (Debian: python3-matplotlib).
"""
import csv, json, os, sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from experiment import table, vm_sample  # noqa: E402

MIB = 1 << 20


def load_csv(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        rows = list(csv.DictReader(f))
    out = []
    for r in rows:
        out.append({k: (float(v) if v not in ("", None, "None") else None) for k, v in r.items()})
    return out


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def mode_panels(out, s, modes, kind):
    """A figure with one panel per mode, and (ax, mode, summary, rows, t_migration_start) for each mode that
    has a `kind` timeline; panels without one are titled as such."""
    fig, axes = plt.subplots(len(modes), 1, figsize=(10, 2.4 * len(modes) + 0.6), sharex=True, squeeze=False)
    panels = []
    for ax, mode in zip(axes[:, 0], modes):
        r = s["modes"][mode]
        rows = load_csv(os.path.join(out, "timelines", f"{mode}_{kind}.csv"))
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


def main():
    out = sys.argv[1]
    s = json.load(open(os.path.join(out, "summary.json")))
    modes = list(s["modes"])
    n = len(modes)
    # ---- throughput ---------------------------------------------------------------
    fig, axes, panels = mode_panels(out, s, modes, "throughput")
    for ax, mode, r, rows, t_mig in panels:
        sw = t_mig + r["switchover_s"] if r.get("switchover_s") is not None else None
        base = r.get("baseline_ops_per_s") or {}
        for vm, color in (("mig", "tab:red"), ("co1", "tab:blue"), ("co2", "tab:green")):
            xs, ys = [], []
            for row in rows:
                v = vm_sample(row, vm, sw)
                b = base.get(vm) or 0
                xs.append(row["t_s"] - t_mig)
                ys.append(100.0 * (v or 0) / b if b else 0)
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
        ax.set_title(f"{mode}: migration {fmt(r.get('migration_time_s'))} s, impact migrated "
                     f"{fmt(r.get('impact_migrated'), '{:.1f}')} s, co-located {fmt(r.get('impact_colocated'), '{:.1f}')} s"
                     " of baseline work lost", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=8, ncol=3)
    axes[-1, 0].set_xlabel("seconds since migration start (dashed: start, orange: switchover, dotted: end)")
    fig.suptitle("memtouch throughput relative to each VM's no-migration baseline (1 s samples)", fontsize=11)
    save(fig, out, "throughput.png")
    # ---- memory ---------------------------------------------------------------------
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
        ax.set_title(f"{mode}: source relieved {fmt(r.get('source_relief_s'), '{:.1f}')} s after migration start "
                     f"(green); dashed: RAM budget; grey: swap-in rate (machine)", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(loc="upper right", fontsize=7, ncol=5)
    axes[-1, 0].set_xlabel("seconds since migration start")
    fig.suptitle("memory use and swap of the hosts (memory cgroups), sampled every 250 ms", fontsize=11)
    save(fig, out, "memory.png")
    # ---- bars -------------------------------------------------------------------------
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.2))
    for ax, (key, title, scale) in zip(axes, (("migration_time_s", "migration time (s)", 1),
                                              ("impact_migrated", "impact, migrated VM (s lost)", 1),
                                              ("impact_colocated", "impact, co-located (s lost)", 1),
                                              ("bytes_on_wire", "bytes on wire (MiB)", 1 / MIB))):
        vals = [(s["modes"][m].get(key) or 0) * scale for m in modes]
        ax.bar(range(n), vals, color=["tab:green" if m == "agile" else "tab:grey" for m in modes])
        ax.set_xticks(range(n))
        ax.set_xticklabels(modes, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    save(fig, out, "summary.png")
    write_report(out, s, modes)


def write_report(out, s, modes):
    c = s["config"]
    t = s.get("targets", {})
    m = s["modes"]
    L = [f"# Agile vs pre-copy/post-copy under memory pressure ({'short/demo' if s.get('short') else 'full'} run)", "",
         f"Run {s.get('started')}, {s.get('wall_s', 0):.0f} s wall. Command: `lab/agile-lab experiment"
         f"{' --short' if s.get('short') else ''} --out {os.path.relpath(out, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}`", "",
         f"Setup per mode (fresh lab each): host `src` with a RAM budget (memory cgroup) of {c['host_mem']} and "
         f"{c['swap']} swap; 3 VMs of {c['vm_memory']} each running memtouch (fills ~78% of its memory once, then "
         f"hammers a {c['hot_mib']} MiB hot set, {c['write_pct']}% writes): `mig` is migrated to `dst` "
         f"(same budget), `co1`/`co2` stay. Links {c['bandwidth']} (tc tbf){', migration capped at the same rate' if c.get('cap_bandwidth') else ''}. "
         f"Baseline {c['baseline']} s without migration, then migration, impact window {c['window']} s from "
         f"migration start. qemu-* modes: stock VMs (anonymous RAM, host swap). agile: agiled VMs with advance "
         f"offloading ({m.get('agile', {}).get('offload', 'n/a')}). precopy/postcopy: agiled VMs WITHOUT offloading "
         f"(the kernel swaps their RAM file under the cgroup limit), to separate the migration algorithm from the "
         f"advance offloading.", "",
         table(s), "",
         "Definitions: `impact_*` = work lost in the window, in seconds of the VM's own baseline throughput "
         "(sum over the window of (baseline - measured ops/s) / baseline; negative = it ran faster than its "
         "baseline); `impact_colocated` sums the two VMs left behind. `source_relief_s` = time from migration "
         "start until src's cgroup stays below 95% of its budget with no swap-in (src major faults and the "
         "machine's pswpin < 256 pages/s) for 2 s; 0 means the source was already relieved when the migration "
         "started (advance offloading). migration_time/switchover/downtime/bytes are agiled's migration report.", ""]
    L += ["## Targets (seed paper)", ""]
    if "time_ratio_qemu_precopy_over_agile" in t:
        at_least = ">= " if t.get("time_ratio_is_lower_bound") else ""
        L.append(f"* Migration time: qemu-precopy / agile = {at_least}{t['time_ratio_qemu_precopy_over_agile']:.2f}x "
                 f"(target >= 4x): **{'met' if t['time_target_4x_met'] else 'NOT met'}**.")
    if "impact_best_qemu_migrated" in t:
        L.append(f"* Impact on the migrated VM: agile {fmt(m['agile'].get('impact_migrated'), '{:.1f}')} s vs best "
                 f"qemu-* {t['impact_best_qemu_migrated']:.1f} s (target: <= half): "
                 f"**{'met' if t['impact_target_2x_met_migrated'] else 'NOT met'}**.")
    if "impact_best_qemu_colocated" in t:
        L.append(f"* Impact on co-located VMs: agile {fmt(m['agile'].get('impact_colocated'), '{:.1f}')} s vs best "
                 f"qemu-* {t['impact_best_qemu_colocated']:.1f} s (target: <= half): "
                 f"**{'met' if t['impact_target_2x_met_colocated'] else 'NOT met'}**.")
    L += ["", "## Per mode", ""]
    for mode in modes:
        r = m[mode]
        L.append(f"* **{mode}**: {'ok' if r.get('ok') else 'FAILED: ' + str(r.get('error'))}; "
                 f"src used {fmt((r.get('src_usage_before_bytes') or 0) / MIB, '{:.0f}')} MiB before migration, "
                 f"{fmt((r.get('src_swap_before_bytes') or 0) / MIB, '{:.0f}')} MiB of it in swap; "
                 f"swap-ins in the window {r.get('pswpin_pages_window', '-')} pages (baseline period: "
                 f"{r.get('pswpin_pages_baseline', '-')}); baseline ops/s "
                 + ", ".join(f"{k} {v:.0f}" for k, v in (r.get("baseline_ops_per_s") or {}).items() if v is not None)
                 + f"; src eth0 sent {fmt((r.get('src_eth0_tx_bytes') or 0) / MIB, '{:.1f}')} MiB; "
                 f"VM running at dst after: {r.get('mig_at_dst_after')}, left at src: {r.get('mig_left_at_src')}.")
    L += ["", "![throughput](throughput.png)", "", "![memory](memory.png)", "", "![summary](summary.png)", ""]
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        L += ["## Analysis", "", open(notes).read()]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")


if __name__ == "__main__":
    main()
