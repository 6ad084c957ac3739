"""Model versions, aliases and their event log, per pair, on the output's storage.

Beside a pair's folder ``{parent}/{NAME}/`` (the live run, replaced by each retrain) the store
``{parent}/_models/{NAME}/`` keeps every completed run as an immutable version
(``versions/v{id:06d}/``, a copy of the folder with its ``_SUCCESS.json``) and an append-only log
``events/{seq:06d}.json``. The log is the truth: versions, the ``champion`` and ``challenger``
aliases and their history are a replay of it; ``index.json`` is a snapshot of that replay for
people and scripts. An event is created only if its sequence number is still free (a hard link
locally, ``If-None-Match: *`` on S3), so two writers that read the same state cannot both
append: an alias moves exactly when its event is created, and the loser is told so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import json
import os
import re
import shutil
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, StorageError, TrainerError
from .storage import atomic_write_bytes, bytes_sha256, file_sha256, is_url, open_storage

STORE = "_models"
SUCCESS = "_SUCCESS.json"
ALIASES = ("champion", "challenger")
#: the policy file of every store under one parent: ``{parent}/_models/policy.json``
POLICY = "policy.json"
DEFAULT_POLICY: dict[str, dict[str, Any]] = {
    "lifecycle": {"keep": 5, "expire_after": None},
    "promotion": {
        "min_delta": 0.0,
        "max_drawdown_margin": 0.02,
        "min_trades": 30,
        "confidence": 0.95,
        "draws": 2000,
        "block_length": None,
        "seed": 0,
    },
}
_SELECTOR = re.compile(r"^(?P<name>.+?)(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|#(?P<version>[0-9]+))$")
_VERSION_FOLDER = re.compile(rf"^(?P<parent>.+)/{STORE}/(?P<name>[^/]+)/versions/v(?P<id>[0-9]{{6}})$")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m|h|d|w)\s*$")


class LifecycleError(TrainerError):
    """A version, alias or model selector that does not exist, or a store that cannot be used."""

    exit_code = 2


class ConflictError(TrainerError):
    """Another writer appended to a pair's event log after this one read it: nothing was applied."""

    exit_code = 1


class ExpiredModelError(TrainerError):
    """The selected version's ``valid_until`` has passed."""

    exit_code = 1


def now_iso() -> str:
    """The current UTC time, ISO-8601 to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def who() -> str:
    """``user@host`` (``TRAINER_USER`` overrides it): the author recorded on each event."""
    if os.environ.get("TRAINER_USER"):
        return os.environ["TRAINER_USER"]
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"{user}@{socket.gethostname()}"


def parse_duration(text: str | None) -> dt.timedelta | None:
    """``"30d"``, ``"12h"``, ``"90m"``, ``"2w"`` -> a timedelta; None or ``"none"`` -> None."""
    if text is None or str(text).strip().lower() in ("", "none", "null", "never"):
        return None
    found = _DURATION.match(str(text))
    if not found:
        raise ConfigError(
            f"lifecycle.expire_after {text!r} is not a duration.",
            "Use a number and a unit: 90m, 12h, 30d or 2w (or none).",
        )
    value, unit = float(found[1]), found[2]
    return dt.timedelta(**{{"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: value})


def parse_time(text: str | None) -> dt.datetime | None:
    """An ISO-8601 time (``Z`` or an offset; naive means UTC) as an aware UTC datetime."""
    if not text:
        return None
    value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return (
        value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
    )


def split_selector(location: str) -> tuple[str, str | None, int | None]:
    """``"out/ETHUSDT@champion"`` -> ``("out/ETHUSDT", "champion", None)``; ``"out/ETHUSDT#3"`` ->
    ``("out/ETHUSDT", None, 3)``; a plain folder -> ``(folder, None, None)``."""
    text = str(location).rstrip("/")
    head, _, last = text.rpartition("/")
    found = _SELECTOR.match(last)
    if not found:
        return text, None, None
    folder = f"{head}/{found['name']}" if head else found["name"]
    return folder, found["alias"], int(found["version"]) if found["version"] else None


@dataclass
class State:
    """The replay of a pair's event log."""

    seq: int = 0
    versions: dict[int, dict] = field(default_factory=dict)
    aliases: dict[str, int] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    #: every version that ever held the champion alias (retention keeps them)
    ever_champion: set[int] = field(default_factory=set)

    def newest(self) -> int | None:
        """The highest version id still kept, or None."""
        return max(self.versions) if self.versions else None

    def apply(self, event: dict) -> None:
        """Fold one event into the state."""
        self.seq = event["seq"]
        self.events.append(event)
        action = event.get("action")
        if action == "register":
            record = event["record"]
            self.versions[int(record["id"])] = record
        elif action == "prune":
            self.versions.pop(int(event["version"]), None)
        elif event.get("alias") in ALIASES:
            alias, to = event["alias"], event.get("to")
            if to is None:
                self.aliases.pop(alias, None)
            else:
                self.aliases[alias] = int(to)
                if alias == "champion":
                    self.ever_champion.add(int(to))

    def index(self) -> dict:
        """What ``index.json`` holds: the aliases and each kept version's record."""
        return {
            "format": "pair-trainer model index v1",
            "seq": self.seq,
            "aliases": dict(self.aliases),
            "versions": [self.versions[k] for k in sorted(self.versions)],
            "ever_champion": sorted(self.ever_champion),
        }


