"""The manifest's schema: the built-in defaults, every setting's value check and bounds, and the
size limits of a manifest as a whole."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ConfigError

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
    "labels": {"method": "tp-sl", "params": {}},
    "features": {"set": "seed", "partial_history": False, "params": {}},
    "split": {
        "validation": 0.2,
        "test": 0.15,
        "embargo": "auto",
        "mode": "single",
        "folds": 3,
        "min_validation_targets": 1000,
    },
    "scaling": {"scaler": "robust"},
    "balance": {"method": "undersample", "min_per_class": 50000, "class_weights": "balanced"},
    "model": {
        "builder": "lstm",
        "params": {"lstm_units": [128, 64, 32], "dense_units": [32, 16], "dropout": 0.3},
    },
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
    # the reporters' settings (the trading reporter's costs, thresholds and draws): a mapping the
    # reporters that read it check (their `check(evaluation)`) and fill with their defaults
    "evaluation": {},
    "resources": {"cpus": 1, "gpus": 0, "memory": None},
    "reporters": ["metadata", "history", "confusion-matrix", "trading", "decision"],
}

SECTIONS = tuple(DEFAULTS)
#: settings read as their section's ``params`` (``labels.future_window`` is ``labels.params.future_window``):
#: where the built-in labeler's and feature set's settings lived before they became their params.
#: Kept for one release so existing manifests, ``--set`` lines and model folders still read.
ALIASES: dict[str, tuple[str, ...]] = {
    "labels": (
        "future_window",
        "take_profit_pct",
        "stop_loss_pct",
        "short_take_profit_pct",
        "short_stop_loss_pct",
    ),
    "features": ("ma_short", "ma_long"),
}
TOP_LEVEL_KEYS = ("version", "output", "plugins", "batch", "defaults", "pairs", "tune")
#: batch-level settings (not per pair): how `trainer batch` runs the pairs
BATCH_DEFAULTS: dict[str, Any] = {"max_retries": 2, "reporters": ["summary"], "schedule_timeout": 600}
DEFAULT_OUTPUT = "artifacts/"
PAIR_RE = re.compile(r"^[A-Z0-9]{2,20}$")
#: freqtrade's settlement currency after the colon of a futures pair (`BTC/USDT:USDT`)
SETTLE_RE = re.compile(r"[A-Za-z0-9]{2,10}")
#: a manifest entry's id, a pair's folder name (`pair_name`)
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: the keys of a manifest entry besides its sections
ENTRY_KEYS = ("pair", "market", "id")
SCALERS = ("robust", "standard", "minmax", "none")
LOSSES = ("categorical_crossentropy", "focal")
MONITORS = ("val_accuracy", "val_loss")

# -- bounds: the largest values that can make sense. Beyond them a value is a typo or an attack
# (an embargo of 10**14 rows, a take-profit of 1e308 %), refused before any data are read.
MAX_ROWS = 100_000_000  # rows of an embargo: about 190 years of 1-minute candles
MAX_SEQUENCE_LENGTH = 10_000  # rows in one model input window
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 1_048_576
MAX_SEED = 2**32 - 1  # NumPy's and Keras' seeds are 32-bit
MAX_FRACTION = 0.9  # split.validation, split.test: the rest must leave rows to train on
MIN_FRACTION = 1.0e-6  # smaller leaves no row at all before a billion rows (and hangs the split's arithmetic)
MAX_FOLDS = 100
MAX_LEARNING_RATE = 10.0
MAX_WEIGHT = 1.0e6  # a class weight or focal alpha
MAX_FOCAL_GAMMA = 100.0
MAX_CPUS = 4096
MAX_GPUS = 1024
MAX_RETRIES = 100
MAX_SCHEDULE_TIMEOUT = 30 * 86_400  # seconds: 30 days
MAX_STRING = 4096  # characters of a name or path
MAX_PAIRS = 5_000
MAX_LIST = 100  # names in `plugins` or `reporters`, probabilities in a list of thresholds

# -- limits of a manifest as a whole (and of a `--set` value), counted while the YAML is read:
# YAML aliases count every time they are used, so nested anchors cannot blow up ("billion laughs").
MAX_DEPTH = 64  # nesting levels; a manifest needs about 7 (pairs[i].model.params.key[j])
MAX_NODES = 100_000  # values after alias expansion: 5,000 pairs with a few overrides each fit
MAX_PARAMS_NODES = 200  # values in one section's `params` (copied into every pair's spec; lstm's are 10)
LIMITS_HINT = (
    f"A manifest may nest at most {MAX_DEPTH} levels and hold at most {MAX_NODES:,} values, "
    "counting each use of a YAML alias in full; write the values out instead of nesting anchors."
)


# -- value checks: each returns the normalised value or raises ValueError(expected) ------------


def _fmt(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):,}"
    plain = f"{x:.12f}".rstrip("0")
    return plain if float(plain) == x else f"{x:g}"


def _int(minimum: int | None = None, maximum: int | None = None) -> Callable[[Any], int]:
    """A check of an integer within ``minimum``..``maximum`` (either may be None: unbounded); it
    returns the value or raises ValueError("an integer >= ... and <= ...")."""

    def describe():
        parts = [f">= {_fmt(minimum)}"] if minimum is not None else []
        parts += [f"<= {_fmt(maximum)}"] if maximum is not None else []
        return "an integer" + (" " + " and ".join(parts) if parts else "")

    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(describe())
        if (minimum is not None and v < minimum) or (maximum is not None and v > maximum):
            raise ValueError(describe())
        return v

    return check


def _number(low=None, high=None, low_open=False, high_open=False, nullable=False) -> Callable[[Any], Any]:
    """A check of a finite number within ``low``..``high`` (``*_open``: the bound itself excluded;
    ``nullable``: null allowed); it returns the value as a float (or None) or raises ValueError."""

    def describe():
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {_fmt(low)}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {_fmt(high)}")
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
        try:
            v = float(v)
        except OverflowError:  # an integer beyond any float
            raise ValueError(describe()) from None
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(describe())
        if low is not None and (v < low or (low_open and v == low)):
            raise ValueError(describe())
        if high is not None and (v > high or (high_open and v == high)):
            raise ValueError(describe())
        return v

    return check


def _string(nullable: bool = False) -> Callable[[Any], Any]:
    """A check of a non-empty string of at most `MAX_STRING` characters (or null when ``nullable``)."""

    def check(v):
        if v is None and nullable:
            return None
        if not isinstance(v, str) or not v or len(v) > MAX_STRING:
            raise ValueError("a non-empty string" + (" or null" if nullable else ""))
        return v

    return check


def _choice(*choices) -> Callable[[Any], Any]:
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
    if isinstance(v, str) and re.fullmatch(r"[1-9][0-9]{0,5}[smhdw]", v):
        return v
    raise ValueError("a timeframe such as '1m', '5m', '1h' or '1d'")


def _embargo(v):
    if v == "auto":
        return v
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= MAX_ROWS:
        return v
    raise ValueError(f"'auto' or an integer >= 0 and <= {MAX_ROWS:,} (rows)")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x <= MAX_WEIGHT


def _class_weights(v):
    expected = f"'balanced' or a mapping {{0: w, 1: w, 2: w}} of positive numbers up to {MAX_WEIGHT:g}"
    if v == "balanced":
        return v
    if isinstance(v, Mapping) and v:
        out = {}
        for key, weight in v.items():
            if isinstance(key, str) and key.isdigit():
                key = int(key)
            if key not in (0, 1, 2) or not _positive(weight):
                raise ValueError(expected)
            out[key] = float(weight)
        return out
    raise ValueError(expected)


def _str_list(v):
    if (
        isinstance(v, list)
        and len(v) <= MAX_LIST
        and all(isinstance(x, str) and x and len(x) <= MAX_STRING for x in v)
    ):
        return list(v)
    raise ValueError("a list of names")


def _alpha(v):
    if v is None:
        return None
    if isinstance(v, list) and len(v) == 3 and all(_positive(x) for x in v):
        return [float(x) for x in v]
    raise ValueError(f"null or a list of 3 positive numbers up to {MAX_WEIGHT:g} (SHORT, HOLD, LONG)")


def _thresholds(v):
    """A list of 1 to `MAX_LIST` probabilities strictly between 0 and 1, returned sorted as floats."""
    if (
        isinstance(v, list)
        and 0 < len(v) <= MAX_LIST
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1 for x in v)
    ):
        return sorted(float(x) for x in v)
    raise ValueError("a list of probabilities between 0 and 1")


def _bool(v):
    if isinstance(v, bool):
        return v
    raise ValueError("true or false")


def count_values(value: Any, limit: int) -> int:
    """How many values ``value`` holds (itself included), counting up to just past ``limit`` only."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def value_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 1), looking no deeper than just past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > limit:
            break
        if isinstance(item, Mapping):
            stack.extend((x, depth + 1) for x in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((x, depth + 1) for x in item)
    return deepest


def _mapping(v):
    if not isinstance(v, Mapping):
        raise ValueError("a mapping")
    if count_values(v, MAX_PARAMS_NODES) > MAX_PARAMS_NODES or value_depth(v, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"a mapping of at most {MAX_PARAMS_NODES:,} values, {MAX_DEPTH} levels deep")
    return dict(v)


def _verbose(v):
    if v in ("auto", 0, 1, 2):
        return v
    raise ValueError("'auto', 0, 1 or 2")


_QUANTITY_RE = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2}|[KMGTPE]i|[kMGTPE])?")


