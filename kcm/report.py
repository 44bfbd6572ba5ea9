"""What people read: the run's summary report, cost totals, and the Markdown the Prefect
artifacts show (rendered here, published by the flows)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from kcm.config import KCMConfig, config_to_dict
from kcm.cost import per_thousand
from kcm.defaults import resolved
from kcm.errors import KCMError
from kcm.evaluation.metrics import AccuracyMatrix
from kcm.workspace import Workspace

LEDGER_COUNTS = (
    "calls",
    "requests",
    "cache_hits",
    "failures",
    "retries",
    "prompt_tokens",
    "completion_tokens",
    "estimated_tokens",
    "circuit_open",
    "skipped",
    "refused",
)
LEDGER_AMOUNTS = ("latency_s", "cost", "wait_s")
_VIEW_ONLY = (
    "traffic",
    "balanced",
    "out_of_scope_view",
    "forgetting",
    "forgetting_small_only",
    "forgetting_small",
)


def machine() -> str:
    import platform

    import torch

    return (
        f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def ledger_totals(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the large-model ledger deltas of a cycle's call_large chunks."""
    out: dict[str, Any] = {k: sum(int(c.get(k, 0)) for c in calls) for k in LEDGER_COUNTS}
    for k in LEDGER_AMOUNTS:
        out[k] = float(sum(float(c.get(k, 0.0)) for c in calls))
    out["errors"] = [e for c in calls for e in c.get("errors", [])][:20]
    return out


