"""The sweep's figures (matplotlib): sweep_size.png (against VM size, one panel per working-set fraction
and measure) and sweep_wss.png (against the working set, one panel per VM size and measure), with the wire
floor (bytes = the working set, time = that / link rate) drawn."""
import os

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import MIB  # noqa: E402

COLORS = {"agile": "tab:green", "qemu-precopy": "tab:red", "qemu-postcopy": "tab:blue", "precopy": "tab:orange",
          "postcopy": "tab:purple"}
# (key, axis label, scale, the floor's key or None)
MEASURES = (("migration_time_s", "migration time (s)", 1.0, "floor_s"),
            ("bytes_on_wire", "bytes on the wire (MiB)", 1.0 / MIB, "floor_bytes"),
            ("source_relief_s", "source relief (s after migration start)", 1.0, None))


def value(p, key, scale):
    """A point's figure; a cut-off migration's time is its lower bound (drawn hollow)."""
    v = p.get(key)
    if v is None and key == "migration_time_s" and p.get("migration_time_lower_bound_s"):
        return p["migration_time_lower_bound_s"] * scale, True
    return (v * scale if v is not None else None), False


def panel(ax, points, modes, x_of, key, scale, floor_key):
    for mode in modes:
        ps = sorted((p for p in points if p["mode"] == mode), key=x_of)
        xs, ys = [], []
        for p in ps:
            v, bound = value(p, key, scale)
            if v is None:
                continue
            xs.append(x_of(p))
            ys.append(v)
            if bound:
                ax.plot([x_of(p)], [v], marker="^", mfc="none", color=COLORS.get(mode, "k"), ms=9)
        ax.plot(xs, ys, marker="o", color=COLORS.get(mode, "k"), label=mode, lw=1.4)
    if floor_key:
        ps = sorted(points, key=x_of)
        fx = sorted({x_of(p) for p in ps})
        fy = [next(p[floor_key] for p in ps if x_of(p) == x) * scale for x in fx]
        ax.plot(fx, fy, color="k", ls="--", lw=1.2, label="wire floor (working set)")
    # One point far above the others (pre-copy that hardly converges) would flatten the rest: log scale then.
    ys = [v for line in ax.get_lines() for v in line.get_ydata() if v == v]
    if floor_key and ys and min(ys) > 0 and max(ys) / min(ys) > 50:
        ax.set_yscale("log")
        ax.text(0.02, 0.96, "log scale", transform=ax.transAxes, fontsize=7, va="top")
    else:
        ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)


def grid(out, s, name, group_key, group_label, x_of, x_label):
    points = s["points"]
    modes = s["config"]["modes"]
    groups = sorted({p[group_key] for p in points})
    fig, axes = plt.subplots(len(MEASURES), len(groups), figsize=(4.2 * len(groups) + 1, 3.0 * len(MEASURES)),
                             squeeze=False)
    for j, g in enumerate(groups):
        gp = [p for p in points if p[group_key] == g]
        for i, (key, label, scale, floor_key) in enumerate(MEASURES):
            ax = axes[i, j]
            panel(ax, gp, modes, x_of, key, scale, floor_key)
            if i == 0:
                ax.set_title(group_label(g), fontsize=10)
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
            if i == len(MEASURES) - 1:
                ax.set_xlabel(x_label, fontsize=9)
    axes[0, 0].legend(fontsize=8)
    rate = s["config"]["bandwidth"]
    fig.suptitle(f"migration cost, {rate} link (floor: the working set alone at {rate}; hollow triangle: cut off, "
                 "a lower bound)", fontsize=10)
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=90)
    plt.close(fig)


def plot_sweep(out, s):
    grid(out, s, "sweep_size.png", "fraction", lambda f: f"working set {f:g} of the workload",
         lambda p: p["vm_bytes"] / MIB, "VM memory (MiB)")
    grid(out, s, "sweep_wss.png", "vm_bytes", lambda b: f"VM {b // MIB} MiB",
         lambda p: p["wss_bytes"] / MIB, "working set (MiB)")
