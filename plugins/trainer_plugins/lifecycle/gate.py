"""The promotion gate: a candidate and the champion scored on the same fresh candles, with the
dependence-aware statistics, and a verdict that can be recomputed from what it records.

The fresh window starts ``purge`` candles after the last candle either model was trained on
(``purge`` = the candidate's label horizon, or its embargo when larger), so no label either model
learned from reaches into it. Each model is scored on the window by `trainer evaluate`
(`evaluate_predictions`): its own labeler's barriers and thresholds rule, one position at a time,
both paying the candidate's costs (fee, slippage, funding). The trades'
net returns, booked on their entry candle, make one series per model over the window's candles;
the candidate - champion difference is resampled with a stationary block bootstrap
(`arch.bootstrap`, blocks at least the horizon long) and, beside it, cut into non-overlapping
batches three block lengths long for a batch-means Student-t interval; the gate reads the lower of
the two lower bounds. Assumption: the per-candle series is stationary and its dependence dies out
within one batch (three block lengths); it is not assumed independent.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from trainer_core import ConfigError, DataError, read_candles

#: the share of the window's candles each model must be able to predict (the rest lack history)
MIN_COVERAGE = 0.99
#: the evaluation settings that price a trade; the candidate's apply to both versions
COST_KEYS = ("fee_pct", "slippage_bps", "funding_rate_pct")
#: evidence of an earlier format was decided by an earlier interval rule and does not replay
EVIDENCE_FORMAT = "pair-trainer promotion evidence v2"
#: a batch-means batch spans this many bootstrap block lengths
BATCH_BLOCKS = 3
#: the report's random-entry baseline is not part of the gate: a few draws keep a promotion fast
GATE_EVALUATION = {"random_entry_draws": 100}


@dataclass
class Scored:
    """One model over the window: its per-candle net return series and its simulation."""

    version: int
    pnl: np.ndarray
    simulation: dict
    horizon: int
    coverage: float


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.timezone.utc).isoformat(timespec="seconds")


def _ms(text: str) -> int:
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return int(value.timestamp() * 1000)


def purge_of(model) -> int:
    """Candles between the end of a model's training data and the start of a fresh window."""
    spec = model.spec
    horizon = (model.info.get("labels") or {}).get("horizon") or (spec.get("resolved") or {}).get("horizon")
    if horizon is None:  # a model folder that recorded no horizon: its labeler's
        from ..labelers.tp_sl import settings_of

        horizon = settings_of(spec["labels"]).future_window
    horizon = int(horizon)
    embargo = spec.get("split", {}).get("embargo", "auto")
    return horizon if embargo in (None, "auto") else max(horizon, int(embargo))


def read_fresh_candles(model, data_path: str):
    """The pair's candles from ``data_path`` (a file or a folder), as `trainer predict` reads them."""
    spec = model.prediction_spec(data_path)
    market = dict(spec.data.params or {}).get("market")
    return read_candles(data_path, model.pair, spec.data.timeframe, market, echo=lambda _m: None)


def cost_settings(model) -> dict:
    """The candidate's cost settings, applied to both versions: fee, slippage and funding."""
    e = model.spec.get("evaluation") or {}
    return {k: e.get(k) for k in COST_KEYS if k in e}


def settings_of(model, costs: dict) -> list[str]:
    """The version's own labeler and evaluation settings as `trainer evaluate` takes them
    (``--set``), with ``costs`` in place of its own."""
    spec = model.spec
    out = [f"data.timeframe={json.dumps(spec['data']['timeframe'])}"]
    if spec["data"].get("params"):
        out.append(f"data.params={json.dumps(spec['data']['params'])}")
    for section in ("labels", "evaluation"):
        for key, value in (spec.get(section) or {}).items():
            value = costs[key] if section == "evaluation" and key in costs else value
            value = GATE_EVALUATION.get(key, value) if section == "evaluation" else value
            out.append(f"{section}.{key}={json.dumps(value)}")
    return out


