"""Helpers for testing plugins (and the trainer itself): throwaway plugins, tiny specs and data.

from trainer_core.testing import registered_plugin, tiny_spec, write_training_ready

data = write_training_ready(tmp_path / "inputs")
with registered_plugin(MyPlugin(), name="my-plugin") as plugins:
    result = run_pair(tiny_spec(data.parent, tmp_path / "out", "model.builder=my-model"), plugins)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .data import default_feature_names
from .plugins import Plugins, load_plugins

if TYPE_CHECKING:
    from .manifest import PairSpec

#: settings for a model that trains in seconds on 2 cores
TINY_SETTINGS = (
    "train.sequence_length=8",
    "train.batch_size=64",
    "model.params.lstm_units=[4]",
    "model.params.dense_units=[4]",
    "balance.min_per_class=0",
    "labels.params.future_window=5",
    "train.verbose=0",
)


def tiny_args(epochs: int = 1) -> list[str]:
    """`trainer run` options for a model that trains in seconds: ``--epochs N`` and `TINY_SETTINGS`
    as ``--set`` options."""
    args = ["--epochs", str(epochs)]
    for setting in TINY_SETTINGS:
        args += ["--set", setting]
    return args


def success_markers(root: str | Path) -> list[Path]:
    """The ``_SUCCESS.json`` markers under an output root (every completed pair), sorted; the
    model versions under ``_models/`` (copies of runs that completed earlier) left out."""
    found = sorted(Path(root).rglob("_SUCCESS.json")) if Path(root).exists() else []
    return [p for p in found if "_models" not in p.relative_to(root).parts]


@contextlib.contextmanager
def registered_plugin(plugin, name: str | None = None, plugins: Plugins | None = None) -> Iterator[Plugins]:
    """Register ``plugin`` (a module or object with hookimpls) on a manager for one block.

    Without ``plugins`` a fresh manager is built from the built-ins only (no entry points),
    so tests do not depend on what else is installed. The plugin is unregistered afterwards.
    """
    if plugins is None:
        plugins = load_plugins(entry_points=False)
    plugins.register(plugin, name=name)
    try:
        yield plugins
    finally:
        plugins.unregister(plugin)


def tiny_spec(
    data: str | Path, output: str | Path, *sets: str, pair: str = "ETHUSDT", epochs: int = 1, manifest=None
) -> PairSpec:
    """A resolved spec that trains in seconds: `TINY_SETTINGS`, ``epochs`` epochs, then ``sets``
    (``"model.builder=my-model"``...), with ``data`` as ``data.path`` and ``output`` as the output.

    ``manifest`` (a `Manifest`) supplies the defaults and plugins; the built-in defaults otherwise.
    """
    from .manifest import default_manifest

    manifest = manifest if manifest is not None else default_manifest()
    return manifest.resolve(
        pair,
        sets=(*TINY_SETTINGS, f"train.epochs={epochs}", *sets),
        flags={"data.path": str(data), "output": str(output)},
    )


def resolved(spec: PairSpec, plugins: Plugins | None = None) -> PairSpec:
    """``spec`` with its feature set and labeler resolved (by ``plugins``, else the spec's own
    plugins and the built-in ones): its tag, embargo and config hash are known then."""
    from .features import resolve_spec

    return resolve_spec(spec, plugins if plugins is not None else load_plugins(spec.plugins))


def reseal(folder: str | Path) -> None:
    """Recompute every checksum and size in a model folder's ``_SUCCESS.json``, as whoever edited its
    files would (a test of a folder edited by hand, or written as an earlier trainer wrote it)."""
    import hashlib
    import json

    marker_path = Path(folder) / "_SUCCESS.json"
    marker = json.loads(marker_path.read_text())
    for name in marker["artifacts"]:
        data = (Path(folder) / name).read_bytes()
        marker["artifacts"][name] = {
            "sha256": "sha256:" + hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
        }
    marker_path.write_text(json.dumps(marker))


def training_ready_name(
    pair: str, fw: int = 5, sl_pct: float = 0.5, tp_pct: float = 1.0, tf: str = "1m", ext: str = "feather"
) -> str:
    """The seed's file name: ``ETHUSDT_TF-1m__FW-005__SL-050__TP-100__training_ready.feather``, as the
    built-in training-ready loader names its files."""
    from .plugins import load_plugins

    loader = load_plugins(()).create("loader", "training-ready")
    params = {"future_window": fw, "stop_loss_pct": sl_pct, "take_profit_pct": tp_pct}
    return loader.file_name(pair, tf, params, ext=ext)


def training_ready_frame(
    rows: int = 600, seed: int = 0, start: str = "2024-01-01", with_timestamp: bool = True
):
    """A polars frame in the seed's training-ready layout, with labels the features partly predict."""
    import polars as pl

    rng = np.random.default_rng(seed)
    drift = np.convolve(rng.normal(0, 1, rows + 20), np.ones(20) / 20, mode="valid")[:rows]
    close_change = (0.05 * rng.normal(0, 1, rows) + 0.04 * drift).astype(np.float32)
    # the default feature set's 8 columns, in order: high, low, close and volume changes, then price
    # and volume against a short and a long moving average
    cols = [
        np.abs(close_change) + 0.02 * np.abs(rng.normal(0, 1, rows)),
        -np.abs(close_change) - 0.02 * np.abs(rng.normal(0, 1, rows)),
        close_change,
        rng.normal(0, 30, rows),
        1 + 0.01 * np.cumsum(close_change) / np.sqrt(np.arange(1, rows + 1)),
        1 + 0.02 * drift,
        np.exp(rng.normal(0, 0.3, rows)),
        np.exp(rng.normal(0, 0.4, rows)),
    ]
    score = drift + 0.3 * rng.normal(0, 1, rows)
    labels = np.where(score > 0.15, 2, np.where(score < -0.15, 0, 1))
    data = {}
    if with_timestamp:
        data["timestamp"] = np.datetime64(start, "ms") + np.arange(rows) * np.timedelta64(60_000, "ms")
    for name, values in zip(default_feature_names(), cols, strict=True):
        data[name] = np.asarray(values, dtype=np.float32)
    for k in range(3):
        data[f"label_{k}"] = (labels == k).astype(np.int8)
    return pl.DataFrame(data)


