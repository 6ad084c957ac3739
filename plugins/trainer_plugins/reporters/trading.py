"""Reporter `trading`: does the model's signal beat doing nothing, after costs?

On the test slice when there is one (else the whole validation set): classification scores next to
two baselines, LONG / SHORT precision with its count and Wilson interval against the break-even
win rate, signals per confidence threshold, a trade simulation with its baselines, calibration.
Writes ``trading_{tag}.json``, ``trading_{tag}.png`` and a page ``trading_{tag}.html``.
"""

from __future__ import annotations

import html
import math

import numpy as np

from trainer_core import CLASS_NAMES, hookimpl

from .trade_stats import precision_verdict

SHORT, HOLD, LONG = 0, 1, 2
EPS = 1e-7


def _safe(x):
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Per-class precision/recall/F1, accuracy, balanced accuracy, macro F1 and Matthews
    correlation from a (possibly expected, non-integer) 3x3 confusion matrix."""
    cm = np.asarray(cm, dtype=np.float64)
    n = cm.sum()
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    actual = cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros(3), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros(3), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(3), where=denom > 0)
    present = actual > 0
    # multiclass Matthews correlation (Gorodkin): (c*s - sum p_k t_k) / sqrt((s^2 - sum p^2)(s^2 - sum t^2))
    c, s = tp.sum(), n
    cov = c * s - np.dot(predicted, actual)
    var = (s * s - np.dot(predicted, predicted)) * (s * s - np.dot(actual, actual))
    mcc = cov / math.sqrt(var) if var > 0 else 0.0
    return {
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": float(actual[i]),
                "predicted": float(predicted[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "accuracy": float(c / n) if n else None,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1.mean()),
        "mcc": float(mcc),
    }


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    """Mean negative log of the probability given to the true class (clipped at `EPS`); None for no samples."""
    if len(y_true) == 0:
        return None
    p = np.clip(np.asarray(y_prob, dtype=np.float64)[np.arange(len(y_true)), y_true], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The 3x3 confusion matrix (rows true, columns predicted) as int64 counts."""
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def break_even(tp_pct: float, sl_pct: float, fee_pct: float) -> float:
    """The win rate at which a side breaks even: a win pays TP - fee, a loss costs SL + fee.

    ``(SL + fee) / (TP + SL)``; without fees ``1 / (1 + TP/SL)``.
    """
    return (sl_pct + fee_pct) / (tp_pct + sl_pct)


def _signal_stats(mask, y_true, side, returns, fee_frac, be: float, min_signals: int) -> dict:
    count = int(mask.sum())
    wins = int(np.sum(y_true[mask] == side)) if count else 0
    v = precision_verdict(wins, count, be, min_signals)
    out = {
        "signals": count,
        "precision": v["precision"],
        "wilson_low": v["wilson_low"],
        "wilson_high": v["wilson_high"],
        "p_value": v["p_value"],
        "verdict": v["verdict"],
        "mean_return": None,
        "mean_net_return": None,
    }
    if count and returns is not None:
        r = returns[mask]
        r = r[np.isfinite(r)]
        if len(r):
            out["mean_return"] = float(r.mean())
            out["mean_net_return"] = float(r.mean() - fee_frac)
    return out


