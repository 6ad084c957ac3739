"""The batch summary a user reads: summary.json and summary.html from the `summary` reporter's
`report_batch` on a constructed `BatchReport`, and the table `trainer batch` prints (one real
batch on simulated candles, one pair's model predicting HOLD for every row)."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from trainer_plugins.reporters.trading.metrics import trading_metrics
from trainer_plugins.reporters.trading.report import headline
from trainer_plugins.reporters.trading.stats import precision_verdict

CHECK = "\u2713"


def side(wins: int, n: int, break_even: float = 0.4) -> dict:
    """One side of the trading reporter's headline figures, as `headline` builds it."""
    v = precision_verdict(wins, n, break_even, 30)
    keys = ("precision", "n", "n_signals", "n_effective", "ci_low", "ci_high", "wilson_low", "wilson_high")
    out = {k: v[k] for k in (*keys, "p_value", "verdict", "beats_break_even")}
    out["edge"] = None if v["precision"] is None else v["precision"] - break_even
    out["break_even"] = break_even
    return out


def trading(pair: str, long: dict, short: dict, sim: dict | None, mcc: float = 0.1) -> dict:
    return {
        "split": "test",
        "mcc": mcc,
        "macro_f1": 0.4,
        "baseline_hold_macro_f1": 0.25,
        "report": f"trading_{pair}_FW010_SL030_TP030.html",
        "LONG": long,
        "SHORT": short,
        "simulation": sim,
    }


def metrics(acc: float, mcc: float, bal: float, short: int, hold: int, long: int) -> dict:
    used = [name for name, n in (("SHORT", short), ("HOLD", hold), ("LONG", long)) if n]
    return {
        "val_accuracy": acc,
        "val_loss": 1.05,
        "val_samples": short + hold + long,
        "epochs": 3,
        "best_epoch": 2,
        "mcc": mcc,
        "balanced_accuracy": bal,
        "predicted": {"SHORT": short, "HOLD": hold, "LONG": long},
        "single_class": used[0] if len(used) == 1 else None,
    }


@pytest.fixture
def row(batch_summary):
    """``row(pair, status="trained", **values)``: a batch row of this page (12.3 s, tag PAIR_FW010)."""

    def make(pair: str, status: str = "trained", **values) -> dict:
        return batch_summary.row(pair, status, **{"seconds": 12.3, "tag": f"{pair}_FW010", **values})

    return make


@pytest.fixture
def rows(row):
    """``rows()``: six pairs in manifest order, a failed one first, then pairs whose figures a quant
    would read differently from their accuracy."""
    return lambda: [
        row(
            "BADUSDT",
            "failed",
            reason="error",
            error="BADUSDT: data path not found: /in.",
            hint="Pass --data.",
            exit_code=2,
            artifacts=None,
            tag=None,
            trained_at=None,
        ),
        # HOLD for every row: the highest accuracy, MCC 0, no signal at all
        row(
            "XRPUSDT",
            metrics=metrics(0.61, 0.0, 0.333, 0, 8520, 0),
            figures={"trading": trading("XRPUSDT", side(0, 0), side(0, 0), None, mcc=0.0)},
        ),
        # 9 right of 12 LONG predictions: 0.75 against 0.40, but too few to say anything
        row(
            "ETHUSDT",
            metrics=metrics(0.48, 0.031, 0.36, 0, 8508, 12),
            figures={
                "trading": trading(
                    "ETHUSDT",
                    side(9, 12),
                    side(0, 0),
                    {
                        "n_trades": 9,
                        "total_net_return": 0.012,
                        "max_drawdown": 0.004,
                        "random_entry_p_value": 0.41,
                    },
                )
            },
        ),
        # LONG for every row of a rising market: its precision "beats" break-even, which is no skill
        row(
            "SOLUSDT",
            metrics=metrics(0.44, 0.0, 0.333, 0, 0, 8520),
            figures={
                "trading": trading(
                    "SOLUSDT",
                    side(3800, 8520),
                    side(0, 0),
                    {
                        "n_trades": 700,
                        "total_net_return": 0.093,
                        "max_drawdown": 0.05,
                        "random_entry_p_value": 0.5,
                    },
                )
            },
        ),
        # a model whose LONG signals beat break-even, SHORT signals do not
        row(
            "BTCUSDT",
            metrics=metrics(0.52, 0.121, 0.47, 300, 7820, 400),
            figures={
                "trading": trading(
                    "BTCUSDT",
                    side(220, 400),
                    side(110, 300),
                    {
                        "n_trades": 85,
                        "total_net_return": 0.0734,
                        "max_drawdown": 0.021,
                        "random_entry_p_value": 0.012,
                    },
                )
            },
        ),
        # skipped: its marker's figures come from an older trading reporter (no count, no verdict)
        row(
            "ADAUSDT",
            "skipped",
            reason="completed with the same settings and data",
            seconds=None,
            metrics={
                "val_accuracy": 0.5,
                "val_loss": 1.0,
                "val_samples": 970,
                "epochs": 2,
                "best_epoch": 2,
                "mcc": 0.05,
            },
            figures={
                "trading": {
                    "mcc": 0.05,
                    "macro_f1": 0.4,
                    "baseline_hold_macro_f1": 0.2,
                    "report": "trading_ADAUSDT.html",
                    "LONG": {"precision": 0.45, "break_even": 0.4, "edge": 0.05},
                    "SHORT": {"precision": None, "break_even": 0.4, "edge": None},
                }
            },
        ),
    ]


