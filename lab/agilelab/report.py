"""The experiment's tables and report.md."""
import os

from .config import MIB, ROOT
from .runs import entry_key
from .stamp import stamp_lines


def fmt(v, f="{:.2f}"):
    return "-" if v is None else f.format(v)


def spread_cell(st, f="{:.2f}", scale=1.0, n_runs=1):
    """A table cell from a figure's {median, min, max, n} over n_runs runs: the median, (min..max) when more
    than one run has it, and [n/N] when only n of the N runs have the figure (e.g. the others' migrations
    were cut off). Shared by every table of the lab (experiment, --app redis)."""
    if not st or st.get("n", 0) == 0:
        return "-"
    text = fmt(st["median"] * scale, f)
    if st["n"] > 1:
        text += f" ({fmt(st['min'] * scale, f)}..{fmt(st['max'] * scale, f)})"
    if st["n"] < n_runs:
        text += f" [{st['n']}/{n_runs}]"
    return text


def cell(r, key, f="{:.2f}", scale=1.0):
    """The cell of `key` of a folded entry (aggregate.fold); a summary from before --repeat has the one value."""
    st = (r.get("metrics") or {}).get(key)
    n_runs = r.get("repeats") or 1
    if not st or n_runs <= 1:
        v = r.get(key)
        return fmt(v * scale if v is not None else None, f)
    return spread_cell(st, f, scale, n_runs)


def store_label(r):
    """The swap store an entry ran on, for the tables; '-' where the store plays no part (runs.STORE_MODES)."""
    return r.get("store") or "-"


def table(summary):
    lines = ["| mode | store | migration_time_s | switchover_s | downtime_ms (engine) | guest_downtime_ms "
             "| bytes_on_wire (MiB) | impact_migrated (s) | impact_colocated (s) | source_relief_s |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, r in summary["modes"].items():
        mt = cell(r, "migration_time_s")
        lb = (r.get("metrics") or {}).get("migration_time_lower_bound_s") or {}
        if r.get("migration_time_s") is None and r.get("migration_time_lower_bound_s"):
            mt = f"> {r['migration_time_lower_bound_s']:.0f}"
        elif lb.get("n"):
            mt += f", {lb['n']} cut off at > {lb['min']:.0f}"
        lines.append(f"| {r.get('mode') or mode} | {store_label(r)} | {mt} | {cell(r, 'switchover_s')} | "
                     f"{cell(r, 'downtime_ms', '{:.0f}')} | {cell(r, 'guest_downtime_ms', '{:.0f}')} | "
                     f"{cell(r, 'bytes_on_wire', '{:.1f}', 1 / MIB)} | "
                     f"{cell(r, 'impact_migrated', '{:.1f}')} | {cell(r, 'impact_colocated', '{:.1f}')} | "
                     f"{cell(r, 'source_relief_s', '{:.1f}')} |")
    return "\n".join(lines)


# (figure, column title, format, scale) of the stores' table: what the swap store changes in agile's run.
STORE_COLUMNS = (("resident_after_offload_bytes", "VMs resident after offload (MiB)", "{:.0f}", 1 / MIB),
                 ("offload_wait_s", "offload wait (s)", "{:.0f}", 1), ("migration_time_s", "migration (s)", "{:.2f}", 1),
                 ("downtime_ms", "downtime (ms, engine)", "{:.0f}", 1),
                 ("guest_downtime_ms", "guest downtime (ms)", "{:.0f}", 1),
                 ("bytes_on_wire", "on wire (MiB)", "{:.1f}", 1 / MIB),
                 ("impact_migrated", "impact migrated (s)", "{:.1f}", 1),
                 ("impact_colocated", "impact co-located (s)", "{:.1f}", 1),
                 ("source_relief_s", "source relief (s)", "{:.1f}", 1))


def store_table(summary):
    """agile on each swap store, one row per store (entries runs.entry_key('agile', store)); None with one
    store."""
    rows = [(k, r) for k, r in summary["modes"].items() if r.get("mode", k) == "agile" and r.get("store")]
    if len(rows) < 2:
        return None
    lines = ["| store | entry | ok runs | " + " | ".join(c[1] for c in STORE_COLUMNS) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in STORE_COLUMNS) + " |"]
    for key, r in rows:
        lines.append(f"| {r['store']} | `{key}` | {r.get('ok_runs', int(bool(r.get('ok'))))}/{r.get('repeats') or 1} | "
                     + " | ".join(cell(r, k, f, sc) for k, _, f, sc in STORE_COLUMNS) + " |")
    return "\n".join(lines)