def _memory(v):
    """A Kubernetes quantity (``16Gi``, ``512Mi``, ``8G``, a byte count) or null; kept as a string."""
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool) and 0 < v < 2**63:
        return str(v)
    if (
        isinstance(v, str)
        and len(v) <= 64
        and _QUANTITY_RE.fullmatch(v)
        and any(c in "123456789" for c in re.split("[eE]", v)[0])
    ):
        return v
    raise ValueError("a memory quantity such as '16Gi' or '512Mi', or null")


def _seconds(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= MAX_SCHEDULE_TIMEOUT:
        raise ValueError(f"a number of seconds > 0 and <= {MAX_SCHEDULE_TIMEOUT:,}")
    return v


def _test_fraction(v):
    expected = f"0, or a number >= {_fmt(MIN_FRACTION)} and <= {_fmt(MAX_FRACTION)}"
    try:
        v = _number(0, MAX_FRACTION)(v)
    except ValueError:
        raise ValueError(expected) from None
    if 0 < v < MIN_FRACTION:
        raise ValueError(expected)
    return v


#: section -> setting -> check (returns the normalised value, raises ValueError("expected ..."))
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
    "labels": {"method": _string(), "params": _mapping},
    "features": {"set": _string(), "partial_history": _bool, "params": _mapping},
    "split": {
        "validation": _number(MIN_FRACTION, MAX_FRACTION),
        "test": _test_fraction,
        "embargo": _embargo,
        "mode": _choice("single", "walk-forward"),
        "folds": _int(2, MAX_FOLDS),
        "min_validation_targets": _int(1, MAX_ROWS),
    },
    "scaling": {"scaler": _choice(*SCALERS)},
    "balance": {"method": _string(), "min_per_class": _int(0, MAX_ROWS), "class_weights": _class_weights},
    "model": {"builder": _string(), "params": _mapping},
    "train": {
        "epochs": _int(1, MAX_EPOCHS),
        "batch_size": _int(1, MAX_BATCH_SIZE),
        "sequence_length": _int(1, MAX_SEQUENCE_LENGTH),
        "learning_rate": _number(0, MAX_LEARNING_RATE, low_open=True),
        "loss": _choice(*LOSSES),
        "focal_gamma": _number(0, MAX_FOCAL_GAMMA),
        "focal_alpha": _alpha,
        "early_stopping_patience": _int(0, MAX_EPOCHS),
        "early_stopping_monitor": _choice(*MONITORS),
        "reduce_lr_patience": _int(0, MAX_EPOCHS),
        "reduce_lr_factor": _number(0, 1, True, True),
        "min_learning_rate": _number(0, MAX_LEARNING_RATE),
        "seed": _int(0, MAX_SEED),
        "verbose": _verbose,
        "mixed_precision": _bool,
    },
    "evaluation": {},  # any keys: see OPEN_SECTIONS
    "resources": {
        "cpus": _number(0, MAX_CPUS, low_open=True),
        "gpus": _number(0, MAX_GPUS),
        "memory": _memory,
    },
}