class Table(HTMLParser):
    """The text of each <tr> of a page, cells joined by ' | '."""

    def __init__(self):
        super().__init__()
        self.rows, self.cells, self.text = [], None, None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.cells = []
        elif tag in ("td", "th"):
            self.text = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cells is not None:
            self.cells.append(" ".join("".join(self.text).split()))
            self.text = None
        elif tag == "tr" and self.cells is not None:
            self.rows.append(self.cells)
            self.cells = None

    def handle_data(self, data):
        if self.text is not None:
            self.text.append(data)


@pytest.fixture
def write_summary(rows, batch_summary):
    """``write_summary(tmp_path, sort="mcc", pair_rows=None)``: summary.json, summary.html, the page's
    rows by pair ({header: cell}) and the page's pair order, of `rows()` or the given rows of the
    same pairs."""

    def write(tmp_path: Path, sort: str = "mcc", pair_rows: list[dict] | None = None):
        manifest = tmp_path / "m.yaml"
        manifest.write_text("version: 1\npairs: [BADUSDT, XRPUSDT, ETHUSDT, SOLUSDT, BTCUSDT, ADAUSDT]\n")
        out = tmp_path / "out"
        doc = batch_summary.write(
            manifest,
            out,
            rows() if pair_rows is None else pair_rows,
            exit_code=1,
            counts={"failed": 1, "trained": 4, "skipped": 1},
            sort=sort,
            larger_is_better=sort not in ("val_loss", "max_drawdown", "random_entry_p_value", "pair"),
        )
        page = (out / "summary.html").read_text()
        parser = Table()
        parser.feed(page)
        header, *body = parser.rows
        pairs = [re.match(r"[A-Z0-9]+", r[0]).group() for r in body]
        return doc, page, {p: dict(zip(header, r)) for p, r in zip(pairs, body)}, pairs

    return write


def test_a_summary_side_keeps_every_figure_of_the_trading_headline(tmp_path, write_summary, rows):
    rng = np.random.default_rng(7)
    barriers = dict.fromkeys(
        ("take_profit_pct", "stop_loss_pct", "short_take_profit_pct", "short_stop_loss_pct"), 0.5
    )
    counts = {"SHORT": 100, "HOLD": 100, "LONG": 100}
    y_true, y_prob = rng.integers(0, 3, 300), rng.dirichlet(np.ones(3), 300)
    report = trading_metrics(
        y_true, y_prob, train_class_counts=counts, fee_pct=0.2, bootstrap_reps=0, **barriers
    )
    figures = headline({**report, "split": "test", "simulation": {"available": False}}, "ETHUSDT_FW010")
    pair_rows = [{**r, "figures": {"trading": figures}} if r["pair"] == "ETHUSDT" else r for r in rows()]
    doc, *_ = write_summary(tmp_path, pair_rows=pair_rows)
    (eth,) = [p["trading"] for p in doc["pairs"] if p["pair"] == "ETHUSDT"]
    for name in ("LONG", "SHORT"):
        shown = {k: v for k, v in eth[name].items() if k != "claim"}
        assert shown == figures[name] and len(shown) == 13
        assert list(shown)[:3] == ["precision", "break_even", "edge"]


