"""Candles -> features and labels: agreement with a plain per-row implementation on real candles,
the pinned rules, every candle format, and bad candles as a user meets them."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import polars as pl
import pytest

from trainer_core.candles import read_candles
from trainer_core.errors import DataError
from trainer_core.manifest import default_manifest
from trainer_core.testing import tiny_args
from trainer_plugins.features.seed import compute_features
from trainer_plugins.labelers.tp_sl import LabelParams, compute_labels

needs_real_data = pytest.mark.real_candles


# -- a plain per-row implementation of docs/design.md section 3, the reference -------------------


def reference_features(c, h, l, v, ma_short, ma_long):
    rows = []
    for t in range(1, len(c)):
        pc, pv = c[t - 1], v[t - 1]
        if pv > 0:
            vch = (v[t] - pv) / pv * 100
        else:
            vch = 100.0 if v[t] > 0 else 0.0
        row = [(h[t] - pc) / pc * 100, (l[t] - pc) / pc * 100, (c[t] - pc) / pc * 100, vch]
        for series, length in ((c, ma_short), (c, ma_long)):
            window = series[max(0, t - length + 1) : t + 1]
            row.append(series[t] / (sum(window) / len(window)))
        for length in (ma_short, ma_long):
            window = v[max(0, t - length + 1) : t + 1]
            mean = sum(window) / len(window)
            row.append(v[t] / mean if mean > 0 else 1.0)
        rows.append(row)
    return np.array(rows)


def reference_labels(c, h, l, p):
    n, fw = len(c), p.future_window
    labels, long_r, short_r = [], [], []
    for t in range(n):
        if t + fw >= n:
            labels.append(-1)
            long_r.append(np.nan)
            short_r.append(np.nan)
            continue
        e = c[t]
        hits = {"lt": None, "ls": None, "st": None, "ss": None}
        for k in range(1, fw + 1):
            j = t + k
            for key, touched in (
                ("lt", h[j] >= e * (1 + p.take_profit_pct / 100)),
                ("ls", l[j] <= e * (1 - p.stop_loss_pct / 100)),
                ("st", l[j] <= e * (1 - p.short_tp / 100)),
                ("ss", h[j] >= e * (1 + p.short_sl / 100)),
            ):
                if hits[key] is None and touched:
                    hits[key] = k
        big = 10**9
        lt, ls, st, ss = (hits[k] or big for k in ("lt", "ls", "st", "ss"))
        long_wins, short_wins = lt < ls, st < ss
        if long_wins and (not short_wins or lt < st):
            labels.append(2)
        elif short_wins and (not long_wins or st < lt):
            labels.append(0)
        else:
            labels.append(1)
        end = c[t + fw] / e - 1
        long_r.append(p.take_profit_pct / 100 if long_wins else (-p.stop_loss_pct / 100 if ls < big else end))
        short_r.append(p.short_tp / 100 if short_wins else (-p.short_sl / 100 if ss < big else -end))
    return np.array(labels), np.array(long_r), np.array(short_r)


@needs_real_data
@pytest.mark.parametrize("pair", ["ETHUSDT", "XRPUSDT"])
@pytest.mark.parametrize(
    "params",
    [LabelParams(120, 1.0, 0.5), LabelParams(30, 0.2, 0.2), LabelParams(60, 0.15, 0.4, 0.3, 0.1)],
    ids=["seed", "tight", "asymmetric"],
)
def test_vectorised_matches_per_row_reference_on_real_candles(pair, params, shared_data):
    frame = pl.read_parquet(shared_data / f"{pair}-1m.parquet").slice(20_000, 2_500)
    c, h, l, v = (frame[k].to_numpy() for k in ("close", "high", "low", "volume"))
    labels, long_r, short_r = compute_labels(c, h, l, params)
    ref_labels, ref_long, ref_short = reference_labels(c, h, l, params)
    assert np.array_equal(labels, ref_labels)
    assert len(set(labels[labels >= 0])) == 3  # every class occurs: the comparison means something
    np.testing.assert_allclose(long_r, ref_long, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(short_r, ref_short, rtol=1e-12, equal_nan=True)


@needs_real_data
def test_features_match_reference_to_float32_precision(shared_data):
    frame = pl.read_parquet(shared_data / "BTCUSDT-1m.parquet").head(3000)
    c, h, l, v = (frame[k].to_numpy() for k in ("close", "high", "low", "volume"))
    # short moving averages so both the expanding start and the full window are exercised
    feats = compute_features(c, h, l, v, ma_short=60, ma_long=1440)
    ref = reference_features(c, h, l, v, 60, 1440)
    assert feats.dtype == np.float32 and feats.shape == (2999, 8)
    np.testing.assert_allclose(feats, ref.astype(np.float32), rtol=2e-6, atol=1e-6)


def _candles(highs, lows, closes, opens=None):
    closes = np.asarray(closes, float)
    opens = closes if opens is None else np.asarray(opens, float)
    return closes, np.asarray(highs, float), np.asarray(lows, float)


def test_same_candle_touching_both_barriers_counts_as_the_stop():
    # entry 100; candle 1 spans 98..102: long TP (+1 %) and long stop (-0.5 %) both touched
    c, h, l = _candles([100, 102, 100, 100], [100, 98, 100, 100], [100, 100, 100, 100])
    labels, long_r, short_r = compute_labels(c, h, l, LabelParams(2, 1.0, 0.5))
    assert labels[0] == 1  # neither side takes profit first: the stop counts on both sides
    assert long_r[0] == pytest.approx(-0.005) and short_r[0] == pytest.approx(-0.005)


def test_first_barrier_wins_and_tp_below_sl_same_candle_is_hold():
    c, h, l = _candles([100, 100.2, 101.5, 100], [100, 99.9, 100, 100], [100, 100, 100, 100])
    labels, long_r, _ = compute_labels(c, h, l, LabelParams(3, 1.0, 0.5))
    assert labels[0] == 2 and long_r[0] == pytest.approx(0.01)
    # TP 0.1 % < SL 1 %: both sides take profit on the same candle -> HOLD
    c, h, l = _candles([100, 100.2, 100], [100, 99.8, 100], [100, 100, 100])
    labels, _, _ = compute_labels(c, h, l, LabelParams(1, 0.1, 1.0))
    assert labels[0] == 1
    # ... and on different candles the earlier wins
    c, h, l = _candles([100, 100.05, 100.2], [100, 99.8, 100], [100, 100, 100])
    labels, _, _ = compute_labels(c, h, l, LabelParams(2, 0.1, 1.0))
    assert labels[0] == 0


def test_last_rows_have_no_label_and_no_return():
    c = np.linspace(100, 110, 50)
    labels, long_r, short_r = compute_labels(c, c * 1.001, c * 0.999, LabelParams(10, 1.0, 0.5))
    assert (labels[-10:] == -1).all() and np.isnan(long_r[-10:]).all() and np.isnan(short_r[-10:]).all()
    assert (labels[:-10] >= 0).all() and np.isfinite(long_r[:-10]).all()
    end_move = c[10] / c[0] - 1  # no barrier touched in a slow trend: the return at the window's end
    labels, long_r, short_r = compute_labels(c, c, c, LabelParams(10, 50.0, 50.0))
    assert long_r[0] == pytest.approx(end_move) and short_r[0] == pytest.approx(-end_move)


def test_zero_previous_volume_gives_no_inf():
    c = np.array([100.0, 100, 100, 100, 100])
    v = np.array([0.0, 0.0, 5.0, 0.0, 10.0])
    f = compute_features(c, c, c, v, ma_short=2, ma_long=3)
    assert np.isfinite(f).all()
    assert f[:, 3].tolist() == [0.0, 100.0, -100.0, 100.0]
    assert f[0, 6] == 1.0 and f[0, 7] == 1.0  # a volume average of zero: the ratio is 1


# -- formats ------------------------------------------------------------------------------------


def _binance_rows(n=50, start_ms=1_704_067_200_000, unit=1):
    rows = []
    for i in range(n):
        t = (start_ms + i * 60_000) * unit
        o = 100 + i * 0.1
        rows.append([t, o, o + 0.5, o - 0.5, o + 0.05, 10.0 + i, t + 59_999, 1000.0, 12, 5.0, 500.0, 0])
    return rows


def _csv(rows, header):
    head = (
        ",".join(
            [
                "open_time",
                "open",
                "high",
                "low",
                "close",
                "volume",
                "close_time",
                "quote_volume",
                "count",
                "taker_buy_volume",
                "taker_buy_quote_volume",
                "ignore",
            ]
        )
        + "\n"
    )
    body = "".join(",".join(str(x) for x in r) + "\n" for r in rows)
    return (head if header else "") + body


def test_every_candle_format_reads_the_same_series(tmp_path):
    rows = _binance_rows()
    expected_ms = np.array([r[0] for r in rows])
    (tmp_path / "a").mkdir()
    files = {
        "header.csv": _csv(rows, True),
        "noheader.csv": _csv(rows, False),
        "micro.csv": _csv(_binance_rows(unit=1000), False),
    }
    paths = []
    for name, text in files.items():
        p = tmp_path / "a" / f"ETHUSDT-1m-{name}"
        p.write_text(text)
        paths.append(p)
    zpath = tmp_path / "ETHUSDT-1m-2024-01.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ETHUSDT-1m-2024-01.csv", _csv(rows, False))
    paths.append(zpath)
    frame = pl.DataFrame(
        {
            "date": pl.Series(expected_ms).cast(pl.Datetime("ms")).dt.replace_time_zone("UTC"),
            **{
                k: [r[i] for r in rows]
                for i, k in enumerate(("open", "high", "low", "close", "volume"), start=1)
            },
        }
    )
    frame.write_ipc(tmp_path / "ETH_USDT-1m-futures.feather")
    paths.append(tmp_path / "ETH_USDT-1m-futures.feather")
    frame.rename({"date": "timestamp"}).write_parquet(tmp_path / "ETHUSDT-1m.parquet")
    paths.append(tmp_path / "ETHUSDT-1m.parquet")
    (tmp_path / "ETH_USDT-1m.json").write_text(json.dumps([r[:6] for r in rows]))
    paths.append(tmp_path / "ETH_USDT-1m.json")
    for path in paths:
        c = read_candles(path, "ETHUSDT")
        assert np.array_equal(c.time_ms, expected_ms), path.name
        np.testing.assert_allclose(c.close, [r[4] for r in rows])
        np.testing.assert_allclose(c.volume, [r[5] for r in rows])


def test_a_folder_of_monthly_files_is_one_series(tmp_path):
    rows = _binance_rows(120)
    for month, part in (("2024-02", rows[60:]), ("2024-01", rows[:60])):
        with zipfile.ZipFile(tmp_path / f"ETHUSDT-1m-{month}.zip", "w") as zf:
            zf.writestr(f"ETHUSDT-1m-{month}.csv", _csv(part, True))
    with zipfile.ZipFile(tmp_path / "BTCUSDT-1m-2024-01.zip", "w") as zf:
        zf.writestr("BTCUSDT-1m-2024-01.csv", _csv(_binance_rows(5), True))
    c = read_candles(tmp_path, "ETHUSDT")
    assert len(c) == 120 and np.all(np.diff(c.time_ms) == 60_000)
    assert len(c.sources) == 2


# -- bad candles ---------------------------------------------------------------------------------


def _write_parquet(tmp_path, rows, name="ETHUSDT-1m.parquet"):
    frame = pl.DataFrame(
        {
            k: [r[i] for r in rows]
            for i, k in enumerate(("timestamp", "open", "high", "low", "close", "volume"))
        }
    )
    path = tmp_path / name
    frame.write_parquet(path)
    return path


def _prepare(trainer, tmp_path, data, *extra):
    return trainer("prepare", "--pair", "ETHUSDT", "--data", data, "--output", tmp_path / "prepared", *extra)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.__setitem__(slice(10, 12), [r[11], r[10]]), "1 candles out of time order"),
        (lambda r: r.__setitem__(11, [r[10][0], *r[11][1:]]), "duplicated candle times"),
        (lambda r: r[20].__setitem__(3, -1.0), "low price <= 0"),
        (lambda r: r[20].__setitem__(2, r[20][4] - 1), "high below open or close"),
        (lambda r: r[20].__setitem__(5, -3.0), "negative volume"),
        (lambda r: r.__delitem__(slice(30, 33)), "1 gap(s) in the candles, 3 missing candle(s)"),
    ],
    ids=["unsorted", "duplicated", "negative-price", "high-below-close", "negative-volume", "gap"],
)
def test_bad_candles_get_a_clear_message(trainer, tmp_path, mutate, message):
    rows = [[r[0], *r[1:6]] for r in _binance_rows(60)]
    mutate(rows)
    result = _prepare(trainer, tmp_path, _write_parquet(tmp_path, rows))
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "prepared").exists() or not list((tmp_path / "prepared").iterdir())


def test_unreadable_candle_files(trainer, tmp_path):
    empty = tmp_path / "ETHUSDT-1m.csv"
    empty.write_text("")
    result = _prepare(trainer, tmp_path, empty)
    assert result.exit_code == 2 and "the file is empty" in result.output
    odd = tmp_path / "ETHUSDT-odd.csv"
    odd.write_text("1,2,3\n4,5,6\n")
    result = _prepare(trainer, tmp_path, odd)
    assert result.exit_code == 2 and "3 columns is not a known candle layout" in result.output
    assert "Binance kline CSV" in result.output
    two = tmp_path / "ETHUSDT-two.zip"
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", _csv(_binance_rows(5), True))
        zf.writestr("b.csv", _csv(_binance_rows(5), True))
    result = _prepare(trainer, tmp_path, two)
    assert result.exit_code == 2 and "holds 2 files (a.csv, b.csv)" in result.output


def test_gap_policies(tmp_path):
    rows = [[r[0], *r[1:6]] for r in _binance_rows(200)]
    del rows[100:104]  # 4 missing minutes
    path = _write_parquet(tmp_path, rows)
    from trainer_core.features import pair_data_from_candles

    # the seed's expanding means: rows count from each run's second candle
    base = [
        "labels.future_window=5",
        "features.ma_short=10",
        "features.ma_long=30",
        "features.partial_history=true",
    ]
    candles = read_candles(path, "ETHUSDT")
    with pytest.raises(DataError, match="1 gap.s. in the candles, 4 missing") as err:
        pair_data_from_candles(candles, default_manifest().resolve("ETHUSDT", sets=base))
    assert "Set data.gaps to fill" in err.value.hint

    filled = pair_data_from_candles(
        candles, default_manifest().resolve("ETHUSDT", sets=[*base, "data.gaps=fill"])
    )
    assert len(filled) == 199 and filled.extra["filled_candles"] == 4
    assert np.all(np.diff(filled.timestamps.astype(np.int64)) == 60_000)
    filled_rows = slice(99, 103)  # feature rows start at candle 1
    assert (filled.labels[filled_rows] == -1).all()  # flagged: history, never a target
    assert (filled.features[filled_rows, 2] == 0).all()  # flat candles: no close change

    split = pair_data_from_candles(
        candles, default_manifest().resolve("ETHUSDT", sets=[*base, "data.gaps=split"])
    )
    assert split.extra["segments"] == 2 and split.breaks.tolist() == [99]
    # no label horizon crosses the gap: the 5 rows before it have no label
    assert (split.labels[94:99] == -1).all() and split.labels[93] >= 0
    assert len(split) == 196 - 2  # each segment loses its first candle (no previous close)


# -- prepare, run, and the ohlcv loader on real candles -----------------------------------------


@pytest.mark.slow
@needs_real_data
def test_prepare_then_run_equals_ohlcv_loader(trainer, tmp_path, shared_data):
    import json as _json

    frame = pl.read_parquet(shared_data / "SOLUSDT-1m.parquet").slice(0, 4000)
    candles = tmp_path / "SOLUSDT-1m.parquet"
    frame.write_parquet(candles)
    common = [
        "--set",
        "labels.future_window=30",
        "--set",
        "labels.take_profit_pct=0.3",
        "--set",
        "labels.stop_loss_pct=0.3",
        "--set",
        "features.partial_history=true",  # 4,000 candles and the seed's 30-day means: expanding
    ]
    result = trainer(
        "prepare", "--pair", "SOLUSDT", "--data", candles, "--output", tmp_path / "inputs", *common
    )
    assert result.exit_code == 0, result.output
    assert "4,000 candles -> 3,999 rows" in result.output
    prepared = tmp_path / "inputs" / "SOLUSDT_TF-1m__FW-030__SL-030__TP-030__training_ready.feather"
    assert prepared.exists()
    out = tmp_path / "out"
    tiny = tiny_args()  # later --set values win, so `common` overrides its future_window
    a = trainer(
        "run", "--pair", "SOLUSDT", "--data", tmp_path / "inputs", "--output", out / "a", *tiny, *common
    )
    b = trainer(
        "run",
        "--pair",
        "SOLUSDT",
        "--data",
        candles,
        "--output",
        out / "b",
        "--set",
        "data.loader=ohlcv",
        *tiny,
        *common,
    )
    assert a.exit_code == 0, a.output
    assert b.exit_code == 0, b.output
    tag = "SOLUSDT_FW030_SL030_TP030"
    meta_a = _json.loads((out / "a" / "SOLUSDT" / f"metadata_{tag}.json").read_text())
    meta_b = _json.loads((out / "b" / "SOLUSDT" / f"metadata_{tag}.json").read_text())
    assert meta_a["data"]["features_sha256"] == meta_b["data"]["features_sha256"]
    assert meta_a["data"]["class_counts"] == meta_b["data"]["class_counts"]
    assert meta_a["split"] == meta_b["split"]
    assert meta_b["data"]["loader"] == "ohlcv" and meta_b["data"]["source"].endswith("SOLUSDT-1m.parquet")


def test_synthetic_market_is_reproducible_per_pair():
    from trainer_plugins.loaders.synthetic import SyntheticLoader, simulate

    a = simulate("BTCUSDT", 5000)
    again = simulate("BTCUSDT", 5000)
    other = simulate("ETHUSDT", 5000)
    assert all(np.array_equal(x, y) for x, y in zip(a, again))
    assert not np.array_equal(a[4], other[4])
    t, o, h, l, c, v = a
    assert (h >= np.maximum(o, c)).all() and (l <= np.minimum(o, c)).all() and (v > 0).all()
    r = np.diff(np.log(c))
    # volatility clusters: absolute returns are autocorrelated, raw returns hardly
    absr = np.abs(r) - np.abs(r).mean()
    assert np.corrcoef(absr[:-1], absr[1:])[0, 1] > 0.05
    spec = default_manifest().resolve(
        "BTCUSDT",
        sets=[
            "data.loader=synthetic",
            "data.params.rows=3000",
            "labels.future_window=30",
            "labels.take_profit_pct=0.3",
            "labels.stop_loss_pct=0.3",
            "features.partial_history=true",  # the seed's expanding means: every row from the second
        ],
    )
    from trainer_core.pipeline import load_pair_data
    from trainer_core.plugins import load_plugins

    plugins = load_plugins(entry_points=False)
    data, candles = load_pair_data(spec, plugins)
    assert len(candles) == 3000 and candles.sha256 == SyntheticLoader().load(spec).sha256
    assert len(data) == 2999 and data.features.dtype == np.float32
    assert set(np.unique(data.labels)) == {-1, 0, 1, 2}
    assert data.sha256 == load_pair_data(spec, plugins)[0].sha256
