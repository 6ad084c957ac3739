"""Reporter `confusion-matrix`: counts, row-normalised rates and per-class scores on the whole
validation set (and the test slice when there is one), as JSON and a PNG a person can read."""

from __future__ import annotations

import numpy as np

from trainer_core import CLASS_NAMES, hookimpl


def confusion_report(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Counts, row-normalised rates, accuracy, macro F1 and per-class precision / recall / F1 / support of 3-class predictions."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    labels = list(range(len(CLASS_NAMES)))
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    rows = cm.sum(axis=1, keepdims=True)
    rates = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    n = int(cm.sum())
    return {
        "class_names": list(CLASS_NAMES),
        "sample_count": n,
        "accuracy": float(np.trace(cm) / n) if n else None,
        "confusion_matrix": cm.tolist(),
        "confusion_matrix_normalized": np.round(rates, 6).tolist(),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(cm[:, i].sum()),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "macro_f1": float(np.mean(f1)),
        "note": "rows are true classes, columns predicted classes; rates are normalised per true class",
    }


def plot_confusion(report: dict, title: str, path) -> None:
    """Save a `confusion_report` as a PNG at ``path``: counts and rates side by side, the per-class scores below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.array(report["confusion_matrix"])
    rates = np.array(report["confusion_matrix_normalized"])
    names = report["class_names"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6))
    for ax, matrix, subtitle in ((axes[0], cm, "Counts"), (axes[1], rates, "Rate per true class")):
        shown = rates if subtitle == "Counts" else matrix
        ax.imshow(shown, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(names)):
            for j in range(len(names)):
                text = f"{cm[i, j]:,}" if subtitle == "Counts" else f"{rates[i, j]:.1%}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=12,
                    color="white" if rates[i, j] > 0.55 else "black",
                )
        ax.set_xticks(range(len(names)), names)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
        ax.set_title(subtitle)
    lines = [f"{'':6}{'precision':>10}{'recall':>8}{'F1':>7}{'support':>9}"]
    for name in names:
        pc = report["per_class"][name]
        lines.append(
            f"{name:6}{pc['precision']:>10.3f}{pc['recall']:>8.3f}{pc['f1']:>7.3f}{pc['support']:>9,}"
        )
    acc = report["accuracy"]
    fig.suptitle(
        f"{title}  -  {report['sample_count']:,} samples, accuracy {acc:.3f}, macro F1 {report['macro_f1']:.3f}"
    )
    fig.text(0.5, 0.01, "\n".join(lines), family="monospace", ha="center", va="bottom", fontsize=10)
    fig.tight_layout(rect=(0, 0.17, 1, 0.95))
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


class ConfusionMatrixReporter:
    """confusion_matrix_{tag}.json and .png on the whole validation set at its natural class mix."""

    def report_pair(self, result, out) -> dict:
        """Write the matrix as JSON and PNG; return the PNG's name for the batch summary."""
        ev = result.validation
        report = {"pair": result.spec.pair, "split": "validation", **confusion_report(ev.y_true, ev.y_pred)}
        if "test" in result.evaluations:
            test = result.evaluations["test"]
            report["test"] = confusion_report(test.y_true, test.y_pred)
        out.write_json(out.name("confusion_matrix", "json"), report)
        with out.writing(out.name("confusion_matrix", "png")) as tmp:
            plot_confusion(report, f"{result.spec.pair} validation", tmp)
        return {"png": out.name("confusion_matrix", "png"), "json": out.name("confusion_matrix", "json")}


@hookimpl
def trainer_register_reporters(register):
    """Register the ``confusion-matrix`` reporter."""
    register("confusion-matrix", ConfusionMatrixReporter)
