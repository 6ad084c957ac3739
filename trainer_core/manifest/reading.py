"""Reading a manifest: YAML within size and depth limits, `--set` values, merging the levels of
settings, and the `Manifest` that resolves them into one frozen `PairSpec` per pair."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .schema import (
    BATCH_DEFAULTS,
    BATCH_SCHEMA,
    DEFAULT_OUTPUT,
    DEFAULTS,
    LIMITS_HINT,
    MANIFEST_HINT,
    MAX_DEPTH,
    MAX_NODES,
    MAX_PAIRS,
    SCHEMA,
    SECTIONS,
    TOP_LEVEL_KEYS,
    _str_list,
    check_id,
    check_market,
    check_section,
    check_sections,
    check_values,
    count_values,
    normalize_pair,
    pair_market,
    short_repr,
    type_name,
    value_depth,
)
from .spec import Frozen, PairSpec, pair_name

# -- YAML within limits -------------------------------------------------------------------------


class YAMLLimitError(yaml.YAMLError):
    """A YAML document beyond `MAX_DEPTH` levels or `MAX_NODES` values (aliases expanded)."""

    def __init__(self, problem: str, mark: Any = None):
        super().__init__(problem)
        self.problem = problem
        self.mark = mark

    def where(self) -> str:
        """`` at line L, column C`` of the offending node, or nothing when unknown."""
        return f" at line {self.mark.line + 1}, column {self.mark.column + 1}" if self.mark else ""


class LimitedSafeLoader(yaml.SafeLoader):
    """PyYAML's safe loader that counts, while composing, how deep the document nests and how many
    values it holds with every alias counted in full each time it is used.

    PyYAML shares an aliased node instead of copying it, so reading a "billion laughs" is cheap;
    what explodes is everything after (merging, freezing, hashing a spec walks every use). Counting
    the expanded size per node as it is composed costs one pass over the text and stops at the
    first node beyond the limit, before any expansion happens. The depth limit also keeps the
    recursive composer away from Python's recursion limit.
    """

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._level = 0
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, levels) with aliases expanded

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        """Open a `[` or `{`, refusing one past `MAX_DEPTH`."""
        # the scanner looks ahead through every open `[` or `{` (quadratic): stop it at the limit
        if self.flow_level >= MAX_DEPTH:
            raise YAMLLimitError(f"nests deeper than {MAX_DEPTH} levels", self.get_mark())
        super().fetch_flow_collection_start(TokenClass)

    def add_indent(self, column: int) -> bool:
        """Indent a block one level deeper, refusing one past `MAX_DEPTH`."""
        if len(self.indents) >= MAX_DEPTH:
            raise YAMLLimitError(f"nests deeper than {MAX_DEPTH} levels", self.get_mark())
        return super().add_indent(column)

    def compose_node(self, parent: Any, index: Any) -> Any:
        """Compose one node, recording its size and height with aliases expanded; refuse it past a limit."""
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            target = self.anchors.get(event.anchor)
            if target is not None:
                size = self._sizes.get(id(target))
                if size is None:  # the anchor is still being composed: it contains itself
                    raise YAMLLimitError(
                        f"uses the alias *{event.anchor} inside its own anchor", event.start_mark
                    )
                if self._level + size[1] > MAX_DEPTH:
                    raise YAMLLimitError(f"nests deeper than {MAX_DEPTH} levels", event.start_mark)
            return super().compose_node(parent, index)
        self._level += 1
        try:
            if self._level > MAX_DEPTH:
                raise YAMLLimitError(f"nests deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            node = super().compose_node(parent, index)
        finally:
            self._level -= 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        sizes = [self._sizes[id(child)] for child in children]
        values = 1 + sum(s[0] for s in sizes)
        levels = 1 + max((s[1] for s in sizes), default=0)
        self._sizes[id(node)] = (values, levels)
        if values > MAX_NODES:
            raise YAMLLimitError(
                f"holds more than {MAX_NODES:,} values once its aliases are expanded", node.start_mark
            )
        return node


def safe_load_limited(text: str) -> Any:
    """`yaml.safe_load` within `MAX_DEPTH` and `MAX_NODES`; beyond them raises `YAMLLimitError`."""
    loader = LimitedSafeLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def check_limits(raw: Any, label: str) -> None:
    """Refuse an already-read value beyond the manifest limits (a dict built in Python, say)."""
    if value_depth(raw, MAX_DEPTH) > MAX_DEPTH:
        raise ConfigError(f"{label} nests deeper than {MAX_DEPTH} levels.", LIMITS_HINT)
    if count_values(raw, MAX_NODES) > MAX_NODES:
        raise ConfigError(f"{label} holds more than {MAX_NODES:,} values.", LIMITS_HINT)


# -- merging ------------------------------------------------------------------------------------


def merge(base: dict, override: Mapping) -> dict:
    """Deep merge. ``model.params`` belong to ``model.builder`` (``data.params`` to ``data.loader``,
    ``features.params`` to ``features.set``, ``labels.params`` to ``labels.method``), so a new
    component starts from no params."""
    for owner in ("builder", "loader", "set", "method"):
        if owner in override and owner in base and "params" in base and override[owner] != base[owner]:
            base = dict(base, params={})
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "class_weights":
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


@dataclass
class PairEntry:
    """One item of a manifest's `pairs`: the normalised pair, its checked overrides, its position,
    its ``market`` and ``id`` when given, and its `name` (folder) once the manifest is read."""

    pair: str
    overrides: dict
    position: int
    market: str | None = None
    id: str | None = None
    name: str | None = None

    @property
    def key(self) -> str:
        """What names this entry in a manifest: its folder name (`PairSpec.name`), else its pair."""
        return self.name or self.id or self.pair


#: the named CLI options and the settings they set
FLAG_NAMES = {
    "data.path": "--data",
    "output": "--output",
    "train.epochs": "--epochs",
    "train.batch_size": "--batch-size",
}


@dataclass
class Manifest:
    """A validated manifest (or the built-in one when none is given)."""

    path: str | None = None
    version: int = 1
    output: str = DEFAULT_OUTPUT
    plugins: tuple = ()
    batch: dict = field(default_factory=lambda: copy.deepcopy(BATCH_DEFAULTS))
    defaults: dict = field(default_factory=lambda: copy.deepcopy(DEFAULTS))
    pairs: list[PairEntry] = field(default_factory=list)

    @property
    def pair_names(self) -> list[str]:
        """The names of the listed pairs (`PairEntry.key`: the folder names), in the manifest's order."""
        return [entry.key for entry in self.pairs]

    def entry(self, pair: str) -> PairEntry:
        """The entry named ``pair``: by its folder name (``ETHUSDT-futures``, an id), else by its pair
        (``ETH/USDT``; ``ETH/USDT:USDT`` for the futures one). A pair listed under several names must
        be named by one of them; a pair the manifest does not list gets no overrides (position -1)."""
        index = self.__dict__.get("_index")
        if index is None or index[0] is not self.pairs or index[1] != len(self.pairs):
            by_pair: dict[str, list[PairEntry]] = {}
            for e in self.pairs:
                by_pair.setdefault(e.pair, []).append(e)
            index = (self.pairs, len(self.pairs), {e.key: e for e in self.pairs}, by_pair)
            self.__dict__["_index"] = index  # resolving N pairs stays O(N)
        if isinstance(pair, str) and pair in index[2]:
            return index[2][pair]
        name, market = normalize_pair(pair, "--pair"), pair_market(pair)
        if name in index[2] and market is None:
            return index[2][name]
        found = [e for e in index[3].get(name, []) if market is None or e.market == market]
        if len(found) > 1:
            raise ConfigError(
                f"{pair} is listed {len(found)} times in the manifest, as {', '.join(e.key for e in found)}.",
                "Name the one you mean by its folder name (or its id).",
            )
        return found[0] if found else PairEntry(name, {}, -1, market=market)

    def resolve(
        self,
        pair: str,
        sets: Iterable[str] = (),
        flags: Mapping[str, Any] | None = None,
    ) -> PairSpec:
        """The frozen spec of one pair (named as `entry` takes it): defaults, its overrides, ``--set``
        values, then flags."""
        return self.resolve_entry(self.entry(pair), sets, flags)

    def resolve_entry(
        self,
        entry: PairEntry,
        sets: Iterable[str] = (),
        flags: Mapping[str, Any] | None = None,
    ) -> PairSpec:
        """`resolve` for an entry already found."""
        config = merge(self.defaults, entry.overrides)
        output = self.output
        updates = [parse_set(s) for s in sets]
        for name, value in (flags or {}).items():
            if value is not None:
                updates.append((name, value, f"the {FLAG_NAMES.get(name, name)} option"))
        for dotted, value, where in updates:
            if dotted == "output":
                if not isinstance(value, str) or not value:
                    raise ConfigError(
                        f"{where}: output: expected a path or URL, got {short_repr(value)}.", MANIFEST_HINT
                    )
                output = value
                continue
            section, _, key = dotted.partition(".")
            if section == "reporters" and not key:
                config["reporters"] = check_section("reporters", value, where)
                continue
            if section not in SCHEMA or not key:
                raise ConfigError(
                    f"{where}: unknown setting {short_repr(dotted)}.",
                    "Use section.key, e.g. train.epochs=5 (sections: " + ", ".join(SECTIONS) + ", output).",
                )
            key, _, sub = key.partition(".")
            if sub and key == "params" and section in ("model", "data", "labels", "features"):
                params = merge(config[section]["params"], _nest(sub, value))
                config[section].update(check_section(section, {"params": params}, f"{where}: {section}"))
                continue
            checked = check_section(section, {key: value}, f"{where}: {section}")
            config[section] = merge(config[section], checked)
        _apply_market(config, entry.market, f"pairs[{entry.position}]" if entry.position >= 0 else "--pair")
        return PairSpec(
            pair=entry.pair,
            output=output,
            plugins=tuple(self.plugins),
            reporters=tuple(config["reporters"]),
            market=entry.market,
            id=entry.id,
            **{s: Frozen(config[s]) for s in SECTIONS if s != "reporters"},
        )

    def resolve_all(self, sets: Iterable[str] = (), flags: Mapping[str, Any] | None = None) -> list[PairSpec]:
        """`resolve` for every listed pair, in the manifest's order."""
        return [self.resolve(e.key, sets, flags) for e in self.pairs]


