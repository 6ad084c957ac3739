"""The manifest's `tune:` section: the search space, trials, pruner, folds, budget and objective,
checked with one clear message per problem, and merged with a pair's own `tune:` overrides.

The section is read here, beside the manifest rather than inside its schema: a manifest with a
`tune:` section is split into the ordinary manifest (checked by `trainer_core.manifest`) and the
search settings, so `trainer batch` and `trainer validate` read the same file unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..manifest.schema import SCHEMA, normalize_pair, short_repr, type_name

TUNE_HINT = "See docs/tune.md for the tune section: space, trials, pruner, folds, budget, objective."

#: objective -> (direction, how it is read off a slice's predictions)
OBJECTIVES = {
    "val_loss": "minimize",  # log loss of the validation targets
    "val_accuracy": "maximize",
    "mcc": "maximize",
    "balanced_accuracy": "maximize",
    "mean_net_return": "maximize",  # mean net return per row of trading the arg-max signal
}
#: where a search dimension may point
SPACE_PREFIXES = ("model.params.", "train.", "features.params.", "labels.params.")
DISTRIBUTIONS = ("choice", "int", "uniform", "log_uniform")
#: train settings a search may not vary: they say how the search itself runs, not what is trained
FIXED_TRAIN = ("verbose", "seed")
MAX_TRIALS = 10_000
MAX_FOLDS = 20
MAX_CHOICES = 100
MAX_DIMENSIONS = 50
MAX_SECONDS = 30 * 86_400
MAX_REUSE = 1000

DEFAULT_TUNE: dict[str, Any] = {
    "trials": 20,
    "space": {},
    "pruner": None,
    "folds": 3,
    "test": 0.2,
    "embargo": "auto",
    "budget": {"trials": None, "seconds": None},
    "objective": "val_loss",
    "seed": 0,
    "warm_start": True,
    "worker_reuse": 8,
    "confidence": 0.95,
}
TUNE_KEYS = tuple(DEFAULT_TUNE)


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its dotted name, its kind (choice, int, uniform, log_uniform) and range."""

    name: str
    kind: str
    values: tuple  # the choices, or (low, high)

    @property
    def extremes(self) -> tuple:
        """The values a check must accept for every draw to be valid: each choice, or both bounds."""
        return self.values

    def contains(self, value: Any) -> bool:
        """Whether ``value`` could have been drawn from this dimension."""
        if self.kind == "choice":
            return any(_same(value, c) for c in self.values)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        return self.values[0] <= value <= self.values[1]

    def to_dict(self) -> dict:
        """The dimension as written in a manifest: ``{kind: values}``."""
        return {self.kind: list(self.values)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return (
        a == b
        and type(a) is type(b)
        or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)
    )


@dataclass(frozen=True)
class Asha:
    """Successive halving on epochs: a trial is judged first after ``grace`` epochs, then at
    ``grace * reduction**k``, keeping the best ``1/reduction`` at each rung, up to ``max_epochs``."""

    grace: int
    max_epochs: int
    reduction: int


@dataclass(frozen=True)
class TuneSettings:
    """One pair's search settings, checked."""

    trials: int
    space: tuple[Dimension, ...]
    pruner: Asha | None
    folds: int
    test: float
    embargo: Any  # "auto" or rows
    budget_trials: int | None
    budget_seconds: float | None
    objective: str
    seed: int
    warm_start: bool
    worker_reuse: int
    confidence: float
    raw: dict = field(default_factory=dict, compare=False)

    @property
    def direction(self) -> str:
        """``minimize`` or ``maximize``: the objective's direction."""
        return OBJECTIVES[self.objective]

    def dimension(self, name: str) -> Dimension | None:
        """The dimension of that dotted name, or None."""
        return next((d for d in self.space if d.name == name), None)


