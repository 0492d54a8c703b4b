"""Repeated runs of a mode folded into one entry of summary.json: the raw
runs, each numeric metric as {median, min, max, n}, and the median again
under the metric's own name (what summary.json's readers always read)."""
import statistics


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def spread(values):
    """{median, min, max, n} of the values that are numbers (n of them; None for all three when n = 0)."""
    vs = [v for v in values if number(v)]
    if not vs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vs), "min": min(vs), "max": max(vs), "n": len(vs)}


def keys_in_order(runs):
    keys = []
    for r in runs:
        keys += [k for k in r if k not in keys]
    return keys


def fold(runs, headline=(), skip=("report",), labels=("run", "timelines")):
    """The summary entry of a mode's runs (a list of per-run result dicts, in run order).
    * `runs`: the per-run results (without `skip`, e.g. the engine's long report, kept in reports/);
    * `metrics`: {name: {median, min, max, n}} for every field that is a number in some run;
    * every such field also as its median, numeric dicts (per-VM figures) per key, `ok` = all runs ok
      (`ok_runs` counts them), `error` the first run's error, anything else as in the first run."""
    runs = [{k: v for k, v in r.items() if k not in skip} for r in runs]
    keys = keys_in_order(runs)
    keys = [k for k in keys if k not in labels]  # per-run labels: in `runs` only
    numeric = [k for k in keys if any(number(r.get(k)) for r in runs)]
    metrics = {k: spread([r.get(k) for r in runs]) for k in numeric}
    out = {k: metrics[k]["median"] if k in metrics else None for k in headline}
    for k in keys:
        if k in out:
            continue
        vals = [r.get(k) for r in runs]
        if k in metrics:
            out[k] = metrics[k]["median"]
        elif k == "ok":
            out["ok"] = all(bool(v) for v in vals)
            out["ok_runs"] = sum(1 for v in vals if v)
        elif k == "error":
            out["error"] = next((v for v in vals if v), None)
        elif all(isinstance(v, dict) for v in vals if v is not None) and \
                any(isinstance(v, dict) and any(number(x) for x in v.values()) for v in vals):
            sub = keys_in_order([v for v in vals if isinstance(v, dict)])
            out[k] = {s: spread([(v or {}).get(s) for v in vals])["median"] for s in sub}
        else:
            out[k] = vals[0]
    out["repeats"] = len(runs)
    out["metrics"] = metrics
    out["runs"] = runs
    return out
