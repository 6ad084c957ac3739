"""Reporter `summary`: a batch's ``summary.json`` and ``summary.html`` in the output root.

A batch reporter only (`report_batch`). It reads the figures the built-in `trading` and
`confusion-matrix` reporters returned for each pair (their keys, never their files).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from trainer_core import hookimpl

SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"
FORMAT = "pair-trainer batch summary v1"
#: the engine metrics a summary row shows (the rest stay in each pair's _SUCCESS.json)
ROW_METRICS = (
    "val_accuracy",
    "val_loss",
    "val_samples",
    "epochs",
    "best_epoch",
    "mcc",
    "balanced_accuracy",
    "predicted",
    "single_class",
)
SIDE_KEYS = ("precision", "break_even", "edge", "n", "wilson_low", "wilson_high", "p_value", "verdict")
SIMULATION_KEYS = ("n_trades", "total_net_return", "max_drawdown", "random_entry_p_value")
BEATS = "beats break-even"
SORT_LABELS = {
    "mcc": "MCC",
    "balanced_accuracy": "balanced accuracy",
    "val_accuracy": "validation accuracy",
    "val_loss": "validation loss",
    "total_net_return": "the simulation's total net return",
    "max_drawdown": "the simulation's max drawdown",
    "random_entry_p_value": "the random-entry p-value",
    "pair": "pair name",
}
STATUS_COLOURS = {"trained": "#1a7f37", "skipped": "#57606a", "failed": "#cf222e", "cancelled": "#9a6700"}


def dumps(obj: Any) -> str:
    """Indented JSON, numpy scalars and arrays as plain values, NaN refused, newline-terminated."""

    def plain(value):
        if hasattr(value, "tolist"):
            return value.tolist()
        if isinstance(value, (tuple, set)):
            return list(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    return json.dumps(obj, indent=2, default=plain, allow_nan=False) + "\n"


def _in_pair(pair: str, name: Any) -> str | None:
    """A file a pair reporter named (relative to the pair's folder) as a link from the output root."""
    if not isinstance(name, str) or not name:
        return None
    return name if name.startswith(f"{pair}/") else f"{pair}/{name}"


def _trading(pair: str, figures: Mapping[str, Any] | None) -> dict | None:
    """The `trading` reporter's headline figures, with its report linked from the output root."""
    if not isinstance(figures, Mapping) or not figures:
        return None
    try:
        out = {
            "mcc": figures["mcc"],
            "macro_f1": figures["macro_f1"],
            "baseline_hold_macro_f1": figures["baseline_hold_macro_f1"],
            "report": _in_pair(pair, figures["report"]),
            "split": figures.get("split"),
        }
        for side in ("LONG", "SHORT"):
            s = figures[side]
            # figures of an older trading reporter lack the count, interval and verdict: None
            out[side] = {k: s.get(k) for k in SIDE_KEYS}
            out[side]["precision"], out[side]["break_even"] = s["precision"], s["break_even"]
        sim = figures.get("simulation")
        out["simulation"] = {k: sim.get(k) for k in SIMULATION_KEYS} if isinstance(sim, Mapping) else None
    except (KeyError, TypeError, AttributeError):
        return None
    return out


def claim(side: Mapping[str, Any], single_class: str | None) -> str:
    """What a summary says of one side's precision against break-even: the trading reporter's
    verdict, except that a model predicting one class only claims nothing."""
    no_signals = not side.get("n") and side.get("precision") is None
    if single_class:
        return f"{'no signals' if no_signals else 'no claim'}: the model predicts {single_class} only"
    if no_signals:
        return "no signals"
    return side.get("verdict") or "no verdict recorded (retrain with --force)"


def summary_row(row: Mapping[str, Any]) -> dict:
    """One `pairs[]` entry of summary.json from a `BatchReport` row."""
    figures = row.get("figures") or {}
    metrics = row.get("metrics") or {}
    seconds = row.get("seconds")
    cm = figures.get("confusion-matrix") if isinstance(figures.get("confusion-matrix"), Mapping) else {}
    has_artifacts = row["status"] in ("trained", "skipped")
    trading = _trading(row["pair"], figures.get("trading")) if has_artifacts else None
    single = metrics.get("single_class") if has_artifacts else None
    if trading:
        for side in ("LONG", "SHORT"):
            trading[side]["claim"] = claim(trading[side], single)
    return {
        "pair": row["pair"],
        "status": row["status"],
        "reason": row.get("reason", ""),
        "error": row.get("error"),
        "hint": row.get("hint"),
        "exit_code": row.get("exit_code"),
        "seconds": None if seconds is None else round(seconds, 2),
        "metrics": {k: metrics[k] for k in ROW_METRICS if k in metrics},
        "trading": trading,
        "artifacts": row.get("artifacts"),
        "confusion_matrix_png": _in_pair(row["pair"], cm.get("png")) if has_artifacts else None,
        "trained_at": row.get("trained_at") if has_artifacts else None,
        "warning": f"predicts {single} only" if single else None,
    }


def summary(batch) -> dict:
    """The whole summary.json document of a `BatchReport`."""
    return {
        "format": FORMAT,
        "manifest": batch.manifest.path,
        "output": batch.output,
        "started": batch.started,
        "finished": batch.finished,
        "seconds": round(batch.seconds, 2),
        "interrupted": batch.interrupted,
        "exit_code": batch.exit_code,
        "counts": dict(batch.counts),
        "sort": batch.sort,
        "order": [row["pair"] for row in batch.sorted_rows()],
        "pairs": [summary_row(row) for row in batch.rows],
    }


def _f(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "" if value is None else f"{value * 100:.2f} %"


def _pval(value: Any) -> str:
    return "" if value is None else (f"{value:.3g}" if value >= 1e-4 else "&lt; 1e-4")


def side_cell(t: Mapping[str, Any]) -> str:
    """One side's precision with its count and 95 % Wilson interval against break-even, and the
    claim; a check mark only when the claim is that it beats break-even."""
    esc = html.escape
    be = f"break-even {t['break_even']:.3f}"
    if t.get("precision") is None:
        return f"{esc(t['claim'])} ({be})"
    n = "" if t.get("n") is None else f" (n = {t['n']:,})"
    interval = "" if t.get("wilson_low") is None else f", 95 % {t['wilson_low']:.3f}-{t['wilson_high']:.3f}"
    mark = (
        "&#10003; "
        if t["claim"] == BEATS
        else ("&#10007; " if t["claim"] == "does not beat break-even" else "")
    )
    p = f", p = {_pval(t['p_value'])}" if t["claim"] == BEATS and t.get("p_value") is not None else ""
    return f"{t['precision']:.3f}{n}{interval} vs {be}<br>{mark}{esc(t['claim'])}{p}"


def render_html(summary: dict) -> str:
    """A self-contained page: one row per pair in the summary's sort order, the engine's scores,
    the trade simulation's totals, each side's precision with its count, interval and verdict,
    and links to each pair's trading report and confusion matrix."""
    esc = html.escape
    by_pair = {r["pair"]: r for r in summary["pairs"]}
    order = [by_pair[p] for p in summary.get("order") or [] if p in by_pair]
    order += [r for r in summary["pairs"] if r not in order]
    rows = []
    for r in order:
        m = r.get("metrics") or {}
        predicted = m.get("predicted") or {}
        signals = f"{predicted['LONG']:,} / {predicted['SHORT']:,}" if predicted else ""
        cm = ""
        if r.get("confusion_matrix_png") and r["status"] in ("trained", "skipped"):
            href = esc(r["confusion_matrix_png"])
            cm = f'<a href="{href}"><img src="{href}" alt="confusion matrix of {esc(r["pair"])}" width="220"></a>'
        detail = esc(r.get("error") or r.get("reason") or "")
        if r.get("hint"):
            detail += f"<br><small>{esc(r['hint'])}</small>"
        folder = (
            f'<a href="{esc(r["pair"])}/">{esc(r["pair"])}/</a>'
            if r["status"] in ("trained", "skipped")
            else ""
        )
        trading = r.get("trading") or {}
        sim_cells = "<td></td>" * 4
        trade_cells = "<td></td><td></td>"
        if trading:
            sim = trading.get("simulation")
            if sim:
                sim_cells = (
                    f"<td>{sim['n_trades']:,}</td><td>{_pct(sim['total_net_return'])}</td>"
                    f"<td>{_pct(sim['max_drawdown'])}</td><td>{_pval(sim['random_entry_p_value'])}</td>"
                )
            where = f"{esc(trading['split'])} slice, " if trading.get("split") else ""
            trade_cells = (
                f'<td class="side">{side_cell(trading["LONG"])}</td>'
                f'<td class="side">{side_cell(trading["SHORT"])}'
                f'<br><small>{where}<a href="{esc(trading["report"])}">trading report</a></small></td>'
            )
        warning = f'<br><span class="warning">&#9888; {esc(r["warning"])}</span>' if r.get("warning") else ""
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.0f}s"
        rows.append(
            f"<tr><td><b>{esc(r['pair'])}</b>{warning}</td>"
            f'<td style="color:{STATUS_COLOURS.get(r["status"], "#000")}"><b>{esc(r["status"])}</b></td>'
            f"<td>{m.get('epochs', '')}</td><td>{_f(m.get('val_accuracy'), 4)}</td>"
            f"<td>{_f(m.get('mcc'))}</td><td>{_f(m.get('balanced_accuracy'))}</td><td>{signals}</td>"
            f"<td>{_f(m.get('val_loss'), 4)}</td><td>{seconds}</td>{sim_cells}{trade_cells}"
            f"<td>{folder}</td><td>{detail}</td><td>{cm}</td></tr>"
        )
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    note = " <b>Interrupted</b>: pairs still running were cancelled." if summary["interrupted"] else ""
    sort = summary.get("sort") or "mcc"
    order_note = (
        f"Sorted by {esc(SORT_LABELS.get(sort, sort))}"
        + ("" if sort == "pair" else ", best first")
        + "; failed and cancelled pairs last "
        "(<code>trainer batch --sort FIGURE</code> picks another order)."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pair-trainer batch summary</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #d0d7de; padding: .4em .8em; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} small {{ color: #57606a; }} .warning {{ color: #cf222e; font-weight: bold; }}
td.side {{ min-width: 17em; }}
</style></head><body>
<h1>Batch summary</h1>
<p>Manifest <code>{esc(str(summary["manifest"]))}</code>, output <code>{esc(str(summary["output"]))}</code>.
Started {esc(summary["started"])}, finished {esc(summary["finished"])} ({summary["seconds"]:.0f} s): {esc(counts)}.{note}</p>
<p>{order_note} MCC, balanced accuracy and the LONG / SHORT signal counts are the engine's, on the
validation slice. The trade simulation and the precisions are the trading report's, on the slice it
names (the test slice when there is one): a side is marked &#10003; only when its 95 % Wilson interval's
lower bound is above the break-even win rate with enough signals, and never for a model that
predicts one class only.</p>
<table><tr><th>Pair</th><th>Status</th><th>Epochs</th><th>Val. accuracy</th><th>MCC</th><th>Balanced accuracy</th>
<th>Signals LONG / SHORT</th><th>Val. loss</th><th>Time</th><th>Trades</th><th>Total net return</th><th>Max drawdown</th>
<th>Random-entry p-value</th><th>LONG precision vs break-even</th><th>SHORT precision vs break-even</th>
<th>Artifacts</th><th>Reason / error</th><th>Confusion matrix</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


class SummaryReporter:
    """summary.json and summary.html of a batch, in the output root (a batch reporter)."""

    def report_pair(self, result, out) -> None:
        """Nothing per pair: the summary is written once, by `report_batch`."""
        return None

    def report_batch(self, batch) -> list[str]:
        """Write summary.json, then summary.html, replacing the previous batch's; return where."""
        doc = summary(batch)
        batch.storage.write_bytes(SUMMARY_JSON, dumps(doc).encode())
        batch.storage.write_bytes(SUMMARY_HTML, render_html(doc).encode())
        return [batch.storage.url(SUMMARY_JSON), batch.storage.url(SUMMARY_HTML)]


@hookimpl
def trainer_register_reporters(register):
    """Register the ``summary`` reporter."""
    register("summary", SummaryReporter)
