"""A pair's artifacts: staged in a private folder, each file written then renamed, committed last.

A pair's folder ``{output}/{PAIR}/`` only ever holds a complete run. On a local output the
attempt is staged in ``{output}/.trainer-staging/{PAIR}/`` and swapped into place after
``_SUCCESS.json`` is written, so a killed or failed attempt leaves the previous artifacts
untouched. On an object store (fsspec URL) it is staged in a local temporary folder and
uploaded file by file, ``_SUCCESS.json`` last. A `PairLock` keeps two runs from staging the same
pair into the same output at once. `read_marker` is the one reader of ``_SUCCESS.json``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .errors import DataError, StorageError
from .locks import LOCK_HEARTBEAT_SECONDS, LOCK_STALE_SECONDS, PairLock  # noqa: F401 (re-exported)
from .storage import atomic_path, atomic_write_bytes, file_sha256, open_storage

SUCCESS = "_SUCCESS.json"
STAGING = ".trainer-staging"
BACKUP = "backup"
ATTEMPT = ".attempt.json"
#: kept beside Keras' backup while a run is in progress: the best checkpoint so far and the
#: per-epoch record (the pipeline's names); never artifacts, never published
CHECKPOINT = "checkpoint.weights.h5"
EPOCHS = "epochs.partial.json"
#: what an interrupted attempt keeps for its resume: Keras' backup, the best checkpoint so far,
#: the per-epoch record and the TensorBoard logs
RESUME_KEEP = (BACKUP, ATTEMPT, CHECKPOINT, EPOCHS, "logs")
#: resume state only: moved out of the folder before it is published, deleted once it is
RESUME_ONLY = (BACKUP, ATTEMPT, CHECKPOINT, EPOCHS)

#: the files the engine itself writes for every pair, as (kind, extension): `engine_files(tag)`
ENGINE_KINDS = (("model", "keras"), ("scaler", "json"), ("spec", "json"))
#: optional files prediction reads when `_SUCCESS.json` lists them (checked like the engine's):
#: the rule from probabilities to a trading signal, which a reporter chooses (``decision_{tag}.json``)
SERVING_KINDS = (("decision", "json"),)


def serving_file(kind: str, tag: str) -> str:
    """The name of an optional serving file of `SERVING_KINDS` (``decision`` -> ``decision_{tag}.json``)."""
    ext = dict(SERVING_KINDS)[kind]
    return artifact_name(kind, tag, ext)


#: kept for callers of the old name; `trainer_core.storage.file_sha256` is the one implementation
sha256_file = file_sha256


def artifact_name(kind: str, tag: str, ext: str) -> str:
    """``artifact_name("model", tag, "keras")`` -> ``model_{tag}.keras`` (the seed's file names)."""
    return f"{kind}_{tag}.{ext}"


def engine_files(tag: str) -> tuple[str, ...]:
    """The files the engine writes for a run with this tag; `_SUCCESS.json` must list each of them.

    ``engine_files("ETHUSDT_FW005_SL050_TP100")`` -> ``("model_….keras", "scaler_….json", "spec_….json")``.
    Prediction reads only these and the marker.
    """
    return tuple(artifact_name(kind, tag, ext) for kind, ext in ENGINE_KINDS)


def _json_default(value: Any):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "items"):
        return dict(value.items())
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dumps(obj: Any) -> str:
    """The project's JSON: indented, numpy values and dates converted, NaN refused, newline-terminated."""
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


# -- the marker ----------------------------------------------------------------------------------

#: a tag or pair name as the marker records it: what the seed's naming produces
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,199}")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_MAX_DEPTH = 8


class MarkerError(DataError):
    """A ``_SUCCESS.json`` that is not a valid marker; ``reason`` is the short why."""

    def __init__(self, where: str, reason: str):
        super().__init__(
            f"{where}/{SUCCESS} is unreadable: {reason}.",
            "The run's marker is damaged or was altered; retrain the pair (`trainer batch` retrains it).",
        )
        self.reason = reason


