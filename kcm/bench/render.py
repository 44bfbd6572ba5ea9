"""bench.json rows (mean ± std over seeds) and BENCH.md."""

from __future__ import annotations

from typing import Any

import numpy as np

from kcm.bench.methods import METHODS, METRICS
from kcm.bench.streams import STREAM_METRICS


def aggregate(per_seed: list[dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    return aggregate_rows(per_seed, [m for m in METHODS if m in per_seed[0]], METRICS)


def aggregate_rows(
    per_seed: list[dict[str, dict[str, Any]]],
    methods: list[str],
    metrics: tuple[str, ...] = STREAM_METRICS,
) -> list[dict[str, Any]]:
    """One row per method: each metric's mean and std over the seeds that have it."""
    rows = []
    for m in methods:
        row: dict[str, Any] = {"method": m}
        for k in metrics:
            vals = [s[m].get(k) for s in per_seed if s[m].get(k) is not None]
            if k in ("calls_to_match", "cost_to_match") and len(vals) < len(per_seed):
                vals = []  # a seed that never came within a point: no mean of the others
            row[k] = (
                {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
                if vals
                else {"mean": None, "std": None}
            )
        rows.append(row)
    return rows


def _cell(v: dict[str, Any], pct: bool = True) -> str:
    if v["mean"] is None:
        return "–"
    if pct:
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"
    return f"{v['mean']:.0f} ± {v['std']:.0f}"


STREAM_COLS = (
    ("stream_accuracy", "delivered acc", True),
    ("stream_large_share", "large share", True),
    ("late_large_share", "late share", True),
    ("accuracy_at_kcm_share", "acc @ kcm share", True),
    ("calls_to_match", "calls to large−1pt", False),
    ("cost_per_1k", "$ / 1k q", "money"),
    ("saved", "$ saved", "money"),
    ("cost_to_match", "$ to large−1pt", "money"),
    ("learn_growth", "learn s/sample last÷cycle 5", None),
    ("phi_0.05", "φ λ=.05", True),
    ("phi_0.1", "φ λ=.1", True),
    ("phi_0.2", "φ λ=.2", True),
)


def _any(v: dict[str, Any], pct: bool | str | None) -> str:
    if v["mean"] is None:
        return "–"
    if pct == "money":
        return f"{v['mean']:.2f} ± {v['std']:.2f}"
    if pct is None:
        return f"{v['mean']:.2f} ± {v['std']:.2f}"
    return _cell(v, pct)


def stream_table(rows: list[dict[str, Any]]) -> list[str]:
    """The stream table: every answer delivered before it is learned (prequential)."""
    rows = [r for r in rows if r.get("stream_accuracy", {}).get("mean") is not None]
    if not rows:
        return []
    priced = any(r.get("cost_per_1k", {}).get("mean") is not None for r in rows)
    cols = [c for c in STREAM_COLS if priced or c[2] != "money"]
    out = [
        "| method (stream) | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for r in rows:
        out.append(
            f"| {r['method']} | "
            + " | ".join(_any(r.get(k, {"mean": None}), p) for k, _, p in cols)
            + " |"
        )
    out += [
        "",
        "Stream: delivered acc = accuracy of the answers actually delivered on every stream "
        "sample, each answered before it is learned; large share = large-model calls / stream "
        "samples; late share = the same over the late part of the stream. Peers are swept over "
        "their thresholds and credited with the best point in hindsight: `acc @ kcm share` is "
        "read off the envelope of their sweep at kcm's share, `calls to large−1pt` is the "
        "fewest calls with which the sweep comes within one point of the large model's own "
        "stream accuracy, φ = accuracy − λ·share is their best point's (OCaTS's discounted "
        "accuracy). A kcm system has one point: its ε."
        + (
            " Money (the large model's price, docs/costs.md): `$ / 1k q` = what the calls "
            "made cost per 1,000 stream queries, each call priced as the request it needs "
            "(tokens counted), whatever an answer store holds; `$ saved` = against sending "
            "every query; `$ to large−1pt` = `calls to large−1pt` at the mean price of a call."
            if priced
            else ""
        ),
    ]
    return out


RANKING_COLS = (
    ("auroc_judge", "judge C_x"),
    ("auroc_margin", "margin"),
    ("auroc_max_softmax", "max-softmax"),
)


def ranking_table(per_seed: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Per-batch AUROC of each routing score on the same student, for the kcm systems."""
    names = [m for m in per_seed[0] if "auroc_judge" in per_seed[0][m]]
    if not names:
        return []
    rows = aggregate_rows(per_seed, names, tuple(k for k, _ in RANKING_COLS))
    out = [
        "| system (its own student) | " + " | ".join(c[1] for c in RANKING_COLS) + " |",
        "|---|" + "---|" * len(RANKING_COLS),
    ]
    for r in rows:
        cells = [
            "–" if r[k]["mean"] is None else f"{r[k]['mean']:.3f} ± {r[k]['std']:.3f}"
            for k, _ in RANKING_COLS
        ]
        out.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    out += [
        "",
        "Ranking: per batch, how well each score ranks the small model's right answers above "
        "its wrong ones (AUROC against the gold labels, on every query of the batch, mean over "
        "the batches): the judge's C_x against the same student's own max-softmax and margin.",
    ]
    return out


def render_markdown(result: dict[str, Any]) -> str:
    cols = [
        ("accuracy", "acc (traffic)", True),
        ("large_call_rate", "large rate", True),
        ("accuracy_at_kcm_rate", "acc @ kcm rate", True),
        ("accuracy_at_budget", "acc @ budget", True),
        ("accuracy_balanced", "acc (balanced)", True),
        ("accuracy_many", "Many", True),
        ("accuracy_medium", "Medium", True),
        ("accuracy_few", "Few", True),
        ("bwt", "BWT", True),
        ("forgetting_few", "forgetting Few", True),
        ("judge_auroc", "AUROC", True),
        ("apgr", "APGR", True),
        ("throughput_sps", "samples/s", False),
        ("throughput_at_budget_sps", "samples/s @ budget", False),
    ]
    lines = [
        f"# kcm bench: {result['dataset']}",
        "",
        f"features: {result.get('features', '?')}; seeds {result['seeds']}, {result['date']}, "
        f"{result['machine']}; "
        f"{result['seconds'] / 60:.1f} min. Figures in % (mean ± std over seeds), except "
        "samples/s.",
        "",
        "| method | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    held_out = [r for r in result["rows"] if r["accuracy"]["mean"] is not None]
    for row in held_out:
        lines.append(
            f"| {row['method']} | " + " | ".join(_cell(row[k], p) for k, _, p in cols) + " |"
        )
    lines += ["", *stream_table(result["rows"]), ""]
    lines += [
        "",
        "traffic: the test set in the stream's long-tailed proportions; balanced: the whole test "
        "set. `acc @ kcm rate`: each router calibrated to the large-call rate `kcm` reaches at "
        "its ε. `acc @ budget`: each router calibrated to send "
        f"{100 * result.get('budget', 0.3):.0f}% of the traffic to the large model. "
        "AUROC: the routing score at telling when the small model is wrong. APGR: area "
        "under the accuracy-vs-rate curve, small-only = 0, large-only = 1.",
    ]
    return "\n".join(lines) + "\n"