def money_of(
    report: dict[str, Any], routed: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    """What the cycle cost in money and what it saved: ``spent`` on answering the batch,
    ``evaluate`` on scoring the held-out views, ``large_only`` what sending every query of the
    batch to the large model would have cost, ``saved`` the difference, ``saved_vs_previous``
    what this cycle's rate per query saved on the batch against the previous cycle's, and the
    running totals (``cumulative_*``). ``estimated``: some tokens were counted by kcm, not
    reported by the endpoint."""
    spent = float(report["large_ledger"]["cost"])
    evaluate = float((report.get("eval_ledger") or {}).get("cost", 0.0))
    n = int(report.get("n") or routed.get("n") or 0)
    large_only = float(routed.get("large_only_cost") or 0.0)
    before = (previous or {}).get("money") or {}
    prev_rate = before["spent"] / before["n"] if before.get("n") else None
    estimated = bool(report["large_ledger"]["estimated_tokens"]) or bool(
        (report.get("eval_ledger") or {}).get("estimated_tokens")
    )
    return {
        "currency": routed.get("currency", "USD"),
        "n": n,
        "spent": spent,
        "evaluate": evaluate,
        "large_only": large_only,
        "saved": large_only - spent,
        "per_1000": per_thousand(spent, n),
        "saved_vs_previous": None if prev_rate is None else prev_rate * n - spent,
        "refused": int(report["large_ledger"]["refused"]),
        "estimated": estimated,
        "cumulative_spent": float(before.get("cumulative_spent", 0.0)) + spent,
        "cumulative_evaluate": float(before.get("cumulative_evaluate", 0.0)) + evaluate,
        "cumulative_large_only": float(before.get("cumulative_large_only", 0.0)) + large_only,
        "cumulative_saved": float(before.get("cumulative_saved", 0.0)) + large_only - spent,
    }


def with_costs(
    report: dict[str, Any],
    calls: list[dict[str, Any]],
    t0: float,
    learned: dict[str, Any] | None = None,
    answers: str | None = None,
    routed: dict[str, Any] | None = None,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The cycle report with its large-model cost totals and money (``money_of``), its
    seconds (since ``t0``), the seconds learning took, where its answers were delivered and
    the process's resident memory (the per-cycle cost curves)."""
    from kcm.evaluation.stream import rss_mb

    report["large_ledger"] = ledger_totals(calls)
    report["money"] = money_of(report, routed or {}, previous)
    report["seconds"] = time.perf_counter() - t0
    if learned is not None:
        report["learn_seconds"] = float(learned["train"]["seconds"])
    if answers is not None:
        report["answers"] = answers
    report["rss_mb"] = rss_mb()
    return report


def money_summary(ws: Workspace, cfg: KCMConfig, cycles: list[dict[str, Any]]) -> dict[str, Any]:
    """Money over every cycle so far: spent by purpose, what everything-to-the-large-model
    would have cost, saved, per 1,000 queries, the price it was computed with, and the
    budget's state (the caps, spent this run and in 24 h, calls refused)."""
    from kcm.budget import SpendGuard
    from kcm.cost import resolve_price

    p = cfg.large.price
    model = ws.meta()["large_model"].get("model")
    price = resolve_price(p.input_per_1m, p.output_per_1m, p.per_call, p.currency, model)
    last = next((c["money"] for c in reversed(cycles) if c.get("money")), {})
    n = sum(int((c.get("money") or {}).get("n", 0)) for c in cycles)
    spent, large_only = last.get("cumulative_spent", 0.0), last.get("cumulative_large_only", 0.0)
    b = cfg.large.budget
    budget: dict[str, Any] = {"per_run": b.per_run, "per_day": b.per_day}
    budget["refused"] = sum(int((c.get("money") or {}).get("refused", 0)) for c in cycles)
    if (ws.state / "spend.sqlite").is_file():
        guard = SpendGuard("serve", ws.run_id(), b.per_run, b.per_day, ws.state / "spend.sqlite")
        try:
            budget.update(spent=guard.spent(), remaining=guard.remaining())
        finally:
            guard.close()
    return {
        "currency": price.currency,
        "price": price.describe(),
        "queries": n,
        "spent": {"serve": spent, "evaluate": last.get("cumulative_evaluate", 0.0)},
        "large_only": large_only,
        "saved": last.get("cumulative_saved", 0.0),
        "saved_share": (large_only - spent) / large_only if large_only else None,
        "per_1000": per_thousand(spent, n),
        "large_only_per_1000": per_thousand(large_only, n),
        "estimated": any((c.get("money") or {}).get("estimated") for c in cycles),
        "budget": budget,
    }


def summary_report(ws: Workspace, cfg: KCMConfig) -> dict[str, Any]:
    """The report of everything processed so far (``report.json``)."""
    ledger = ws.load_ledger()
    meta = ws.meta()
    names = meta["task"]["label_names"]
    cycles = ledger.cycles
    if not cycles:
        raise KCMError(f"{ws.root}: no batch processed yet; drop batches into {ws.inbox}")
    last = cycles[-1]
    few = [int(c) for c, g in meta["groups"].items() if g == "few"]
    matrix = AccuracyMatrix.from_dict(ledger.matrix or {})

    def base(key: str) -> dict[str, Any]:
        t, b = last["traffic"]["baselines"], last["balanced"]["baselines"]
        return {
            "traffic": t[key],
            "balanced": b[key],
            "few_traffic": t[f"{key}_few"],
            "few_balanced": b[f"{key}_few"],
        }

    costs = [c.get("large_ledger", {}) for c in cycles]
    return {
        "dataset": meta["dataset"],
        "judge": cfg.judge.kind,
        "large_backend": meta["large_model"]["backend"],
        "large_model": meta["large_model"],
        "machine": machine(),
        "config": config_to_dict(cfg),
        # what it ran with: the settings left to kcm (auto / null) as kcm.defaults decided them
        "settings": config_to_dict(resolved(cfg, ws.task())),
        "data": meta["data"],
        "groups": {names[int(c)]: g for c, g in meta["groups"].items()},
        "class_counts": {names[i]: n for i, n in enumerate(meta["class_counts"])},
        "cycles": [{k: v for k, v in c.items() if k not in _VIEW_ONLY} for c in cycles],
        "final": {k: v for k, v in last["traffic"].items() if k != "baselines"},
        "final_balanced": {k: v for k, v in last["balanced"].items() if k != "baselines"},
        "final_out_of_scope": last.get("out_of_scope_view"),  # classes held back from the task
        "large_only": base("large_only"),
        "small_only": base("small_only"),
        "cascade": base("cascade"),
        "forgetting": matrix.summary(few),
        "forgetting_small_only": last["forgetting_small_only"],
        "forgetting_small": last.get("forgetting_small"),
        "accuracy_matrix": matrix.result(),
        "accuracy_matrix_few": matrix.result(few),
        "accuracy_matrix_state": matrix.to_dict(),
        "large_ledger": ledger_totals(costs),
        # every request by what it was for: answering the stream, scoring the held-out views
        "large_ledger_by_purpose": {
            "serve": ledger_totals(costs),
            "evaluate": ledger_totals([c.get("eval_ledger", {}) for c in cycles]),
        },
        "large_failures": [e for c in costs for e in c.get("errors", [])][:50],
        "money": money_summary(ws, cfg, cycles),
        "quarantined": {
            k: v.reason for k, v in ledger.batches.items() if v.status == "quarantined"
        },
        "challenger_version": ledger.challenger,
        "champion_version": ledger.champion,
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def cycle_markdown(report: dict[str, Any], registered: dict[str, Any]) -> str:
    """The cycle's table and the gate's decision (the ``kcm-cycle`` artifact)."""
    t, b, f = report["traffic"], report["balanced"], report["forgetting"]
    rows = [("batch (before learning)", report), ("traffic view", t), ("balanced view", b)]
    md = [
        f"# kcm cycle {report['cycle']}: `{report['batch']}`",
        "",
        f"system version v{report['version']:04d}, ε = {report['epsilon']:.3f}",
        "",
        *([f"answers delivered: `{report['answers']}`", ""] if report.get("answers") else []),
        "| view | n | accuracy | Many | Medium | Few | large-call rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, m in rows:
        md.append(
            f"| {label} | {m['n']} | {_fmt(m['accuracy'])} | {_fmt(m['accuracy_many'])} | "
            f"{_fmt(m['accuracy_medium'])} | {_fmt(m['accuracy_few'])} | "
            f"{_fmt(m['large_call_rate'])} |"
        )
    bl = t["baselines"]
    if report.get("money"):
        md += ["", money_line(report["money"])]
    o = report.get("out_of_scope_view")
    if report.get("out_of_scope") or report.get("oos_recall") is not None or o:
        line = f"answered `out_of_scope`: {report.get('out_of_scope', 0)} of the batch"
        if o:
            line += (
                f"; held-back classes' test inputs: {_fmt(o['oos_recall'])} answered "
                f"out_of_scope, {_fmt(o['oos_confident_wrong'])} answered by the small model"
            )
        md += ["", line]
    md += [
        "",
        f"baselines on traffic: large_only {_fmt(bl['large_only'])}, small_only "
        f"{_fmt(bl['small_only'])}, cascade {_fmt(bl['cascade'])}",
        "",
        f"forgetting over {report['cycle'] + 1} cycle(s): BWT {_fmt(f['bwt'])}, forgetting "
        f"{_fmt(f['forgetting'])}, Few-group forgetting {_fmt(f['forgetting_few'])}",
        "",
        ("**promoted** to champion" if registered["promoted"] else "**not promoted**")
        + f" (champion v{registered['champion']:04d}): "
        + "; ".join(registered["reasons"]),
    ]
    ml = registered.get("mlflow") or {}
    if ml:
        md.append(
            f"MLflow: model `{ml['model_name']}` version {ml['model_version']}, run `{ml['run_id']}`"
        )
    return "\n".join(md)


def money_line(m: dict[str, Any]) -> str:
    """The cycle's money in one line (the artifact, the terminal)."""
    cur, est = m.get("currency", "USD"), " (tokens estimated)" if m.get("estimated") else ""
    line = (
        f"money{est}: spent {m['spent']:.4f} {cur} serving, {m['evaluate']:.4f} evaluating; "
        f"everything to the large model {m['large_only']:.4f}, saved {m['saved']:.4f}"
    )
    if m.get("saved_vs_previous") is not None:
        line += f" ({m['saved_vs_previous']:+.4f} against the previous cycle's rate)"
    line += f"; so far spent {m['cumulative_spent']:.4f}, saved {m['cumulative_saved']:.4f}"
    if m.get("refused"):
        line += f"; **spend cap: {m['refused']} call(s) refused** (the small model answered)"
    return line


def plots_markdown(report: dict[str, Any], paths: list[str]) -> str:
    """The cycle's PNGs, linked as files (not inlined into the Prefect database)."""
    links = [f"- [{Path(p).stem}]({Path(p).resolve().as_uri()})" for p in paths]
    return "\n".join([f"# kcm cycle {report['cycle']}: plots", "", *links])


def per_class_table(report: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-class accuracy on the balanced view (the ``kcm-per-class-accuracy`` table)."""
    names, groups = meta["task"]["label_names"], meta["groups"]
    return [
        {
            "class": names[i],
            "group": groups.get(str(i), "-"),
            "accuracy": None if a is None else round(a, 4),
        }
        for i, a in enumerate(report["per_class"])
    ]


def continual_markdown(report: dict[str, Any], done: list[str], quarantined: list[str]) -> str:
    """The summary of one continual run (the ``kcm-continual`` artifact)."""
    f = report["final"]  # any figure may be missing (None): an endpoint that never answered
    return (
        f"# kcm-continual: {len(done)} batch(es) processed, {len(quarantined)} quarantined\n\n"
        f"traffic accuracy {_fmt(f['accuracy'])} at large-call rate "
        f"{_fmt(f['large_call_rate'])} (large only {_fmt(report['large_only']['traffic'])}); "
        f"balanced accuracy {_fmt(report['final_balanced']['accuracy'])}; Few-group forgetting "
        f"{_fmt(report['forgetting']['forgetting_few'])}\n\nquarantined: "
        f"{quarantined or 'none'}\n" + _money_md(report.get("money"))
    )


def _money_md(m: dict[str, Any] | None) -> str:
    if not m:
        return ""
    cur = m["currency"]
    share = f" ({m['saved_share']:.0%})" if m.get("saved_share") is not None else ""
    return (
        f"\nmoney: spent {m['spent']['serve']:.4f} {cur} serving "
        f"({_fmt(m['per_1000'])} per 1,000 queries), {m['spent']['evaluate']:.4f} evaluating; "
        f"everything to the large model {m['large_only']:.4f}: saved {m['saved']:.4f}{share}\n"
    )