def score(
    location: str,
    version: int,
    data_path: str,
    candles,
    start_ms: int,
    end_ms: int,
    costs: dict,
    horizon: int,
) -> Scored:
    """Trade the version at ``location`` over the entry candles ``start_ms`` .. ``end_ms`` through
    `trainer evaluate` (its thresholds rule, costs and simulation), as a per-candle series."""
    from trainer_core import load_pair_model, read_for_prediction

    from ..reporters.trading.evaluate import evaluate_predictions

    model = load_pair_model(location, allow_expired=True)
    predictions = model.predict(read_for_prediction(model, data_path), where=str(data_path))
    report = evaluate_predictions(
        predictions,
        data_path,
        None,
        pair=model.pair,
        sets=settings_of(model, costs),
        start=_iso(start_ms),
        end=_iso(end_ms),
    )
    sim = report["simulation"]
    if not sim.get("available", True):
        raise DataError(
            f"version #{version} cannot be traded on these candles: {sim.get('reason')}.",
            "The gate needs the tp-sl labeler's exits (labels.method tp-sl).",
        )
    window = candles.time_ms[(candles.time_ms >= start_ms) & (candles.time_ms <= end_ms)]
    pnl = np.zeros(len(window))
    for trade in sim["trades"]:
        pnl[int(np.searchsorted(window, _ms(trade["entry_time"])))] += trade["net_return"]
    scored_rows = int(report["evaluated"]["rows_scored"])
    verdicts = {
        side: {
            k: v
            for k, v in (report.get("break_even") or {}).get(side, {}).items()
            if not isinstance(v, (list, dict))
        }
        for side in ("LONG", "SHORT")
    }
    return Scored(
        version,
        pnl,
        {**sim, "break_even": verdicts},
        horizon,
        scored_rows / len(window) if len(window) else 0.0,
    )


def buckets(series: np.ndarray, size: int) -> np.ndarray:
    """Sums over consecutive runs of ``size`` candles (the last run may be shorter): the totals
    are unchanged, and a sparse trade series becomes one whose dependence can be measured."""
    if size <= 1:
        return np.asarray(series, dtype=np.float64)
    pad = (-len(series)) % size
    return np.concatenate([series, np.zeros(pad)]).reshape(-1, size).sum(axis=1)


def block_length(series: list[np.ndarray], horizon: int, fixed: int | None) -> tuple[int, int]:
    """``(bucket, blocks)``: the bootstrap resamples sums over ``bucket`` candles in blocks of mean
    length ``blocks`` buckets. With ``fixed`` (the policy's block length in candles): buckets of
    one candle, blocks of ``fixed``. Otherwise buckets of the label horizon and the largest of
    `arch`'s optimal stationary block lengths (Politis and White) of the bucketed series, at
    least one bucket: a block never spans less than a label's horizon."""
    if fixed:
        return 1, int(fixed)
    from arch.bootstrap import optimal_block_length

    size = max(1, int(horizon))
    best = 1
    for s in series:
        b = buckets(s, size)
        if np.count_nonzero(b) > 2 and np.std(b) > 0:
            found = float(optimal_block_length(b)["stationary"].iloc[0])
            if math.isfinite(found):
                best = max(best, int(math.ceil(found)))
    return size, best