def test_pairs_are_sorted_by_mcc_by_default_failed_last(tmp_path, write_summary):
    doc, page, _, order = write_summary(tmp_path)
    # BTCUSDT's MCC 0.121 first, though XRPUSDT has the best accuracy (0.61); ties keep the manifest's order
    assert order == ["BTCUSDT", "ADAUSDT", "ETHUSDT", "XRPUSDT", "SOLUSDT", "BADUSDT"]
    assert "Sorted by MCC, best first; failed and cancelled pairs last" in page
    assert doc["sort"] == "mcc" and doc["order"] == order
    # summary.json keeps the manifest's order and every field it had
    assert [r["pair"] for r in doc["pairs"]] == [
        "BADUSDT",
        "XRPUSDT",
        "ETHUSDT",
        "SOLUSDT",
        "BTCUSDT",
        "ADAUSDT",
    ]
    for r in doc["pairs"]:
        assert {
            "pair",
            "status",
            "reason",
            "error",
            "hint",
            "exit_code",
            "seconds",
            "metrics",
            "trading",
            "artifacts",
            "confusion_matrix_png",
            "trained_at",
        } <= set(r)
    assert doc["format"] == "pair-trainer batch summary v1" and doc["counts"]["failed"] == 1


@pytest.mark.parametrize(
    "sort, expected",
    [
        ("total_net_return", ["SOLUSDT", "BTCUSDT", "ETHUSDT", "XRPUSDT", "ADAUSDT", "BADUSDT"]),
        ("val_accuracy", ["XRPUSDT", "BTCUSDT", "ADAUSDT", "ETHUSDT", "SOLUSDT", "BADUSDT"]),
        ("random_entry_p_value", ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "BADUSDT"]),
        ("pair", ["ADAUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BADUSDT"]),
    ],
)
def test_the_sort_key_the_user_picks_orders_the_page(tmp_path, sort, expected, write_summary):
    doc, page, _, order = write_summary(tmp_path, sort)
    assert order == expected
    assert doc["sort"] == sort and doc["order"] == expected
    # a pair without the figure (no simulation: XRPUSDT, ADAUSDT) comes after those with it
    if sort == "total_net_return":
        assert (
            "Sorted by the simulation&#x27;s total net return, best first" in page
            or "Sorted by the simulation's total net return, best first" in page
        )


def test_only_a_side_whose_interval_clears_break_even_gets_a_check_mark(tmp_path, write_summary):
    _, page, cells, _ = write_summary(tmp_path)
    btc = cells["BTCUSDT"]
    long, short = btc["LONG precision vs break-even"], btc["SHORT precision vs break-even"]
    assert long.startswith("0.550 (n = 400), 95 % 0.501-0.598 vs break-even 0.400")
    assert f"{CHECK} beats break-even, p = " in long
    assert short.startswith("0.367 (n = 300), 95 % 0.314-0.423 vs break-even 0.400")
    assert "does not beat break-even" in short and CHECK not in short
    # one check mark on the whole page: BTCUSDT's LONG side
    assert page.count("&#10003;") == 2  # the mark, and the legend above the table that explains it
    assert sum(CHECK in c for r in cells.values() for c in r.values()) == 1


def test_too_few_signals_is_said_with_the_count_and_interval(tmp_path, write_summary):
    doc, _, cells, _ = write_summary(tmp_path)
    long = cells["ETHUSDT"]["LONG precision vs break-even"]
    assert long.startswith("0.750 (n = 12), 95 % 0.468-0.911 vs break-even 0.400")
    assert "too few signals (12)" in long and CHECK not in long
    assert cells["ETHUSDT"]["SHORT precision vs break-even"].startswith("no signals (break-even 0.400)")
    eth = {r["pair"]: r for r in doc["pairs"]}["ETHUSDT"]["trading"]
    assert eth["LONG"]["n"] == 12 and eth["LONG"]["verdict"] == "too few signals (12)"
    assert eth["LONG"]["wilson_low"] == pytest.approx(0.4677, abs=1e-4)


