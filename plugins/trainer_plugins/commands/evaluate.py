"""Command `trainer evaluate`: the trading report of any predictions on any candles.

The Python function behind it is `trainer_plugins.reporters.trading.evaluate.evaluate_predictions`.
"""

from __future__ import annotations

import click

from trainer_core import hookimpl

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("evaluate", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--model-dir",
    "model_dir",
    metavar="DIR",
    help="A trained pair's folder: predict the candles with it (and take its settings).",
)
@click.option(
    "--predictions",
    "predictions",
    metavar="FILE",
    help="A table with timestamp, p_short, p_hold, p_long (what `trainer predict --output` writes).",
)
@click.option(
    "--data", "data_path", required=True, metavar="CANDLES", help="The pair's candles: a file or a folder."
)
@click.option(
    "--output", "output", required=True, metavar="DIR", help="Write trading_{tag}.json/.png/.html here."
)
@click.option(
    "--pair",
    "pair",
    metavar="PAIR",
    help="The pair (default: the model's, else from the candle file's name).",
)
@click.option("--start", metavar="DATE", help="Only predictions from this UTC date/time on.")
@click.option(
    "--end", metavar="DATE", help="Only predictions up to this UTC date (the whole day) or date/time."
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Labeler and evaluation settings (labels.params.*, evaluation.*).",
)
@click.option(
    "--include-in-sample",
    is_flag=True,
    help="Also score rows the predictions mark in_sample (inside the model's training + validation span).",
)
def evaluate_command(model_dir, predictions, data_path, output, pair, start, end, sets, include_in_sample):
    """Score predictions on candles with the trading report a trained pair gets.

    Labels, realised returns and exit candles come from the candles under the tp-sl rule; the
    verdicts account for overlapping signals. With --model-dir the model predicts the candles
    first (a fresh out-of-sample window: pick it with --start/--end); with --predictions any
    signal source can be scored. Settings: the model's, else the built-in defaults, then --set.

    Example:

        trainer evaluate --model-dir artifacts/ETHUSDT --data downloads/ETHUSDT --start 2025-07-01 --output eval/

        trainer evaluate --predictions preds.parquet --data candles/ETHUSDT-1m.parquet --output eval/ --set evaluation.fee_pct=0.1
    """
    from trainer_core import ConfigError
    from trainer_plugins.reporters.trading.evaluate import evaluate_predictions

    if bool(model_dir) == bool(predictions) and not model_dir:
        raise ConfigError("Give --model-dir or --predictions.", "See `trainer evaluate --help`.")
    report = evaluate_predictions(
        predictions,
        data_path,
        output,
        pair=pair,
        model_dir=model_dir,
        sets=sets,
        start=start,
        end=end,
        include_in_sample=include_in_sample,
    )
    h = report["headline"]
    ev = report["evaluated"]
    click.echo(
        f"{report['pair']}: {ev['rows_scored']:,} predictions scored ({ev['first']} to {ev['last']}), "
        f"MCC {h['mcc']:.3f}, balanced accuracy {h['balanced_accuracy']:.3f}"
    )
    for side in ("LONG", "SHORT"):
        s = h[side]
        if s["precision"] is None:
            click.echo(f"  {side}: no signals")
            continue
        click.echo(
            f"  {side}: precision {s['precision']:.3f} of {s['n_signals']:,} signals (n_eff {s['n_effective']:,.0f}), "
            f"95 % {s['ci_low']:.3f}-{s['ci_high']:.3f} vs break-even {s['break_even']:.3f}: {s['verdict']}"
        )
    sim = h["simulation"]
    if sim:
        click.echo(
            f"  simulation: {sim['n_trades']:,} trades, total net {sim['total_net_return'] * 100:.2f} %, "
            f"random-entry p = {sim['random_entry_p_value']:.3g}"
        )
    skipped = [
        f"{ev[k]:,} {what}"
        for k, what in (
            ("rows_without_candle", "without a candle"),
            ("rows_without_outcome", "too close to the end for an outcome"),
            ("in_sample_rows_left_out", "in-sample (left out)"),
        )
        if ev[k]
    ]
    if skipped:
        click.echo("  not scored: " + ", ".join(skipped))
    click.echo(f"Report: {report['files'][-1]}")


@hookimpl
def trainer_register_commands(cli):
    """Add the ``evaluate`` command."""
    cli.add_command(evaluate_command)
