"""The manifest: reading, validating and merging settings into one frozen spec per pair.

Order of precedence, lowest first: built-in defaults (the seed's), the manifest's `defaults`,
the pair's own overrides, `--set dotted.key=value`, then the named CLI flags.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from .errors import ConfigError

MANIFEST_HINT = "See docs/manifest.md for every setting, its type and its default."

#: the built-in defaults: the seed's configuration (config.py V3)
DEFAULTS: dict[str, Any] = {
    "data": {
        "loader": "training-ready",
        "path": "inputs/",
        "timeframe": "1m",
        "start": None,
        "end": None,
        "gaps": "error",
        "params": {},
    },
    "labels": {
        "future_window": 120,
        "take_profit_pct": 1.0,
        "stop_loss_pct": 0.5,
        "short_take_profit_pct": None,
        "short_stop_loss_pct": None,
    },
    "features": {"ma_short": 1440, "ma_long": 43200},
    "split": {
        "validation": 0.2,
        "test": 0.0,
        "embargo": "auto",
        "mode": "single",
        "folds": 3,
        "min_validation_targets": 1000,
    },
    "scaling": {"scaler": "robust"},
    "balance": {"method": "undersample", "min_per_class": 50000, "class_weights": "balanced"},
    "model": {"builder": "lstm", "params": {"lstm_units": [128, 64, 32], "dense_units": [32, 16], "dropout": 0.3}},
    "train": {
        "epochs": 100,
        "batch_size": 256,
        "sequence_length": 120,
        "learning_rate": 0.001,
        "loss": "categorical_crossentropy",
        "focal_gamma": 2.0,
        "focal_alpha": None,
        "early_stopping_patience": 10,
        "early_stopping_monitor": "val_accuracy",
        "reduce_lr_patience": 5,
        "reduce_lr_factor": 0.5,
        "min_learning_rate": 1.0e-7,
        "seed": 42,
        "verbose": "auto",
        "mixed_precision": False,
    },
    "evaluation": {
        "fee_pct": 0.1,
        "thresholds": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        "calibration_bins": 10,
        "min_signals": 30,
        "trade_threshold": None,
    },
    "resources": {"cpus": 1, "gpus": 0, "memory": None},
    "reporters": ["metadata", "history", "confusion-matrix", "trading"],
}

SECTIONS = tuple(DEFAULTS)
TOP_LEVEL_KEYS = ("version", "output", "plugins", "batch", "defaults", "pairs")
#: batch-level settings (not per pair): how `trainer batch` runs the pairs
BATCH_DEFAULTS: dict[str, Any] = {"max_retries": 2, "reporters": ["summary"], "schedule_timeout": 600}
DEFAULT_OUTPUT = "artifacts/"
PAIR_RE = re.compile(r"^[A-Z0-9]{2,20}$")
SCALERS = ("robust", "standard", "minmax", "none")
LOSSES = ("categorical_crossentropy", "focal")
MONITORS = ("val_accuracy", "val_loss")


# -- value checks: each returns the normalised value or raises ValueError(expected) ------------


def _int(minimum=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("an integer" + (f" >= {minimum}" if minimum is not None else ""))
        if minimum is not None and v < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return v

    return check


def _number(low=None, high=None, low_open=False, high_open=False, nullable=False):
    def describe():
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high}")
        return "a number" + (" " + " and ".join(parts) if parts else "") + (" or null" if nullable else "")

    def check(v):
        if v is None and nullable:
            return None
        if isinstance(v, str):  # YAML 1.1 reads 1e-7 (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                raise ValueError(describe()) from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(describe())
        v = float(v)
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(describe())
        if low is not None and (v < low or (low_open and v == low)):
            raise ValueError(describe())
        if high is not None and (v > high or (high_open and v == high)):
            raise ValueError(describe())
        return v

    return check


def _string(nullable=False):
    def check(v):
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v:
            raise ValueError("a non-empty string" + (" or null" if nullable else ""))
        return v

    return check


def _choice(*choices):
    def check(v):
        if v not in choices:
            raise ValueError("one of " + ", ".join(repr(c) for c in choices))
        return v

    return check


def _date(v):
    if v is None:
        return None
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, str):
        try:
            return dt.date.fromisoformat(v).isoformat()
        except ValueError:
            pass
    raise ValueError("a date YYYY-MM-DD or null")


def _timeframe(v):
    if isinstance(v, str) and re.fullmatch(r"[1-9][0-9]*[smhdw]", v):
        return v
    raise ValueError("a timeframe such as '1m', '5m', '1h' or '1d'")


def _embargo(v):
    if v == "auto":
        return v
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return v
    raise ValueError("'auto' or an integer >= 0 (rows)")


def _class_weights(v):
    if v == "balanced":
        return v
    if isinstance(v, Mapping) and v:
        out = {}
        for key, weight in v.items():
            if isinstance(key, str) and key.isdigit():
                key = int(key)
            if key not in (0, 1, 2) or isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
                raise ValueError("'balanced' or a mapping {0: w, 1: w, 2: w} of positive numbers")
            out[key] = float(weight)
        return out
    raise ValueError("'balanced' or a mapping {0: w, 1: w, 2: w} of positive numbers")


def _str_list(v):
    if isinstance(v, list) and all(isinstance(x, str) and x for x in v):
        return list(v)
    raise ValueError("a list of names")


def _alpha(v):
    if v is None:
        return None
    if (
        isinstance(v, list)
        and len(v) == 3
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in v)
    ):
        return [float(x) for x in v]
    raise ValueError("null or a list of 3 positive numbers (SHORT, HOLD, LONG)")


def _thresholds(v):
    if (
        isinstance(v, list)
        and v
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1 for x in v)
    ):
        return sorted(float(x) for x in v)
    raise ValueError("a list of probabilities between 0 and 1")


def _bool(v):
    if isinstance(v, bool):
        return v
    raise ValueError("true or false")


_QUANTITY_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+|[KMGTPE]i|[kMGTPE])?")


def _memory(v):
    """A Kubernetes quantity (``16Gi``, ``512Mi``, ``8G``, a byte count) or null; kept as a string."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and v > 0:
        return str(v)
    if isinstance(v, str) and _QUANTITY_RE.fullmatch(v) and any(c in "123456789" for c in v.split("e")[0].split("E")[0]):
        return v
    raise ValueError("a memory quantity such as '16Gi' or '512Mi', or null")


