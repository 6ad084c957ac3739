"""What a search leaves behind: per pair `tuning_{tag}.json` and `search_{tag}.png`; for the run
`tuned.yaml` (the manifest with each adopted pair's params, for `trainer batch`), `search_summary.json` and
`search_summary.html`. Every file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..artifacts import dumps
from ..storage import atomic_write_bytes
from .stats import deflated_sharpe, paired_interval, pbo, scorer, sharpe

FORMAT = "pair-trainer tuning v1"


def _load_npz(path: Path) -> dict | None:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError):
        return None


def _trial_rows(run, s) -> list[dict]:
    import optuna

    out = []
    for t in s.study.get_trials(deepcopy=False):
        rec = s.records.get(t.number) or t.user_attrs.get("record") or {}
        state = t.state.name
        if state == "FAIL" and t.user_attrs.get("interrupted"):
            state = "INTERRUPTED"
        params = {}
        for d in s.settings.space:
            if d.name in t.params:
                from .driver import decode

                params[d.name] = decode(d, t.params[d.name])
        out.append(
            {
                "number": t.number,
                "state": state,
                "params": params,
                "value": t.value if t.state == optuna.trial.TrialState.COMPLETE else rec.get("value"),
                "fold_scores": rec.get("fold_scores"),
                "intermediate": [[int(k), float(v)] for k, v in sorted(t.intermediate_values.items())],
                "start": rec.get("start") or (t.datetime_start.isoformat() if t.datetime_start else None),
                "end": rec.get("end") or (t.datetime_complete.isoformat() if t.datetime_complete else None),
                "retry_of": t.user_attrs.get("retry_of"),
                "warm_start_from": t.user_attrs.get("warm_start_from"),
                "error": rec.get("error"),
                "worker_pid": rec.get("worker_pid"),
                "worker_job": rec.get("worker_job"),
                "worker_rss_mb": rec.get("worker_rss_mb"),
                "worker_peak_rss_mb": rec.get("worker_peak_rss_mb"),
                "timings": dict(rec.get("timings") or {}, queued_seconds=rec.get("queued_seconds")),
            }
        )
    return out


def _comparison(run, s) -> dict:
    objective = s.settings.objective
    default = _load_npz(s.folder / "outer_default.npz")
    tuned = _load_npz(s.folder / "outer_tuned.npz")
    if default is None or tuned is None:
        return {"error": "an outer fit is missing", "adopted": False}
    common, ia, ib = np.intersect1d(tuned["rows"], default["rows"], return_indices=True)
    a = scorer(objective, tuned["y_true"][ia], tuned["y_prob"][ia], tuned["net"][ia])
    b = scorer(objective, default["y_true"][ib], default["y_prob"][ib], default["net"][ib])
    block = max(int(s.spec.resolved["horizon"]), int(s.spec.train.sequence_length))
    interval = paired_interval(a, b, len(common), block, s.settings.confidence, seed=s.settings.seed)
    sign = -1.0 if objective == "val_loss" else 1.0  # intervals are of the improvement (higher is better)
    everything = np.arange(len(common))
    return {
        "objective": objective,
        "rows": int(len(common)),
        "first_row": int(common[0]) if len(common) else None,
        "last_row": int(common[-1]) if len(common) else None,
        "default": sign * b(everything),
        "tuned": sign * a(everything),
        "improvement": interval,
        "improvement_means": (
            "default log loss minus tuned log loss"
            if objective == "val_loss"
            else f"tuned {objective} minus default"
        ),
    }


def _overfitting(s, trials: list[dict]) -> dict:
    """DSR of the best complete trial and PBO across complete trials, from their inner-fold predictions."""
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    tried = sum(t["state"] in ("COMPLETE", "PRUNED", "FAIL") for t in trials)
    preds = {t["number"]: _load_npz(s.folder / f"trial_{t['number']:05d}.npz") for t in complete}
    preds = {k: v for k, v in preds.items() if v is not None}
    if not preds:
        return {"dsr": None, "pbo": None, "note": "no complete trial"}
    # every trial scored on the same rows: those its folds share with the most trials
    sizes: dict[int, int] = {}
    for v in preds.values():
        sizes[len(v["rows"])] = sizes.get(len(v["rows"]), 0) + 1
    size = max(sizes, key=sizes.get)
    same = {k: v for k, v in preds.items() if len(v["rows"]) == size}
    first = next(iter(same.values()))["rows"]
    same = {k: v for k, v in same.items() if np.array_equal(v["rows"], first)}
    best = s.best()
    out: dict[str, Any] = {"trials_scored": sorted(same), "rows": int(len(first))}
    if best is not None and best.number in same:
        returns = same[best.number]["net"]
        out["dsr"] = deflated_sharpe(returns, [sharpe(v["net"]) for v in same.values()], max(tried, 1))
        out["dsr"]["returns"] = "net return per inner-validation row of trading the arg-max signal"
    else:
        out["dsr"] = None
    scorers = [scorer(s.settings.objective, v["y_true"], v["y_prob"], v["net"]) for v in same.values()]
    out["pbo"] = pbo(scorers, len(first), blocks=10)
    out["pbo"]["performance"] = f"{s.settings.objective} on each half of the inner-validation rows"
    return out


def write_pair_report(run, s) -> dict:
    """Write `tuning_{tag}.json` and `search_{tag}.png` of one finished search; returns the report."""
    from .driver import default_params

    trials = _trial_rows(run, s)
    best = s.best()
    report: dict[str, Any] = {
        "format": FORMAT,
        "pair": s.pair,
        "tag": s.spec.tag,
        "study": s.name,
        "storage": run.storage_location,
        "written": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "objective": s.settings.objective,
        "direction": s.settings.direction,
        "space": {d.name: d.to_dict() for d in s.settings.space},
        "settings": {k: v for k, v in s.settings.raw.items() if k != "space"},
        "folds": s.folds,
        "defaults": default_params(s.spec, s.settings),
        "trials": trials,
        "budget": {
            "trials": run.budget_trials,
            "seconds": run.budget_seconds,
            "stopped": s.stopped,  # null when the search ran its planned trials
        },
        "counts": {
            state: sum(t["state"] == state for t in trials)
            for state in ("COMPLETE", "PRUNED", "FAIL", "INTERRUPTED")
        },
    }
    if best is None:
        report.update(
            chosen=None, comparison=None, adopted=False, verdict="no trial completed: the defaults stand"
        )
        report["error"] = "no complete trial"
    else:
        from .driver import decode

        chosen = {d.name: decode(d, best.params[d.name]) for d in s.settings.space}
        report["chosen"] = {"number": best.number, "params": chosen, "value": best.value}
        comparison = _comparison(run, s)
        report["comparison"] = comparison
        proven = bool(comparison.get("improvement") and comparison["improvement"]["low"] > 0)
        adopted = proven or (run.adopt == "best" and "improvement" in comparison)
        report["adopted"] = adopted
        report["adopted_because"] = (
            "the outer comparison's lower bound is above zero"
            if proven
            else ("--adopt best (not proven on the outer slice)" if adopted else None)
        )
        if "improvement" in comparison:
            iv = comparison["improvement"]
            ci = f"{iv['confidence']:.0%} interval [{iv['low']:+.4f}, {iv['high']:+.4f}]"
            report["verdict"] = (
                f"tuned params adopted (trial {best.number}; improvement {iv['difference']:+.4f}, {ci})"
                if adopted
                else f"the defaults stand: tuned minus default {iv['difference']:+.4f}, {ci} includes zero or less"
            )
        else:
            report["verdict"] = f"the defaults stand: {comparison.get('error')}"
        report["overfitting"] = _overfitting(s, trials)
    report["memory"] = {
        "worker_rss_mb": [
            t["worker_rss_mb"] for t in sorted(trials, key=lambda t: t["end"] or "") if t["worker_rss_mb"]
        ],
        # the driver's memory when it collected each trial of this pair (this run's trials)
        "driver_rss_mb": [
            s.records[t["number"]]["driver_rss_mb"]
            for t in trials
            if t["number"] in s.records and "driver_rss_mb" in s.records[t["number"]]
        ],
    }
    atomic_write_bytes(s.folder / f"tuning_{s.spec.tag}.json", dumps(report).encode())
    try:
        plot_search(report, s.folder / f"search_{s.spec.tag}.png")
    except Exception as exc:  # a plot never fails the search; the report says why it is missing
        report["plot_error"] = f"{type(exc).__name__}: {exc}"
        atomic_write_bytes(s.folder / f"tuning_{s.spec.tag}.json", dumps(report).encode())
    return report


def plot_search(report: dict, path: Path) -> None:
    """Objective per trial (complete, pruned) with the best so far, and every trial's epoch curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    minimize = report["direction"] == "minimize"
    best, xs, ys = None, [], []
    for t in report["trials"]:
        if t["state"] == "COMPLETE" and t["value"] is not None:
            left.plot(t["number"], t["value"], "o", color="tab:blue")
            best = (
                t["value"] if best is None else (min(best, t["value"]) if minimize else max(best, t["value"]))
            )
            xs.append(t["number"])
            ys.append(best)
        elif t["state"] == "PRUNED" and t["intermediate"]:
            left.plot(t["number"], t["intermediate"][-1][1], "x", color="tab:gray")
        colour = "tab:blue" if t["state"] == "COMPLETE" else "tab:gray"
        if t["intermediate"]:
            steps, values = zip(*t["intermediate"])
            right.plot(steps, values, color=colour, alpha=0.6, lw=1)
    if xs:
        left.step(xs, ys, where="post", color="tab:orange", label="best so far")
        left.legend()
    left.set_xlabel("trial")
    left.set_ylabel(report["objective"] + " (mean over inner folds)")
    left.set_title(f"{report['pair']}: search ({report['counts']['PRUNED']} pruned, grey x)")
    right.set_xlabel("step (fold x max epochs + epoch)")
    right.set_ylabel("reported validation figure")
    right.set_title("epoch curves (grey: pruned)")
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)


