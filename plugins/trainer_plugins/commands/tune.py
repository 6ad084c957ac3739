"""Command `trainer tune`: a hyperparameter search per pair on Ray, nested in purged folds, whose
tuned params are adopted only when they beat the defaults on a slice the search never saw."""

from __future__ import annotations

import click

from trainer_core import hookimpl

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.command("tune", context_settings=CONTEXT_SETTINGS)
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@click.option(
    "--output", metavar="DIR", help="Where the search's records go (default: the manifest's output/tune)."
)
@click.option(
    "--address",
    envvar="RAY_ADDRESS",
    metavar="ADDR",
    help="Ray cluster to join (default: start a local Ray).",
)
@click.option("--only", metavar="P1,P2", help="Only these pairs of the manifest.")
@click.option(
    "--storage",
    metavar="PATH|URL",
    help="The studies' storage: a journal file (default: OUTPUT/studies.journal) or a database URL.",
)
@click.option(
    "--adopt",
    type=click.Choice(["proven", "best"]),
    default="proven",
    show_default=True,
    help="proven: adopt tuned params only when they beat the defaults on the outer slice; best: always the best trial's.",
)
def tune_command(manifest_path, output, address, only, storage, adopt):
    """Search each pair's hyperparameters (the manifest's `tune:` section) and write tuned.yaml.

    One Optuna study per pair; trials run as Ray tasks with the pair's resources, pruned by ASHA on
    epochs; inner purged folds choose, the outer test slice judges tuned against default. Running
    the same command again continues an interrupted search.

    Example:

        trainer tune manifests/tune_demo.yaml

        trainer batch artifacts/tune_demo/tune/tuned.yaml
    """
    from trainer_core import TuneInterrupted, TuneRun

    run = TuneRun(
        manifest_path,
        output=output,
        address=address,
        only=[p for p in only.split(",") if p.strip()] if only else None,
        storage=storage,
        adopt=adopt,
        echo=lambda line: click.echo(line),
    )
    try:
        code = run.run()
    except TuneInterrupted as exc:
        raise SystemExit(exc.exit_code) from None
    raise SystemExit(code)


@hookimpl
def trainer_register_commands(cli):
    """Add the ``tune`` command."""
    cli.add_command(tune_command)
