"""The whole hook contract between the trainer and its plugins.

Every hook is prefixed ``trainer_``. Plugins implement them with ``@trainer_core.hookimpl``.
``docs/hooks.md`` documents each one with the exact signature below; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

from .contract import BatchEvent, BatchRow, Register

if TYPE_CHECKING:  # annotations only
    from click import Group as CommandGroup

    from .contract import Manifest, PairResult, PairSpec

__all__ = ["Register", "hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("trainer")
hookimpl = pluggy.HookimplMarker("trainer")


# ---------------------------------------------------------------------------
# Registration: collecting hooks, called once per plugin manager, where it is built
# (the CLI process, and each worker that trains pairs).
# ---------------------------------------------------------------------------


@hookspec
def trainer_register_loaders(register: Register) -> None:
    """Register data loaders.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``load(spec) -> Candles | PairData``; ``spec`` is the pair's frozen `PairSpec`. From
            `Candles` the engine makes the rows with the pair's feature set and labeler (the
            run's own plugins); `PairData` must hold the feature set's columns.

    Returns:
        None. A name registered twice is an error naming both plugins.

    Runs: wherever a plugin manager is built (CLI process and pair workers).
    """


@hookspec
def trainer_register_balancers(register: Register) -> None:
    """Register class balancers.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``balance(labels, target_idx, rng, params) -> Balance``: ``labels`` is the
            int8 label array of every row, ``target_idx`` the int64 row indices of the
            training targets, ``rng`` a seeded ``numpy.random.Generator`` and ``params``
            the pair's ``balance`` settings. ``Balance(indices, class_weight)`` holds the
            kept target rows (sorted) and an optional ``{class: weight}`` for the loss.

    Returns:
        None.

    Runs: wherever a plugin manager is built.
    """


@hookspec
def trainer_register_model_builders(register: Register) -> None:
    """Register model builders.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``build(input_shape, n_classes, params) -> keras.Model`` (uncompiled or
            compiled; the trainer compiles it). ``input_shape`` is
            ``(sequence_length, n_features)``, ``params`` the pair's ``model.params``.

    Returns:
        None.

    Runs: wherever a plugin manager is built.
    """


@hookspec
def trainer_register_reporters(register: Register) -> None:
    """Register reporters.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``report_pair(result, out) -> Mapping | None``, called after a pair trained
            (``result`` is the `PairResult`, ``out`` the pair's `ArtifactWriter`; the returned
            JSON-able mapping is the reporter's headline figures, kept in ``result.figures``
            and ``_SUCCESS.json``), and optionally ``report_batch(batch) -> None``, called
            once after a batch in the batch driver with the `BatchReport`, on every reporter
            named in the manifest's ``batch.reporters``.

    Returns:
        None.

    Runs: wherever a plugin manager is built.
    """


@hookspec
def trainer_register_feature_sets(register: Register) -> None:
    """Register feature sets: what a model sees at each candle.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``columns(params) -> list[str]`` (the feature names, in order),
            ``warmup(params) -> int`` (candles of history the first complete row needs),
            ``compute(candles, params) -> numpy.ndarray`` float32 of shape
            ``(len(candles), len(columns))``, where ``candles`` is a polars DataFrame with
            ``timestamp, open, high, low, close, volume`` (UTC, one timeframe, checked, no gap)
            and row ``t`` may use candles ``<= t`` only; rows before the warmup may hold NaN
            (a row with any NaN is never a target nor a window member). Optional:
            ``check(params)``; ``history(params) -> int`` (candles before a row its features
            read once full length, for live use; default ``warmup``); ``context_pairs(params)
            -> list[str]``, in which case ``compute(candles, params, context)`` also receives
            ``{pair: DataFrame}`` of those pairs' candles aligned on ``candles``' timestamps
            (nulls where a pair has no candle at that time). ``params`` are the ``features``
            settings with ``features.params`` on top.

    Returns:
        None.

    Runs: wherever a plugin manager is built; ``compute`` where a pair's data are loaded and
    where its model predicts.
    """


@hookspec
def trainer_register_labelers(register: Register) -> None:
    """Register labelers: what a model learns to predict at each candle.

    Args:
        register: ``register(name, factory)``. ``factory()`` returns an object with
            ``horizon(params) -> int`` (how many candles after ``t`` a label may look at; the
            split purges and embargoes by it), ``compute(candles, params) -> (labels,
            long_return, short_return)`` (int8 labels in {0 SHORT, 1 HOLD, 2 LONG} with -1
            where no label exists, and the realised return of entering long / short at row
            ``t``'s close under the labeler's rule, NaN where undefined), ``tag(params) ->
            str`` (the artifact tag after the pair's name: letters, digits, ``_-.``). Optional:
            ``check(params)``; ``label_params(params) -> dict`` (what the data record of their
            labels). ``params`` are the ``labels`` settings with ``labels.params`` on top.

    Returns:
        None.

    Runs: wherever a plugin manager is built; ``compute`` where a pair's data are loaded.
    """


@hookspec
def trainer_register_commands(cli: CommandGroup) -> None:
    """Add Click commands to the ``trainer`` command group.

    Args:
        cli: the ``click.Group``; call ``cli.command()`` / ``cli.add_command()``.

    Returns:
        None.

    Runs: in the CLI process, when the command line is parsed.
    """


# ---------------------------------------------------------------------------
# Batch lifecycle: notifications in the batch driver (the process that reads the manifest).
# ---------------------------------------------------------------------------


@hookspec
def trainer_before_batch(manifest: Manifest, specs: tuple[PairSpec, ...]) -> None:
    """A batch is about to start.

    Args:
        manifest: the validated `Manifest`.
        specs: the tuple of `PairSpec` that will be trained.

    Returns:
        None.

    Runs: in the batch driver, once, after the pre-flight checks, before Ray is joined or started.
    """


@hookspec
def trainer_after_batch(manifest: Manifest, results: Sequence[BatchRow]) -> None:
    """A batch has finished (also after failures and interruption).

    Args:
        manifest: the validated `Manifest`.
        results: one `BatchRow` per selected pair, in the manifest's order (``pair``, ``status``,
            ``reason``, ``error``, ``hint``, ``traceback``, ``metrics``, ``figures``...; read as
            attributes or as a mapping), the same rows the batch reporters get.

    Returns:
        None.

    Runs: in the batch driver, once, after the batch reporters, whatever happened after
    ``trainer_before_batch``: also when the Ray cluster cannot be joined, when a pair fails
    and after Ctrl-C.
    """


@hookspec
def trainer_batch_progress(event: BatchEvent) -> None:
    """Something happened in a batch: a pair was skipped, started, finished or is still waiting,
    or the batch is over.

    Args:
        event: the `BatchEvent` (``kind``, ``pair``, ``row`` once a pair finished, ``report`` when
            the batch is over, the counts so far, and ``echo`` for the batch's output).

    Returns:
        None. Every implementation runs; the built-in `console` plugin prints the progress lines
        and the final table.

    Runs: in the batch driver, as it happens (``finished`` once, after ``trainer_after_batch``).
    """


# ---------------------------------------------------------------------------
# Pair lifecycle: notifications where the pair trains (the CLI process for
# ``trainer run``, the Ray task for ``trainer batch``).
# ---------------------------------------------------------------------------


@hookspec
def trainer_before_pair(spec: PairSpec) -> None:
    """A pair is about to be loaded and trained.

    Args:
        spec: the pair's frozen `PairSpec`.

    Returns:
        None. Raising a `TrainerError` stops the pair with that message.

    Runs: in the pair worker, before the data are loaded.
    """


@hookspec
def trainer_after_pair(spec: PairSpec, result: PairResult) -> None:
    """A pair trained and its artifacts are committed (``_SUCCESS.json`` written).

    Args:
        spec: the pair's frozen `PairSpec`.
        result: the `PairResult` (metrics, timings, artifact folder).

    Returns:
        None.

    Runs: in the pair worker, after the completion marker is written.
    """


@hookspec
def trainer_on_pair_error(spec: PairSpec, error: BaseException) -> None:
    """A pair failed; nothing of this attempt was committed.

    Args:
        spec: the pair's frozen `PairSpec`.
        error: the exception (a `TrainerError` for expected failures).

    Returns:
        None. The error is re-raised after every implementation ran.

    Runs: in the pair worker, before the error propagates.
    """


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@hookspec
def trainer_keras_callbacks(spec: PairSpec, pair_dir: Path) -> list[Any] | None:
    """Add Keras callbacks to a pair's ``model.fit``.

    Args:
        spec: the pair's frozen `PairSpec`.
        pair_dir: the local folder where this attempt's artifacts are staged.

    Returns:
        A list of ``keras.callbacks.Callback`` (or None); all lists are concatenated after
        the built-in callbacks.

    Runs: in the pair worker, just before ``fit``.
    """
