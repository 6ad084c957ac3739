"""Command `trainer freqtrade export`: trained pairs -> a freqtrade strategy (`PairTrainerStrategy`)
and a pinned list of their model folders with checksums, in a freqtrade user_data folder.

The strategy (freqtrade_templates/pair_trainer_strategy.py, copied as is) predicts with the same
`load_pair_model` code as `trainer predict`; the pin file says which folders, checked at start-up.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from importlib import resources
from pathlib import Path

import click

from trainer_core import ConfigError, DataError, __version__, hookimpl

STRATEGY_NAME = "PairTrainerStrategy"
STRATEGY_FILE = f"{STRATEGY_NAME}.py"
PINS_FILE = "pair_trainer_models.json"
#: the first line of an exported strategy: a file without it is the user's, never overwritten
HEADER = "# PairTrainerStrategy: written by `trainer freqtrade export`"
#: candles per request freqtrade gets from Binance (spot; USD-M futures serve 499); freqtrade asks
#: for at most 5 requests per pair, one candle of them the open one
CANDLE_LIMITS = {"spot": 1000, "futures": 499}
#: quote assets, longest first, to write ETHUSDT as freqtrade's ETH/USDT
QUOTES = ("FDUSD", "USDT", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "BRL", "DAI")


def freqtrade_pair(pair: str, trading_mode: str) -> str:
    """``ETHUSDT`` -> ``ETH/USDT`` (spot) or ``ETH/USDT:USDT`` (futures)."""
    quote = next((q for q in QUOTES if pair.endswith(q) and len(pair) > len(q)), None)
    if quote is None:
        raise ConfigError(
            f"{pair}: cannot tell its quote asset ({', '.join(QUOTES)}) to name it for freqtrade.",
            "Export pairs quoted in one of those assets.",
        )
    name = f"{pair[: -len(quote)]}/{quote}"
    return f"{name}:{quote}" if trading_mode == "futures" else name


def live_limit(trading_mode: str) -> int:
    """The most candles a strategy may need at start-up on Binance: 5 requests, less the open candle."""
    return 5 * CANDLE_LIMITS[trading_mode] - 1


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _exit_rule(model) -> dict:
    labels = model.spec["labels"]
    if labels.get("method", "tp-sl") != "tp-sl":
        raise ConfigError(
            f"{model.tag}: labels.method is {labels.get('method')!r}; the strategy exits by the tp-sl "
            "labeler's take-profit, stop-loss and time-out only.",
            "Export models trained with labels.method: tp-sl.",
        )
    from ..labelers.tp_sl import settings_of

    barriers = settings_of(labels)
    return {
        "take_profit_pct": barriers.take_profit_pct,
        "stop_loss_pct": barriers.stop_loss_pct,
        "short_take_profit_pct": barriers.short_tp,
        "short_stop_loss_pct": barriers.short_sl,
        "future_window": barriers.future_window,
    }


def pins_for(model_dirs, trading_mode: str | None, rule: str) -> dict:
    """The pin file's content for these model folders; every refusal is one `TrainerError`."""
    from trainer_core import load_pair_model

    models = []
    for folder in model_dirs:
        path = Path(folder).expanduser().resolve()
        model = load_pair_model(path)
        # OUTPUT/PAIR@champion (or a folder with model versions) pins the version's own folder
        path = path if model.version is None else Path(model.location)
        models.append((path, model))
    markets = {str(dict(m.spec["data"].get("params") or {}).get("market") or "spot") for _, m in models}
    if trading_mode is None:
        trading_mode = "futures" if any(m.startswith("futures") for m in markets) else "spot"
    timeframes = {m.spec["data"]["timeframe"] for _, m in models}
    if len(timeframes) != 1:
        raise ConfigError(
            f"The models were trained on different timeframes ({', '.join(sorted(timeframes))}); a freqtrade "
            "strategy has one.",
            "Export the models of one timeframe together.",
        )
    rules = {json.dumps(_exit_rule(m), sort_keys=True) for _, m in models}
    if len(rules) != 1:
        raise ConfigError(
            "The models were labelled with different take-profit, stop-loss or future_window settings; the "
            "strategy's exits (minimal_roi, stoploss) are one rule for all pairs.",
            "Export the models of one label rule together (one strategy folder per rule).",
        )
    exit_rule = json.loads(rules.pop())
    if trading_mode == "futures" and (
        exit_rule["short_take_profit_pct"] != exit_rule["take_profit_pct"]
        or exit_rule["short_stop_loss_pct"] != exit_rule["stop_loss_pct"]
    ):
        raise ConfigError(
            "The models' short side has its own take-profit or stop-loss; freqtrade's minimal_roi and stoploss "
            "are one rule for both sides.",
            "Export them for spot (--trading-mode spot: long only), or train with symmetric barriers.",
        )
    limit = live_limit(trading_mode)
    pins: dict = {}
    for path, model in models:
        if model.required_history > limit:
            raise DataError(
                f"{model.tag}: required_history {model.required_history:,} candles is more than the {limit:,} "
                f"{trading_mode} candles freqtrade gets from Binance at start-up (5 x {CANDLE_LIMITS[trading_mode]:,} - 1).",
                "Retrain with a shorter features.params.ma_long or train.sequence_length (see `trainer validate`).",
            )
        if model.context_pairs:
            raise ConfigError(
                f"{model.tag}: its features read other pairs' candles ({', '.join(model.context_pairs)}); the "
                "exported strategy serves single-pair models only.",
                "Export models trained with features.set: seed.",
            )
        name = freqtrade_pair(model.pair, trading_mode)
        if name in pins:
            raise ConfigError(
                f"Two model folders for {model.pair}: {pins[name]['model_dir']} and {path}.",
                "Pass one --model-dir per pair.",
            )
        success = path / "_SUCCESS.json"
        marker = json.loads(success.read_text())
        pins[name] = {
            "pair": model.pair,
            "tag": model.tag,
            "model_dir": str(path),
            "required_history": model.required_history,
            "success_sha256": _sha256(success),
            "artifacts": {k: v.get("sha256") for k, v in sorted(marker["artifacts"].items())},
            "decision": model.decision_rule
            if rule == "recorded"
            else {"rule": "arg-max", "chosen_on": "export"},
        }
    timeframe = timeframes.pop()
    return {
        "format": 1,
        "written_by": f"pair-trainer {__version__}",
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "timeframe": timeframe,
        "trading_mode": trading_mode,
        "can_short": trading_mode == "futures",
        "signal_rule": rule,
        # freqtrade hands populate_indicators this many candles before the first one it trades on
        "startup_candle_count": max(p["required_history"] for p in pins.values()),
        "live_limit": limit,
        "exit": exit_rule,
        "models": pins,
    }


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def export(
    model_dirs, userdir, trading_mode: str | None = None, rule: str = "recorded"
) -> tuple[Path, Path, dict]:
    """Write ``USERDIR/strategies/PairTrainerStrategy.py`` and its pin file; return both paths and the pins."""
    userdir = Path(userdir).expanduser()
    if not userdir.is_dir():
        raise ConfigError(
            f"--userdir {userdir}: no such folder.",
            "Pass freqtrade's user_data folder (`freqtrade create-userdir --userdir user_data` makes one).",
        )
    pins = pins_for(model_dirs, trading_mode, rule)
    folder = userdir / "strategies"
    folder.mkdir(exist_ok=True)
    strategy = folder / STRATEGY_FILE
    if strategy.exists() and not strategy.read_text(encoding="utf-8", errors="replace").startswith(HEADER):
        raise ConfigError(
            f"{strategy} exists and was not written by `trainer freqtrade export`; it is left as it is.",
            "Move it away, or export into another --userdir.",
        )
    template = resources.files(__package__).joinpath("freqtrade_templates", "pair_trainer_strategy.py")
    pin_path = folder / PINS_FILE
    _write(pin_path, json.dumps(pins, indent=2) + "\n")
    _write(strategy, template.read_text(encoding="utf-8"))
    return strategy, pin_path, pins