def _mapping(v):
    if isinstance(v, Mapping):
        return dict(v)
    raise ValueError("a mapping")


def _verbose(v):
    if v in ("auto", 0, 1, 2):
        return v
    raise ValueError("'auto', 0, 1 or 2")


SCHEMA: dict[str, dict[str, Callable[[Any], Any]]] = {
    "data": {
        "loader": _string(),
        "path": _string(nullable=True),
        "timeframe": _timeframe,
        "start": _date,
        "end": _date,
        "gaps": _choice("error", "fill", "split"),
        "params": _mapping,
    },
    "labels": {
        "future_window": _int(1),
        "take_profit_pct": _number(0, low_open=True),
        "stop_loss_pct": _number(0, low_open=True),
        "short_take_profit_pct": _number(0, low_open=True, nullable=True),
        "short_stop_loss_pct": _number(0, low_open=True, nullable=True),
    },
    "features": {"ma_short": _int(1), "ma_long": _int(1)},
    "split": {
        "validation": _number(0, 1, True, True),
        "test": _number(0, 1, False, True),
        "embargo": _embargo,
        "mode": _choice("single", "walk-forward"),
        "folds": _int(2),
        "min_validation_targets": _int(1),
    },
    "scaling": {"scaler": _choice(*SCALERS)},
    "balance": {"method": _string(), "min_per_class": _int(0), "class_weights": _class_weights},
    "model": {"builder": _string(), "params": _mapping},
    "train": {
        "epochs": _int(1),
        "batch_size": _int(1),
        "sequence_length": _int(1),
        "learning_rate": _number(0, low_open=True),
        "loss": _choice(*LOSSES),
        "focal_gamma": _number(0),
        "focal_alpha": _alpha,
        "early_stopping_patience": _int(0),
        "early_stopping_monitor": _choice(*MONITORS),
        "reduce_lr_patience": _int(0),
        "reduce_lr_factor": _number(0, 1, True, True),
        "min_learning_rate": _number(0),
        "seed": _int(0),
        "verbose": _verbose,
        "mixed_precision": _bool,
    },
    "evaluation": {
        "fee_pct": _number(0),
        "thresholds": _thresholds,
        "calibration_bins": _int(2),
        "min_signals": _int(1),
        "trade_threshold": _number(0, 1, low_open=True, nullable=True),
    },
    "resources": {"cpus": _number(0, low_open=True), "gpus": _number(0), "memory": _memory},
}


