"""`trainer freqtrade export` proved inside freqtrade: a tiny model trained once on real ETHUSDT
candles, exported into a freqtrade user_data folder built from the same candles, then freqtrade's
own backtesting, lookahead-analysis and recursive-analysis, and a dry-run start.

No test reaches an exchange: freqtrade runs through tests/freqtrade_offline.py, which gives it
static markets. The candles open at the previous close (high and low widened to hold it), so that
freqtrade's fill at the next candle's open is the labeler's entry at the signal candle's close.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest

pytest.importorskip("freqtrade", reason="freqtrade is in the test extra (pair-trainer[freqtrade])")

pytestmark = [pytest.mark.slow, pytest.mark.real_candles]

REPO = Path(__file__).resolve().parents[1]
OFFLINE = REPO / "tests" / "freqtrade_offline.py"
FW, TP, SL = 30, 0.3, 0.3
MA_LONG, WINDOW = 2600, 16  # required_history 2,615: spot serves it (4,999), futures not (2,494)
TRAIN_END = "2025-05-21"  # training on the days up to here; freqtrade trades the two days after
TIMERANGE = "20250522-20250524"
PAIR, FT_PAIR = "ETHUSDT", "ETH/USDT"
COLUMNS = ["p_short", "p_hold", "p_long"]
TICK = 0.01  # the static market's price precision, as Binance's ETH/USDT


def _trainer(trainer, *args) -> tuple[int, str]:
    """`trainer ARGS` through the in-process ``trainer`` fixture: the exit code and the output."""
    result = trainer(*args)
    return result.exit_code, result.output


def _freqtrade(*args, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "FT_STATIC_PAIRS": FT_PAIR, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, str(OFFLINE), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def bot(tmp_path_factory, shared_data, trainer):
    candles = shared_data / f"{PAIR}-1m.parquet"
    if not candles.exists():
        pytest.skip(f"no real candles at {candles}")
    root = tmp_path_factory.mktemp("freqtrade")
    frame = pl.read_parquet(candles).slice(20_000, 6 * 1440)
    close = frame["close"].to_numpy()
    open_ = np.r_[frame["open"][0], close[:-1]]
    frame = frame.with_columns(
        pl.Series("open", open_),
        pl.Series("high", np.maximum(frame["high"].to_numpy(), open_)),
        pl.Series("low", np.minimum(frame["low"].to_numpy(), open_)),
    )
    frame.write_parquet(root / f"{PAIR}-1m.parquet")
    userdir = root / "user_data"
    (userdir / "data" / "binance").mkdir(parents=True)
    feather = userdir / "data" / "binance" / "ETH_USDT-1m.feather"
    frame.rename({"timestamp": "date"}).to_pandas().to_feather(feather)
    code, out = _trainer(
        trainer,
        "run",
        "--pair",
        PAIR,
        "--data",
        root / f"{PAIR}-1m.parquet",
        "--output",
        root / "artifacts",
        "--epochs",
        "1",
        *("--set", "data.loader=ohlcv", "--set", f"data.end={TRAIN_END}"),
        *("--set", f"labels.future_window={FW}", "--set", f"labels.take_profit_pct={TP}"),
        *("--set", f"labels.stop_loss_pct={SL}", "--set", "features.ma_short=60"),
        *("--set", f"features.ma_long={MA_LONG}", "--set", f"train.sequence_length={WINDOW}"),
        *("--set", "model.params={lstm_units: [8], dense_units: [4], dropout: 0.0}"),
    )
    assert code == 0, out
    config = {
        "max_open_trades": 1,
        "stake_currency": "USDT",
        "stake_amount": 100,
        "dry_run": True,
        "dry_run_wallet": 10000,
        "trading_mode": "spot",
        "margin_mode": "",
        "timeframe": "1m",
        "db_url": "sqlite://",
        "user_data_dir": str(userdir),
        "exchange": {
            "name": "binance",
            "key": "",
            "secret": "",
            "pair_whitelist": [FT_PAIR],
            "enable_ws": False,
        },
        "entry_pricing": {"price_side": "same", "use_order_book": False},
        "exit_pricing": {"price_side": "same", "use_order_book": False},
        "pairlists": [{"method": "StaticPairList"}],
        "dataformat_ohlcv": "feather",
        "internals": {"process_throttle_secs": 5},
    }
    (root / "config.json").write_text(json.dumps(config))
    model_dir = root / "artifacts" / PAIR
    rule = ("--signal-rule", "arg-max")
    code, out = _trainer(
        trainer, "freqtrade", "export", "--model-dir", model_dir, "--userdir", userdir, *rule
    )
    assert code == 0, out
    return {"root": root, "userdir": userdir, "model_dir": model_dir, "feather": feather, "export": out}


def _strategy(bot, runmode: str = "backtest"):
    """The exported strategy as freqtrade loads it, with its bot_start run."""
    from freqtrade.configuration import Configuration
    from freqtrade.enums import RunMode
    from freqtrade.resolvers import StrategyResolver

    config = Configuration.from_files([str(bot["root"] / "config.json")])
    config.update(
        {"strategy": "PairTrainerStrategy", "user_data_dir": bot["userdir"], "runmode": RunMode(runmode)}
    )
    config["strategy_path"] = str(bot["userdir"] / "strategies")
    strategy = StrategyResolver.load_strategy(config)
    strategy.ft_bot_start()
    return strategy


def _candles_frame(bot):
    from freqtrade.data.history import load_pair_history

    return load_pair_history(
        pair=FT_PAIR, timeframe="1m", datadir=bot["userdir"] / "data" / "binance", data_format="feather"
    )


def test_export_pins_the_model_folder_and_sizes_the_startup(bot):
    from trainer_core import load_pair_model

    model = load_pair_model(bot["model_dir"])
    assert model.required_history == WINDOW + MA_LONG - 1 == 2615
    folder = bot["userdir"] / "strategies"
    pins = json.loads((folder / "pair_trainer_models.json").read_text())
    pin = pins["models"][FT_PAIR]
    assert pin["model_dir"] == str(bot["model_dir"].resolve()) and pin["tag"] == model.tag
    assert pin["success_sha256"] == _sha(bot["model_dir"] / "_SUCCESS.json")
    keras_file = bot["model_dir"] / f"model_{model.tag}.keras"
    assert pin["artifacts"][keras_file.name] == "sha256:" + _sha(keras_file)  # as _SUCCESS.json writes it
    assert pins["startup_candle_count"] == 2615 and pins["timeframe"] == "1m" and pins["can_short"] is False
    assert pins["exit"] == {
        "take_profit_pct": TP,
        "stop_loss_pct": SL,
        "short_take_profit_pct": TP,
        "short_stop_loss_pct": SL,
        "future_window": FW,
    }
    assert "startup_candle_count 2,615" in bot["export"]
    strategy = _strategy(bot)
    from freqtrade.strategy import IStrategy

    assert isinstance(strategy, IStrategy) and type(strategy).__name__ == "PairTrainerStrategy"
    assert strategy.startup_candle_count == 2615 and strategy.stoploss == -SL / 100
    assert strategy.minimal_roi == {0: TP / 100, FW: -1}
    assert strategy.pair_models[FT_PAIR].tag == model.tag


def test_export_refuses_a_model_needing_more_than_the_exchange_serves(bot, tmp_path, trainer):
    (tmp_path / "user_data").mkdir()
    code, out = _trainer(
        trainer,
        "freqtrade",
        "export",
        "--model-dir",
        bot["model_dir"],
        "--userdir",
        tmp_path / "user_data",
        "--trading-mode",
        "futures",
    )
    assert code == 2
    assert (
        "required_history 2,615 candles is more than the 2,494 futures candles freqtrade gets from Binance"
        in out
    )
    assert not (tmp_path / "user_data" / "strategies" / "PairTrainerStrategy.py").exists()


def test_export_keeps_a_strategy_file_it_did_not_write(bot, tmp_path, trainer):
    (tmp_path / "user_data" / "strategies").mkdir(parents=True)
    mine = tmp_path / "user_data" / "strategies" / "PairTrainerStrategy.py"
    mine.write_text("# my own strategy\n")
    code, out = _trainer(
        trainer, "freqtrade", "export", "--model-dir", bot["model_dir"], "--userdir", tmp_path / "user_data"
    )
    assert code == 2 and "was not written by `trainer freqtrade export`" in out
    assert mine.read_text() == "# my own strategy\n"
    code, out = _trainer(
        trainer,
        "freqtrade",
        "export",
        "--model-dir",
        tmp_path / "nowhere",
        "--userdir",
        tmp_path / "user_data",
    )
    assert code == 2 and "Model folder not found" in out


def test_strategy_predictions_equal_trainer_predict(bot, tmp_path, trainer):
    """Every candle of freqtrade's dataframe: the strategy's p_* and signal are `trainer predict`'s."""
    from trainer_core.inference import signals_from

    strategy = _strategy(bot)
    frame = strategy.advise_indicators(_candles_frame(bot), {"pair": FT_PAIR})
    code, out = _trainer(
        trainer,
        "predict",
        "--model-dir",
        bot["model_dir"],
        "--data",
        bot["feather"],
        "--output",
        tmp_path / "p.parquet",
    )
    assert code == 0, out
    cli = pl.read_parquet(tmp_path / "p.parquet")
    have = frame.dropna(subset=["p_long"])
    # the first prediction is at the 2,615th candle: the full window and the 2,599 candles its features read
    assert len(frame) - len(have) == 2614 and len(have) == cli.height
    assert (
        have["date"].astype("datetime64[ms, UTC]").to_numpy() == cli["timestamp"].to_pandas().to_numpy()
    ).all()
    for column in COLUMNS:
        np.testing.assert_array_equal(have[column].to_numpy(np.float32), cli[column].to_numpy())
    # exported with --signal-rule arg-max: every LONG / SHORT arg-max class signals
    assert (
        have["signal"].to_numpy() == signals_from(cli.select(COLUMNS).to_numpy(), {"rule": "arg-max"})
    ).all()
    assert (have["signal"] == "LONG").sum() > 0
    # exported with the recorded rule: the signal column of `trainer predict`, row for row
    userdir = tmp_path / "user_data"
    userdir.mkdir()
    code, out = _trainer(
        trainer, "freqtrade", "export", "--model-dir", bot["model_dir"], "--userdir", userdir
    )
    assert code == 0, out
    recorded = _strategy({**bot, "userdir": userdir}).advise_indicators(
        _candles_frame(bot), {"pair": FT_PAIR}
    )
    recorded = recorded.dropna(subset=["p_long"])
    assert (recorded["signal"].to_numpy() == cli["signal"].to_numpy()).all()
    assert set(cli["signal"].unique()) <= {"LONG", "SHORT", "none"}


