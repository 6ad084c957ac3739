"""The output root: a local folder (NFS or a PVC in a cluster) or an fsspec URL (s3://, gs://...).

Local writes go to a temporary name and are renamed into place. Object stores have no rename, but
each object is written whole, so a pair is published file by file with `_SUCCESS.json` last (and
the old marker deleted first): a pair without the marker is incomplete, whatever else is there.
This module also owns the project's one SHA-256 file helper, its one temp-then-rename writer and
the access check run on an output before any training.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import StorageError


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """The ``"sha256:<hex>"`` digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return "sha256:" + h.hexdigest()


def bytes_sha256(data: bytes) -> str:
    """The ``"sha256:<hex>"`` digest of bytes in memory (same form as `file_sha256`)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """A temporary path beside ``final``, renamed onto it when the block succeeds.

    For writers that want a path (``frame.write_parquet(tmp)``, ``model.save(tmp)``). The name is
    hidden (``.NAME.tmp-XXXXXXXX``) and keeps ``final``'s last suffix unless ``suffix`` is given,
    since some libraries pick the format from it. On any failure the temporary file is removed and
    ``final`` is untouched; readers see either the old file or the new one, never a part.
    """
    final = Path(final)
    ext = "".join(final.suffixes[-1:]) if suffix is None else suffix
    tmp = final.with_name(f".{final.stem if ext else final.name}.tmp-{uuid.uuid4().hex[:8]}{ext}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` whole or not at all: temporary file, fsync, rename. Raises OSError."""
    final = Path(path)
    with atomic_path(final) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    return final


def is_url(root: str) -> bool:
    """True for an fsspec URL (``s3://...``); ``file://`` and plain paths are local."""
    return "://" in str(root) and not str(root).startswith("file://")


class LocalStorage:
    """A local (or mounted) output folder; ``rel`` paths are relative to it."""

    is_local = True

    def __init__(self, root: str | Path):
        root = str(root)
        self.path = Path(root[len("file://") :] if root.startswith("file://") else root).expanduser()

    def __repr__(self):
        return str(self.path)

    def url(self, rel: str = "") -> str:
        """The path of ``rel`` under the root, as a string (the root itself without ``rel``)."""
        return str(self.path / rel) if rel else str(self.path)

    def read_bytes(self, rel: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        try:
            return (self.path / rel).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file whole (temporary name, then rename); raises StorageError."""
        final = self.path / rel
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(final, data)
        except OSError as exc:
            raise StorageError(
                f"Cannot write {final}: {exc.strerror or exc}.", "Check the output location."
            ) from exc

    def sha256(self, rel: str) -> str | None:
        """The file's ``"sha256:<hex>"``, or None when it is not a regular file."""
        path = self.path / rel
        if path.is_symlink() or not path.is_file():
            return None
        return file_sha256(path)


class FsspecStorage:
    """An output on an fsspec filesystem (``s3://bucket/prefix``); ``rel`` keys are under the prefix."""

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
        """The URL of ``rel`` under the root (the root itself without ``rel``)."""
        return f"{self.root}/{rel}" if rel else self.root

    def _p(self, rel: str) -> str:
        return f"{self.base.rstrip('/')}/{rel}" if rel else self.base

    def read_bytes(self, rel: str) -> bytes | None:
        """The object's bytes, or None when it does not exist (or cannot be read)."""
        try:
            return self.fs.cat_file(self._p(rel))
        except (FileNotFoundError, OSError):
            return None

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write one object whole; raises StorageError."""
        try:
            self.fs.pipe_file(self._p(rel), data)
        except Exception as exc:
            raise StorageError(
                f"Cannot write {self.url(rel)}: {exc}.", "Check the bucket, credentials and endpoint."
            ) from exc

    def sha256(self, rel: str) -> str | None:
        """The object's ``"sha256:<hex>"``, or None when it does not exist."""
        data = self.read_bytes(rel)
        return None if data is None else bytes_sha256(data)

    def publish(
        self, local_dir: Path, rel: str, marker_name: str, names: Iterable[str] | None = None
    ) -> None:
        """Upload a staged pair folder: old marker removed first, every file, then the marker.

        ``names`` (relative paths) limits the upload to those files, so that what stays in the
        staging folder for a resume (Keras' backup, the attempt record) is never published.
        """
        target = self._p(rel)
        try:
            if self.fs.exists(f"{target}/{marker_name}"):
                self.fs.rm_file(f"{target}/{marker_name}")
            existing = set(self.fs.find(target)) if self.fs.exists(target) else set()
            uploaded = set()
            if names is None:
                names = [p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file()]
            for name in sorted(names):
                if name == marker_name:
                    continue
                remote = f"{target}/{name}"
                self.fs.put_file(str(local_dir / name), remote)
                uploaded.add(self.fs._strip_protocol(remote))
            for stale in existing - uploaded:
                if not stale.endswith("/" + marker_name):
                    self.fs.rm_file(stale)
            self.fs.put_file(str(local_dir / marker_name), f"{target}/{marker_name}")
        except Exception as exc:
            raise StorageError(
                f"Cannot upload the artifacts to {self.url(rel)}: {exc}.",
                "Check the bucket, credentials and endpoint.",
            ) from exc


Storage = LocalStorage | FsspecStorage


def open_storage(root: str | Path) -> Storage:
    """The storage of an output root: `FsspecStorage` for a URL, `LocalStorage` otherwise."""
    return FsspecStorage(str(root)) if is_url(str(root)) else LocalStorage(root)


# -- the access check before training ---------------------------------------------------------------

PROBE_PREFIX = ".trainer-access-probe-"


def check_output_access(root: str | Path) -> None:
    """Check that the output root can be listed, written and deleted from; raise StorageError if not.

    Run before any training so that a missing bucket, absent or wrong credentials, a read-only or
    non-folder local path are one line naming the problem (and what to do), not a failure after
    the first pair trained. A small probe object is written, read back and deleted. A local root
    that does not exist yet is not created: the probe goes to its nearest existing parent, which
    is where the run would create it.
    """
    storage = open_storage(root)
    if storage.is_local:
        _check_local(storage.path)
    else:
        _check_url(storage)


def _check_local(path: Path) -> None:
    hint = "Pass --output (or `output:`) a folder you may write to."
    probe_dir = path
    while not os.path.lexists(probe_dir):
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        what = "is not a folder" if probe_dir == path else f"cannot be created: {probe_dir} is not a folder"
        raise StorageError(f"The output {path} {what}.", hint)
    try:
        os.listdir(probe_dir)
        probe = probe_dir / f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}"
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno == errno.EROFS:
            reason = "the file system is read-only (Read-only file system)"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = f"permission denied ({exc.strerror})"
        where = path if probe_dir == path else f"{path} (its parent {probe_dir})"
        raise StorageError(f"Cannot write to the output {where}: {reason}.", hint) from exc