def check_artifact_name(name: Any, where: str = "the marker") -> str:
    """Refuse any artifact name that is not a plain relative path; return it unchanged.

    A name is one to eight components joined by ``/`` (the TensorBoard files live in ``logs/``),
    none empty, ``.``, or starting with ``..``, none holding a backslash, NUL or another control
    character: no absolute path and no way out of the pair's folder. Names come from a marker that
    anyone who can write the bucket may have written, and become local paths when a model is
    downloaded.
    """
    if not isinstance(name, str) or not name:
        raise MarkerError(where, f"artifact name {name!r} is not a file name")
    parts = name.split("/")
    if len(parts) > _MAX_DEPTH or len(name) > 1024 or not all(_plain_component(p) for p in parts):
        raise MarkerError(where, f"artifact name {name[:80]!r} is not a plain relative file name")
    return name


def _plain_component(part: str) -> bool:
    return (
        bool(part)
        and part != "."
        and not part.startswith("..")
        and len(part.encode("utf-8", "replace")) <= 255
        and not any(c == "\\" or ord(c) < 32 or ord(c) == 127 for c in part)
    )


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _plain(value: Any, field: str, where: str) -> str:
    if value is None:
        raise MarkerError(where, f"it has no '{field}'")
    if not isinstance(value, str) or not _PLAIN_NAME.fullmatch(value) or ".." in value:
        raise MarkerError(where, f"{field} {str(value)[:80]!r} is not a plain name")
    return value