def _strategy_args(bot) -> tuple:
    """The freqtrade options naming the bot's config, user folder and the exported strategy."""
    return (
        "--config",
        bot["root"] / "config.json",
        "--userdir",
        bot["userdir"],
        "--strategy",
        "PairTrainerStrategy",
    )


def _backtest_trades(bot) -> list[dict]:
    results = bot["userdir"] / "backtest_results"
    done = _freqtrade(
        "backtesting",
        *_strategy_args(bot),
        "--timerange",
        TIMERANGE,
        "--fee",
        "0",
        "--export",
        "trades",
        cwd=bot["root"],
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    archive = max(results.glob("backtest-result-*.zip"))
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith(".json") and not n.endswith("_config.json"))
        return json.loads(z.read(name))["strategy"]["PairTrainerStrategy"]["trades"]


def test_backtesting_trades_follow_the_labels_rule_and_the_simulation(bot):
    """freqtrade's trades against the project's trade simulation on the same predictions."""
    from trainer_core import load_pair_model
    from trainer_core.candles import read_candles
    from trainer_core.features import pair_data_from_candles
    from trainer_plugins.reporters.trading.simulation import Barriers, exit_offsets, simulate

    trades = _backtest_trades(bot)
    assert len(trades) > 20
    model = load_pair_model(bot["model_dir"])
    candles = read_candles(bot["root"] / f"{PAIR}-1m.parquet", PAIR)
    data = pair_data_from_candles(candles, model.prediction_spec(bot["root"] / f"{PAIR}-1m.parquet"))
    ts = data.timestamps.astype("datetime64[ms]").astype(np.int64)
    first = int(np.searchsorted(candles.time_ms, ts[0]))
    close, high, low = (a[first:] for a in (candles.close, candles.high, candles.low))
    assert len(close) == len(data)
    preds = model.predict(pl.read_parquet(bot["root"] / f"{PAIR}-1m.parquet"))
    probs = preds.select(COLUMNS).to_numpy()
    pred_ts = preds["timestamp"].dt.epoch("ms").to_numpy()
    start = np.datetime64("2025-05-22", "ms").astype(np.int64)
    end = np.datetime64("2025-05-24", "ms").astype(np.int64)
    keep = (pred_ts >= start) & (pred_ts < end)
    rows, probs = np.searchsorted(ts, pred_ts[keep]), probs[keep]
    barriers = Barriers(FW, TP, SL, TP, SL)
    off_long, off_short, _ = exit_offsets(
        close, high, low, rows, barriers, data.long_return, data.short_return
    )

    # 1. each freqtrade trade is the labeler's trade for its signal candle: entry at the next
    # open (= the signal's close), exit at the barrier candle or, after FW candles, at the next open
    minute = 60_000
    by_row = {int(r): i for i, r in enumerate(rows)}
    checked = tick_exits = stop_before_time_out = 0
    tick_entries: set[str] = set()
    for t in trades:
        if t["exit_reason"] == "force_exit":
            continue  # the backtest's end, not a rule
        opened = int(np.datetime64(t["open_date"].replace("+00:00", ""), "ms").astype(np.int64))
        closed = int(np.datetime64(t["close_date"].replace("+00:00", ""), "ms").astype(np.int64))
        row = int(np.searchsorted(ts, opened - minute))
        assert ts[row] == opened - minute and not t["is_short"]
        i = by_row[row]
        assert probs[i].argmax() == 2, t  # a LONG signal on the candle before
        assert t["open_rate"] == pytest.approx(close[row], rel=1e-12)
        exit_row = row + int(off_long[i])
        timed_out = (
            int(off_long[i]) == FW and abs(data.long_return[row] - (close[exit_row] / close[row] - 1)) < 1e-12
        )
        checked += 1
        if timed_out and t["exit_reason"] == "stop_loss" and closed == ts[exit_row] + minute:
            # the time-out is at the next candle's open, but freqtrade tests that candle's low
            # against the stop first: when it reaches the stop, the trade closes at the stop
            assert low[exit_row + 1] <= close[row] * (1 - SL / 100) + TICK, t
            stop_before_time_out += 1
            tick_entries.add(t["open_date"])
            continue
        if closed != ts[exit_row] + (minute if timed_out else 0):
            # freqtrade rounds the stop and take-profit prices to the exchange's tick (0.01 USDT):
            # a candle whose low (high) is within a tick of the barrier closes it there
            k = int(np.searchsorted(ts, closed))
            stop, take = close[row] * (1 - SL / 100), close[row] * (1 + TP / 100)
            near = low[k] <= stop + TICK if t["exit_reason"] == "stop_loss" else high[k] >= take - TICK
            assert near and k < exit_row, (t, off_long[i])
            tick_exits += 1
            tick_entries.add(t["open_date"])
            continue
        assert t["profit_ratio"] == pytest.approx(data.long_return[row], abs=TICK / close[row]), t
    assert checked >= len(trades) - 1, (checked, len(trades))
    assert tick_exits + stop_before_time_out <= 0.1 * checked, (checked, tick_exits, stop_before_time_out)

    # 2. the project's simulation on the same predictions, long only as a spot strategy trades
    long_only = np.where((probs.argmax(axis=1) == 2)[:, None], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0])
    exit_long = np.minimum(rows + off_long, len(data) - 1)
    exit_short = np.minimum(rows + off_short, len(data) - 1)

    def entries(sim):
        return {t["entry_time"]: t for t in sim["trades"]}

    def ft_entry(t):
        opened = int(np.datetime64(t["open_date"].replace("+00:00", ""), "ms").astype(np.int64)) - minute
        return str(np.datetime64(opened, "ms").astype("datetime64[s]")) + "Z"

    ft = {ft_entry(t): t for t in trades}

    def simulated(earlier: int) -> dict:
        """The simulation's trades by entry, every exit index ``earlier`` candles sooner (1: a signal
        on the exit candle opens the next trade, as in freqtrade)."""
        returns = (data.long_return, data.short_return)
        exits = (exit_long - earlier, exit_short - earlier)
        return entries(
            simulate(rows, long_only, data.timestamps, *returns, *exits, threshold=None, fee_pct=0.0)
        )

    # the simulation opens the next position at a signal after the exit candle; freqtrade already
    # on the exit candle's signal (at the next open). With the signals of every other candle, the
    # two lists part at once:
    plain = simulated(0)
    # the same simulation with freqtrade's re-entry (a signal on the exit candle opens the next trade)
    same = simulated(1)
    print(
        f"freqtrade {len(ft)} trades; the simulation {len(plain)} ({len(set(plain) & set(ft))} entries shared), "
        f"with freqtrade's re-entry {len(same)} ({len(set(same) & set(ft))} shared); exits a tick apart "
        f"{tick_exits}, stopped on the time-out candle {stop_before_time_out}"
    )
    shared = set(same) & set(ft)
    assert len(shared) >= 0.9 * max(len(same), len(ft)), (len(shared), len(same), len(ft))
    for entry in shared:
        t = ft[entry]
        if t["exit_reason"] != "force_exit" and t["open_date"] not in tick_entries:
            assert t["profit_ratio"] == pytest.approx(same[entry]["gross_return"], abs=TICK / 1000), t


