"""The hint sent to the large model: raw, or with the small model's class bias divided out."""

from __future__ import annotations

import numpy as np

from kcm.config import load_config
from kcm.data.stream import build_bundle
from kcm.models.large.callable import CallableModel
from kcm.system import CollaborationSystem


def _trained(prior: str) -> tuple[CollaborationSystem, object]:
    cfg = load_config(None, ["judge.epochs=10", f"large.hint_prior={prior}"])
    b = build_bundle(cfg)

    def large(inputs: list, hints: np.ndarray | None) -> np.ndarray:
        # an undecided large model: the fused answer is the hint alone, p ∝ hint^w
        return np.full((len(inputs), b.task.n_classes), 1.0 / b.task.n_classes)

    s = CollaborationSystem(b.task, cfg, CallableModel(b.task, large)).setup(b.pretrain)
    for batch in b.stream[:2]:
        s.learn(batch, s.predict(batch))
    return s, b


def _hint_seen(p: object, w: float = 0.5) -> np.ndarray:
    """Invert the fusion of a uniform large answer: hint ∝ answer^(1/w)."""
    h = np.asarray(p.final_proba) ** (1 / w)  # type: ignore[attr-defined]
    return h / h.sum(axis=1, keepdims=True)


def test_balanced_hint_divides_out_the_small_models_class_bias() -> None:
    s, b = _trained("balanced")
    bias = s.small_bias()
    assert bias is not None and np.isclose(bias.sum(), 1.0)
    # the stream is long-tailed: the small model says its head class more than its tail
    counts = np.bincount(s.replay_.records_.target, minlength=b.task.n_classes)
    assert bias[counts.argmax()] > bias[counts[counts > 0].argmin()]
    sp = s.small_proba(s.featurize(b.test))
    h = s.hint_of(sp)
    assert np.allclose(h.sum(axis=1), 1.0)
    expect = sp / bias
    assert np.allclose(h, expect / expect.sum(axis=1, keepdims=True))
    # what reaches the large model is that hint
    p = s.predict(b.test, epsilon=1.0)  # everything goes to the large model
    assert p.to_large.all()
    assert np.allclose(_hint_seen(p), s.hint_of(p.small_proba), atol=1e-4)
    assert not np.allclose(_hint_seen(p), p.small_proba, atol=1e-3)
    # the bias follows the small model: recomputed after the next cycle
    s.learn(b.stream[2], s.predict(b.stream[2]))
    assert not np.allclose(s.small_bias(), bias)


def test_stream_hint_is_the_raw_distribution() -> None:
    s, b = _trained("stream")
    p = s.predict(b.test, epsilon=1.0)
    assert np.allclose(_hint_seen(p), p.small_proba, atol=1e-4)