def tuned_manifest(run) -> dict:
    """The manifest (less its tune section) with each adopted pair's params as that pair's overrides."""
    from .driver import nested

    raw = copy.deepcopy(run.tune.manifest_raw)
    pairs = raw.get("pairs") or []
    from ..manifest import merge, normalize_pair

    for i, item in enumerate(pairs):
        name = normalize_pair(item["pair"] if isinstance(item, dict) else item, f"pairs[{i}]")
        s = run.searches.get(name)
        if s is None or not s.report or not s.report.get("adopted"):
            continue
        entry = dict(item) if isinstance(item, dict) else {"pair": item}
        overrides = nested(s.report["chosen"]["params"])
        pairs[i] = merge(entry, overrides)
    raw["pairs"] = pairs
    return raw


def write_batch_report(run) -> None:
    """`tuned.yaml`, `search_summary.json` and `search_summary.html` of the whole run."""
    rows = []
    for s in run.searches.values():
        r = s.report or {}
        iv = ((r.get("comparison") or {}).get("improvement")) or {}
        ov = r.get("overfitting") or {}
        rows.append(
            {
                "pair": s.pair,
                "tag": s.spec.tag,
                "counts": r.get("counts"),
                "best": (r.get("chosen") or {}).get("value"),
                "chosen": (r.get("chosen") or {}).get("params"),
                "default_outer": (r.get("comparison") or {}).get("default"),
                "tuned_outer": (r.get("comparison") or {}).get("tuned"),
                "improvement": iv.get("difference"),
                "low": iv.get("low"),
                "high": iv.get("high"),
                "adopted": bool(r.get("adopted")),
                "dsr": (ov.get("dsr") or {}).get("dsr"),
                "pbo": (ov.get("pbo") or {}).get("pbo"),
                "verdict": r.get("verdict", "not finished"),
                "report": f"{s.pair}/tuning_{s.spec.tag}.json",
            }
        )
    manifest = tuned_manifest(run)
    adopted = [r["pair"] for r in rows if r["adopted"]]
    stand = [r["pair"] for r in rows if not r["adopted"]]
    header = (
        f"# Written by `trainer tune {run.manifest_path}`: the manifest with the adopted params per pair.\n"
        f"# Retrain with: trainer batch {run.output / 'tuned.yaml'}\n"
        f"# Tuned params adopted: {', '.join(adopted) or 'none'}; the defaults stand: {', '.join(stand) or 'none'}.\n"
    )
    atomic_write_bytes(
        run.output / "tuned.yaml", (header + yaml.safe_dump(manifest, sort_keys=False)).encode()
    )
    summary = {"format": FORMAT, "manifest": str(run.manifest_path), "pairs": rows}
    atomic_write_bytes(run.output / "search_summary.json", dumps(summary).encode())
    atomic_write_bytes(run.output / "search_summary.html", _html(rows, run).encode())
    run.echo(
        f"Wrote {run.output / 'tuned.yaml'} (adopted: {', '.join(adopted) or 'none'}) and {run.output / 'search_summary.html'}"
    )


