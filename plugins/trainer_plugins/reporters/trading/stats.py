"""Verdicts on a precision or a win rate that hold when signals overlap.

Neighbouring signals share most of their label horizon and a model's predictions come in runs, so
``n`` signals carry far fewer than ``n`` independent outcomes. Each verdict here resamples the
evaluated slice in blocks (`arch.bootstrap.StationaryBootstrap`, mean block at least the label
horizon and at least Politis and White's optimal length), turns the bootstrap variance of the
precision into an effective sample size, and tests and bounds the precision as a binomial of that
size (`scipy.stats.binomtest`). The raw Wilson interval of the ``n`` signals stays as a
description only.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

#: two-sided 95 % normal quantile
Z95 = 1.959963984540054
CONFIDENCE = 0.95
BEATS = "beats break-even"


def wilson_interval(k: int, n: int) -> tuple[float | None, float | None]:
    """The 95 % Wilson score interval of ``k`` successes in ``n`` trials (scipy); ``(None, None)`` for n = 0."""
    if n <= 0:
        return None, None
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(CONFIDENCE, method="wilson")
    return float(max(0.0, ci.low)), float(min(1.0, ci.high))


def binomial_p_value(k: int, n: int, p0: float) -> float | None:
    """One-sided ``P(X >= k)`` for ``X ~ Binomial(n, p0)`` (scipy's exact binomial test)."""
    if n <= 0:
        return None
    from scipy.stats import binomtest

    return float(binomtest(int(k), int(n), min(max(float(p0), 0.0), 1.0), alternative="greater").pvalue)


def runs(mask: np.ndarray) -> int:
    """How many runs of consecutive True values ``mask`` holds."""
    m = np.asarray(mask, dtype=bool)
    if not len(m):
        return 0
    return int(m[0]) + int(np.count_nonzero(m[1:] & ~m[:-1]))


@dataclass
class Cell:
    """One precision to judge: which slice rows are signals, and which of those are wins."""

    signals: np.ndarray  # bool, per slice row
    wins: np.ndarray  # bool, per slice row (a subset of signals)


@dataclass(frozen=True)
class BootstrapSettings:
    """How verdicts resample: repetitions, the shortest mean block (the label horizon), seed."""

    reps: int = 1000
    min_block: int = 1
    seed: int = 0


def block_length(cells: list[Cell], min_block: int) -> float:
    """The stationary bootstrap's mean block: the largest of the label horizon and Politis and
    White's optimal length (`arch.bootstrap.optimal_block_length`) of each cell's linearised
    precision ``win - p * signal``; capped at a third of the slice."""
    from arch.bootstrap import optimal_block_length

    n = len(cells[0].signals) if cells else 0
    block = float(max(1, min_block))
    for c in cells:
        s = c.signals.astype(np.float64)
        m = s.sum()
        if m < 2 or m == n:
            continue
        z = c.wins.astype(np.float64) - (c.wins.sum() / m) * s
        if np.ptp(z) == 0:
            continue
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", RuntimeWarning)
                b = float(optimal_block_length(z)["stationary"].iloc[0])
        except (ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        if math.isfinite(b):
            block = max(block, b)
    return float(min(block, max(1.0, n / 3)))


def bootstrap_precisions(
    cells: list[Cell], settings: BootstrapSettings, block_cells: list[Cell] | None = None
) -> tuple[np.ndarray, float]:
    """``(reps, len(cells))`` bootstrap precisions of every cell from one set of resampled
    indices (one stationary block bootstrap of the slice), and the mean block length used (from
    ``block_cells``, default all cells)."""
    from arch.bootstrap import StationaryBootstrap

    if not cells or len(cells[0].signals) < 2:
        return np.zeros((0, len(cells))), 0.0
    block = block_length(block_cells if block_cells is not None else cells, settings.min_block)
    matrix = np.column_stack([c.signals for c in cells] + [c.wins for c in cells]).astype(np.float32)
    k = len(cells)
    bs = StationaryBootstrap(block, matrix, seed=np.random.default_rng(settings.seed))
    out = np.full((settings.reps, k), np.nan)
    for r, (args, _) in enumerate(bs.bootstrap(settings.reps)):
        sums = args[0].sum(axis=0, dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r] = np.where(sums[:k] > 0, sums[k:] / sums[:k], np.nan)
    return out, block


def verdict(
    wins: int,
    n: int,
    break_even: float,
    min_signals: int,
    boot: np.ndarray | None,
    block: float,
    episodes: int,
) -> dict:
    """One verdict block: the precision, its count, the effective sample size, the interval the
    verdict uses, the binomial p-value at that size against ``break_even``, and the verdict.

    ``n_effective`` = p(1 - p) / (bootstrap variance of the precision), capped at ``n``; with no
    spread to measure (every signal won, or none did) it is the number of signal runs
    (``episodes``). ``ci_low``/``ci_high``: the 95 % Wilson interval of ``round(p * n_eff)`` wins
    in ``n_eff`` trials; ``p_value``: the exact one-sided binomial test of those counts at the
    break-even rate. The verdict is ``beats break-even`` only with ``n >= min_signals`` and
    ``ci_low`` above break-even.
    """
    p = wins / n if n else None
    w_low, w_high = wilson_interval(wins, n)
    out = {
        "precision": p,
        "n": int(n),
        "n_signals": int(n),
        "wins": int(wins),
        "n_effective": None,
        "design_effect": None,
        "ci_low": None,
        "ci_high": None,
        "ci_method": None,
        "bootstrap_block": None,
        "bootstrap_low": None,
        "bootstrap_high": None,
        "wilson_low": w_low,
        "wilson_high": w_high,
        "break_even": float(break_even),
        "p_value": None,
        "beats_break_even": False if n else None,
    }
    if not n:
        out["verdict"] = "no signals"
        return out
    n_eff = float(n)
    method = "binomial of the signals (no bootstrap)"
    if boot is not None and len(boot) > 1:
        finite = boot[np.isfinite(boot)]
        var = float(np.var(finite, ddof=1)) if len(finite) > 1 else 0.0
        if var > 0 and 0 < p < 1:
            n_eff = min(float(n), p * (1 - p) / var)
        else:
            n_eff = float(min(n, max(1, episodes)))
        method = f"binomial at the effective sample size of a stationary block bootstrap (mean block {block:.0f} rows)"
        if len(finite) > 1:
            out["bootstrap_low"], out["bootstrap_high"] = (
                float(q) for q in np.quantile(finite, [0.025, 0.975])
            )
        out["bootstrap_block"] = float(block)
    n_int = max(1, int(round(n_eff)))
    k_eff = int(round(p * n_int))
    low, high = wilson_interval(k_eff, n_int)
    out.update(
        n_effective=float(n_eff),
        design_effect=float(n / n_eff) if n_eff > 0 else None,
        ci_low=low,
        ci_high=high,
        ci_method=method,
        p_value=binomial_p_value(k_eff, n_int, break_even),
    )
    if n < min_signals:
        out["verdict"] = f"too few signals ({n})"
    elif low > break_even:
        out["verdict"] = BEATS
    else:
        out["verdict"] = "does not beat break-even"
    out["beats_break_even"] = out["verdict"] == BEATS
    return out


def judge(
    cells: dict,
    break_evens: dict,
    min_signals: int,
    settings: BootstrapSettings | None,
    block_keys: list | None = None,
) -> dict:
    """Verdicts of many cells of one slice (``{key: Cell}``) from one shared bootstrap, its mean
    block measured on the cells ``block_keys`` (default all: the optimal length is slow to find)."""
    keys = list(cells)
    live = [k for k in keys if cells[k].signals.any()]
    boot, block = (np.zeros((0, 0)), 0.0)
    if settings is not None and settings.reps > 1 and live:
        chosen = [cells[k] for k in (block_keys if block_keys is not None else live) if k in live]
        boot, block = bootstrap_precisions([cells[k] for k in live], settings, chosen)
    out = {}
    for k in keys:
        c = cells[k]
        col = boot[:, live.index(k)] if k in live and boot.size else None
        out[k] = verdict(
            int(np.count_nonzero(c.wins & c.signals)),
            int(np.count_nonzero(c.signals)),
            break_evens[k],
            min_signals,
            col,
            block,
            runs(c.signals),
        )
    return out


def precision_verdict(
    k: int, n: int, break_even: float, min_signals: int = 30, n_effective: float | None = None
) -> dict:
    """A verdict from counts alone: ``k`` wins of ``n`` signals judged at ``n_effective`` (default
    ``n``: signals counted as independent, which only holds for non-overlapping outcomes)."""
    out = verdict(k, n, break_even, min_signals, None, 0.0, n)
    if n and n_effective is not None and n_effective < n:
        n_int = max(1, int(round(n_effective)))
        k_eff = int(round(k / n * n_int))
        low, high = wilson_interval(k_eff, n_int)
        out.update(
            n_effective=float(n_effective),
            design_effect=n / n_effective,
            ci_low=low,
            ci_high=high,
            ci_method="binomial at the given effective sample size",
            p_value=binomial_p_value(k_eff, n_int, break_even),
        )
        if n >= min_signals:
            out["verdict"] = BEATS if low > break_even else "does not beat break-even"
        out["beats_break_even"] = out["verdict"] == BEATS
    return out
