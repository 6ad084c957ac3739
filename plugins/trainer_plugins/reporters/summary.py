"""Reporter `summary`: a batch's ``summary.json`` and ``summary.html`` in the output root.

A batch reporter only (`report_batch`). It reads the figures the built-in `trading` and
`confusion-matrix` reporters returned for each pair (their keys, never their files). The summary
is merged per pair with the one already there, under a lock on a local output: a rerun that
trains nothing keeps each pair's last figures, and two batches on one output each add their own
pairs instead of the last writer's page replacing the other's. Across the pairs it adds the
multiple-testing figures (Benjamini-Hochberg q-values, the deflated Sharpe ratio of the best pair).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from trainer_core import figure_of, hookimpl

from .trading.report import SIDE_HEADLINE

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
    "measured_on",
    "headline_samples",
    "val_mcc",
)
#: a side of a summary row: the trading headline's figures, precision against break-even and the edge first
SIDE_KEYS = tuple(dict.fromkeys(("precision", "break_even", "edge", *SIDE_HEADLINE)))
SIMULATION_KEYS = (
    "n_trades",
    "total_net_return",
    "max_drawdown",
    "random_entry_p_value",
    "random_entry_draws",
    "sharpe_per_trade",
    "skewness",
    "kurtosis",
)
#: seconds a batch waits for another batch writing the same output's summary
LOCK_TIMEOUT = 120
LOCK_FILE = ".summary.lock"
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
            "cells_looked_at": figures.get("cells_looked_at"),
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
    verdict, except that a model predicting one class only claims nothing, and a verdict recorded
    before verdicts accounted for overlapping signals (no ``n_effective``) claims nothing either."""
    no_signals = not side.get("n") and side.get("precision") is None
    if single_class:
        return f"{'no signals' if no_signals else 'no claim'}: the model predicts {single_class} only"
    if no_signals:
        return "no signals"
    if side.get("verdict") == BEATS and side.get("n_effective") is None:
        return "no dependence-aware verdict recorded (retrain with --force)"
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
        "models": _model_versions(row.get("artifacts")) if has_artifacts else None,
    }


def _model_versions(location: Any) -> dict | None:
    """The pair's champion, challenger and kept versions (docs/lifecycle.md), None without a store."""
    from trainer_core import ModelStore, TrainerError

    try:
        store = ModelStore(str(location))
        if not store.exists():
            return None
        state = store.state()
    except (TrainerError, OSError, ValueError):
        return None
    return {
        "champion": state.aliases.get("champion"),
        "challenger": state.aliases.get("challenger"),
        "versions": sorted(state.versions),
    }


def _versions_cell(models: Any) -> str:
    """The pair cell's line on its versions: which is champion (and challenger), or none."""
    if not isinstance(models, Mapping) or not models.get("versions"):
        return ""
    parts = [f"champion #{models['champion']}" if models.get("champion") else "no champion"]
    if models.get("challenger"):
        parts.append(f"challenger #{models['challenger']}")
    return f'<br><small class="versions">{html.escape("; ".join(parts))}</small>'


def order_of(pairs: list[dict], sort: str, larger_is_better: bool) -> list[str]:
    """The pairs best first by ``sort`` (a metric, or a figure of the trading report): pairs lacking
    it after the others, failed and cancelled pairs last, ties in the given order."""

    def key(item):
        index, r = item
        last = r["status"] in ("failed", "cancelled")
        if sort == "pair":
            return (last, 0, r["pair"], index)
        value = figure_of({"metrics": r.get("metrics"), "figures": r.get("trading")}, sort)
        if value is None:
            return (last, 1, 0.0, index)
        return (last, 0, -value if larger_is_better else value, index)

    return [r["pair"] for _, r in sorted(enumerate(pairs), key=key)]


