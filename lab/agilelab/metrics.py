"""The experiment's figures, computed from its timelines: migration numbers
from the engine's report, impact on the VMs' work, source relief, swap."""
from .runs import entry_key


def readable(vm_rows, key):
    """(t_s, value) of the rows where `key` could be read (missing = None)."""
    return [(r["t_s"], r[key]) for r in vm_rows if r.get(key) is not None]


def migration_figures(rep):
    ok = rep.get("ok")
    return {"migration_time_s": rep.get("total_time_ms", 0) / 1000 if ok else None,
            "switchover_s": rep.get("switchover_ms", 0) / 1000 if ok else None,
            "downtime_ms": rep.get("downtime_ms") if ok else None,
            "bytes_on_wire": rep.get("bytes_sent") if ok else None,
            "migration_time_lower_bound_s": rep.get("timed_out_after_s")}


def work_impact(vm_rows, vm, t_mig, baseline_s, window_s):
    """Work the VM lost in the window, from its cumulative counter: the
    baseline rate is the counter's rise over the baseline period divided by
    its duration; lost = rate x window - the counter's rise over the window,
    in seconds of baseline work. Both periods run between readable samples
    (the last one at or before migration start ends the baseline and starts
    the window), so a sample that could not be read shortens nothing and
    counts as nothing. Returns (impact s or None, baseline ops/s or None,
    samples missing in the window)."""
    s = readable(vm_rows, f"{vm}_ops")
    missing = sum(1 for r in vm_rows if t_mig <= r["t_s"] < t_mig + window_s and r.get(f"{vm}_ops") is None)
    base = [(t, v) for t, v in s if t_mig - baseline_s <= t <= t_mig]
    after = [(t, v) for t, v in s if t_mig < t <= t_mig + window_s]
    if len(base) < 2 or not after:
        return None, None, missing
    (tb0, ob0), (tb1, ob1), (tw1, ow1) = base[0], base[-1], after[-1]
    rate = (ob1 - ob0) / (tb1 - tb0)
    if rate <= 0:
        return None, rate, missing
    lost_ops = rate * (tw1 - tb1) - (ow1 - ob1)
    return lost_ops / rate, rate, missing


def impact_figures(vm_rows, vms, t_mig, baseline_s, window_s):
    mig, others = vms[0], vms[1:]
    im, rate_m, miss_m = work_impact(vm_rows, mig, t_mig, baseline_s, window_s)
    ic = {vm: work_impact(vm_rows, vm, t_mig, baseline_s, window_s) for vm in others}
    return {"impact_migrated": im,
            "impact_colocated": sum(x for x, _, _ in ic.values())
            if ic and all(x is not None for x, _, _ in ic.values()) else None,
            "baseline_ops_per_s": {mig: rate_m, **{vm: r for vm, (_, r, _) in ic.items()}},
            "impact_colocated_per_vm": {vm: x for vm, (x, _, _) in ic.items()},
            "samples_missing_in_window": {mig: miss_m, **{vm: m for vm, (_, _, m) in ic.items()}}}


def guest_stall_figures(line_stalls, t_mig, t_end, baseline_s):
    """The migrated VM's longest stall as the guest saw it, by the host's
    clock (guestlog.stalls: memtouch's max_gap_ms plus the host time its
    clock did not see), over the lines written from migration start until
    2 s after its end (a line reports the second before it); and, for scale,
    the longest in the baseline period."""
    timed = [(ln["t_s"], ln["stall_ms"]) for ln in line_stalls if ln["t_s"] is not None and ln["stall_ms"] is not None]
    around = [v for t, v in timed if t_mig <= t <= t_end + 2.0]
    base = [v for t, v in timed if t_mig - baseline_s <= t < t_mig]
    return {"guest_downtime_ms": max(around) if around else None,
            "guest_max_stall_baseline_ms": max(base) if base else None}


def source_relief(mem_rows, t_mig, limit, hold, eps=0.05, thr=256):
    """First time >= migration start from which, for `hold` seconds, the src
    cgroup uses less than (1 - eps) of its RAM budget AND sees no swap-in (src
    major faults and global pswpin both below thr pages/s); seconds after
    migration start, or None."""
    rows = [r for r in mem_rows if "src_usage" in r]
    ok = []
    for i, r in enumerate(rows):
        if i == 0:
            ok.append(False)
            continue
        p = rows[i - 1]
        dt = max(1e-3, r["t_s"] - p["t_s"])
        maj = (r["src_pgmajfault"] - p["src_pgmajfault"]) / dt
        sin = (r["pswpin"] - p["pswpin"]) / dt
        ok.append(r["src_usage"] < (1 - eps) * limit and maj < thr and sin < thr)
    for i, r in enumerate(rows):
        if r["t_s"] < t_mig or not ok[i]:
            continue
        j, good = i, True
        while j < len(rows) and rows[j]["t_s"] < r["t_s"] + hold:
            good = good and ok[j]
            j += 1
        if good and j < len(rows):
            return max(0.0, r["t_s"] - t_mig)
    return None


