"""The run loop the experiment, its --app redis variant and the sweep share.

Which runs, in which order (`plan`): every mode's runs interleaved across
--repeat (A B C, A B C, ..., never A A A B B B, so a slow spell of the shared
machine spreads over the modes), and with several swap stores (`--store
memd,redis-cluster`) the modes whose figures depend on the store run once per
store. How each run goes (`run_all`): on a fresh lab, taken down after it with
its logs kept in <out>/logs/<tag>, its result written to reports/<tag>.json
before the next run starts, a run that raises recorded as failed (the loop
goes on), SIGTERM or Ctrl-C taking the lab down.

Names: a run's entry (`key`) is its mode, or `<mode>@<store>` for a store other
than agile-memd, so `modes.agile` keeps meaning agile on agile-memd for every
reader of summary.json; run k > 1 of an entry is tagged `<key>_r<k>`.
"""
import json
import os
import signal
import time

from .config import DEFAULT_STORE
from .lifecycle import down
from .util import LabError

# Modes whose figures depend on the swap store: only agile offloads (advance offloading) and reads cold pages
# from the store at the destination. precopy/postcopy run agiled VMs WITHOUT offloading and the qemu-* modes
# stock VMs, so the store plays no part in them: they run once, on a lab with the first store listed.
STORE_MODES = ("agile",)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def with_down(prefix, keep_logs=None):
    """Takes the lab down; a problem is logged, not raised (the run goes on)."""
    try:
        down(prefix, keep_logs, quiet=True)
    except LabError as e:
        log(f"down reported a problem: {e}")


def run_tag(key, k):
    """The name of run k of an entry in timelines/, reports/, logs/: the entry itself for the first run."""
    return key if k == 1 else f"{key}_r{k}"


def entry_key(mode, store):
    return mode if store in (None, DEFAULT_STORE) else f"{mode}@{store}"


def plan(modes, repeat, stores=(DEFAULT_STORE,)):
    """[(tag, case)] in run order; case = {key, mode, store (None: the store plays no part), lab_store, run}."""
    variants = []
    for mode in modes:
        for store in (stores if mode in STORE_MODES else [None]):
            variants.append((entry_key(mode, store), mode, store))
    out = []
    for k in range(1, repeat + 1):
        for key, mode, store in variants:
            out.append((run_tag(key, k), {"key": key, "mode": mode, "store": store,
                                          "lab_store": store or stores[0], "run": k}))
    return out


def _interrupt(sig, frame):
    raise KeyboardInterrupt


def run_all(prefix, out, planned, run_one, done):
    """Runs run_one(case, tag) -> result dict for each planned (tag, case), then done(case, result) (fold it,
    write the summary). The result carries the case's labels, `timelines` = tag and `mode_wall_s`. Returns
    0, 1 if a run raised, 130 if interrupted."""
    signal.signal(signal.SIGTERM, _interrupt)
    rc = 0
    try:
        for tag, case in planned:
            t0 = time.monotonic()
            log(f"== {tag}" + (f" (run {case['run']})" if "run" in case else ""))
            try:
                res = run_one(case, tag)
            except Exception as e:
                log(f"{tag}: FAILED: {e}")
                res = {"mode": case.get("mode"), "ok": False, "error": str(e)}
                rc = 1
            finally:
                with_down(prefix, os.path.join(out, "logs", tag))
            res.update({k: v for k, v in case.items() if k != "lab_store"})
            res.update({"timelines": tag, "mode_wall_s": time.monotonic() - t0})
            os.makedirs(os.path.join(out, "reports"), exist_ok=True)
            with open(os.path.join(out, "reports", f"{tag}.json"), "w") as f:
                json.dump(res, f, indent=2)
            done(case, res)
    except KeyboardInterrupt:
        log("interrupted: taking the lab down")
        with_down(prefix)
        rc = 130
    return rc


def run_modes(a, modes, runner, summary, section, fold_entry, shown):
    """The experiment's and --app redis' loop: every planned run of modes x a.stores x a.repeat through
    runner.run_mode(mode, tag, store); each entry's runs folded by fold_entry into summary[section][key] and
    summary.json written after every run (what was measured survives a run that kills the experiment); a
    line per run with the figures `shown`. Returns run_all's rc."""
    planned = plan(modes, a.repeat, a.stores)
    runs = {case["key"]: [] for _, case in planned}

    def run_one(case, tag):
        summary["run_order"].append(tag)
        return runner.run_mode(case["mode"], tag, case["lab_store"])

    def done(case, res):
        runs[case["key"]].append(res)
        summary[section][case["key"]] = fold_entry(runs[case["key"]])
        log(f"{res['timelines']}: done in {res['mode_wall_s']:.0f}s: " + ", ".join(
            f"{k}={'-' if res.get(k) is None else format(res[k], '.2f')}" for k in shown))
        with open(os.path.join(a.out, "summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
    return run_all(a.prefix, a.out, planned, run_one, done)
