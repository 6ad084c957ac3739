"""The statistics that judge a search: per-row scores of a slice, the paired block-bootstrap interval
of tuned minus default, the deflated Sharpe ratio of the best trial, and the probability of
backtest overfitting by combinatorially symmetric cross-validation (CSCV).

Every statistic's assumption is stated in docs/tune.md; tests run each on data that breaks it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

EULER_GAMMA = 0.5772156649015329


# -- scores ------------------------------------------------------------------------------------


def net_returns(
    y_prob: np.ndarray, long_return: np.ndarray | None, short_return: np.ndarray | None, fee_pct: float
) -> np.ndarray:
    """The net return of trading each row's arg-max signal: LONG earns the row's long return, SHORT
    its short return, each less the round-trip fee; HOLD earns 0. Fractions (0.01 = 1 %)."""
    n = len(y_prob)
    if long_return is None or short_return is None:
        return np.zeros(n)
    pred = np.asarray(y_prob).argmax(axis=1)
    fee = fee_pct / 100.0
    lr = np.nan_to_num(np.asarray(long_return, dtype=np.float64))
    sr = np.nan_to_num(np.asarray(short_return, dtype=np.float64))
    return np.where(pred == 2, lr - fee, np.where(pred == 0, sr - fee, 0.0))


def _mcc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    c = np.bincount(y_true * 3 + y_pred, minlength=9).reshape(3, 3).astype(np.float64)
    t, p, n = c.sum(axis=1), c.sum(axis=0), c.sum()
    correct = np.trace(c)
    cov_ytyp = correct * n - t @ p
    cov_ypyp = n * n - p @ p
    cov_ytyt = n * n - t @ t
    denom = math.sqrt(cov_ytyt * cov_ypyp)
    return float(cov_ytyp / denom) if denom > 0 else 0.0


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    recalls = [np.mean(y_pred[y_true == k] == k) for k in range(3) if np.any(y_true == k)]
    return float(np.mean(recalls)) if recalls else 0.0


def row_scores(objective: str, y_true: np.ndarray, y_prob: np.ndarray, net: np.ndarray) -> np.ndarray | None:
    """Per-row scores whose mean is the objective's "higher is better" score, for objectives that
    are a mean over rows (log loss, accuracy, net return); None for MCC and balanced accuracy."""
    y_true = np.asarray(y_true, dtype=np.int64)
    if objective == "val_loss":
        p = np.clip(np.asarray(y_prob)[np.arange(len(y_true)), y_true], 1e-7, 1.0)
        return np.log(p)  # minus the log loss of each row
    if objective == "val_accuracy":
        return (np.asarray(y_prob).argmax(axis=1) == y_true).astype(np.float64)
    if objective == "mean_net_return":
        return np.asarray(net, dtype=np.float64)
    return None


def scorer(
    objective: str, y_true: np.ndarray, y_prob: np.ndarray, net: np.ndarray
) -> Callable[[np.ndarray], float]:
    """``score(idx)``: the objective over the rows ``idx`` of one model's predictions, oriented so
    that higher is better (minus the log loss for val_loss)."""
    rows = row_scores(objective, y_true, y_prob, net)
    if rows is not None:
        return lambda idx: float(rows[idx].mean())
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_prob).argmax(axis=1).astype(np.int64)
    if objective == "mcc":
        return lambda idx: _mcc(y_true[idx], y_pred[idx])
    if objective == "balanced_accuracy":
        return lambda idx: _balanced_accuracy(y_true[idx], y_pred[idx])
    raise ValueError(f"unknown objective {objective!r}")


def objective_value(objective: str, y_true: np.ndarray, y_prob: np.ndarray, net: np.ndarray) -> float:
    """The objective as reported (log loss for val_loss, the figure itself otherwise)."""
    score = scorer(objective, y_true, y_prob, net)(np.arange(len(y_true)))
    return -score if objective == "val_loss" else score


# -- the paired interval -----------------------------------------------------------------------


def block_indices(n: int, block: int, rng: np.random.Generator) -> np.ndarray:
    """One circular moving-block bootstrap resample of ``n`` row positions in blocks of ``block``."""
    block = max(1, min(int(block), n))
    count = math.ceil(n / block)
    starts = rng.integers(0, n, size=count)
    idx = (starts[:, None] + np.arange(block)[None, :]).ravel()[:n]
    return idx % n


def paired_interval(
    a: Callable[[np.ndarray], float],
    b: Callable[[np.ndarray], float],
    n: int,
    block: int,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> dict:
    """The difference ``a - b`` of two models' scores on the same ``n`` rows, with a percentile
    interval from a circular moving-block bootstrap that resamples the same rows for both.

    Assumes the row-to-row dependence dies out within ``block`` rows (overlapping label horizons,
    shared input windows) and that the slice is stationary; with dependence longer than the block
    the interval is too narrow.
    """
    rng = np.random.default_rng(seed)
    everything = np.arange(n)
    diff = a(everything) - b(everything)
    draws = np.empty(resamples)
    for i in range(resamples):
        idx = block_indices(n, block, rng)
        draws[i] = a(idx) - b(idx)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(draws, [tail, 1.0 - tail])
    return {
        "difference": float(diff),
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "block_rows": int(max(1, min(block, n))),
        "resamples": int(resamples),
        "rows": int(n),
        "p_not_better": float(np.mean(draws <= 0.0)),
    }


# -- deflated Sharpe ratio ---------------------------------------------------------------------


def sharpe(returns: np.ndarray) -> float:
    """Per-row Sharpe ratio (mean over standard deviation, not annualised); 0 for a flat series."""
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(ddof=1) if len(r) > 1 else 0.0
    return float(r.mean() / sd) if sd > 0 else 0.0


def expected_max_sharpe(trials: int, sharpe_variance: float) -> float:
    """The Sharpe ratio the best of ``trials`` skill-less strategies is expected to reach
    (Bailey and López de Prado 2014), given the variance of the trials' Sharpe ratios."""
    if trials <= 1 or sharpe_variance <= 0:
        return 0.0
    from scipy.stats import norm

    sd = math.sqrt(sharpe_variance)
    return sd * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1.0 / trials) + EULER_GAMMA * norm.ppf(1 - 1.0 / (trials * math.e))
    )


