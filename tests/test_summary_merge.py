"""The batch summary across batches and pairs: a rerun that trains nothing keeps each pair's last
figures, batches sharing an output merge per pair under a lock, and the multiple-testing figures
(Benjamini-Hochberg q-values, survivors, cells looked at, deflated Sharpe ratio) recomputed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from scipy.stats import norm

from trainer_plugins.reporters.trading.stats import precision_verdict

EULER = 0.5772156649015329


def side(wins: int, n: int) -> dict:
    v = precision_verdict(wins, n, 0.4, 30)
    return {**{k: v[k] for k in v}, "break_even": 0.4, "edge": None}


def figures(p_value: float, sharpe: float, n_trades: int = 100, draws: int = 10_000) -> dict:
    return {
        "trading": {
            "split": "test",
            "mcc": 0.05,
            "macro_f1": 0.4,
            "baseline_hold_macro_f1": 0.25,
            "report": "trading_X.html",
            "cells_looked_at": 14,
            "LONG": side(50, 100),
            "SHORT": side(40, 100),
            "simulation": {
                "n_trades": n_trades,
                "total_net_return": 0.01,
                "max_drawdown": 0.02,
                "sharpe_per_trade": sharpe,
                "skewness": 0.0,
                "kurtosis": 3.0,
                "random_entry_p_value": p_value,
                "random_entry_draws": draws,
            },
        }
    }


@pytest.fixture
def row(batch_summary):
    """``row(pair, status="trained", **values)``: a batch row whose headline is its test slice's."""

    def make(pair: str, status: str = "trained", **values) -> dict:
        metrics = {"mcc": 0.05, "balanced_accuracy": 0.4, "measured_on": "test"}
        return batch_summary.row(pair, status, **{"metrics": metrics, **values})

    return make


@pytest.fixture
def report(batch_summary):
    """``report(root, rows, pairs) -> summary.json``: a batch of ``pairs`` (a new manifest in
    ``root`` each time) reporting ``rows`` into ``root/out``."""

    def write(root: Path, rows: list[dict], pairs: list[str]) -> dict:
        manifest = root / f"m{len(list(root.glob('m*.yaml')))}.yaml"
        manifest.write_text(f"version: 1\npairs: [{', '.join(pairs)}]\n")
        return batch_summary.write(manifest, root / "out", rows)

    return write


def test_q_values_survivors_and_deflated_sharpe_recomputed_by_hand(tmp_path, row, report):
    rows = [
        row("ETHUSDT", figures=figures(0.0001, 0.10)),
        row("BTCUSDT", figures=figures(0.01, 0.05)),
        row("SOLUSDT", figures=figures(0.5, -0.02)),
    ]
    doc = report(tmp_path, rows, ["ETHUSDT", "BTCUSDT", "SOLUSDT"])
    q = {r["pair"]: r["trading"]["q_value"] for r in doc["pairs"]}
    # BH by hand: sorted p 0.0001, 0.01, 0.5 -> p * m / rank = 0.0003, 0.015, 0.5 (monotone already)
    assert q == pytest.approx({"ETHUSDT": 0.0003, "BTCUSDT": 0.015, "SOLUSDT": 0.5})
    mt = doc["multiple_testing"]
    assert mt["survivors"] == 2 and mt["pairs_tested"] == 3 and mt["cells_looked_at"] == 42
    assert mt["smallest_possible_p_value"] == pytest.approx(1 / 10_001) and mt["smallest_p_can_survive"]
    # deflated Sharpe by hand (Bailey and Lopez de Prado 2014, eq. 8-10)
    var = sum((s - 0.13 / 3) ** 2 for s in (0.10, 0.05, -0.02)) / 2
    n = 42
    sr0 = math.sqrt(var) * ((1 - EULER) * norm.ppf(1 - 1 / n) + EULER * norm.ppf(1 - 1 / (n * math.e)))
    z = (0.10 - sr0) * math.sqrt(99) / math.sqrt(1 + (3 - 1) / 4 * 0.10**2)
    d = mt["deflated_sharpe"]
    assert d["pair"] == "ETHUSDT" and d["trials"] == 42
    assert d["sr0"] == pytest.approx(sr0) and d["dsr"] == pytest.approx(norm.cdf(z))
    page = (tmp_path / "out" / "summary.html").read_text()
    assert "<b>2</b> survive Benjamini-Hochberg at 5 % FDR" in page and "deflated Sharpe ratio" in page
    assert '<div class="scroll">' in page and "overflow-x: auto" in page
    # every pair's headline is its test slice's, and the page says so
    assert all(r["metrics"]["measured_on"] == "test" for r in doc["pairs"])
    assert "measured on each pair's untouched test slice" in page


def test_too_few_random_entry_draws_for_the_batch_is_said(tmp_path, row, report):
    # the best pair reached the smallest p 100 draws allow; across 10 pairs it cannot survive
    rows = [row(f"P{i}USDT", figures=figures(1 / 101 if i == 0 else 0.5, 0.01, draws=100)) for i in range(10)]
    doc = report(tmp_path, rows, [f"P{i}USDT" for i in range(10)])
    assert doc["multiple_testing"]["smallest_p_can_survive"] is False
    assert doc["multiple_testing"]["survivors"] == 0
    assert (
        "raise <code>evaluation.random_entry_draws</code>" in (tmp_path / "out" / "summary.html").read_text()
    )


