"""`trainer verify`: every pair folder under an output root against its `_SUCCESS.json`, and the
cross-checks of a model folder's files against each other (also run when a model is loaded).

A folder copied from elsewhere is not trusted: its checksums only say the files are the ones its
marker lists, and whoever edited a file can recompute them. `model_problems` therefore checks that
the files agree with each other: the pair and tag of the marker, the spec and the folder; the
window and feature count of the spec against the model's input; the spec's feature order against
the scaler's; a scaler with finite, non-zero scales.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

from .artifacts import STAGING, SUCCESS, MarkerError, read_marker
from .manifest.schema import ID_RE, MAX_SEQUENCE_LENGTH
from .storage import Storage, open_storage

#: a model's config.json inside its .keras archive is a few KB; more is not a model this trainer wrote
MAX_KERAS_CONFIG_BYTES = 16 << 20


def keras_input_shape(data: bytes) -> tuple | None:
    """The input shape ``(None, window, features)`` recorded in a ``.keras`` archive's config.json,
    read without Keras; None when the archive records none this reader understands."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            info = zf.getinfo("config.json")
            if info.file_size > MAX_KERAS_CONFIG_BYTES:
                return None
            config = json.loads(zf.read(info))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, RuntimeError):
        return None
    if not isinstance(config, dict):
        return None
    shape = (config.get("build_config") or {}).get("input_shape")
    if shape is None:
        for layer in (config.get("config") or {}).get("layers") or []:
            if isinstance(layer, dict) and layer.get("class_name") == "InputLayer":
                shape = (layer.get("config") or {}).get("batch_shape")
                break
    if isinstance(shape, list) and shape and all(isinstance(v, list) for v in shape):
        shape = shape[0]  # one input: Keras records a list of shapes for a list of inputs
    return tuple(shape) if isinstance(shape, list) else None