def _still_there(storage, row: dict) -> bool:
    """Whether a pair's committed artifacts recorded in an earlier summary are still the ones on disk."""
    raw = storage.read_bytes(f"{row['pair']}/_SUCCESS.json")
    if raw is None:
        return False
    try:
        return json.loads(raw).get("finished") == row.get("trained_at")
    except (ValueError, AttributeError):
        return False


def merge_pairs(previous: list[dict], current: list[dict], storage) -> list[dict]:
    """Per pair, the row to show: this batch's, except that a pair this batch skipped keeps the
    figures of its last training, and a pair that failed or was cancelled here (another batch held
    it, say) keeps the intact result an earlier or concurrent batch recorded, with this attempt
    under ``last_attempt``. Pairs only the earlier summary lists stay, after this batch's."""
    old = {r["pair"]: r for r in previous if isinstance(r, dict) and "pair" in r}
    out = []
    for row in current:
        before = old.pop(row["pair"], None)
        if before is None or row["status"] == "trained":
            out.append(row)
        elif row["status"] == "skipped":
            # the marker's figures are the pair's own; the earlier summary adds what it lacks
            if before.get("trained_at") == row.get("trained_at"):
                row = {
                    **row,
                    "seconds": row.get("seconds")
                    if row.get("seconds") is not None
                    else before.get("seconds"),
                    "trading": row.get("trading") or before.get("trading"),
                }
            out.append(row)
        elif before.get("status") in ("trained", "skipped") and _still_there(storage, before):
            attempt = {k: row.get(k) for k in ("status", "reason", "error", "hint", "exit_code")}
            out.append({**before, "last_attempt": attempt})
        else:
            out.append(row)
    out.extend(old.values())
    return out


def summary(batch, previous: dict | None = None) -> dict:
    """The whole summary.json document of a `BatchReport`, merged per pair with ``previous`` (the
    summary already in the output), with the batch's multiple-testing figures."""
    from .trading.multiple import batch_corrections

    pairs = [summary_row(row) for row in batch.rows]
    if previous and isinstance(previous.get("pairs"), list):
        pairs = merge_pairs(previous["pairs"], pairs, batch.storage)
    for r in pairs:
        if r.get("trading"):
            r["trading"].pop("q_value", None)
    corrections = batch_corrections(pairs)
    counts: dict[str, int] = {}
    for r in pairs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return {
        "format": FORMAT,
        "manifest": batch.manifest.path,
        "output": batch.output,
        "started": batch.started,
        "finished": batch.finished,
        "seconds": round(batch.seconds, 2),
        "interrupted": batch.interrupted,
        "exit_code": batch.exit_code,
        "counts": counts,
        "this_batch": {"pairs": [r["pair"] for r in batch.rows], "counts": dict(batch.counts)},
        "sort": batch.sort,
        "order": order_of(pairs, batch.sort, batch.larger_is_better),
        "multiple_testing": corrections,
        "pairs": pairs,
    }


