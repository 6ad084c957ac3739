"""The whole trading report of one scored slice: settings and costs from the spec, metrics with
dependence-aware verdicts, the trade simulation with its baselines, the headline figures.

A trained pair (`report_for`) and `trainer evaluate` (`build_report`) go through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...labelers.tp_sl import settings_of
from .metrics import threshold_choice, trading_metrics
from .settings import evaluation_of
from .simulation import (
    Barriers,
    Costs,
    buy_and_hold,
    exit_offsets,
    price_path,
    random_entries,
    simulate,
)

#: Binance's taker fees, per side, at the lowest tier without a BNB discount: spot 0.1 %,
#: USDⓈ-M futures 0.05 %. A round trip pays two.
TAKER_FEE_PCT = {"spot": 0.1, "futures": 0.05}
#: a futures position pays (LONG) or receives (SHORT) this much per 8 hours by default: Binance's
#: interest component alone (0.03 % a day), the funding rate when the premium is zero
DEFAULT_FUNDING_8H_PCT = 0.01
DEFAULT_RANDOM_ENTRY_DRAWS = 10_000
DEFAULT_BOOTSTRAP_REPS = 1000


def market_of(spec) -> str:
    """``futures`` when the pair's data are USDⓈ-M futures candles, else ``spot``."""
    market = getattr(spec, "market", None) or dict(spec.data.get("params") or {}).get("market") or "spot"
    return "futures" if str(market).lower().startswith("futures") else "spot"


def costs_of(spec) -> Costs:
    """The costs of one pair's trades: ``evaluation.fee_pct`` (null: two taker fees of its market),
    ``evaluation.slippage_bps`` per side and, for futures, ``evaluation.funding_rate_pct``."""
    e = evaluation_of(spec)
    market = market_of(spec)
    fee = e.get("fee_pct")
    if fee is None:
        fee = 2 * TAKER_FEE_PCT[market]
    funding = e.get("funding_rate_pct")
    if funding is None:
        funding = DEFAULT_FUNDING_8H_PCT if market == "futures" else 0.0
    history, source = None, None
    if e.get("funding_file"):
        from .simulation import read_funding_file

        history, source = read_funding_file(e.get("funding_file")), f"file {e.get('funding_file')}"
    return Costs(float(fee), float(e.get("slippage_bps") or 0.0), float(funding), market, history, source)


@dataclass
class Scored:
    """Predictions on one slice: data rows (in time order), true classes, probabilities."""

    name: str
    rows: np.ndarray
    y_true: np.ndarray
    y_prob: np.ndarray


@dataclass
class Market:
    """What the simulation needs per data row: times, realised returns, prices, the barriers.

    ``close``/``high``/``low`` None (with ``reason``) when exit candles cannot be known.
    """

    timestamps: np.ndarray
    long_return: np.ndarray | None
    short_return: np.ndarray | None
    close: np.ndarray | None
    high: np.ndarray | None
    low: np.ndarray | None
    barriers: Barriers | None
    reason: str | None = None
    source: str = "the candles"


def metrics_of(scored: Scored, market: Market, spec, train_counts: dict, horizon: int, seed: int) -> dict:
    """`trading_metrics` of one slice with the spec's evaluation settings."""
    e = evaluation_of(spec)
    costs = costs_of(spec)
    barriers = settings_of(spec)
    lr = market.long_return[scored.rows] if market.long_return is not None else None
    sr = market.short_return[scored.rows] if market.short_return is not None else None
    out = trading_metrics(
        scored.y_true,
        scored.y_prob,
        train_class_counts=train_counts,
        take_profit_pct=barriers.take_profit_pct,
        stop_loss_pct=barriers.stop_loss_pct,
        short_take_profit_pct=barriers.short_tp,
        short_stop_loss_pct=barriers.short_sl,
        fee_pct=costs.round_trip_pct,
        thresholds=tuple(e.thresholds),
        long_return=lr,
        short_return=sr,
        calibration_bins=e.calibration_bins,
        min_signals=int(e.get("min_signals", 30)),
        horizon=horizon,
        bootstrap_reps=int(e.get("bootstrap_reps", DEFAULT_BOOTSTRAP_REPS)),
        seed=seed,
    )
    out["costs"] = costs.as_dict()
    return out


