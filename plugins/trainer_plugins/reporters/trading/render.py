"""The ``trading_{tag}.html`` page: the report's figures formatted here, laid out by the Jinja2
template ``templates/trading.html`` (autoescaped)."""

from __future__ import annotations

from importlib import resources

from trainer_core import CLASS_NAMES

from .stats import BEATS

TEMPLATE = "trading.html"
MAX_TRADES_SHOWN = 30


def fmt(x, pct: bool = False, digits: int = 3) -> str:
    """A number for the page: ``-`` for None, a percentage with two decimals, or ``digits`` decimals."""
    if x is None:
        return "-"
    return f"{x * 100:.2f} %" if pct else f"{x:.{digits}f}"


def pval(x) -> str:
    """A p-value: three significant digits, ``< 1e-4`` below that."""
    return "-" if x is None else (f"{x:.3g}" if x >= 1e-4 else "< 1e-4")


def interval(low, high) -> str:
    """``low-high`` with three decimals, ``-`` without an interval."""
    return "-" if low is None else f"{low:.3f}-{high:.3f}"


def _count(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def _cell(s: dict) -> dict:
    return {
        "n": f"{s['n_signals']:,}",
        "n_eff": _count(s.get("n_effective")),
        "precision": fmt(s["precision"]),
        "ci": interval(s.get("ci_low"), s.get("ci_high")),
        "verdict": s["verdict"],
        "net": fmt(s.get("mean_net_return"), pct=True),
    }


def _environment():
    import jinja2

    text = resources.files(__package__).joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    return env.from_string(text)


def _costs_text(c: dict) -> str:
    parts = [f"fees {c['fee_pct']:g} % round trip ({c['market']})"]
    if c["slippage_bps"]:
        parts.append(f"slippage {c['slippage_bps']:g} bp per side")
    if c["funding_rate_pct"]:
        parts.append(f"funding {c['funding_rate_pct']:g} % per 8 h held (paid by LONG, received by SHORT)")
    return ", ".join(parts)


def _simulation(sim: dict) -> dict:
    if not sim.get("available"):
        return {"available": False, "reason": sim["reason"]}
    bh, rnd = sim["baselines"]["buy_and_hold"], sim["baselines"]["random_entry"]
    lo, hi = sim["win_rate_wilson"]
    win = (
        "-"
        if sim["win_rate"] is None
        else f"{sim['win_rate']:.3f} (95 % {lo:.3f}-{hi:.3f}, n = {sim['n_trades']:,} non-overlapping trades)"
    )
    rows = [
        (
            "trades",
            f"{sim['n_trades']:,} (LONG {sim['n_long']:,}, SHORT {sim['n_short']:,}) from {sim['signals']:,} signal candles",
        ),
        ("win rate (net > 0)", win),
        ("total gross return", fmt(sim.get("total_gross_return"), pct=True)),
        ("total costs", fmt(sim.get("total_cost"), pct=True)),
        ("total net return", fmt(sim["total_net_return"], pct=True)),
        ("max drawdown of the cumulative sum", fmt(sim["max_drawdown"], pct=True)),
        ("Sharpe ratio per trade", fmt(sim["sharpe_per_trade"])),
        ("buy and hold over the slice (net of one round trip)", fmt(bh["net_return"], pct=True)),
        ("random entries: mean total", fmt(rnd["mean_total_net_return"], pct=True)),
        ("random entries: share of draws the model beats", fmt(rnd["beats_share"])),
        ("p-value, better than random timing", pval(rnd["p_value"])),
    ]
    trades = [
        {
            "side": t["side"],
            "entry_time": t["entry_time"],
            "exit_time": t["exit_time"],
            "gross": fmt(t["gross_return"], pct=True),
            "cost": fmt(t.get("cost"), pct=True),
            "net": fmt(t["net_return"], pct=True),
        }
        for t in sim["trades"][:MAX_TRADES_SHOWN]
    ]
    return {
        "available": True,
        "slice": sim["slice"],
        "rule": "the arg-max class, no threshold"
        if sim["threshold"] is None
        else f"probability >= {sim['threshold']:g}",
        "costs_text": _costs_text(sim["costs"]),
        "draws": f"{rnd['draws']:,}",
        "seed": rnd["seed"],
        "rnd_trades": f"{rnd['n_trades']:,}",
        "rows": rows,
        "sensitivity": [
            (f"{c['cost_multiple']:g}x", fmt(c["total_net_return"], pct=True))
            for c in sim.get("cost_sensitivity", [])
        ],
        "trades": trades,
        "n_trades": f"{sim['n_trades']:,}",
        "more": sim["n_trades"] > len(trades),
    }


def _folds(report: dict) -> dict | None:
    wf = report.get("walk_forward")
    if not wf:
        return None
    rows = []
    for f in wf.get("folds", []):
        rows.append(
            {
                "fold": f["fold"],
                "scored_on": f.get("scored_on", "validation"),
                "samples": f"{f['samples']:,}",
                "accuracy": fmt(f.get("accuracy")),
                "mcc": fmt(f.get("mcc")),
                "trades": _count(f.get("n_trades")),
                "net": fmt(f.get("total_net_return"), pct=True),
            }
        )
    oos = wf.get("out_of_sample")
    summary = (
        f"Stitched out-of-sample equity: {oos['n_trades']:,} trades, total net return "
        f"{fmt(oos['total_net_return'], pct=True)}, max drawdown {fmt(oos['max_drawdown'], pct=True)}, "
        f"Sharpe per trade {fmt(oos['sharpe_per_trade'])}."
        if oos
        else "No trades to stitch (no simulation on the folds' blocks)."
    )
    return {"note": wf.get("note", ""), "rows": rows, "summary": summary}


def render_page(report: dict, pair: str, tag: str, chart_png: str | None = None) -> str:
    """The ``trading_{tag}.html`` page of a report (``chart_png``: the simulation chart as base64 PNG, if any)."""
    m = report["model"]
    hold = report["baselines"]["always_hold"]
    rnd = report["baselines"]["random_by_training_priors"]
    score_rows = [
        (label, fmt(m[key]), fmt(hold[key]), fmt(rnd[key]))
        for label, key in (
            ("accuracy", "accuracy"),
            ("balanced accuracy", "balanced_accuracy"),
            ("macro F1", "macro_f1"),
            ("Matthews correlation", "mcc"),
            ("log loss", "log_loss"),
        )
    ]
    for name in CLASS_NAMES:
        for metric in ("precision", "recall", "f1"):
            score_rows.append(
                (
                    f"{name} {metric}",
                    fmt(m["per_class"][name][metric]),
                    fmt(hold["per_class"][name][metric]),
                    fmt(rnd["per_class"][name][metric]),
                )
            )
    be_rows = []
    for side, b in report["break_even"].items():
        be_rows.append(
            {
                "side": side,
                "n": f"{b['n']:,}",
                "n_eff": _count(b.get("n_effective")),
                "precision": fmt(b["precision"]),
                "ci": interval(b.get("ci_low"), b.get("ci_high")),
                "be": fmt(b["break_even_win_rate"]),
                "p": pval(b["p_value"]),
                "verdict": b["verdict"],
                "beats": b["verdict"] == BEATS,
                "mark": "\u2713 " if b["verdict"] == BEATS else "",
                "wilson": interval(b.get("wilson_low"), b.get("wilson_high")),
                "barriers": f"TP {b['take_profit_pct']:g} %, SL {b['stop_loss_pct']:g} %, costs {b['fee_pct']:g} %",
            }
        )
    thr_rows = [
        {"threshold": f"{r['threshold']:.2f}", "cells": [_cell(r[s]) for s in ("LONG", "SHORT")]}
        for r in report["thresholds"]
    ]
    choice = report["threshold_choice"]
    choice_rows = []
    for side in ("LONG", "SHORT"):
        c = choice[side]
        row = {
            "side": side,
            "threshold": "-" if c["threshold"] is None else f"{c['threshold']:.2f}",
            "empty": None,
        }
        if c["threshold"] is None or c["measured"] is None:
            row["empty"] = "no threshold has enough signals on validation"
        else:
            row.update(_cell(c["measured"]))
        choice_rows.append(row)
    basis = report.get("verdict_basis", {})
    measured = report["split"]
    optimistic = measured == "validation"
    titles = {
        "test": (
            "Test slice",
            "Untouched by training, early stopping and the choice of thresholds: thresholds are chosen on the validation slice and measured here.",
        ),
        "validation": (
            "Measured on the early-stopping slice",
            "There is no test slice (split.test is 0): these rows chose the best epoch, the learning-rate "
            "schedule and the thresholds, so every figure here is optimistic.",
        ),
    }
    title, note = titles.get(
        measured,
        (
            f"{measured} slice",
            "Predictions scored on candles given to trainer evaluate; thresholds come from the model's validation slice when known.",
        ),
    )
    cal = report["calibration"]
    return _environment().render(
        pair=pair,
        tag=tag,
        slice_title=title,
        slice_note=note,
        slice_is_optimistic=optimistic,
        slice_name=measured.capitalize(),
        samples=f"{report['samples']:,}",
        counts={k: f"{v:,}" for k, v in report["class_counts"].items()},
        horizon=basis.get("min_block", "?"),
        basis=(
            f"{basis.get('bootstrap_reps', 0):,} stationary block-bootstrap resamples of the slice (arch; mean block at least "
            f"the {basis.get('min_block')}-candle horizon) give the precision's variance, n_eff = p(1-p)/variance, and an exact "
            "binomial test (scipy) at n_eff gives the p-value"
            if basis.get("bootstrap_reps")
            else "signals are counted as independent (the bootstrap is off), which overstates certainty"
        ),
        min_signals=report["min_signals"],
        cells=2 * (1 + len(report["thresholds"])),
        score_rows=score_rows,
        be_rows=be_rows,
        sim=_simulation(report["simulation"]),
        chart_png=chart_png,
        choice={"measured_on": choice["measured_on"], "note": choice.get("note"), "rows": choice_rows},
        returns_available=report["returns_available"],
        thr_rows=thr_rows,
        ece=fmt(cal["expected_calibration_error"]),
        cal_rows=[
            (
                f"{b['bin'][0]:.1f}-{b['bin'][1]:.1f}",
                f"{b['count']:,}",
                fmt(b["mean_confidence"]),
                fmt(b["accuracy"]),
            )
            for b in cal["bins"]
        ],
        folds=_folds(report),
    )
