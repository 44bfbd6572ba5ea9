"""The continual loop in-process: K cycles of test-then-train, then the final evaluation.

Each cycle: the new batch is routed and answered as live traffic (scored before learning),
then the system learns from it. After each cycle the balanced test set is scored per class,
which grows the accuracy matrix used for BWT and forgetting.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kcm.config import KCMConfig, config_to_dict
from kcm.data.batch import Batch
from kcm.data.stream import DataBundle, build_bundle
from kcm.distill.losses import cross_entropy
from kcm.evaluation.metrics import AccuracyMatrix, PerClassAccuracy, auroc
from kcm.evaluation.report import view_metrics
from kcm.models.large import LargeModel, make_large_model, resolve_backend
from kcm.models.small import SmallModel
from kcm.progress import CycleProgress
from kcm.system import CollaborationSystem, Predictions

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    report: dict[str, Any]
    system: CollaborationSystem
    bundle: DataBundle


def machine() -> str:
    return (
        f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} torch threads, "
        f"python {platform.python_version()}, torch {torch.__version__}"
    )


def per_class(label: np.ndarray, y_true: np.ndarray, n_classes: int) -> np.ndarray:
    m = PerClassAccuracy(n_classes)
    m.update(label, y_true)
    return m.result()


class LabelsOnlyBaseline:
    """``small_only``: the same small model trained on the stream's labels alone, batch after
    batch, with no distillation and no replay (the plain continual baseline)."""

    def __init__(self, system: CollaborationSystem) -> None:
        self.system = system
        self.model: SmallModel = system.new_small(seed_offset=7)

    def learn(self, batch: Batch, feats_small: Any) -> None:
        keep = np.flatnonzero(batch.y >= 0)
        if len(keep) == 0:
            return
        yt = torch.from_numpy(batch.y[keep])
        self.model.partial_fit(feats_small[keep], lambda z, rows: cross_entropy(z, yt[rows]))

    def predict(self, batch: Batch) -> np.ndarray:
        if not self.model.is_fitted:
            return np.zeros(len(batch), dtype=np.int64)
        return self.model.predict(self.system.featurize(batch).small)


def _score(preds: Predictions, batch: Batch, bundle: DataBundle) -> dict[str, Any]:
    row = view_metrics(preds.label, batch.y_true, preds.to_large, bundle.groups)
    right = preds.small_proba.argmax(axis=1) == batch.y_true
    row["small_accuracy"] = float(right.mean())
    row["judge_auroc"] = auroc(preds.confidence, right) if preds.judge_proba is not None else None
    row["cascade_auroc"] = auroc(preds.small_proba.max(axis=1), right)
    return row


def _accuracy(label: np.ndarray, y_true: np.ndarray) -> float:
    return float((label == y_true).mean())


def _few_accuracy(label: np.ndarray, batch: Batch, bundle: DataBundle) -> float | None:
    few = np.array([bundle.groups.get(int(t)) == "few" for t in batch.y_true])
    return float((label[few] == batch.y_true[few]).mean()) if few.any() else None


def run_continual(
    cfg: KCMConfig,
    *,
    bundle: DataBundle | None = None,
    large: LargeModel | None = None,
    show_progress: bool = True,
    out_dir: str | Path | None = None,
) -> RunResult:
    """Run K cycles in-process and return the report (see README for its fields)."""
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    bundle = bundle or build_bundle(cfg)
    task = bundle.task
    log.info("data: %s", bundle.summary())
    if large is None:
        large = make_large_model(
            cfg, task, cache_dir=out_dir if cfg.large.cache_dir is None and out_dir else None
        )
        t0 = time.perf_counter()
        large.fit(bundle.pretrain)
        log.info(
            "large model %s fitted on %d pretraining samples in %.1fs",
            large.name,
            len(bundle.pretrain),
            time.perf_counter() - t0,
        )
    system = CollaborationSystem(task, cfg, large).setup(bundle.pretrain)
    baseline = LabelsOnlyBaseline(system)
    matrix, matrix_small_only = AccuracyMatrix(), AccuracyMatrix()
    few = [c for c, g in bundle.groups.items() if g == "few"]
    cycles: list[dict[str, Any]] = []
    test = bundle.test

    with CycleProgress(show_progress) as bars:
        for i, batch in enumerate(bundle.stream):
            t0 = time.perf_counter()
            bar = bars.start(f"cycle {i}/{len(bundle.stream) - 1}", len(batch) + 2)
            ledger_before = large.ledger.snapshot()
            preds = system.predict(batch, progress=bar)
            bar(int((~preds.to_large).sum()))
            row = _score(preds, batch, bundle)
            report = system.learn(batch, preds)
            baseline.learn(batch, preds.features.small)
            bar(1)
            for m in (matrix, matrix_small_only):
                m.add_task(np.unique(batch.y_true[batch.y_true >= 0]))
            tp = system.predict(test)
            matrix.update(per_class(tp.label, test.y_true, task.n_classes))
            matrix_small_only.update(per_class(baseline.predict(test), test.y_true, task.n_classes))
            bar(1)
            row.update(
                cycle=i,
                batch=batch.name,
                seconds=time.perf_counter() - t0,
                epsilon=preds.epsilon,
                large_failures=preds.large_failures,
                ledger=large.ledger.since(ledger_before),
                train=report.__dict__,
            )
            cycles.append(row)
            log.info(
                "cycle %d: n=%d acc=%.3f large_rate=%.3f small_acc=%.3f auroc judge=%s "
                "cascade=%s (%.1fs)",
                i,
                row["n"],
                row["accuracy"] or 0.0,
                row["large_call_rate"] or 0.0,
                row["small_accuracy"],
                row["judge_auroc"],
                row["cascade_auroc"],
                row["seconds"],
            )

    views = {"traffic": bundle.traffic, "balanced": test}
    finals: dict[str, dict[str, Any]] = {}
    large_only: dict[str, Any] = {}
    small_only: dict[str, Any] = {}
    cascade: dict[str, Any] = {}
    for name, view in views.items():
        p = system.predict(view)
        finals[name] = _score(p, view, bundle)
        lo = system.predict(view, route="large", use_hint=False)
        large_only[name] = _accuracy(lo.label, view.y_true)
        large_only[f"few_{name}"] = _few_accuracy(lo.label, view, bundle)
        so = baseline.predict(view)
        small_only[name] = _accuracy(so, view.y_true)
        small_only[f"few_{name}"] = _few_accuracy(so, view, bundle)
        ca = system.predict(view, route="cascade", target_rate=p.large_call_rate)
        cascade[name] = _accuracy(ca.label, view.y_true)
        cascade[f"few_{name}"] = _few_accuracy(ca.label, view, bundle)
        cascade[f"large_call_rate_{name}"] = ca.large_call_rate

    report_dict: dict[str, Any] = {
        "dataset": cfg.data.dataset,
        "judge": cfg.judge.kind,
        "large_backend": resolve_backend(cfg, task),
        "large_model": large.describe(),
        "machine": machine(),
        "config": config_to_dict(cfg),
        "data": bundle.summary(),
        "groups": bundle.group_names(),
        "class_counts": {task.label_names[c]: int(n) for c, n in enumerate(bundle.class_counts)},
        "cycles": cycles,
        "final": finals["traffic"],
        "final_balanced": finals["balanced"],
        "large_only": large_only,
        "small_only": small_only,
        "cascade": cascade,
        "forgetting": matrix.summary(few),
        "forgetting_small_only": matrix_small_only.summary(few),
        "accuracy_matrix": matrix.result(),
        "accuracy_matrix_few": matrix.result(few),
        "accuracy_matrix_state": matrix.to_dict(),
        "large_ledger": large.ledger.snapshot(),
        "large_failures": large.ledger.failed[:50],
        "wall_seconds": time.perf_counter() - t_start,
    }
    return RunResult(report=report_dict, system=system, bundle=bundle)
