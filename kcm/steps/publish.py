"""Publishing a committed cycle: its plots, its MLflow run and registered model version,
then the aliases. It runs after ``commit``, so a failure here (MLflow down, a plotting
error) never touches the batch: the cycle stays committed with ``published: false`` and the
next run finishes it (``unpublished``) before anything else."""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from kcm import project
from kcm.config import KCMConfig
from kcm.defaults import resolved
from kcm.evaluation.gate import Decision
from kcm.evaluation.metrics import AccuracyMatrix
from kcm.failpoints import reach
from kcm.steps.commit import report_path
from kcm.steps.systems import system_at
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
    from kcm.evaluation import dashboard, plots

    out = ws.run_dir(name) / "plots"
    t = report["traffic"]
    cycle = report.get("cycle", 0)
    paths = [
        dashboard.plot_dashboard(
            [c for c in ws.load_ledger().cycles if int(c.get("cycle", 0)) <= cycle],
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
    """The data a version has seen: every batch processed up to and including ``name``."""
    seen = [n for n in ledger.order if ledger.batches[n].status == "processed"]
    seen = seen[: seen.index(name) + 1] if name in seen else [*seen, name]
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


def unpublished(ws: Workspace) -> list[str]:
    """The batches whose committed cycle is not published yet, in order (ledgers written
    before publishing was a step of its own hold published cycles only)."""
    if not ws.exists():
        return []
    return [c["batch"] for c in ws.load_ledger().cycles if not c.get("published", True)]


def publish(
    cfg: KCMConfig, ws: Workspace, name: str, parent_run_id: str | None = None
) -> dict[str, Any]:
    """Draw the committed cycle's plots and, with the registry on, track it in MLflow and
    register its version (alias ``challenger``; ``champion`` if the gate promoted it). What
    was done is written to the ledger before the aliases move; a resumed publish redoes only
    what the ledger does not hold."""
    ledger = ws.load_ledger()
    i = max(k for k, c in enumerate(ledger.cycles) if c["batch"] == name)
    cycle = ledger.cycles[i]
    if cycle.get("published", True):
        return {"batch": name, "plots": cycle.get("plots", []), "mlflow": cycle.get("mlflow")}
    report = json.loads(report_path(ws, name).read_text())
    version = int(report["version"])
    gate = report["gate"]
    decision = Decision(bool(gate["promote"]), list(gate["reasons"]))
    r = cfg.registry
    candidate = system_at(ws, cfg, version) if (cfg.eval.plots or r.enabled) else None
    report["plots"] = cycle_plots(cfg, ws, name, report, candidate)
    if r.enabled:
        from kcm.adapters import mlflow_registry, mlflow_tracking
        from kcm.steps.registry_ops import check_owner

        names = project.names(cfg, ws)
        mlflow_registry.setup(ws.root, names["experiment"], r.tracking_uri)
        check_owner(cfg, ws, mlflow_registry, names["model"])  # never into another's model

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
            names=names,
        )
    report["published"] = True
    atomic_write_text(report_path(ws, name), json.dumps(report, indent=1, default=float))
    ledger = ws.load_ledger()
    ledger.cycles[i] = {
        **ledger.cycles[i],
        **{k: report[k] for k in ("plots", "mlflow", "published")},
    }
    if r.enabled and ledger.model_name is None:  # fixed: a moved workspace keeps its model
        ledger.model_name = report["mlflow"]["model_name"]
    ws.save_ledger(ledger)
    reach("publish:recorded")
    if r.enabled:  # aliases move only once the ledger names the version (see sync_champion)
        from kcm.adapters import mlflow_registry

        mlflow_registry.set_aliases(
            report["mlflow"]["model_name"], report["mlflow"]["model_version"], decision
        )
    return {"batch": name, "plots": report["plots"], "mlflow": report["mlflow"]}