def _err(where: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(
        f"{where}: expected {expected}, got {short_repr(value)} ({type_name(value)}).", TUNE_HINT
    )


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _err(where, f"an integer >= {low:,} and <= {high:,}", value)
    return value


def _number(value: Any) -> float | None:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _dimension(name: Any, spec: Any, where: str) -> Dimension:
    if not isinstance(name, str) or not name.startswith(SPACE_PREFIXES) or name.endswith("."):
        raise ConfigError(
            f"{where}: {short_repr(name)} is not a setting a search can vary.",
            "Search over model.params.*, train.*, features.params.* or labels.params.* "
            "(e.g. train.learning_rate, model.params.dropout).",
        )
    here = f"{where}.{name}"
    if name.startswith("train."):
        key = name[len("train.") :]
        if key not in SCHEMA["train"]:
            raise ConfigError(
                f"{here}: train has no setting {key!r}. Known: {', '.join(SCHEMA['train'])}.", TUNE_HINT
            )
        if key in FIXED_TRAIN:
            raise ConfigError(
                f"{here}: train.{key} cannot be searched (it does not change what a model learns).",
                "Remove it from tune.space.",
            )
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise ConfigError(
            f"{here}: expected one of {{choice: [...]}}, {{int: [low, high]}}, {{uniform: [low, high]}} or "
            f"{{log_uniform: [low, high]}}, got {short_repr(spec)}.",
            TUNE_HINT,
        )
    kind, values = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_CHOICES:
            raise _err(f"{here}.choice", f"a list of 1 to {MAX_CHOICES} values", values)
        for v in values:
            if isinstance(v, Mapping):
                raise _err(f"{here}.choice", "values that are numbers, strings, booleans or lists", v)
        return Dimension(name, kind, tuple(copy.deepcopy(values)))
    if not isinstance(values, list) or len(values) != 2:
        raise _err(f"{here}.{kind}", "a list [low, high]", values)
    if kind == "int":
        low, high = values
        if any(isinstance(v, bool) or not isinstance(v, int) for v in values):
            raise _err(f"{here}.int", "two integers [low, high]", values)
    else:
        low, high = (_number(v) for v in values)
        if low is None or high is None:
            raise _err(f"{here}.{kind}", "two finite numbers [low, high]", values)
    if not low < high:
        raise _err(f"{here}.{kind}", "low < high", values)
    if kind == "log_uniform" and low <= 0:
        raise _err(f"{here}.log_uniform", "bounds > 0 (a log scale has no zero)", values)
    return Dimension(name, kind, (low, high))


def _pruner(value: Any, where: str) -> Asha | None:
    if value in (None, "none"):
        return None
    if not isinstance(value, Mapping) or list(value) != ["asha"] or not isinstance(value["asha"], Mapping):
        raise _err(where, "null, 'none' or {asha: {grace: N, max_epochs: N, reduction: N}}", value)
    settings = dict(value["asha"])
    known = ("grace", "max_epochs", "reduction")
    for key in settings:
        if key not in known:
            raise ConfigError(f"Unknown setting {where}.asha.{key}. Known: {', '.join(known)}.", TUNE_HINT)
    grace = _int(f"{where}.asha.grace", settings.get("grace", 1), 1, 100_000)
    max_epochs = _int(f"{where}.asha.max_epochs", settings.get("max_epochs", 32), 1, 100_000)
    reduction = _int(f"{where}.asha.reduction", settings.get("reduction", 3), 2, 100)
    if grace > max_epochs:
        raise ConfigError(
            f"{where}.asha: grace {grace} is more than max_epochs {max_epochs}.",
            "The first rung comes after `grace` epochs: keep it at or below max_epochs.",
        )
    return Asha(grace, max_epochs, reduction)


def _check_keys(values: Mapping, where: str) -> None:
    for key in values:
        if key not in TUNE_KEYS:
            raise ConfigError(
                f"Unknown setting {where}.{key}. Known settings in tune: {', '.join(TUNE_KEYS)}.", TUNE_HINT
            )


def merge_tune(base: Mapping, override: Mapping) -> dict:
    """A pair's `tune:` over the manifest's: its `space` entries add to or replace the shared ones
    (``null`` removes one), `budget` merges by key, every other key replaces."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key == "space" and isinstance(value, Mapping) and isinstance(out.get("space"), Mapping):
            space = dict(out["space"])
            for name, dim in value.items():
                if dim is None:
                    space.pop(name, None)
                else:
                    space[name] = copy.deepcopy(dim)
            out["space"] = space
        elif key == "budget" and isinstance(value, Mapping) and isinstance(out.get("budget"), Mapping):
            out["budget"] = {**out["budget"], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_tune(raw: Any, where: str = "tune") -> TuneSettings:
    """The settings of one `tune:` mapping (already merged with its defaults), checked."""
    if not isinstance(raw, Mapping):
        raise _err(where, "a mapping of search settings", raw)
    _check_keys(raw, where)
    values = merge_tune(DEFAULT_TUNE, raw)
    space_raw = values["space"]
    if not isinstance(space_raw, Mapping) or not space_raw:
        raise ConfigError(
            f"{where}.space: expected a mapping of at least one setting to search, got {short_repr(space_raw)}.",
            "For example: space: {train.learning_rate: {log_uniform: [1.0e-4, 1.0e-2]}}.",
        )
    if len(space_raw) > MAX_DIMENSIONS:
        raise ConfigError(f"{where}.space: {len(space_raw)} settings; at most {MAX_DIMENSIONS}.", TUNE_HINT)
    space = tuple(_dimension(name, spec, f"{where}.space") for name, spec in space_raw.items())
    pruner = _pruner(values["pruner"], f"{where}.pruner")
    if pruner is not None and any(d.name == "train.epochs" for d in space):
        raise ConfigError(
            f"{where}.space: train.epochs cannot be searched with the asha pruner (its max_epochs sets the epochs).",
            "Remove train.epochs from the space, or set pruner: none.",
        )
    budget = values["budget"]
    if not isinstance(budget, Mapping):
        raise _err(f"{where}.budget", "a mapping {trials: N, seconds: S}", budget)
    for key in budget:
        if key not in ("trials", "seconds"):
            raise ConfigError(f"Unknown setting {where}.budget.{key}. Known: trials, seconds.", TUNE_HINT)
    budget_trials = budget.get("trials")
    if budget_trials is not None:
        budget_trials = _int(f"{where}.budget.trials", budget_trials, 1, MAX_TRIALS * 100)
    seconds = budget.get("seconds")
    if seconds is not None:
        number = _number(seconds)
        if number is None or not 0 < number <= MAX_SECONDS:
            raise _err(f"{where}.budget.seconds", f"a number of seconds > 0 and <= {MAX_SECONDS:,}", seconds)
        seconds = number
    objective = values["objective"]
    if objective not in OBJECTIVES:
        raise _err(f"{where}.objective", "one of " + ", ".join(OBJECTIVES), objective)
    test = _number(values["test"])
    if test is None or not 0.01 <= test <= 0.5:
        raise _err(f"{where}.test", "a fraction >= 0.01 and <= 0.5 (the outer test slice)", values["test"])
    embargo = values["embargo"]
    if embargo != "auto":
        embargo = _int(f"{where}.embargo", embargo, 0, 100_000_000)
    confidence = _number(values["confidence"])
    if confidence is None or not 0.5 <= confidence < 1:
        raise _err(f"{where}.confidence", "a probability >= 0.5 and < 1", values["confidence"])
    if not isinstance(values["warm_start"], bool):
        raise _err(f"{where}.warm_start", "true or false", values["warm_start"])
    return TuneSettings(
        trials=_int(f"{where}.trials", values["trials"], 1, MAX_TRIALS),
        space=space,
        pruner=pruner,
        folds=_int(f"{where}.folds", values["folds"], 2, MAX_FOLDS),
        test=test,
        embargo=embargo,
        budget_trials=budget_trials,
        budget_seconds=seconds,
        objective=objective,
        seed=_int(f"{where}.seed", values["seed"], 0, 2**32 - 1),
        warm_start=values["warm_start"],
        worker_reuse=_int(f"{where}.worker_reuse", values["worker_reuse"], 1, MAX_REUSE),
        confidence=confidence,
        raw=values,
    )


@dataclass
class TuneManifest:
    """A manifest with a `tune:` section, split in two: the ordinary manifest (as a mapping, for
    `trainer_core.manifest`) and the search settings of every listed pair."""

    manifest_raw: dict
    shared: dict
    per_pair: dict[str, dict]  # pair name as written -> its tune overrides

    def settings_for(self, pair: str) -> TuneSettings:
        """The checked settings of one pair: the shared section with its overrides."""
        override = self.per_pair.get(pair, {})
        where = f"pairs[{pair}].tune" if override else "tune"
        merged = merge_tune(self.shared, override)
        _check_keys(override, where)
        return check_tune(merged, where)


def split_manifest(raw: Any, label: str = "manifest") -> TuneManifest:
    """Take the `tune:` sections out of a manifest read from YAML; the rest is an ordinary manifest."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{label}: expected a mapping at the top level, got {type_name(raw)}.", TUNE_HINT)
    rest = dict(raw)
    shared = rest.pop("tune", None)
    if shared is None:
        raise ConfigError(
            f"{label} has no tune section.",
            "Add `tune:` with at least a `space:` (see docs/tune.md), or use `trainer batch` to train without a search.",
        )
    if not isinstance(shared, Mapping):
        raise _err(f"{label}: tune", "a mapping of search settings", shared)
    _check_keys(shared, "tune")
    per_pair: dict[str, dict] = {}
    pairs = rest.get("pairs")
    if isinstance(pairs, list):
        cleaned = []
        for i, item in enumerate(pairs):
            if isinstance(item, Mapping) and "tune" in item:
                item = dict(item)
                override = item.pop("tune")
                if not isinstance(override, Mapping):
                    raise _err(f"pairs[{i}].tune", "a mapping of search settings", override)
                _check_keys(override, f"pairs[{i}].tune")
                try:
                    name = normalize_pair(item.get("pair"), f"pairs[{i}].pair")
                except ConfigError:  # the manifest's own check names the bad pair
                    name = str(item.get("pair"))
                per_pair[name] = dict(override)
            cleaned.append(item)
        rest["pairs"] = cleaned
    return TuneManifest(rest, dict(shared), per_pair)


def check_manifest_tune(raw: Mapping, label: str = "manifest") -> None:
    """Check a manifest's `tune:` section and every pair's `tune:` override (for every command that
    reads the manifest, not only `trainer tune`)."""
    tm = split_manifest(raw, label)
    check_tune(tm.shared, "tune")
    for pair in tm.per_pair:
        tm.settings_for(pair)


__all__ = [
    "check_manifest_tune",
    "DEFAULT_TUNE",
    "Dimension",
    "OBJECTIVES",
    "SPACE_PREFIXES",
    "Asha",
    "TUNE_HINT",
    "TuneManifest",
    "TuneSettings",
    "check_tune",
    "merge_tune",
    "split_manifest",
]
