"""The `trainer` command line: the group and its built-in commands (plugins add the others)."""

from __future__ import annotations

import os
import sys

import click
import yaml

from . import __version__
from .batch.driver import DEFAULT_SORT, SORT_FIGURES
from .commands import (
    command_manifest,
    command_plugins,
    debug_option,
    manifest_option,
    no_manifest_plugins_option,
    set_option,
)
from .errors import ConfigError, DataError, PluginError, TrainerError
from .registry import KINDS

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class CommandError(click.ClickException):
    """A `TrainerError` as Click shows it: what went wrong, then what to do."""

    def __init__(self, error: TrainerError):
        super().__init__(error.message)
        self.exit_code = error.exit_code
        self.hint = error.hint

    def format_message(self) -> str:
        """The error's message, then ``Hint: ...`` on its own line when there is a hint."""
        return self.message + (f"\nHint: {self.hint}" if self.hint else "")


class TrainerGroup(click.Group):
    """The `trainer` group: a `TrainerError` becomes a `CommandError` (no traceback unless ``--debug``);
    the plugins' commands (`trainer prepare`, `download`, ...) join it the first time a command is
    looked up, so the group is whole however it is invoked."""

    plugin_commands_added = False

    def get_command(self, ctx, cmd_name):
        """The command ``cmd_name``, the plugins' commands included."""
        if cmd_name not in self.commands:
            self.add_plugin_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx):
        """Every command's name, the plugins' commands included."""
        self.add_plugin_commands()
        return super().list_commands(ctx)

    def add_plugin_commands(self) -> None:
        """Register the plugins' commands once (`trainer_register_commands`)."""
        if not self.plugin_commands_added:
            self.plugin_commands_added = True
            _register_plugin_commands(self)

    def invoke(self, ctx):
        """Run the subcommand; a `TrainerError` becomes a `CommandError`, Ctrl-C exits 130 with one line."""
        try:
            return super().invoke(ctx)
        except TrainerError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            raise CommandError(exc) from exc
        except KeyboardInterrupt:
            click.echo("Interrupted: nothing of the interrupted pair was committed.", err=True)
            ctx.exit(130)


def _set_verbose(ctx, param, value):
    if value:
        from .quiet import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    return value


verbose_option = click.option(
    "-v",
    "--verbose",
    is_flag=True,
    expose_value=False,
    callback=_set_verbose,
    is_eager=True,
    help="Also show TensorFlow's and Ray's own start-up lines (hidden by default).",
)


@click.group(cls=TrainerGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "--version", prog_name="trainer")
@debug_option
@verbose_option
@no_manifest_plugins_option
@click.pass_context
def cli(ctx):
    """Train one Keras LSTM per crypto pair: SHORT / HOLD / LONG from 1-minute features.

    Example:

        trainer run --pair ETHUSDT --data inputs/ --output artifacts/
    """
    ctx.ensure_object(dict)