def _seconds(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 or v == float("inf"):
        raise ValueError("a number of seconds > 0")
    return v


BATCH_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "max_retries": _int(0),
    "reporters": _str_list,
    "schedule_timeout": _seconds,
}


def normalize_pair(name: Any, where: str = "pair") -> str:
    """`ETH/USDT`, `eth-usdt` -> `ETHUSDT`; anything else that is not ^[A-Z0-9]{2,20}$ is an error."""
    if not isinstance(name, str):
        raise ConfigError(f"{where}: expected a pair name such as 'ETHUSDT', got {name!r}.", MANIFEST_HINT)
    normalized = re.sub(r"[/\-_ ]", "", name.strip()).upper()
    if not PAIR_RE.fullmatch(normalized):
        raise ConfigError(
            f"{where}: {name!r} is not a valid pair name.",
            "Use 2-20 letters and digits, such as ETHUSDT (ETH/USDT is accepted and becomes ETHUSDT).",
        )
    return normalized


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _check_section(section: str, values: Any, where: str, partial: bool) -> dict:
    """Validate one section (``partial``: only the keys present). Returns normalised values."""
    if section == "reporters":
        try:
            return _str_list(values)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected {exc}, got {values!r} ({_type_name(values)}).", MANIFEST_HINT)
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of settings, got {values!r} ({_type_name(values)}).", MANIFEST_HINT
        )
    schema = SCHEMA[section]
    out = {}
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(
                f"Unknown setting {where}.{key}. Known settings in {section}: {', '.join(schema)}.", MANIFEST_HINT
            )
        try:
            out[key] = schema[key](value)
        except ValueError as exc:
            raise ConfigError(
                f"{where}.{key}: expected {exc}, got {value!r} ({_type_name(value)}).", MANIFEST_HINT
            ) from None
    return out


def _check_sections(values: Any, where: str) -> dict:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of sections, got {_type_name(values)}.", MANIFEST_HINT)
    out = {}
    for section, content in values.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"Unknown setting {where}.{section}. Known sections: {', '.join(SECTIONS)}.", MANIFEST_HINT
            )
        out[section] = _check_section(section, content, f"{where}.{section}", partial=True)
    return out


def _merge(base: dict, override: Mapping) -> dict:
    """Deep merge. ``model.params`` belong to ``model.builder`` (``data.params`` to ``data.loader``),
    so a new builder or loader starts from no params."""
    for owner in ("builder", "loader"):
        if owner in override and owner in base and override[owner] != base[owner]:
            base = dict(base, params={})
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict) and key != "class_weights":
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class Frozen(Mapping):
    """A read-only mapping with attribute access, lists turned into tuples."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping):
        object.__setattr__(self, "_data", {k: _freeze(v) for k, v in data.items()})

    def __getitem__(self, key):
        return self._data[key]

    def __getattr__(self, key):
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        raise AttributeError("settings are frozen")

    def __iter__(self):
        return iter(self._data)

    def __len__(self):
        return len(self._data)

    def __repr__(self):
        return f"Frozen({self._data!r})"

    def __hash__(self):
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


@dataclass(frozen=True)
class PairSpec:
    """Everything one pair's run needs, resolved and frozen."""

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

    def to_dict(self) -> dict:
        out = {"pair": self.pair, "output": self.output, "plugins": list(self.plugins)}
        for section in SECTIONS:
            out[section] = _thaw(getattr(self, section))
        return out

    @classmethod
    def from_dict(cls, d: Mapping) -> "PairSpec":
        """The inverse of `to_dict` (how a spec travels to a worker process)."""
        return cls(
            pair=d["pair"],
            output=d["output"],
            plugins=tuple(d["plugins"]),
            reporters=tuple(d["reporters"]),
            **{s: Frozen(d[s]) for s in SECTIONS if s != "reporters"},
        )

    def with_paths(self, output: str, data_path: str | None) -> "PairSpec":
        """The same spec with other output / data locations (neither changes the config hash)."""
        d = self.to_dict()
        d["output"] = output
        d["data"]["path"] = data_path
        return PairSpec.from_dict(d)

    @property
    def config_hash(self) -> str:
        d = self.to_dict()
        d.pop("output")
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
        v = self.labels.short_take_profit_pct
        return self.labels.take_profit_pct if v is None else v

    @property
    def short_stop_loss_pct(self) -> float:
        v = self.labels.short_stop_loss_pct
        return self.labels.stop_loss_pct if v is None else v

    @property
    def embargo(self) -> int:
        e = self.split.embargo
        fw = self.labels.future_window
        return fw if e == "auto" else max(fw, int(e))

    @property
    def tag(self) -> str:
        """`{PAIR}_FW{fw:03d}_SL{sl:03d}_TP{tp:03d}`, SL/TP in hundredths of a percent."""
        return artifact_tag(self.pair, self.labels.future_window, self.labels.stop_loss_pct, self.labels.take_profit_pct)

    @property
    def data_path(self) -> str | None:
        p = self.data.path
        return None if p is None else p.replace("{pair}", self.pair)


