"""The run's dashboard PNG, one point per cycle: accuracy, the large-call rate, calls saved,
the alarms a team acts on, and the money (spend per cycle, money saved so far)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kcm.evaluation.plots import plt_agg, save_png
from kcm.evaluation.report import money_text


def plot_dashboard(
    cycles: Sequence[dict[str, Any]],
    path: str | Path,
    title: str,
    few_alarm: float | None = None,
) -> Path:
    """The run's headline picture, one point per cycle: accuracy (the batch as answered, the
    held-out traffic view, the large model alone), the large-call rate, cumulative calls
    made against samples answered (the gap: calls saved), the alarms a team acts on (the
    batch's drift score and the Few group's forgetting against their bounds, the share
    answered ``out_of_scope``), and the money: spend per cycle by purpose, and cumulative
    spend against sending everything to the large model (the gap: money saved)."""
    from matplotlib.ticker import MaxNLocator

    plt = plt_agg()
    x = [int(c.get("cycle", i)) for i, c in enumerate(cycles)]
    delivered = [c.get("accuracy") for c in cycles]
    traffic = [(c.get("traffic") or {}).get("accuracy") for c in cycles]
    large = [((c.get("traffic") or {}).get("baselines") or {}).get("large_only") for c in cycles]
    rate = [c.get("large_call_rate") for c in cycles]
    n = np.cumsum([int(c.get("n", 0)) for c in cycles])
    calls = np.cumsum([int(c.get("large_calls", 0)) for c in cycles])
    fig, axes = plt.subplots(3, 2, figsize=(12, 10.6))
    (a1, a2), (a3, a4), (a5, a6) = axes
    a1.plot(x, delivered, marker="o", label="the batch, as answered")
    a1.plot(x, traffic, marker="s", label="held-out traffic view")
    if any(v is not None for v in large):
        a1.plot(x, large, ls="--", color="grey", label="large model alone (traffic)")
    a1.set(xlabel="cycle", ylabel="accuracy", title="accuracy per cycle")
    a1.legend(fontsize=8, loc="best")
    a2.bar(x, [r or 0.0 for r in rate], color="tab:orange")
    a2.set(
        xlabel="cycle",
        ylabel="large-call rate",
        ylim=(0, 1.03),
        title="share sent to the large model",
    )
    a3.plot(x, n, marker=".", label="samples answered")
    a3.plot(x, calls, marker=".", label="large-model calls")
    a3.fill_between(
        x,
        calls,
        n,
        alpha=0.15,
        color="tab:green",
        label=f"calls saved: {int(n[-1] - calls[-1]) if len(n) else 0}",
    )
    a3.set(xlabel="cycle", ylabel="cumulative", title="calls saved so far")
    a3.legend(fontsize=8, loc="upper left")
    alarms(a4, cycles, x, few_alarm)
    money_panels(a5, a6, cycles, x)
    for a in (a1, a2, a3, a4, a5, a6):
        a.grid(alpha=0.3)
        a.xaxis.set_major_locator(MaxNLocator(integer=True))
    a4.set_xlim(a1.get_xlim())
    fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)


def money_panels(bars: Any, lines: Any, cycles: Sequence[dict[str, Any]], x: list[int]) -> None:
    """Spend per cycle (serving and evaluation stacked), and cumulative spend against sending
    every query to the large model, the gap filled and labelled as saved."""
    money = [c.get("money") or {} for c in cycles]
    cur = next((m["currency"] for m in money if m.get("currency")), "USD")
    est = " (estimated tokens)" if any(m.get("estimated") for m in money) else ""
    serve = np.array([float(m.get("spent", 0.0)) for m in money])
    evaluate = np.array([float(m.get("evaluate", 0.0)) for m in money])
    bars.bar(x, serve, color="tab:red", label="serving")
    bars.bar(x, evaluate, bottom=serve, color="tab:purple", alpha=0.6, label="evaluation")
    refused = [int(m.get("refused", 0)) for m in money]
    for xi, r, top in zip(x, refused, serve + evaluate, strict=True):
        if r:
            bars.annotate(f"cap: {r} refused", (xi, top), ha="center", va="bottom", fontsize=7)
    bars.set(xlabel="cycle", ylabel=cur, title=f"spend per cycle{est}")
    bars.legend(fontsize=8, loc="upper right")
    spent = np.cumsum(serve)
    large_only = np.cumsum([float(m.get("large_only", 0.0)) for m in money])
    lines.plot(
        x, large_only, ls="--", color="grey", marker=".", label="everything to the large model"
    )
    lines.plot(x, spent, color="tab:red", marker=".", label="kcm (serving)")
    saved = float(large_only[-1] - spent[-1]) if len(x) else 0.0
    lines.fill_between(
        x,
        spent,
        large_only,
        alpha=0.15,
        color="tab:green",
        label=f"saved: {money_text(saved)} {cur}",
    )
    lines.set(xlabel="cycle", ylabel=f"cumulative {cur}", title="money saved so far")
    lines.legend(fontsize=8, loc="upper left")


def alarms(
    ax: Any, cycles: Sequence[dict[str, Any]], x: list[int], few_alarm: float | None
) -> None:
    """The dashboard's alarm panel: drift score, Few-group forgetting, out-of-scope share."""
    drift = [(c.get("drift") or {}).get("score") for c in cycles]
    bound = next((c["drift"]["bound"] for c in cycles if c.get("drift")), None)
    few = [(c.get("forgetting") or {}).get("forgetting_few") for c in cycles]

    def line(values: list[Any], **kw: Any) -> None:
        pts = [(xi, v) for xi, v in zip(x, values, strict=True) if v is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", **kw)

    line(drift, color="tab:purple", label="drift score (KS of C_x)")
    if bound is not None:
        ax.axhline(bound, color="tab:purple", ls=":", label=f"drift bound {bound:g}")
    line(few, color="tab:red", label="Few-group forgetting")
    if few_alarm is not None:
        ax.axhline(few_alarm, color="tab:red", ls=":", label=f"Few forgetting bound {few_alarm:g}")
    oos = [c.get("out_of_scope") for c in cycles]
    if any(oos):
        share = [(o or 0) / max(int(c.get("n", 0)), 1) for o, c in zip(oos, cycles, strict=True)]
        line(share, color="tab:brown", label="answered out_of_scope")
    low = min([0.0, *[v for v in few if v is not None]]) - 0.03
    ax.set(xlabel="cycle", ylabel="score / share", ylim=(low, 1.03), title="alarms")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left")
    else:
        ax.text(0.5, 0.5, "no drift or forgetting figures yet", ha="center", transform=ax.transAxes)
