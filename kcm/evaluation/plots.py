"""PNG plots of a cycle: the accuracy/large-call trade-off, the accuracy matrix, the judge's
reliability diagram, what the judge learned from its most influential inputs, and the bench's
stream plot (the run's dashboard is ``kcm.evaluation.dashboard``).

Each function writes one PNG and returns its path; matplotlib (Agg) is imported lazily.
Nothing is written outside the path given.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

JUDGE_EXTRA_NAMES = (
    "mem_count",
    "mem_centroid_sim",
    "mem_nearest_sim",
    "mem_knn_agree",
    "small_top1_logodds",
    "small_log_top2",
    "small_log_ratio",
    "small_log_entropy",
)


def plt_agg() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt_agg().close(fig)
    return path


def plot_tradeoff(
    curves: dict[str, dict[str, list[float]]],
    path: str | Path,
    point: tuple[float, float] | None = None,
    references: dict[str, float] | None = None,
    title: str = "accuracy vs large-call rate (threshold sweep)",
) -> Path:
    """One line per router (``{"judge": {"rate": [...], "accuracy": [...]}, ...}``), the
    system's operating point and horizontal reference lines (e.g. large-only)."""
    plt = plt_agg()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, c in curves.items():
        ax.plot(c["rate"], c["accuracy"], marker=".", label=name)
    for name, v in (references or {}).items():
        if v is None:  # a baseline that could not be measured (e.g. the endpoint was down)
            continue
        ax.axhline(v, ls="--", lw=1, color="grey")
        ax.annotate(name, (0.01, v), fontsize=8, va="bottom", color="grey")
    if point is not None:
        ax.plot([point[0]], [point[1]], "r*", ms=12, label="system at ε")
    ax.set(xlabel="large-model call rate", ylabel="accuracy", title=title, xlim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return save_png(fig, path)


def plot_matrix(
    R: Sequence[Sequence[float | None]], path: str | Path, title: str = "accuracy matrix R[i][j]"
) -> Path:
    """Heat map of R[i][j] (accuracy on batch j's classes after cycle i). The colour scale
    spans the values present (not 0-1, where 0.89 and 0.96 look the same), and each number is
    printed in black or white, whichever reads on its cell."""
    plt = plt_agg()
    n = len(R)
    a = np.full((max(n, 1), max(n, 1)), np.nan)
    for i, row in enumerate(R):
        for j, v in enumerate(row):
            if v is not None:
                a[i, j] = v
    seen = a[~np.isnan(a)]
    lo, hi = (float(seen.min()), float(seen.max())) if len(seen) else (0.0, 1.0)
    if hi - lo < 0.05:  # nearly equal values: a narrow scale would exaggerate noise
        mid = (hi + lo) / 2
        lo, hi = max(0.0, mid - 0.025), min(1.0, mid + 0.025)
    fig, ax = plt.subplots(figsize=(1.6 + 0.75 * n, 1.2 + 0.65 * n))
    cmap = plt.get_cmap("viridis")
    im = ax.imshow(a, vmin=lo, vmax=hi, cmap=cmap)
    for i in range(n):
        for j in range(n):
            if not np.isnan(a[i, j]):
                r, g, b, _ = cmap((a[i, j] - lo) / max(hi - lo, 1e-9))
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                text = f"{a[i, j]:.3f}" if n <= 8 else f"{a[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8.5, color=ink)
    ax.set(xlabel="batch j (its classes)", ylabel="after cycle i", title=title)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fig.colorbar(im, ax=ax, fraction=0.046, label=f"accuracy (scale {lo:.2f}-{hi:.2f})")
    return save_png(fig, path)


def plot_reliability(rel: dict[str, Any], path: str | Path, what: str = "judge") -> Path:
    """Reliability diagram from ``kcm.evaluation.curves.reliability`` (equal-count bins, so
    every point rests on as many samples), over a histogram of the confidences."""
    plt = plt_agg()
    fig, (ax, hx) = plt.subplots(
        2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1.1]}
    )
    conf = [c for c in rel["confidence"] if c is not None]
    freq = [f for c, f in zip(rel["confidence"], rel["frequency"], strict=True) if c is not None]
    edges = [x for x in (rel.get("edges") or []) if x > 0]
    scale = rel.get("scale", "linear")
    he = np.asarray(rel.get("hist_edges") or [0.0, 1.0])
    lo = max(0.0, min([float(he[0]), *conf]) - 0.02) if scale == "linear" else float(he[0])
    hi = 1.0 if scale == "linear" else float(he[-1])
    grid = np.linspace(lo, hi, 200) if scale == "linear" else he
    each = max(rel["count"]) if rel["count"] else 0
    ax.plot(grid, grid, ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot(conf, freq, marker="o", label=f"{what} (ECE {rel['ece']:.3f}; ~{each} samples a point)")
    ax.set(
        ylabel="observed: small model right",
        ylim=(min(lo, min(freq, default=lo)) - 0.02, 1.02),
        title=f"reliability of the {what} ({rel.get('strategy', 'uniform')} bins)",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if rel.get("hist"):
        hx.bar(he[:-1], rel["hist"], width=np.diff(he), align="edge", color="tab:blue", alpha=0.5)
    for x in edges[1:-1]:
        hx.axvline(x, color="grey", lw=0.6, ls=":")
    if scale == "logit":  # scores crowd near 1: spread them (ticks at 0.5, 0.9, 0.99, ...)
        from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

        hx.set_xscale("logit")
        ticks = [t for t in (0.1, 0.5, 0.9, 0.99, 0.999, 0.9999) if lo <= t <= hi]
        hx.xaxis.set_major_locator(FixedLocator(ticks))
        hx.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        hx.xaxis.set_minor_locator(NullLocator())
    hx.set_xlim(lo, hi)
    hx.set(
        xlabel="confidence C_x" + (" (logit scale)" if scale == "logit" else ""), ylabel="samples"
    )
    hx.grid(alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path)


def plot_kan(
    judge: Any,
    inputs: np.ndarray,
    small_proba: np.ndarray,
    path: str | Path,
    top_inputs: int = 4,
    input_names: Sequence[str] | None = None,
) -> Path:
    """What the judge learned, readably: for its ``top_inputs`` most influential inputs, the
    mean C_x as that input sweeps the KAN grid's range [-1, 1] with every other input as
    observed (partial dependence through the whole network), over the histogram of where the
    samples lie. Influence: the range of that curve."""
    import copy

    import torch

    plt = plt_agg()
    # in float64, rounded: the same picture, byte for byte, from run to run (float32 matrix
    # products vary in their last bits with memory alignment; the DVC pipeline hashes the PNG)
    net = copy.deepcopy(judge.net_).double()
    z = judge.scaled_inputs(inputs, small_proba).double()
    n, d = z.shape
    names = list(input_names or [f"x{i}" for i in range(d)])
    grid = torch.linspace(-1, 1, 41, dtype=torch.float64)
    off = judge.prior_offset(small_proba)  # the prior, as observed
    offs = None if off is None else off.double().repeat(len(grid), 1)

    def conf(zz: torch.Tensor) -> torch.Tensor:
        out = net(zz)
        p = torch.softmax(out if offs is None else out + offs, dim=1)
        return p[:, 1] if judge.target == "correctness" else p.max(dim=1).values

    curves = []
    with torch.no_grad():
        for i in range(d):
            zz = z.repeat(len(grid), 1)
            zz[:, i] = grid.repeat_interleave(n)
            curves.append(np.round(conf(zz).reshape(len(grid), n).mean(dim=1).numpy(), 6))
    influence = np.array([c.max() - c.min() for c in curves])
    keep = np.argsort(-influence)[: max(1, top_inputs)]
    cols = min(len(keep), 2 if len(keep) <= 4 else 3)
    rows = int(np.ceil(len(keep) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    for ax, i in zip(axes.flat, keep, strict=False):
        hx = ax.twinx()
        hx.hist(z[:, i].numpy(), bins=30, range=(-1, 1), color="grey", alpha=0.25)
        hx.set_yticks([])
        ax.set_zorder(hx.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.plot(grid.numpy(), curves[i], color="tab:blue", lw=2)
        ax.set(
            title=f"{names[i]} (moves C_x by {influence[i]:.2f})",
            xlabel="input, scaled to the grid",
            ylabel="mean C_x",
            xlim=(-1, 1),
        )
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keep) :]:
        ax.axis("off")
    fig.suptitle(
        f"What the {type(judge).__name__.removesuffix('Judge')} judge learned: "
        f"its {len(keep)} most influential inputs"
    )
    fig.tight_layout()
    return save_png(fig, path)


def judge_input_names(n_dense: int) -> list[str]:
    return [f"feat{i}" for i in range(n_dense)] + list(JUDGE_EXTRA_NAMES)


def plot_stream(
    stream: dict[str, dict[str, Any]],
    path: str | Path,
    title: str,
    reference: str = "kcm",
    large_accuracy: float | None = None,
) -> Path:
    """Two panels over a stream: delivered accuracy so far against cumulative large-model
    calls for every method (the online-cascade paper's view; the end points of a peer's sweep
    runs as crosses; the large model alone as a dashed line), and the large-call rate of each
    cycle."""
    from matplotlib.ticker import MaxNLocator

    plt = plt_agg()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.6))
    # one distinct colour per method (tab10 repeats after ten: kcm would share its blue);
    # the reference in black, drawn thickest
    palette = plt.get_cmap("tab20").colors
    for i, (name, e) in enumerate(sorted(stream.items(), key=lambda kv: kv[0] != reference)):
        c = e["curves"]
        lw = 2.6 if name == reference else 1.3
        colour = "black" if name == reference else palette[(2 * i) % 20 + (2 * i) // 20 % 2]
        (line,) = a1.plot(
            c["cumulative_calls"], c["cumulative_accuracy"], lw=lw, label=name, color=colour
        )
        a2.plot(range(len(c["large_call_rate"])), c["large_call_rate"], lw=lw, color=colour)
        n = sum(c["n"])
        for share, acc in e.get("points", []):
            a1.plot([share * n], [acc], "x", color=line.get_color(), ms=6)
    if large_accuracy is not None:
        a1.axhline(large_accuracy, ls="--", lw=1, color="grey")
        a1.annotate(
            "large model alone",
            (0.01, large_accuracy),
            xycoords=("axes fraction", "data"),
            fontsize=8,
            va="bottom",
            color="grey",
        )
    a1.set(
        xlabel="cumulative large-model calls",
        ylabel="delivered accuracy so far",
        title="accuracy vs calls (x: a peer's sweep points, whole stream)",
    )
    a2.set(
        xlabel="cycle",
        ylabel="large-call rate of the cycle",
        ylim=(0, 1.03),
        title="share of each batch sent to the large model",
    )
    a2.xaxis.set_major_locator(MaxNLocator(integer=True))
    for a in (a1, a2):
        a.grid(alpha=0.3)
    handles, labels = a1.get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8, frameon=False
    )
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_png(fig, path)
