"""The experiment's figures, computed from its timelines: migration numbers
from the engine's report, impact on the VMs' work, source relief, swap."""


def vm_sample(row, vm, switchover_abs):
    """ops/s of `vm` in a throughput row: the migrated VM counts at src until switchover, at dst after."""
    if vm != "mig":
        return row.get(f"{vm}@src")
    return row.get("mig@dst") if switchover_abs is not None and row["t_s"] >= switchover_abs else row.get("mig@src")


def migration_figures(rep):
    ok = rep.get("ok")
    return {"migration_time_s": rep.get("total_time_ms", 0) / 1000 if ok else None,
            "switchover_s": rep.get("switchover_ms", 0) / 1000 if ok else None,
            "downtime_ms": rep.get("downtime_ms") if ok else None,
            "bytes_on_wire": rep.get("bytes_sent") if ok else None,
            "migration_time_lower_bound_s": rep.get("timed_out_after_s")}


def impact(vm_rows, vm, t_mig, sw_abs, baseline_s, window_s):
    """(seconds of baseline work lost in the window, baseline ops/s)."""
    s = [(r["t_s"], vm_sample(r, vm, sw_abs) or 0) for r in vm_rows]
    base = [v for t, v in s if t_mig - baseline_s <= t < t_mig]
    rate = sum(base) / len(base) if base else 0
    win = [(t, v) for t, v in s if t_mig <= t < t_mig + window_s]
    if not rate or not win:
        return None, rate
    dt = 1.0  # one sample per second
    lost_ops = sum((rate - v) * dt for _, v in win)
    return lost_ops / rate, rate


def impact_figures(vm_rows, vms, t_mig, sw_abs, baseline_s, window_s):
    mig, others = vms[0], vms[1:]
    im, rate_m = impact(vm_rows, mig, t_mig, sw_abs, baseline_s, window_s)
    ic = [impact(vm_rows, vm, t_mig, sw_abs, baseline_s, window_s) for vm in others]
    return {"impact_migrated": im,
            "impact_colocated": sum(x for x, _ in ic) if all(x is not None for x, _ in ic) else None,
            "baseline_ops_per_s": {mig: rate_m, **{vm: r for vm, (_, r) in zip(others, ic)}},
            "impact_colocated_per_vm": {vm: x for vm, (x, _) in zip(others, ic)}}


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


def metrics(a, res, mem_rows, vm_rows, vms):
    """All figures of one mode; a = the experiment's options."""
    rep = res["report"]
    t_mig = res["t_migration_start_s"]
    sw_abs = t_mig + rep.get("switchover_ms", 0) / 1000 if rep.get("ok") else None
    m = migration_figures(rep)
    m.update(impact_figures(vm_rows, vms, t_mig, sw_abs, a.baseline, a.window))
    m["source_relief_s"] = source_relief(mem_rows, t_mig, res["host_mem_bytes"], a.relief_hold)
    m.update(memory_figures(mem_rows, t_mig, a.baseline, a.window))
    return m


def targets(summary):
    """The seed paper's targets, agile against QEMU's modes."""
    m = summary["modes"]
    out = {}
    ag, qp, qpo = m.get("agile", {}), m.get("qemu-precopy", {}), m.get("qemu-postcopy", {})
    qp_time = qp.get("migration_time_s") or qp.get("migration_time_lower_bound_s")
    if ag.get("migration_time_s") and qp_time:
        r = qp_time / ag["migration_time_s"]
        out["time_ratio_qemu_precopy_over_agile"] = r
        out["time_ratio_is_lower_bound"] = not qp.get("migration_time_s")  # qemu-precopy was cut off
        out["time_target_4x_met"] = r >= 4
    best = [x.get("impact_migrated", None) for x in (qp, qpo)]
    best = [x for x in best if x is not None]
    if ag.get("impact_migrated") is not None and best:
        b = min(best)
        out["impact_best_qemu_migrated"] = b
        out["impact_target_2x_met_migrated"] = (ag["impact_migrated"] <= b / 2) if b > 0 else False
    bc = [x.get("impact_colocated") for x in (qp, qpo) if x.get("impact_colocated") is not None]
    if ag.get("impact_colocated") is not None and bc:
        b = min(bc)
        out["impact_best_qemu_colocated"] = b
        out["impact_target_2x_met_colocated"] = (ag["impact_colocated"] <= b / 2) if b > 0 else False
    return out
