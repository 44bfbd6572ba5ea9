"""The settings kcm decides (``kcm.defaults``), the student refitted on its memory, the audit
share of routing, and the per-batch ranking metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kcm.config import KCMConfig, with_overrides
from kcm.data.batch import NO_LABEL, Batch, Task
from kcm.defaults import resolved
from kcm.errors import ConfigError
from kcm.evaluation.stream import RankingAUROC, auroc, margin_of
from kcm.models.large import make_large_model
from kcm.system import CollaborationSystem

TEXT = Task(kind="text", label_names=("a", "b"), text_col="text")
NUMERIC = Task(kind="numeric", label_names=("a", "b"), feature_cols=("x0", "x1"))


def _r(task: Task, *overrides: str) -> KCMConfig:
    return resolved(with_overrides(KCMConfig(), list(overrides)), task)


@pytest.mark.parametrize("backend", ["openai", "replay"])
def test_an_llm_backend_gets_the_encoder_student_and_a_low_epsilon(backend: str) -> None:
    c = _r(TEXT, f"large.backend={backend}")
    assert (c.small.refit, c.small.lr, c.small.epochs) == (True, 0.05, 20)
    assert (c.distill.w_js, c.distill.temperature, c.routing.max_loss) == (0.0, 1.0, None)
    assert c.routing.epsilon == 0.4
    # the encoder student's judge: its confidence as prior, an 8-d view, 5 folds
    assert (c.judge.prior, c.features.judge_dim, c.judge.folds) == ("max_softmax", 8, 5)


@pytest.mark.parametrize("task", [TEXT, NUMERIC])
def test_offline_backends_keep_the_measured_defaults(task: Task) -> None:
    c = _r(task)
    assert (c.small.refit, c.small.lr, c.small.epochs) == (False, 5e-3, 8)
    assert (c.distill.w_js, c.distill.temperature, c.routing.max_loss) == (0.5, 2.0, None)
    assert c.routing.epsilon == 0.98
    assert (c.judge.prior, c.features.judge_dim, c.judge.folds) == ("none", 32, 3)


def test_what_the_user_sets_wins() -> None:
    c = _r(
        TEXT,
        "large.backend=replay",
        "small.refit=false",
        "small.lr=0.01",
        "distill.w_js=0.3",
        "routing.max_loss=0.1",
        "routing.epsilon=0.9",
        "judge.prior=none",
        "judge.folds=4",
        "features.judge_dim=16",
    )
    assert (c.small.refit, c.small.lr, c.small.epochs) == (False, 0.01, 8)
    assert (c.distill.w_js, c.routing.max_loss, c.routing.epsilon) == (0.3, 0.1, 0.9)
    assert (c.judge.prior, c.judge.folds, c.features.judge_dim) == ("none", 4, 16)
    with pytest.raises(ConfigError, match="both set"):
        with_overrides(KCMConfig(), ["routing.max_loss=0.1", "routing.target_large_rate=0.2"])
    with pytest.raises(ConfigError, match=r"routing\.max_loss"):
        with_overrides(KCMConfig(), ["routing.max_loss=1.5"])
    with pytest.raises(ConfigError, match=r"routing\.epsilon"):
        with_overrides(KCMConfig(), ["routing.epsilon=1.5"])


def _numeric_batch(rng: np.random.Generator, n: int, name: str, labels: bool) -> Batch:
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 2)).astype(np.float32) + 3.0 * y[:, None]
    return Batch(
        ids=np.array([f"{name}-{i}" for i in range(n)], dtype=object),
        inputs=x,
        label=y.copy() if labels else np.full(n, NO_LABEL),
        gold=y,
        name=name,
    )


def _system(*overrides: str) -> tuple[CollaborationSystem, np.random.Generator]:
    cfg = with_overrides(
        KCMConfig(), ["judge.kind=logreg", "large.mlp_teacher.epochs=5", *overrides]
    )
    rng = np.random.default_rng(0)
    warm = _numeric_batch(rng, 120, "warm", labels=True)
    large = make_large_model(cfg, NUMERIC).fit(warm)
    system = CollaborationSystem(NUMERIC, cfg, large).setup(warm)
    system.learn(warm, system.predict(warm, call_large=False))
    return system, rng


def test_refit_trains_anew_on_the_whole_memory() -> None:
    system, rng = _system("small.refit=true")
    first = system.small_
    b = _numeric_batch(rng, 60, "b1", labels=True)
    system.learn(b, system.predict(b))
    assert system.small_ is not first  # a new model, trained on the memory
    assert len(system.replay_) == 180
    acc = (system.small_.predict(system.featurize(b).small) == b.gold).mean()
    assert acc > 0.9


def test_audit_sends_a_share_of_sure_answers_to_the_large_model() -> None:
    none, rng = _system("routing.epsilon=0.0")
    b = _numeric_batch(rng, 400, "b", labels=False)
    assert not none.route(b).to_large.any()  # ε = 0: the small model would answer all
    audited, _ = _system("routing.epsilon=0.0", "routing.audit=0.25")
    share = audited.route(b).to_large.mean()
    assert 0.18 < share < 0.32
    # seeded by the cycle: the same batch is audited the same way again
    assert (audited.route(b).to_large == audited.route(b).to_large).all()


def test_auroc_and_the_ranking_metric() -> None:
    right = np.array([True, True, False, False])
    assert auroc(right, np.array([0.9, 0.8, 0.2, 0.1])) == 1.0
    assert auroc(right, np.array([0.1, 0.2, 0.8, 0.9])) == 0.0
    assert auroc(right, np.ones(4)) == 0.5
    assert auroc(np.ones(3, bool), np.arange(3.0)) is None
    np.testing.assert_allclose(margin_of(np.array([[0.6, 0.3, 0.1]])), [0.3])
    m = RankingAUROC()
    proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.2, 0.8]])
    gold = np.array([0, 1, 0, 1])  # row 1 wrong, the rest right
    m.update(proba, gold, judge=np.array([0.9, 0.1, 0.8, 0.7]))
    out = m.result()
    assert out["auroc_judge"] == 1.0
    assert out["auroc_max_softmax"] == pytest.approx(2 / 3)
    m.reset()
    assert m.result() == {}


def test_every_ocats_system_is_a_valid_configuration() -> None:
    from kcm.bench.scenario_ocats import KCM_EPSILONS, SYSTEMS, config, methods_of

    for name, overrides in SYSTEMS.items():
        c = resolved(config(with_overrides(KCMConfig(), list(overrides)), Path(".")), TEXT)
        assert c.small.refit is not None, name
    assert methods_of(["kcm_swept", "nc_margin"]) == ("kcm", "kcm_swept", "nc_margin")
    assert 0.4 not in KCM_EPSILONS  # the default ε is kcm itself, the sweep's other points