def _bootstrap(
    series: np.ndarray, bucket: int, blocks: int, draws: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile interval of the series' total under a stationary block bootstrap of its buckets."""
    from arch.bootstrap import StationaryBootstrap

    values = buckets(np.asarray(series, dtype=np.float64), bucket)
    if not np.any(values):
        return 0.0, 0.0
    bs = StationaryBootstrap(blocks, values, seed=np.random.default_rng(seed))
    totals = np.array([float(np.sum(x[0][0])) for x in bs.bootstrap(draws)])
    tail = (1 - confidence) / 2
    return float(np.quantile(totals, tail)), float(np.quantile(totals, 1 - tail))


def _batch_means(series: np.ndarray, bucket: int, batch: int, confidence: float) -> dict:
    """Student-t interval of the series' total from non-overlapping batches of ``batch`` buckets
    (the batch-means method): with ``k`` full batches of sums ``s_j``, the total's variance is
    ``(n / batch) * var(s_j)`` over ``n`` buckets, and the interval uses ``k - 1`` degrees of
    freedom. Fewer than two full batches: no interval (``ci_low`` / ``ci_high`` None)."""
    from scipy import stats

    values = buckets(np.asarray(series, dtype=np.float64), bucket)
    batch = max(1, int(batch))
    k = len(values) // batch
    out: dict = {"batch_candles": bucket * batch, "batches": int(k), "ci_low": None, "ci_high": None}
    if k < 2:
        return out
    sums = values[: k * batch].reshape(k, batch).sum(axis=1)
    total = float(np.sum(values))
    se = math.sqrt(len(values) / batch * float(np.var(sums, ddof=1)))
    t = float(stats.t.ppf(1 - (1 - confidence) / 2, k - 1))
    out.update(ci_low=total - t * se, ci_high=total + t * se)
    return out


def _interval(
    series: np.ndarray, bucket: int, blocks: int, draws: int, confidence: float, seed: int
) -> tuple[float | None, float | None, dict]:
    """The gate's interval of the series' total: the wider of the block bootstrap's percentile
    interval and the batch-means t interval on each side; ``(None, None, ...)`` when too few
    batches make the latter undefined (no decision can rest on it)."""
    b_low, b_high = _bootstrap(series, bucket, blocks, draws, confidence, seed)
    bm = _batch_means(series, bucket, BATCH_BLOCKS * blocks, confidence)
    parts = {"bootstrap_low": b_low, "bootstrap_high": b_high, "batch_means": bm}
    if bm["ci_low"] is None:
        if not np.any(series):
            return 0.0, 0.0, parts
        return None, None, parts
    return min(b_low, bm["ci_low"]), max(b_high, bm["ci_high"]), parts


def _fmt(x: float | None) -> str:
    return "undefined (too few batches)" if x is None else f"{x:+.4f}"


def decide(candidate, champion, data_path: str, policy: dict, costs: dict | None = None) -> dict:
    """The gate's evidence and verdict for ``candidate`` (``(version, location, record)``) against
    ``champion`` (the same, or None). ``costs`` (default: the candidate's) apply to both. Nothing is
    written; the caller records the result."""
    from trainer_core import load_pair_model

    promo = policy["promotion"]
    c_version, c_location, c_record = candidate
    c_model = load_pair_model(c_location, allow_expired=True)
    trained_until = [c_record.get("trained_until")]
    purges = [purge_of(c_model)]
    if champion is not None:
        trained_until.append(champion[2].get("trained_until"))
        purges.append(purge_of(load_pair_model(champion[1], allow_expired=True)))
    if any(t is None for t in trained_until):
        raise ConfigError(
            f"{c_model.pair}: a version's training span is unknown, so no fresh window can be chosen.",
            "Register versions trained by this trainer (their metadata or run records the span).",
        )
    step_ms = _timeframe_ms(c_model)
    purge = purges[0]
    start_ms = max(_ms(t) for t in trained_until) + (purge + 1) * step_ms
    candles = read_fresh_candles(c_model, data_path)
    costs = cost_settings(c_model) if costs is None else dict(costs)
    horizon_max = max(purges)
    # entries whose label horizon is inside the file: the same last entry candle for both models
    end_ms = int(candles.time_ms[-1]) - horizon_max * step_ms if len(candles) else start_ms - 1
    window_candles = int(np.count_nonzero((candles.time_ms >= start_ms) & (candles.time_ms <= end_ms)))
    evidence = {
        "format": EVIDENCE_FORMAT,
        "pair": c_model.pair,
        "data": {"path": str(data_path), "sha256": _data_sha(candles)},
        "window": {
            "start": _iso(start_ms),
            "end": _iso(end_ms) if end_ms >= start_ms else None,
            "candles": window_candles,
            "purge_candles": purge,
            "rule": "entries strictly after the last candle either version was trained on, past the "
            "candidate's purge, and early enough that their label horizon lies inside the data",
        },
        "costs": costs,
        "evaluation": "trainer evaluate (evaluate_predictions): each version's thresholds rule, these costs",
        "policy": promo,
        "candidate": {"version": c_version, "marker_sha256": c_record.get("marker_sha256")},
        "champion": None
        if champion is None
        else {"version": champion[0], "marker_sha256": champion[2].get("marker_sha256")},
    }
    if window_candles < 2:
        first, last = (_iso(candles.time_ms[0]), _iso(candles.time_ms[-1])) if len(candles) else (None, None)
        raise DataError(
            f"{c_model.pair}: the candles ({first} to {last}) hold no fresh window: it must start after "
            f"{_iso(start_ms - step_ms)} (the training data's end plus {purge} candles) and leave "
            f"{horizon_max} candles after it for the labels.",
            "Pass candles that continue past the versions' training data (trainer download).",
        )
    scored = [score(c_location, c_version, data_path, candles, start_ms, end_ms, costs, purges[0])]
    if champion is not None:
        scored.append(score(champion[1], champion[0], data_path, candles, start_ms, end_ms, costs, purges[1]))
    for s in scored:
        if s.coverage < MIN_COVERAGE:
            raise DataError(
                f"{c_model.pair}: version #{s.version} can predict only {s.coverage:.1%} of the fresh window's "
                "candles: the file holds too little history before the window for its features.",
                f"Pass candles that start at least the model's required history before {_iso(start_ms)}.",
            )
    judged = judge(scored[0], scored[1] if len(scored) > 1 else None, promo, horizon_max)
    for side in ("candidate", "champion"):
        figures = judged.pop(side)
        if figures is not None:
            evidence[side].update(figures)
    evidence.update(judged)
    return evidence


def judge(cand: Scored, champ: Scored | None, promo: dict, horizon: int) -> dict:
    """The checks and the verdict from the two per-candle series (the statistics alone).

    Returns ``bootstrap``, ``candidate`` / ``champion`` (each's simulation and interval),
    ``difference``, ``checks``, ``verdict`` (promote | keep) and ``why``.
    """
    scored = [cand] if champ is None else [cand, champ]
    bucket, blocks = block_length([s.pnl for s in scored], horizon, promo.get("block_length"))
    draws, conf, seed = int(promo["draws"]), float(promo["confidence"]), int(promo["seed"])
    c_low, c_high, c_parts = _interval(cand.pnl, bucket, blocks, draws, conf, seed)
    report = {
        "method": "the wider of a stationary block bootstrap (arch) percentile interval and a "
        "batch-means Student-t interval (non-overlapping batches of three block lengths, df = batches - 1) "
        "of per-bucket net returns",
        "bucket_candles": bucket,
        "batch_candles": bucket * blocks * BATCH_BLOCKS,
        "block_length": bucket * blocks,
        "block_length_buckets": blocks,
        "draws": draws,
        "confidence": conf,
        "seed": seed,
    }
    evidence = {"bootstrap": report, "candidate": {}, "champion": None}
    evidence["candidate"].update(_summary(cand, c_low, c_high, c_parts))
    checks = []
    min_trades = int(promo["min_trades"])
    enough = cand.simulation["n_trades"] >= min_trades
    checks.append(
        {
            "check": "enough independent trades",
            "passed": enough,
            "detail": f"{cand.simulation['n_trades']} non-overlapping trades, at least {min_trades} needed",
        }
    )
    above = c_low is not None and c_low > 0
    checks.append(
        {
            "check": "net return interval above break-even",
            "passed": above,
            "detail": f"total net return {cand.simulation['total_net_return']:+.4f}, "
            f"{conf:.0%} interval [{_fmt(c_low)}, {_fmt(c_high)}] must lie above 0",
        }
    )
    if champ is not None:
        h_low, h_high, h_parts = _interval(champ.pnl, bucket, blocks, draws, conf, seed)
        evidence["champion"] = _summary(champ, h_low, h_high, h_parts)
        d_low, d_high, d_parts = _interval(cand.pnl - champ.pnl, bucket, blocks, draws, conf, seed)
        delta = float(np.sum(cand.pnl - champ.pnl))
        evidence["difference"] = {"total_net_return": delta, "ci_low": d_low, "ci_high": d_high, **d_parts}
        min_delta = float(promo["min_delta"])
        checks.append(
            {
                "check": "beats the champion",
                "passed": d_low is not None and d_low > min_delta,
                "detail": f"candidate - champion {delta:+.4f}, {conf:.0%} interval [{_fmt(d_low)}, {_fmt(d_high)}]; "
                f"its lower bound must exceed promotion.min_delta {min_delta:+.4f}",
            }
        )
        margin = float(promo["max_drawdown_margin"])
        dd_c, dd_h = cand.simulation["max_drawdown"], champ.simulation["max_drawdown"]
        checks.append(
            {
                "check": "drawdown no worse than the champion's",
                "passed": dd_c <= dd_h + margin,
                "detail": f"max drawdown {dd_c:.4f} against the champion's {dd_h:.4f} + margin {margin:.4f}",
            }
        )
    evidence["checks"] = checks
    if not enough:
        verdict, why = (
            "keep",
            (
                f"too few signals to decide: {cand.simulation['n_trades']} non-overlapping trades of "
                f"{min_trades} needed; the champion stays"
            ),
        )
    elif all(c["passed"] for c in checks):
        verdict, why = "promote", "every check passed"
    else:
        failed = [c["check"] for c in checks if not c["passed"]]
        verdict, why = "keep", "failed: " + "; ".join(failed)
    evidence["verdict"] = verdict
    evidence["why"] = why
    return evidence


def _summary(s: Scored, low: float | None, high: float | None, parts: dict) -> dict:
    sim = {k: v for k, v in s.simulation.items() if k != "trades"}
    return {
        "simulation": sim,
        "trades": s.simulation["trades"],
        "total_net_return": s.simulation["total_net_return"],
        "ci_low": low,
        "ci_high": high,
        **parts,
        "coverage": s.coverage,
        "pnl_sha256": "sha256:" + hashlib.sha256(np.ascontiguousarray(s.pnl).tobytes()).hexdigest(),
    }


def _timeframe_ms(model) -> int:
    from trainer_core import timeframe_ms

    return int(timeframe_ms(model.spec["data"]["timeframe"]))


def _data_sha(candles) -> str:
    return candles.sha256 or "unknown"
