"""Committing a cycle: the promotion gate, the cycle's plots, MLflow tracking and registry,
then one atomic ledger write (the new version becomes the challenger, and the champion if
the gate promotes it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from kcm.config import KCMConfig
from kcm.defaults import resolved
from kcm.evaluation.gate import GateTolerances, decide_promotion
from kcm.evaluation.metrics import AccuracyMatrix
from kcm.failpoints import reach
from kcm.steps.systems import now, system_at
from kcm.system import CollaborationSystem
from kcm.workspace import Ledger, Workspace, atomic_write_text

log = logging.getLogger(__name__)


def cycle_plots(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    report: dict[str, Any],
    system: CollaborationSystem | None = None,
) -> list[str]:
    """Draw the cycle's PNGs into ``state/runs/<batch>/plots/``: the run's dashboard (every
    cycle so far), the accuracy vs large-call rate curve (threshold sweep on the traffic view),
    the accuracy matrix, the judge's reliability diagram and, for a KAN judge, what it learned
    from its most influential inputs."""
    if not cfg.eval.plots:
        return []
    from kcm.evaluation import plots

    out = ws.run_dir(name) / "plots"
    t = report["traffic"]
    cycle = report.get("cycle", 0)
    paths = [
        plots.plot_dashboard(
            [*ws.load_ledger().cycles, report],
            out / "dashboard.png",
            title=f"{ws.root.name}: cycles 0-{cycle}",
            few_alarm=cfg.eval.forgetting_few_alarm,
        ),
        plots.plot_tradeoff(
            t["curves"],
            out / "tradeoff.png",
            point=(t["large_call_rate"], t["accuracy"]),
            references={
                "large only": t["baselines"]["large_only"],
                "small only": t["baselines"]["small_only"],
            },
            title=f"cycle {cycle}: accuracy vs large-call rate (traffic view)",
        ),
        plots.plot_reliability(t["reliability"], out / "reliability.png"),
    ]
    state = report.get("matrix_state", {}).get("matrix")
    if state:
        paths.append(
            plots.plot_matrix(
                AccuracyMatrix.from_dict(state).result(),
                out / "accuracy_matrix.png",
                title=f"accuracy matrix after cycle {cycle}",
            )
        )
    system = system or system_at(ws, cfg, int(report["version"]))
    if cfg.judge.kind == "kan" and cfg.eval.kan_plot_inputs and system.trained_:
        view = ws.view("traffic")
        rows = np.random.default_rng(cfg.seed).permutation(len(view))[:400]
        view = view.subset(rows, "traffic-sample")
        feats = system.featurize(view)
        sp = system.small_proba(feats)
        X = system.judge_inputs(feats, sp, system.replay_.records_)
        paths.append(
            plots.plot_kan(
                system.judge_,
                X,
                sp,
                out / "kan_judge.png",
                top_inputs=cfg.eval.kan_plot_inputs,
                input_names=plots.judge_input_names(feats.dense.shape[1]),
            )
        )
    return [ws.rel(p) for p in paths]  # relative: the workspace may move


def lineage_of(ledger: Ledger, name: str) -> dict[str, Any]:
    """The data a version has seen: every processed batch so far, plus this one."""
    seen = [*ledger.with_status("processed"), name]
    return {
        "batches": [
            {
                "name": n,
                "sha256": ledger.batches[n].sha256,
                "dvc_md5": ledger.batches[n].dvc_md5,
                "dvc_file": ledger.batches[n].dvc_file,
            }
            for n in seen
        ]
    }


def register(
    cfg: KCMConfig,
    ws: Workspace,
    name: str,
    version: int,
    report: dict[str, Any],
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Commit the cycle. The promotion gate compares the new version with the champion on
    the same held-out views; with the registry on, the version is tracked and registered in
    MLflow (alias ``challenger``; ``champion`` only if the gate agrees). Then one atomic
    ledger write: the version becomes the challenger, and the champion if promoted."""
    ledger = ws.load_ledger()
    r = cfg.registry
    tol = GateTolerances(r.accuracy_tolerance, r.few_tolerance, r.large_rate_tolerance)
    decision = decide_promotion(report, ledger.champion_report(), tol)
    report["gate"] = {
        "promote": decision.promote,
        "reasons": decision.reasons,
        "champion_version": ledger.champion,
    }
    # the new version, loaded once for the plots and the MLflow model
    candidate = system_at(ws, cfg, version) if (cfg.eval.plots or r.enabled) else None
    report["plots"] = cycle_plots(cfg, ws, name, report, candidate)
    if r.enabled:
        from kcm.adapters import mlflow_tracking

        report["mlflow"] = mlflow_tracking.track_cycle(
            resolved(cfg, ws.task()),  # params: what the cycle ran with, auto decided
            ws,
            name,
            version,
            report,
            decision,
            lineage=lineage_of(ledger, name),
            parent_run_id=parent_run_id,
            system=candidate,
        )
    ledger.cycles.append(
        {k: v for k, v in report.items() if k not in ("matrix_state", "per_class")}
    )
    for key, state in report["matrix_state"].items():
        setattr(ledger, key, state)
    ledger.batches[name] = ledger.batches[name].model_copy(
        update={"status": "processed", "version": version, "at": now()}
    )
    ledger.challenger = version
    if decision.promote:
        ledger.champion = version
    reports = ws.state / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        reports / f"{Path(name).stem}.json", json.dumps(report, indent=1, default=float)
    )
    ws.save_ledger(ledger)  # the commit point of the cycle
    reach("register:committed")
    if r.enabled:  # aliases move only once the ledger holds the cycle (see sync_champion)
        from kcm.adapters import mlflow_registry

        mlflow_registry.set_aliases(r.model_name, report["mlflow"]["model_version"], decision)
    log.info("batch %s: %s", name, decision.summary())
    return {
        "batch": name,
        "version": version,
        "promoted": decision.promote,
        "champion": ledger.answering_version,
        "reasons": decision.reasons,
        "plots": report["plots"],
        "mlflow": report.get("mlflow"),
    }
