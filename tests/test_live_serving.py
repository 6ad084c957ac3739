"""Features a live feed can serve: rows whose features read less than the feature set's full history
are history only (no train/serve skew), the seed's behaviour as an explicit setting, and
`required_history` printed by `trainer validate` and `trainer run --config-test`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trainer_core.candles import read_candles
from trainer_core.errors import DataError
from trainer_core.features import pair_data_from_candles
from trainer_core.manifest import default_manifest

REPO = Path(__file__).resolve().parents[1]
START_MS = 1_704_067_200_000  # 2024-01-01 00:00 UTC


def _candles(tmp_path, minutes: int, seed: int = 3, name: str = "ETHUSDT-1m.parquet"):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, minutes)))
    open_ = np.r_[close[0], close[:-1]]
    frame = pl.DataFrame(
        {
            "timestamp": START_MS + np.arange(minutes, dtype=np.int64) * 60_000,
            "open": open_,
            "high": np.maximum(open_, close) * 1.0004,
            "low": np.minimum(open_, close) * 0.9996,
            "close": close,
            "volume": rng.uniform(1, 100, minutes),
        }
    )
    path = tmp_path / name
    frame.write_parquet(path)
    return path


SETS = ["labels.future_window=5", "features.ma_short=10", "features.ma_long=120"]


def test_rows_short_of_the_full_history_are_history_only(tmp_path):
    path = _candles(tmp_path, 1000)
    candles = read_candles(path, "ETHUSDT")
    full = pair_data_from_candles(candles, default_manifest().resolve("ETHUSDT", sets=SETS))
    seed = pair_data_from_candles(
        candles, default_manifest().resolve("ETHUSDT", sets=[*SETS, "features.partial_history=true"])
    )
    # ma_long 120: a row needs the 119 candles before it; candles 1..118 read fewer
    assert len(seed) == 999 and len(full) == 1000 - 119
    assert full.extra["full_history"] == 119 and full.extra["short_history_rows"] == 118
    assert seed.extra["full_history"] == 0 and seed.extra["short_history_rows"] == 0
    assert full.timestamps[0] == np.datetime64(START_MS + 119 * 60_000, "ms")
    # the rows kept are the same values, and each equals what serving computes from only the
    # candles it needs (119 before the row): no feature value serving would not compute
    np.testing.assert_array_equal(full.features, seed.features[118:])
    for row in (0, 400, len(full) - 1):
        candle = 119 + row
        served = pair_data_from_candles(
            candles.take(np.arange(candle - 119, candle + 1)),
            default_manifest().resolve("ETHUSDT", sets=SETS),
            with_labels=False,
        )
        assert len(served) == 1
        np.testing.assert_array_equal(served.features[0], full.features[row])
    # the seed's expanding means differ from the full-length ones on the short rows
    served = pair_data_from_candles(
        candles.take(np.arange(0, 120)), default_manifest().resolve("ETHUSDT", sets=SETS), with_labels=False
    )
    assert not np.allclose(seed.features[50, 5], served.features[0, 5])


def test_too_little_history_is_one_error_naming_what_to_change(tmp_path, trainer):
    path = _candles(tmp_path, 3000)
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        path,
        "--output",
        tmp_path / "out",
        "--set",
        "data.loader=ohlcv",
        "--set",
        "labels.future_window=5",
    )
    assert result.exit_code == 2  # a data error
    assert (
        "no row has the 43,199 candles of history its features read in full (3,000 candles)" in result.output
    )
    assert "features.params" in result.output and "features.partial_history: true" in result.output
    assert not (tmp_path / "out" / "ETHUSDT" / "_SUCCESS.json").exists()
    with pytest.raises(DataError, match="no row has the 43,199 candles"):
        pair_data_from_candles(read_candles(path, "ETHUSDT"), default_manifest().resolve("ETHUSDT"))


def test_a_split_left_short_by_the_history_rule_says_so(tmp_path, trainer):
    """Enough rows for features, too few for the split once the history rows are left out."""
    path = _candles(tmp_path, 175)
    result = trainer(
        "run",
        "--pair",
        "ETHUSDT",
        "--data",
        path,
        "--output",
        tmp_path / "out",
        "--epochs",
        "1",
        "--set",
        "data.loader=ohlcv",
        "--set",
        "labels.future_window=5",
        "--set",
        "features.ma_short=10",
        "--set",
        "features.ma_long=150",
        "--set",
        "train.sequence_length=30",
    )
    assert result.exit_code == 2
    assert "rows were left out because their features read less than the 149 candles" in result.output
    assert "features.partial_history: true" in result.output


def test_validate_and_config_test_print_required_history(trainer):
    for name, need in (("demo", 30 + 4319), ("laptop", 60 + 4319)):
        result = trainer("validate", REPO / "manifests" / f"{name}.yaml")
        assert result.exit_code == 0, result.output
        assert f"required_history={need}" in result.output
        assert f"required_history {need:,} candles (a live feed serves up to 4,999)" in result.output
    result = trainer("validate", REPO / "manifests" / "demo.yaml", "--set", "features.ma_long=43200")
    assert result.exit_code == 0
    assert "required_history 43,229 candles: more than the 4,999 a live feed serves" in result.output
    result = trainer("run", "--pair", "ETHUSDT", "--config-test")
    assert "# required_history 43,319 candles: more than the 4,999 a live feed serves" in result.output
    assert "partial_history: false" in result.output


def test_partial_history_takes_a_boolean_only(trainer):
    result = trainer("validate", REPO / "manifests" / "demo.yaml", "--set", "features.partial_history=maybe")
    assert result.exit_code == 2 and "features.partial_history" in result.output
