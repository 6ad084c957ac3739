"""The trading report's figures from predictions: classification scores beside two baselines,
precision against the break-even win rate (dependence-aware verdicts), signals by confidence
threshold, calibration, and the thresholds chosen on validation."""

from __future__ import annotations

import numpy as np

from trainer_core import CLASS_NAMES

from .stats import BootstrapSettings, Cell, judge

SHORT, HOLD, LONG = 0, 1, 2
EPS = 1e-7
SIDES = {"LONG": LONG, "SHORT": SHORT}


def scores_from_confusion(cm: np.ndarray) -> dict:
    """Per-class precision/recall/F1, accuracy, balanced accuracy and macro F1 from a (possibly
    expected, non-integer) 3x3 confusion matrix (rows true, columns predicted). MCC is not here:
    it comes from scikit-learn on the labels (`classification_scores`)."""
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
        "accuracy": float(tp.sum() / n) if n else None,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else None,
        "macro_f1": float(f1.mean()),
    }


def classification_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """`scores_from_confusion` of the labels, with scikit-learn's Matthews correlation."""
    from sklearn.metrics import matthews_corrcoef

    out = scores_from_confusion(confusion(y_true, y_pred))
    out["mcc"] = float(matthews_corrcoef(y_true, y_pred)) if len(y_true) else 0.0
    return out


