"""The collaboration system: judge + small model + large model, one object for every caller.

``predict(batch)`` routes like live traffic: the small model answers where the judge's C_x > ε,
the large model answers the rest with the small model's prediction as a hint.
``learn(batch, predictions)`` then distils labels, the large model's outputs and the judge's
confident outputs into the small model (with class-balanced replay), and retrains the judge
on out-of-sample small-model outputs obtained by cross-fitting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kcm import routing
from kcm.answers import Predictions, Routed, ask_large, merge
from kcm.config import KCMConfig
from kcm.data.batch import NO_LABEL, OUT_OF_SCOPE, Batch, Task
from kcm.defaults import resolved
from kcm.distill import Records, ReplayBuffer, distill
from kcm.features import Features, Featurizer, make_featurizer
from kcm.judge import NeuralJudge, make_judge, memory_features
from kcm.models.large import LargeModel, LargeOutput
from kcm.models.small import SmallModel

log = logging.getLogger(__name__)


@dataclass
class TrainReport:
    n_new: int
    n_replayed: int
    n_judge: int
    judge_positive_rate: float | None
    seconds: float
    replay_size: int


def class_weights(target: np.ndarray, beta: float) -> np.ndarray | None:
    """Per-sample weights ∝ (samples of the same class)^-β, mean 1; None for β = 0
    (out-of-scope samples count as one more class)."""
    if beta == 0.0:
        return None
    _, inverse, counts = np.unique(target, return_inverse=True, return_counts=True)
    w = counts[inverse].astype(np.float64) ** -beta
    return w / w.mean()


class CollaborationSystem:
    """Large–small collaboration with a judge (KAN = KCM, MLP = MCM)."""

    def __init__(self, task: Task, cfg: KCMConfig, large: LargeModel) -> None:
        self.task = task
        self.cfg = cfg  # as configured (saved with a version)
        self.settings = resolved(cfg, task)  # what it runs with: kcm.defaults decides auto
        self.large = large
        self.featurizer_: Featurizer | None = None
        self.small_: SmallModel | None = None
        self.judge_: NeuralJudge | None = None
        self.replay_ = ReplayBuffer(cfg.distill.replay_size, seed=cfg.seed)
        self.cycle_ = 0
        self.trained_ = False
        self._rng = np.random.default_rng(cfg.seed + 17)
        self._bias_cache: tuple[int, np.ndarray] | None = None

    # -- setup ----------------------------------------------------------------------
    def new_small(self, seed_offset: int = 0) -> SmallModel:
        s = self.settings.small
        return SmallModel(
            self.task.n_classes,
            hidden=s.hidden,
            epochs=s.epochs,
            lr=s.lr,
            weight_decay=s.weight_decay,
            batch_size=s.batch_size,
            seed=self.cfg.seed + seed_offset,
        )

    def embedding_dir(self) -> Path | None:
        """Where the encoder's embeddings are cached: beside the large model's answers (the
        workspace's state folder), or in memory when those are."""
        path = self.large.cache.path
        return path.parent if path is not None else None

    def setup(self, warmup: Batch, cache_dir: str | Path | None = None) -> CollaborationSystem:
        """Fit the featurizer on warm-up inputs (unsupervised; the pretraining split).
        ``cache_dir``: where the embedding cache lives (default ``embedding_dir()``)."""
        self.featurizer_ = make_featurizer(
            self.task, self.settings, cache_dir or self.embedding_dir()
        )
        self.featurizer_.fit(warmup.inputs)  # type: ignore[arg-type]
        self.small_ = self.new_small()
        return self

    def featurize(self, batch: Batch) -> Features:
        if self.featurizer_ is None:
            raise RuntimeError("CollaborationSystem.setup(warmup) must run before predict/learn")
        return self.featurizer_.transform(batch.inputs)  # type: ignore[arg-type]

    # -- answering ------------------------------------------------------------------
    def small_proba(self, feats: Features) -> np.ndarray:
        if not self.trained_ or self.small_ is None or not self.small_.is_fitted:
            return np.full((len(feats), self.task.n_classes), 1.0 / self.task.n_classes)
        return self.small_.predict_proba(feats.small)

    def judge_inputs(
        self, feats: Features, small_proba: np.ndarray, memory: Records | None
    ) -> np.ndarray:
        """The judge reads the dense features plus how well memory supports the small
        model's answer (it adds the small model's output summary itself). Neighbours in
        memory are searched in the space ``judge.memory_space`` names."""
        dense = feats.dense
        if memory is None:
            extra = np.zeros((len(dense), 4), np.float32)
        else:
            small_space = self.cfg.judge.memory_space == "small"
            extra = memory_features(
                dense,
                small_proba.argmax(axis=1),
                memory.features.dense,
                memory.target,
                self.task.n_classes,
                space=feats.small if small_space else None,
                ref_space=memory.features.small if small_space else None,
            )
        return np.hstack([dense, extra])

    def judge_scores(
        self, feats: Features, small_proba: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None]:
        if not self.trained_ or self.judge_ is None:
            return np.zeros(len(feats)), None
        X = self.judge_inputs(feats, small_proba, self.replay_.records_)
        proba = self.judge_.predict_proba(X, small_proba)
        return self.judge_.confidence_from(proba), proba

    def small_bias(self) -> np.ndarray | None:
        """The small model's mean output on the replay memory (the data it learns from): its
        learned class prior, long-tailed like the stream. Cached per learned cycle; None before
        anything is learned."""
        if self._bias_cache is not None and self._bias_cache[0] == self.cycle_:
            return self._bias_cache[1]
        mem = self.replay_.records_
        if not self.trained_ or self.small_ is None or not self.small_.is_fitted or mem is None:
            return None
        c = self.task.n_classes
        # smoothed towards uniform so a class never seen keeps a finite correction
        bias = 0.9 * self.small_.predict_proba(mem.features.small).mean(axis=0) + 0.1 / c
        self._bias_cache = (self.cycle_, bias)
        return bias

    def hint_of(self, small_proba: np.ndarray) -> np.ndarray:
        """The hint sent to the large model: the small model's distribution, with its class
        bias divided out when ``large.hint_prior`` is ``balanced``. Two classifiers' posteriors
        both carry a class prior; multiplying them (the fusion) would count the stream's
        long-tail prior against the tail classes the large model still recognises."""
        if self.cfg.large.hint_prior == "stream":
            return small_proba
        bias = self.small_bias()
        if bias is None:
            return small_proba
        h = small_proba / bias
        return h / h.sum(axis=1, keepdims=True)

    def route(
        self,
        batch: Batch,
        *,
        mode: routing.Mode = "judge",
        epsilon: float | None = None,
        target_rate: float | None = None,
        use_hint: bool | None = None,
    ) -> Routed:
        """Score the batch and decide who answers each sample; compute the hint the large
        model will be sent for every routed sample. No large-model call is made here.

        ``epsilon`` / ``target_rate`` override ``routing.epsilon`` / ``routing.target_large_rate``
        (a per-batch budget that calibrates ε on the batch's own scores)."""
        feats = self.featurize(batch)
        sp = self.small_proba(feats)
        jconf, jproba = self.judge_scores(feats, sp) if mode == "judge" else (None, None)
        conf = routing.score(
            mode,
            sp,
            judge_conf=jconf,
            gold=batch.gold if mode == "oracle" else None,
            rng=self._rng,
            trained=self.trained_,
        )
        r = self.settings.routing
        max_loss = None
        if epsilon is None and target_rate is None:  # the configured rule
            epsilon, target_rate, max_loss = r.epsilon, r.target_large_rate, r.max_loss
        decision = routing.decide(
            conf, r.epsilon if epsilon is None else epsilon, target_rate, mode, max_loss
        )
        to_large = decision.to_large
        if mode == "judge" and self.trained_ and r.audit > 0:
            # seeded by the cycle: a system reloaded from disk audits as one kept in memory
            rng = np.random.default_rng(self.cfg.seed + 2000 + self.cycle_)
            to_large = to_large | (rng.random(len(to_large)) < r.audit)
        hint = self.cfg.large.hint if use_hint is None else use_hint
        hints = None
        if hint and self.trained_ and to_large.any():
            hints = np.full_like(sp, np.nan)
            idx = np.flatnonzero(to_large)
            hints[idx] = self.hint_of(sp[idx])
        return Routed(
            features=feats,
            small_proba=sp,
            confidence=conf,
            judge_proba=jproba,
            to_large=to_large,
            epsilon=decision.epsilon,
            hints=hints,
        )

    def ask_large(
        self,
        batch: Batch,
        idx: np.ndarray,
        hints: np.ndarray | None,
        progress: Callable[[int], None] | None = None,
    ) -> LargeOutput:
        """The one place the large model is asked: samples ``idx`` of ``batch`` with the
        hints ``route`` computed for them (rows of ``Routed.hints``, or None)."""
        return ask_large(self.large, batch, idx, hints, progress)

    def predict(
        self,
        batch: Batch,
        *,
        route: routing.Mode = "judge",
        epsilon: float | None = None,
        target_rate: float | None = None,
        use_hint: bool | None = None,
        call_large: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> Predictions:
        """Answer a batch: ``route``, then ``ask_large`` on the routed samples, then ``merge``.
        The workspace steps run the same three functions one by one."""
        r = self.route(
            batch, mode=route, epsilon=epsilon, target_rate=target_rate, use_hint=use_hint
        )
        idx = np.flatnonzero(r.to_large)
        if not call_large or len(idx) == 0:
            return merge(r, None)
        out = self.ask_large(batch, idx, None if r.hints is None else r.hints[idx], progress)
        return merge(r, out, idx)

    # -- learning -------------------------------------------------------------------
    def records_for(self, batch: Batch, preds: Predictions) -> Records:
        """What can be learned from a routed batch: labels, large outputs, judge outputs.
        An input the large model answered out of scope keeps that as its target (the judge
        learns the small model is wrong on it) and no distribution to distil."""
        n, c = len(batch), self.task.n_classes
        oos = preds.out_of_scope
        large = preds.large_raw.copy()
        large[oos] = np.nan
        large_ok = ~np.isnan(large).any(axis=1)
        target = batch.label.copy()
        fill = (target == NO_LABEL) & large_ok
        target[fill] = large[fill].argmax(axis=1)
        target[(target == NO_LABEL) & oos] = OUT_OF_SCOPE
        judge_t = np.full((n, c), np.nan)
        if self.trained_:
            easy = ~preds.to_large
            if self.cfg.judge.target == "labels" and preds.judge_proba is not None:
                judge_t[easy] = preds.judge_proba[easy]
            else:  # correctness judge: the small model's own answer, confirmed by the judge
                judge_t[easy] = np.eye(c)[preds.small_proba[easy].argmax(axis=1)]
        return Records(
            features=preds.features,
            label=batch.label.copy(),
            target=target,
            large=large,
            judge=judge_t,
            cycle=np.full(n, self.cycle_, dtype=np.int64),
        )

    def learn(self, batch: Batch, preds: Predictions) -> TrainReport:
        """Distil the routed batch into the small model, then retrain the judge."""
        t0 = time.perf_counter()
        assert self.small_ is not None
        new = self.records_for(batch, preds)
        if self.settings.small.refit:  # anew on the whole memory, as the judge's fold models
            self.replay_.add(new)
            replayed = None
            assert self.replay_.records_ is not None
            self.small_ = self.new_small()
            distill(self.small_, self.replay_.records_, self.settings.distill)
        else:
            n_replay = round(self.settings.distill.replay_ratio * len(new))
            # seeded by the cycle: a system reloaded from disk learns as one kept in memory
            replay_rng = np.random.default_rng(self.cfg.seed + 1000 + self.cycle_)
            replayed = self.replay_.sample(n_replay, replay_rng)
            train = Records.concat([new, replayed]) if replayed is not None else new
            distill(self.small_, train, self.settings.distill)
            self.replay_.add(new)
        judge_data = self.replay_.records_ if len(self.replay_) else new
        assert judge_data is not None
        n_judge, pos = self._fit_judge(judge_data)
        self.trained_ = True
        self.cycle_ += 1
        return TrainReport(
            n_new=len(new),
            n_replayed=0 if replayed is None else len(replayed),
            n_judge=n_judge,
            judge_positive_rate=pos,
            seconds=time.perf_counter() - t0,
            replay_size=len(self.replay_),
        )

    def cross_fit(self, data: Records) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold small-model distributions and judge inputs on ``data``: each row is
        predicted by a model, and compared with a memory, that did not contain it. This is
        the honest input and target for the judge."""
        k = self.settings.judge.folds
        n = len(data)
        rng = np.random.default_rng(self.cfg.seed + 100 + self.cycle_)
        fold = rng.permutation(np.arange(n) % k)
        oof = np.full((n, self.task.n_classes), 1.0 / self.task.n_classes)
        X = np.zeros((n, data.features.dense.shape[1] + 4), np.float32)
        for f in range(k):
            test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            if len(test) == 0 or len(train) == 0:
                continue
            model = self.new_small(seed_offset=1 + f)
            train_part = data.subset(train)
            distill(model, train_part, self.settings.distill)
            if model.is_fitted:
                oof[test] = model.predict_proba(data.features.small[test])
            X[test] = self.judge_inputs(data.features.subset(test), oof[test], train_part)
        return oof, X

    def _fit_judge(self, data: Records) -> tuple[int, float | None]:
        # out-of-scope samples teach a correctness judge that the small model is wrong there
        oos = (data.target == OUT_OF_SCOPE) & (self.cfg.judge.target == "correctness")
        known = np.flatnonzero((data.target >= 0) | oos)
        if len(known) < max(4, self.settings.judge.folds):
            log.warning(
                "only %d samples with a known answer: the judge is not retrained", len(known)
            )
            return 0, None
        sub = data.subset(known)
        oof, X = self.cross_fit(sub)
        judge = make_judge(self.settings.judge, seed=self.cfg.seed)
        judge.fit(
            X, sub.target, oof, sample_weight=class_weights(sub.target, self.cfg.judge.class_weight)
        )
        self.judge_ = judge
        pos = float((oof.argmax(axis=1) == sub.target).mean())
        return len(sub), pos
