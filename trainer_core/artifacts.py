"""A pair's artifacts: staged in a private folder, each file written then renamed, committed last.

A pair's folder ``{output}/{PAIR}/`` only ever holds a complete run. On a local output the
attempt is staged in ``{output}/.trainer-staging/{PAIR}/`` and swapped into place after
``_SUCCESS.json`` is written, so a killed or failed attempt leaves the previous artifacts
untouched. On an object store (fsspec URL) it is staged in a local temporary folder and
uploaded file by file, ``_SUCCESS.json`` last. A lock file keeps two runs from staging the same
pair into the same local output at once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any, Iterator

from .errors import StorageError
from .storage import open_storage

SUCCESS = "_SUCCESS.json"
STAGING = ".trainer-staging"
BACKUP = "backup"
ATTEMPT = ".attempt.json"
#: what an interrupted attempt keeps for its resume: Keras' backup, the best checkpoint so far,
#: the per-epoch record and the TensorBoard logs
RESUME_KEEP = (BACKUP, ATTEMPT, "checkpoint.weights.h5", "epochs.partial.json", "logs")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return "sha256:" + h.hexdigest()


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
    return json.dumps(obj, indent=2, default=_json_default, allow_nan=False) + "\n"


#: a lock whose holder has not refreshed it for this long is taken over (the holder is gone, e.g.
#: killed on another node); holders refresh it every LOCK_HEARTBEAT_SECONDS
LOCK_STALE_SECONDS = 300
LOCK_HEARTBEAT_SECONDS = 30


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ArtifactWriter:
    """Where reporters write a pair's files: ``out.write_json(out.name("metadata", "json"), ...)``."""

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
        self.written: list[str] = []
        self._locked = False

    @property
    def location(self) -> str:
        """Where the committed artifacts live (a local path or a URL)."""
        return self.storage.url(self.pair)

    # -- naming ----------------------------------------------------------------------
    def name(self, kind: str, ext: str) -> str:
        """``name("model", "keras")`` -> ``model_{tag}.keras`` (the seed's file names)."""
        return f"{kind}_{self.tag}.{ext}"

    # -- lifecycle ---------------------------------------------------------------------
    def _lock(self) -> None:
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        for _ in range(2):
            try:
                fd = os.open(self.lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder = json.loads(self.lock_path.read_text())
                except (OSError, ValueError):
                    holder = {}
                if not holder or self._lock_is_stale(holder, me):
                    self.lock_path.unlink(missing_ok=True)  # its process is gone (killed): take over
                    continue
                raise StorageError(
                    f"{self.pair} is being trained into {self.storage.url()} by another run "
                    f"(pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}).",
                    f"Wait for it to finish, or delete {self.lock_path} if that run is gone.",
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self._locked = True
            self._start_heartbeat()
            return

    def _lock_is_stale(self, holder: dict, me: dict) -> bool:
        """The holder is gone: its process died on this host, or it is this very process id on this
        host (a restarted container where the trainer is pid 1 again), or it stopped refreshing."""
        pid = holder.get("pid")
        if holder.get("host") == me["host"] and isinstance(pid, int) and (pid == me["pid"] or not _pid_alive(pid)):
            return True
        try:
            age = dt.datetime.now().timestamp() - self.lock_path.stat().st_mtime
        except OSError:
            return True
        return age > LOCK_STALE_SECONDS

    def _start_heartbeat(self) -> None:
        import threading

        stop = threading.Event()
        path = self.lock_path

        def beat():
            while not stop.wait(LOCK_HEARTBEAT_SECONDS):
                try:
                    os.utime(path)
                except OSError:
                    return

        thread = threading.Thread(target=beat, name=f"lock-heartbeat-{self.pair}", daemon=True)
        thread.start()
        self._heartbeat = stop

    def unlock(self) -> None:
        heartbeat = getattr(self, "_heartbeat", None)
        if heartbeat is not None:
            heartbeat.set()
        if self._locked:
            self.lock_path.unlink(missing_ok=True)
            self._locked = False
            with contextlib.suppress(OSError):
                self.staging_root.rmdir()  # only when empty

    def prepare(self, attempt: dict) -> bool:
        """Lock and create the staging folder; keep a resumable backup only from the same attempt.

        Returns True when a backup of an interrupted identical attempt is kept (a resume).
        """
        try:
            self.staging_root.mkdir(parents=True, exist_ok=True)
            self._lock()
            self._finish_interrupted_commit()
            resumable = False
            marker = self.dir / ATTEMPT
            if self.dir.exists():
                try:
                    previous = json.loads(marker.read_text())
                except (OSError, ValueError):
                    previous = None
                resumable = previous == attempt and (self.dir / BACKUP).is_dir()
                for child in self.dir.iterdir():
                    if resumable and child.name in RESUME_KEEP:
                        continue
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._write_text_atomic(marker, dumps(attempt))
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
        if (self.dir / SUCCESS).is_file() and not self.final_dir.exists():
            os.replace(self.dir, self.final_dir)
        for old in self.staging_root.glob(f"{self.pair}.replaced-*"):
            if self.final_dir.exists():
                shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temporary path for a file written by a library; renamed to ``name`` on success."""
        final = self.dir / name
        final.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(Path(name).suffixes[-1:])
        tmp = final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{suffix}")
        try:
            yield tmp
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                tmp.unlink()
        if name not in self.written:
            self.written.append(name)

    def write_bytes(self, name: str, data: bytes) -> Path:
        with self.writing(name) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        return self.dir / name

    def write_text(self, name: str, text: str) -> Path:
        return self.write_bytes(name, text.encode("utf-8"))

    def write_json(self, name: str, obj: Any) -> Path:
        return self.write_text(name, dumps(obj))

    def _write_text_atomic(self, path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(text)
        os.replace(tmp, path)

    def checksums(self) -> dict[str, dict]:
        out = {}
        for path in sorted(p for p in self.dir.rglob("*") if p.is_file()):
            rel = path.relative_to(self.dir).as_posix()
            if rel in (SUCCESS, ATTEMPT) or rel.startswith(BACKUP + "/"):
                continue
            out[rel] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        return out

    def commit(self, marker: dict) -> str:
        """Write ``_SUCCESS.json`` (with every artifact's checksum) last, then publish the folder."""
        try:
            backup = self.dir / BACKUP
            if backup.exists():
                shutil.rmtree(backup)
            (self.dir / ATTEMPT).unlink(missing_ok=True)
            marker = dict(marker, artifacts=self.checksums())
            self._write_text_atomic(self.dir / SUCCESS, dumps(marker))
            if self.final_dir is None:
                self.storage.publish(self.dir, self.pair, SUCCESS)
                shutil.rmtree(self.dir, ignore_errors=True)
            else:
                old = None
                if self.final_dir.exists():
                    old = self.staging_root / f"{self.pair}.replaced-{uuid.uuid4().hex[:8]}"
                    os.replace(self.final_dir, old)
                os.replace(self.dir, self.final_dir)
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            raise StorageError(
                f"Cannot commit the artifacts of {self.pair} to {self.storage.url()}: {exc.strerror or exc}.",
                "Check free space and permissions; the previous artifacts, if any, were kept.",
            ) from exc
        finally:
            self.unlock()
        return self.location

    def discard_outputs(self) -> None:
        """After a failure: drop what this attempt wrote, keep a resumable backup, release the lock."""
        try:
            if self.dir.exists():
                for child in self.dir.iterdir():
                    if child.name in RESUME_KEEP:
                        continue
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
                if not (self.dir / BACKUP).exists():
                    shutil.rmtree(self.dir, ignore_errors=True)
        finally:
            self.unlock()