def log_loss(y_true: np.ndarray, y_prob: np.ndarray) -> float | None:
    """Mean negative log of the probability given to the true class (clipped at `EPS`); None for no samples."""
    if len(y_true) == 0:
        return None
    p = np.clip(np.asarray(y_prob, dtype=np.float64)[np.arange(len(y_true)), y_true], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """The 3x3 confusion matrix (rows true, columns predicted) as int64 counts."""
    cm = np.zeros((3, 3), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def break_even(tp_pct: float, sl_pct: float, fee_pct: float) -> float:
    """The win rate at which a side breaks even: a win pays TP - costs, a loss costs SL + costs.

    ``(SL + costs) / (TP + SL)``; without costs ``1 / (1 + TP/SL)``.
    """
    return (sl_pct + fee_pct) / (tp_pct + sl_pct)


def _returns(mask, returns, cost_frac) -> dict:
    out = {"mean_return": None, "mean_net_return": None}
    if mask.any() and returns is not None:
        r = returns[mask]
        r = r[np.isfinite(r)]
        if len(r):
            out["mean_return"] = float(r.mean())
            out["mean_net_return"] = float(r.mean() - cost_frac)
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
    horizon: int = 1,
    bootstrap_reps: int = 1000,
    seed: int = 0,
) -> dict:
    """Everything the `trading` reporter writes about predictions, from the slice's rows in time
    order and (optional) realised returns.

    Returns are fractions (0.01 = 1 %); ``fee_pct`` is the round-trip cost in percent (fees and
    slippage). Every precision's verdict, interval and p-value come from `stats.judge`: one
    stationary block bootstrap of the slice (mean block at least ``horizon`` rows,
    ``bootstrap_reps`` repetitions; 0 turns it off and treats signals as independent) gives each
    precision an effective sample size, and the verdict is ``beats break-even`` only with at least
    ``min_signals`` signals and a 95 % interval at that size wholly above break-even.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_prob = np.asarray(y_prob, dtype=np.float64).reshape(-1, 3)
    n = len(y_true)
    y_pred = y_prob.argmax(axis=1) if n else np.zeros(0, dtype=np.int64)
    has_returns = long_return is not None and short_return is not None
    long_return = None if long_return is None else np.asarray(long_return, dtype=np.float64)
    short_return = None if short_return is None else np.asarray(short_return, dtype=np.float64)

    model = classification_scores(y_true, y_pred)
    model["log_loss"] = log_loss(y_true, y_prob)

    hold = classification_scores(y_true, np.full(n, HOLD))
    hold_prob = np.tile([EPS, 1 - 2 * EPS, EPS], (n, 1))
    hold["log_loss"] = log_loss(y_true, hold_prob)

    priors = np.asarray([train_class_counts[c] for c in CLASS_NAMES], dtype=np.float64)
    priors = priors / priors.sum()
    actual = np.bincount(y_true, minlength=3).astype(np.float64)
    # the expected confusion matrix of guessing each class with its training-period frequency;
    # its Matthews correlation is 0 exactly (guesses independent of the truth)
    random = scores_from_confusion(np.outer(actual, priors))
    random["mcc"] = 0.0
    random["log_loss"] = log_loss(y_true, np.tile(priors, (n, 1)))
    random["priors"] = {name: float(priors[i]) for i, name in enumerate(CLASS_NAMES)}

    cost_frac = fee_pct / 100.0
    sides = {
        "LONG": (LONG, take_profit_pct, stop_loss_pct, long_return),
        "SHORT": (SHORT, short_take_profit_pct, short_stop_loss_pct, short_return),
    }
    be_rates = {name: break_even(tp, sl, fee_pct) for name, (_, tp, sl, _) in sides.items()}
    cells: dict = {}
    bes: dict = {}
    for name, (cls, *_rest) in sides.items():
        wins = y_true == cls
        cells[("argmax", name)] = Cell(y_pred == cls, (y_pred == cls) & wins)
        bes[("argmax", name)] = be_rates[name]
        for thr in thresholds:
            mask = (y_pred == cls) & (y_prob[:, cls] >= thr)
            cells[(float(thr), name)] = Cell(mask, mask & wins)
            bes[(float(thr), name)] = be_rates[name]
    settings = (
        BootstrapSettings(int(bootstrap_reps), max(1, int(horizon)), int(seed))
        if bootstrap_reps > 1
        else None
    )
    # the arg-max signals are the longest runs: their optimal block serves the threshold cells too
    verdicts = judge(cells, bes, int(min_signals), settings, [("argmax", "LONG"), ("argmax", "SHORT")])

    break_even_rows = {}
    for name, (_cls, tp, sl, _) in sides.items():
        v = verdicts[("argmax", name)]
        break_even_rows[name] = {
            "take_profit_pct": tp,
            "stop_loss_pct": sl,
            "fee_pct": fee_pct,
            "break_even_win_rate": be_rates[name],
            **v,
            "edge": None if v["precision"] is None else v["precision"] - be_rates[name],
        }
    threshold_rows = []
    for thr in thresholds:
        row = {"threshold": float(thr)}
        for name, (_, _, _, returns) in sides.items():
            v = verdicts[(float(thr), name)]
            row[name] = {
                "signals": v["n_signals"],
                **v,
                **_returns(cells[(float(thr), name)].signals, returns, cost_frac),
            }
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
        "verdict_basis": {
            "method": "stationary block bootstrap (arch) -> effective sample size -> exact binomial (scipy)"
            if settings
            else "signals counted as independent (bootstrap_reps = 0)",
            "bootstrap_reps": int(bootstrap_reps) if settings else 0,
            "min_block": int(max(1, horizon)),
            "seed": int(seed),
            "confidence": 0.95,
        },
        "calibration": {"bins": calibration, "expected_calibration_error": float(ece) if n else None},
        "notes": {
            "returns": "fractions of the entry price (0.01 = 1 %); net = gross minus fee_pct / 100 (fees and slippage)",
            "signals": "a signal is a row whose predicted class is LONG (SHORT) with that class's probability >= threshold",
            "random_baseline": "expected scores of guessing each class with its frequency among the training targets",
            "log_loss": f"probabilities clipped at {EPS}",
            "intervals": "ci_low/ci_high: 95 % Wilson interval at the effective sample size n_effective "
            "(p(1-p) / block-bootstrap variance); p_value: one-sided exact binomial at that size against "
            "break-even; wilson_low/wilson_high: the signals counted as independent (descriptive only)",
        },
    }


def choose_thresholds(report: dict) -> dict:
    """Per side, the threshold whose signals' interval lower bound (``ci_low``) lies furthest above
    break-even, among thresholds with at least ``min_signals`` signals (None: none qualifies)."""
    out = {}
    for side in ("LONG", "SHORT"):
        be = report["break_even"][side]["break_even_win_rate"]
        best = None
        for row in report["thresholds"]:
            s = row[side]
            if s["signals"] < report["min_signals"] or s.get("ci_low") is None:
                continue
            margin = s["ci_low"] - be
            if best is None or margin > best[1]:
                best = (row["threshold"], margin)
        out[side] = None if best is None else best[0]
    return out


def threshold_choice(
    val_report: dict | None, measured: dict, measured_on: str, chosen: dict | None = None
) -> dict:
    """The thresholds chosen on validation (or given, ``chosen``) and their figures on the slice
    the report measures (``measured_on``)."""
    if chosen is None:
        chosen = choose_thresholds(val_report) if val_report is not None else {"LONG": None, "SHORT": None}
    rows = {r["threshold"]: r for r in measured["thresholds"]}
    vrows = {r["threshold"]: r for r in val_report["thresholds"]} if val_report is not None else {}
    out = {
        "chosen_on": "validation",
        "measured_on": measured_on,
        "criterion": "highest lower bound of the dependence-aware 95 % interval minus break-even, "
        "among thresholds with at least min_signals signals",
    }
    for side, thr in chosen.items():
        out[side] = {
            "threshold": thr,
            "validation": vrows.get(thr, {}).get(side) if thr is not None else None,
            "measured": rows[thr][side] if thr is not None and thr in rows else None,
        }
    if measured_on == "validation":
        out["note"] = (
            "no test slice (split.test = 0): thresholds are chosen and measured on the same "
            "validation rows, the slice that early-stopped the model, so their figures are optimistic"
        )
    return out