def test_lookahead_and_recursive_analysis_find_no_bias(bot):
    def analysis(command: str, *args: str) -> str:
        """freqtrade's ``command`` on the exported strategy; its output, once it exited 0."""
        done = _freqtrade(command, *_strategy_args(bot), *args, cwd=bot["root"])
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        return out

    amounts = ("--targeted-trade-amount", "10", "--minimum-trade-amount", "10")
    out = analysis("lookahead-analysis", "--timerange", TIMERANGE, "--fee", "0", *amounts)
    assert "PairTrainerStrategy: no bias detected" in out
    out = analysis(
        "recursive-analysis", "--timerange", "20250522-20250523", "--startup-candle", "2615", "3000"
    )
    assert "No variance on indicator(s) found due to recursive formula." in out
    assert "No lookahead bias on indicators found." in out


DRY_RUN = """
import json, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from freqtrade_offline import patch_exchange
patch_exchange(["ETH/USDT"])
from freqtrade.configuration import Configuration
from freqtrade.enums import RunMode
from freqtrade.freqtradebot import FreqtradeBot
config = Configuration.from_files([sys.argv[1]])
config.update({"strategy": "PairTrainerStrategy", "user_data_dir": Path(sys.argv[3]), "runmode": RunMode.DRY_RUN,
               "strategy_path": sys.argv[3] + "/strategies"})
bot = FreqtradeBot(config)
model = bot.strategy.pair_models["ETH/USDT"]
print("LOADED", json.dumps({"tag": model.tag, "dry_run": bot.config["dry_run"], "runmode": str(bot.config["runmode"])}))
bot.cleanup()
"""


