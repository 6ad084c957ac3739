"""Reporter `decision`: ``decision_{tag}.json``, the rule that turns probabilities into a trading
signal (LONG / SHORT / none), chosen on the validation slice; `trainer predict`, `predict_latest`
and the exported freqtrade strategy apply it."""

from __future__ import annotations

import numpy as np

from trainer_core import hookimpl

CRITERION = (
    "per side, the confidence threshold whose validation signals' precision has the highest lower "
    "bound of its 95 % interval minus the break-even win rate (the trading report's choice), among "
    "thresholds with at least evaluation.min_signals signals; a side with no such threshold never signals"
)


def choose_rule(result) -> dict:
    """The decision rule: ``evaluation.trade_threshold`` for both sides when it is set, else the
    thresholds the validation slice supports per side (the trading report's choice), else the
    arg-max class."""
    from .trading import choose_thresholds
    from .trading.report import Scored, market_from_pair_data, metrics_of
    from .trading.settings import evaluation_of

    spec, data = result.spec, result.data
    e = evaluation_of(spec)
    fixed = e.get("trade_threshold")
    if fixed is not None:
        return {
            "rule": "thresholds",
            "LONG": float(fixed),
            "SHORT": float(fixed),
            "chosen_on": "evaluation.trade_threshold",
            "criterion": "the manifest's evaluation.trade_threshold, both sides",
        }
    ev = result.validation
    if ev is None or not len(ev.rows):
        return {"rule": "arg-max", "chosen_on": None, "criterion": "no validation predictions"}
    min_signals = int(e.get("min_signals", 30))
    report = metrics_of(
        Scored(ev.name, np.asarray(ev.rows, dtype=np.int64), ev.y_true, ev.y_prob),
        market_from_pair_data(data, spec),
        spec,
        train_counts=data.class_counts(result.split.train_idx),
        horizon=int(data.extra.get("horizon", spec.resolved["horizon"])),
        seed=int(spec.train.seed),
    )
    chosen = choose_thresholds(report)
    if all(v is None for v in chosen.values()):
        return {
            "rule": "arg-max",
            "chosen_on": "validation",
            "criterion": f"no threshold gave {min_signals} signals on either side on validation: the arg-max class",
        }
    out: dict = {"rule": "thresholds", "chosen_on": "validation", "criterion": CRITERION}
    rows = {r["threshold"]: r for r in report["thresholds"]}
    for side, thr in chosen.items():
        out[side] = None if thr is None else float(thr)
        if thr is not None:
            s = rows[thr][side]
            out[f"{side}_validation"] = {
                "signals": int(s["signals"]),
                "precision": s.get("precision"),
                "ci_low": s.get("ci_low"),
                "break_even": report["break_even"][side]["break_even_win_rate"],
            }
    return out


class DecisionReporter:
    """decision_{tag}.json: per side the probability a signal needs (or the arg-max class)."""

    def check(self, evaluation) -> None:
        """Refuse an unknown or out-of-bounds ``evaluation`` setting before any work."""
        from .trading.settings import evaluation_settings

        evaluation_settings(evaluation)

    def report_pair(self, result, out) -> dict:
        """Write ``decision_{tag}.json``; return the rule."""
        rule = {"pair": result.spec.pair, "tag": result.spec.tag, **choose_rule(result)}
        out.write_json(out.name("decision", "json"), rule)
        return {k: rule.get(k) for k in ("rule", "LONG", "SHORT")}


@hookimpl
def trainer_register_reporters(register):
    """Register the ``decision`` reporter."""
    register("decision", DecisionReporter)
