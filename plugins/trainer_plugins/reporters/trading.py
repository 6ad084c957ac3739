"""Reporter `trading`: does the model's signal beat doing nothing, after costs?

On the whole validation set: classification scores next to two baselines (always HOLD, and a
random guess at the training period's class mix), LONG / SHORT precision against the break-even
win rate, signals and their realised returns per confidence threshold, and a calibration table.
Writes ``trading_{tag}.json``, ``trading_{tag}.png`` and a page ``trading_{tag}.html``.
"""

from __future__ import annotations

import html
import math

import numpy as np

from trainer_core import CLASS_NAMES, hookimpl

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
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": float(actual[i]), "predicted": float(predicted[i])}
            for i, name in enumerate(CLASS_NAMES)
        },
        "accuracy": float(c / n) if n else None,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1.mean()),
        "mcc": float(mcc),
    }


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    if len(y_true) == 0:
        return None
    p = np.clip(np.asarray(y_prob, dtype=np.float64)[np.arange(len(y_true)), y_true], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def break_even(tp_pct: float, sl_pct: float, fee_pct: float) -> float:
    """The win rate at which a side breaks even: a win pays TP - fee, a loss costs SL + fee.

    ``(SL + fee) / (TP + SL)``; without fees ``1 / (1 + TP/SL)``.
    """
    return (sl_pct + fee_pct) / (tp_pct + sl_pct)


def _signal_stats(mask, y_true, side, returns, fee_frac) -> dict:
    count = int(mask.sum())
    out = {"signals": count, "precision": None, "mean_return": None, "mean_net_return": None}
    if count:
        out["precision"] = float(np.mean(y_true[mask] == side))
        if returns is not None:
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
) -> dict:
    """Everything the `trading` reporter writes, from predictions and (optional) realised returns.

    Returns are fractions (0.01 = 1 %); ``fee_pct`` is the round-trip cost in percent.
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
    for name, (cls, tp, sl, _) in sides.items():
        be = break_even(tp, sl, fee_pct)
        precision = model["per_class"][name]["precision"] if model["per_class"][name]["predicted"] else None
        break_even_rows[name] = {
            "take_profit_pct": tp, "stop_loss_pct": sl, "fee_pct": fee_pct,
            "break_even_win_rate": be, "precision": precision,
            "edge": None if precision is None else precision - be,
            "beats_break_even": None if precision is None else precision > be,
        }
    for thr in thresholds:
        row = {"threshold": float(thr)}
        for name, (cls, _, _, returns) in sides.items():
            mask = (y_pred == cls) & (y_prob[:, cls] >= thr) if n else np.zeros(0, dtype=bool)
            row[name] = _signal_stats(mask, y_true, cls, returns, fee_frac)
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
        row = {"bin": [float(edges[b]), float(edges[b + 1])], "count": count,
               "mean_confidence": None, "accuracy": None}
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
        "returns_available": bool(has_returns),
        "calibration": {"bins": calibration, "expected_calibration_error": float(ece) if n else None},
        "notes": {
            "returns": "fractions of the entry price (0.01 = 1 %); net = gross minus fee_pct / 100",
            "signals": "a signal is a row whose predicted class is LONG (SHORT) with that class's probability >= threshold",
            "random_baseline": "expected scores of guessing each class with its frequency among the training targets",
            "log_loss": f"probabilities clipped at {EPS}",
        },
    }


def _fmt(x, pct=False, digits=3):
    if x is None:
        return "-"
    return f"{x * 100:.2f} %" if pct else f"{x:.{digits}f}"


def plot_trading(report: dict, title: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    thr = [r["threshold"] for r in report["thresholds"]]
    colours = {"LONG": "#1a7f37", "SHORT": "#cf222e"}
    ax = axes[0]
    for side in ("LONG", "SHORT"):
        prec = [r[side]["precision"] if r[side]["precision"] is not None else np.nan for r in report["thresholds"]]
        ax.plot(thr, prec, "o-", color=colours[side], label=f"{side} precision")
        ax.axhline(report["break_even"][side]["break_even_win_rate"], color=colours[side], ls="--", lw=1,
                   label=f"{side} break-even")
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
        net = [r[side]["mean_net_return"] * 100 if r[side]["mean_net_return"] is not None else np.nan
               for r in report["thresholds"]]
        ax2.plot(thr, net, "s--", color=colours[side], alpha=0.7)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_ylabel("mean net return per signal (%)")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[2]
    bins = [b for b in report["calibration"]["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#0969da")
    for b in bins:
        ax.annotate(f"{b['count']:,}", (b["mean_confidence"], b["accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(3, -9))
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


def render_page(report: dict, pair: str, tag: str) -> str:
    esc = html.escape
    m, hold, rnd = report["model"], report["baselines"]["always_hold"], report["baselines"]["random_by_training_priors"]
    rows = []
    for label, key in (("accuracy", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("macro F1", "macro_f1"),
                       ("Matthews correlation", "mcc"), ("log loss", "log_loss")):
        rows.append(f"<tr><td>{label}</td><td>{_fmt(m[key])}</td><td>{_fmt(hold[key])}</td><td>{_fmt(rnd[key])}</td></tr>")
    for name in CLASS_NAMES:
        for metric in ("precision", "recall", "f1"):
            rows.append(f"<tr><td>{name} {metric}</td><td>{_fmt(m['per_class'][name][metric])}</td>"
                        f"<td>{_fmt(hold['per_class'][name][metric])}</td><td>{_fmt(rnd['per_class'][name][metric])}</td></tr>")
    be_rows = "".join(
        f"<tr><td>{side}</td><td>{_fmt(b['precision'])}</td><td>{_fmt(b['break_even_win_rate'])}</td>"
        f"<td>{_fmt(b['edge'])}</td><td>TP {b['take_profit_pct']:g} %, SL {b['stop_loss_pct']:g} %, fee {b['fee_pct']:g} %</td></tr>"
        for side, b in report["break_even"].items()
    )
    thr_rows = "".join(
        f"<tr><td>{r['threshold']:.2f}</td>"
        + "".join(f"<td>{r[s]['signals']:,}</td><td>{_fmt(r[s]['precision'])}</td><td>{_fmt(r[s]['mean_net_return'], pct=True)}</td>"
                  for s in ("LONG", "SHORT"))
        + "</tr>"
        for r in report["thresholds"]
    )
    cal_rows = "".join(
        f"<tr><td>{b['bin'][0]:.1f}-{b['bin'][1]:.1f}</td><td>{b['count']:,}</td><td>{_fmt(b['mean_confidence'])}</td>"
        f"<td>{_fmt(b['accuracy'])}</td></tr>"
        for b in report["calibration"]["bins"]
    )
    returns_note = "" if report["returns_available"] else "<p><i>The data carry no realised returns: return columns are empty.</i></p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(pair)} trading report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#1f2328}}table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border-bottom:1px solid #d0d7de;padding:.3em .8em;text-align:right}}td:first-child,th:first-child{{text-align:left}}
th{{background:#f6f8fa}}</style></head><body>
<h1>{esc(pair)}: trading report</h1>
<p>Validation set, {report['samples']:,} targets at their natural class mix
(SHORT {report['class_counts']['SHORT']:,} / HOLD {report['class_counts']['HOLD']:,} / LONG {report['class_counts']['LONG']:,}).</p>
<p><a href="trading_{esc(tag)}.png"><img src="trading_{esc(tag)}.png" alt="trading plots" width="900"></a></p>
<h2>Model against baselines</h2>
<table><tr><th>metric</th><th>model</th><th>always HOLD</th><th>random (training mix)</th></tr>{''.join(rows)}</table>
<h2>Precision against the break-even win rate</h2>
<table><tr><th>side</th><th>precision</th><th>break-even</th><th>edge</th><th>barriers</th></tr>{be_rows}</table>
<h2>Signals by confidence threshold</h2>{returns_note}
<table><tr><th>threshold</th><th>LONG signals</th><th>precision</th><th>mean net return</th>
<th>SHORT signals</th><th>precision</th><th>mean net return</th></tr>{thr_rows}</table>
<h2>Calibration</h2>
<p>Expected calibration error: {_fmt(report['calibration']['expected_calibration_error'])}</p>
<table><tr><th>confidence</th><th>count</th><th>mean confidence</th><th>accuracy</th></tr>{cal_rows}</table>
</body></html>
"""