def target_lines(t, agile):
    """The verdicts of targets(); agile = the agile entry they were taken on."""
    L = []
    if "time_ratio_qemu_precopy_over_agile" in t:
        at_least = ">= " if t.get("time_ratio_is_lower_bound") else ""
        L.append(f"* Migration time: qemu-precopy / agile = {at_least}{t['time_ratio_qemu_precopy_over_agile']:.2f}x "
                 f"(target >= 4x): **{'met' if t['time_target_4x_met'] else 'NOT met'}**.")
    if "time_ratio_best_qemu_over_agile" in t:
        L.append(f"* Migration time against the strongest completed baseline: {t['time_best_qemu_mode']} / agile = "
                 f"{t['time_ratio_best_qemu_over_agile']:.2f}x.")
    for suffix, what in (("migrated", "the migrated VM"), ("colocated", "co-located VMs")):
        if f"impact_best_qemu_{suffix}" in t:
            L.append(f"* Impact on {what}: agile lost {t[f'impact_agile_lost_{suffix}']:.1f} s "
                     f"(measured {fmt(agile.get('impact_' + suffix), '{:.1f}')} s) vs best completed qemu-* "
                     f"{t[f'impact_best_qemu_{suffix}']:.1f} s ({t[f'impact_best_qemu_{suffix}_mode']}) "
                     f"(target: <= half): **{'met' if t[f'impact_target_2x_met_{suffix}'] else 'NOT met'}**.")
        elif agile:
            L.append(f"* Impact on {what}: no verdict (no qemu-* mode completed its migration, or agile has no figure).")
    return L