def _apply_market(config: dict, market: str | None, where: str) -> None:
    """An entry's market reaches the `ohlcv` loader as its ``data.params.market`` (futures: the
    ``futures-um`` candles); a ``data.params.market`` that says the other market is an error."""
    if market is None:
        return
    data = config["data"]
    said = (data.get("params") or {}).get("market")
    if said is not None and (said.startswith("futures")) != (market == "futures"):
        raise ConfigError(
            f"{where}: market {market}, but data.params.market {said}.",
            "Give the market once: the entry's market (spot or futures) is enough.",
        )
    if said is None and data.get("loader") == "ohlcv":
        data["params"] = {
            **(data.get("params") or {}),
            "market": "futures-um" if market == "futures" else "spot",
        }


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def parse_set(text: str) -> tuple[str, Any, str]:
    """`train.epochs=5` -> ("train.epochs", 5, where); the value is read as YAML."""
    where = f"--set {text if len(text) <= 200 else text[:100] + '...'}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(
            f"{where}: expected dotted.key=value.", "For example: --set train.sequence_length=60"
        )
    if key.count(".") >= MAX_DEPTH:
        raise ConfigError(f"{where}: the key nests deeper than {MAX_DEPTH} levels.", LIMITS_HINT)
    try:
        value = safe_load_limited(raw) if raw.strip() else None
    except YAMLLimitError as exc:
        raise ConfigError(f"{where}: the value {exc.problem}.", LIMITS_HINT) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: the value is not valid YAML ({problem}).", "Quote strings if needed.")
    return key, value, where


