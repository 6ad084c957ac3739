"""The frozen spec of one pair: its settings, its folder name, and once its feature set and labeler
are resolved, its tag, embargo and config hash."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .schema import SECTIONS, fold_recorded


class Frozen(Mapping):
    """A read-only mapping with attribute access, lists turned into tuples."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping):
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in data.items()})

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("settings are frozen")

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Frozen({self._data!r})"

    def __hash__(self) -> int:
        return hash(json.dumps(plain(self), sort_keys=True, default=str))


def _freeze(v):
    if isinstance(v, Mapping):
        return Frozen(v)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def plain(value: Any) -> Any:
    """``value`` with every mapping (a `Frozen` section among them) a dict and every tuple or list a
    list, recursively: settings as the manifest wrote them, JSON-able."""
    if isinstance(value, Mapping):
        return {k: plain(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(x) for x in value]
    return value


#: settings that do not change what is trained, so they stay out of the config hash
HASH_EXCLUDED = {("resources",), ("data", "path"), ("train", "verbose")}


class UnresolvedSpecError(RuntimeError):
    """A tag, embargo or config hash asked of a spec whose feature set and labeler were not resolved
    (`trainer_core.features.resolve_spec`): a path of the engine that forgot to resolve it."""


def pair_name(
    pair: str,
    market: str | None = None,
    id: str | None = None,
    feature_set: str | None = None,
    data_market: str | None = None,
) -> str:
    """A pair's folder name and the first part of its tag: ``id`` when the manifest entry gives one,
    else the pair, then ``-futures`` for a futures pair (``market: futures``, or the `ohlcv`
    loader's ``data.params.market: futures-um``), then ``-SET`` for a feature set other than the
    seed's (``ETHUSDT``, ``ETHUSDT-futures``, ``ETHUSDT-rsi``, ``ETHUSDT-futures-seed-context``)."""
    if id is not None:
        return id
    parts = [pair]
    if (market or data_market or "spot").startswith("futures"):
        parts.append("futures")
    if feature_set not in (None, "seed"):
        parts.append(re.sub(r"[^a-z0-9.]+", "-", str(feature_set).lower()).strip("-.") or "set")
    return "-".join(parts)


def recorded_spec(d: Mapping) -> dict:
    """A recorded spec (a model folder's ``spec.json``) as this trainer reads it: the settings an
    older trainer kept beside ``labels.params`` / ``features.params`` moved into them."""
    out = dict(d)
    for section in ("labels", "features"):
        if isinstance(out.get(section), Mapping):
            out[section] = fold_recorded(section, out[section])
    return out


@dataclass(frozen=True)
class PairSpec:
    """Everything one pair's run needs, resolved and frozen.

    Each section of the manifest is a `Frozen` mapping read as ``spec.train.epochs``;
    ``reporters`` and ``plugins`` are tuples of names.
    """

    pair: str
    output: str
    plugins: tuple
    data: Frozen
    labels: Frozen
    features: Frozen
    split: Frozen
    scaling: Frozen
    balance: Frozen
    model: Frozen
    train: Frozen
    evaluation: Frozen
    resources: Frozen
    reporters: tuple
    #: the labeler's part of the tag, set by the engine from ``labels.method``'s ``tag(params)``
    label_tag: str | None = None
    #: what the engine resolved once from the pair's feature set and labeler (``tag``, ``horizon``,
    #: ``embargo``, ``columns``, ``warmup``, ``history``, ``context_pairs``...); None until resolved
    resolved: Frozen | None = None
    #: the manifest entry's ``market`` (``spot`` or ``futures``) and ``id``; see `name`
    market: str | None = None
    id: str | None = None

    def to_dict(self) -> dict:
        """The spec as plain JSON-able dicts and lists (`from_dict` reads it back)."""
        out = {"pair": self.pair, "output": self.output, "plugins": list(self.plugins)}
        for section in SECTIONS:
            out[section] = plain(getattr(self, section))
        if self.label_tag is not None:
            out["label_tag"] = self.label_tag
        if self.resolved is not None:
            out["resolved"] = plain(self.resolved)
        for key in ("market", "id"):  # only when given: older specs (and their hashes) stay as they were
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    def with_label_tag(self, label_tag: str | None) -> PairSpec:
        """The same spec with the labeler's tag (it does not change the config hash)."""
        d = self.to_dict()
        d["label_tag"] = label_tag
        return PairSpec.from_dict(d)

    def with_resolved(self, resolved: Mapping) -> PairSpec:
        """The same spec with what the engine resolved from its feature set and labeler (the tag
        among it); the config hash then counts the labeler's real horizon in the embargo."""
        d = self.to_dict()
        d["label_tag"] = resolved["tag"]
        d["resolved"] = dict(resolved)
        return PairSpec.from_dict(d)

    @classmethod
    def from_dict(cls, d: Mapping) -> PairSpec:
        """The inverse of `to_dict` (how a spec travels to a worker process)."""
        return cls(
            pair=d["pair"],
            output=d["output"],
            plugins=tuple(d["plugins"]),
            reporters=tuple(d["reporters"]),
            label_tag=d.get("label_tag"),
            resolved=Frozen(d["resolved"]) if d.get("resolved") is not None else None,
            market=d.get("market"),
            id=d.get("id"),
            **{s: Frozen(fold_recorded(s, d[s])) for s in SECTIONS if s != "reporters"},
        )

    def with_paths(self, output: str, data_path: str | None) -> PairSpec:
        """The same spec with other output / data locations (neither changes the config hash)."""
        d = self.to_dict()
        d["output"] = output
        d["data"]["path"] = data_path
        return PairSpec.from_dict(d)

    @property
    def is_resolved(self) -> bool:
        """Whether `resolved` was made from the spec's present feature set, labeler and their params:
        a spec changed after it was resolved (a tuning trial's labels.params) must be resolved again."""
        r = self.resolved
        if r is None:
            return False
        return (
            r.get("feature_set") == self.features.get("set")
            and r.get("labeler") == self.labels.get("method")
            and plain(r.get("feature_params") or {}) == plain(self.features.get("params") or {})
            and plain(r.get("label_params") or {}) == plain(self.labels.get("params") or {})
        )

    def _resolved(self, what: str) -> Frozen:
        if self.resolved is None or not self.is_resolved:
            raise UnresolvedSpecError(
                f"{self.pair}: the spec's {what} is known once its feature set and labeler are resolved "
                "(trainer_core.features.resolve_spec)."
            )
        return self.resolved

    @property
    def config_hash(self) -> str:
        """``sha256:`` and the SHA-256 of the spec as canonical JSON, less what does not change
        training, with the feature set's and labeler's params as they report them (defaults filled
        in, so a default written out hashes as one left out) and the embargo in rows."""
        resolved = self._resolved("config hash")
        d = self.to_dict()
        d.pop("output")
        d.pop("label_tag", None)  # derived from the labels settings
        d.pop("resolved", None)  # derived from the settings and the components' code
        d.pop("id", None)  # names the folder, like the output
        d["labels"]["params"] = plain(resolved.get("label_settings", d["labels"]["params"]))
        d["features"]["params"] = plain(resolved.get("feature_settings", d["features"]["params"]))
        d["split"]["embargo"] = self.embargo  # `auto` and its value purge the same rows
        for path in HASH_EXCLUDED:
            node = d
            for key in path[:-1]:
                node = node[key]
            node.pop(path[-1], None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()

    @property
    def embargo(self) -> int:
        """The rows purged between training and validation: max(the labeler's horizon, split.embargo)."""
        e = self.split.embargo
        horizon = int(self._resolved("embargo")["horizon"])
        return horizon if e == "auto" else max(horizon, int(e))

    @property
    def name(self) -> str:
        """The pair's folder under the output root and the first part of its tag (`pair_name`)."""
        return pair_name(
            self.pair, self.market, self.id, self.features.get("set"), self.data.params.get("market")
        )

    @property
    def candle_market(self) -> str | None:
        """Which candles of a folder holding both markets to read (`read_candles`' ``market``): the
        loader's ``data.params.market``, else the entry's market (``futures`` -> ``futures-um``),
        else None (spot when there is any)."""
        said = self.data.params.get("market")
        if said is not None or self.market is None:
            return said
        return "futures-um" if self.market == "futures" else "spot"

    @property
    def tag(self) -> str:
        """``{NAME}_{label_tag}``: `name`, then the labeler's own part (its ``tag(params)``), known
        once the spec is resolved."""
        if self.label_tag is None or self.resolved is not None:
            self._resolved("tag")  # none, or made from other settings than the spec's
        return f"{self.name}_{self.label_tag}"

    @property
    def data_path(self) -> str | None:
        """``data.path`` with ``{pair}`` replaced by the pair's name (``~`` is left to the loader)."""
        p = self.data.path
        return None if p is None else p.replace("{pair}", self.pair)