def _f(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "" if value is None else f"{value * 100:.2f} %"


def _pval(value: Any) -> str:
    return "" if value is None else (f"{value:.3g}" if value >= 1e-4 else "&lt; 1e-4")


def side_cell(t: Mapping[str, Any]) -> str:
    """One side's precision with its count, the 95 % interval its verdict uses (at the effective
    sample size ``n_eff``) against break-even, and the claim; a check mark only when the claim is
    that it beats break-even."""
    esc = html.escape
    be = f"break-even {t['break_even']:.3f}"
    if t.get("precision") is None:
        return f"{esc(t['claim'])} ({be})"
    n = "" if t.get("n") is None else f" (n = {t['n']:,})"
    low, high = (
        (t.get("ci_low"), t.get("ci_high"))
        if t.get("ci_low") is not None
        else (
            t.get("wilson_low"),
            t.get("wilson_high"),
        )
    )
    interval = "" if low is None else f", 95 % {low:.3f}-{high:.3f}"
    mark = (
        "&#10003; "
        if t["claim"] == BEATS
        else ("&#10007; " if t["claim"] == "does not beat break-even" else "")
    )
    p = f", p = {_pval(t['p_value'])}" if t["claim"] == BEATS and t.get("p_value") is not None else ""
    n_eff = (
        f"<br><small>n_eff = {t['n_effective']:,.0f} of {t['n']:,} overlapping signals</small>"
        if t.get("n_effective") is not None and t.get("n")
        else ""
    )
    return f"{t['precision']:.3f}{n}{interval} vs {be}<br>{mark}{esc(t['claim'])}{p}{n_eff}"


def _slice_word(m: Mapping[str, Any]) -> str:
    return (
        "test" if m.get("measured_on") == "test" else ("early-stopping" if m.get("mcc") is not None else "")
    )


def _multiple_testing_html(mt: Mapping[str, Any] | None) -> str:
    esc = html.escape
    if not mt:
        return ""
    d = mt.get("deflated_sharpe")
    parts = [
        f"<b>Multiple testing.</b> {mt['pairs_tested']} pair(s) with a random-entry p-value; "
        f"<b>{mt['survivors']}</b> survive Benjamini-Hochberg at {mt['fdr'] * 100:g} % FDR (q-value &le; "
        f"{mt['fdr']:g}). The reports looked at {mt['cells_looked_at']:,} pair &times; side &times; threshold "
        "cells in all: a check mark in one cell is one of that many looks."
    ]
    if mt.get("smallest_p_can_survive") is False:
        parts.append(
            f"With {1 / mt['smallest_possible_p_value'] - 1:,.0f} random-entry draws the smallest possible "
            f"p-value ({mt['smallest_possible_p_value']:.2g}) cannot survive the correction across "
            f"{mt['pairs_tested']} pairs: raise <code>evaluation.random_entry_draws</code>."
        )
    if d and d.get("dsr") is not None:
        parts.append(
            f"Best per-trade Sharpe ratio: {esc(d['pair'])} {d['sharpe']:.3f} over {d['n_trades']:,} trades; "
            f"the best of {d['trials']:,} unskilled trials would reach {d['sr0']:.3f} by luck, so its "
            f"<b>deflated Sharpe ratio</b> (the probability its true Sharpe is above that) is {d['dsr']:.3f}."
        )
    return "<p>" + " ".join(parts) + "</p>"


def render_html(summary: dict) -> str:
    """A self-contained page: one row per pair in the summary's sort order, the headline scores
    (labelled with the slice they come from), the trade simulation's totals and q-value, each
    side's precision with its count, interval and verdict, links to each pair's trading report and
    confusion matrix (a thumbnail that opens full size), and the batch's multiple-testing figures.
    The table scrolls sideways inside the page instead of widening it."""
    esc = html.escape
    by_pair = {r["pair"]: r for r in summary["pairs"]}
    order = [by_pair[p] for p in summary.get("order") or [] if p in by_pair]
    order += [r for r in summary["pairs"] if r not in order]
    slices = {_slice_word(r.get("metrics") or {}) for r in summary["pairs"]} - {""}
    rows = []
    for r in order:
        m = r.get("metrics") or {}
        predicted = m.get("predicted") or {}
        signals = f"{predicted['LONG']:,} / {predicted['SHORT']:,}" if predicted else ""
        cm = ""
        if r.get("confusion_matrix_png") and r["status"] in ("trained", "skipped"):
            href = esc(r["confusion_matrix_png"])
            cm = (
                f'<a href="{href}" target="_blank" title="open full size"><img src="{href}" '
                f'alt="confusion matrix of {esc(r["pair"])}" width="96"></a>'
            )
        detail = esc(r.get("error") or r.get("reason") or "")
        if r.get("hint"):
            detail += f"<br><small>{esc(r['hint'])}</small>"
        attempt = r.get("last_attempt")
        if attempt:
            detail += (
                f"<br><small>last attempt {esc(str(attempt.get('status')))}: "
                f"{esc(str(attempt.get('error') or attempt.get('reason') or ''))}; the figures are the "
                "intact earlier result</small>"
            )
        folder = (
            f'<a href="{esc(r["pair"])}/">{esc(r["pair"])}/</a>'
            if r["status"] in ("trained", "skipped")
            else ""
        )
        trading = r.get("trading") or {}
        sim_cells = "<td></td>" * 5
        trade_cells = "<td></td><td></td>"
        if trading:
            sim = trading.get("simulation")
            q = trading.get("q_value")
            if sim:
                sim_cells = (
                    f"<td>{sim['n_trades']:,}</td><td>{_pct(sim['total_net_return'])}</td>"
                    f"<td>{_pct(sim['max_drawdown'])}</td><td>{_pval(sim['random_entry_p_value'])}</td>"
                    f"<td>{_pval(q)}{' <b>survives</b>' if q is not None and q <= 0.05 else ''}</td>"
                )
            where = f"{esc(trading['split'])} slice, " if trading.get("split") else ""
            trade_cells = (
                f'<td class="side">{side_cell(trading["LONG"])}</td>'
                f'<td class="side">{side_cell(trading["SHORT"])}'
                f'<br><small>{where}<a href="{esc(trading["report"])}">trading report</a></small></td>'
            )
        warning = f'<br><span class="warning">&#9888; {esc(r["warning"])}</span>' if r.get("warning") else ""
        warning += _versions_cell(r.get("models"))
        seconds = "" if r.get("seconds") is None else f"{r['seconds']:.0f}s"
        word = _slice_word(m) if len(slices) > 1 else ""  # the slice is named per row only when they differ
        rows.append(
            f"<tr><td><b>{esc(r['pair'])}</b>{warning}</td>"
            f'<td style="color:{STATUS_COLOURS.get(r["status"], "#000")}"><b>{esc(r["status"])}</b></td>'
            f"<td>{m.get('epochs', '')}</td><td>{_f(m.get('val_accuracy'), 4)}</td>"
            f"<td>{_f(m.get('mcc'))}{f'<br><small>{word}</small>' if word else ''}</td>"
            f"<td>{_f(m.get('balanced_accuracy'))}</td><td>{signals}</td>"
            f"<td>{_f(m.get('val_loss'), 4)}</td><td>{seconds}</td>{sim_cells}{trade_cells}"
            f'<td>{folder}</td><td class="detail">{detail}</td><td>{cm}</td></tr>'
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
    slice_note = (
        "MCC, balanced accuracy and the LONG / SHORT signal counts are measured on each pair's untouched "
        "test slice"
        if slices == {"test"}
        else "MCC, balanced accuracy and the LONG / SHORT signal counts are <b>measured on the early-stopping "
        "slice</b> (no test slice: the validation rows that chose the epoch), so they are optimistic"
        if slices == {"early-stopping"}
        else "MCC, balanced accuracy and the LONG / SHORT signal counts are measured on the slice named under "
        "each MCC: <i>test</i> (untouched) or <i>early-stopping</i> (no test slice: the validation rows that "
        "chose the epoch, so optimistic)"
    )
    this = summary.get("this_batch") or {}
    merged = (
        f" The page also keeps {len(summary['pairs']) - len(this.get('pairs', []))} pair(s) of earlier or "
        "concurrent batches on this output."
        if this and len(summary["pairs"]) > len(this.get("pairs", []))
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pair-trainer batch summary</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #1f2328; }}
p {{ max-width: 75em; }}
.scroll {{ overflow-x: auto; max-width: 100%; border: 1px solid #d0d7de; }}
table {{ border-collapse: collapse; font-size: 14px; }}
td, th {{ border-bottom: 1px solid #d0d7de; padding: .35em .6em; text-align: left; vertical-align: top; }}
th {{ background: #f6f8fa; position: sticky; top: 0; }}
td:first-child, th:first-child {{ position: sticky; left: 0; background: #fff; }}
th:first-child {{ background: #f6f8fa; }}
small {{ color: #57606a; }} .warning {{ color: #cf222e; font-weight: bold; }}
td.side {{ min-width: 15em; max-width: 19em; }} td.detail {{ max-width: 20em; overflow-wrap: anywhere; }}
</style></head><body>
<h1>Batch summary</h1>
<p>Manifest <code>{esc(str(summary["manifest"]))}</code>, output <code>{esc(str(summary["output"]))}</code>.
Started {esc(summary["started"])}, finished {esc(summary["finished"])} ({summary["seconds"]:.0f} s): {esc(counts)}.{note}{merged}</p>
<p>{order_note} {slice_note}; validation accuracy and loss are the validation slice's. The trade
simulation and the precisions are the trading report's, on the slice it names. A side is marked
&#10003; only when its 95 % interval, computed at the effective number of independent outcomes
(<code>n_eff</code>: overlapping signals counted once per block of the label horizon), lies above the
break-even win rate with enough signals, and never for a model that predicts one class only. The
q-value is the random-entry p-value adjusted (Benjamini-Hochberg) for the number of pairs.</p>
{_multiple_testing_html(summary.get("multiple_testing"))}
<div class="scroll"><table><tr><th>Pair</th><th>Status</th><th>Epochs</th><th>Val. accuracy</th><th>MCC</th><th>Balanced accuracy</th>
<th>Signals LONG / SHORT</th><th>Val. loss</th><th>Time</th><th>Trades</th><th>Total net return</th><th>Max drawdown</th>
<th>Random-entry p-value</th><th>q-value</th><th>LONG precision vs break-even</th><th>SHORT precision vs break-even</th>
<th>Artifacts</th><th>Reason / error</th><th>Confusion matrix</th></tr>
{chr(10).join(rows)}
</table></div></body></html>
"""


class _SummaryLock:
    """An exclusive lock on a local output's summary (fcntl), so batches merge in turn."""

    def __init__(self, storage):
        self.path = getattr(storage, "path", None) if getattr(storage, "is_local", False) else None
        self.handle = None

    def __enter__(self):
        if self.path is None:
            return self  # an object store: read-merge-write without a lock (see docs/batch.md)
        import fcntl
        import time

        self.path.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path / LOCK_FILE, "a+")  # noqa: SIM115 (held across the block)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.handle.close()
                    from trainer_core import StorageError

                    raise StorageError(
                        f"Another batch has held {self.path / LOCK_FILE} for {LOCK_TIMEOUT} s.",
                        "Wait for it to finish, then run the batch again (its pairs are kept).",
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *exc):
        if self.handle is not None:
            import fcntl

            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()


def read_previous(storage) -> dict | None:
    """The summary.json already in the output, or None (absent, unreadable, another format)."""
    raw = storage.read_bytes(SUMMARY_JSON)
    if raw is None:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT else None


class SummaryReporter:
    """summary.json and summary.html of a batch, in the output root (a batch reporter)."""

    def report_pair(self, result, out) -> None:
        """Nothing per pair: the summary is written once, by `report_batch`."""
        return None

    def report_batch(self, batch) -> list[str]:
        """Merge this batch into summary.json, then write summary.html, under the output's summary
        lock; return where they are."""
        with _SummaryLock(batch.storage):
            doc = summary(batch, read_previous(batch.storage))
            batch.storage.write_bytes(SUMMARY_JSON, dumps(doc).encode())
            batch.storage.write_bytes(SUMMARY_HTML, render_html(doc).encode())
        return [batch.storage.url(SUMMARY_JSON), batch.storage.url(SUMMARY_HTML)]


@hookimpl
def trainer_register_reporters(register):
    """Register the ``summary`` reporter."""
    register("summary", SummaryReporter)
