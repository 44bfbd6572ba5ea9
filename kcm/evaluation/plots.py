"""PNG plots of a cycle: the accuracy/large-call trade-off, the accuracy matrix, the judge's
reliability diagram and the KAN judge's learned activations (drawn by pykan).

Each function writes one PNG and returns its path; matplotlib (Agg) and pykan are imported
lazily. Nothing is written outside the path given.
"""

from __future__ import annotations

import tempfile
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


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    _plt().close(fig)
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
    plt = _plt()
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
    return _save(fig, path)


def plot_matrix(
    R: Sequence[Sequence[float | None]], path: str | Path, title: str = "accuracy matrix R[i][j]"
) -> Path:
    """Heat map of R[i][j] (accuracy on batch j's classes after cycle i)."""
    plt = _plt()
    n = len(R)
    a = np.full((max(n, 1), max(n, 1)), np.nan)
    for i, row in enumerate(R):
        for j, v in enumerate(row):
            if v is not None:
                a[i, j] = v
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * n, 0.8 + 0.6 * n))
    im = ax.imshow(a, vmin=0, vmax=1, cmap="viridis")
    for i in range(n):
        for j in range(n):
            if not np.isnan(a[i, j]):
                ax.text(j, i, f"{a[i, j]:.2f}", ha="center", va="center", fontsize=8, color="w")
    ax.set(xlabel="batch j (its classes)", ylabel="after cycle i", title=title)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_reliability(rel: dict[str, Any], path: str | Path, what: str = "judge") -> Path:
    """Reliability diagram from ``kcm.evaluation.curves.reliability``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    conf = [c for c in rel["confidence"] if c is not None]
    freq = [f for c, f in zip(rel["confidence"], rel["frequency"], strict=True) if c is not None]
    cnt = [k for k in rel["count"] if k]
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    ax.plot(conf, freq, marker="o", label=f"{what} (ECE {rel['ece']:.3f})")
    for c, f, k in zip(conf, freq, cnt, strict=True):
        ax.annotate(str(k), (c, f), fontsize=7, xytext=(3, -8), textcoords="offset points")
    ax.set(
        xlabel="confidence C_x (bin mean)",
        ylabel="observed: small model right",
        xlim=(0, 1),
        ylim=(0, 1),
        title="reliability of the judge",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_kan(
    judge: Any,
    inputs: np.ndarray,
    small_proba: np.ndarray,
    path: str | Path,
    top_inputs: int = 6,
    top_hidden: int = 5,
    input_names: Sequence[str] | None = None,
) -> Path:
    """The KAN judge's learned activation functions, drawn by pykan's ``KAN.plot``.

    The network is exported with ``to_pykan()``; a full [in, hidden, 2] drawing takes about a
    minute, so the plot keeps the ``top_inputs`` inputs and ``top_hidden`` hidden nodes with
    the highest pykan attribution scores on these samples (pykan's own ``prune_input`` and
    ``prune_node``)."""
    import torch

    plt = _plt()
    z = judge.scaled_inputs(inputs, small_proba)
    model = judge.to_pykan()
    names = list(input_names or [f"x{i}" for i in range(z.shape[1])])
    with torch.no_grad():
        model(z)
        model.attribute(plot=False)
        keep = torch.argsort(model.node_scores[0], descending=True)[:top_inputs].tolist()
        model = model.prune_input(active_inputs=keep, log_history=False)
        model(z)
        model.attribute(plot=False)
        hid = torch.argsort(model.node_scores[1], descending=True)[:top_hidden].tolist()
        model = model.prune_node(active_neurons_id=[hid], log_history=False)
        model(z)
    out_names = ["wrong", "right"] if judge.target == "correctness" else None
    with tempfile.TemporaryDirectory() as scratch:  # pykan draws each edge into a folder
        model.plot(
            folder=scratch,
            beta=3,
            scale=1.0,
            in_vars=[names[i] for i in keep],
            out_vars=out_names,
            title=f"KAN judge: top {len(keep)} inputs, {len(hid)} hidden nodes",
        )
        fig = plt.gcf()
        return _save(fig, path)


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

    plt = _plt()
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
    return _save(fig, path)
