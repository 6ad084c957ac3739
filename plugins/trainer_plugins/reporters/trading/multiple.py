"""Corrections for looking at many pairs and many thresholds at once: Benjamini-Hochberg q-values
(statsmodels) and the deflated Sharpe ratio of the best pair."""

from __future__ import annotations

import math

import numpy as np

EULER_GAMMA = 0.5772156649015329
FDR = 0.05


def bh_q_values(p_values: list[float | None]) -> list[float | None]:
    """Benjamini-Hochberg adjusted p-values (q-values) of the non-None p-values, None elsewhere
    (`statsmodels.stats.multitest.multipletests`, ``fdr_bh``)."""
    from statsmodels.stats.multitest import multipletests

    idx = [i for i, p in enumerate(p_values) if p is not None]
    out: list[float | None] = [None] * len(p_values)
    if not idx:
        return out
    _, q, _, _ = multipletests([float(p_values[i]) for i in idx], alpha=FDR, method="fdr_bh")
    for i, value in zip(idx, q):
        out[i] = float(value)
    return out


def expected_max_sharpe(trials: int, variance: float) -> float:
    """The Sharpe ratio the best of ``trials`` unskilled strategies reaches by luck, given the
    variance of the trials' Sharpe ratios (Bailey and Lopez de Prado 2014, eq. 8, the false
    strategy theorem): ``sqrt(V) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))``."""
    from scipy.stats import norm

    if trials < 2 or variance <= 0:
        return 0.0
    n = float(trials)
    return math.sqrt(variance) * (
        (1 - EULER_GAMMA) * norm.ppf(1 - 1 / n) + EULER_GAMMA * norm.ppf(1 - 1 / (n * math.e))
    )


def deflated_sharpe_ratio(
    sharpe: float, n_returns: int, skewness: float, kurtosis: float, trials: int, variance: float
) -> dict:
    """The deflated Sharpe ratio of a strategy chosen as the best of ``trials``.

    Bailey, D. H. and Lopez de Prado, M. (2014), "The Deflated Sharpe Ratio: Correcting for
    Selection Bias, Backtest Overfitting, and Non-Normality", Journal of Portfolio Management
    40(5), eq. 9 and 10: the probability that the true Sharpe ratio exceeds ``SR0``, the expected
    maximum of ``trials`` unskilled Sharpe ratios,

        DSR = Phi( (SR - SR0) * sqrt(T - 1) / sqrt(1 - g3 * SR + (g4 - 1) / 4 * SR^2) )

    with ``T`` returns, their skewness ``g3`` and (non-excess) kurtosis ``g4``; Sharpe ratios per
    return (here per trade, not annualised). ``variance``: of the trials' Sharpe ratios.
    """
    from scipy.stats import norm

    sr0 = expected_max_sharpe(trials, variance)
    denom = 1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2
    if n_returns < 2 or denom <= 0:
        return {"sharpe": float(sharpe), "sr0": float(sr0), "dsr": None}
    z = (sharpe - sr0) * math.sqrt(n_returns - 1) / math.sqrt(denom)
    return {"sharpe": float(sharpe), "sr0": float(sr0), "dsr": float(norm.cdf(z)), "z": float(z)}


def sharpe_sampling_variance(sharpe: float, n_returns: int, skewness: float, kurtosis: float) -> float:
    """The variance of a per-return Sharpe estimate (Mertens 2002; Bailey and Lopez de Prado 2012):
    ``(1 - g3 SR + (g4 - 1)/4 SR^2) / (T - 1)``; a stand-in for the trials' variance with one trial."""
    if n_returns < 2:
        return 0.0
    return max(0.0, (1 - skewness * sharpe + (kurtosis - 1) / 4 * sharpe**2) / (n_returns - 1))


def batch_corrections(rows: list[dict]) -> dict:
    """The batch's multiple-testing figures from its summary rows (each with ``trading``): q-values
    are written into the rows; returns the batch block."""
    p = []
    for r in rows:
        sim = (r.get("trading") or {}).get("simulation") or {}
        p.append(sim.get("random_entry_p_value"))
    q = bh_q_values(p)
    for r, value in zip(rows, q):
        if r.get("trading"):
            r["trading"]["q_value"] = value
    tested = [v for v in q if v is not None]
    cells = sum(int((r.get("trading") or {}).get("cells_looked_at") or 0) for r in rows)
    sims = []
    for r in rows:
        sim = (r.get("trading") or {}).get("simulation") or {}
        if sim.get("sharpe_per_trade") is not None and (sim.get("n_trades") or 0) >= 2:
            sims.append((r["pair"], sim))
    deflated = None
    if sims:
        best_pair, best = max(sims, key=lambda item: item[1]["sharpe_per_trade"])
        sharpes = np.array([s["sharpe_per_trade"] for _, s in sims])
        skew = float(best.get("skewness") or 0.0)
        kurt = float(best.get("kurtosis") or 3.0)
        sr, t = float(best["sharpe_per_trade"]), int(best["n_trades"])
        if len(sharpes) > 1:
            variance, source = float(np.var(sharpes, ddof=1)), "the pairs' Sharpe ratios"
        else:
            variance, source = (
                sharpe_sampling_variance(sr, t, skew, kurt),
                "the best pair's sampling variance",
            )
        trials = max(cells, len(sims))
        deflated = {
            "pair": best_pair,
            "trials": trials,
            "variance_from": source,
            "n_trades": t,
            "skewness": skew,
            "kurtosis": kurt,
            **deflated_sharpe_ratio(sr, t, skew, kurt, trials, variance),
        }
    smallest = [
        1.0 / (1 + int(((r.get("trading") or {}).get("simulation") or {}).get("random_entry_draws") or 0))
        for r in rows
        if ((r.get("trading") or {}).get("simulation") or {}).get("random_entry_draws")
    ]
    return {
        "p_value": "random-entry p-value of each pair's trade simulation",
        "method": "Benjamini-Hochberg (statsmodels fdr_bh)",
        "fdr": FDR,
        "pairs_tested": len(tested),
        "survivors": sum(1 for v in tested if v <= FDR),
        "cells_looked_at": cells,
        "smallest_possible_p_value": max(smallest) if smallest else None,
        "smallest_p_can_survive": (max(smallest) <= FDR / len(tested)) if smallest and tested else None,
        "deflated_sharpe": deflated,
    }