def test_a_dry_run_start_loads_the_pinned_models_without_training(bot, tmp_path):
    before = {p.name: _sha(p) for p in bot["model_dir"].iterdir() if p.is_file()}
    script = tmp_path / "dry_run.py"
    script.write_text(DRY_RUN)
    done = subprocess.run(
        [
            sys.executable,
            str(script),
            str(bot["root"] / "config.json"),
            str(REPO / "tests"),
            str(bot["userdir"]),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("LOADED "))
    info = json.loads(line[len("LOADED ") :])
    assert info["dry_run"] is True and info["runmode"] == "dry_run" and info["tag"].startswith(PAIR)
    assert "Epoch" not in out
    after = {p.name: _sha(p) for p in bot["model_dir"].iterdir() if p.is_file()}
    assert after == before  # nothing trained, nothing rewritten


def test_live_mode_predicts_the_last_closed_candle_like_predict_latest(bot):
    from trainer_core import load_pair_model

    strategy = _strategy(bot, "dry_run")
    candles = _candles_frame(bot).iloc[:5000]  # a live feed's buffer: at most 4,999 closed candles
    candles = candles.iloc[-4999:].reset_index(drop=True)
    frame = strategy.advise_indicators(candles.copy(), {"pair": FT_PAIR})
    model = load_pair_model(bot["model_dir"])
    model.decision = {"rule": "arg-max"}  # as exported
    latest = model.predict_latest(pl.from_pandas(candles.rename(columns={"date": "timestamp"})))
    last = frame.iloc[-1]
    assert latest["timestamp"] == last["date"].to_pydatetime()
    for column in ("p_short", "p_hold", "p_long"):
        assert np.float32(last[column]) == np.float32(latest[column])
    assert last["signal"] == latest["signal"]
    assert frame["p_long"].iloc[:-1].isna().all()  # live, only the closed candle is scored


def test_a_changed_model_folder_stops_the_strategy_at_start(bot, tmp_path):
    import shutil

    from freqtrade.exceptions import FreqtradeException

    userdir = tmp_path / "user_data"
    shutil.copytree(bot["userdir"] / "strategies", userdir / "strategies")
    pins_path = userdir / "strategies" / "pair_trainer_models.json"
    pins = json.loads(pins_path.read_text())
    pins["models"][FT_PAIR]["success_sha256"] = "0" * 64
    pins_path.write_text(json.dumps(pins))
    with pytest.raises(FreqtradeException, match="changed since `trainer freqtrade export`"):
        _strategy({**bot, "userdir": userdir})
