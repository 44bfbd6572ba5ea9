"""Scoring a cycle: the batch as answered before learning (prequential), and the new version
on the held-out traffic and balanced views, with the baselines and the accuracy-matrix rows
(forgetting)."""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import numpy as np

from kcm import routing
from kcm.config import KCMConfig
from kcm.data.batch import Batch
from kcm.evaluation.curves import group_tradeoff_curve, reliability, tradeoff_curve
from kcm.evaluation.metrics import AccuracyMatrix, PerClassAccuracy, auroc
from kcm.evaluation.report import view_metrics
from kcm.models.small import SmallModel
from kcm.steps.answer import assemble, reference_path
from kcm.steps.learn import load_baseline
from kcm.steps.systems import champion, paying, system_at
from kcm.system import CollaborationSystem
from kcm.workspace import Workspace, atomic_write_bytes

log = logging.getLogger(__name__)


def few_mask(view: Batch, groups: dict[int, str]) -> np.ndarray:
    return np.array([groups.get(int(t)) == "few" for t in view.gold], dtype=bool)


def few_accuracy(label: np.ndarray, view: Batch, groups: dict[int, str]) -> float | None:
    few = few_mask(view, groups)
    return float((label[few] == view.gold[few]).mean()) if few.any() else None


def prequential(cfg: KCMConfig, ws: Workspace, name: str, groups: dict[int, str]) -> dict[str, Any]:
    """The batch's own figures, as it was answered (by the champion) before learning."""
    base = champion(ws, cfg)
    batch = ws.load_batch(name)
    pre = assemble(ws, name, base, batch)
    row = view_metrics(pre.answer, batch.gold, pre.to_large, groups)
    right = pre.small_proba.argmax(axis=1) == batch.gold
    known = batch.gold >= 0
    row.update(
        batch=name,
        epsilon=pre.epsilon,
        small_accuracy=float(right[known].mean()) if known.any() else None,
        judge_auroc=auroc(pre.confidence, right) if pre.judge_proba is not None else None,
        cascade_auroc=auroc(pre.small_proba.max(axis=1), right),
        large_failures=pre.large_failures,
    )
    return row


def score_view(
    cand: CollaborationSystem, baseline: SmallModel, view: Batch, groups: dict[int, str]
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The candidate on one held-out view, with the trade-off curves and the baselines;
    also the labels each model gave (for the per-class rows)."""
    y = view.gold
    p = cand.predict(view)
    m = view_metrics(p.answer, y, p.to_large, groups)
    lo = cand.predict(view, route="large", use_hint=False)
    ca = cand.predict(view, route="cascade", target_rate=p.large_call_rate)
    so = (
        baseline.predict(cand.featurize(view).small)
        if baseline.is_fitted
        else np.zeros(len(view), int)
    )
    small = p.small_proba.argmax(axis=1)
    m["judge_auroc"] = auroc(p.confidence, small == y)
    m["curves"] = {
        "judge": tradeoff_curve(p.confidence, small, lo.answer, y),
        "cascade": tradeoff_curve(routing.score("cascade", p.small_proba), small, lo.answer, y),
        "oracle": tradeoff_curve(
            routing.score("oracle", p.small_proba, gold=y), small, lo.answer, y
        ),
    }
    # Few-group accuracy against the view's overall large-call rate (judge threshold sweep):
    # the promotion gate compares two versions' tails at one rate with it
    m["few_curve"] = group_tradeoff_curve(p.confidence, small, lo.answer, y, few_mask(view, groups))
    m["reliability"] = reliability(p.confidence, small == y)
    answered = lo.answered_by == "large"
    if not answered.any():  # the large model answered nothing: no accuracy to report
        log.warning("%s view: the large model answered none of %d samples", view.name, len(y))
    m["baselines"] = {
        "large_only": float((lo.answer == y).mean()) if answered.any() else None,
        "large_only_answered": float(answered.mean()),
        "large_only_few": few_accuracy(lo.answer, view, groups) if answered.any() else None,
        "small_only": float((so == y).mean()),
        "small_only_few": few_accuracy(so, view, groups),
        "cascade": float((ca.answer == y).mean()),
        "cascade_few": few_accuracy(ca.answer, view, groups),
    }
    return m, {"system": p.answer, "small_only": so, "small": small, "confidence": p.confidence}


def per_class(label: np.ndarray, y: np.ndarray, n_classes: int) -> list[float | None]:
    pc = PerClassAccuracy(n_classes)
    pc.update(label, y)
    return [None if np.isnan(a) else float(a) for a in pc.result()]


def evaluate(cfg: KCMConfig, ws: Workspace, name: str, version: int) -> dict[str, Any]:
    """The cycle report: prequential figures, both views, per-class accuracy and the
    accuracy matrices (system, labels-only baseline, distilled small model alone)."""
    t0 = time.perf_counter()
    task, groups, ledger = ws.task(), ws.groups(), ws.load_ledger()
    row = prequential(cfg, ws, name, groups)
    row.update(cycle=len(ledger.cycles), version=version)
    cand = system_at(ws, cfg, version)
    cand.large = paying(ws, cfg, "evaluate", cand.large)  # counted and capped apart
    baseline = load_baseline(ws, cand, version)
    views: dict[str, Any] = {}
    for vname in ("traffic", "balanced"):
        view = ws.view(vname, task)
        views[vname], labels = score_view(cand, baseline, view, groups)
        if vname == "traffic":  # this version's C_x on traffic: the reference of drift scores
            buf = io.BytesIO()
            np.save(buf, labels["confidence"].astype(np.float32))
            atomic_write_bytes(reference_path(ws, version), buf.getvalue())
    if (ws.eval_dir / "out_of_scope.parquet").is_file():  # classes held back from the task
        oos_view = ws.view("out_of_scope", task)
        p = cand.predict(oos_view)
        views["out_of_scope"] = view_metrics(p.answer, oos_view.gold, p.to_large, groups)
    row["eval_ledger"] = cand.large.ledger.snapshot()
    if row["eval_ledger"]["refused"]:
        log.warning(
            "the evaluation spend cap is reached: %d evaluation call(s) not sent; the held-out "
            "figures use the small model's answers for them",
            row["eval_ledger"]["refused"],
        )
    per = {
        k: per_class(v, view.gold, task.n_classes) for k, v in labels.items() if k != "confidence"
    }  # balanced
    batch = ws.load_batch(name, task)
    classes = np.unique(batch.gold[batch.gold >= 0]).tolist()
    few = [c for c, g in groups.items() if g == "few"]
    matrices = {}
    for key, src in (
        ("matrix", "system"),
        ("matrix_small_only", "small_only"),
        ("matrix_small", "small"),
    ):
        m = AccuracyMatrix.from_dict(getattr(ledger, key) or {})
        m.add_task(classes)
        m.update(np.array([np.nan if a is None else a for a in per[src]], dtype=float))
        matrices[key] = m
    row.update(
        traffic=views["traffic"],
        balanced=views["balanced"],
        out_of_scope_view=views.get("out_of_scope"),
        per_class=per["system"],
        forgetting=matrices["matrix"].summary(few),
        forgetting_small_only=matrices["matrix_small_only"].summary(few),
        forgetting_small=matrices["matrix_small"].summary(few),
        matrix_state={k: m.to_dict() for k, m in matrices.items()},
        eval_seconds=time.perf_counter() - t0,
    )
    drift = ws.run_dir(name) / "drift.json"
    row["drift"] = json.loads(drift.read_text()) if drift.is_file() else None
    return row