class ModelStore:
    """The versions, aliases and events of one pair folder (a local path or an fsspec URL)."""

    def __init__(self, pair_location: str | Path):
        location = str(pair_location).rstrip("/")
        if location.startswith("file://"):
            location = location[len("file://") :]
        head, _, name = location.rpartition("/")
        if not name or name in (".", "..") or name == STORE:
            raise LifecycleError(f"{location} is not a pair's folder.", "Pass OUTPUT/PAIR.")
        self.location = location
        self.name = name
        self.parent = head or "."
        self.storage = open_storage(self.parent)
        self.base = f"{STORE}/{name}"

    def __repr__(self) -> str:
        return f"ModelStore({self.location!r})"

    # -- low-level I/O ------------------------------------------------------------------
    def url(self, rel: str = "") -> str:
        """The URL or path of ``rel`` inside the store."""
        return self.storage.url(f"{self.base}/{rel}" if rel else self.base)

    def _read(self, rel: str) -> bytes | None:
        return self.storage.read_bytes(f"{self.base}/{rel}")

    def _write(self, rel: str, data: bytes) -> None:
        self.storage.write_bytes(f"{self.base}/{rel}", data)

    def _remove(self, rel: str) -> None:
        """Delete one file of the store (missing is fine)."""
        full = f"{self.base}/{rel}"
        with contextlib.suppress(FileNotFoundError, OSError):
            if self.storage.is_local:
                (self.storage.path / full).unlink()
            else:
                self.storage.fs.rm_file(self.storage._p(full))

    def _create(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist; False when it already did."""
        full = f"{self.base}/{rel}"
        if self.storage.is_local:
            final = self.storage.path / full
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
                atomic_write_bytes(tmp, data)
                try:
                    os.link(tmp, final)  # atomic, and refuses an existing name: the whole file or nothing
                except FileExistsError:
                    return False
                finally:
                    tmp.unlink()
            except OSError as exc:
                raise StorageError(
                    f"Cannot write {final}: {exc.strerror or exc}.", "Check the output location."
                ) from exc
            return True
        fs = self.storage.fs
        try:
            fs.pipe_file(self.storage._p(full), data, mode="create")
        except FileExistsError:
            return False
        except TypeError as exc:
            raise StorageError(
                f"{self.storage.url(full)}: this storage driver cannot create an object only if it is absent.",
                "Keep model stores on a local folder or on S3 (s3fs), which support conditional writes.",
            ) from exc
        except Exception as exc:
            text = str(exc)
            if "PreconditionFailed" in text or "pre-conditions" in text or "412" in text:
                return False
            raise StorageError(
                f"Cannot write {self.storage.url(full)}: {exc}.",
                "Check the bucket, credentials and endpoint.",
            ) from exc
        return True

    def _list(self, rel: str) -> list[str]:
        """The names directly under ``rel`` in the store (files and folders)."""
        full = f"{self.base}/{rel}"
        if self.storage.is_local:
            path = self.storage.path / full
            return sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        fs = self.storage.fs
        try:
            fs.invalidate_cache(self.storage._p(full))  # another process may have written since
            return sorted(
                p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(self.storage._p(full), detail=False)
            )
        except (FileNotFoundError, OSError):
            return []

    def exists(self) -> bool:
        """True when the store has at least one event."""
        return bool(self._list("events"))

    # -- the log ------------------------------------------------------------------------
    def state(self) -> State:
        """Replay the event log (events whose file cannot be read are an error, never skipped)."""
        state = State()
        for name in self._list("events"):
            if not re.fullmatch(r"[0-9]{6}\.json", name):
                continue
            raw = self._read(f"events/{name}")
            try:
                event = json.loads(raw or b"")
                if int(event["seq"]) != int(name[:6]):
                    raise ValueError("sequence number differs from the file name")
            except (ValueError, KeyError, TypeError) as exc:
                raise LifecycleError(
                    f"{self.url('events/' + name)} is not a valid event ({exc}).",
                    "The log was altered; restore the file from a backup of the output.",
                ) from None
            state.apply(event)
        return state

    def append(self, state: State, event: dict) -> dict:
        """Append ``event`` right after ``state``; raise ConflictError if another writer was first."""
        event = {"seq": state.seq + 1, "time": now_iso(), "who": who(), **event}
        if not self._create(f"events/{event['seq']:06d}.json", _dumps(event)):
            raise ConflictError(
                f"{self.name}: another writer changed the model log (event {event['seq']}) after this "
                f"command read it; this {event.get('action', 'change')} was not applied.",
                f"See `trainer models history {self.parent} {self.name}`, then run the command again if still wanted.",
            )
        state.apply(event)
        with contextlib.suppress(TrainerError):
            self._write_index(state)
        return event

    def _write_index(self, state: State) -> None:
        current = self._read("index.json")
        with contextlib.suppress(ValueError, TypeError):
            if current and json.loads(current).get("seq", 0) > state.seq:
                return  # a later writer's snapshot is already there
        self._write("index.json", _dumps(state.index()))

    # -- versions -------------------------------------------------------------------------
    def version_rel(self, version: int) -> str:
        """The version's folder, relative to the store."""
        return f"versions/v{int(version):06d}"  # lower-case: never read as a pair's name

    def version_location(self, version: int) -> str:
        """The version's folder as a path or URL (what `load_pair_model` reads)."""
        return self.url(self.version_rel(version))

    def live_marker(self) -> tuple[bytes, dict] | None:
        """The live folder's ``_SUCCESS.json`` bytes and parsed marker, or None when it has none."""
        raw = self.storage.read_bytes(f"{self.name}/{SUCCESS}")
        if raw is None:
            return None
        from .artifacts import read_marker

        return raw, read_marker(raw, self.location)

    def sync(self, details: dict | None = None, policy: dict | None = None) -> dict | None:
        """Register the live folder's run as a new version unless it already is one.

        ``details`` adds what the caller knows (``trained_from`` / ``trained_until``). Returns the
        version's record (new or existing), or None when the folder holds no completed run.
        """
        live = self.live_marker()
        if live is None:
            return None
        raw, marker = live
        digest = bytes_sha256(raw)
        policy = policy or read_policy(self.parent)
        for _attempt in range(20):
            state = self.state()
            for record in state.versions.values():
                if record.get("marker_sha256") == digest:
                    return record
            record = self._claim_and_copy(state, raw, marker, digest, details or {}, policy)
            if record is None:
                continue  # the live folder changed while it was copied: read it again
            try:
                self.append(state, {"action": "register", "version": record["id"], "record": record})
            except ConflictError:
                self._remove_version(record["id"])
                continue
            self.prune(policy)
            return record
        raise StorageError(
            f"{self.location}: the run could not be registered as a version (the folder or the log kept changing).",
            "Run `trainer models list` again once training of this pair has finished.",
        )

    def _claim_and_copy(self, state, raw, marker, digest, details, policy) -> dict | None:
        taken = {int(n[1:7]) for n in self._list("versions") if re.fullmatch(r"v[0-9]{6}(\.json)?", n)}
        version = max([*taken, *state.versions, 0]) + 1
        trained_from, trained_until = self._time_range(marker)
        if trained_until is None:  # a run from before markers recorded it: what the caller knows
            trained_from, trained_until = details.get("trained_from"), details.get("trained_until")
        expire = parse_duration(policy["lifecycle"].get("expire_after"))
        until = parse_time(trained_until)
        record = {
            "id": version,
            "created": now_iso(),
            "source": self.location,
            "marker_sha256": digest,
            "pair": marker.get("pair"),
            "tag": marker.get("tag"),
            "config_hash": marker.get("config_hash"),
            "finished": marker.get("finished"),
            "trained_from": trained_from,
            "trained_until": trained_until,
            "expire_after": policy["lifecycle"].get("expire_after"),
            "valid_until": (until + expire).isoformat(timespec="seconds") if (until and expire) else None,
            "metrics": marker.get("metrics") or {},
        }
        while not self._create(f"{self.version_rel(version)}.json", _dumps(record)):
            version += 1  # claimed by another writer (or by an attempt that stopped): the next number
            record["id"] = version
        names = [*marker["artifacts"], SUCCESS]
        src, dst = self.name, f"{self.base}/{self.version_rel(version)}"
        try:
            self._copy_files(src, dst, names)
            ok = self._verify(dst, raw, marker)
        except OSError as exc:
            self._remove_version(version)
            raise StorageError(
                f"Cannot copy {self.location} to {self.version_location(version)}: {exc.strerror or exc}.",
                "Check free space and permissions; the live folder is untouched.",
            ) from exc
        if not ok:
            self._remove_version(version)
            return None
        return record

    def _time_range(self, marker: dict) -> tuple[str | None, str | None]:
        """The first and last candle the run's data held, as its marker records them."""
        span = marker.get("data_range")
        if isinstance(span, list) and len(span) == 2 and all(isinstance(t, str) for t in span):
            return span[0], span[1]
        return None, None

    def _copy_files(self, src: str, dst: str, names: list[str]) -> None:
        if self.storage.is_local:
            root = self.storage.path
            for name in names:
                target = root / dst / name
                target.parent.mkdir(parents=True, exist_ok=True)
                source = root / src / name
                if source.is_symlink():
                    raise OSError(f"{source} is a link")
                try:
                    os.link(source, target)  # files are replaced by rename, never edited: a link is a copy
                except OSError:
                    shutil.copyfile(source, target)
            return
        fs = self.storage.fs
        for name in names:
            fs.copy(self.storage._p(f"{src}/{name}"), self.storage._p(f"{dst}/{name}"))

    def _verify(self, dst: str, raw: bytes, marker: dict) -> bool:
        """Every copied file matches the marker that was read before the copy."""
        if self.storage.read_bytes(f"{dst}/{SUCCESS}") != raw:
            return False
        for name, info in marker["artifacts"].items():
            if self.storage.is_local:
                path = self.storage.path / dst / name
                digest = file_sha256(path) if path.is_file() else None
            else:
                digest = self.storage.sha256(f"{dst}/{name}")
            if digest != info["sha256"]:
                return False
        return True

    def _remove_version_files(self, version: int, keep_claim: bool = False) -> None:
        rel = f"{self.base}/{self.version_rel(version)}"
        if self.storage.is_local:
            shutil.rmtree(self.storage.path / rel, ignore_errors=True)
            if not keep_claim:
                with contextlib.suppress(FileNotFoundError):
                    (self.storage.path / f"{rel}.json").unlink()
            return
        fs = self.storage.fs
        with contextlib.suppress(FileNotFoundError, OSError):
            if fs.exists(self.storage._p(rel)):
                fs.rm(self.storage._p(rel), recursive=True)
        if not keep_claim:
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.rm_file(self.storage._p(f"{rel}.json"))

    def _remove_version(self, version: int) -> None:
        self._remove_version_files(version, keep_claim=False)

    # -- aliases ----------------------------------------------------------------------------
    def move_alias(
        self,
        state: State,
        alias: str,
        to: int | None,
        action: str,
        reason: str | None = None,
        evidence: str | None = None,
        extra: dict | None = None,
    ) -> dict:
        """Append the event moving ``alias`` to version ``to`` (None: clear it), right after ``state``."""
        if alias not in ALIASES:
            raise LifecycleError(f"Unknown alias {alias!r}.", f"Use one of: {', '.join(ALIASES)}.")
        if to is not None and to not in state.versions:
            raise LifecycleError(
                f"{self.name} has no version #{to}.",
                f"See `trainer models list {self.parent} --pair {self.name}`.",
            )
        event = {
            "action": action,
            "alias": alias,
            "from": state.aliases.get(alias),
            "to": to,
            "reason": reason,
            "evidence": evidence,
            **(extra or {}),
        }
        return self.append(state, event)

    def previous_champion(self, state: State) -> int | None:
        """The version that was champion before the current one (the ``from`` of the event that
        made the current champion), if it is still kept."""
        current = state.aliases.get("champion")
        for event in reversed(state.events):
            if (
                event.get("alias") == "champion"
                and event.get("to") == current
                and event.get("from") != current
            ):
                before = event.get("from")
                return int(before) if before is not None and int(before) in state.versions else None
        return None

    def prune(self, policy: dict | None = None) -> list[int]:
        """Delete versions beyond the last ``keep``, never one that was ever champion or holds an alias."""
        policy = policy or read_policy(self.parent)
        keep = int(policy["lifecycle"].get("keep") or 0)
        if keep <= 0:
            return []
        removed = []
        for _attempt in range(5):
            state = self.state()
            newest = sorted(state.versions)[-keep:]
            protected = set(newest) | state.ever_champion | set(state.aliases.values())
            doomed = [v for v in sorted(state.versions) if v not in protected]
            if not doomed:
                return removed
            try:
                self.append(
                    state, {"action": "prune", "version": doomed[0], "reason": f"beyond the last {keep}"}
                )
            except ConflictError:
                continue
            self._remove_version(doomed[0])
            removed.append(doomed[0])
        return removed

    # -- selection ----------------------------------------------------------------------------
    def select(self, state: State, alias: str | None = None, version: int | None = None) -> dict:
        """The record of ``#version``, of ``@alias``, or by default the champion, else the newest."""
        if version is not None:
            if version not in state.versions:
                kept = ", ".join(f"#{v}" for v in sorted(state.versions)) or "none"
                raise LifecycleError(
                    f"{self.name} has no version #{version} (kept: {kept}).",
                    f"See `trainer models list {self.parent} --pair {self.name}`.",
                )
            return state.versions[version]
        if alias is not None:
            if alias not in state.aliases:
                held = ", ".join(f"{a} = #{v}" for a, v in state.aliases.items()) or "no alias is set"
                raise LifecycleError(
                    f"{self.name} has no {alias} ({held}).",
                    f"Promote a version first: trainer models promote {self.parent} {self.name} --candidate N --data CANDLES",
                )
            return state.versions[state.aliases[alias]]
        chosen = state.aliases.get("champion", state.newest())
        if chosen is None:
            raise LifecycleError(f"{self.name} has no version yet.", "Train the pair first.")
        return state.versions[chosen]


def expired(record: dict, when: dt.datetime | None = None) -> bool:
    """True when the version's ``valid_until`` has passed."""
    until = parse_time(record.get("valid_until"))
    return until is not None and (when or dt.datetime.now(dt.timezone.utc)) > until


def check_not_expired(record: dict, name: str, allow: bool = False) -> None:
    """Raise ExpiredModelError for a version past its ``valid_until`` (unless ``allow``)."""
    if allow or not expired(record):
        return
    raise ExpiredModelError(
        f"{name} version #{record['id']} expired at {record['valid_until']} (trained on candles up to "
        f"{record.get('trained_until')}, valid for {record.get('expire_after')}).",
        "Retrain and promote a newer version, or pass --allow-expired (allow_expired=True) to use it anyway.",
    )


def resolve_model(location: str | Path, allow_expired: bool = False) -> tuple[str, dict | None]:
    """Where to load a model from: ``OUTPUT/PAIR@ALIAS``, ``OUTPUT/PAIR#N`` or ``OUTPUT/PAIR``.

    A plain folder with a model store loads its champion, else its newest version; a folder
    without a store is loaded as it is (record None). An expired version is refused unless
    ``allow_expired``. Returns the folder to load and the version's record.
    """
    folder, alias, version = split_selector(str(location))
    inside = _VERSION_FOLDER.match(folder.replace("\\", "/").rstrip("/"))
    if inside and alias is None and version is None:
        # a version's own folder (what a deployment pins): its record, for its expiry
        store = ModelStore(f"{inside['parent']}/{inside['name']}")
        record = store.state().versions.get(int(inside["id"])) if store.exists() else None
        if record is not None:
            check_not_expired(record, store.name, allow_expired)
        return str(location), record
    if alias is None and version is None:
        if not is_url(folder) and not Path(folder).expanduser().is_dir():
            return str(location), None
        store = ModelStore(folder)
        if not store.exists():
            return str(location), None
    else:
        store = ModelStore(folder)
        if not store.exists():
            store.sync()
            if not store.exists():
                raise LifecycleError(
                    f"{folder} has no model versions (no completed run, no {STORE} store beside it).",
                    "Pass a pair's folder (OUTPUT/PAIR) that holds a trained model.",
                )
    state = store.state()
    if alias is None and version is None and "champion" not in state.aliases:
        # no champion: the newest run is the live folder (registered or not yet)
        live = store.live_marker()
        digest = bytes_sha256(live[0]) if live else None
        record = next((r for r in state.versions.values() if r.get("marker_sha256") == digest), None)
        if record is None and live is None:
            record = store.select(state)
        elif record is None:
            return str(location), None
        else:
            check_not_expired(record, store.name, allow_expired)
            return str(location), record
    else:
        record = store.select(state, alias, version)
    check_not_expired(record, store.name, allow_expired)
    return store.version_location(record["id"]), record


def read_policy(parent: str) -> dict:
    """The lifecycle and promotion settings of the stores under ``parent`` (defaults where unset)."""
    storage = open_storage(parent)
    raw = storage.read_bytes(f"{STORE}/{POLICY}")
    policy = json.loads(json.dumps(DEFAULT_POLICY))
    if raw:
        try:
            saved = json.loads(raw)
        except ValueError:
            raise LifecycleError(
                f"{storage.url(f'{STORE}/{POLICY}')} is not valid JSON.",
                "Rewrite it with `trainer models policy OUTPUT --set KEY=VALUE`.",
            ) from None
        for section in policy:
            policy[section].update((saved.get(section) or {}) if isinstance(saved, dict) else {})
    return policy


def write_policy(parent: str, policy: dict) -> None:
    """Save the stores' settings (checked first)."""
    check_policy(policy)
    open_storage(parent).write_bytes(f"{STORE}/{POLICY}", _dumps(policy))


def check_policy(policy: dict) -> None:
    """Refuse a setting outside its range, naming it."""
    parse_duration(policy["lifecycle"].get("expire_after"))
    rules = {
        ("lifecycle", "keep"): (int, 1, 10_000),
        ("promotion", "min_trades"): (int, 1, 10_000_000),
        ("promotion", "draws"): (int, 100, 100_000),
        ("promotion", "confidence"): (float, 0.5, 0.999),
        ("promotion", "min_delta"): (float, -10.0, 10.0),
        ("promotion", "max_drawdown_margin"): (float, 0.0, 10.0),
        ("promotion", "seed"): (int, 0, 2**32 - 1),
    }
    for (section, key), (kind, low, high) in rules.items():
        value = policy[section].get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and (kind is float or float(value).is_integer()) and low <= value <= high
        if not ok:
            raise ConfigError(
                f"{section}.{key} is {value!r}; expected {'an integer' if kind is int else 'a number'} "
                f"from {low:g} to {high:g}.",
                f"Set it with `trainer models policy OUTPUT --set {section}.{key}=VALUE`.",
            )
    block = policy["promotion"].get("block_length")
    if block is not None and (not isinstance(block, int) or isinstance(block, bool) or block < 1):
        raise ConfigError(
            f"promotion.block_length is {block!r}; expected a positive integer or null (automatic).",
            "Set it with `trainer models policy OUTPUT --set promotion.block_length=240`.",
        )


def find_stores(output: str) -> list[ModelStore]:
    """Every pair folder under ``output`` that has a completed run or a model store (two levels deep)."""
    storage = open_storage(output)
    names: set[str] = set()
    if storage.is_local:
        root = storage.path
        if not root.is_dir():
            raise LifecycleError(
                f"The output {root} is not a folder.", "Pass the output root of a training run."
            )
        for marker in [*root.glob(f"*/{SUCCESS}"), *root.glob(f"*/*/{SUCCESS}")]:
            rel = marker.parent.relative_to(root).as_posix()
            if STORE not in rel.split("/") and not rel.startswith("."):
                names.add(rel)
        for events in [*root.glob(f"{STORE}/*/events"), *root.glob(f"*/{STORE}/*/events")]:
            rel = events.parent.relative_to(root).as_posix()
            head, _, name = rel.rpartition(f"{STORE}/")
            names.add(f"{head}{name}")
    else:
        fs = storage.fs
        base = storage.base.rstrip("/")
        for pattern in (f"{base}/*/{SUCCESS}", f"{base}/*/*/{SUCCESS}"):
            for path in fs.glob(pattern):
                rel = path[len(base) + 1 : -len(SUCCESS) - 1]
                if STORE not in rel.split("/"):
                    names.add(rel)
        for pattern in (f"{base}/{STORE}/*/events", f"{base}/*/{STORE}/*/events"):
            for path in fs.glob(pattern):
                rel = path[len(base) + 1 : -len("/events")]
                head, _, name = rel.rpartition(f"{STORE}/")
                names.add(f"{head}{name}")
    return [ModelStore(storage.url(n)) for n in sorted(names)]


def _dumps(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=False, allow_nan=False, default=str) + "\n").encode()
