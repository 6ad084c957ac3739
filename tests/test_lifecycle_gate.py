"""The model lifecycle on real candles and real (tiny) models: two versions trained on successive
spans, the promotion gate on fresh candles after them, its decision replayed from the log, a
worthless challenger, rollback, an expired champion, and a batch registering challengers that
`promote --all` then judges on Ray."""

from __future__ import annotations

import json
import os
from pathlib import Path

import polars as pl
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.real_candles]

SETTINGS = [
    "data.loader=ohlcv",
    "features.ma_short=30",
    "features.ma_long=120",
    "train.sequence_length=8",
    "train.batch_size=64",
    "model.params.lstm_units=[4]",
    "model.params.dense_units=[4]",
    "balance.min_per_class=0",
    "labels.future_window=30",
    "labels.take_profit_pct=0.2",
    "labels.stop_loss_pct=0.2",
    "split.test=0",
    "train.verbose=0",
]


def sets(*extra: str) -> list[str]:
    out = []
    for s in (*SETTINGS, *extra):
        out += ["--set", s]
    return out


def train(trainer, data: Path, out: Path, epochs: int, *settings: str):
    """`trainer run` of ETHUSDT on the candle folder ``data`` into ``out``: SETTINGS, then ``settings``."""
    return trainer(
        "run", "--pair", "ETHUSDT", "--data", data, "--output", out, "--epochs", epochs, *sets(*settings)
    )


@pytest.fixture(scope="session")
def candles(shared_data):
    """``candles(folder, pair, last_day) -> folder``: the pair's real candles from the start of the
    file through ``last_day``, as a candle folder."""

    def cut(folder: Path, pair: str, last_day: str) -> Path:
        frame = pl.read_parquet(shared_data / f"{pair}-1m.parquet")
        frame = frame.filter(
            pl.col("timestamp") < pl.lit(last_day).str.to_datetime(time_zone="UTC") + pl.duration(days=1)
        )
        folder.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(folder / f"{pair}-1m.parquet")
        return folder

    return cut


@pytest.fixture(scope="module")
def versions(tmp_path_factory, trainer, candles):
    """ETHUSDT: #1 trained on 5-8 May, #2 on 9-12 May, #3 on 9-12 May with a learning rate of
    1e-9 (its initial weights: worthless); candles through 18 May, the fresh window after 12 May."""
    root = tmp_path_factory.mktemp("lifecycle")
    data = candles(root / "candles", "ETHUSDT", "2025-05-18")
    out = root / "out"
    spans = [
        ("2025-05-05", "2025-05-08", []),
        ("2025-05-09", "2025-05-12", []),
        ("2025-05-09", "2025-05-12", ["train.learning_rate=1e-9"]),
    ]
    for start, end, extra in spans:
        r = train(trainer, data, out, 2, f"data.start={start}", f"data.end={end}", *extra)
        assert r.exit_code == 0, r.output
    return out, data


def models(trainer, *args):
    r = trainer("models", *args)
    return r


def test_every_training_is_a_version_with_its_span(versions, trainer):
    out, _ = versions
    rows = json.loads(models(trainer, "list", out, "--json").output)["versions"]
    assert [(v["id"], v["trained_until"]) for v in rows] == [
        (1, "2025-05-08T23:59:00Z"),
        (2, "2025-05-12T23:59:00Z"),
        (3, "2025-05-12T23:59:00Z"),
    ]
    assert all(not v["aliases"] for v in rows)
    marker = json.loads((out / "ETHUSDT" / "_SUCCESS.json").read_text())
    v3 = out / "_models" / "ETHUSDT" / "versions" / "v000003"
    assert json.loads((v3 / "_SUCCESS.json").read_text()) == marker  # the live run is #3, copied whole