def memory_figures(mem_rows, t_mig, baseline_s, window_s):
    m = {}
    rows = [r for r in mem_rows if "src_usage" in r]
    pre = [r for r in rows if t_mig - baseline_s <= r["t_s"] < t_mig]
    if pre:
        m["src_usage_before_bytes"] = sum(r["src_usage"] for r in pre) / len(pre)
        m["src_swap_before_bytes"] = pre[-1]["src_swap"]
        m["pswpin_pages_baseline"] = pre[-1]["pswpin"] - pre[0]["pswpin"]
    win = [r for r in mem_rows if t_mig <= r["t_s"] < t_mig + window_s]
    if win:
        m["pswpin_pages_window"] = win[-1]["pswpin"] - win[0]["pswpin"]
        m["pswpout_pages_window"] = win[-1]["pswpout"] - win[0]["pswpout"]
        m["src_majfaults_window"] = win[-1].get("src_pgmajfault", 0) - win[0].get("src_pgmajfault", 0)
        m["dst_peak_usage_bytes"] = max(r.get("dst_usage", 0) for r in win)
    return m


def metrics(a, res, mem_rows, vm_rows, line_stalls, vms):
    """All figures of one mode; a = the experiment's options."""
    rep = res["report"]
    t_mig = res["t_migration_start_s"]
    m = migration_figures(rep)
    m.update(impact_figures(vm_rows, vms, t_mig, a.baseline, a.window))
    m.update(guest_stall_figures(line_stalls, t_mig, res["t_migration_end_s"], a.baseline))
    m["source_relief_s"] = source_relief(mem_rows, t_mig, res["host_mem_bytes"], a.relief_hold)
    m.update(memory_figures(mem_rows, t_mig, a.baseline, a.window))
    return m


QEMU_MODES = ("qemu-precopy", "qemu-postcopy", "qemu-precopy-tuned", "qemu-hybrid")
IMPACT_RULE = ("impact verdicts: lost work is clipped at 0 (a VM that did more work than its baseline lost "
               "nothing; more work is not a lower loss to beat); agile's clipped loss is compared with the "
               "smallest clipped loss among the qemu-* modes whose migration COMPLETED (a cut-off or failed "
               "migration is no baseline); target met iff agile's <= half of it (so when the best lost "
               "nothing, agile must lose nothing too)")


def lost(impact):
    return None if impact is None else max(0.0, impact)


def impact_target(modes, key, agile_key="agile"):
    """(best completed qemu-* mode, its clipped loss, target met) for impact
    `key`, or None when agile has no figure or no qemu-* mode completed."""
    ag = lost(modes.get(agile_key, {}).get(key))
    done = [(lost(modes[q].get(key)), q) for q in QEMU_MODES
            if q in modes and modes[q].get("ok") and modes[q].get(key) is not None]
    if ag is None or not done:
        return None
    best, mode = min(done)
    return mode, best, ag <= best / 2


def targets(summary, agile_key="agile"):
    """The seed paper's targets, agile (the entry agile_key: agile on one swap store) against QEMU's modes."""
    m = summary["modes"]
    out = {}
    ag, qp = m.get(agile_key, {}), m.get("qemu-precopy", {})
    qp_time = qp.get("migration_time_s") or qp.get("migration_time_lower_bound_s")
    if ag.get("migration_time_s") and qp_time:
        r = qp_time / ag["migration_time_s"]
        out["time_ratio_qemu_precopy_over_agile"] = r
        out["time_ratio_is_lower_bound"] = not qp.get("migration_time_s")  # qemu-precopy was cut off
        out["time_target_4x_met"] = r >= 4
    # The strongest baseline: the fastest qemu-* mode whose migration completed.
    fastest = [(m[q]["migration_time_s"], q) for q in QEMU_MODES
               if q in m and m[q].get("ok") and m[q].get("migration_time_s")]
    if ag.get("migration_time_s") and fastest:
        t, mode = min(fastest)
        out["time_best_qemu_mode"] = mode
        out["time_ratio_best_qemu_over_agile"] = t / ag["migration_time_s"]
    for key, suffix in (("impact_migrated", "migrated"), ("impact_colocated", "colocated")):
        t = impact_target(m, key, agile_key)
        if t is None:
            continue
        mode, best, met = t
        out[f"impact_agile_lost_{suffix}"] = lost(ag.get(key))
        out[f"impact_best_qemu_{suffix}"] = best
        out[f"impact_best_qemu_{suffix}_mode"] = mode
        out[f"impact_target_2x_met_{suffix}"] = met
    out["impact_rule"] = IMPACT_RULE
    return out


def targets_by_store(summary):
    """{store: targets} for agile on each swap store the run had (the same qemu-* baselines for all)."""
    return {store: targets(summary, entry_key("agile", store)) for store in summary.get("stores") or []
            if entry_key("agile", store) in summary["modes"]}
