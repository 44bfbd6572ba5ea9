"""The prequential driver: one stream, answered batch by batch by any method, each answer
delivered before anything about it is learned.

``run_system`` drives a kcm collaboration system (``predict`` then ``learn``: the library's one
answering path); ``run_policy`` drives a peer policy (``kcm.peers``) with the large model's
answers through a counted ``ask``. Both return ``StreamMetrics`` over the same stream.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from kcm.data.batch import Batch
from kcm.evaluation.stream import RankingAUROC, StreamMetrics, rss_mb
from kcm.features import Features
from kcm.peers.base import OnlinePolicy
from kcm.routing import Mode
from kcm.system import CollaborationSystem


@dataclass
class OnlineStream:
    """A stream as every method sees it. ``batches[i].label`` is what the learner is shown
    after answering (-1: hidden), ``gold`` what answers are scored against; ``teacher[i]`` is
    the large model's answer to each request without a hint (-1: a failed call), what a peer
    receives when it asks. ``warm``: gold examples every learner starts from (or None)."""

    batches: list[Batch]
    features: list[Features]
    teacher: list[np.ndarray]
    n_classes: int
    warm: Batch | None = None
    warm_features: Features | None = None
    late: float | int = 0.25
    #: what one call about each query costs (None: the large model is not priced)
    prices: list[np.ndarray] | None = None

    def prices_of(self, i: int) -> np.ndarray | None:
        return None if self.prices is None else self.prices[i]

    @property
    def n(self) -> int:
        return sum(len(b) for b in self.batches)


def revealed(label: np.ndarray, called: np.ndarray, teacher: np.ndarray) -> np.ndarray:
    """What a learner may learn about a batch after answering it: the label where the stream
    shows it, else the large model's answer where it was asked (and answered), else -1."""
    out = np.asarray(label).copy()
    take = (out < 0) & np.asarray(called, bool) & (np.asarray(teacher) >= 0)
    out[take] = np.asarray(teacher)[take]
    return out


def run_policy(policy: OnlinePolicy, stream: OnlineStream, seed: int) -> StreamMetrics:
    """A peer over the stream; the calls it makes are counted by ``ask``."""
    policy.start(stream.n_classes, stream.n, seed)
    if stream.warm is not None and stream.warm_features is not None:
        policy.warm(stream.warm_features, stream.warm.label)
    metrics = StreamMetrics(late=stream.late)
    for i, (batch, feats, teacher) in enumerate(
        zip(stream.batches, stream.features, stream.teacher, strict=True)
    ):
        called = np.zeros(len(batch), bool)

        def ask(rows: np.ndarray, teacher=teacher, called=called) -> np.ndarray:
            rows = np.asarray(rows, dtype=np.int64)
            if called[rows].any():
                raise RuntimeError(f"{type(policy).__name__} asked for a request twice")
            called[rows] = True
            return teacher[rows]

        t0, trained0 = time.perf_counter(), policy.train_seconds()
        answer = policy.serve(feats, ask)
        t1, trained1 = time.perf_counter(), policy.train_seconds()
        policy.learn(feats, revealed(batch.label, called, teacher))
        t2, trained2 = time.perf_counter(), policy.train_seconds()
        # retraining inside serve (every 100 requests) is learning, not serving
        inside = trained1 - trained0
        learn_s = (t2 - t1) - (trained2 - trained1) + (trained2 - trained0)
        metrics.update(
            answer, batch.gold, called, learn_s, (t1 - t0) - inside, rss_mb(), stream.prices_of(i)
        )
    return metrics


def run_system(
    system: CollaborationSystem,
    stream: OnlineStream,
    route: Mode = "judge",
    epsilon: float | None = None,
    ranking: RankingAUROC | None = None,
) -> StreamMetrics:
    """A kcm system over the stream: ``predict`` (route, ask the large model with the hint,
    merge) then ``learn`` on each batch. ``route`` / ``epsilon``: another routing score and
    its threshold (e.g. ``cascade``: the small model's own confidence). ``ranking``: updated
    with each batch's routing scores (the judge's C_x, the small model's max-softmax and
    margin) against the gold labels."""
    if stream.warm is not None:
        system.learn(stream.warm, system.predict(stream.warm, call_large=False))
    metrics = StreamMetrics(late=stream.late)
    for i, batch in enumerate(stream.batches):
        t0 = time.perf_counter()
        preds = system.predict(batch, route=route, epsilon=epsilon)
        t1 = time.perf_counter()
        if ranking is not None and system.trained_:
            ranking.update(preds.small_proba, batch.gold, judge=preds.confidence)
        report = system.learn(batch, preds)
        metrics.update(
            preds.answer,
            batch.gold,
            preds.to_large,
            report.seconds,
            t1 - t0,
            rss_mb(),
            stream.prices_of(i),
        )
    return metrics