@click.group(name="freqtrade")
def freqtrade_group():
    """Run trained pairs inside freqtrade (pip install 'pair-trainer[freqtrade]')."""


@freqtrade_group.command(name="export")
@click.option(
    "--model-dir",
    "model_dirs",
    multiple=True,
    required=True,
    metavar="DIR",
    help="A trained pair's folder (OUTPUT/PAIR, with _SUCCESS.json); repeat for more pairs.",
)
@click.option(
    "--userdir",
    required=True,
    metavar="USER_DATA",
    help="freqtrade's user_data folder; the strategy goes into its strategies/ folder.",
)
@click.option(
    "--trading-mode",
    type=click.Choice(["spot", "futures"]),
    help="freqtrade's trading_mode [default: futures when a model was trained on futures candles, else spot].",
)
@click.option(
    "--signal-rule",
    type=click.Choice(["recorded", "arg-max"]),
    default="recorded",
    show_default=True,
    help="recorded: each model's decision_{tag}.json (thresholds chosen on validation); arg-max: every "
    "LONG/SHORT arg-max class signals.",
)
def export_command(model_dirs, userdir, trading_mode, signal_rule):
    """Write PairTrainerStrategy into USER_DATA/strategies/ with the model folders pinned.

    The strategy loads each pair's model once at start-up (checking the folder against the
    checksums pinned here), predicts p_short, p_hold, p_long and signal in populate_indicators
    with the same code as `trainer predict`, enters on the signal and exits by the labels' rule:
    take-profit (minimal_roi), stop-loss (stoploss) and the time-out after future_window candles.
    A model needing more candles than freqtrade gets from the exchange at start-up is refused.

    Example:

        trainer freqtrade export --model-dir artifacts/laptop/BTCUSDT --model-dir artifacts/laptop/ETHUSDT --userdir user_data
    """
    strategy, pin_path, pins = export(model_dirs, userdir, trading_mode, signal_rule)
    for name, pin in pins["models"].items():
        rule = pin["decision"]
        how = (
            "arg-max"
            if rule.get("rule") != "thresholds"
            else f"LONG p>={rule.get('LONG')}, SHORT p>={rule.get('SHORT')}"
        )
        click.echo(f"  {name:<16} {pin['tag']}  required_history {pin['required_history']:,}  signal: {how}")
    e = pins["exit"]
    click.echo(
        f"Wrote {strategy} and {pin_path.name}: {len(pins['models'])} pair(s), timeframe {pins['timeframe']}, "
        f"{pins['trading_mode']}, startup_candle_count {pins['startup_candle_count']:,}; exits: take-profit "
        f"{e['take_profit_pct']:g} %, stop-loss {e['stop_loss_pct']:g} %, time-out {e['future_window']} candles."
    )
    click.echo(f"Run: freqtrade backtesting --strategy {STRATEGY_NAME} --userdir {userdir} --fee 0 ...")


@hookimpl
def trainer_register_commands(cli):
    """Add the ``freqtrade`` command group."""
    cli.add_command(freqtrade_group)