def test_a_rerun_that_trains_nothing_keeps_each_pairs_last_figures(tmp_path, row, report):
    report(tmp_path, [row("ETHUSDT", seconds=42.0, figures=figures(0.02, 0.1))], ["ETHUSDT"])
    skipped = row("ETHUSDT", "skipped", seconds=None, reason="completed with the same settings and data")
    skipped["figures"] = figures(0.02, 0.1)
    doc = report(tmp_path, [skipped], ["ETHUSDT"])
    (eth,) = doc["pairs"]
    assert eth["status"] == "skipped" and eth["reason"] == "completed with the same settings and data"
    assert eth["seconds"] == 42.0 and eth["trading"]["simulation"]["random_entry_p_value"] == 0.02
    assert "42s" in (tmp_path / "out" / "summary.html").read_text()


def test_batches_on_one_output_merge_per_pair(tmp_path, row, report):
    out = tmp_path / "out"
    report(tmp_path, [row("ETHUSDT", figures=figures(0.02, 0.1))], ["ETHUSDT"])
    (out / "ETHUSDT").mkdir()
    (out / "ETHUSDT" / "_SUCCESS.json").write_text(json.dumps({"finished": "2026-12-01T10:00:00+00:00"}))
    held = row(
        "ETHUSDT",
        "failed",
        seconds=None,
        reason="error",
        error="ETHUSDT: another run holds the pair's lock.",
        trained_at=None,
        artifacts=None,
    )
    doc = report(tmp_path, [row("BTCUSDT", figures=figures(0.3, 0.0)), held], ["BTCUSDT", "ETHUSDT"])
    pairs = {r["pair"]: r for r in doc["pairs"]}
    assert set(pairs) == {"BTCUSDT", "ETHUSDT"}
    # the intact trained pair is not shown as failed; this batch's attempt is recorded beside it
    assert pairs["ETHUSDT"]["status"] == "trained" and pairs["ETHUSDT"]["trading"] is not None
    assert pairs["ETHUSDT"]["last_attempt"]["status"] == "failed"
    assert doc["counts"] == {"trained": 2}
    # a third batch of another pair keeps both
    doc = report(tmp_path, [row("SOLUSDT", figures=figures(0.5, 0.0))], ["SOLUSDT"])
    assert {r["pair"] for r in doc["pairs"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    # once the pair's artifacts are gone, a failure is shown as the failure it is
    (out / "ETHUSDT" / "_SUCCESS.json").unlink()
    doc = report(tmp_path, [held], ["ETHUSDT"])
    assert {r["pair"]: r["status"] for r in doc["pairs"]}["ETHUSDT"] == "failed"


def _batch_process(report, row, root: str, pair: str, rounds: int) -> None:
    for _ in range(rounds):
        report(Path(root) / "sub" / pair, [row(pair, figures=figures(0.1, 0.0))], [pair])


def test_concurrent_batches_each_keep_their_pairs(tmp_path, row, report):
    """Three processes write one output's summary 15 times each: every pair is on the final page
    (a last-writer-wins summary keeps one). The lock serialises the read-merge-write of each."""
    import multiprocessing

    (tmp_path / "out").mkdir()
    pairs = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
    for name in pairs:  # every batch writes the same output folder, through a link in its own folder
        sub = tmp_path / "sub" / name
        sub.mkdir(parents=True)
        (sub / "out").symlink_to(tmp_path / "out")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_batch_process, args=(report, row, str(tmp_path), p, 15)) for p in pairs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    doc = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {r["pair"] for r in doc["pairs"]} == set(pairs)


@pytest.mark.slow
def test_trainer_batch_run_again_keeps_the_pairs_times_and_figures(tmp_path):
    import yaml
    from test_batch import base_env, tiny_defaults, trainer_batch

    doc = {"version": 1, "output": str(tmp_path / "out"), "defaults": tiny_defaults(), "pairs": ["ETHUSDT"]}
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = base_env(TRAINER_RAY_NUM_CPUS="1")
    first = trainer_batch(manifest, env=env)
    assert first.code == 0, first.both
    before = json.loads((tmp_path / "out" / "summary.json").read_text())["pairs"][0]
    marker = json.loads((tmp_path / "out" / "ETHUSDT" / "_SUCCESS.json").read_text())
    assert before["trained_at"] == marker["finished"]  # the row's time is the marker's
    again = trainer_batch(manifest, env=env)
    assert again.code == 0 and "1 skipped" in again.out, again.both
    after = json.loads((tmp_path / "out" / "summary.json").read_text())["pairs"][0]
    assert after["status"] == "skipped" and after["seconds"] == before["seconds"] is not None
    assert after["trading"]["simulation"] == before["trading"]["simulation"]