def manifest_from_dict(raw: Any, path: str | None = None) -> Manifest:
    """Validate an already-read manifest (the YAML's top-level mapping) and every pair's spec."""
    label = path or "manifest"
    if not isinstance(raw, Mapping):
        raise ConfigError(
            f"{label}: expected a mapping at the top level, got {type_name(raw)}.", MANIFEST_HINT
        )
    check_limits(raw, f"Manifest {label}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{label}: unknown setting {short_repr(key)} at the top level. Known: {', '.join(TOP_LEVEL_KEYS)}.",
                MANIFEST_HINT,
            )
    version = raw.get("version", 1)
    if version != 1:
        raise ConfigError(
            f"{label}: version: expected 1, got {short_repr(version)}.",
            "This trainer reads manifest version 1.",
        )
    output = raw.get("output", DEFAULT_OUTPUT)
    if not isinstance(output, str) or not output:
        raise ConfigError(
            f"{label}: output: expected a path or URL, got {short_repr(output)}.", MANIFEST_HINT
        )
    plugins = raw.get("plugins") or []
    try:
        plugins = _str_list(plugins)
    except ValueError:
        raise ConfigError(
            f"{label}: plugins: expected a list of module names, got {short_repr(plugins)}.", MANIFEST_HINT
        ) from None
    batch = raw.get("batch") or {}
    if not isinstance(batch, Mapping):
        raise ConfigError(f"{label}: batch: expected a mapping, got {type_name(batch)}.", MANIFEST_HINT)
    batch = {**copy.deepcopy(BATCH_DEFAULTS), **check_values(batch, BATCH_SCHEMA, "batch", "batch")}
    defaults = merge(DEFAULTS, check_sections(raw.get("defaults"), "defaults"))
    if "tune" in raw:  # read by `trainer tune`; checked here too, so every command refuses a bad one
        from ..tune.settings import check_manifest_tune

        check_manifest_tune(raw, label)

    pairs_raw = raw.get("pairs") or []
    if not isinstance(pairs_raw, list):
        raise ConfigError(f"{label}: pairs: expected a list, got {type_name(pairs_raw)}.", MANIFEST_HINT)
    if len(pairs_raw) > MAX_PAIRS:
        raise ConfigError(
            f"{label}: pairs: {len(pairs_raw):,} pairs; a manifest holds at most {MAX_PAIRS:,}.",
            "Split the pairs over several manifests.",
        )
    pairs: list[PairEntry] = []
    for i, item in enumerate(pairs_raw):
        where = f"pairs[{i}]"
        market = entry_id = None
        if isinstance(item, Mapping):
            item = dict(item)
            if "pair" not in item:
                raise ConfigError(f"{where}: missing 'pair' (the pair name).", MANIFEST_HINT)
            raw_name = item.pop("pair")
            name = normalize_pair(raw_name, f"{where}.pair")
            market = pair_market(raw_name)
            if "market" in item:
                said = check_market(item.pop("market"), f"{where}.market")
                if market is not None and said != market:
                    raise ConfigError(
                        f"{where}: the pair {short_repr(raw_name)} is a futures name, but market is {said}.",
                        "Drop one of them.",
                    )
                market = said
            if "id" in item:
                entry_id = check_id(item.pop("id"), f"{where}.id")
            item.pop("tune", None)  # the pair's search settings, checked above
            overrides = check_sections(item, where)
        else:
            name = normalize_pair(item, where)
            market = pair_market(item)
            overrides = {}
        pairs.append(PairEntry(name, overrides, i, market, entry_id))
    manifest = Manifest(path, 1, output, tuple(plugins), batch, defaults, pairs)
    plain = None
    seen: dict[str, int] = {}
    for entry in pairs:  # a per-pair override must give a valid spec too
        if entry.overrides or entry.market is not None or plain is None:
            entry.name = None
            spec = manifest.resolve_entry(entry)
            if not entry.overrides and entry.market is None:
                plain = spec  # the same settings for every plain pair: only the name differs
            entry.name = spec.name
        else:
            entry.name = pair_name(
                entry.pair, entry.market, entry.id, plain.features.get("set"), plain.data.params.get("market")
            )
        if entry.name in seen:
            raise ConfigError(
                f"pairs[{entry.position}]: {entry.name} is listed twice (also pairs[{seen[entry.name]}]).",
                "List spot and futures of one symbol with market: spot / futures, or give one of the two "
                "entries an id (its folder name).",
            )
        seen[entry.name] = entry.position
    manifest.__dict__.pop("_index", None)  # the names are known now
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a manifest file; every problem is a `ConfigError` naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            f"Manifest not found: {path}.", "Check the path; `trainer validate FILE` checks a manifest."
        )
    if path.is_dir():
        raise ConfigError(f"Manifest {path} is a folder, not a YAML file.", "Pass the YAML file itself.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read manifest {path}: {exc}.", "Pass a UTF-8 YAML file.")
    try:
        raw = safe_load_limited(text)
    except YAMLLimitError as exc:
        raise ConfigError(f"Manifest {path} {exc.problem}{exc.where()}.", LIMITS_HINT) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date such as 2024-13-01
        raise ConfigError(
            f"Manifest {path} is not valid YAML: {exc}.", "Fix the value (dates are YYYY-MM-DD)."
        )
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Manifest {path} is not valid YAML{where}: {problem}.", "Fix the YAML syntax.")
    if raw is None:
        raise ConfigError(f"Manifest {path} is empty.", MANIFEST_HINT)
    return manifest_from_dict(raw, str(path))


def default_manifest() -> Manifest:
    """The built-in manifest: the seed's defaults, no pairs, output `artifacts/`."""
    return Manifest()
