"""Scoring a view and rendering the report."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from kcm.evaluation.metrics import Accuracy, GroupAccuracy, LargeCallRate, OutOfScope


def view_metrics(
    answer: np.ndarray, gold: np.ndarray, to_large: np.ndarray, groups: Mapping[int, str]
) -> dict[str, Any]:
    """accuracy, accuracy per Many/Medium/Few, large-call rate and count on one view; the
    out-of-scope figures (answers delivered as ``out_of_scope``; on inputs of no known class,
    the share recalled and the share the small model answered, confidently wrong)."""
    acc, grp, rate, oos = Accuracy(), GroupAccuracy(groups), LargeCallRate(), OutOfScope()
    acc.update(answer, gold)
    grp.update(answer, gold)
    rate.update(to_large)
    oos.update(answer, gold, to_large)
    g, o = grp.result(), oos.result()
    return {
        "n": len(answer),
        "accuracy": acc.result(),
        "accuracy_many": g["many"],
        "accuracy_medium": g["medium"],
        "accuracy_few": g["few"],
        "large_call_rate": rate.result(),
        "large_calls": int(np.asarray(to_large).sum()),
        "out_of_scope": o["answered"],
        "oos_recall": o["recall"],
        "oos_confident_wrong": o["confident_wrong"],
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def render_tables(report: Mapping[str, Any]) -> Any:
    """A rich renderable with the per-cycle table and the final comparison."""
    from rich.console import Group
    from rich.table import Table

    cyc = Table(title=f"kcm run: {report['dataset']} ({report['judge']} judge)")
    for col in (
        "cycle",
        "n",
        "acc",
        "many",
        "medium",
        "few",
        "large rate",
        "large n",
        "s",
    ):
        cyc.add_column(col, justify="right")
    for c in report["cycles"]:
        cyc.add_row(
            str(c["cycle"]),
            str(c["n"]),
            _fmt(c["accuracy"]),
            _fmt(c["accuracy_many"]),
            _fmt(c["accuracy_medium"]),
            _fmt(c["accuracy_few"]),
            _fmt(c["large_call_rate"]),
            str(c["large_calls"]),
            f"{c['seconds']:.1f}",
        )
    fin = Table(title="held-out test: traffic view (stream proportions) and balanced view")
    for col in ("method", "traffic acc", "balanced acc", "large rate (traffic)", "few (balanced)"):
        fin.add_column(col, justify="right")
    f, fb = report["final"], report["final_balanced"]
    fin.add_row(
        "system",
        _fmt(f["accuracy"]),
        _fmt(fb["accuracy"]),
        _fmt(f["large_call_rate"]),
        _fmt(fb["accuracy_few"]),
    )
    for name in ("large_only", "small_only", "cascade"):
        b = report[name]
        rate = (
            "1.000"
            if name == "large_only"
            else ("0.000" if name == "small_only" else _fmt(f["large_call_rate"]))
        )
        fin.add_row(
            name, _fmt(b["traffic"]), _fmt(b["balanced"]), rate, _fmt(b.get("few_balanced"))
        )
    fg = report["forgetting"]
    fgt = Table(title="forgetting (balanced test, accuracy matrix over cycles)")
    for col in ("model", "BWT", "forgetting", "forgetting (Few)"):
        fgt.add_column(col, justify="right")
    fgt.add_row("system", _fmt(fg["bwt"]), _fmt(fg["forgetting"]), _fmt(fg["forgetting_few"]))
    so = report.get("forgetting_small_only")
    if so:
        fgt.add_row(
            "small_only", _fmt(so["bwt"]), _fmt(so["forgetting"]), _fmt(so["forgetting_few"])
        )
    parts = [cyc, fin, fgt]
    money = report.get("money") or {}
    if money and (money["large_only"] or money["spent"]["serve"] or money["spent"]["evaluate"]):
        parts.append(money_table(money))
    return Group(*parts)


def money_table(m: Mapping[str, Any]) -> Any:
    """What the run cost and saved, in the price's currency."""
    from rich.table import Table

    cur = m["currency"]
    est = ", tokens estimated" if m.get("estimated") else ""
    t = Table(title=f"money ({cur}, price {m['price']['source']}{est})")
    for col in ("", "spent", "per 1,000 queries", "everything to large", "saved"):
        t.add_column(col, justify="right")
    share = f" ({m['saved_share']:.0%})" if m.get("saved_share") is not None else ""
    t.add_row(
        "serving",
        money_text(m["spent"]["serve"]),
        money_text(m.get("per_1000")),
        money_text(m["large_only"]),
        money_text(m["saved"]) + share,
    )
    t.add_row("evaluation", money_text(m["spent"]["evaluate"]), "", "", "")
    b = m.get("budget") or {}
    if b.get("refused"):
        t.add_row("refused by the cap", f"{b['refused']} call(s)", "", "", "")
    return t


def money_text(v: float | None) -> str:
    """An amount with the precision it needs (cents for large sums, 4 decimals below 1)."""
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:,.2f}" if abs(v) >= 1 else f"{v:.4f}"
