"""Reporter `history`: ``history_{tag}.csv``, one row per epoch (loss, accuracy, learning rate, seconds)."""

from __future__ import annotations

import csv
import io

from trainer_core import hookimpl


class HistoryReporter:
    """history_{tag}.csv: the per-epoch metrics Keras recorded, plus each epoch's seconds."""

    def report_pair(self, result, out) -> None:
        """Write ``history_{tag}.csv``: epoch, every Keras metric, and the epoch's seconds (blank when not timed)."""
        hist = result.history
        keys = list(hist)
        epochs = len(hist.get("loss", []))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["epoch", *keys, "seconds"])
        seconds = result.epoch_seconds
        offset = epochs - len(seconds)  # a resumed run timed only the epochs it ran
        for i in range(epochs):
            sec = seconds[i - offset] if i - offset >= 0 and i - offset < len(seconds) else ""
            writer.writerow(
                [i + 1, *(repr(float(hist[k][i])) for k in keys), f"{sec:.3f}" if sec != "" else ""]
            )
        out.write_text(out.name("history", "csv"), buf.getvalue())


@hookimpl
def trainer_register_reporters(register):
    """Register the ``history`` reporter."""
    register("history", HistoryReporter)
