"""What a batch will do before it does anything: which pairs to train or skip, and why, and the
pre-flight checks (components registered, data present, output writable) that need no Ray."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..artifacts import SUCCESS
from ..errors import ConfigError, TrainerError
from ..manifest import Manifest, PairSpec
from ..plugins import Plugins, same_origin
from ..storage import is_url, open_storage


@dataclass
class Plan:
    """One pair's decision: ``action`` is "train" or "skip"; ``marker`` is its last `_SUCCESS.json`."""

    spec: PairSpec
    action: str
    reason: str
    marker: dict | None = None
    problems: list[str] = field(default_factory=list)


def absolute_paths(spec: PairSpec) -> PairSpec:
    """Relative local paths resolved in the driver, so workers in other folders find them."""
    output = spec.output if is_url(spec.output) else os.path.abspath(os.path.expanduser(spec.output))
    data = spec.data.path
    if data is not None and not is_url(data):
        data = os.path.abspath(os.path.expanduser(data))
    return spec.with_paths(output, data)


def select_pairs(manifest: Manifest, only: str | None) -> list[str]:
    """The manifest's pairs, or those named by ``--only`` (in the manifest's order)."""
    names = manifest.pair_names
    if not only:
        return names
    from ..manifest import normalize_pair, pair_market

    wanted, unknown = set(), []
    for p in (p.strip() for p in only.split(",")):
        if not p:
            continue
        if p in names:  # a folder name (ETHUSDT-futures) or an id
            wanted.add(p)
            continue
        pair, market = normalize_pair(p, "--only"), pair_market(p)
        found = [e.key for e in manifest.pairs if e.pair == pair and (market is None or e.market == market)]
        wanted.update(found)  # a pair names each of its entries
        if not found:
            unknown.append(p)
    if unknown:
        raise ConfigError(
            f"--only names pair(s) not in the manifest: {', '.join(unknown)}.",
            f"The manifest's pairs: {', '.join(names)}.",
        )
    return [p for p in names if p in wanted]


def _short(value: str) -> str:
    """A fingerprint value for a message: hashes cut to 12 hex digits."""
    head, sep, digest = value.partition("sha256:")
    return f"{head}sha256:{digest[:12]}" if sep else value


def code_changes(before: dict, now: dict) -> list[str]:
    """What differs between two code fingerprints, one short phrase per component."""
    changes = []
    for key in sorted(set(before) | set(now), key=lambda k: (k != "trainer", k)):
        old, new = before.get(key), now.get(key)
        if old == new or (old is not None and new is not None and same_origin(str(old), str(new))):
            continue
        if old is None:
            changes.append(f"{key} is new: {_short(str(new))}")
        elif new is None:
            changes.append(f"{key} is no longer used")
        else:
            changes.append(f"{key}: {_short(str(old))} -> {_short(str(new))}")
    return changes


def _read_marker(raw: bytes, where: str) -> dict:
    """The marker, schema-checked where the engine offers a checker; a ValueError says why not."""
    try:
        from ..artifacts import MarkerError, read_marker
    except ImportError:  # an engine without a marker checker: plain JSON object
        import json

        marker = json.loads(raw)
        if not isinstance(marker, dict):
            raise ValueError("it is not an object") from None
        return marker
    try:
        return read_marker(raw, where)
    except MarkerError as exc:
        raise ValueError(exc.reason) from None


def plan_pair(spec: PairSpec, plugins: Plugins, force: bool) -> Plan:
    """Train or skip one pair: skip only a complete run with the same settings, code, data and artifacts."""
    if force:
        return Plan(spec, "train", "--force")
    if not spec.is_resolved:  # its feature set or labeler did not resolve: the pre-flight says why
        return Plan(spec, "train", "its feature set or labeler does not resolve")
    storage = open_storage(spec.output)
    raw = storage.read_bytes(f"{spec.name}/{SUCCESS}")
    if raw is None:
        return Plan(spec, "train", "no completed run")
    try:
        marker = _read_marker(raw, storage.url(spec.name))
    except ValueError as exc:
        reason = str(exc)
        return Plan(spec, "train", f"{SUCCESS} is unreadable" + (f" ({reason})" if reason else ""))
    if marker.get("config_hash") != spec.config_hash:
        return Plan(spec, "train", "the settings changed since the last run")
    recorded = marker.get("code")
    changes = (
        code_changes(recorded, plugins.code_fingerprint(spec))
        if isinstance(recorded, dict)
        else ["the last run recorded no code fingerprint"]
    )
    if changes:
        return Plan(spec, "train", f"the code changed ({'; '.join(changes)})")
    try:
        loader = plugins.create("loader", spec.data.loader)
        fingerprint = loader.fingerprint(spec) if hasattr(loader, "fingerprint") else None
    except TrainerError as exc:
        return Plan(spec, "train", f"the data cannot be checked ({exc.message})")
    if fingerprint is not None and marker.get("data_sha256") != fingerprint:
        return Plan(spec, "train", "the data changed since the last run")
    from ..verify import verify_pair

    problems = verify_pair(storage, spec.name)
    if problems:
        return Plan(spec, "train", f"artifact {problems[0]}")
    why = "completed with the same settings and data" if fingerprint else "completed with the same settings"
    return Plan(spec, "skip", why, marker=marker)


# -- pre-flight ------------------------------------------------------------------------------------


def component_problems(spec: PairSpec, plugins: Plugins) -> list[str]:
    """Every component the pair names is registered and accepts its params (empty: all good)."""
    from ..pipeline import check_components

    try:
        check_components(spec, plugins)
    except TrainerError as exc:
        return [exc.message]
    return []


def data_problems(spec: PairSpec, plugins: Plugins) -> list[str]:
    """Whether the pair's loader finds its data (its `fingerprint`, which resolves and reads it);
    for a loader without one, whether a local ``data.path`` exists. Empty: found."""
    try:
        loader = plugins.create("loader", spec.data.loader)
    except TrainerError:
        return []  # an unknown loader is a component problem, reported as such
    if hasattr(loader, "fingerprint"):
        try:
            loader.fingerprint(spec)
        except TrainerError as exc:
            return [exc.message]
        except OSError as exc:
            return [f"the data cannot be read: {exc}"]
        return []
    path = spec.data.path
    if path is None or is_url(path) or os.path.exists(path):
        return []
    return [f"data path not found: {path}"]


def check_output(root: str) -> None:
    """The output root can be written (the engine's probe, where it has one)."""
    try:
        from ..storage import check_output_access
    except ImportError:
        return
    check_output_access(root)