def simulation_for(scored: Scored, market: Market, spec, seed: int, draws: int | None = None):
    """The ``simulation`` section for one scored slice, and the series its chart draws (``draws``:
    random-entry draws instead of ``evaluation.random_entry_draws``)."""
    if market.long_return is None or market.short_return is None:
        return {
            "available": False,
            "reason": "the data carry no realised returns (long_return / short_return)",
        }, None
    if market.close is None or market.barriers is None:
        return {"available": False, "reason": market.reason or "exit candles are unknown"}, None
    e = evaluation_of(spec)
    costs = costs_of(spec)
    rows = np.asarray(scored.rows, dtype=np.int64)
    long_r = np.asarray(market.long_return, dtype=np.float64)
    short_r = np.asarray(market.short_return, dtype=np.float64)
    off_long, off_short, adjusted = exit_offsets(
        market.close, market.high, market.low, rows, market.barriers, long_r, short_r
    )
    last = len(market.close) - 1
    exit_long, exit_short = np.minimum(rows + off_long, last), np.minimum(rows + off_short, last)
    sim = simulate(
        rows,
        scored.y_prob,
        market.timestamps,
        long_r,
        short_r,
        exit_long,
        exit_short,
        threshold=e.get("trade_threshold"),
        costs=costs,
    )
    sim["available"] = True
    sim["slice"] = scored.name
    sim["exit_prices"] = market.source
    sim["exit_rows_matched_within_tolerance"] = int(adjusted)
    eligible = np.isfinite(long_r[rows]) & np.isfinite(short_r[rows])
    bh = buy_and_hold(market.close, rows[eligible], costs.round_trip_pct)
    ms = np.asarray(market.timestamps).astype("datetime64[ms]").astype(np.int64)
    er = rows[eligible]
    # random entries pay the same funding as the model's trades would at those candles
    f_long = costs.funding_paid(ms[er], ms[exit_long[eligible]])
    f_short = costs.funding_paid(ms[er], ms[exit_short[eligible]])
    draws = int(draws or e.get("random_entry_draws", DEFAULT_RANDOM_ENTRY_DRAWS))
    rnd = random_entries(
        er,
        exit_long[eligible],
        exit_short[eligible],
        long_r[er] - f_long,
        short_r[er] + f_short,
        n_trades=sim["n_trades"],
        long_share=(sim["n_long"] / sim["n_trades"]) if sim["n_trades"] else 0.5,
        fee_pct=costs.round_trip_pct,
        model_total=sim["total_net_return"],
        draws=draws,
        seed=seed,
        max_offset=market.barriers.future_window,
    )
    rnd["smallest_possible_p_value"] = 1.0 / (1 + draws) if rnd.get("draws") else None
    totals = rnd.pop("totals")
    sim["baselines"] = {"buy_and_hold": bh, "random_entry": rnd}
    chart = None
    if eligible.any():
        step = max(1, len(er) // 1000)
        chart = {
            "bh_time": np.asarray(market.timestamps)[er[::step]],
            "bh": market.close[er[::step]] / market.close[er[0]] - 1.0,
            "random_totals": np.asarray(totals),
        }
    return sim, chart


def build_report(
    scored: Scored,
    market: Market,
    spec,
    *,
    train_counts: dict,
    horizon: int,
    seed: int,
    validation: Scored | None = None,
    chosen: dict | None = None,
    measured_on: str,
) -> tuple[dict, dict | None]:
    """The report on ``scored`` (its ``split`` is ``measured_on``): thresholds are chosen on
    ``validation`` when given, else taken from ``chosen``; returns the report and the chart series."""
    report = metrics_of(scored, market, spec, train_counts, horizon, seed)
    val = (
        metrics_of(validation, market, spec, train_counts, horizon, seed) if validation is not None else None
    )
    if val is None and measured_on == "validation":
        val = report
    report = {"split": measured_on, **report}
    report["threshold_choice"] = threshold_choice(val, report, measured_on, chosen)
    sim, chart = simulation_for(scored, market, spec, seed)
    report["simulation"] = sim
    return report, chart


def market_from_pair_data(data, spec) -> Market:
    """The trained pair's market: prices rebuilt from the seed's change features, the barriers the
    data were labelled with."""
    path = price_path(data.features, data.feature_names)
    method = spec.labels.get("method", "tp-sl")
    reason = None
    if path is None:
        reason = "the data lack close_change / high_change / low_change, so exit candles are unknown"
    elif method != "tp-sl":
        reason = f"exit candles are known for the tp-sl labeler only (labels.method is {method!r})"
    lp = {
        **settings_of(spec).as_dict(),
        **{k: v for k, v in (data.label_params or {}).items() if v is not None},
    }
    barriers = Barriers(
        int(lp["future_window"]),
        float(lp["take_profit_pct"]),
        float(lp["stop_loss_pct"]),
        float(lp["short_take_profit_pct"]),
        float(lp["short_stop_loss_pct"]),
    )
    close, high, low = path if (path is not None and reason is None) else (None, None, None)
    return Market(
        data.timestamps,
        data.long_return,
        data.short_return,
        close,
        high,
        low,
        barriers,
        reason,
        "prices rebuilt from the seed's change features",
    )


def market_of_result(result):
    """The trained pair's market and a function taking data rows to its rows: the real candles the
    rows were made from when the engine passes them (exit candles from real highs and lows, any
    feature set), else prices rebuilt from the seed's change features (data rows)."""
    spec, data = result.spec, result.data
    candles = getattr(result, "candles", None)
    method = spec.labels.get("method", "tp-sl")
    if candles is not None and len(candles) and method == "tp-sl" and data.long_return is not None:
        ts = np.asarray(data.timestamps).astype("datetime64[ms]").astype(np.int64)
        where = np.searchsorted(candles.time_ms, ts)
        inside = where < len(candles)
        if inside.all() and np.array_equal(candles.time_ms[where], ts):
            n = len(candles)
            long_r, short_r = np.full(n, np.nan), np.full(n, np.nan)
            long_r[where] = data.long_return
            short_r[where] = data.short_return
            base = market_from_pair_data(data, spec)
            market = Market(
                candles.time_ms.astype("datetime64[ms]"),
                long_r,
                short_r,
                np.asarray(candles.close, dtype=np.float64),
                np.asarray(candles.high, dtype=np.float64),
                np.asarray(candles.low, dtype=np.float64),
                base.barriers,
            )
            return market, lambda rows: where[np.asarray(rows, dtype=np.int64)]
    return market_from_pair_data(data, spec), lambda rows: np.asarray(rows, dtype=np.int64)


def report_for(result) -> tuple[dict, dict | None]:
    """A trained pair's report: on the test slice when there is one (thresholds chosen on
    validation), else on the validation slice, which early-stopped the model (said so)."""
    spec, data = result.spec, result.data
    test = result.evaluations.get("test")
    has_test = test is not None and len(test.rows) > 0  # split.test, or a walk-forward's last block
    val = result.validation

    market, to_rows = market_of_result(result)

    def scored(ev):
        return Scored(ev.name, to_rows(ev.rows), ev.y_true, ev.y_prob)

    horizon = int(data.extra.get("horizon", spec.resolved["horizon"]))
    report, chart = build_report(
        scored(test) if has_test else scored(val),
        market,
        spec,
        train_counts=data.class_counts(result.split.train_idx),
        horizon=horizon,
        seed=int(spec.train.seed),
        validation=scored(val) if has_test else None,
        measured_on="test" if has_test else "validation",
    )
    report["measured_on_note"] = (
        "test slice: untouched by training, early stopping and the choice of thresholds"
        if has_test
        else "measured on the early-stopping slice (split.test is 0): the validation rows chose the best "
        "epoch and the learning-rate schedule, so these figures are optimistic"
    )
    return report, chart


#: one side's figures in the headline `report_pair` returns; the batch summary shows these
SIDE_HEADLINE = (
    "precision",
    "n",
    "n_signals",
    "n_effective",
    "ci_low",
    "ci_high",
    "wilson_low",
    "wilson_high",
    "p_value",
    "verdict",
    "beats_break_even",
    "edge",
    "break_even",
)


def headline(report: dict, tag: str) -> dict:
    """The figures `report_pair` returns (the batch summary shows them)."""
    out = {
        "split": report["split"],
        "mcc": report["model"]["mcc"],
        "macro_f1": report["model"]["macro_f1"],
        "balanced_accuracy": report["model"]["balanced_accuracy"],
        "baseline_hold_macro_f1": report["baselines"]["always_hold"]["macro_f1"],
        "report": f"trading_{tag}.html",
        "cells_looked_at": 2 * (1 + len(report["thresholds"])),
    }
    for side in ("LONG", "SHORT"):
        b = report["break_even"][side]
        out[side] = {k: b.get(k) for k in SIDE_HEADLINE}
        out[side]["break_even"] = b["break_even_win_rate"]
    sim = report["simulation"]
    out["simulation"] = (
        None
        if not sim.get("available")
        else {
            "n_trades": sim["n_trades"],
            "total_net_return": sim["total_net_return"],
            "max_drawdown": sim["max_drawdown"],
            "sharpe_per_trade": sim["sharpe_per_trade"],
            "skewness": sim.get("skewness"),
            "kurtosis": sim.get("kurtosis"),
            "random_entry_p_value": sim["baselines"]["random_entry"]["p_value"],
            "random_entry_draws": sim["baselines"]["random_entry"]["draws"],
        }
    )
    return out


def walk_forward_for(result, folds: dict) -> dict:
    """The walk-forward section: each fold's figures on its untouched outer block with its trade
    simulation's trades and net return, and the folds' trades stitched into one out-of-sample
    equity curve (the blocks follow each other in time, so their trades do too)."""
    from .simulation import equity_stats

    spec = result.spec
    evaluations = getattr(result, "fold_evaluations", None) or []
    market, to_rows = market_of_result(result)
    rows = []
    trades: list[dict] = []
    for fold, ev in zip(folds.get("folds", []), evaluations):
        row = dict(fold)
        if ev is not None and len(ev.rows):
            sim, _ = simulation_for(
                Scored(ev.name, to_rows(ev.rows), ev.y_true, ev.y_prob),
                market,
                spec,
                int(spec.train.seed),
                draws=1,  # per fold the trades only; the random-entry baseline is the headline slice's
            )
            if sim.get("available"):
                row["n_trades"] = sim["n_trades"]
                row["total_net_return"] = sim["total_net_return"]
                trades += sim["trades"]
        rows.append(row)
    net = np.asarray([t["net_return"] for t in trades], dtype=np.float64)
    nets = [r["total_net_return"] for r in rows if r.get("total_net_return") is not None]
    out = {
        **{k: v for k, v in folds.items() if k != "folds"},
        "folds": rows,
        "note": "Each fold early-stopped on the end of its own training rows and is scored on its outer "
        "block, which its training and early stopping never touched; the folds' trades, stitched, make one "
        "out-of-sample equity curve.",
        "out_of_sample": {
            "n_trades": int(len(net)),
            **equity_stats(net),
            "trades": trades,
        }
        if trades
        else None,
    }
    if nets:
        out["spread"] = {
            **out.get("spread", {}),
            "total_net_return": {
                "mean": float(np.mean(nets)),
                "std": float(np.std(nets, ddof=1)) if len(nets) > 1 else 0.0,
                "min": float(np.min(nets)),
                "max": float(np.max(nets)),
            },
        }
    return out