#: sections whose keys belong to components, not to the engine: checked as one mapping (its size
#: and depth) and passed as they are to the components that read them
OPEN_SECTIONS = ("evaluation",)

# -- the value checks, for components that check their own settings with the manifest's messages
integer_check = _int
number_check = _number
string_check = _string
probabilities_check = _thresholds

#: batch setting -> check, like `SCHEMA`
BATCH_SCHEMA: dict[str, Callable[[Any], Any]] = {
    "max_retries": _int(0, MAX_RETRIES),
    "reporters": _str_list,
    "schedule_timeout": _seconds,
}


def normalize_pair(name: Any, where: str = "pair") -> str:
    """`ETH/USDT`, `eth-usdt`, freqtrade's futures `ETH/USDT:USDT` -> `ETHUSDT`; anything else that
    is not ^[A-Z0-9]{2,20}$ is an error (`pair_market` tells a futures name)."""
    if not isinstance(name, str):
        raise ConfigError(
            f"{where}: expected a pair name such as 'ETHUSDT', got {short_repr(name)}.", MANIFEST_HINT
        )
    symbol, colon, settle = name.strip().partition(":")
    normalized = re.sub(r"[/\-_ ]", "", symbol).upper()
    if not PAIR_RE.fullmatch(normalized) or (colon and not SETTLE_RE.fullmatch(settle.strip())):
        raise ConfigError(
            f"{where}: {short_repr(name)} is not a valid pair name.",
            "Use 2-20 letters and digits, such as ETHUSDT (ETH/USDT is accepted and becomes ETHUSDT; "
            "freqtrade's futures name ETH/USDT:USDT becomes ETHUSDT on the futures market).",
        )
    return normalized


