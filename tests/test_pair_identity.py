"""Pair identity: spot and futures of one symbol, and models of one symbol with other feature sets,
get their own folder and tag; freqtrade's pair names are read; old folders and names are kept."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import yaml

import trainer_core
from trainer_core.errors import ConfigError
from trainer_core.manifest import manifest_from_dict, normalize_pair, pair_market
from trainer_core.testing import TINY_SETTINGS, registered_plugin, reseal, resolved, tiny_args


def test_freqtrade_pair_names_are_normalised():
    assert normalize_pair("BTC/USDT") == "BTCUSDT" and pair_market("BTC/USDT") is None
    assert normalize_pair("BTC/USDT:USDT") == "BTCUSDT" and pair_market("BTC/USDT:USDT") == "futures"
    assert normalize_pair(" eth/usdt:usdt ") == "ETHUSDT"
    for bad in ("BTC/USDT:", "BTC/USDT:U$DT", "BTC/USDT:USDT:USDT", ":USDT"):
        with pytest.raises(ConfigError, match="is not a valid pair name"):
            normalize_pair(bad)


def specs(pairs, plugins=None, **defaults):
    manifest = manifest_from_dict({"version": 1, "defaults": defaults, "pairs": pairs})
    return {spec.name: resolved(spec, plugins) for spec in manifest.resolve_all()}, manifest


class RsiPlugin:
    """Registers a feature set named ``rsi``: one column after a 14-candle warm-up (never computed here)."""

    @trainer_core.hookimpl
    def trainer_register_feature_sets(self, register):
        register("rsi", lambda: SimpleNamespace(columns=lambda params: ["rsi"], warmup=lambda params: 14))


def test_spot_futures_and_ids_of_one_symbol_get_their_own_folder_and_tag():
    got, manifest = specs(
        [
            "BTC/USDT",
            "BTC/USDT:USDT",
            {"pair": "BTCUSDT", "market": "futures", "id": "btc-perp-fw5", "labels": {"future_window": 5}},
            {"pair": "ETHUSDT", "market": "futures", "data": {"loader": "ohlcv"}},
        ]
    )
    assert manifest.pair_names == ["BTCUSDT", "BTCUSDT-futures", "btc-perp-fw5", "ETHUSDT-futures"]
    assert {name: spec.tag for name, spec in got.items()} == {
        "BTCUSDT": "BTCUSDT_FW120_SL050_TP100",  # a spot pair with the seed's features: as it always was
        "BTCUSDT-futures": "BTCUSDT-futures_FW120_SL050_TP100",
        "btc-perp-fw5": "btc-perp-fw5_FW005_SL050_TP100",
        "ETHUSDT-futures": "ETHUSDT-futures_FW120_SL050_TP100",
    }
    assert {spec.pair for spec in got.values()} == {"BTCUSDT", "ETHUSDT"}  # the symbol the loaders read
    assert got["ETHUSDT-futures"].data.params["market"] == "futures-um"  # the ohlcv loader reads futures
    # an old manifest's pair keeps its settings' hash, so its completed run is still skipped
    old, _ = specs(["BTCUSDT"])
    assert old["BTCUSDT"].config_hash == got["BTCUSDT"].config_hash
    assert got["BTCUSDT-futures"].config_hash != got["BTCUSDT"].config_hash
    # `trainer run --pair` and `--only` name an entry by its folder name or by its pair
    assert manifest.resolve("BTCUSDT-futures").market == "futures"
    with pytest.raises(
        ConfigError, match="BTC/USDT:USDT is listed 2 times in the manifest, as BTCUSDT-futures, btc-perp"
    ):
        manifest.resolve("BTC/USDT:USDT")
    assert (
        manifest.resolve("BTCUSDT").name == "BTCUSDT"
        and manifest.resolve("btc-perp-fw5").id == "btc-perp-fw5"
    )
    assert manifest.resolve("ETH/USDT").name == "ETHUSDT-futures"  # its one entry
    assert manifest_from_dict({"version": 1}).resolve("BTC/USDT:USDT").name == "BTCUSDT-futures"


def test_an_rsi_model_and_a_seed_model_of_one_symbol_do_not_share_a_tag():
    with registered_plugin(RsiPlugin(), name="rsi-features") as plugins:
        got, _ = specs(
            ["FILUSDT", {"pair": "FILUSDT", "features": {"set": "rsi"}}],
            plugins,
            labels={"future_window": 60},
        )
    assert got["FILUSDT"].tag == "FILUSDT_FW060_SL050_TP100"
    assert got["FILUSDT-rsi"].tag.startswith("FILUSDT-rsi_FW060_")
    context = manifest_from_dict(
        {"version": 1, "pairs": [{"pair": "ETHUSDT", "features": {"set": "seed+context"}}]}
    )
    assert context.pair_names == ["ETHUSDT-seed-context"]


@pytest.mark.parametrize(
    "pairs, message",
    [
        (["BTCUSDT", "btc/usdt"], "pairs[1]: BTCUSDT is listed twice (also pairs[0])"),
        (["BTC/USDT:USDT", {"pair": "BTCUSDT", "market": "futures"}], "BTCUSDT-futures is listed twice"),
        ([{"pair": "ETHUSDT", "id": "x1"}, {"pair": "BTCUSDT", "id": "x1"}], "x1 is listed twice"),
        ([{"pair": "BTC/USDT:USDT", "market": "spot"}], "is a futures name, but market is spot"),
        ([{"pair": "BTCUSDT", "market": "perp"}], "pairs[0].market: expected spot or futures, got 'perp'"),
        ([{"pair": "BTCUSDT", "id": "../up"}], "pairs[0].id: expected a plain name"),
        (
            [
                {
                    "pair": "BTCUSDT",
                    "market": "futures",
                    "data": {"loader": "ohlcv", "params": {"market": "spot"}},
                }
            ],
            "market futures, but data.params.market spot",
        ),
    ],
)
def test_identity_problems_are_one_line_each(pairs, message):
    with pytest.raises(ConfigError) as caught:
        manifest_from_dict({"version": 1, "pairs": pairs})
    assert message in caught.value.message


# -- spot and futures of one symbol in one manifest, one batch and one output --------------------


def candles(rows: int, seed: int, day: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, rows)))
    open_ = np.r_[close[0], close[:-1]]
    start = pl.datetime(2024, 1, day, time_zone="UTC")
    return pl.DataFrame(
        {
            "timestamp": pl.datetime_range(start, start + pl.duration(minutes=rows - 1), "1m", eager=True),
            "open": open_,
            "high": np.maximum(open_, close) * 1.0005,
            "low": np.minimum(open_, close) * 0.9995,
            "close": close,
            "volume": rng.uniform(10, 20, rows),
        }
    )


@pytest.mark.slow
def test_spot_and_futures_of_one_symbol_train_side_by_side_in_one_batch(tmp_path, trainer):
    import subprocess

    data = tmp_path / "data"  # freqtrade's layout: spot beside, futures in futures/
    (data / "futures").mkdir(parents=True)
    spot, futures = candles(1500, 1, 1), candles(1500, 2, 2)
    spot.write_parquet(data / "BTC_USDT-1m.parquet")
    futures.write_parquet(data / "futures" / "BTC_USDT_USDT-1m-futures.parquet")
    settings = {}
    for item in (*TINY_SETTINGS, "train.epochs=1"):
        key, value = item.split("=", 1)
        section, _, name = key.partition(".")
        node = settings.setdefault(section, {})
        for part in name.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[name.split(".")[-1]] = yaml.safe_load(value)
    settings["data"] = {"loader": "ohlcv", "path": str(data)}
    settings["features"] = {"ma_short": 30, "ma_long": 120}
    manifest = tmp_path / "m.yaml"
    out = tmp_path / "out"
    manifest.write_text(
        yaml.safe_dump(
            {"version": 1, "output": str(out), "defaults": settings, "pairs": ["BTC/USDT", "BTC/USDT:USDT"]}
        )
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trainer_core.cli", "batch", str(manifest)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and p.name[0] not in "._") == [
        "BTCUSDT",
        "BTCUSDT-futures",
    ]
    assert (out / "BTCUSDT" / "model_BTCUSDT_FW005_SL050_TP100.keras").exists()
    assert (out / "BTCUSDT-futures" / "model_BTCUSDT-futures_FW005_SL050_TP100.keras").exists()
    rows = {row["pair"]: row for row in json.loads((out / "summary.json").read_text())["pairs"]}
    assert set(rows) == {"BTCUSDT", "BTCUSDT-futures"}
    assert all(row["status"] == "trained" for row in rows.values())
    spec = json.loads((out / "BTCUSDT-futures" / "spec_BTCUSDT-futures_FW005_SL050_TP100.json").read_text())
    assert (spec["pair"], spec["name"], spec["market"]) == ("BTCUSDT", "BTCUSDT-futures", "futures")

    result = trainer("verify", out)
    assert result.exit_code == 0 and "2 of 2 pair(s) complete and intact." in result.output
    result = trainer("batch", manifest, "--dry-run")
    assert result.output.count("would skip") == 2, result.output
    (out / "summary.json").unlink()
    result = trainer("batch", manifest, "--summary-only")  # after an Indexed Job: one row per folder
    rows = {row["pair"]: row for row in json.loads((out / "summary.json").read_text())["pairs"]}
    assert {name: row["status"] for name, row in rows.items()} == {
        "BTCUSDT": "skipped",
        "BTCUSDT-futures": "skipped",
    }, result.output
    # each model predicts on its own market's candles from the one folder
    for folder, frame in (("BTCUSDT", spot), ("BTCUSDT-futures", futures)):
        path = tmp_path / f"{folder}.parquet"
        result = trainer("predict", "--model-dir", out / folder, "--data", data, "--output", path)
        assert result.exit_code == 0, result.output
        predictions = pl.read_parquet(path)
        assert predictions["timestamp"][-1] == frame["timestamp"][-1]


@pytest.mark.slow
def test_a_folder_trained_before_names_were_recorded_still_predicts_and_verifies(tmp_path, trainer):
    from trainer_core.testing import write_training_ready

    write_training_ready(tmp_path / "inputs", "ETHUSDT", rows=700, seed=11)
    out = tmp_path / "out"
    result = trainer("run", "--pair", "ETHUSDT", "--data", tmp_path / "inputs", "--output", out, *tiny_args())
    assert result.exit_code == 0, result.output
    folder = out / "ETHUSDT"
    tag = "ETHUSDT_FW005_SL050_TP100"
    spec_path = folder / f"spec_{tag}.json"
    spec = json.loads(spec_path.read_text())
    assert spec["name"] == "ETHUSDT" and spec["market"] is None
    del spec["name"], spec["market"]  # the spec file as older trainers wrote it
    spec_path.write_text(json.dumps(spec))
    reseal(folder)
    assert trainer("verify", out).exit_code == 0
    ready = next(Path(tmp_path / "inputs").iterdir())
    result = trainer("predict", "--model-dir", folder, "--data", ready)
    assert result.exit_code == 0 and "693 predictions" in result.output


def test_a_futures_entry_reads_the_futures_candles_whatever_its_loader(tmp_path, trainer):
    data = tmp_path / "data"
    (data / "futures").mkdir(parents=True)
    candles(300, 1, 1).write_parquet(data / "BTC_USDT-1m.parquet")
    futures = candles(300, 2, 2)
    futures.write_parquet(data / "futures" / "BTC_USDT_USDT-1m-futures.parquet")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(  # the training-ready loader takes no market: the entry's market still picks the candles
        "version: 1\ndefaults: {labels: {future_window: 5}, features: {ma_short: 3, ma_long: 6}}\n"
        "pairs: [BTC/USDT:USDT]\n"
    )
    out = tmp_path / "inputs"
    result = trainer(
        "prepare", "--manifest", manifest, "--pair", "BTC/USDT:USDT", "--data", data, "--output", out
    )
    assert result.exit_code == 0, result.output
    (written,) = out.iterdir()
    table = pl.read_ipc(written)
    assert (
        str(table["timestamp"][-1])[:16] == "2024-01-02 04:59"
    )  # the futures file's last candle (spot: 01-01)
