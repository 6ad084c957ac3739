"""Reporter `summary`: a batch's ``summary.json`` and ``summary.html`` in the output root.

A batch reporter only (`report_batch`). It reads the figures the built-in `trading` and
`confusion-matrix` reporters returned for each pair (their keys, never their files).
"""

from __future__ import annotations

import html
import json
from typing import Any, Mapping

from trainer_core import hookimpl

SUMMARY_JSON = "summary.json"
SUMMARY_HTML = "summary.html"
FORMAT = "pair-trainer batch summary v1"
#: the engine metrics a summary row shows (the rest stay in each pair's _SUCCESS.json)
ROW_METRICS = ("val_accuracy", "val_loss", "val_samples", "epochs", "best_epoch")
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
        out = {"mcc": figures["mcc"], "macro_f1": figures["macro_f1"],
               "baseline_hold_macro_f1": figures["baseline_hold_macro_f1"],
               "report": _in_pair(pair, figures["report"])}
        for side in ("LONG", "SHORT"):
            s = figures[side]
            out[side] = {"precision": s["precision"], "break_even": s["break_even"], "edge": s["edge"]}
    except (KeyError, TypeError):
        return None
    return out


def summary_row(row: Mapping[str, Any]) -> dict:
    """One `pairs[]` entry of summary.json from a `BatchReport` row."""
    figures = row.get("figures") or {}
    metrics = row.get("metrics") or {}
    seconds = row.get("seconds")
    cm = figures.get("confusion-matrix") if isinstance(figures.get("confusion-matrix"), Mapping) else {}
    has_artifacts = row["status"] in ("trained", "skipped")
    return {
        "pair": row["pair"],
        "status": row["status"],
        "reason": row.get("reason", ""),
        "error": row.get("error"),
        "hint": row.get("hint"),
        "exit_code": row.get("exit_code"),
        "seconds": None if seconds is None else round(seconds, 2),
        "metrics": {k: metrics[k] for k in ROW_METRICS if k in metrics},
        "trading": _trading(row["pair"], figures.get("trading")) if has_artifacts else None,
        "artifacts": row.get("artifacts"),
        "confusion_matrix_png": _in_pair(row["pair"], cm.get("png")) if has_artifacts else None,
        "trained_at": row.get("trained_at") if has_artifacts else None,
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
        "pairs": [summary_row(row) for row in batch.rows],
    }


def render_html(summary: dict) -> str:
    """A self-contained page: one row per pair, links to each pair's confusion matrix."""
    esc = html.escape
    rows = []
    for r in summary["pairs"]:
        m = r.get("metrics") or {}
        acc = f"{m['val_accuracy']:.4f}" if m.get("val_accuracy") is not None else ""
        loss = f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else ""
        cm = ""
        if r.get("confusion_matrix_png") and r["status"] in ("trained", "skipped"):
            href = esc(r["confusion_matrix_png"])
            cm = f'<a href="{href}"><img src="{href}" alt="confusion matrix of {esc(r["pair"])}" width="220"></a>'
        detail = esc(r.get("error") or r.get("reason") or "")
        if r.get("hint"):
            detail += f"<br><small>{esc(r['hint'])}</small>"
        folder = f'<a href="{esc(r["pair"])}/">{esc(r["pair"])}/</a>' if r["status"] in ("trained", "skipped") else ""
        trading = r.get("trading") or {}
        trade_cells = "<td></td><td></td><td></td>"
        if trading:
            def side(name):
                t = trading[name]
                if t["precision"] is None:
                    return f"no {name} predictions (break-even {t['break_even']:.3f})"
                mark = "&#10003;" if t["edge"] > 0 else "&#10007;"
                return f"{t['precision']:.3f} vs {t['break_even']:.3f} {mark}"
            trade_cells = (f"<td>{trading['mcc']:.3f}</td><td>{side('LONG')}</td><td>{side('SHORT')}"
                           f'<br><small><a href="{esc(trading["report"])}">trading report</a></small></td>')
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.0f}s"
        rows.append(
            f"<tr><td><b>{esc(r['pair'])}</b></td>"
            f'<td style="color:{STATUS_COLOURS.get(r["status"], "#000")}"><b>{esc(r["status"])}</b></td>'
            f"<td>{m.get('epochs', '')}</td><td>{acc}</td><td>{loss}</td>"
            f"<td>{seconds}</td>{trade_cells}"
            f"<td>{folder}</td><td>{detail}</td><td>{cm}</td></tr>"
        )
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    note = " <b>Interrupted</b>: pairs still running were cancelled." if summary["interrupted"] else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pair-trainer batch summary</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
table {{ border-collapse: collapse; }} td, th {{ border-bottom: 1px solid #d0d7de; padding: .4em .8em; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; }} small {{ color: #57606a; }}
</style></head><body>
<h1>Batch summary</h1>
<p>Manifest <code>{esc(str(summary['manifest']))}</code>, output <code>{esc(str(summary['output']))}</code>.
Started {esc(summary['started'])}, finished {esc(summary['finished'])} ({summary['seconds']:.0f} s): {esc(counts)}.{note}</p>
<table><tr><th>Pair</th><th>Status</th><th>Epochs</th><th>Val. accuracy</th><th>Val. loss</th><th>Time</th>
<th>MCC</th><th>LONG precision vs break-even</th><th>SHORT precision vs break-even</th><th>Artifacts</th><th>Reason / error</th><th>Confusion matrix</th></tr>
{chr(10).join(rows)}
</table></body></html>
"""


class SummaryReporter:
    """summary.json and summary.html of a batch, in the output root (a batch reporter)."""

    def report_pair(self, result, out) -> None:
        """Nothing per pair: the summary is written once, by `report_batch`."""
        return None

    def report_batch(self, batch) -> None:
        """Write summary.json, then summary.html, replacing the previous batch's."""
        doc = summary(batch)
        batch.storage.write_bytes(SUMMARY_JSON, dumps(doc).encode())
        batch.storage.write_bytes(SUMMARY_HTML, render_html(doc).encode())


@hookimpl
def trainer_register_reporters(register):
    register("summary", SummaryReporter)