def probabilistic_sharpe(returns: np.ndarray, benchmark: float) -> float:
    """P(true Sharpe > benchmark) given the observed returns' Sharpe, length, skewness and kurtosis."""
    from scipy.stats import kurtosis, norm, skew

    r = np.asarray(returns, dtype=np.float64)
    t = len(r)
    if t < 3 or r.std() == 0:
        return 0.5 if t >= 3 else float("nan")
    sr = sharpe(r)
    g3 = float(skew(r))
    g4 = float(kurtosis(r, fisher=False))
    denom = 1 - g3 * sr + (g4 - 1) / 4.0 * sr * sr
    if denom <= 0:
        return float("nan")
    return float(norm.cdf((sr - benchmark) * math.sqrt(t - 1) / math.sqrt(denom)))


def deflated_sharpe(best_returns: np.ndarray, trial_sharpes: list[float], trials: int) -> dict:
    """The deflated Sharpe ratio of the chosen trial: the probability its true Sharpe beats what the
    best of ``trials`` skill-less trials would show.

    Assumes the trials' Sharpe estimates spread like independent draws (correlated trials make
    ``trials`` overstate the independent tries, so the deflation is conservative) and rows that are
    independent in time (overlapping trades make the series look longer than it is).
    """
    variance = float(np.var(trial_sharpes, ddof=1)) if len(trial_sharpes) > 1 else 0.0
    benchmark = expected_max_sharpe(trials, variance)
    return {
        "sharpe": sharpe(best_returns),
        "expected_max_sharpe": benchmark,
        "trials": int(trials),
        "sharpe_variance": variance,
        "rows": int(len(best_returns)),
        "dsr": probabilistic_sharpe(best_returns, benchmark),
    }


# -- probability of backtest overfitting ---------------------------------------------------------


def pbo(scores: list[Callable[[np.ndarray], float]], n_rows: int, blocks: int = 10) -> dict:
    """The probability of backtest overfitting by CSCV (Bailey, Borwein, López de Prado, Zhu 2017).

    The rows (in time order) are cut into ``blocks`` equal blocks; for every way of picking half of
    them as in-sample, the trial best in-sample is ranked among all trials on the other half. PBO is
    the share of splits where that trial ranks at or below the out-of-sample median.

    Assumes the blocks are exchangeable (no regime that only one half sees) and that every trial is
    scored on the same rows. Needs at least two trials.
    """
    n_trials = len(scores)
    blocks = int(blocks) - int(blocks) % 2
    if n_trials < 2 or blocks < 2 or n_rows < blocks:
        return {"pbo": None, "trials": n_trials, "blocks": blocks, "splits": 0}
    edges = np.linspace(0, n_rows, blocks + 1).astype(int)
    parts = [np.arange(edges[i], edges[i + 1]) for i in range(blocks)]
    logits = []
    for chosen in itertools.combinations(range(blocks), blocks // 2):
        ins = np.concatenate([parts[i] for i in chosen])
        outs = np.concatenate([parts[i] for i in range(blocks) if i not in chosen])
        is_perf = np.array([s(ins) for s in scores])
        oos_perf = np.array([s(outs) for s in scores])
        best = int(np.argmax(is_perf))
        # relative rank of the in-sample winner out of sample, 1 = worst, n_trials = best
        rank = 1 + int(np.sum(oos_perf < oos_perf[best])) + 0.5 * int(np.sum(oos_perf == oos_perf[best]) - 1)
        omega = rank / (n_trials + 1)
        logits.append(math.log(omega / (1 - omega)))
    logits_arr = np.array(logits)
    return {
        "pbo": float(np.mean(logits_arr <= 0)),
        "trials": n_trials,
        "blocks": blocks,
        "splits": int(len(logits_arr)),
        "median_logit": float(np.median(logits_arr)),
    }


__all__ = [
    "block_indices",
    "deflated_sharpe",
    "expected_max_sharpe",
    "net_returns",
    "objective_value",
    "paired_interval",
    "pbo",
    "probabilistic_sharpe",
    "row_scores",
    "scorer",
    "sharpe",
]