def pct_code(pct: float) -> int:
    """0.5 % -> 50 (the file names' hundredths of a percent)."""
    return int(round(pct * 100))


def artifact_tag(pair: str, fw: int, sl_pct: float, tp_pct: float) -> str:
    return f"{pair}_FW{fw:03d}_SL{pct_code(sl_pct):03d}_TP{pct_code(tp_pct):03d}"


@dataclass
class PairEntry:
    pair: str
    overrides: dict
    position: int


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
        return [entry.pair for entry in self.pairs]

    def entry(self, pair: str) -> PairEntry:
        for e in self.pairs:
            if e.pair == pair:
                return e
        return PairEntry(pair, {}, -1)

    def resolve(
        self,
        pair: str,
        sets: Iterable[str] = (),
        flags: Mapping[str, Any] | None = None,
    ) -> PairSpec:
        """The frozen spec of one pair: defaults, its overrides, ``--set`` values, then flags."""
        pair = normalize_pair(pair, "--pair")
        config = _merge(self.defaults, self.entry(pair).overrides)
        output = self.output
        updates = [parse_set(s) for s in sets]
        for name, value in (flags or {}).items():
            if value is not None:
                updates.append((name, value, f"the {FLAG_NAMES.get(name, name)} option"))
        for dotted, value, where in updates:
            if dotted == "output":
                if not isinstance(value, str) or not value:
                    raise ConfigError(f"{where}: output: expected a path or URL, got {value!r}.", MANIFEST_HINT)
                output = value
                continue
            section, _, key = dotted.partition(".")
            if section == "reporters" and not key:
                config["reporters"] = _check_section("reporters", value, where, partial=False)
                continue
            if section not in SCHEMA or not key:
                raise ConfigError(
                    f"{where}: unknown setting {dotted!r}.",
                    "Use section.key, e.g. train.epochs=5 (sections: " + ", ".join(SECTIONS) + ", output).",
                )
            key, _, sub = key.partition(".")
            if sub and key == "params" and section in ("model", "data"):
                config[section]["params"] = _merge(config[section]["params"], _nest(sub, value))
                continue
            checked = _check_section(section, {key: value}, f"{where}: {section}", partial=True)
            config[section] = _merge(config[section], checked)
        return PairSpec(
            pair=pair,
            output=output,
            plugins=tuple(self.plugins),
            reporters=tuple(config["reporters"]),
            **{s: Frozen(config[s]) for s in SECTIONS if s != "reporters"},
        )

    def resolve_all(self, sets=(), flags=None) -> list[PairSpec]:
        return [self.resolve(e.pair, sets, flags) for e in self.pairs]


