"""The DVC pipeline's stages (``dvc.yaml``): the same library steps as the flows, without Prefect.

```
prepare         raw dataset -> <dir>/prepared/   (splits, long-tailed stream as CSV batches)
pretrain_large  prepared    -> <dir>/bootstrap/  (large model's head fitted once, system v0)
cycle           bootstrap + stream -> <dir>/metrics.json, <dir>/plots/ (CSV)
                (every batch: route, call, distil ... in the scratch folder <dir>/workspace/;
                the PNGs in <dir>/figures/, untracked: their pixels move with float32's last bits)
```
Each stage reads ``params.yaml`` (``kcm stage NAME``; ``evaluate`` redraws the metrics and
plots from the scratch workspace). Every tracked output is a function of the stage's inputs
alone (no timestamps, ids or databases), so ``dvc repro`` on a fresh clone leaves
``dvc.lock`` as committed; ``metrics.json`` and the plots' CSV are kept by git
(``cache: false``), so every ``dvc exp run`` commits them and ``dvc exp show`` / ``dvc metrics
diff`` / ``dvc plots diff`` compare experiments. The ``cycle`` stage does not ``dvc add`` the
stream batches again (they are the ``prepare`` stage's versioned output) and tracks to an
MLflow store of its own inside its workspace (``<dir>/workspace/mlflow/``), so neither ``dvc
repro`` nor ``dvc exp run`` ever touches the production registry (``MLFLOW_TRACKING_URI`` is
ignored there; a ``registry.tracking_uri`` in params.yaml is used with the model name
``<registry.model_name>-pipeline``, default ``<repository>-pipeline-<task>``).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import uuid
from pathlib import Path
from typing import Any

from kcm.config import KCMConfig
from kcm.project import slug
from kcm.workspace import Workspace, atomic_write_text

log = logging.getLogger(__name__)

STAGES = ("prepare", "pretrain_large", "cycle", "evaluate")


def prepare(cfg: KCMConfig, folder: Path) -> dict[str, Any]:
    from kcm.data.stream import build_bundle, save_bundle

    out = folder / "prepared"
    shutil.rmtree(out, ignore_errors=True)
    bundle = build_bundle(cfg)
    save_bundle(bundle, out)
    log.info("prepared %s: %s", cfg.data.dataset, bundle.summary())
    return bundle.summary()


def pretrain_large(cfg: KCMConfig, folder: Path) -> dict[str, Any]:
    from kcm.data.stream import load_bundle
    from kcm.steps import bootstrap

    out = folder / "bootstrap"
    shutil.rmtree(out, ignore_errors=True)
    made = bootstrap(cfg, Workspace(out), load_bundle(folder / "prepared"))
    _as_a_function_of_its_inputs(Workspace(out))
    return made


#: the bootstrap output's id (the cycle stage gives its copy one of its own)
TEMPLATE_ID = uuid.UUID(int=0).hex


def _as_a_function_of_its_inputs(ws: Workspace) -> None:
    """The bootstrap output holds nothing that changes from one run to the next, so that its
    hash in ``dvc.lock`` is the same under ``dvc repro`` on a fresh clone: no creation time,
    a fixed id, and no answer store while it is empty (it is created on first use)."""
    import sqlite3

    ledger = ws.load_ledger().model_copy(update={"created_at": None, "workspace_id": TEMPLATE_ID})
    ws.save_ledger(ledger, backup=False)
    store = ws.state / "large_cache.sqlite"
    if store.is_file():
        con = sqlite3.connect(store)
        try:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")
            ]
            empty = all(
                con.execute(f'SELECT COUNT(*) FROM "{t}"').fetchone()[0] == 0 for t in tables
            )
        finally:
            con.close()
        if empty:
            for f in ws.state.glob("large_cache.sqlite*"):
                f.unlink()


def cycle(cfg: KCMConfig, folder: Path) -> dict[str, Any]:
    from kcm import loop

    out = folder / "workspace"
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(folder / "bootstrap", out)
    ws = Workspace(out)
    ws.make_dirs()  # DVC restores files, not empty folders
    ledger = ws.load_ledger()  # a copy of the bootstrap is a workspace of its own, named
    own_name = f"{cfg.project or slug(Path.cwd().name)}-pipeline"  # after the repository
    ws.save_ledger(
        ledger.model_copy(update={"workspace_id": uuid.uuid4().hex, "project": own_name})
    )
    for f in sorted((folder / "prepared" / "stream").glob("batch-*.csv")):
        shutil.copy(f, Path(ws.inbox) / f.name)
    updates: dict[str, Any] = {"dvc": cfg.dvc.model_copy(update={"enabled": False})}
    # A pipeline run (dvc repro, each dvc exp run) registers into its own store, inside its
    # workspace output, whatever MLFLOW_TRACKING_URI says: an experiment never moves the
    # production registry's aliases. A store named in params.yaml is used, under the model
    # name "<registry.model_name>-pipeline" (default "<repository>-pipeline-<task>").
    reg = cfg.registry
    if reg.tracking_uri is None:
        own = {"tracking_uri": f"sqlite:///{ws.root}/mlflow/mlflow.db"}
    else:
        own = {"model_name": f"{reg.model_name}-pipeline" if reg.model_name else None}
    updates["registry"] = reg.model_copy(update=own)
    updates["project"] = own_name
    report = loop.run(cfg.model_copy(update=updates), ws)
    evaluate(cfg, folder)  # what the stage tracks: its metrics and plots (the workspace is
    # a scratch folder: its stores and timestamps would change dvc.lock on every repro)
    return {"cycles": len(report["cycles"]), "final": report["final"]["accuracy"]}


def metrics_of(report: dict[str, Any]) -> dict[str, Any]:
    """The figures ``dvc metrics show`` lists (and ``dvc exp show`` compares)."""
    f, b, fg = report["final"], report["final_balanced"], report["forgetting"]
    return {
        "traffic": {
            "accuracy": f["accuracy"],
            "large_call_rate": f["large_call_rate"],
            "accuracy_few": f.get("accuracy_few"),
            "judge_auroc": f.get("judge_auroc"),
        },
        "balanced": {
            "accuracy": b["accuracy"],
            "accuracy_many": b.get("accuracy_many"),
            "accuracy_medium": b.get("accuracy_medium"),
            "accuracy_few": b.get("accuracy_few"),
        },
        "baselines": {
            k: {"traffic": report[k]["traffic"], "balanced": report[k]["balanced"]}
            for k in ("large_only", "small_only", "cascade")
        },
        "forgetting": fg,
        "large_calls": report["large_ledger"]["calls"],
        "cycles": len(report["cycles"]),
    }


def evaluate(cfg: KCMConfig, folder: Path) -> dict[str, Any]:
    """Write ``metrics.json``, ``plots/`` (the trade-off curve and per-cycle figures as CSV:
    ``dvc plots show`` draws them) and ``figures/`` (the last cycle's PNG plots)."""
    from kcm.report import summary_report

    ws = Workspace(folder / "workspace")
    report = summary_report(ws, cfg)
    metrics = metrics_of(report)
    atomic_write_text(folder / "metrics.json", json.dumps(metrics, indent=1))
    plots = folder / "plots"
    shutil.rmtree(plots, ignore_errors=True)
    plots.mkdir(parents=True)
    curves = report["final"]["curves"]
    with (plots / "tradeoff.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["large_call_rate", *curves])
        for i, r in enumerate(curves["judge"]["rate"]):
            w.writerow([r, *(curves[k]["accuracy"][i] for k in curves)])
    with (plots / "cycles.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["cycle", "batch_accuracy", "large_call_rate"])
        for c in report["cycles"]:
            w.writerow([c["cycle"], c["accuracy"], c["large_call_rate"]])
    figures = folder / "figures"
    shutil.rmtree(figures, ignore_errors=True)
    figures.mkdir(parents=True)
    last = ws.load_ledger().order[-1]
    for png in sorted((ws.run_dir(last) / "plots").glob("*.png")):
        shutil.copy(png, figures / png.name)
    return metrics


def run_stage(name: str, cfg: KCMConfig, folder: str | Path) -> dict[str, Any]:
    fns = {
        "prepare": prepare,
        "pretrain_large": pretrain_large,
        "cycle": cycle,
        "evaluate": evaluate,
    }
    if name not in fns:
        raise ValueError(f"stage {name!r}: choose one of {STAGES}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return fns[name](cfg, folder)