def test_a_single_class_model_is_flagged_and_claims_nothing(tmp_path, write_summary):
    doc, _, cells, _ = write_summary(tmp_path)
    xrp, sol = cells["XRPUSDT"], cells["SOLUSDT"]
    assert "predicts HOLD only" in xrp["Pair"] and "predicts LONG only" in sol["Pair"]
    assert (
        xrp["MCC"] == "0.000" and xrp["Signals LONG / SHORT"] == "0 / 0" and xrp["Val. accuracy"] == "0.6100"
    )
    assert xrp["LONG precision vs break-even"].startswith("no signals: the model predicts HOLD only")
    # SOLUSDT's LONG precision (3,800 of 8,520) clears break-even, but a model that always says LONG
    # has no skill: the flag overrides the verdict
    long = sol["LONG precision vs break-even"]
    assert long.startswith("0.446 (n = 8,520), 95 % 0.435-0.457 vs break-even 0.400")
    assert "no claim: the model predicts LONG only" in long and CHECK not in long and "beats" not in long
    by_pair = {r["pair"]: r for r in doc["pairs"]}
    assert by_pair["SOLUSDT"]["warning"] == "predicts LONG only"
    assert (
        by_pair["SOLUSDT"]["trading"]["LONG"]["verdict"] == "beats break-even"
    )  # the report's own figure kept
    assert by_pair["SOLUSDT"]["trading"]["LONG"]["claim"] == "no claim: the model predicts LONG only"
    assert by_pair["XRPUSDT"]["metrics"]["single_class"] == "HOLD" and by_pair["BTCUSDT"]["warning"] is None


def test_the_simulation_scores_and_signal_counts_are_shown(tmp_path, write_summary):
    doc, _, cells, _ = write_summary(tmp_path)
    btc = cells["BTCUSDT"]
    assert (btc["Trades"], btc["Total net return"], btc["Max drawdown"], btc["Random-entry p-value"]) == (
        "85",
        "7.34 %",
        "2.10 %",
        "0.012",
    )
    assert (btc["MCC"], btc["Balanced accuracy"], btc["Signals LONG / SHORT"]) == (
        "0.121",
        "0.470",
        "400 / 300",
    )
    assert "test slice" in btc["SHORT precision vs break-even"]
    assert cells["XRPUSDT"]["Trades"] == ""  # no simulation recorded
    bad = cells["BADUSDT"]
    assert bad["Status"] == "failed" and "data path not found" in bad["Reason / error"] and bad["MCC"] == ""
    sim = {r["pair"]: r for r in doc["pairs"]}["BTCUSDT"]["trading"]["simulation"]
    assert {k: sim[k] for k in ("n_trades", "total_net_return", "max_drawdown", "random_entry_p_value")} == {
        "n_trades": 85,
        "total_net_return": 0.0734,
        "max_drawdown": 0.021,
        "random_entry_p_value": 0.012,
    }
    assert sim["sharpe_per_trade"] is None  # figures of a reporter that did not record it


def test_figures_without_a_verdict_get_no_check_mark(tmp_path, write_summary):
    _, _, cells, _ = write_summary(tmp_path)
    long = cells["ADAUSDT"]["LONG precision vs break-even"]
    assert (
        long.startswith("0.450 vs break-even 0.400") and "no verdict recorded" in long and CHECK not in long
    )


# -- `trainer batch` end to end ----------------------------------------------------------------


HOLD_ONLY = '''"""A model builder whose softmax always says HOLD (a test plugin)."""
import keras
from trainer_core import hookimpl


class HoldOnly:
    def build(self, input_shape, n_classes, params):
        x = keras.Input(input_shape)
        y = keras.layers.Flatten()(x)
        out = keras.layers.Dense(n_classes, activation="softmax", kernel_initializer="zeros",
                                 bias_initializer=keras.initializers.Constant([0.0, 50.0, 0.0]))(y)
        return keras.Model(x, out)


@hookimpl
def trainer_register_model_builders(register):
    register("hold-only", HoldOnly)
'''