_load_manifest = command_manifest
_plugins = command_plugins


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--pair", "pair", metavar="PAIR", help="The pair to train, e.g. ETHUSDT (ETH/USDT is accepted)."
)
@manifest_option(
    "A YAML manifest; without it the built-in defaults (the original trainer's settings) are used."
)
@click.option(
    "--index",
    type=int,
    metavar="I",
    help="Train pair number I (from 0) of the manifest instead of naming it (Kubernetes Indexed Jobs).",
)
@click.option(
    "--data",
    "data_path",
    metavar="PATH",
    help="Training data (data.path): a file, or a folder the pair's loader reads.",
)
@click.option("--output", "output", metavar="DIR", help="Output root; the pair's artifacts go to DIR/PAIR/.")
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs (train.epochs).")
@click.option("--batch-size", type=click.IntRange(min=1), help="Batch size (train.batch_size).")
@set_option("Override any manifest setting, e.g. --set train.sequence_length=60 (repeatable).")
@click.option("--config-test", is_flag=True, help="Print the resolved settings and exit without training.")
@debug_option
@verbose_option
@no_manifest_plugins_option
def run(pair, manifest_path, index, data_path, output, epochs, batch_size, sets, config_test):
    """Train one pair end to end and write its artifacts.

    Settings come from the built-in defaults, then the manifest's defaults, then the pair's own
    entry, then --set, then the named options.

    Example:

        trainer run --pair ETHUSDT --data inputs/ --output artifacts/ --epochs 50
    """
    manifest = _load_manifest(manifest_path)
    if index is not None:
        if pair:
            raise ConfigError(
                "Give either --pair or --index, not both.", "--index picks a pair of the manifest."
            )
        if not manifest_path:
            raise ConfigError(
                "--index needs --manifest.", "--index I trains pair I (from 0) of the manifest's pairs."
            )
        if not 0 <= index < len(manifest.pairs):
            raise ConfigError(
                f"--index {index} is out of range: the manifest has {len(manifest.pairs)} pair(s) (0..{len(manifest.pairs) - 1}).",
                f"Use 0..{len(manifest.pairs) - 1}; a Kubernetes Indexed Job needs completions: {len(manifest.pairs)}.",
            )
        pair = manifest.pairs[index].key
    if not pair:
        raise click.UsageError("Missing option '--pair' (or --manifest with --index).")
    flags = {"data.path": data_path, "output": output, "train.epochs": epochs, "train.batch_size": batch_size}
    spec = manifest.resolve(pair, sets, flags)
    plugins = _plugins(spec.plugins)
    from .features import resolve_spec
    from .pipeline import check_components

    check_components(spec, plugins)
    spec = resolve_spec(spec, plugins)  # the labeler's tag and horizon: the hash and tag shown are the run's
    if config_test:
        click.echo(f"# resolved settings for {spec.pair} (config hash {spec.config_hash})")
        click.echo(yaml.safe_dump(spec.to_dict(), sort_keys=False, default_flow_style=None).rstrip())
        click.echo(f"# artifacts: {spec.output.rstrip('/')}/{spec.name}/ (tag {spec.tag})")
        from .features import required_history
        from .inference import live_history_note

        click.echo(f"# {live_history_note(required_history(spec, plugins))}")
        click.echo("Configuration OK.")
        return
    from .pipeline import run_pair

    try:
        result = run_pair(spec, plugins, echo=lambda m: click.echo(m))
    except TrainerError:
        raise
    except Exception as exc:  # an unexpected failure still gets one line and exit 1
        if click.get_current_context().obj.get("debug"):
            raise
        from .errors import TrainingError

        raise TrainingError(
            f"{spec.pair}: training failed: {type(exc).__name__}: {exc}",
            "Run again with --debug for the traceback.",
        ) from exc
    click.echo(f"Done: {result.pair_dir}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option(
    "--address",
    metavar="ADDR",
    help="A Ray cluster to join (host:port or ray://host:10001); default: RAY_ADDRESS, else a local Ray.",
)
@click.option("--only", metavar="P1,P2", help="Only these pairs of the manifest.")
@click.option(
    "--force", is_flag=True, help="Retrain pairs that already completed with the same settings and data."
)
@click.option("--dry-run", is_flag=True, help="Print what would run and why, then exit.")
@click.option(
    "--summary-only",
    is_flag=True,
    help="Train nothing: run the batch reporters (the summary) over the pairs' completed runs, as after an Indexed Job.",
)
@click.option(
    "--output", "output", metavar="DIR_OR_URL", help="Output root (overrides the manifest's output)."
)
@set_option("Override a setting for every pair (repeatable).")
@click.option(
    "--sort",
    "sort",
    default=DEFAULT_SORT,
    show_default=True,
    metavar="FIGURE",
    help=f"Order the final table and the batch reporters' pages by this figure, best first: "
    f"{', '.join(SORT_FIGURES)} (pair: by name), or a figure one of the pairs' reporters declares; "
    "failed and cancelled pairs last.",
)
@click.option(
    "--register",
    is_flag=True,
    help="Make each newly trained pair's version its challenger (see trainer models promote).",
)
@debug_option
@verbose_option
@no_manifest_plugins_option
def batch(manifest_path, address, only, force, dry_run, summary_only, output, sets, sort, register):
    """Train every pair of a manifest as Ray tasks, resumable, with a summary.

    Pairs whose _SUCCESS.json matches the settings, the data and every artifact's checksum are
    skipped. The batch reporters (batch.reporters, default: summary) write to the output root. Exit code 0 when every
    pair trained or was skipped, 1 when any failed, 130 when interrupted.

    Example:

        trainer batch manifests/demo.yaml

        trainer batch manifests/all_pairs.yaml --address 10.0.0.5:6379 --only BTCUSDT,ETHUSDT

        trainer batch manifests/all_pairs.yaml --summary-only
    """
    from .batch import BatchRun, select_pairs

    if register:  # read by the versions plugin, in this process and the local Ray workers it starts
        os.environ["TRAINER_REGISTER"] = "1"
    manifest = _load_manifest(manifest_path)
    if not manifest.pairs:
        raise ConfigError(f"{manifest_path}: the manifest lists no pairs.", "Add pairs under `pairs:`.")
    plugins = _plugins(manifest.plugins)
    specs = [manifest.resolve(p, sets, {"output": output}) for p in select_pairs(manifest, only)]
    run = BatchRun(manifest, specs, plugins, echo=lambda m: click.echo(m), address=address, sort=sort)
    if dry_run:
        run.dry_run(force)
        return
    if summary_only and force:
        raise ConfigError(
            "--summary-only trains nothing, so --force has no meaning with it.", "Leave one out."
        )
    report = run.summarize() if summary_only else run.run(force)
    run.show(report)  # the console plugin prints the final table
    counts = ", ".join(f"{v} {k}" for k, v in report.counts.items())
    where = f" Summary: {', '.join(report.written)}" if report.written else ""
    click.echo(f"\n{counts} in {report.seconds:.0f}s.{where}")
    if report.exit_code:
        raise SystemExit(report.exit_code)


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option(
    "--model-dir",
    "model_dir",
    required=True,
    metavar="DIR_OR_URL",
    help="A trained pair's folder (OUTPUT/PAIR, with _SUCCESS.json; its champion when it has model "
    "versions), OUTPUT/PAIR@champion, OUTPUT/PAIR@challenger or OUTPUT/PAIR#VERSION; an fsspec URL works too.",
)
@click.option(
    "--data",
    "data_path",
    required=True,
    metavar="FILE",
    help="A training-ready file (the 8 feature columns) or raw candles of the pair.",
)
@click.option(
    "--output",
    "output",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Write the predictions here (.parquet, .csv or .feather); default: print a preview.",
)
@click.option(
    "--start",
    metavar="DATE",
    help="Only predictions from this UTC date/time on (the history before it still feeds the windows).",
)
@click.option(
    "--end", metavar="DATE", help="Only predictions up to this UTC date (the whole day) or date/time."
)
@click.option(
    "--last",
    "last",
    type=click.IntRange(min=1, max=10**9),
    metavar="N",
    help="Only the last N predictions (1 to 10^9).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Refuse to predict when the model's feature set or labeler changed since it was trained "
    "(default: a warning).",
)
@click.option(
    "--allow-expired", is_flag=True, help="Use the model even when its version is past its valid_until."
)
@debug_option
@verbose_option
@no_manifest_plugins_option
def predict(model_dir, data_path, output, start, end, last, strict, allow_expired):
    """Apply a trained pair's model to new data: class probabilities per timestamp.

    Uses the saved scaler, window length and feature list. Data made with other label or feature
    parameters than the model's are refused. Raw candles are turned into features with the
    model's own settings first.

    Example:

        trainer predict --model-dir artifacts/ETHUSDT --data inputs/new.feather --output predictions.parquet
    """
    import warnings
    from pathlib import Path

    from .inference import CodeChangedWarning, load_pair_model, read_for_prediction, select_time

    model = load_pair_model(model_dir, strict=strict, allow_expired=allow_expired)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CodeChangedWarning)
        frame = read_for_prediction(model, data_path)
    for warning in caught:
        if issubclass(warning.category, CodeChangedWarning):
            click.echo(f"Warning: {warning.message}", err=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
    every = model.predict(frame, where=str(data_path))
    if every.height == 0:
        raise DataError(
            f"{data_path}: no prediction: none of its {frame.height:,} rows with features ends a gap-free window "
            f"of {model.sequence_length} rows, the model's window.",
            f"Pass more rows (raw candles: at least {model.required_history:,} gap-free candles).",
        )
    predictions = select_time(every, start, end)
    if predictions.height == 0 and every.height and (start or end):
        first, final = every.get_column("timestamp")[0], every.get_column("timestamp")[-1]
        raise ConfigError(
            f"No predictions from {start or 'the start'} to {end or 'the end'}: the data's rows with a full "
            f"window run from {first} to {final}.",
            "Pick --start/--end inside that range, or pass the candles of the dates you want.",
        )
    if last:
        predictions = predictions.tail(last)
    if output:
        import os
        import uuid

        path = Path(output)
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        suffix = path.suffix.lower()
        writers = {
            ".parquet": predictions.write_parquet,
            ".csv": predictions.write_csv,
            ".feather": predictions.write_ipc,
            ".arrow": predictions.write_ipc,
        }
        if suffix not in writers:
            raise ConfigError(
                f"--output {output}: unknown file type {suffix or '(none)'}.",
                "Use .parquet, .csv or .feather.",
            )
        try:
            writers[suffix](tmp)
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        click.echo(f"{model.pair}: {predictions.height:,} predictions ({model.tag}) written to {path}")
    else:
        click.echo(f"{model.pair}: {predictions.height:,} predictions ({model.tag}); the last rows:")
        click.echo(str(predictions.tail(10)))


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("output", metavar="OUTPUT")
@debug_option
@no_manifest_plugins_option
def verify(output):
    """Check every pair under an output root against the checksums in its _SUCCESS.json.

    A pair folder without _SUCCESS.json is incomplete; an artifact that is missing, truncated or
    altered fails the check. Exit code 0 when every pair is complete and intact, 1 otherwise;
    `trainer batch` retrains the pairs that fail, saying why.

    Example:

        trainer verify artifacts/
    """
    from .verify import verify_output

    results = verify_output(output)
    if not results:
        raise ConfigError(
            f"No pair folders under {output}.", "Pass the output root that holds the PAIR/ folders."
        )
    bad = 0
    for pair, problems in results:
        if problems:
            bad += 1
            click.echo(f"FAILED  {pair}: " + "; ".join(problems))
        else:
            click.echo(f"ok      {pair}")
    click.echo(f"{len(results) - bad} of {len(results)} pair(s) complete and intact.")
    if bad:
        raise SystemExit(1)


@cli.command(name="plugins", context_settings=CONTEXT_SETTINGS)
@click.option("--kind", type=click.Choice(list(KINDS)), help="Only this kind of component.")
@manifest_option("Also load the plugin modules this manifest names.")
@no_manifest_plugins_option
def plugins_command(kind, manifest_path):
    """List every registered component with its kind and the plugin that registered it.

    Example:

        trainer plugins --kind model
    """
    extra = _load_manifest(manifest_path).plugins if manifest_path else ()
    plugins = _plugins(extra)
    rows = [(r.kind, r.name, r.plugin, r.description) for r in plugins.registry if kind in (None, r.kind)]
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(("KIND", "NAME", "PLUGIN"))
    ]
    click.echo(f"{'KIND':<{widths[0]}}  {'NAME':<{widths[1]}}  {'PLUGIN':<{widths[2]}}  DESCRIPTION")
    for row in rows:
        click.echo(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}")


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@set_option("Apply overrides before checking.")
@no_manifest_plugins_option
def validate(manifest_path, sets):
    """Check a manifest without training: syntax, settings, pair names and plugin names.

    Example:

        trainer validate manifests/demo.yaml
    """
    manifest = _load_manifest(manifest_path)
    if not manifest.pairs:
        raise ConfigError(f"{manifest_path}: the manifest lists no pairs.", "Add pairs under `pairs:`.")
    plugins = _plugins(manifest.plugins)
    specs = [manifest.resolve(entry.key, sets) for entry in manifest.pairs]
    from .features import resolve_spec
    from .pipeline import check_components

    for spec in specs:
        check_components(spec, plugins)
    specs = [resolve_spec(spec, plugins) for spec in specs]
    click.echo(f"{manifest_path}: OK, {len(specs)} pair(s), output {manifest.output}")
    from .features import required_history
    from .inference import live_history_note

    for spec in specs:
        click.echo(
            f"  {spec.pair:<14} loader={spec.data.loader} model={spec.model.builder} "
            f"balance={spec.balance.method} epochs={spec.train.epochs} tag={spec.tag} "
            f"required_history={required_history(spec, plugins)}"
        )
    click.echo(f"  {live_history_note(max(required_history(spec, plugins) for spec in specs))}")


def _register_plugin_commands(group: click.Group | None = None) -> None:
    try:
        _plugins().register_commands(cli if group is None else group)
    except PluginError as exc:  # a broken plugin must not take `trainer --help` down with it
        click.echo(f"Warning: {exc.message}", err=True)


def main(argv=None):
    """The `trainer` command: TensorFlow's and Ray's start-up noise is kept off the terminal unless
    -v/--verbose or --debug is given."""
    from .quiet import VERBOSE_ENV, quiet_stderr

    args = sys.argv[1:] if argv is None else list(argv)
    if any(a in ("-v", "--verbose", "--debug") for a in args):
        os.environ[VERBOSE_ENV] = "1"
    noise = quiet_stderr()
    try:
        _register_plugin_commands()
        return cli.main(args=argv, prog_name="trainer")
    finally:
        if noise is not None:
            noise.stop()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