def report_for(result) -> dict:
    spec = result.spec
    ev = result.validation
    data = result.data
    long_r = data.long_return[ev.rows] if data.long_return is not None else None
    short_r = data.short_return[ev.rows] if data.short_return is not None else None
    e = spec.evaluation
    return trading_metrics(
        ev.y_true, ev.y_prob,
        train_class_counts=data.class_counts(result.split.train_idx),
        take_profit_pct=spec.labels.take_profit_pct, stop_loss_pct=spec.labels.stop_loss_pct,
        short_take_profit_pct=spec.short_take_profit_pct, short_stop_loss_pct=spec.short_stop_loss_pct,
        fee_pct=e.fee_pct, thresholds=tuple(e.thresholds), long_return=long_r, short_return=short_r,
        calibration_bins=e.calibration_bins,
    )


class TradingReporter:
    """trading_{tag}.json/.png/.html: baselines, break-even, signals by threshold, calibration."""

    def report_pair(self, result, out) -> None:
        report = {"pair": result.spec.pair, "split": "validation", **report_for(result)}
        folds = getattr(result, "folds", None)
        if folds:
            report["walk_forward"] = folds
        out.write_json(out.name("trading", "json"), report)
        with out.writing(out.name("trading", "png")) as tmp:
            plot_trading(report, f"{result.spec.pair} validation", tmp)
        out.write_text(out.name("trading", "html"), render_page(report, result.spec.pair, result.spec.tag))


@hookimpl
def trainer_register_reporters(register):
    register("trading", TradingReporter)