def _fmt(v: Any, digits: int = 4) -> str:
    return "" if v is None else (f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v)))


def _html(rows: list[dict], run) -> str:
    head = (
        "<tr><th>pair</th><th>trials (complete/pruned/failed)</th><th>best inner</th><th>default outer</th>"
        "<th>tuned outer</th><th>improvement [interval]</th><th>DSR</th><th>PBO</th><th>verdict</th><th>chosen params</th></tr>"
    )
    body = []
    for r in rows:
        c = r["counts"] or {}
        interval = (
            "" if r["improvement"] is None else f"{r['improvement']:+.4f} [{r['low']:+.4f}, {r['high']:+.4f}]"
        )
        body.append(
            "<tr>"
            + "".join(
                f"<td>{x}</td>"
                for x in (
                    html.escape(r["pair"]),
                    f"{c.get('COMPLETE', 0)}/{c.get('PRUNED', 0)}/{c.get('FAIL', 0)}",
                    _fmt(r["best"]),
                    _fmt(r["default_outer"]),
                    _fmt(r["tuned_outer"]),
                    interval,
                    _fmt(r["dsr"], 3),
                    _fmt(r["pbo"], 3),
                    html.escape(r["verdict"]),
                    html.escape(json.dumps(r["chosen"])) if r["chosen"] else "",
                )
            )
            + "</tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>trainer tune</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:4px 8px}table{border-collapse:collapse}</style>"
        f"</head><body><h1>Search summary: {html.escape(str(run.manifest_path))}</h1>"
        "<p>Inner figures are means over the purged inner folds; outer figures are on the test slice the search never saw. "
        "Tuned params are adopted only when the interval's lower bound is above zero.</p>"
        f"<table>{head}{''.join(body)}</table></body></html>"
    )


__all__ = ["FORMAT", "plot_search", "tuned_manifest", "write_batch_report", "write_pair_report"]