@pytest.mark.slow
def test_trainer_batch_table_shows_the_scores_flags_one_class_and_sorts(tmp_path):
    import yaml
    from test_batch import base_env, progress, table, tiny_defaults, trainer_batch, with_path

    (tmp_path / "hold_only.py").write_text(HOLD_ONLY)
    doc = {
        "version": 1,
        "output": str(tmp_path / "out"),
        "plugins": ["hold_only"],
        "batch": {"max_retries": 0},
        "defaults": tiny_defaults(),
        "pairs": [{"pair": "XRPUSDT", "model": {"builder": "hold-only"}}, "ETHUSDT"],
    }
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    env = with_path(base_env(TRAINER_RAY_NUM_CPUS="2"), tmp_path)
    r = trainer_batch(manifest, "--sort", "pair", env=env)
    assert r.code == 0, r.both
    (line,) = progress(r.out, "trained", "XRPUSDT")
    assert re.search(
        r"val_accuracy \d\.\d{4}, 1 epoch\(s\), [\d.]+s, on the test slice: MCC 0\.000, balanced accuracy 0\.333, "
        r"signals LONG 0 / SHORT 0; predicts HOLD only",
        line,
    ), line
    (line,) = progress(r.out, "trained", "ETHUSDT")
    assert re.search(
        r"MCC -?\d\.\d{3}, balanced accuracy \d\.\d{3}, signals LONG [\d,]+ / SHORT [\d,]+", line
    ), line
    assert "predicts" not in line
    assert "MCC, BAL_ACC, LONG, SHORT: on the test slice; VAL_ACC, VAL_LOSS: validation" in r.out
    header = next(x for x in r.out.splitlines() if x.startswith("PAIR "))
    assert header.split() == [
        "PAIR",
        "STATUS",
        "EPOCHS",
        "VAL_ACC",
        "MCC",
        "BAL_ACC",
        "LONG",
        "SHORT",
        "VAL_LOSS",
        "TIME",
        "WARNING",
        "ARTIFACTS",
        "/",
        "ERROR",
    ]
    rows = table(r.out)
    assert list(rows) == ["ETHUSDT", "XRPUSDT"], r.both  # --sort pair
    xrp = rows["XRPUSDT"]
    assert xrp[:2] == ["trained", "1"] and xrp[3:6] == ["0.000", "0.333", "0"] and xrp[6] == "0"
    assert " ".join(xrp[-4:-1]) == "predicts HOLD only" and xrp[-1] == str(tmp_path / "out" / "XRPUSDT")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sort"] == "pair" and summary["order"] == ["ETHUSDT", "XRPUSDT"]
    html = (tmp_path / "out" / "summary.html").read_text()
    assert "predicts HOLD only" in html and "no signals: the model predicts HOLD only" in html
    assert "&#10003; beats" not in html.split("XRPUSDT</b>")[1].split("</tr>")[0]


def test_the_page_names_each_pairs_champion_and_challenger(tmp_path, row):
    from trainer_plugins.reporters.summary import render_html

    pairs = [
        row("ETHUSDT", models={"champion": 2, "challenger": 3, "versions": [1, 2, 3]}),
        row("BTCUSDT", models={"champion": None, "challenger": 1, "versions": [1]}),
        row("SOLUSDT", models=None),
    ]
    summary = {
        "pairs": pairs,
        "order": ["ETHUSDT", "BTCUSDT", "SOLUSDT"],
        "counts": {"trained": 3},
        "manifest": "m.yaml",
        "output": "out",
        "started": "2026-12-01T10:00:00+00:00",
        "finished": "2026-12-01T10:01:00+00:00",
        "seconds": 60.0,
        "interrupted": False,
    }
    page = render_html(summary)  # the page from summary.json's pairs[].models
    parser = Table()
    parser.feed(page)
    header, *body = parser.rows
    cells = {re.match(r"[A-Z0-9]+", r[0]).group(): r[0] for r in body}
    assert "champion #2; challenger #3" in cells["ETHUSDT"], cells
    assert "no champion; challenger #1" in cells["BTCUSDT"], cells
    assert "champion" not in cells["SOLUSDT"], cells  # no version store: nothing claimed
