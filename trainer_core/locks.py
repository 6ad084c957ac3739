"""The lock that keeps two runs from staging one pair at once, and the heartbeat that keeps it fresh.

A lock is a small JSON file (holder's host, pid, start time) created with O_EXCL. Its holder
touches it every `LOCK_HEARTBEAT_SECONDS`; a lock not touched for `LOCK_STALE_SECONDS` is taken over.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from .errors import StorageError

#: a lock whose holder has not refreshed it for this long is taken over (the holder is gone, e.g.
#: killed on another node); holders refresh it every LOCK_HEARTBEAT_SECONDS
LOCK_STALE_SECONDS = 300
LOCK_HEARTBEAT_SECONDS = 30


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    return True


class PairLock:
    """An exclusive, heartbeated lock file for one pair: ``with PairLock(path, "ETHUSDT", where): ...``.

    ``where`` (the output's URL) and ``activity`` (what the holder does to it) only appear in the
    message shown when another run holds it.
    """

    def __init__(self, path: str | Path, pair: str, where: str, activity: str = "trained into"):
        self.path = Path(path)
        self.pair = pair
        self.where = where
        self.activity = activity
        self.held = False
        self._stop: threading.Event | None = None

    def __enter__(self) -> PairLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock (or take over a stale one); StorageError naming the holder if it is held."""
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0)
        for _ in range(2):
            try:
                fd = os.open(self.path, flags, 0o644)
            except FileExistsError:
                holder = self._read_holder()
                if not holder or self.is_stale(holder, me):
                    self.path.unlink(missing_ok=True)  # its process is gone (killed): take over
                    continue
                raise StorageError(
                    f"{self.pair} is being {self.activity} {self.where} by another run "
                    f"(pid {holder.get('pid')} on {holder.get('host')}, since {holder.get('since')}).",
                    f"Wait for it to finish, or delete {self.path} if that run is gone.",
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self.held = True
            self._start_heartbeat()
            return
        raise StorageError(
            f"Cannot take the lock {self.path}: another run keeps taking it.",
            f"Retry, or delete {self.path} if no run of {self.pair} is active.",
        )

    def _read_holder(self) -> dict:
        if self.path.is_symlink() or not self.path.is_file():
            return {}  # a link or a folder is no lock any run of ours wrote
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def is_stale(self, holder: dict, me: dict) -> bool:
        """The holder is gone: its process died on this host, or it is this very process id on this
        host (a restarted container where the trainer is pid 1 again), or it stopped refreshing.

        Refreshing is judged by how far the lock's time is from now in either direction: a lock
        dated in the future (another host's clock ahead, or a touched file) is stale after the same
        `LOCK_STALE_SECONDS`, so it cannot block a pair for as long as the skew lasts.
        """
        pid = holder.get("pid")
        if (
            holder.get("host") == me["host"]
            and isinstance(pid, int)
            and not isinstance(pid, bool)
            and (pid == me["pid"] or not _pid_alive(pid))
        ):
            return True
        try:
            age = time.time() - self.path.lstat().st_mtime
        except OSError:
            return True
        return abs(age) > LOCK_STALE_SECONDS

    def _start_heartbeat(self) -> None:
        stop = threading.Event()
        path = self.path

        def beat():
            while not stop.wait(LOCK_HEARTBEAT_SECONDS):
                try:
                    os.utime(path)
                except OSError:
                    return

        threading.Thread(target=beat, name=f"lock-heartbeat-{self.pair}", daemon=True).start()
        self._stop = stop

    def release(self) -> None:
        """Stop the heartbeat and delete the lock file (only if this object holds it)."""
        if self._stop is not None:
            self._stop.set()
            self._stop = None
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