def test_the_gate_decides_on_fresh_candles_and_the_decision_replays_from_the_log(
    versions, trainer, candles, force_promote
):
    out, data = versions
    r = force_promote(out, 1, data, "baseline")
    assert r.exit_code == 0, r.output
    r = models(trainer, "promote", out, "ETHUSDT", "--candidate", 2, "--data", data, "--json")
    assert r.exit_code == 0, r.output
    decision = json.loads(r.output)
    assert decision["verdict"] in ("promote", "keep") and decision["champion_before"] == 1
    evidence = json.loads(Path(decision["evidence"]).read_text())
    # the window: after 12 May (both versions' data) plus the 30-candle purge, to 30 candles before the end
    assert evidence["window"]["start"] == "2025-05-13T00:30:00+00:00"
    assert evidence["window"]["end"] == "2025-05-18T23:29:00+00:00"
    assert evidence["candidate"]["version"] == 2 and evidence["champion"]["version"] == 1
    assert evidence["candidate"]["coverage"] >= 0.99 and evidence["champion"]["coverage"] >= 0.99
    trades = evidence["candidate"]["trades"]
    assert all(
        evidence["window"]["start"][:16] <= t["entry_time"][:16] <= evidence["window"]["end"][:16]
        for t in trades
    )
    # the paired difference is the two totals' difference
    diff = evidence["candidate"]["total_net_return"] - evidence["champion"]["total_net_return"]
    assert evidence["difference"]["total_net_return"] == pytest.approx(diff, abs=1e-9)
    expected = "promote" if all(c["passed"] for c in evidence["checks"]) else "keep"
    assert evidence["verdict"] == expected == decision["verdict"]
    events = json.loads(models(trainer, "history", out, "ETHUSDT", "--json").output)["events"]
    event = (
        events[-1] if decision["verdict"] == "keep" else [e for e in events if e["action"] == "promote"][-1]
    )
    assert event["evidence"] == decision["evidence"] and event["candidate"] == 2
    assert (event["from"], event["to"]) == ((1, 2) if decision["verdict"] == "promote" else (1, 1))
    r = models(trainer, "replay", out, "ETHUSDT", event["seq"], "--data", data)
    assert r.exit_code == 0 and f"event {event['seq']} reproduced: {decision['verdict']}" in r.output, (
        r.output
    )
    # other candles than the decision's do not reproduce it
    shorter = candles(data.parent / "shorter", "ETHUSDT", "2025-05-16")
    r = models(trainer, "replay", out, "ETHUSDT", event["seq"], "--data", shorter, "--json")
    assert r.exit_code == 1 and not json.loads(r.output)["reproduced"], r.output
    if decision["verdict"] == "promote":  # leave #1 champion for the next tests
        assert models(trainer, "rollback", out, "ETHUSDT").exit_code == 0


def test_candles_without_a_fresh_window_are_one_clear_error(versions, trainer, candles):
    out, data = versions
    stale = candles(data.parent / "to-12", "ETHUSDT", "2025-05-12")
    before = json.loads(models(trainer, "history", out, "ETHUSDT", "--json").output)["events"]
    r = models(trainer, "promote", out, "ETHUSDT", "--candidate", 2, "--data", stale)
    assert r.exit_code == 2, r.output
    assert "hold no fresh window: it must start after 2025-05-13T00:29:00+00:00" in r.output, r.output
    assert "Hint: Pass candles that continue past the versions' training data" in r.output
    after = json.loads(models(trainer, "history", out, "ETHUSDT", "--json").output)["events"]
    assert after == before  # nothing logged, no evidence left behind
    assert not list((out / "_models" / "ETHUSDT").glob(f"evidence/{len(before) + 1:06d}-*"))


def test_a_worthless_challenger_is_never_promoted(versions, trainer, candles):
    out, data = versions
    assert json.loads(models(trainer, "show", out, "ETHUSDT", "--json").output)["id"] == 1
    windows = [data, candles(data.parent / "to-15", "ETHUSDT", "2025-05-15")]
    for candle_folder in windows:
        r = models(trainer, "promote", out, "ETHUSDT", "--candidate", 3, "--data", candle_folder, "--json")
        assert r.exit_code == 0, r.output
        decision = json.loads(r.output)
        assert decision["verdict"] == "keep" and decision["champion"] == 1, decision
        evidence = json.loads(Path(decision["evidence"]).read_text())
        failed = [c["check"] for c in evidence["checks"] if not c["passed"]]
        assert failed, evidence["checks"]
    # and with no champion to beat, the absolute gate alone refuses it too
    store_copy = out.parent / "no-champion"
    import shutil

    shutil.copytree(out, store_copy)
    for path in sorted((store_copy / "_models" / "ETHUSDT" / "events").iterdir())[3:]:
        path.unlink()  # the log as it was after the three registrations
    r = models(trainer, "promote", store_copy, "ETHUSDT", "--candidate", 3, "--data", data, "--json")
    assert r.exit_code == 0 and json.loads(r.output)["verdict"] == "keep", r.output


def test_rollback_restores_the_previous_champion_and_predict_uses_it(
    versions, trainer, tmp_path, force_promote
):
    out, data = versions
    r = force_promote(out, 2, data, "drill")
    assert r.exit_code == 0, r.output
    r = models(trainer, "rollback", out, "ETHUSDT", "--reason", "drill over")
    assert r.exit_code == 0 and "champion #2 -> #1" in r.output, r.output
    predictions = {}
    for name, where in (
        ("champion", f"{out}/ETHUSDT@champion"),
        ("plain", out / "ETHUSDT"),
        ("v1", out / "_models" / "ETHUSDT" / "versions" / "v000001"),
        ("live", f"{out}/ETHUSDT#3"),
    ):
        target = tmp_path / f"{name}.parquet"
        r = trainer(
            "predict", "--model-dir", where, "--data", data / "ETHUSDT-1m.parquet", "--output", target
        )
        assert r.exit_code == 0, r.output
        predictions[name] = pl.read_parquet(target)
    assert predictions["champion"].equals(predictions["v1"]) and predictions["plain"].equals(
        predictions["v1"]
    )
    assert not predictions["live"].equals(predictions["v1"])
    # freqtrade export pins the champion's own version folder (immutable), not the live folder
    from trainer_plugins.commands.freqtrade import export

    userdir = tmp_path / "user_data"
    userdir.mkdir()
    _, _, pins = export([f"{out}/ETHUSDT@champion"], userdir)
    (pin,) = pins["models"].values()
    assert pin["model_dir"] == str((out / "_models" / "ETHUSDT" / "versions" / "v000001").resolve())


