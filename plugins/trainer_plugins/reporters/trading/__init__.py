"""Reporter `trading`: does the model's signal beat doing nothing, after costs?

On the test slice when there is one (else the validation slice, said to be optimistic):
classification scores next to two baselines, LONG / SHORT precision against the break-even win
rate with verdicts that account for overlapping signals, signals per confidence threshold, a
one-position-at-a-time trade simulation with its costs and baselines, calibration. Writes
``trading_{tag}.json``, ``trading_{tag}.png`` and a page ``trading_{tag}.html``.

Modules: `stats` (verdicts), `metrics` (scores, thresholds), `simulation` (trades, costs),
`report` (one slice's whole report), `plots`, `render` (+ ``templates/trading.html``),
`evaluate` (scoring any predictions on any candles: ``trainer evaluate``).
"""

from __future__ import annotations

from trainer_core import hookimpl

from .metrics import break_even, choose_thresholds, scores_from_confusion, trading_metrics
from .report import build_report, costs_of, headline, report_for
from .simulation import Costs
from .stats import precision_verdict

__all__ = [
    "Costs",
    "TradingReporter",
    "break_even",
    "build_report",
    "choose_thresholds",
    "costs_of",
    "evaluate_predictions",
    "headline",
    "precision_verdict",
    "report_for",
    "scores_from_confusion",
    "trading_metrics",
    "write_report",
]


def write_report(out, report: dict, chart, pair: str, tag: str) -> dict:
    """Write ``trading_{tag}.json``, ``.png`` and ``.html`` through ``out`` (an `ArtifactWriter` or
    anything with its ``name``/``write_json``/``write_text``/``writing``); return the headline."""
    from .plots import plot_simulation, plot_trading
    from .render import render_page

    title = f"{pair} {report['split']}"
    chart_png = plot_simulation(report["simulation"], chart, title) if chart is not None else None
    out.write_json(out.name("trading", "json"), report)
    with out.writing(out.name("trading", "png")) as tmp:
        plot_trading(report, title, tmp)
    out.write_text(out.name("trading", "html"), render_page(report, pair, tag, chart_png))
    return headline(report, tag)


def evaluate_predictions(*args, **kwargs):
    """`trainer evaluate`'s Python entry point; see `trainer_plugins.reporters.trading.evaluate.evaluate_predictions`."""
    from .evaluate import evaluate_predictions as run

    return run(*args, **kwargs)


class TradingReporter:
    """trading_{tag}.json/.png/.html: baselines, break-even with dependence-aware verdicts, signals
    by threshold, a one-position-at-a-time trade simulation with costs against buy-and-hold and
    random entries, calibration."""

    #: headline figures `trainer batch --sort` may order pairs by, with whether larger is better
    figures = {"total_net_return": True, "max_drawdown": False, "random_entry_p_value": False}

    def check(self, evaluation) -> None:
        """Refuse an unknown or out-of-bounds ``evaluation`` setting before any work."""
        from .settings import evaluation_settings

        evaluation_settings(evaluation)

    def report_pair(self, result, out) -> dict:
        """Write ``trading_{tag}.json``, ``.png`` and ``.html``; return the headline figures."""
        body, chart = report_for(result)
        report = {"pair": result.spec.pair, **body}
        folds = getattr(result, "folds", None)
        if folds:
            from .report import walk_forward_for

            report["walk_forward"] = walk_forward_for(result, folds)
        return write_report(out, report, chart, result.spec.pair, result.spec.tag)


@hookimpl
def trainer_register_reporters(register):
    """Register the ``trading`` reporter."""
    register("trading", TradingReporter)
