"""`trainer verify`: every pair folder under an output root against its `_SUCCESS.json`."""

from __future__ import annotations

from .artifacts import STAGING, SUCCESS, MarkerError, read_marker
from .manifest import PAIR_RE
from .storage import Storage, open_storage


def verify_pair(storage: Storage, pair: str) -> list[str]:
    """The problems of one pair folder (empty: complete and intact).

    The marker must be valid (`read_marker`: schema, plain names, every engine file listed) and
    every file it lists present with its checksum and size.
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
    return problems


def pair_folders(storage: Storage) -> list[str]:
    """The names of the pair folders under the root (staging and other files left out)."""
    if storage.is_local:
        if not storage.path.is_dir():
            return []
        names = [p.name for p in storage.path.iterdir() if p.is_dir()]
    else:
        try:
            names = [p.rstrip("/").rsplit("/", 1)[-1] for p in storage.fs.ls(storage.base, detail=False)]
        except FileNotFoundError:
            return []
    return sorted(n for n in names if n != STAGING and PAIR_RE.fullmatch(n))


def verify_output(output: str) -> list[tuple[str, list[str]]]:
    """``[(pair, problems)]`` for every pair folder under ``output``."""
    storage = open_storage(output)
    return [(pair, verify_pair(storage, pair)) for pair in pair_folders(storage)]
