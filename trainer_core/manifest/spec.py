"""The frozen spec of one pair and the seed's naming: the one home of the artifact tag and the
training-ready file name."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .schema import SECTIONS


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
        return hash(json.dumps(_thaw(self), sort_keys=True, default=str))


def _freeze(v):
    if isinstance(v, Mapping):
        return Frozen(v)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v):
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


#: settings that do not change what is trained, so they stay out of the config hash
HASH_EXCLUDED = {("resources",), ("data", "path"), ("train", "verbose")}


def pct_code(pct: float) -> int:
    """0.5 % -> 50 (the file names' hundredths of a percent)."""
    return int(round(pct * 100))


def artifact_tag(pair: str, fw: int, sl_pct: float, tp_pct: float) -> str:
    """The seed's artifact tag: ``ETHUSDT_FW120_SL050_TP100`` (SL/TP in hundredths of a percent)."""
    return f"{pair}_FW{fw:03d}_SL{pct_code(sl_pct):03d}_TP{pct_code(tp_pct):03d}"


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


def training_ready_name(
    pair: str, timeframe: str, fw: int, sl_pct: float, tp_pct: float, ext: str = "feather"
) -> str:
    """The seed's training-ready file name: ``ETHUSDT_TF-1m__FW-120__SL-050__TP-100__training_ready.feather``."""
    return (
        f"{pair}_TF-{timeframe}__FW-{fw:03d}__SL-{pct_code(sl_pct):03d}__TP-{pct_code(tp_pct):03d}"
        f"__training_ready.{ext}"
    )


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
            out[section] = _thaw(getattr(self, section))
        if self.label_tag is not None:
            out["label_tag"] = self.label_tag
        if self.resolved is not None:
            out["resolved"] = _thaw(self.resolved)
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
            **{s: Frozen(d[s]) for s in SECTIONS if s != "reporters"},
        )

    def with_paths(self, output: str, data_path: str | None) -> PairSpec:
        """The same spec with other output / data locations (neither changes the config hash)."""
        d = self.to_dict()
        d["output"] = output
        d["data"]["path"] = data_path
        return PairSpec.from_dict(d)

    @property
    def config_hash(self) -> str:
        """``sha256:`` and the SHA-256 of the spec as canonical JSON, less what does not change training."""
        d = self.to_dict()
        d.pop("output")
        d.pop("label_tag", None)  # derived from the labels settings
        d.pop("resolved", None)  # derived from the settings and the components' code
        d.pop("id", None)  # names the folder, like the output
        d["split"]["embargo"] = self.embargo  # `auto` and its value purge the same rows
        for path in HASH_EXCLUDED:
            node = d
            for key in path[:-1]:
                node = node[key]
            node.pop(path[-1], None)
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
        return "sha256:" + hashlib.sha256(blob.encode()).hexdigest()

    # -- derived label parameters --------------------------------------------------------
    @property
    def short_take_profit_pct(self) -> float:
        """The short take-profit: ``labels.short_take_profit_pct``, else the long one."""
        v = self.labels.short_take_profit_pct
        return self.labels.take_profit_pct if v is None else v

    @property
    def short_stop_loss_pct(self) -> float:
        """The short stop-loss: ``labels.short_stop_loss_pct``, else the long one."""
        v = self.labels.short_stop_loss_pct
        return self.labels.stop_loss_pct if v is None else v

    @property
    def embargo(self) -> int:
        """The rows purged between training and validation: max(horizon, split.embargo), with the
        labeler's horizon once resolved (before: ``labels.future_window``, tp-sl's horizon)."""
        e = self.split.embargo
        horizon = int(self.resolved["horizon"]) if self.resolved is not None else self.labels.future_window
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
        """`{NAME}_FW{fw:03d}_SL{sl:03d}_TP{tp:03d}`, SL/TP in hundredths of a percent (the seed's
        naming, the `tp-sl` labeler's tag); ``{NAME}_{label_tag}`` once the engine resolved another
        labeler's tag. ``NAME`` is `name`: the pair itself for a spot pair with the seed's features."""
        if self.label_tag is not None:
            return f"{self.name}_{self.label_tag}"
        return artifact_tag(
            self.name, self.labels.future_window, self.labels.stop_loss_pct, self.labels.take_profit_pct
        )

    @property
    def data_path(self) -> str | None:
        """``data.path`` with ``{pair}`` replaced by the pair's name (``~`` is left to the loader)."""
        p = self.data.path
        return None if p is None else p.replace("{pair}", self.pair)
