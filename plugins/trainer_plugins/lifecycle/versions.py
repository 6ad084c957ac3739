"""Plugin `versions`: every completed training of a pair becomes an immutable version.

Before a pair trains, the run its folder holds (if not yet a version: a folder from before model
stores, or one trained without this plugin) is registered, so a retrain never loses it; after it
commits, the new run is. With registration on (`trainer batch --register`, ``TRAINER_REGISTER=1``
or ``lifecycle.register: true`` in the output's policy) the new version becomes the pair's
``challenger``. A failure here is a warning: the artifacts are committed, and the next
`trainer models` command registers the run.
"""

from __future__ import annotations

import json
import os
import sys

from trainer_core import ArtifactWriter, ConflictError, ModelStore, TrainerError, hookimpl, read_policy

REGISTER_ENV = "TRAINER_REGISTER"


def registering(parent: str) -> bool:
    """True when new versions become the challenger (the variable, else the output's policy)."""
    value = os.environ.get(REGISTER_ENV, "").strip().lower()
    if value:
        return value not in ("0", "false", "no", "off")
    return bool(read_policy(parent)["lifecycle"].get("register"))


def pair_location(spec) -> str:
    """The pair's folder, exactly where the pipeline's writer commits it."""
    return ArtifactWriter(spec.output, spec.name, spec.tag).location


def metadata_span(store: ModelStore) -> dict | None:
    """The span of candles of a run whose marker does not record it (trained before markers did):
    the `metadata` reporter's ``data.time_range``, when that reporter ran."""
    try:
        marker = json.loads(store.storage.read_bytes(f"{store.name}/_SUCCESS.json") or b"")
        raw = store.storage.read_bytes(f"{store.name}/metadata_{marker['tag']}.json")
        first, last = json.loads(raw or b"")["data"]["time_range"]
    except (ValueError, KeyError, TypeError):
        return None
    return {"trained_from": first, "trained_until": last}


def sync(store: ModelStore, details: dict | None = None) -> dict | None:
    """`ModelStore.sync` with the metadata's span as the fallback for older runs."""
    return store.sync(details or metadata_span(store))


def register(location: str, details: dict | None = None) -> dict | None:
    """Register the folder's run as a version and, when registering, make it the challenger."""
    store = ModelStore(location)
    record = sync(store, details)
    if record is None or not registering(store.parent):
        return record
    for _attempt in range(10):
        state = store.state()
        if state.aliases.get("challenger") == record["id"] or record["id"] not in state.versions:
            return record
        try:
            store.move_alias(state, "challenger", record["id"], "challenge", reason="newly trained")
            return record
        except ConflictError:
            continue
    return record


def _warn(what: str, exc: BaseException) -> None:
    text = exc.message if isinstance(exc, TrainerError) else f"{type(exc).__name__}: {exc}"
    print(f"Warning: {what}: {text}", file=sys.stderr, flush=True)


@hookimpl
def trainer_before_pair(spec):
    """Keep the run the pair's folder holds as a version before a retrain replaces it."""
    try:
        sync(ModelStore(pair_location(spec)))
    except Exception as exc:  # never stop a training for the model store
        _warn(f"{spec.pair}: the previous run could not be registered as a version", exc)


@hookimpl
def trainer_after_pair(spec, result):
    """Register the run just committed, with the span of candles it was trained on."""
    try:
        span = result.data.time_range() if len(result.data) else None
        details = {"trained_from": span[0], "trained_until": span[1]} if span else None
        register(result.pair_dir or pair_location(spec), details)
    except Exception as exc:
        _warn(f"{spec.pair}: the new run could not be registered as a version", exc)


@hookimpl
def trainer_after_batch(manifest, results):
    """Make sure each pair trained in the batch is a version (and the challenger, when registering)."""
    for row in results:
        try:
            if row.get("status") != "trained" or not row.get("artifacts"):
                continue
            register(row["artifacts"])
        except Exception as exc:  # never fail a finished batch for the model store
            _warn(f"{row.get('pair')}: the new run could not be registered as a version", exc)
