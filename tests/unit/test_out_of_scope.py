"""Out-of-scope inputs: the large model (or a configured rule) says no class of the task fits,
the answer is ``out_of_scope``, counted apart, never distilled as a class, and the judge learns
to send such inputs to the large model instead of letting the small model answer them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kcm.answers import Routed, merge
from kcm.config import ReplayConfig, load_config
from kcm.data.batch import (
    NO_LABEL,
    OUT_OF_SCOPE,
    OUT_OF_SCOPE_LABEL,
    Batch,
    Task,
    batch_from_frame,
)
from kcm.data.stream import build_bundle, hold_out_classes
from kcm.evaluation.metrics import Accuracy, OutOfScope
from kcm.evaluation.report import view_metrics
from kcm.features import Features
from kcm.models.large import make_large_model
from kcm.models.large.callable import CallableModel
from kcm.models.large.replay import ReplayModel
from kcm.system import CollaborationSystem

TASK = Task(kind="text", label_names=("a", "b", "c"), text_col="text", label_col="label")


def _oos_fn(inputs: list[str], hints: np.ndarray | None) -> list[str]:
    return [OUT_OF_SCOPE_LABEL if t.startswith("?") else "b" for t in inputs]


def test_a_backend_saying_out_of_scope_is_marked_and_not_fused() -> None:
    model = CallableModel(TASK, _oos_fn)
    model.hint_weight = 0.5
    hints = np.full((3, 3), 1 / 3)
    out = model.predict_proba(["?x", "y", "?z"], hints)
    assert out.ok.all(), "an out-of-scope answer is an answer, not a failed call"
    assert out.oos().tolist() == [True, False, True]
    assert np.allclose(out.answer[[0, 2]], 0.0) and out.answer[1].argmax() == 1
    again = model.predict_proba(["?x"])  # cached as what it was
    assert model.ledger.cache_hits == 1 and again.oos().tolist() == [True]


def test_the_configured_rule_marks_low_confidence_answers() -> None:
    def soft(inputs: list[str], hints: np.ndarray | None) -> np.ndarray:
        return np.array([[0.4, 0.3, 0.3], [0.9, 0.05, 0.05]])

    model = CallableModel(TASK, soft)
    assert not model.predict_proba(["p", "q"]).oos().any()
    model.out_of_scope_below = 0.5
    assert model.predict_proba(["p", "q"]).oos().tolist() == [True, False]


def test_replay_answers_outside_the_task_are_failures_unless_configured(tmp_path) -> None:
    path = tmp_path / "answers.csv"
    pd.DataFrame({"text": ["p", "q", "r"], "gpt4": ["a", "held_back", OUT_OF_SCOPE_LABEL]}).to_csv(
        path, index=False
    )
    failing = ReplayModel(TASK, ReplayConfig(path=str(path)))
    out = failing.predict_proba(["p", "q", "r"])
    assert out.ok.tolist() == [True, False, True], "a name outside the task fails by default"
    assert out.oos().tolist() == [False, False, True], "out_of_scope itself is always an answer"
    assert "held_back" in out.errors[1]
    oos = ReplayModel(TASK, ReplayConfig(path=str(path)))
    oos.unknown_answers = "out_of_scope"
    out = oos.predict_proba(["p", "q", "r"])
    assert out.ok.all() and out.oos().tolist() == [False, True, True]
    assert oos.fingerprint() != failing.fingerprint(), "the two readings must not share a cache"


def test_config_reaches_the_backend(tmp_path) -> None:
    path = tmp_path / "answers.csv"
    pd.DataFrame({"text": ["p"], "gpt4": ["a"]}).to_csv(path, index=False)
    cfg = load_config(
        None,
        [
            "large.backend=replay",
            f"large.replay.path={path}",
            "large.out_of_scope.unknown_answers=out_of_scope",
            "large.out_of_scope.below=0.3",
        ],
    )
    model = make_large_model(cfg, TASK)
    assert model.unknown_answers == "out_of_scope" and model.out_of_scope_below == 0.3


def test_merge_answers_out_of_scope_and_the_metrics_count_it() -> None:
    n = 4
    sp = np.tile([0.7, 0.2, 0.1], (n, 1))
    routed = Routed(
        features=Features(small=np.zeros((n, 2)), dense=np.zeros((n, 2))),
        small_proba=sp,
        confidence=np.array([0.99, 0.1, 0.1, 0.99]),
        judge_proba=None,
        to_large=np.array([False, True, True, False]),
        epsilon=0.5,
        hints=None,
    )
    out = CallableModel(TASK, _oos_fn).predict_proba(["?1", "2"])
    preds = merge(routed, out, np.array([1, 2]))
    assert preds.answer.tolist() == [0, OUT_OF_SCOPE, 1, 0]
    assert preds.out_of_scope.tolist() == [False, True, False, False]
    gold = np.array([0, OUT_OF_SCOPE, 1, OUT_OF_SCOPE])  # the last one: answered by the small model
    m = view_metrics(preds.answer, gold, preds.to_large, {})
    assert m["out_of_scope"] == 1 and m["oos_recall"] == 0.5 and m["oos_confident_wrong"] == 0.5
    acc = Accuracy()
    acc.update(preds.answer, gold)
    assert acc.result() == 0.75, "answering out_of_scope to an out-of-scope input is right"
    o = OutOfScope()
    o.update(preds.answer, gold, preds.to_large)
    o.reset()
    assert o.result() == {"answered": 0, "n": 0, "recall": None, "confident_wrong": None}


def test_files_read_and_write_the_out_of_scope_label() -> None:
    df = pd.DataFrame({"id": ["1", "2", "3"], "text": ["x", "y", "z"], "label": ["a", None, None]})
    df["label__eval"] = [None, OUT_OF_SCOPE_LABEL, "c"]
    df.loc[2, "label"] = OUT_OF_SCOPE_LABEL
    b = batch_from_frame(df, TASK, "t")
    assert b.label.tolist() == [0, NO_LABEL, OUT_OF_SCOPE]
    assert b.gold.tolist() == [0, OUT_OF_SCOPE, OUT_OF_SCOPE]
    back = batch_from_frame(b.to_frame(TASK), TASK, "t")
    assert back.label.tolist() == b.label.tolist() and back.gold.tolist() == b.gold.tolist()
    with pytest.raises(Exception, match="'zzz'"):
        batch_from_frame(df.assign(label=["zzz", None, None]), TASK, "t")


def test_holding_classes_back_renumbers_the_rest() -> None:
    b = Batch(
        ids=np.arange(6).astype(str).astype(object),
        inputs=[str(i) for i in range(6)],
        label=np.array([0, 1, 2, 3, NO_LABEL, 1]),
        gold=np.array([0, 1, 2, 3, 3, 1]),
    )
    task = Task(kind="text", label_names=("w", "x", "y", "z"), text_col="text")
    reduced, (ins,), (outs,), held = hold_out_classes(task, [b], 1, seed=0)
    assert len(held) == 1 and held[0] not in reduced.label_names and reduced.n_classes == 3
    names = [reduced.label_names[g] for g in ins.gold]
    assert names == [task.label_names[g] for g in b.gold if task.label_names[g] not in held]
    assert (outs.gold == OUT_OF_SCOPE).all() and len(ins) + len(outs) == len(b)


@pytest.mark.slow
def test_held_back_classes_stop_being_answered_confidently_by_the_small_model() -> None:
    """Digits with two classes held back: a large model that says out_of_scope on them
    (after) against one that can only name a known class, kcm before out-of-scope handling
    (before). The share of held-back test inputs the small model answers itself, confidently
    and wrongly, after the stream."""
    cfg = load_config(None, ["data.out_of_scope_classes=2", "data.stream.label_fraction=0"])
    bundle = build_bundle(cfg)
    oos_view = bundle.out_of_scope
    assert oos_view is not None and len(oos_view) > 50
    assert sum(int((b.gold == OUT_OF_SCOPE).sum()) for b in bundle.stream) >= 20
    teacher = make_large_model(cfg, bundle.task).fit(bundle.pretrain)

    def key(row: np.ndarray) -> bytes:
        return np.asarray(row, np.float32).tobytes()

    held = {key(r) for r in oos_view.inputs}
    for b in bundle.stream:
        held |= {key(b.inputs[i]) for i in np.flatnonzero(b.gold == OUT_OF_SCOPE)}

    def says_out_of_scope(inputs: list[np.ndarray], hints: np.ndarray | None) -> np.ndarray:
        p = teacher.predict_proba(np.asarray(inputs)).raw
        p[[key(r) in held for r in inputs]] = 0.0  # no class of the task fits
        return p

    def confident_wrong(large) -> tuple[float, float]:
        system = CollaborationSystem(bundle.task, cfg, large).setup(bundle.pretrain)
        for batch in bundle.stream:
            system.learn(batch, system.predict(batch))
        p = system.predict(oos_view)
        m = view_metrics(p.answer, oos_view.gold, p.to_large, bundle.groups)
        return m["oos_confident_wrong"], m["oos_recall"]

    before, recall_before = confident_wrong(make_large_model(cfg, bundle.task).fit(bundle.pretrain))
    after, recall_after = confident_wrong(CallableModel(bundle.task, says_out_of_scope))
    assert recall_before == 0.0 and recall_after >= 0.9
    assert before >= 0.1, f"the stream should teach the unaware system to answer them ({before})"
    assert after <= 0.05 and after < before / 3, (before, after)
