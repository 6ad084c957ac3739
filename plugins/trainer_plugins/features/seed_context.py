"""Feature set `seed+context`: the seed's 8 features plus other pairs' moves at the same minute.

For each pair in ``params.pairs`` (e.g. ``[BTCUSDT]``), its ``close_change`` and ``volume_change``
at candle ``t`` (never a later one), read by the loader from the same data path and aligned on
the pair's timestamps. A minute the context pair has no candle for holds NaN: that row is neither
a target nor a window member.
"""

from __future__ import annotations

import re

import numpy as np

from trainer_core import ConfigError, hookimpl, reject_unknown

from .seed import DEFAULTS, SeedFeatures, compute_features, seed_params

PAIR = re.compile(r"^[A-Z0-9]{2,20}$")


def context_params(params) -> tuple[dict, list[str]]:
    """``params`` split into the seed's params and the context pair names; a `ConfigError` for bad pairs."""
    params = dict(params or {})
    pairs = params.pop("pairs", None)
    if (
        not isinstance(pairs, (list, tuple))
        or not pairs
        or not all(isinstance(p, str) and PAIR.match(p) for p in pairs)
    ):
        raise ConfigError(
            f"features.params.pairs: expected a list of pair names such as [BTCUSDT], got {pairs!r}.",
            "Name the context pairs, e.g. --set 'features.params.pairs=[BTCUSDT]'.",
        )
    if len(set(pairs)) != len(pairs):
        raise ConfigError(
            f"features.params.pairs: {pairs} names a pair twice.", "Name each context pair once."
        )
    return seed_params(params), list(pairs)


class SeedWithContext:
    """The seed's 8 features plus close_change and volume_change of context pairs at the same minute."""

    def check(self, params) -> None:
        """Reject unknown ``features.params`` keys, bad seed params and a bad ``pairs`` list."""
        reject_unknown(params, (*DEFAULTS, "pairs"), "features.params", "the seed+context feature set")
        context_params(params)

    def context_pairs(self, params) -> list[str]:
        """The pairs named by ``params.pairs``."""
        return context_params(params)[1]

    def columns(self, params) -> list[str]:
        """The seed's 8 names, then ``{pair}_close_change`` and ``{pair}_volume_change`` per context pair."""
        base = SeedFeatures().columns({})
        for pair in context_params(params)[1]:
            base += [f"{pair.lower()}_close_change", f"{pair.lower()}_volume_change"]
        return base

    def warmup(self, params) -> int:
        """1: the first row has no previous candle."""
        return 1

    def history(self, params) -> int:
        """The seed's history: the context columns read only the previous candle."""
        return SeedFeatures().history(context_params(params)[0])

    def compute(self, candles, params, context) -> np.ndarray:
        """The seed's features plus each context pair's changes; NaN where its candle or the previous one is missing."""
        seed, pairs = context_params(params)
        own = SeedFeatures().compute(candles, seed)
        extra = np.full((len(candles), 2 * len(pairs)), np.nan, dtype=np.float32)
        for k, pair in enumerate(pairs):
            other = context[pair]  # aligned: row t is the context pair's candle at the same time, or nulls
            cols = [
                other.get_column(c).cast(float).fill_null(np.nan).to_numpy()
                for c in ("close", "high", "low", "volume")
            ]
            feats = compute_features(*cols, 1, 1)  # only the change columns are used
            missing = np.isnan(cols[0]) | np.isnan(cols[3])
            gone = missing[1:] | missing[:-1]  # this minute's or the previous minute's candle is missing
            extra[1:, 2 * k] = np.where(gone, np.nan, feats[:, 2])
            extra[1:, 2 * k + 1] = np.where(gone, np.nan, feats[:, 3])
        return np.concatenate([own, extra], axis=1)


@hookimpl
def trainer_register_feature_sets(register):
    """Register the ``seed+context`` feature set."""
    register("seed+context", SeedWithContext)