def pair_market(name: Any) -> str | None:
    """``futures`` for freqtrade's futures pair names (``BTC/USDT:USDT``), else None (not said)."""
    return "futures" if isinstance(name, str) and ":" in name else None


def check_market(value: Any, where: str) -> str:
    """A manifest entry's ``market``: ``spot`` or ``futures`` (``futures-um`` is read as futures)."""
    if value in ("spot", "futures", "futures-um"):
        return "futures" if value == "futures-um" else value
    raise ConfigError(f"{where}: expected spot or futures, got {short_repr(value)}.", MANIFEST_HINT)


def check_id(value: Any, where: str) -> str:
    """A manifest entry's ``id``: a plain name that becomes the pair's folder and the start of its tag."""
    if isinstance(value, str) and ID_RE.fullmatch(value) and ".." not in value:
        return value
    raise ConfigError(
        f"{where}: expected a plain name (1-64 letters, digits, '_', '.', '-', starting with a letter "
        f"or digit), got {short_repr(value)}.",
        "The id names the pair's folder and starts its file names, such as btc-rsi.",
    )


def type_name(v: Any) -> str:
    """The YAML-ish name of a value's type for messages: ``null``, ``int``, ``str``..."""
    return "null" if v is None else type(v).__name__


def short_repr(v: Any, limit: int = 120) -> str:
    """``repr(v)`` cut to ``limit`` characters, so a hostile value cannot flood a message."""
    if count_values(v, 200) > 200:
        return f"<a {type_name(v)} of more than 200 values>"
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_section(section: str, values: Any, where: str) -> Any:
    """Validate the keys of one section that are present; returns their normalised values."""
    if section == "reporters":
        try:
            return _str_list(values)
        except ValueError as exc:
            raise ConfigError(
                f"{where}: expected {exc}, got {short_repr(values)} ({type_name(values)}).", MANIFEST_HINT
            ) from None
    if not isinstance(values, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of settings, got {short_repr(values)} ({type_name(values)}).",
            MANIFEST_HINT,
        )
    if section in OPEN_SECTIONS:
        try:
            return _mapping(values)
        except ValueError as exc:
            raise ConfigError(f"{where}: expected {exc}, got {short_repr(values)}.", MANIFEST_HINT) from None
    return check_values(fold_aliases(section, values, where), SCHEMA[section], where, section)


