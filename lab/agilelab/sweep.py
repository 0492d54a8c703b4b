"""agile-lab sweep: how the cost of a migration grows with the VM's size and its working set.

  lab/agile-lab sweep [--sizes 256M,512M,1G,2G] [--fractions 0.1,0.25,0.5,1.0]
                      [--modes agile,qemu-precopy,qemu-postcopy] [--bandwidth 1gbit] [--out results/sweep]

For every point (VM size x working-set fraction x mode), on a FRESH lab (up ... down): one VM `mig` on
host `src` running memtouch (size_mib = ~78% of the VM's memory, as in the experiment; hot set = fraction
x size_mib, 2% writes), on a src whose RAM (memory cgroup) holds the working set but not the whole VM
(--src-ram: by default the hot set + 32 MiB + the guest's kernel + QEMU/agiled, so every cold page lives
in swap, or in agile-memd under agile, whose --host-budget is src's RAM minus QEMU/agiled); dst gets room for the whole VM. A short baseline, one migration to dst, a few
seconds after it. Measured: migration time, bytes on the wire (the engine's report; src's eth0 counter
beside it), source relief (as the experiment: src below 95% of its RAM with no swap-in for 2 s).
The wire floor of a point is what its working set alone needs: bytes = hot set, time = that / link rate.

Output (--out, default results/sweep): summary.json (stamp, config, one entry per point), report.md
(table, slopes, what they mean), sweep_size.png (against VM size), sweep_wss.png (against working-set
fraction), timelines/<mode>_<size>_<fraction>_*.csv, reports/*.json, logs/.
A long command (a 2 GiB point takes minutes under TCG); not in CI. Needs root; lab prefix `swp`.
"""
import argparse
import json
import os
import sys
import time

from .config import DEFAULT_BUILD, MIB, ROOT
from .experiment import AGILED_OVERHEAD_MIB, GUEST_OVERHEAD_MIB, Run, options as experiment_options, workload_mib
from .report import fmt
from .runs import log, run_all
from .stamp import stamp, stamp_lines
from .util import parse_rate, parse_size

SWEEP_MODES = ("agile", "qemu-precopy", "qemu-postcopy", "precopy", "postcopy")
SWEEP_PREFIX = "swp"
# src's memory besides guest RAM: QEMU (its TCG translation cache) and agiled. Measured on this lab: a stock
# 256M VM with all its guest RAM touched held its host at 337M (81M over); an agile one at 242M with 175M
# resident (67M over). dst gets more room (QEMU_OVERHEAD_MIB + AGILED_OVERHEAD_MIB): it must take the whole VM.
SRC_OVERHEAD_MIB = 80
QEMU_OVERHEAD_MIB = 128
FIGURES = ("migration_time_s", "bytes_on_wire", "source_relief_s", "downtime_ms", "guest_downtime_ms",
           "src_eth0_tx_bytes", "migration_time_lower_bound_s")


