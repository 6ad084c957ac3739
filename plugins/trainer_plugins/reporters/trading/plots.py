"""The trading report's charts: precision against break-even per threshold, signal counts and net
returns, reliability (a PNG file); the simulation's equity curve, drawdown and random-entry totals
(a base64 PNG embedded in the page)."""

from __future__ import annotations

import numpy as np


def _fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def plot_trading(report: dict, title: str, path) -> None:
    """Save the report's charts as a PNG at ``path``: precision vs break-even, signals per threshold, reliability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    thr = [r["threshold"] for r in report["thresholds"]]
    colours = {"LONG": "#1a7f37", "SHORT": "#cf222e"}
    ax = axes[0]
    for side in ("LONG", "SHORT"):
        prec = [
            r[side]["precision"] if r[side]["precision"] is not None else np.nan for r in report["thresholds"]
        ]
        ax.plot(thr, prec, "o-", color=colours[side], label=f"{side} precision")
        ax.axhline(
            report["break_even"][side]["break_even_win_rate"],
            color=colours[side],
            ls="--",
            lw=1,
            label=f"{side} break-even",
        )
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("precision")
    ax.set_xlim(min(thr) - 0.05, max(thr) + 0.05)
    ax.set_ylim(0, 1)
    ax.set_title("Precision of signals vs break-even")
    ax.legend(fontsize=8)
    ax = axes[1]
    width = 0.03
    for k, side in enumerate(("LONG", "SHORT")):
        counts = [r[side]["signals"] for r in report["thresholds"]]
        ax.bar(np.array(thr) + (k - 0.5) * width, counts, width=width, color=colours[side], label=side)
    ax.set_xlabel("confidence threshold")
    ax.set_ylabel("signals")
    ax.set_title("Number of signals")
    ax2 = ax.twinx()
    for side in ("LONG", "SHORT"):
        net = [
            r[side]["mean_net_return"] * 100 if r[side]["mean_net_return"] is not None else np.nan
            for r in report["thresholds"]
        ]
        ax2.plot(thr, net, "s--", color=colours[side], alpha=0.7)
    ax2.axhline(0, color="grey", lw=0.8)
    ax2.set_ylabel("mean net return per signal (%)")
    ax.legend(fontsize=8, loc="upper right")
    ax = axes[2]
    bins = [b for b in report["calibration"]["bins"] if b["count"]]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="#0969da")
    for b in bins:
        ax.annotate(
            f"{b['count']:,}",
            (b["mean_confidence"], b["accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(3, -9),
        )
    ece = report["calibration"]["expected_calibration_error"]
    ax.set_title(f"Reliability (ECE {_fmt(ece)})")
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def plot_simulation(sim: dict, chart: dict, title: str) -> str:
    """Equity curve (cumulative net return per trade, with buy-and-hold), its drawdown, and the
    random-entry totals against the model's; a base64 PNG."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(11, 9), gridspec_kw={"height_ratios": [3, 1.4, 1.6]})
    times = np.asarray([t["exit_time"].rstrip("Z") for t in sim["trades"]], dtype="datetime64[s]")
    equity = np.cumsum([t["net_return"] for t in sim["trades"]]) * 100
    ax = axes[0]
    ax.plot(
        chart["bh_time"].astype("datetime64[s]"),
        chart["bh"] * 100,
        color="#8c959f",
        lw=1,
        label="buy and hold (price move)",
    )
    if len(times):
        ax.step(
            times,
            equity,
            where="post",
            color="#0969da",
            lw=1.5,
            label=f"model: {sim['n_trades']} trades, net of costs ({sim['costs']['round_trip_pct']:g} % round trip"
            + (", funding" if sim["costs"]["funding_rate_pct"] else "")
            + ")",
        )
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel("cumulative return (%)")
    thr = "arg-max" if sim["threshold"] is None else f"p >= {sim['threshold']:g}"
    ax.set_title(f"{title}: equity curve ({thr}, one position at a time)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    if len(times):
        dd = equity - np.maximum.accumulate(np.maximum(equity, 0))
        ax.fill_between(times, dd, 0, step="post", color="#cf222e", alpha=0.4)
    ax.set_ylabel("drawdown (%)")
    ax.set_title(f"Drawdown of the cumulative net return (max {sim['max_drawdown'] * 100:.2f} %)")
    ax = axes[2]
    totals = chart["random_totals"] * 100
    rnd = sim["baselines"]["random_entry"]
    if len(totals):
        ax.hist(totals, bins=40, color="#8c959f")
        ax.axvline(sim["total_net_return"] * 100, color="#0969da", lw=2, label="model")
        ax.legend(fontsize=8)
        ax.set_title(
            f"Total net return of {rnd['draws']} random-entry draws with {rnd['n_trades']} trades "
            f"(p = {rnd['p_value']:.3f})"
        )
    else:
        ax.set_title("Random entries: the model made no trades")
    ax.set_xlabel("total net return (%)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, dpi=90, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")