def trading_metrics(
    y_true,
    y_prob,
    *,
    train_class_counts,
    take_profit_pct: float,
    stop_loss_pct: float,
    short_take_profit_pct: float,
    short_stop_loss_pct: float,
    fee_pct: float,
    thresholds=(0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    long_return=None,
    short_return=None,
    calibration_bins: int = 10,
    min_signals: int = 30,
) -> dict:
    """Everything the `trading` reporter writes, from predictions and (optional) realised returns.

    Returns are fractions (0.01 = 1 %); ``fee_pct`` is the round-trip cost in percent. A side's
    precision beats break-even only with at least ``min_signals`` signals and a 95 % Wilson
    interval whose lower bound is above the break-even win rate.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    n = len(y_true)
    y_pred = y_prob.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    has_returns = long_return is not None and short_return is not None
    long_return = None if long_return is None else np.asarray(long_return, dtype=np.float64)
    short_return = None if short_return is None else np.asarray(short_return, dtype=np.float64)

    model = scores_from_confusion(confusion(y_true, y_pred))
    model["log_loss"] = log_loss(y_true, y_prob)

    hold = scores_from_confusion(confusion(y_true, np.full(n, HOLD)))
    hold_prob = np.tile([EPS, 1 - 2 * EPS, EPS], (n, 1))
    hold["log_loss"] = log_loss(y_true, hold_prob)

    priors = np.asarray([train_class_counts[c] for c in CLASS_NAMES], dtype=np.float64)
    priors = priors / priors.sum()
    actual = np.bincount(y_true, minlength=3).astype(np.float64)
    # the expected confusion matrix of guessing each class with its training-period frequency
    random = scores_from_confusion(np.outer(actual, priors))
    random["log_loss"] = log_loss(y_true, np.tile(priors, (n, 1)))
    random["priors"] = {name: float(priors[i]) for i, name in enumerate(CLASS_NAMES)}

    fee_frac = fee_pct / 100.0
    sides = {
        "LONG": (LONG, take_profit_pct, stop_loss_pct, long_return),
        "SHORT": (SHORT, short_take_profit_pct, short_stop_loss_pct, short_return),
    }
    break_even_rows = {}
    threshold_rows = []
    be_rates = {}
    for name, (cls, tp, sl, _) in sides.items():
        be = be_rates[name] = break_even(tp, sl, fee_pct)
        predicted = int(round(model["per_class"][name]["predicted"]))
        wins = int(np.sum((y_pred == cls) & (y_true == cls))) if n else 0
        v = precision_verdict(wins, predicted, be, min_signals)
        break_even_rows[name] = {
            "take_profit_pct": tp,
            "stop_loss_pct": sl,
            "fee_pct": fee_pct,
            "break_even_win_rate": be,
            **v,
            "edge": None if v["precision"] is None else v["precision"] - be,
            "beats_break_even": None if not predicted else v["verdict"] == "beats break-even",
        }
    for thr in thresholds:
        row = {"threshold": float(thr)}
        for name, (cls, _, _, returns) in sides.items():
            mask = (y_pred == cls) & (y_prob[:, cls] >= thr) if n else np.zeros(0, dtype=bool)
            row[name] = _signal_stats(mask, y_true, cls, returns, fee_frac, be_rates[name], min_signals)
        threshold_rows.append(row)

    confidence = y_prob.max(axis=1) if n else np.zeros(0)
    correct = (y_pred == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, calibration_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, calibration_bins - 1)
    calibration = []
    ece = 0.0
    for b in range(calibration_bins):
        m = which == b
        count = int(m.sum())
        row = {
            "bin": [float(edges[b]), float(edges[b + 1])],
            "count": count,
            "mean_confidence": None,
            "accuracy": None,
        }
        if count:
            row["mean_confidence"] = float(confidence[m].mean())
            row["accuracy"] = float(correct[m].mean())
            ece += count / n * abs(row["accuracy"] - row["mean_confidence"])
        calibration.append(row)

    return {
        "samples": n,
        "class_counts": {name: int(actual[i]) for i, name in enumerate(CLASS_NAMES)},
        "model": model,
        "baselines": {"always_hold": hold, "random_by_training_priors": random},
        "break_even": break_even_rows,
        "thresholds": threshold_rows,
        "min_signals": int(min_signals),
        "returns_available": bool(has_returns),
        "calibration": {"bins": calibration, "expected_calibration_error": float(ece) if n else None},
        "notes": {
            "returns": "fractions of the entry price (0.01 = 1 %); net = gross minus fee_pct / 100",
            "signals": "a signal is a row whose predicted class is LONG (SHORT) with that class's probability >= threshold",
            "random_baseline": "expected scores of guessing each class with its frequency among the training targets",
            "log_loss": f"probabilities clipped at {EPS}",
            "intervals": "95 % Wilson score intervals; p_value: one-sided binomial P(at least this many wins) "
            "at the break-even win rate",
        },
    }


def _fmt(x, pct=False, digits=3):
    if x is None:
        return "-"
    return f"{x * 100:.2f} %" if pct else f"{x:.{digits}f}"


def plot_trading(report: dict, title: str, path) -> None:
    """Save the report's charts as a PNG at ``path``: precision vs break-even, signals per threshold, reliability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    thr = [r["threshold"] for r in report["thresholds"]]
    colours = {"LONG": "#1a7f37", "SHORT": "#cf222e"}
    ax = axes[0]
    for side in ("LONG", "SHORT"):
        prec = [
            r[side]["precision"] if r[side]["precision"] is not None else np.nan for r in report["thresholds"]
        ]
        ax.plot(thr, prec, "o-", color=colours[side], label=f"{side} precision")
        ax.axhline(
            report["break_even"][side]["break_even_win_rate"],
            color=colours[side],
            ls="--",
            lw=1,
            label=f"{side} break-even",
        )
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("precision")
    ax.set_xlim(min(thr) - 0.05, max(thr) + 0.05)
    ax.set_ylim(0, 1)
    ax.set_title("Precision of signals vs break-even")
    ax.legend(fontsize=8)
    ax = axes[1]
    width = 0.03
    for k, side in enumerate(("LONG", "SHORT")):
        counts = [r[side]["signals"] for r in report["thresholds"]]
        ax.bar(np.array(thr) + (k - 0.5) * width, counts, width=width, color=colours[side], label=side)
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("signals")
    ax.set_title("Number of signals")
    ax2 = ax.twinx()
    for side in ("LONG", "SHORT"):
        net = [
            r[side]["mean_net_return"] * 100 if r[side]["mean_net_return"] is not None else np.nan
            for r in report["thresholds"]
        ]
        ax2.plot(thr, net, "s--", color=colours[side], alpha=0.7)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_ylabel("mean net return per signal (%)")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[2]
    bins = [b for b in report["calibration"]["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#0969da")
    for b in bins:
        ax.annotate(
            f"{b['count']:,}",
            (b["mean_confidence"], b["accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, -9),
        )
    ece = report["calibration"]["expected_calibration_error"]
    ax.set_title(f"Reliability (ECE {_fmt(ece)})")
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def choose_thresholds(report: dict) -> dict:
    """Per side, the threshold whose signals' precision has the highest Wilson lower bound above
    break-even, among thresholds with at least ``min_signals`` signals (None: none qualifies)."""
    out = {}
    for side in ("LONG", "SHORT"):
        be = report["break_even"][side]["break_even_win_rate"]
        best = None
        for row in report["thresholds"]:
            s = row[side]
            if s["signals"] < report["min_signals"]:
                continue
            margin = s["wilson_low"] - be
            if best is None or margin > best[1]:
                best = (row["threshold"], margin)
        out[side] = None if best is None else best[0]
    return out


def _threshold_choice(val_report: dict, measured: dict | None) -> dict:
    chosen = choose_thresholds(val_report)
    rows = {r["threshold"]: r for r in (measured or val_report)["thresholds"]}
    vrows = {r["threshold"]: r for r in val_report["thresholds"]}
    out = {
        "chosen_on": "validation",
        "measured_on": "test" if measured is not None else "validation",
        "criterion": "highest 95 % Wilson lower bound of precision minus break-even, "
        "among thresholds with at least min_signals signals",
    }
    for side, thr in chosen.items():
        out[side] = {
            "threshold": thr,
            "validation": None if thr is None else vrows[thr][side],
            "measured": None if thr is None else rows[thr][side],
        }
    if measured is None:
        out["note"] = (
            "no test slice (split.test = 0): thresholds are chosen and measured on the same "
            "validation rows, so their figures are optimistic"
        )
    return out


def simulation_for(result, ev, fee_pct: float, threshold: float | None, seed: int, draws: int = 1000):
    """The ``simulation`` section for one evaluated slice, and the series its chart draws."""
    from .trade_stats import Barriers, buy_and_hold, exit_offsets, price_path, random_entries, simulate

    data, spec = result.data, result.spec
    if data.long_return is None or data.short_return is None:
        return {
            "available": False,
            "reason": "the data carry no realised returns (long_return / short_return)",
        }, None
    path = price_path(data.features, data.feature_names)
    if path is None:
        return {
            "available": False,
            "reason": "the data lack close_change / high_change / low_change, so exit candles are unknown",
        }, None
    method = spec.labels.get("method", "tp-sl")
    if method != "tp-sl":
        return {
            "available": False,
            "reason": f"exit candles are known for the tp-sl labeler only (labels.method is {method!r})",
        }, None
    close, high, low = path
    rows = np.asarray(ev.rows, dtype=np.int64)
    # the barriers the data were labelled with (a training-ready file's own), else the run's
    lp = {
        **{
            "future_window": spec.labels.future_window,
            "take_profit_pct": spec.labels.take_profit_pct,
            "stop_loss_pct": spec.labels.stop_loss_pct,
            "short_take_profit_pct": spec.short_take_profit_pct,
            "short_stop_loss_pct": spec.short_stop_loss_pct,
        },
        **{k: v for k, v in (data.label_params or {}).items() if v is not None},
    }
    barriers = Barriers(
        int(lp["future_window"]),
        float(lp["take_profit_pct"]),
        float(lp["stop_loss_pct"]),
        float(lp["short_take_profit_pct"]),
        float(lp["short_stop_loss_pct"]),
    )
    long_r = np.asarray(data.long_return, dtype=np.float64)
    short_r = np.asarray(data.short_return, dtype=np.float64)
    off_long, off_short, adjusted = exit_offsets(close, high, low, rows, barriers, long_r, short_r)
    last = len(data) - 1
    exit_long, exit_short = np.minimum(rows + off_long, last), np.minimum(rows + off_short, last)
    sim = simulate(
        rows,
        ev.y_prob,
        data.timestamps,
        long_r,
        short_r,
        exit_long,
        exit_short,
        threshold=threshold,
        fee_pct=fee_pct,
    )
    sim["available"] = True
    sim["slice"] = ev.name
    sim["exit_rows_matched_within_tolerance"] = int(adjusted)
    eligible = np.isfinite(long_r[rows]) & np.isfinite(short_r[rows])
    bh = buy_and_hold(close, rows[eligible], fee_pct)
    rnd = random_entries(
        rows[eligible],
        exit_long[eligible],
        exit_short[eligible],
        long_r[rows[eligible]],
        short_r[rows[eligible]],
        n_trades=sim["n_trades"],
        long_share=(sim["n_long"] / sim["n_trades"]) if sim["n_trades"] else 0.5,
        fee_pct=fee_pct,
        model_total=sim["total_net_return"],
        draws=draws,
        seed=seed,
        max_offset=barriers.future_window,
    )
    totals = rnd.pop("totals")
    sim["baselines"] = {"buy_and_hold": bh, "random_entry": rnd}
    chart = None
    if eligible.any():
        r = rows[eligible]
        step = max(1, len(r) // 1000)
        chart = {
            "bh_time": data.timestamps[r[::step]],
            "bh": close[r[::step]] / close[r[0]] - 1.0,
            "random_totals": np.asarray(totals),
        }
    return sim, chart


def report_for(result) -> tuple[dict, dict | None]:
    """The whole report on the evaluated slice (the test slice when there is one, else
    validation), and the series of its simulation chart."""
    spec = result.spec
    data = result.data
    e = spec.evaluation
    min_signals = int(e.get("min_signals", 30))
    test = result.evaluations.get("test")
    has_test = float(spec.split.get("test", 0) or 0) > 0 and test is not None and len(test.rows) > 0
    train_counts = data.class_counts(result.split.train_idx)

    def metrics(ev):
        long_r = data.long_return[ev.rows] if data.long_return is not None else None
        short_r = data.short_return[ev.rows] if data.short_return is not None else None
        return trading_metrics(
            ev.y_true,
            ev.y_prob,
            train_class_counts=train_counts,
            take_profit_pct=spec.labels.take_profit_pct,
            stop_loss_pct=spec.labels.stop_loss_pct,
            short_take_profit_pct=spec.short_take_profit_pct,
            short_stop_loss_pct=spec.short_stop_loss_pct,
            fee_pct=e.fee_pct,
            thresholds=tuple(e.thresholds),
            long_return=long_r,
            short_return=short_r,
            calibration_bins=e.calibration_bins,
            min_signals=min_signals,
        )

    val = metrics(result.validation)
    evaluated = test if has_test else result.validation
    report = metrics(test) if has_test else val
    report = {"split": evaluated.name, **report}
    report["threshold_choice"] = _threshold_choice(val, report if has_test else None)
    sim, chart = simulation_for(result, evaluated, e.fee_pct, e.get("trade_threshold"), int(spec.train.seed))
    report["simulation"] = sim
    return report, chart


def headline(report: dict, tag: str) -> dict:
    """The figures `report_pair` returns (the batch summary shows them)."""
    out = {
        "split": report["split"],
        "mcc": report["model"]["mcc"],
        "macro_f1": report["model"]["macro_f1"],
        "baseline_hold_macro_f1": report["baselines"]["always_hold"]["macro_f1"],
        "report": f"trading_{tag}.html",
    }
    for side in ("LONG", "SHORT"):
        b = report["break_even"][side]
        out[side] = {
            k: b[k] for k in ("precision", "n", "wilson_low", "wilson_high", "p_value", "verdict", "edge")
        }
        out[side]["break_even"] = b["break_even_win_rate"]
    sim = report["simulation"]
    out["simulation"] = (
        None
        if not sim.get("available")
        else {
            "n_trades": sim["n_trades"],
            "total_net_return": sim["total_net_return"],
            "max_drawdown": sim["max_drawdown"],
            "random_entry_p_value": sim["baselines"]["random_entry"]["p_value"],
        }
    )
    return out


def plot_simulation(sim: dict, chart: dict, title: str) -> str:
    """Equity curve (cumulative net return per trade, with buy-and-hold), its drawdown, and the
    random-entry totals against the model's; a base64 PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), gridspec_kw={"height_ratios": [3, 1.4, 1.6]})
    times = np.asarray([t["exit_time"].rstrip("Z") for t in sim["trades"]], dtype="datetime64[s]")
    equity = np.cumsum([t["net_return"] for t in sim["trades"]]) * 100
    ax = axes[0]
    ax.plot(
        chart["bh_time"].astype("datetime64[s]"),
        chart["bh"] * 100,
        color="#8c959f",
        lw=1,
        label="buy and hold (price move)",
    )
    if len(times):
        ax.step(
            times,
            equity,
            where="post",
            color="#0969da",
            lw=1.5,
            label=f"model: {sim['n_trades']} trades, net of {sim['fee_pct']:g} % fee each",
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("cumulative return (%)")
    thr = "arg-max" if sim["threshold"] is None else f"p >= {sim['threshold']:g}"
    ax.set_title(f"{title}: equity curve ({thr}, one position at a time)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    if len(times):
        dd = equity - np.maximum.accumulate(np.maximum(equity, 0))
        ax.fill_between(times, dd, 0, step="post", color="#cf222e", alpha=0.4)
    ax.set_ylabel("drawdown (%)")
    ax.set_title(f"Drawdown of the cumulative net return (max {sim['max_drawdown'] * 100:.2f} %)")
    ax = axes[2]
    totals = chart["random_totals"] * 100
    rnd = sim["baselines"]["random_entry"]
    if len(totals):
        ax.hist(totals, bins=40, color="#8c959f")
        ax.axvline(sim["total_net_return"] * 100, color="#0969da", lw=2, label="model")
        ax.legend(fontsize=8)
        ax.set_title(
            f"Total net return of {rnd['draws']} random-entry draws with {rnd['n_trades']} trades "
            f"(p = {rnd['p_value']:.3f})"
        )
    else:
        ax.set_title("Random entries: the model made no trades")
    ax.set_xlabel("total net return (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _interval(s: dict) -> str:
    if s.get("wilson_low") is None:
        return "-"
    return f"{s['wilson_low']:.3f}-{s['wilson_high']:.3f}"


def _pval(x) -> str:
    return "-" if x is None else (f"{x:.3g}" if x >= 1e-4 else "< 1e-4")


def _simulation_html(sim: dict, chart_png: str | None) -> str:
    esc = html.escape
    if not sim.get("available"):
        return f"<h2>Trade simulation</h2><p><i>No simulation: {esc(sim['reason'])}.</i></p>"
    bh, rnd = sim["baselines"]["buy_and_hold"], sim["baselines"]["random_entry"]
    thr = (
        "the arg-max class, no threshold"
        if sim["threshold"] is None
        else f"probability >= {sim['threshold']:g}"
    )
    lo, hi = sim["win_rate_wilson"]
    win = (
        "-"
        if sim["win_rate"] is None
        else f"{sim['win_rate']:.3f} (95 % {lo:.3f}-{hi:.3f}, n = {sim['n_trades']:,})"
    )
    rows = [
        (
            "trades",
            f"{sim['n_trades']:,} (LONG {sim['n_long']:,}, SHORT {sim['n_short']:,}) from {sim['signals']:,} signal candles",
        ),
        ("win rate (net > 0)", win),
        ("total net return", _fmt(sim["total_net_return"], pct=True)),
        ("max drawdown of the cumulative sum", _fmt(sim["max_drawdown"], pct=True)),
        ("Sharpe ratio per trade", _fmt(sim["sharpe_per_trade"])),
        ("buy and hold over the slice (net of one fee)", _fmt(bh["net_return"], pct=True)),
        ("random entries: mean total", _fmt(rnd["mean_total_net_return"], pct=True)),
        ("random entries: share of draws the model beats", _fmt(rnd["beats_share"])),
        ("p-value, better than random timing", _pval(rnd["p_value"])),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    img = (
        f'<p><img id="simulation-chart" src="data:image/png;base64,{chart_png}" alt="equity curve and drawdown" width="900"></p>'
        if chart_png
        else ""
    )
    trades = sim["trades"][:30]
    trade_rows = "".join(
        f"<tr><td>{t['side']}</td><td>{t['entry_time']}</td><td>{t['exit_time']}</td>"
        f"<td>{_fmt(t['gross_return'], pct=True)}</td><td>{_fmt(t['net_return'], pct=True)}</td></tr>"
        for t in trades
    )
    more = (
        f"<p>First {len(trades)} of {sim['n_trades']:,} trades; all are in the JSON file.</p>"
        if sim["n_trades"] > len(trades)
        else ""
    )
    return f"""<h2 id="simulation">Trade simulation ({esc(sim["slice"])} slice)</h2>
<p>A trade opens at the close of a signal candle ({esc(thr)}) when no position is open, closes under the
labeler's rule (first candle touching take-profit or stop, a candle touching both is the stop, else
after <code>future_window</code> candles), and the next may open only at a signal candle after the exit
candle. Net = gross - {sim["fee_pct"]:g} %. Random entries: {rnd["draws"]:,} draws (seed {rnd["seed"]}) of
{rnd["n_trades"]:,} trades at random candles of the same slice under the same rules.</p>
<table>{table}</table>{img}
<table><tr><th>side</th><th>entry (close of)</th><th>exit (close of)</th><th>gross</th><th>net</th></tr>{trade_rows}</table>{more}
"""


def render_page(report: dict, pair: str, tag: str, chart_png: str | None = None) -> str:
    """The ``trading_{tag}.html`` page of a report (``chart_png``: the simulation chart as base64 PNG, if any)."""
    esc = html.escape
    m, hold, rnd = (
        report["model"],
        report["baselines"]["always_hold"],
        report["baselines"]["random_by_training_priors"],
    )
    rows = []
    for label, key in (
        ("accuracy", "accuracy"),
        ("balanced accuracy", "balanced_accuracy"),
        ("macro F1", "macro_f1"),
        ("Matthews correlation", "mcc"),
        ("log loss", "log_loss"),
    ):
        rows.append(
            f"<tr><td>{label}</td><td>{_fmt(m[key])}</td><td>{_fmt(hold[key])}</td><td>{_fmt(rnd[key])}</td></tr>"
        )
    for name in CLASS_NAMES:
        for metric in ("precision", "recall", "f1"):
            rows.append(
                f"<tr><td>{name} {metric}</td><td>{_fmt(m['per_class'][name][metric])}</td>"
                f"<td>{_fmt(hold['per_class'][name][metric])}</td><td>{_fmt(rnd['per_class'][name][metric])}</td></tr>"
            )
    be_rows = "".join(
        f"<tr><td>{side}</td><td>{b['n']:,}</td><td>{_fmt(b['precision'])}</td><td>{_interval(b)}</td>"
        f"<td>{_fmt(b['break_even_win_rate'])}</td><td>{_pval(b['p_value'])}</td><td>{esc(b['verdict'])}</td>"
        f"<td>TP {b['take_profit_pct']:g} %, SL {b['stop_loss_pct']:g} %, fee {b['fee_pct']:g} %</td></tr>"
        for side, b in report["break_even"].items()
    )
    thr_rows = "".join(
        f"<tr><td>{r['threshold']:.2f}</td>"
        + "".join(
            f"<td>{r[s]['signals']:,}</td><td>{_fmt(r[s]['precision'])}</td><td>{_interval(r[s])}</td>"
            f"<td>{esc(r[s]['verdict'])}</td><td>{_fmt(r[s]['mean_net_return'], pct=True)}</td>"
            for s in ("LONG", "SHORT")
        )
        + "</tr>"
        for r in report["thresholds"]
    )
    cal_rows = "".join(
        f"<tr><td>{b['bin'][0]:.1f}-{b['bin'][1]:.1f}</td><td>{b['count']:,}</td><td>{_fmt(b['mean_confidence'])}</td>"
        f"<td>{_fmt(b['accuracy'])}</td></tr>"
        for b in report["calibration"]["bins"]
    )
    choice = report["threshold_choice"]
    choice_rows = "".join(
        f"<tr><td>{side}</td><td>{'-' if c['threshold'] is None else format(c['threshold'], '.2f')}</td>"
        + (
            "<td colspan=4>no threshold has enough signals</td>"
            if c["threshold"] is None
            else f"<td>{c['measured']['signals']:,}</td><td>{_fmt(c['measured']['precision'])}</td>"
            f"<td>{_interval(c['measured'])}</td><td>{esc(c['measured']['verdict'])}</td>"
        )
        + "</tr>"
        for side, c in ((s, choice[s]) for s in ("LONG", "SHORT"))
    )
    if choice["measured_on"] == "test":
        slice_note = (
            "<p><b>Test slice</b>, untouched by training, early stopping and the choice of thresholds: "
            "thresholds are chosen on the validation slice and measured here.</p>"
        )
    else:
        slice_note = (
            "<p><b>Validation slice.</b> There is no test slice (<code>split.test</code> is 0): thresholds "
            "are chosen and measured on the same rows, so their figures are optimistic.</p>"
        )
    returns_note = (
        ""
        if report["returns_available"]
        else "<p><i>The data carry no realised returns: return columns are empty.</i></p>"
    )
    name = "Test" if report["split"] == "test" else "Validation"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(pair)} trading report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border-bottom:1px solid #d0d7de;padding:.3em .8em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
th{{background:#f6f8fa}}</style></head><body>
<h1>{esc(pair)}: trading report</h1>
{slice_note}
<p>{name} slice, {report["samples"]:,} targets at their natural class mix
(SHORT {report["class_counts"]["SHORT"]:,} / HOLD {report["class_counts"]["HOLD"]:,} / LONG {report["class_counts"]["LONG"]:,}).
Precisions carry their count and a 95 % Wilson interval; a side beats break-even only when the interval's
lower bound is above the break-even win rate, with at least {report["min_signals"]} signals
(<code>evaluation.min_signals</code>); the p-value is the one-sided binomial chance of at least this many
wins at the break-even rate.</p>
<p><a href="trading_{esc(tag)}.png"><img src="trading_{esc(tag)}.png" alt="trading plots" width="900"></a></p>
<h2>Model against baselines</h2>
<table><tr><th>metric</th><th>model</th><th>always HOLD</th><th>random (training mix)</th></tr>{"".join(rows)}</table>
<h2>Precision against the break-even win rate</h2>
<table><tr><th>side</th><th>predictions</th><th>precision</th><th>95 % interval</th><th>break-even</th><th>p-value</th><th>verdict</th><th>barriers</th></tr>{be_rows}</table>
{_simulation_html(report["simulation"], chart_png)}
<h2>Thresholds chosen on validation, measured on the {esc(choice["measured_on"])} slice</h2>
<table><tr><th>side</th><th>threshold</th><th>signals</th><th>precision</th><th>95 % interval</th><th>verdict</th></tr>{choice_rows}</table>
<h2>Signals by confidence threshold</h2>{returns_note}
<table><tr><th>threshold</th><th>LONG signals</th><th>precision</th><th>95 % interval</th><th>verdict</th><th>mean net return</th>
<th>SHORT signals</th><th>precision</th><th>95 % interval</th><th>verdict</th><th>mean net return</th></tr>{thr_rows}</table>
<h2>Calibration</h2>
<p>Expected calibration error: {_fmt(report["calibration"]["expected_calibration_error"])}</p>
<table><tr><th>confidence</th><th>count</th><th>mean confidence</th><th>accuracy</th></tr>{cal_rows}</table>
</body></html>
"""


class TradingReporter:
    """trading_{tag}.json/.png/.html: baselines, break-even with intervals, signals by threshold,
    a one-position-at-a-time trade simulation against buy-and-hold and random entries, calibration."""

    #: headline figures `trainer batch --sort` may order pairs by, with whether larger is better
    figures = {"total_net_return": True, "max_drawdown": False, "random_entry_p_value": False}

    def report_pair(self, result, out) -> dict:
        """Write ``trading_{tag}.json``, ``.png`` and ``.html``; return the headline figures."""
        body, chart = report_for(result)
        report = {"pair": result.spec.pair, **body}
        folds = getattr(result, "folds", None)
        if folds:
            report["walk_forward"] = folds
        title = f"{result.spec.pair} {report['split']}"
        chart_png = plot_simulation(report["simulation"], chart, title) if chart is not None else None
        out.write_json(out.name("trading", "json"), report)
        with out.writing(out.name("trading", "png")) as tmp:
            plot_trading(report, title, tmp)
        out.write_text(
            out.name("trading", "html"), render_page(report, result.spec.pair, result.spec.tag, chart_png)
        )
        return headline(report, result.spec.tag)


@hookimpl
def trainer_register_reporters(register):
    """Register the ``trading`` reporter."""
    register("trading", TradingReporter)
