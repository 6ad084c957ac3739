"""What every `trainer` command shares, built-in or a plugin's: the ``--debug`` and
``--no-manifest-plugins`` flags, the ``--manifest`` and ``--set`` options and the manifest they
name, and the plugins loaded under the command line's one policy."""

from __future__ import annotations

import os


def _set_debug(ctx, param, value):
    if value:
        ctx.ensure_object(dict)["debug"] = True
    return value


def debug_option(command):
    """Click decorator: the command's ``--debug`` flag (a `TrainerError` then shows its traceback)."""
    import click  # here, so `import trainer_core` does not load Click

    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        is_eager=True,
        help="Show the full traceback of an error (and every line TensorFlow and Ray print).",
    )(command)


def _no_manifest_plugins(ctx, param, value):
    # one knob for every process: the variable reaches prepare, predict and the batch workers
    if value:
        from .plugins import MANIFEST_PLUGINS_ENV

        root = ctx.find_root()
        root.ensure_object(dict)["no_manifest_plugins"] = True
        before = os.environ.get(MANIFEST_PLUGINS_ENV)
        os.environ[MANIFEST_PLUGINS_ENV] = "0"
        root.call_on_close(lambda: _restore_env(MANIFEST_PLUGINS_ENV, before))
    return value


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def no_manifest_plugins_option(command):
    """Click decorator: the command's ``--no-manifest-plugins`` flag (refuse to import the modules a
    manifest or model folder names, for this command and every process it starts)."""
    import click

    return click.option(
        "--no-manifest-plugins",
        is_flag=True,
        expose_value=False,
        callback=_no_manifest_plugins,
        is_eager=True,
        help="Refuse to import the modules a manifest or a model folder names in `plugins:` (they run "
        "code; same as TRAINER_MANIFEST_PLUGINS=0).",
    )(command)


def manifest_option(help: str):
    """Click decorator: the command's ``--manifest FILE`` option (``manifest_path``; read it with
    `command_manifest`), described by ``help``."""
    import click

    return click.option(
        "--manifest", "manifest_path", type=click.Path(dir_okay=False), metavar="FILE", help=help
    )


def set_option(help: str):
    """Click decorator: the command's repeatable ``--set KEY=VALUE`` option (``sets``), described by
    ``help``."""
    import click

    return click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help=help)


def command_manifest(path):
    """The manifest a ``--manifest FILE`` option names, else the built-in defaults."""
    from .manifest import default_manifest, load_manifest

    return load_manifest(path) if path else default_manifest()


def command_plugins(extra=()):
    """The plugin manager a command uses: built-ins, entry points, then the ``extra`` modules (a
    manifest's `plugins:`), which ``--no-manifest-plugins`` refuses."""
    import click

    from .plugins import load_plugins

    ctx = click.get_current_context(silent=True)
    refused = bool(ctx and (ctx.find_root().obj or {}).get("no_manifest_plugins"))
    return load_plugins(extra, manifest_plugins=False if refused else None)