def options(argv):
    ap = argparse.ArgumentParser(prog="agile-lab sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="256M,512M,1G,2G", help="VM memory sizes, comma-separated")
    ap.add_argument("--fractions", default="0.1,0.25,0.5,1.0",
                    help="working-set fractions (hot set / memtouch's size_mib), comma-separated")
    ap.add_argument("--modes", default="agile,qemu-precopy,qemu-postcopy", help=f"of {', '.join(SWEEP_MODES)}")
    ap.add_argument("--bandwidth", default="1gbit", help="link rate (tc tbf), also the migration cap and the floor's rate")
    ap.add_argument("--src-ram", default="wss",
                    help="src RAM: `wss` (hot set + margin + overheads: all cold pages in swap) or a fraction F of "
                         "memtouch's memory (F x size_mib + overheads, at least the hot set)")
    ap.add_argument("--write-pct", type=int, default=2, help="memtouch writes in %%")
    ap.add_argument("--baseline", type=float, default=4, help="seconds before the migration")
    ap.add_argument("--settle", type=float, default=3, help="seconds after the VM runs before measuring")
    ap.add_argument("--tail", type=float, default=5, help="seconds observed after the migration ends")
    ap.add_argument("--cutoff", type=float, default=180, help="a migration still running after this is cancelled")
    ap.add_argument("--boot-timeout", type=float, default=300)
    ap.add_argument("--budget-wait", type=float, default=300,
                    help="agile: wait at most this long for advance offloading to bring the VM within its budget "
                         "(the wait ends when it does; measured: a 2 GiB VM was still at 995M of 288M after 45 s, "
                         "within it after 149 s)")
    ap.add_argument("--out", help="results folder (default results/sweep)")
    ap.add_argument("--prefix", default=SWEEP_PREFIX)
    ap.add_argument("--build", default=DEFAULT_BUILD)
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    a.out = os.path.abspath(a.out or os.path.join(ROOT, "results", "sweep"))
    a.size_list = [s for s in a.sizes.split(",") if s]
    a.fraction_list = [float(f) for f in a.fractions.split(",") if f]
    a.mode_list = [m for m in a.modes.split(",") if m]
    for m in a.mode_list:
        if m not in SWEEP_MODES:
            ap.error(f"unknown mode {m}")
    for f in a.fraction_list:
        if not 0 < f <= 1:
            ap.error(f"working-set fraction {f} is not in (0, 1]")
    if a.src_ram != "wss" and not 0 < float(a.src_ram) <= 1:
        ap.error("--src-ram is `wss` or a fraction in (0, 1]")
    return a


def point_plan(a, size, fraction):
    """The memory plan of one point: VM, workload, hot set, src and dst RAM (MiB)."""
    vm_mib = parse_size(size) // MIB
    size_mib = workload_mib(vm_mib * MIB)
    hot_mib = max(1, int(round(fraction * size_mib)))
    margin = 32
    held = hot_mib + margin if a.src_ram == "wss" else max(hot_mib + margin, int(float(a.src_ram) * size_mib))
    # src: QEMU + agiled + the guest's kernel and initramfs (in guest RAM) + what the workload keeps resident.
    src_mib = SRC_OVERHEAD_MIB + GUEST_OVERHEAD_MIB + held
    dst_mib = QEMU_OVERHEAD_MIB + AGILED_OVERHEAD_MIB + vm_mib
    return {"vm_mib": vm_mib, "size_mib": size_mib, "hot_mib": hot_mib, "src_mib": src_mib, "dst_mib": dst_mib,
            "margin_mib": margin}


def point_options(a, plan):
    """The experiment's options for one point (its machinery runs it, with one VM)."""
    e = experiment_options(["--out", a.out, "--prefix", a.prefix, "--build", a.build, "--bandwidth", a.bandwidth,
                            "--vm-memory", f"{plan['vm_mib']}M", "--host-mem", f"{plan['src_mib']}M",
                            "--hot-mib", str(plan["hot_mib"]), "--write-pct", str(a.write_pct),
                            "--margin-mib", str(plan["margin_mib"]), "--baseline", str(a.baseline),
                            "--window", "0", "--settle", str(a.settle), "--boot-timeout", str(a.boot_timeout),
                            "--swap", f"{plan['vm_mib'] + 256}M", "--no-plots"])
    # agile: the budget for guest RAM is what src has besides QEMU and agiled (not the experiment's default,
    # which assumes three VMs share the overheads).
    e.host_budget = f"{plan['src_mib'] - SRC_OVERHEAD_MIB}M"
    e.dst_mem = f"{plan['dst_mib']}M"
    e.tail = a.tail
    e.cutoff = a.cutoff
    e.budget_wait = a.budget_wait
    return e


def size_label(size):
    return size.upper().replace("I", "").replace("B", "")


def floors(plan, rate_bps):
    wss = plan["hot_mib"] * MIB
    return {"floor_bytes": wss, "floor_s": wss * 8 / rate_bps}


def point_tag(size, fraction, mode):
    return f"{mode}_{size_label(size)}_{fraction:g}"


def run_point(a, case, tag):
    """One point on a fresh lab (runs.run_all takes it down and writes reports/<tag>.json)."""
    plan = point_plan(a, case["size"], case["fraction"])
    log(f"{tag}: VM {plan['vm_mib']}M, memtouch {plan['size_mib']}M, hot {plan['hot_mib']}M, "
        f"src RAM {plan['src_mib']}M, dst RAM {plan['dst_mib']}M")
    return Run(point_options(a, plan), vms=["mig"]).run_mode(case["mode"], tag)


def point(a, case, res, rate_bps):
    """The summary's point: the plan, its floors and the run's figures."""
    size, fraction, mode = case["size"], case["fraction"], case["mode"]
    plan = point_plan(a, size, fraction)
    pt = {"size": size, "vm_bytes": plan["vm_mib"] * MIB, "fraction": fraction, "mode": mode,
          "wss_bytes": plan["hot_mib"] * MIB, "workload_bytes": plan["size_mib"] * MIB,
          "src_ram_bytes": plan["src_mib"] * MIB, "dst_ram_bytes": plan["dst_mib"] * MIB,
          "tag": point_tag(size, fraction, mode), **floors(plan, rate_bps)}
    pt.update({"ok": bool(res.get("ok")), "error": res.get("error"), "point_wall_s": res["mode_wall_s"],
               "host_budget_bytes": res.get("host_budget_bytes"), "offload": res.get("offload"),
               "resident_after_offload_bytes": res.get("resident_after_offload_bytes"),
               "offload_wait_s": res.get("offload_wait_s"),
               "src_usage_before_bytes": res.get("src_usage_before_bytes"),
               "src_swap_before_bytes": res.get("src_swap_before_bytes")})
    pt.update({k: res.get(k) for k in FIGURES})
    log(f"{pt['tag']}: {'ok' if pt['ok'] else 'FAILED'} in {pt['point_wall_s']:.0f}s: time "
        f"{fmt(pt['migration_time_s'])} s (floor {pt['floor_s']:.2f}), wire "
        f"{fmt((pt['bytes_on_wire'] or 0) / MIB, '{:.0f}')} MiB (floor {pt['floor_bytes'] / MIB:.0f}), relief "
        f"{fmt(pt['source_relief_s'])} s")
    return pt


# ---- analysis ---------------------------------------------------------------------


def fit(xs, ys):
    """Least-squares slope and intercept of the points that have a y; None with fewer than two x values."""
    pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
    if len({x for x, _ in pts}) < 2:
        return None
    n = len(pts)
    mx = sum(x for x, _ in pts) / n
    my = sum(y for _, y in pts) / n
    sxx = sum((x - mx) ** 2 for x, _ in pts)
    slope = sum((x - mx) * (y - my) for x, y in pts) / sxx
    return slope, my - slope * mx


def slopes(points, modes, fractions, sizes_bytes):
    """Per mode and fraction: the slope of bytes on the wire (MiB per MiB of VM) and of migration time
    (s per GiB of VM) against VM size; per mode and size: the slope against the working set (MiB of wire per
    MiB of working set). The floor's slopes beside them."""
    out = {"vs_size": [], "vs_wss": []}
    by = {(p["mode"], p["fraction"], p["vm_bytes"]): p for p in points}
    for mode in modes:
        for f in fractions:
            row = [by.get((mode, f, s)) for s in sizes_bytes]
            xs = [s / MIB for s, p in zip(sizes_bytes, row) if p]
            ps = [p for p in row if p]
            b = fit(xs, [p["bytes_on_wire"] / MIB if p.get("bytes_on_wire") is not None else None for p in ps])
            t = fit([x / 1024 for x in xs], [p.get("migration_time_s") for p in ps])
            fl = fit(xs, [p["floor_bytes"] / MIB for p in ps])
            out["vs_size"].append({"mode": mode, "fraction": f, "wire_mib_per_vm_mib": b and b[0],
                                   "time_s_per_vm_gib": t and t[0], "floor_mib_per_vm_mib": fl and fl[0]})
        for s in sizes_bytes:
            ps = [by[(mode, f, s)] for f in fractions if (mode, f, s) in by]
            xs = [p["wss_bytes"] / MIB for p in ps]
            b = fit(xs, [p["bytes_on_wire"] / MIB if p.get("bytes_on_wire") is not None else None for p in ps])
            t = fit([x / 1024 for x in xs], [p.get("migration_time_s") for p in ps])
            out["vs_wss"].append({"mode": mode, "vm_bytes": s, "wire_mib_per_wss_mib": b and b[0],
                                  "wire_mib_at_zero_wss": b and b[1], "time_s_per_wss_gib": t and t[0]})
    return out


def write_report(out, s):
    c = s["config"]
    L = ["# How migration cost grows: VM size and working set, agile vs QEMU", ""]
    L += stamp_lines(s.get("stamp"))
    L += [f"{s.get('wall_s', 0):.0f} s wall, {len(s['points'])} points, one run each (fresh lab per point).", "",
          f"Per point: one VM running memtouch (~78% of its memory filled once, hot set = fraction x that, "
          f"{c['write_pct']}% writes) on `src`, whose RAM (memory cgroup) is "
          f"{'the hot set + 32 MiB + overheads (all cold pages in swap / agile-memd)' if c['src_ram'] == 'wss' else str(c['src_ram']) + ' x the workload + overheads'}; "
          f"`dst` has room for the whole VM. Links {c['bandwidth']} (tc tbf), migration capped at the same rate. "
          f"Baseline {c['baseline']} s, then one migration (cut off after {c['cutoff']:.0f} s), then {c['tail']} s. "
          "**Wire floor**: the bytes the working set alone needs (the hot set) and that / link rate: no migration "
          "that moves the working set before the VM runs at dst can send less or finish sooner (agile's cold "
          "pages do not cross this link: they stay in agile-memd and are fetched from there on demand).", "",
          "| VM | WS fraction | WS MiB | mode | migration s | floor s | MiB on wire | floor MiB | src eth0 MiB "
          "| source relief s | engine downtime ms | guest downtime ms |",
          "| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for p in s["points"]:
        mt = fmt(p.get("migration_time_s"))
        if p.get("migration_time_s") is None and p.get("migration_time_lower_bound_s"):
            mt = f"> {p['migration_time_lower_bound_s']:.0f} (cut off)"
        elif not p.get("ok"):
            mt = f"FAILED ({str(p.get('error'))[:60]})"
        if p.get("resident_after_offload_bytes") and p.get("host_budget_bytes") and \
                p["resident_after_offload_bytes"] > 1.05 * p["host_budget_bytes"]:
            mt += (f" (resident {p['resident_after_offload_bytes'] / MIB:.0f} MiB, over its "
                   f"{p['host_budget_bytes'] / MIB:.0f} MiB budget: offloading not done)")
        L.append(f"| {p['size']} | {p['fraction']:g} | {p['wss_bytes'] / MIB:.0f} | {p['mode']} | {mt} | "
                 f"{p['floor_s']:.2f} | {fmt(p['bytes_on_wire'] / MIB if p.get('bytes_on_wire') is not None else None, '{:.0f}')} | "
                 f"{p['floor_bytes'] / MIB:.0f} | "
                 f"{fmt(p['src_eth0_tx_bytes'] / MIB if p.get('src_eth0_tx_bytes') else None, '{:.0f}')} | "
                 f"{fmt(p.get('source_relief_s'), '{:.1f}')} | {fmt(p.get('downtime_ms'), '{:.0f}')} | "
                 f"{fmt(p.get('guest_downtime_ms'), '{:.0f}')} |")
    sl = s.get("slopes") or {}
    L += ["", "## Slopes", "",
          "Against VM size, at a fixed working-set fraction (least squares over the sizes swept): MiB on the wire "
          "per MiB of VM, seconds per GiB of VM; the floor's own slope is the fraction x ~0.78 (the workload's "
          "share of the VM).", "",
          "| mode | WS fraction | wire MiB / VM MiB | floor MiB / VM MiB | s / VM GiB |",
          "| --- | ---: | ---: | ---: | ---: |"]
    for r in sl.get("vs_size", []):
        L.append(f"| {r['mode']} | {r['fraction']:g} | {fmt(r['wire_mib_per_vm_mib'])} | "
                 f"{fmt(r['floor_mib_per_vm_mib'])} | {fmt(r['time_s_per_vm_gib'])} |")
    L += ["", "Against the working set, at a fixed VM size: MiB on the wire per MiB of working set (the floor's "
          "is 1) and the intercept (what is sent at a working set of 0: the part that does not depend on it).", "",
          "| mode | VM | wire MiB / WS MiB | wire MiB at WS 0 | s / WS GiB |", "| --- | ---: | ---: | ---: | ---: |"]
    for r in sl.get("vs_wss", []):
        L.append(f"| {r['mode']} | {r['vm_bytes'] // MIB}M | {fmt(r['wire_mib_per_wss_mib'])} | "
                 f"{fmt(r['wire_mib_at_zero_wss'], '{:.0f}')} | {fmt(r['time_s_per_wss_gib'])} |")
    L += ["", "## What the slopes mean", "",
          "* **agile** sends the VM's resident pages (held near the working set by advance offloading) and the "
          "page-location table; cold pages stay in agile-memd. Its bytes should follow the working set: a slope "
          "near 1 against the working set, and against VM size near the floor's (fraction x 0.78), plus a "
          "constant (device state, the guest kernel's resident pages, the table: 8 bytes per page of VM, "
          "2 MiB per GiB).",
          "* **qemu-precopy** sends every page of the VM at least once: the cold ones must first come back from "
          "the source's swap, so its bytes grow with the VM's size whatever the working set (a slope against VM "
          "size near 1 x the touched share, ~0.78 plus zero pages QEMU sends compressed), plus the hot set's "
          "dirty pages again on every round (more with a larger working set, without bound if it is dirtied "
          "faster than the link: cut off).",
          "* **qemu-postcopy** also moves every page once (pushed in the background after switchover, or faulted "
          "from the source), so its bytes follow the VM's size like pre-copy's, but with no re-sends.",
          "* **Time** follows bytes / link rate (floor: the working set / rate) as long as the source can read "
          "its pages fast enough: the stock modes also wait for the source's swap-ins, which is where they fall "
          "further behind the floor than their bytes alone explain.",
          "* **Source relief**: agile's source is within its budget before the migration starts (advance "
          "offloading), the stock modes' sources are relieved only when the VM has left (about their migration "
          "time). At a working set of 1 nothing is cold and src holds the whole VM by construction, so there is "
          "no pressure to relieve: the figure then only says whether src sat above 95% of its RAM (0: it did "
          "not).", ""]
    notes = os.path.join(out, "notes.md")
    if os.path.exists(notes):
        with open(notes) as f:
            L += ["## Analysis", "", f.read()]
    L += ["![against VM size](sweep_size.png)", "", "![against working set](sweep_wss.png)", ""]
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")


def main(argv=None):
    a = options(sys.argv[1:] if argv is None else argv)
    if os.geteuid() != 0:
        sys.exit("agile-lab sweep: needs root")
    os.makedirs(a.out, exist_ok=True)
    rate_bps = parse_rate(a.bandwidth)
    t_start = time.monotonic()
    s = {"sweep": "agile-lab sweep", "stamp": stamp(),
         "config": {"sizes": a.size_list, "fractions": a.fraction_list, "modes": a.mode_list,
                    "bandwidth": a.bandwidth, "rate_bps": rate_bps, "src_ram": a.src_ram, "write_pct": a.write_pct,
                    "baseline": a.baseline, "settle": a.settle, "tail": a.tail, "cutoff": a.cutoff,
                    "budget_wait": a.budget_wait},
         "points": []}
    # Modes innermost: the modes of one (size, fraction) run back to back, under the same machine load.
    planned = [(point_tag(size, fraction, mode), {"size": size, "fraction": fraction, "mode": mode})
               for size in a.size_list for fraction in a.fraction_list for mode in a.mode_list]
    failed = []

    def done(case, res):
        p = point(a, case, res, rate_bps)
        if not (p["ok"] or p.get("migration_time_lower_bound_s")):
            failed.append(p["tag"])
        s["points"].append(p)
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(s, f, indent=2)
    rc = run_all(a.prefix, a.out, planned, lambda case, tag: run_point(a, case, tag), done) or (1 if failed else 0)
    s["wall_s"] = time.monotonic() - t_start
    sizes_bytes = sorted({p["vm_bytes"] for p in s["points"]})
    s["slopes"] = slopes(s["points"], a.mode_list, a.fraction_list, sizes_bytes)
    with open(os.path.join(a.out, "summary.json"), "w") as f:
        json.dump(s, f, indent=2)
    if not a.no_plots and s["points"]:
        try:
            from .sweep_plots import plot_sweep
            plot_sweep(a.out, s)
        except Exception as e:
            log(f"plots failed: {e!r}")
    write_report(a.out, s)
    print(f"\nresults in {a.out} ({s['wall_s']:.0f} s): report.md, summary.json, sweep_size.png, sweep_wss.png")
    return rc
