"""One contract for every judge (KAN = KCM, MLP = MCM) and every training target."""

from __future__ import annotations

import numpy as np
import pytest

from kcm.config import JudgeConfig
from kcm.errors import NotFittedError
from kcm.judge import JUDGES, TARGETS, make_judge


def _task(rng: np.random.Generator, n: int = 600, c: int = 4, sure_when_right: bool = False):
    """Dense features; a 'small model' that is right on the left half of feature 0 (and, with
    ``sure_when_right``, more confident where it is right: what a confidence-only router
    reads)."""
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = (np.abs(X[:, 1]) * 2).astype(int) % c
    right = X[:, 0] < 0
    small_pred = np.where(right, y, (y + 1) % c)
    top = np.where(right, 0.9, 0.55) if sure_when_right else np.full(n, 0.9)
    top = top + rng.normal(scale=0.03, size=n) * sure_when_right
    small = np.repeat(((1 - top) / (c - 1))[:, None], c, axis=1)
    small[np.arange(n), small_pred] = top
    return X, y, small, right


@pytest.fixture(params=sorted(JUDGES))
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.mark.parametrize("target", TARGETS)
def test_fit_returns_self_and_confidence_is_a_probability(
    kind: str, target: str, rng: np.random.Generator
) -> None:
    X, y, small, _ = _task(rng)
    judge = make_judge(JudgeConfig(kind=kind, target=target, epochs=20), seed=0)
    assert judge.fit(X, y, small) is judge
    conf = judge.confidence(X, small)
    assert conf.shape == (len(X),) and (conf >= 0).all() and (conf <= 1).all()
    proba = judge.predict_proba(X, small)
    assert np.allclose(proba.sum(1), 1.0, atol=1e-5)
    assert proba.shape[1] == (2 if target == "correctness" else 4)


def test_correctness_judge_separates_right_from_wrong(kind: str, rng: np.random.Generator) -> None:
    from sklearn.metrics import roc_auc_score

    # the logistic router reads only the small model's confidence: give it a confidence that
    # tells (the others must find the rule in the input features)
    X, y, small, right = _task(rng, sure_when_right=kind == "logreg")
    judge = make_judge(JudgeConfig(kind=kind, target="correctness", epochs=40), seed=0)
    judge.fit(X[:400], y[:400], small[:400])
    auc = roc_auc_score(right[400:], judge.confidence(X[400:], small[400:]))
    assert auc > 0.9


def test_unknown_answers_are_ignored_and_seed_makes_it_deterministic(
    kind: str, rng: np.random.Generator
) -> None:
    X, y, small, _ = _task(rng)
    y = y.copy()
    y[::3] = -1
    a = make_judge(JudgeConfig(kind=kind, epochs=5), seed=1).fit(X, y, small)
    b = make_judge(JudgeConfig(kind=kind, epochs=5), seed=1).fit(X, y, small)
    assert np.allclose(a.confidence(X, small), b.confidence(X, small))


def test_not_fitted(kind: str) -> None:
    judge = make_judge(JudgeConfig(kind=kind))
    with pytest.raises(NotFittedError, match="call fit first"):
        judge.confidence(np.zeros((2, 3)), np.full((2, 2), 0.5))


def test_exported_state_restores_the_same_judge(kind: str, rng: np.random.Generator) -> None:
    X, y, small, _ = _task(rng)
    judge = make_judge(JudgeConfig(kind=kind, epochs=5), seed=0).fit(X, y, small)
    state = judge.get_state()
    again = make_judge(JudgeConfig(kind=kind, epochs=5), seed=0).set_state(state)
    np.testing.assert_allclose(again.confidence(X, small), judge.confidence(X, small), atol=1e-7)
    assert set(state) == {"meta", "arrays", "tensors"}
    import json

    json.dumps(state["meta"])  # plain data: persist writes it without pickle


def test_a_max_softmax_prior_falls_back_on_the_students_confidence(
    kind: str, rng: np.random.Generator
) -> None:
    """Trained only on hard queries (the student's top-1 near 0.3, right half the time), the
    judge has no evidence where the student is sure; with the prior its C_x there follows the
    student's confidence, and the prior survives a state round trip."""
    n, c = 400, 4
    X = rng.normal(size=(n, 5)).astype(np.float32)
    y = rng.integers(0, c, n)
    hard = np.full((n, c), 0.7 / (c - 1))
    hard[np.arange(n), np.where(rng.random(n) < 0.5, y, (y + 1) % c)] = 0.3
    sure = np.full((50, c), 0.01 / (c - 1))
    sure[:, 0] = 0.99
    Xs = rng.normal(size=(50, 5)).astype(np.float32)
    cfg = JudgeConfig(kind=kind, target="correctness", epochs=30, prior="max_softmax")
    judge = make_judge(cfg, seed=0).fit(X, y, hard)
    assert judge.confidence(Xs, sure).mean() > 0.8
    assert judge.confidence(X, hard).mean() < 0.7
    again = make_judge(JudgeConfig(kind=kind, epochs=5), seed=0).set_state(judge.get_state())
    assert again.prior == "max_softmax"
    np.testing.assert_allclose(again.confidence(Xs, sure), judge.confidence(Xs, sure), atol=1e-6)