def test_an_expired_champion_is_refused_in_one_line_and_allowed_on_request(
    versions, trainer, tmp_path, force_promote
):
    out, data = versions
    r = models(trainer, "policy", out, "--set", "lifecycle.expire_after=2d")
    assert r.exit_code == 0, r.output
    r = train(trainer, data, out, 1, "data.start=2025-05-13", "data.end=2025-05-14")
    assert r.exit_code == 0, r.output
    rows = json.loads(models(trainer, "list", out, "--json").output)["versions"]
    (v4,) = [v for v in rows if v["id"] == 4]
    assert v4["valid_until"] == "2025-05-16T23:59:00+00:00" and v4["expired"]
    r = force_promote(out, 4, data, "expiry drill")
    assert r.exit_code == 0, r.output
    r = trainer("predict", "--model-dir", out / "ETHUSDT", "--data", data / "ETHUSDT-1m.parquet", "--last", 1)
    assert r.exit_code == 1
    assert r.output.splitlines()[0].startswith(
        "Error: ETHUSDT version #4 expired at 2025-05-16T23:59:00+00:00"
    ), r.output
    r = trainer(
        "predict",
        "--model-dir",
        out / "ETHUSDT",
        "--data",
        data / "ETHUSDT-1m.parquet",
        "--last",
        1,
        "--allow-expired",
    )
    assert r.exit_code == 0, r.output
    from trainer_core import ExpiredModelError, load_pair_model

    model = load_pair_model(out / "ETHUSDT", allow_expired=True)
    frame = pl.read_parquet(data / "ETHUSDT-1m.parquet").tail(model.required_history)
    model.allow_expired = False
    with pytest.raises(ExpiredModelError):
        model.predict_latest(frame)
    assert models(trainer, "rollback", out, "ETHUSDT").exit_code == 0


def test_batch_registers_challengers_and_promote_all_judges_each_on_ray(tmp_path, trainer, candles):
    import yaml

    data = candles(tmp_path / "candles", "ETHUSDT", "2025-05-16")
    candles(tmp_path / "candles", "BTCUSDT", "2025-05-16")
    defaults = {}
    for s in SETTINGS:
        key, value = s.split("=", 1)
        section, _, rest = key.partition(".")
        node = defaults.setdefault(section, {})
        parts = rest.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(value)
    defaults["data"].update({"path": str(data), "start": "2025-05-08", "end": "2025-05-11"})
    defaults["train"]["epochs"] = 1
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "output": str(tmp_path / "out"),
                "defaults": defaults,
                "pairs": ["ETHUSDT", "BTCUSDT"],
            }
        )
    )
    try:
        r = trainer("batch", manifest, "--register")
    finally:
        os.environ.pop("TRAINER_REGISTER", None)
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    rows = json.loads(models(trainer, "list", out, "--json").output)["versions"]
    assert sorted((v["pair"], v["id"], v["aliases"]) for v in rows) == [
        ("BTCUSDT", 1, ["challenger"]),
        ("ETHUSDT", 1, ["challenger"]),
    ]
    summary = json.loads((out / "summary.json").read_text())
    assert {p["pair"]: p["models"]["versions"] for p in summary["pairs"]} == {"BTCUSDT": [1], "ETHUSDT": [1]}
    assert all(p["models"]["champion"] is None for p in summary["pairs"])
    r = models(trainer, "promote", out, "--all", "--data", data, "--json")
    assert r.exit_code == 0, r.output
    decisions = json.loads(r.output)["decisions"]
    assert sorted(d["pair"] for d in decisions) == ["BTCUSDT", "ETHUSDT"]
    for d in decisions:
        assert d["verdict"] in ("promote", "keep") and d["candidate"] == 1
        evidence = json.loads(Path(d["evidence"]).read_text())
        assert evidence["champion"] is None and evidence["window"]["start"] == "2025-05-12T00:30:00+00:00"
        expected = "promote" if all(c["passed"] for c in evidence["checks"]) else "keep"
        assert d["verdict"] == expected
        history = json.loads(models(trainer, "history", out, d["pair"], "--json").output)["events"]
        assert [e["action"] for e in history][:2] == ["register", "challenge"]
        assert history[2]["evidence"] == d["evidence"]