def fold_aliases(section: str, values: Mapping, where: str) -> Mapping:
    """``values`` with each alias of `ALIASES` moved under ``params`` (checked there by the component
    that owns it); an alias and its ``params`` key both given with different values is a
    `ConfigError` naming both."""
    names = [key for key in ALIASES.get(section, ()) if key in values]
    if not names:
        return values
    params = values.get("params")
    if params is not None and not isinstance(params, Mapping):
        return values  # `params` itself is refused by the schema
    out = {k: v for k, v in values.items() if k not in names}
    params = dict(params or {})
    for key in names:
        if key in params and params[key] != values[key]:
            raise ConfigError(
                f"{where}.{key} is {short_repr(values[key])} but {where}.params.{key} is "
                f"{short_repr(params[key])}; {section}.{key} is another name for {section}.params.{key}.",
                f"Give the setting once, as {section}.params.{key}.",
            )
        params[key] = values[key]
    out["params"] = params
    return out


def fold_recorded(section: str, values: Mapping) -> dict:
    """A recorded spec's section (a model folder's ``spec.json``) with its aliases moved under
    ``params`` as they were read when it was written: ``params`` on top, no error."""
    names = [key for key in ALIASES.get(section, ()) if key in values]
    if not names:
        return dict(values)
    out = {k: v for k, v in values.items() if k not in names}
    out["params"] = {**{k: values[k] for k in names}, **dict(values.get("params") or {})}
    return out


def check_values(
    values: Mapping, schema: Mapping[str, Callable[[Any], Any]], where: str, section: str
) -> dict:
    """Each key of ``values`` checked against ``schema`` (known keys, value checks); an unknown key
    or a bad value is a `ConfigError` naming ``where.key``. Returns the normalised values."""
    out = {}
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(
                f"Unknown setting {where}.{key}. Known settings in {section}: {', '.join(schema)}.",
                MANIFEST_HINT,
            )
        try:
            out[key] = schema[key](value)
        except ValueError as exc:
            raise ConfigError(
                f"{where}.{key}: expected {exc}, got {short_repr(value)} ({type_name(value)}).", MANIFEST_HINT
            ) from None
    return out


def check_sections(values: Any, where: str) -> dict:
    """Validate a mapping of sections (a manifest's `defaults` or one pair's entry)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where}: expected a mapping of sections, got {type_name(values)}.", MANIFEST_HINT)
    out = {}
    for section, content in values.items():
        if section not in DEFAULTS:
            raise ConfigError(
                f"Unknown setting {where}.{section}. Known sections: {', '.join(SECTIONS)}.", MANIFEST_HINT
            )
        out[section] = check_section(section, content, f"{where}.{section}")
    return out