def write_training_ready(
    folder: str | Path,
    pair: str = "ETHUSDT",
    rows: int = 600,
    seed: int = 0,
    fw: int = 5,
    sl_pct: float = 0.5,
    tp_pct: float = 1.0,
    ext: str = "feather",
    frame=None,
) -> Path:
    """Write a tiny seed-format file for ``pair`` into ``folder`` and return its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frame = training_ready_frame(rows, seed) if frame is None else frame
    path = folder / training_ready_name(pair, fw, sl_pct, tp_pct, ext=ext)
    if ext == "feather":
        frame.write_ipc(path)
    elif ext == "parquet":
        frame.write_parquet(path)
    else:
        frame.write_csv(path)
    return path


def synthetic_candles(pair: str = "ETHUSDT", rows: int = 3000, seed: int = 0, start: str = "2024-01-01"):
    """The `synthetic` loader's candles of ``pair`` as a polars frame (``timestamp`` UTC, ``open``,
    ``high``, ``low``, ``close``, ``volume``): what a feature set's ``compute`` receives, to test one
    without downloading anything."""
    from .features import _frame
    from .manifest import default_manifest

    spec = default_manifest().resolve(
        pair,
        sets=[
            "data.loader=synthetic",
            f"data.params.rows={rows}",
            f"data.params.seed={seed}",
            f"data.params.start={start}",
        ],
    )
    return _frame(load_plugins(entry_points=False).create("loader", "synthetic").load(spec))