FLAG_NAMES = {"data.path": "--data", "output": "--output", "train.epochs": "--epochs", "train.batch_size": "--batch-size"}


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def parse_set(text: str) -> tuple[str, Any, str]:
    """`train.epochs=5` -> ("train.epochs", 5, where); the value is read as YAML."""
    where = f"--set {text}"
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{where}: expected dotted.key=value.", "For example: --set train.sequence_length=60")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: the value is not valid YAML ({problem}).", "Quote strings if needed.")
    return key, value, where


def manifest_from_dict(raw: Any, path: str | None = None) -> Manifest:
    label = path or "manifest"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping at the top level, got {_type_name(raw)}.", MANIFEST_HINT)
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise ConfigError(
                f"{label}: unknown setting {key!r} at the top level. Known: {', '.join(TOP_LEVEL_KEYS)}.",
                MANIFEST_HINT,
            )
    version = raw.get("version", 1)
    if version != 1:
        raise ConfigError(f"{label}: version: expected 1, got {version!r}.", "This trainer reads manifest version 1.")
    output = raw.get("output", DEFAULT_OUTPUT)
    if not isinstance(output, str) or not output:
        raise ConfigError(f"{label}: output: expected a path or URL, got {output!r}.", MANIFEST_HINT)
    plugins = raw.get("plugins") or []
    try:
        plugins = _str_list(plugins)
    except ValueError:
        raise ConfigError(f"{label}: plugins: expected a list of module names, got {plugins!r}.", MANIFEST_HINT)
    batch = raw.get("batch") or {}
    if not isinstance(batch, Mapping):
        raise ConfigError(f"{label}: batch: expected a mapping, got {_type_name(batch)}.", MANIFEST_HINT)
    checked_batch = {}
    for key, value in batch.items():
        if key not in BATCH_DEFAULTS:
            raise ConfigError(
                f"{label}: unknown setting batch.{key}. Known: {', '.join(BATCH_DEFAULTS)}.", MANIFEST_HINT
            )
        try:
            checked_batch[key] = BATCH_SCHEMA[key](value)
        except ValueError as exc:
            raise ConfigError(f"batch.{key}: expected {exc}, got {value!r} ({_type_name(value)}).", MANIFEST_HINT)
    batch = {**copy.deepcopy(BATCH_DEFAULTS), **checked_batch}
    defaults = _merge(DEFAULTS, _check_sections(raw.get("defaults"), "defaults"))

    pairs_raw = raw.get("pairs") or []
    if not isinstance(pairs_raw, list):
        raise ConfigError(f"{label}: pairs: expected a list, got {_type_name(pairs_raw)}.", MANIFEST_HINT)
    pairs: list[PairEntry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(pairs_raw):
        where = f"pairs[{i}]"
        if isinstance(item, Mapping):
            item = dict(item)
            if "pair" not in item:
                raise ConfigError(f"{where}: missing 'pair' (the pair name).", MANIFEST_HINT)
            name = normalize_pair(item.pop("pair"), f"{where}.pair")
            overrides = _check_sections(item, where)
        else:
            name = normalize_pair(item, where)
            overrides = {}
        if name in seen:
            raise ConfigError(f"{where}: pair {name} is listed twice (also pairs[{seen[name]}]).", MANIFEST_HINT)
        seen[name] = i
        pairs.append(PairEntry(name, overrides, i))
    manifest = Manifest(path, 1, output, tuple(plugins), batch, defaults, pairs)
    for entry in pairs:  # a per-pair override must give a valid spec too
        manifest.resolve(entry.pair)
    return manifest


def load_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Manifest not found: {path}.", "Check the path; `trainer validate FILE` checks a manifest.")
    if path.is_dir():
        raise ConfigError(f"Manifest {path} is a folder, not a YAML file.", "Pass the YAML file itself.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read manifest {path}: {exc}.", "Pass a UTF-8 YAML file.")
    try:
        raw = yaml.safe_load(text)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date such as 2024-13-01
        raise ConfigError(f"Manifest {path} is not valid YAML: {exc}.", "Fix the value (dates are YYYY-MM-DD).")
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"Manifest {path} is not valid YAML{where}: {problem}.", "Fix the YAML syntax.")
    if raw is None:
        raise ConfigError(f"Manifest {path} is empty.", MANIFEST_HINT)
    return manifest_from_dict(raw, str(path))


def default_manifest() -> Manifest:
    return Manifest()