def write_report(out, s):
    modes = list(s["modes"])
    c = s["config"]
    t = s.get("targets", {})
    m = s["modes"]
    n_rep = s.get("repeat") or 1
    L = [f"# Agile vs pre-copy/post-copy under memory pressure ({'short/demo' if s.get('short') else 'full'} run)", ""]
    if s.get("stamp"):
        L += stamp_lines(s["stamp"])
        L += [f"{s.get('wall_s', 0):.0f} s wall; {n_rep} run{'s' if n_rep > 1 else ''} per mode"
              + (f", interleaved ({', '.join(s.get('run_order') or [])}); tables give the median (min..max) "
                 "over the runs, [n/N] when only n of N runs have the figure; plots of timelines show run 1"
                 if n_rep > 1 else "") + ".", ""]
    else:
        L += [f"Run {s.get('started')}, {s.get('wall_s', 0):.0f} s wall. Command: `lab/agile-lab experiment"
              f"{' --short' if s.get('short') else ''} --out {os.path.relpath(out, ROOT)}`", ""]
    L += [f"Setup per mode (fresh lab each): host `src` with a RAM budget (memory cgroup) of {c['host_mem']} and "
          f"{c['swap']} swap; 3 VMs of {c['vm_memory']} each running memtouch (fills ~78% of its memory once, then "
          f"hammers a {c['hot_mib']} MiB hot set, {c['write_pct']}% writes): `mig` is migrated to `dst` "
          f"(same budget), `co1`/`co2` stay. Links {c['bandwidth']} (tc tbf){', migration capped at the same rate' if c.get('cap_bandwidth') else ''}. "
          f"Baseline {c['baseline']} s without migration, then migration, impact window {c['window']} s from "
          f"migration start. qemu-* modes: stock VMs (anonymous RAM, host swap). agile: agiled VMs with advance "
          f"offloading ({m.get('agile', {}).get('offload', 'n/a')}). precopy/postcopy: agiled VMs WITHOUT offloading "
          f"(the kernel swaps their RAM file under the cgroup limit), to separate the migration algorithm from the "
          f"advance offloading.", "",
          table(s), ""]
    st_table = store_table(s)
    if st_table:
        L += ["### The swap stores side by side (agile)", "",
              "agile's runs on each swap store (`--store`), everything else equal; the `store` column above says "
              "which store each row ran on ('-': the mode does not use the store). agile-memd: one process; "
              "redis-cluster: 3 masters + 3 replicas on the same host, every PUT acknowledged by a replica (WAIT) "
              "before the page leaves RAM (docs/redis-store.md). Per-run figures: `modes.<entry>.runs` in "
              "summary.json, each run's engine report in reports/<run>.json.", "", st_table, ""]
    L += ["Definitions: `impact_*` = work lost in the window, in seconds of the VM's own baseline throughput, "
          "from the workload's own cumulative op counter (memtouch `ops=`), read from the VM's serial console "
          "files on src and dst whatever agiled's state for the VM: (baseline rate x window - ops done in the "
          "window) / baseline rate, the baseline rate being the counter's rise over the baseline period; negative "
          "= it did more work than at its baseline rate. A sample whose consoles could not be read is missing "
          "(empty in the CSV), never zero work: the counter's next reading still includes that work. "
          "`impact_colocated` sums the two VMs left behind. `downtime_ms (engine)` is the engine's own figure "
          "(agiled's report; for qemu-* QEMU's `downtime`); `guest_downtime_ms` is the migrated VM's longest "
          "stall in its own progress, the same method for every mode: per status line, memtouch's `max_gap_ms` "
          "(longest gap between consecutive progress ticks in that second, by the guest's clock) plus the host "
          "time between that line and the previous one that the guest's clock did not see (under TCG the "
          "guest's clock stands still while QEMU has the VM stopped), the largest over the lines written from "
          "migration start until 2 s after its end (timelines/*_guest_lines.csv; the baseline period's largest "
          "per mode below, for scale: its noise floor). `source_relief_s` = time from migration "
          "start until src's cgroup stays below 95% of its budget with no swap-in (src major faults and the "
          "machine's pswpin < 256 pages/s) for 2 s; 0 means the source was already relieved when the migration "
          "started (advance offloading). migration_time/switchover/downtime/bytes are agiled's migration report.", ""]
    L += ["## Targets (seed paper)", ""]
    if n_rep > 1:
        L += ["Verdicts on the medians over the runs; a qemu-* mode is a completed baseline only if every one of "
              "its runs completed its migration.", ""]
    by_store = s.get("targets_by_store") or {}
    if len(by_store) > 1:
        for store, ts in by_store.items():
            key = entry_key("agile", store)
            L += [f"Agile on **{store}** (`{key}`):", ""] + target_lines(ts, m.get(key, {})) + [""]
    else:
        L += target_lines(t, m.get(entry_key("agile", (s.get("stores") or [None])[0]), {}))
    if t.get("impact_rule"):
        L.append(f"* Rule: {t['impact_rule']}.")
    L += ["", "## Per mode", ""]
    for mode in modes:
        r = m[mode]
        L.append(f"* **{mode}**: {'ok' if r.get('ok') else 'FAILED: ' + str(r.get('error'))}; "
                 f"src used {fmt((r.get('src_usage_before_bytes') or 0) / MIB, '{:.0f}')} MiB before migration, "
                 f"{fmt((r.get('src_swap_before_bytes') or 0) / MIB, '{:.0f}')} MiB of it in swap; "
                 f"swap-ins in the window {r.get('pswpin_pages_window', '-')} pages (baseline period: "
                 f"{r.get('pswpin_pages_baseline', '-')}); baseline ops/s "
                 + ", ".join(f"{k} {v:.0f}" for k, v in (r.get("baseline_ops_per_s") or {}).items() if v is not None)
                 + "; samples missing in the window "
                 + ", ".join(f"{k} {v}" for k, v in (r.get("samples_missing_in_window") or {}).items())
                 + f"; guest's longest stall in the baseline {fmt(r.get('guest_max_stall_baseline_ms'), '{:.0f}')} ms"
                 + f"; src eth0 sent {fmt((r.get('src_eth0_tx_bytes') or 0) / MIB, '{:.1f}')} MiB; "
                 f"VM running at dst after: {r.get('mig_at_dst_after')}, left at src: {r.get('mig_left_at_src')}.")
    L += ["", "![throughput](throughput.png)", "", "![memory](memory.png)", "", "![summary](summary.png)", ""]
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L += ["## Analysis", "", f.read()]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")
