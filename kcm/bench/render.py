"""bench.json rows (mean ± std over seeds) and BENCH.md."""

from __future__ import annotations

from typing import Any

import numpy as np

from kcm.bench.methods import METHODS, METRICS


def aggregate(per_seed: list[dict[str, dict[str, float | None]]]) -> list[dict[str, Any]]:
    rows = []
    for m in METHODS:
        row: dict[str, Any] = {"method": m}
        for k in METRICS:
            vals = [s[m].get(k) for s in per_seed if s[m].get(k) is not None]
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
        f"seeds {result['seeds']}, {result['date']}, {result['machine']}; "
        f"{result['seconds'] / 60:.1f} min. Figures in % (mean ± std over seeds), except "
        "samples/s.",
        "",
        "| method | " + " | ".join(c[1] for c in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['method']} | " + " | ".join(_cell(row[k], p) for k, _, p in cols) + " |"
        )
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