def read_marker(raw: bytes | str, where: str, require: tuple[str, ...] | None = None) -> dict:
    """Parse and validate a pair's ``_SUCCESS.json``; raise `MarkerError` (a DataError) if it is not one.

    ``where`` names the pair's folder in messages. The marker must be a JSON object with a plain
    ``tag`` and ``pair`` and an ``artifacts`` object mapping each relative file name (see
    `check_artifact_name`) to ``{"sha256": "sha256:<64 hex>", "bytes": n}``; it must list every
    file in ``require`` (default: `engine_files(tag)`). Optional fields are type-checked:
    ``config_hash``, ``started``, ``finished``, ``trainer_version`` (strings), ``data_sha256``
    (string or null), ``metrics`` and ``code`` (objects), ``figures`` (object of objects). Nothing
    is downloaded or opened: callers fetch only the names this returns.
    """
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
        marker = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MarkerError(where, f"not valid JSON ({type(exc).__name__})") from None
    if not isinstance(marker, dict):
        raise MarkerError(where, f"it is {_json_type(marker)}, not an object")
    artifacts = marker.get("artifacts")
    if not isinstance(artifacts, dict):
        raise MarkerError(where, f"'artifacts' is {_json_type(artifacts)}, not an object of file checksums")
    tag = _plain(marker.get("tag"), "tag", where)
    _plain(marker.get("pair"), "pair", where)
    for name, info in artifacts.items():
        check_artifact_name(name, where)
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("sha256"), str)
            or not _DIGEST.fullmatch(info["sha256"])
        ):
            raise MarkerError(where, f"artifact {name[:80]} has no valid sha256")
        size = info.get("bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise MarkerError(where, f"artifact {name[:80]} has no valid size in bytes")
    for field in ("config_hash", "started", "finished", "trainer_version"):
        if field in marker and not isinstance(marker[field], str):
            raise MarkerError(where, f"'{field}' is not a string")
    if marker.get("data_sha256") is not None and not isinstance(marker["data_sha256"], str):
        raise MarkerError(where, "'data_sha256' is not a string")
    for field in ("metrics", "figures", "code"):
        if field in marker and not isinstance(marker[field], dict):
            raise MarkerError(where, f"'{field}' is not an object")
    for reporter, figures in marker.get("figures", {}).items():
        if not isinstance(figures, dict):
            raise MarkerError(where, f"'figures.{reporter[:40]}' is not an object")
    for name in engine_files(tag) if require is None else require:
        if name not in artifacts:
            raise MarkerError(where, f"it does not list {name}")
    return marker


# -- the writer ----------------------------------------------------------------------------------


def _is_real_dir(path: Path) -> bool:
    """A folder, not a link to one (lstat: links are never followed)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _remove(path: Path) -> None:
    """Delete a file, a link (never its target) or a folder tree."""
    if _is_real_dir(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _backup_problem(folder: Path) -> str | None:
    """Why a resume from this staging folder would fail, or None when Keras can read its backup.

    Keras' BackupAndRestore leaves ``backup/latest.weights.h5`` (HDF5) and
    ``backup/training_metadata.json`` (``{"epoch": n}``); a full disk leaves them empty or cut short.
    """
    backup = folder / BACKUP
    weights, meta = backup / "latest.weights.h5", backup / "training_metadata.json"
    for path in (weights, meta):
        if path.is_symlink() or not path.is_file():
            return f"{BACKUP}/{path.name} is missing"
    try:
        record = json.loads(meta.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return f"{BACKUP}/{meta.name} is not valid JSON"
    epoch = record.get("epoch") if isinstance(record, dict) else None
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        return f"{BACKUP}/{meta.name} holds no epoch"
    for path, what in ((weights, f"{BACKUP}/{weights.name}"), (folder / CHECKPOINT, CHECKPOINT)):
        if path is not weights and not os.path.lexists(path):
            continue  # the best checkpoint exists only once an epoch improved
        problem = _hdf5_problem(path)
        if problem:
            return f"{what} {problem}"
    if os.path.lexists(folder / EPOCHS):
        try:
            json.loads((folder / EPOCHS).read_text())
        except (OSError, ValueError, UnicodeDecodeError):
            return f"{EPOCHS} is not valid JSON"
    return None


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _hdf5_problem(path: Path) -> str | None:
    if path.is_symlink() or not path.is_file():
        return "is not a file"
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_HDF5_SIGNATURE))
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if not head:
        return "is empty"
    if head != _HDF5_SIGNATURE:
        return "is not an HDF5 file"
    try:
        import h5py

        with h5py.File(path, "r") as fh:
            fh.visit(lambda _name: None)  # walks the whole index: a cut-short file fails here
    except ImportError:  # pragma: no cover - h5py comes with Keras
        return None
    except Exception as exc:  # h5py raises OSError, KeyError or RuntimeError for damaged files
        return f"is damaged ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})"
    return None


def _stderr_echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class ArtifactWriter:
    """Where a pair's files are written: ``out.write_json(out.name("metadata", "json"), obj)``.

    Every file goes to the staging folder `dir` under a temporary name and is renamed into place
    when written whole; `commit` publishes the folder with ``_SUCCESS.json`` listing each file's
    checksum. Reporters use `name`, `write_bytes`, `write_text`, `write_json` and `writing`; `dir`
    and `location` say where the files are now and where they will be.
    """

    #: the staging folder of this attempt: every file written lands here until `commit`
    dir: Path

    def __init__(self, output_root: str | Path, pair: str, tag: str):
        self.storage = open_storage(output_root)
        self.pair = pair
        self.tag = tag
        if self.storage.is_local:
            self.staging_root = self.storage.path / STAGING
            self.final_dir: Path | None = self.storage.path / pair
        else:
            key = hashlib.sha256(self.storage.url().encode()).hexdigest()[:12]
            self.staging_root = Path(tempfile.gettempdir()) / "trainer-staging" / key
            self.final_dir = None
        self.dir = self.staging_root / pair
        self.lock_path = self.staging_root / f"{pair}.lock"
        self.lock = PairLock(self.lock_path, pair, self.storage.url())
        #: the names (relative to `dir`) written through this writer, in order
        self.written: list[str] = []

    @property
    def location(self) -> str:
        """Where the committed artifacts live (a local path or a URL): ``{output}/{PAIR}``."""
        return self.storage.url(self.pair)

    # -- naming ----------------------------------------------------------------------
    def name(self, kind: str, ext: str) -> str:
        """``name("model", "keras")`` -> ``model_{tag}.keras`` (the seed's file names)."""
        return artifact_name(kind, self.tag, ext)

    def engine_files(self) -> tuple[str, ...]:
        """The engine's own files for this run (`engine_files` of this tag)."""
        return engine_files(self.tag)

    # -- writing ---------------------------------------------------------------------
    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path for a file written by a library; renamed to ``name`` when the block ends.

        ``with out.writing(out.name("model", "keras")) as tmp: model.save(tmp)``. The temporary
        path keeps the name's suffix (libraries choose the format from it). If the block raises,
        the temporary file is removed and ``name`` is not written. ``name`` is a relative file
        name (``sub/x.txt`` allowed, no ``..``).
        """
        check_artifact_name(name, str(self.dir))
        final = self.dir / name
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(final) as tmp:
            yield tmp
        if name not in self.written:
            self.written.append(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Write ``data`` as the artifact ``name`` (whole, fsynced, then renamed); return its path."""
        with self.writing(name) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return self.dir / name

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` (UTF-8) as the artifact ``name``; return its path."""
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as indented JSON (numpy values and dates converted, NaN refused); return its path."""
        return self.write_text(name, dumps(obj))

    def checksums(self) -> dict[str, dict]:
        """``{name: {"sha256": ..., "bytes": n}}`` of every artifact staged so far (resume state excluded)."""
        out = {}
        for path in sorted(self.dir.rglob("*")):
            rel = path.relative_to(self.dir).as_posix()
            if rel == SUCCESS or rel.split("/")[0] in RESUME_ONLY or path.is_symlink() or not path.is_file():
                continue
            out[rel] = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
        return out

    # -- lifecycle ---------------------------------------------------------------------
    def _check_layout(self) -> None:
        """Links and files where this writer's folders should be are errors, never followed or moved."""
        for path, what in (
            (self.staging_root, "the staging folder"),
            (self.dir, "the pair's staging folder"),
            (self.final_dir, "the pair's folder"),
        ):
            if path is not None and os.path.lexists(path) and not _is_real_dir(path):
                kind = "a link" if os.path.islink(path) else "a file"
                raise StorageError(
                    f"{path} is {kind}, where {what} of {self.pair} should be.",
                    f"Move or delete {path} yourself; the trainer never follows or removes it.",
                )

    def _lock(self) -> None:
        self.lock.acquire()

    def unlock(self) -> None:
        """Release the pair's lock (and the staging root when it is left empty)."""
        was_held = self.lock.held
        self.lock.release()
        if was_held:
            with contextlib.suppress(OSError):
                self.staging_root.rmdir()  # only when empty

    def prepare(
        self, attempt: Mapping[str, Any], force: bool = False, echo: Callable[[str], None] | None = None
    ) -> bool:
        """Lock and create the staging folder; keep a resumable backup only from the same attempt.

        ``attempt`` identifies the run (settings and data hashes); a staged backup is resumed only
        when the interrupted attempt had the same one and Keras can read the backup. An unreadable
        backup (e.g. cut short by a full disk) is discarded with a warning through ``echo``
        (default: stderr) and the attempt starts over; ``force=True`` always starts over. Returns
        True when the backup is kept (a resume). Raises StorageError when the output cannot be
        written or a file or link stands where a folder should be.
        """
        echo = echo or _stderr_echo
        try:
            self._check_layout()
            self.staging_root.mkdir(parents=True, exist_ok=True)
            self._check_layout()
            self._lock()
            self._finish_interrupted_commit()
            self._check_layout()
            resumable = False
            record = self.dir / ATTEMPT
            if _is_real_dir(self.dir):
                previous = None
                if not record.is_symlink():
                    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
                        previous = json.loads(record.read_text())
                if not force and previous == dict(attempt) and _is_real_dir(self.dir / BACKUP):
                    problem = _backup_problem(self.dir)
                    if problem is None:
                        resumable = True
                    else:
                        echo(
                            f"Warning: {self.pair}: the backup of the interrupted run cannot be read "
                            f"({problem}); discarding it and starting over."
                        )
                for child in self.dir.iterdir():
                    if resumable and child.name in RESUME_KEEP and not child.is_symlink():
                        continue
                    _remove(child)
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(record, dumps(dict(attempt)).encode())
        except StorageError:
            self.unlock()
            raise
        except OSError as exc:
            self.unlock()
            raise StorageError(
                f"Cannot write to the output {self.storage.url()}: {exc.strerror or exc}.",
                "Check that the path exists or can be created and that you may write there.",
            ) from exc
        return resumable

    def _finish_interrupted_commit(self) -> None:
        """A commit stopped between its two renames left a complete run in staging: put it in place."""
        if self.final_dir is None:
            return
        if _is_real_dir(self.dir) and (self.dir / SUCCESS).is_file() and not os.path.lexists(self.final_dir):
            os.replace(self.dir, self.final_dir)
        if _is_real_dir(self.final_dir):
            for old in self.staging_root.glob(f"{self.pair}.replaced-*"):
                _remove(old)
        for aside in self.staging_root.glob(f"{self.pair}.resume-*"):
            _remove(aside)

    def commit(self, marker: Mapping[str, Any]) -> str:
        """Write ``_SUCCESS.json`` (``marker`` plus every artifact's checksum) last, then publish.

        The resume state (Keras' backup, the attempt record) is kept until the folder is
        published, so a failed upload or rename can still be resumed. Returns `location`.
        """
        try:
            self._check_layout()
            artifacts = self.checksums()
            for name in artifacts:
                try:
                    check_artifact_name(name, str(self.dir))
                except MarkerError:
                    raise StorageError(
                        f"{self.dir / name} cannot be published: {name!r} is not a plain file name.",
                        "Rename the file the plugin writes (letters, digits, _ . - and no control characters).",
                    ) from None
            full = dict(marker, artifacts=artifacts)
            atomic_write_bytes(self.dir / SUCCESS, dumps(full).encode())
            if self.final_dir is None:
                self.storage.publish(self.dir, self.pair, SUCCESS, names=list(artifacts))
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                self._swap_into_place()
        except OSError as exc:
            raise StorageError(
                f"Cannot commit the artifacts of {self.pair} to {self.storage.url()}: {exc.strerror or exc}.",
                "Check free space and permissions; the previous artifacts, if any, were kept.",
            ) from exc
        finally:
            self.unlock()
        return self.location

    def _swap_into_place(self) -> None:
        assert self.final_dir is not None
        aside = self.staging_root / f"{self.pair}.resume-{uuid.uuid4().hex[:8]}"
        kept = [n for n in RESUME_ONLY if os.path.lexists(self.dir / n)]
        if kept:
            aside.mkdir()
            for n in kept:
                os.replace(self.dir / n, aside / n)
        old = None
        try:
            if os.path.lexists(self.final_dir):
                old = self.staging_root / f"{self.pair}.replaced-{uuid.uuid4().hex[:8]}"
                os.replace(self.final_dir, old)
            os.replace(self.dir, self.final_dir)
        except OSError:
            if old is not None and not os.path.lexists(self.final_dir):
                os.replace(old, self.final_dir)  # the previous run stays published
            if _is_real_dir(self.dir):
                for n in kept:
                    os.replace(aside / n, self.dir / n)
            raise
        for path in (old, aside):
            if path is not None:
                with contextlib.suppress(OSError):
                    _remove(path)

    def discard_outputs(self) -> None:
        """After a failure: drop what this attempt wrote, keep a resumable backup, release the lock."""
        try:
            if _is_real_dir(self.dir):
                for child in self.dir.iterdir():
                    if child.name in RESUME_KEEP and not child.is_symlink():
                        continue
                    with contextlib.suppress(OSError):
                        _remove(child)
                if not _is_real_dir(self.dir / BACKUP):
                    shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self.unlock()
