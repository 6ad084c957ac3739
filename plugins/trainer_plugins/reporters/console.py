"""Plugin `console`: a batch's progress lines and its final table on the terminal, as pytest's
terminal reporter is a plugin of pytest. It implements ``trainer_batch_progress``; the engine
prints nothing of its own while pairs train."""

from __future__ import annotations

from typing import Any

from trainer_core import BatchEvent, figure_of, hookimpl


def clock(seconds: float) -> str:
    """``MM:SS``, or ``H:MM:SS`` from an hour on."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def detail(event: BatchEvent) -> str:
    """What a progress line says about its pair: a trained pair's scores, a failure's message."""
    row = event.row
    if event.kind == "waiting" and event.waited is not None:
        return f"not started after {clock(event.waited)}: {event.detail}"
    if row is None:
        return event.detail
    if row.status == "trained":
        m = row.metrics
        out = f"val_accuracy {m['val_accuracy']:.4f}, {m['epochs']} epoch(s), {row.seconds:.1f}s"
        scores = _scores(m)
        if scores:
            out += f", {_slice_label(m)}: " + scores
        if m.get("single_class"):
            out += f"; predicts {m['single_class']} only"
        return out
    return row.error or row.status


def line(event: BatchEvent) -> str:
    """``[MM:SS] STATE    PAIR   DETAIL  (done/to_run done, N failed, ETA MM:SS)``."""
    if event.kind == "skipped":
        return f"[{clock(0)}] skipped   {event.pair:<14} {event.detail}"
    eta = ""
    if event.done and event.done < event.to_run:
        eta = f", ETA {clock(event.elapsed / event.done * (event.to_run - event.done))}"
    return (
        f"[{clock(event.elapsed)}] {event.kind:<9} {event.pair:<14} {detail(event)}  "
        f"({event.done}/{event.to_run} done, {event.failed} failed{eta})"
    )


def table(report) -> str:
    """The final table: one line per pair, best first by the report's ``sort`` (failed and
    cancelled pairs last), with the class-balance-aware scores and signal counts beside the
    validation accuracy, and a warning for a model that predicts one class only."""
    extra = report.sort not in ("pair", "mcc", "balanced_accuracy", "val_accuracy", "val_loss")
    rows = [
        ["PAIR", "STATUS", "EPOCHS", "VAL_ACC", "MCC", "BAL_ACC", "LONG", "SHORT", "VAL_LOSS", "TIME"]
        + ([report.sort.upper()] if extra else [])
    ]
    warnings = []
    for r in report.sorted_rows():
        m = r["metrics"] or {}
        predicted = m.get("predicted") or {}
        cells = [
            r["pair"],
            r["status"],
            str(m.get("epochs", "")),
            _fixed(m.get("val_accuracy"), 4),
            _fixed(m.get("mcc"), 3),
            _fixed(m.get("balanced_accuracy"), 3),
            str(predicted.get("LONG", "")),
            str(predicted.get("SHORT", "")),
            _fixed(m.get("val_loss"), 4),
            f"{r['seconds']:.0f}s" if r["seconds"] is not None else "",
        ]
        if extra:
            cells.append(_fixed(figure_of(r, report.sort), 4))
        rows.append(cells)
        warnings.append(f"predicts {m['single_class']} only" if m.get("single_class") else "")
        rows[-1].append(
            r["artifacts"] if r["status"] in ("trained", "skipped") else (r["error"] or r["reason"])
        )
    rows[0].append("ARTIFACTS / ERROR")
    if any(warnings):  # the column shows only when a model predicts one class
        for row, warning in zip(rows, ["WARNING", *warnings]):
            row.insert(-1, warning)
    n = len(rows[0]) - 1
    widths = [max(len(row[i]) for row in rows) for i in range(n)]
    slices = {(r["metrics"] or {}).get("measured_on") for r in report.rows if r["metrics"]} - {None}
    note = (
        "MCC, BAL_ACC, LONG, SHORT: "
        + " / ".join(sorted(_slice_label({"measured_on": s}) for s in slices))
        + "; VAL_ACC, VAL_LOSS: validation"
        if slices
        else ""
    )
    return "\n".join(
        ["  ".join(c.ljust(w) for c, w in zip(row[:n], widths)) + "  " + str(row[n]) for row in rows]
        + (["", note] if note else [])
    )


def _slice_label(m: dict) -> str:
    """Where a pair's headline scores were measured, as the CLI says it."""
    return "on the test slice" if m.get("measured_on") == "test" else "measured on the early-stopping slice"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _fixed(value: Any, digits: int) -> str:
    return "" if _number(value) is None else f"{value:.{digits}f}"


def _scores(m: dict) -> str:
    """MCC, balanced accuracy and the LONG / SHORT signal counts of a pair's metrics ('' without)."""
    if _number(m.get("mcc")) is None:
        return ""
    predicted = m.get("predicted") or {}
    out = f"MCC {m['mcc']:.3f}"
    if _number(m.get("balanced_accuracy")) is not None:
        out += f", balanced accuracy {m['balanced_accuracy']:.3f}"
    if predicted:
        out += f", signals LONG {predicted.get('LONG', 0):,} / SHORT {predicted.get('SHORT', 0):,}"
    return out


@hookimpl
def trainer_batch_progress(event):
    """Print the event's line (and a failed pair's traceback), or the final table."""
    if event.kind == "finished":
        event.echo("")
        event.echo(table(event.report))
        return
    event.echo(line(event))
    if event.row is not None and event.row.traceback:  # where the failed pair's hint says it is
        for text in event.row.traceback.rstrip().splitlines():
            event.echo(f"[{event.pair}] {text}")