def folder_name(spec_doc: dict) -> str:
    """The folder a model's files are written to under the output root, from its spec file: its
    ``name`` (`PairSpec.name`), or for a model trained before names were recorded, its pair."""
    return str(spec_doc.get("name") or spec_doc.get("pair"))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def model_problems(
    marker: dict,
    spec_doc: Any,
    scaler_doc: Any,
    input_shape: tuple | None,
    folder: str | None = None,
) -> list[str]:
    """What makes a model folder's files disagree with each other (empty: they agree).

    ``marker`` is the validated ``_SUCCESS.json``; ``spec_doc`` and ``scaler_doc`` the parsed
    ``spec_{tag}.json`` and ``scaler_{tag}.json``; ``input_shape`` the model's input shape (None
    when it cannot be read); ``folder`` the folder's own name when it should be the pair's (the
    folders of an output root), else None.
    """
    if not isinstance(spec_doc, dict) or not isinstance(spec_doc.get("spec"), dict):
        return ["the spec file is not a model spec written by this trainer"]
    if not isinstance(scaler_doc, dict):
        return ["the scaler file is not a scaler written by this trainer"]
    problems = []
    spec = spec_doc["spec"]
    pair, tag = marker.get("pair"), marker.get("tag")
    named = {"the spec file": spec_doc.get("pair"), "the spec's settings": spec.get("pair")}
    for where, other in named.items():
        if other != pair:
            problems.append(f"{SUCCESS} names the pair {pair}, {where} {str(other)[:40]!r}")
    if spec_doc.get("tag") != tag:
        problems.append(f"{SUCCESS} names the tag {tag}, the spec file {str(spec_doc.get('tag'))[:80]!r}")
    if folder is not None and folder != folder_name(spec_doc):
        problems.append(f"the folder {folder} holds the model of {folder_name(spec_doc)[:80]}")

    window = _int(spec_doc.get("sequence_length"))
    train = spec.get("train") if isinstance(spec.get("train"), dict) else {}
    if window is None or not 1 <= window <= MAX_SEQUENCE_LENGTH:
        problems.append(
            f"the spec's window (sequence_length) is {str(spec_doc.get('sequence_length'))[:40]}, "
            f"not a number of rows from 1 to {MAX_SEQUENCE_LENGTH:,}"
        )
        window = None
    elif train.get("sequence_length") != window:
        problems.append(
            f"the spec file's window is {window}, its settings' train.sequence_length "
            f"{str(train.get('sequence_length'))[:40]}"
        )
    names = spec_doc.get("feature_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        problems.append("the spec lists no feature names")
        names = None
    elif len(set(names)) != len(names):
        problems.append("the spec lists a feature twice")
    history = spec_doc.get("required_history")
    if history is not None and (window is None or _int(history) is None or not window <= history <= 10**9):
        problems.append(
            f"the spec's required_history {str(history)[:40]} is not a number of candles from the window on"
        )
    timeframe = (spec.get("data") or {}).get("timeframe") if isinstance(spec.get("data"), dict) else None
    if not _timeframe_ok(timeframe):
        problems.append(f"the spec's timeframe {str(timeframe)[:40]!r} is not a timeframe such as 1m or 1h")
    elif spec_doc.get("timeframe", timeframe) != timeframe:
        problems.append(
            f"the spec file's timeframe is {str(spec_doc.get('timeframe'))[:40]}, its settings' {timeframe}"
        )

    if input_shape is None:
        problems.append("the model's input shape cannot be read from it")
    elif len(input_shape) != 3:
        problems.append(f"the model takes inputs of shape {input_shape}, not (batch, window, features)")
    else:
        if window is not None and input_shape[1] is not None and input_shape[1] != window:
            problems.append(f"the spec's window is {window} rows, the model's input {input_shape[1]}")
        if names is not None and input_shape[2] != len(names):
            problems.append(f"the spec lists {len(names)} features, the model takes {input_shape[2]}")

    scaler_names = scaler_doc.get("feature_names")
    if names is not None and scaler_names != names:
        if isinstance(scaler_names, list) and sorted(map(str, scaler_names)) == sorted(names):
            problems.append(
                "the spec's feature order differs from the scaler's "
                f"({', '.join(names[:3])}... vs {', '.join(map(str, scaler_names[:3]))}...)"
            )
        else:
            problems.append("the spec's feature names differ from the scaler's")
    for key in ("center", "scale"):
        values = scaler_doc.get(key)
        if not isinstance(values, list) or not all(_number(v) for v in values):
            problems.append(f"the scaler's {key} is not a list of numbers")
            continue
        if names is not None and len(values) != len(names):
            problems.append(f"the scaler has {len(values)} {key} values for {len(names)} features")
        if not all(math.isfinite(v) for v in values):
            problems.append(f"the scaler's {key} holds a NaN or infinite value")
        elif key == "scale" and any(v == 0 for v in values):
            problems.append("the scaler's scale holds a zero (a division by zero)")
    return problems


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _timeframe_ok(timeframe: Any) -> bool:
    from .candles import UNIT_MS

    return (
        isinstance(timeframe, str)
        and len(timeframe) >= 2
        and timeframe[:-1].isdigit()
        and int(timeframe[:-1]) > 0
        and timeframe[-1] in UNIT_MS
    )


def verify_pair(storage: Storage, pair: str) -> list[str]:
    """The problems of one pair folder (empty: complete and intact).

    The marker must be valid (`read_marker`: schema, plain names, every engine file listed), every
    file it lists present with its checksum and size, and the engine's files must agree with each
    other and with the folder's name (`model_problems`).
    """
    raw = storage.read_bytes(f"{pair}/{SUCCESS}")
    if raw is None:
        return [f"no {SUCCESS}: the run did not complete"]
    try:
        marker = read_marker(raw, storage.url(pair))
    except MarkerError as exc:
        return [f"{SUCCESS} is unreadable: {exc.reason}"]
    problems = []
    for name, info in sorted(marker["artifacts"].items()):
        actual = storage.sha256(f"{pair}/{name}")
        if actual is None:
            problems.append(f"{name} is missing")
        elif actual != info["sha256"]:
            problems.append(f"{name} does not match its checksum")
    if problems:
        return problems
    tag = marker["tag"]
    docs = []
    for kind in ("spec", "scaler"):
        try:
            docs.append(json.loads(storage.read_bytes(f"{pair}/{kind}_{tag}.json") or b""))
        except ValueError:
            docs.append(None)
    shape = keras_input_shape(storage.read_bytes(f"{pair}/model_{tag}.keras") or b"")
    return model_problems(marker, docs[0], docs[1], shape, folder=pair)


def pair_folders(storage: Storage) -> list[str]:
    """The names of the pair folders under the root: every folder with a plain name (`PairSpec.name`:
    ``ETHUSDT``, ``ETHUSDT-futures``, an entry's id); staging, hidden folders and files left out."""
    if storage.is_local:
        if not storage.path.is_dir():
            return []
        names = [p.name for p in storage.path.iterdir() if p.is_dir()]
    else:
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in storage.fs.ls(storage.base, detail=False)]
        except FileNotFoundError:
            return []
    return sorted(n for n in names if n != STAGING and ID_RE.fullmatch(n))


def verify_output(output: str) -> list[tuple[str, list[str]]]:
    """``[(pair, problems)]`` for every pair folder under ``output``."""
    storage = open_storage(output)
    return [(pair, verify_pair(storage, pair)) for pair in pair_folders(storage)]
