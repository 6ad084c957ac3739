"""Command `trainer prepare`: 1-minute candles -> a training-ready file (features, labels and
realised returns) that the `training-ready` loader reads."""

from __future__ import annotations

import click

from trainer_core import (
    command_manifest,
    command_plugins,
    debug_option,
    hookimpl,
    manifest_option,
    no_manifest_plugins_option,
    set_option,
)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("prepare", context_settings=CONTEXT_SETTINGS)
@click.option(
    "--pair", "pair", required=True, metavar="PAIR", help="The pair, e.g. ETHUSDT (ETH/USDT is accepted)."
)
@click.option(
    "--data",
    "data_path",
    required=True,
    metavar="CANDLES",
    help="A candle file (Binance CSV/zip, freqtrade Feather/JSON, Parquet/CSV) or a folder of the pair's files.",
)
@click.option(
    "--output",
    "output",
    default="inputs/",
    show_default=True,
    metavar="DIR",
    help="Folder for the training-ready file.",
)
@manifest_option("Take the labels, features and data settings from this manifest.")
@set_option("Override a setting, e.g. --set labels.params.future_window=60 (repeatable).")
@debug_option
@no_manifest_plugins_option
def prepare_command(pair, data_path, output, manifest_path, sets):
    """Turn 1-minute candles into a training-ready file: features, labels and realised returns.

    Writes {PAIR}_TF-{tf}__FW-{fw}__SL-{sl}__TP-{tp}__training_ready.feather into the output
    folder, where `trainer run --data DIR` finds it.

    Example:

        trainer prepare --pair ETHUSDT --data downloads/ETHUSDT-1m-2024-01.zip --output inputs/
    """
    from trainer_core import pair_data_from_candles, read_candles, resolve_spec

    from ..loaders.training_ready import write_training_ready

    manifest = command_manifest(manifest_path)
    spec = manifest.resolve(pair, sets, {"data.path": data_path})
    candles = read_candles(spec.data_path, spec.pair, spec.data.timeframe, spec.candle_market)
    plugins = command_plugins(spec.plugins)
    spec = resolve_spec(spec, plugins)  # the feature set and labeler, checked; prepare needs no loader
    data = pair_data_from_candles(candles, spec, plugins)
    path = write_training_ready(data, spec, output)
    counts = data.class_counts()
    gaps = data.extra["gaps"]
    click.echo(
        f"{spec.pair}: {data.extra['candles']:,} candles -> {len(data):,} rows "
        f"(SHORT {counts['SHORT']:,} / HOLD {counts['HOLD']:,} / LONG {counts['LONG']:,}, "
        f"{int((data.labels < 0).sum()):,} without label); "
        f"{gaps['gaps']:,} gap(s), {gaps['missing_candles']:,} missing candle(s)"
        + (f", {data.extra['filled_candles']:,} filled" if data.extra["filled_candles"] else "")
    )
    click.echo(f"Wrote {path}")


@hookimpl
def trainer_register_commands(cli):
    """Add `trainer prepare`."""
    cli.add_command(prepare_command)
