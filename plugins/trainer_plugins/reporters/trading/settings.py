"""The trading reporter's settings: the manifest's ``evaluation`` section, its defaults and bounds.

The engine passes ``evaluation`` as a mapping; the trading reporter and the decision reporter (and
`trainer evaluate`, walk-forward and `trainer tune` through them) read it with `evaluation_settings`,
which refuses an unknown key or a value out of bounds with the manifest's messages and fills in
the defaults below.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trainer_core import (
    ConfigError,
    check_values,
    integer_check,
    number_check,
    plain,
    probabilities_check,
    string_check,
)

MAX_FEE_PCT = 100.0
MAX_SLIPPAGE_BPS = 10_000.0  # 100 % per side
MAX_FUNDING_PCT = 10.0  # percent per 8 hours; exchanges cap funding far below
MAX_CALIBRATION_BINS = 1000
MAX_ROWS = 100_000_000  # signals: about 190 years of 1-minute candles
MAX_DRAWS = 1_000_000  # random-entry draws or bootstrap repetitions

#: every setting and its default
DEFAULTS: dict[str, Any] = {
    "fee_pct": None,  # null: two taker fees of the pair's market (spot 0.2, futures 0.1)
    "slippage_bps": 0.0,
    "funding_rate_pct": None,  # null: 0.01 for futures, 0 for spot
    "funding_file": None,  # the exchange's funding-rate history, used instead of the constant
    "thresholds": [0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    "calibration_bins": 10,
    "min_signals": 30,
    "trade_threshold": None,
    "random_entry_draws": 10000,
    "bootstrap_reps": 1000,
}

CHECKS = {
    "fee_pct": number_check(0, MAX_FEE_PCT, nullable=True),
    "slippage_bps": number_check(0, MAX_SLIPPAGE_BPS),
    "funding_rate_pct": number_check(-MAX_FUNDING_PCT, MAX_FUNDING_PCT, nullable=True),
    "funding_file": string_check(nullable=True),
    "thresholds": probabilities_check,
    "calibration_bins": integer_check(2, MAX_CALIBRATION_BINS),
    "min_signals": integer_check(1, MAX_ROWS),
    "trade_threshold": number_check(0, 1, low_open=True, nullable=True),
    "random_entry_draws": integer_check(1, MAX_DRAWS),
    "bootstrap_reps": integer_check(0, MAX_DRAWS),
}


class Settings(dict):
    """The checked settings with their defaults, read as ``e.fee_pct`` or ``e["fee_pct"]``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def evaluation_settings(section: Any) -> Settings:
    """``evaluation`` (a spec's section, or any mapping) checked, with the defaults filled in; an
    unknown key or a bad value is a `ConfigError` naming ``evaluation.KEY``."""
    if section is None:
        section = {}
    if not isinstance(section, Mapping):
        raise ConfigError(
            f"evaluation: expected a mapping of settings, got {type(section).__name__}.",
            "See docs/manifest.md for the evaluation settings.",
        )
    checked = check_values(plain(section), CHECKS, "evaluation", "evaluation")
    return Settings({**DEFAULTS, **checked})


def evaluation_of(spec) -> Settings:
    """A spec's ``evaluation`` settings (`evaluation_settings`)."""
    return evaluation_settings(spec.evaluation)