def _check_url(storage: FsspecStorage) -> None:
    url = storage.root
    probe = storage._p(f"{PROBE_PREFIX}{uuid.uuid4().hex[:8]}")
    step = "list"
    try:
        if storage.base.strip("/") and "/" not in storage.base.strip("/"):
            storage.fs.ls(storage.base, detail=False)  # a bare bucket: missing is an error, not empty
        else:
            storage.fs.exists(storage.base)
        step = "write"
        storage.fs.pipe_file(probe, b"probe")
        step = "read"
        if storage.fs.cat_file(probe) != b"probe":
            raise OSError(errno.EIO, "the probe object read back differs from what was written")
        step = "delete"
        storage.fs.rm_file(probe)
    except Exception as exc:  # drivers raise their own types; each is named below
        message, hint = _explain_url_error(exc, url, step)
        raise StorageError(message, hint) from exc


def _explain_url_error(exc: BaseException, url: str, step: str) -> tuple[str, str]:
    chain = []
    seen: BaseException | None = exc
    while seen is not None and len(chain) < 8:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    names = {type(e).__name__ for e in chain}
    text = " ".join(str(e) for e in chain)
    creds_hint = (
        "Give the trainer credentials for the bucket (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "AWS_PROFILE or an instance role) and check the endpoint (FSSPEC_S3_ENDPOINT_URL)."
    )
    if "NoCredentialsError" in names or "Unable to locate credentials" in text:
        return f"No credentials to reach the output {url}.", creds_hint
    if "NoSuchBucket" in text or "bucket does not exist" in text.lower():
        return (
            f"The output's bucket does not exist: {url}.",
            "Create the bucket, or fix the name in --output / `output:`.",
        )
    if (
        isinstance(exc, PermissionError)
        or names & {"AccessDenied", "Forbidden"}
        or any(
            w in text
            for w in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "Forbidden", "403")
        )
    ):
        return (
            f"Access to the output {url} was refused while trying to {step} ({_first_line(exc)}).",
            "Check the credentials and that they may list, write and delete objects under that prefix.",
        )
    if isinstance(exc, FileNotFoundError):
        return (
            f"The output's bucket does not exist: {url}.",
            "Create the bucket, or fix the name in --output / `output:`.",
        )
    if names & {
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ClientConnectorError",
        "ConnectionRefusedError",
    }:
        return (
            f"Cannot reach the storage of the output {url} ({_first_line(exc)}).",
            "Check the endpoint (FSSPEC_S3_ENDPOINT_URL) and the network.",
        )
    return (
        f"Cannot {step} the output {url}: {type(exc).__name__}: {_first_line(exc)}.",
        "Check the bucket, credentials and endpoint.",
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
