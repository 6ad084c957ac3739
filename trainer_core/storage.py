"""The output root: a local folder (NFS or a PVC in a cluster) or an fsspec URL (s3://, gs://...).

Local writes go to a temporary name and are renamed into place. Object stores have no rename, but
each object is written whole, so a pair is published file by file with `_SUCCESS.json` last (and
the old marker deleted first): a pair without the marker is incomplete, whatever else is there.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

from .errors import StorageError


def is_url(root: str) -> bool:
    return "://" in str(root) and not str(root).startswith("file://")


class LocalStorage:
    is_local = True

    def __init__(self, root: str | Path):
        root = str(root)
        self.path = Path(root[len("file://"):] if root.startswith("file://") else root).expanduser()

    def __repr__(self):
        return str(self.path)

    def url(self, rel: str = "") -> str:
        return str(self.path / rel) if rel else str(self.path)

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return (self.path / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        final = self.path / rel
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            raise StorageError(f"Cannot write {final}: {exc.strerror or exc}.", "Check the output location.") from exc

    def sha256(self, rel: str) -> str | None:
        path = self.path / rel
        if not path.is_file():
            return None
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                h.update(block)
        return "sha256:" + h.hexdigest()


class FsspecStorage:
    is_local = False

    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError as exc:  # pragma: no cover - fsspec is a dependency
            raise StorageError("fsspec is needed for URL outputs.", "pip install fsspec") from exc
        self.root = str(url).rstrip("/")
        try:
            self.fs, self.base = fsspec.core.url_to_fs(self.root)
        except (ImportError, ValueError) as exc:
            protocol = self.root.split("://")[0]
            raise StorageError(
                f"Cannot open the output {self.root}: {exc}.",
                f"Install the fsspec driver for {protocol}:// (s3fs for s3://, gcsfs for gs://).",
            ) from exc

    def __repr__(self):
        return self.root

    def url(self, rel: str = "") -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _p(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def read_bytes(self, rel: str) -> bytes | None:
        try:
            return self.fs.cat_file(self._p(rel))
        except (FileNotFoundError, OSError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        try:
            self.fs.pipe_file(self._p(rel), data)
        except Exception as exc:
            raise StorageError(f"Cannot write {self.url(rel)}: {exc}.", "Check the bucket, credentials and endpoint.") from exc

    def sha256(self, rel: str) -> str | None:
        data = self.read_bytes(rel)
        return None if data is None else "sha256:" + hashlib.sha256(data).hexdigest()

    def publish(self, local_dir: Path, rel: str, marker_name: str) -> None:
        """Upload a staged pair folder: old marker removed first, every file, then the marker."""
        target = self._p(rel)
        try:
            if self.fs.exists(f"{target}/{marker_name}"):
                self.fs.rm_file(f"{target}/{marker_name}")
            existing = set(self.fs.find(target)) if self.fs.exists(target) else set()
            uploaded = set()
            for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
                name = path.relative_to(local_dir).as_posix()
                if name == marker_name:
                    continue
                remote = f"{target}/{name}"
                self.fs.put_file(str(path), remote)
                uploaded.add(self.fs._strip_protocol(remote))
            for stale in existing - uploaded:
                if not stale.endswith("/" + marker_name):
                    self.fs.rm_file(stale)
            self.fs.put_file(str(local_dir / marker_name), f"{target}/{marker_name}")
        except Exception as exc:
            raise StorageError(f"Cannot upload the artifacts to {self.url(rel)}: {exc}.",
                               "Check the bucket, credentials and endpoint.") from exc


def open_storage(root: str | Path):
    return FsspecStorage(str(root)) if is_url(str(root)) else LocalStorage(root)
