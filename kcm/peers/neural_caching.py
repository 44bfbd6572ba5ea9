"""Neural caching (Ramírez et al., 2023, "Cache & Distil: Optimising API Calls to Large
Language Models", arXiv:2310.13561; reference code guillemram97/neural-caching).

A student is retrained on the LLM's answers; per request, a classic active-learning criterion
decides whether to call the LLM: margin sampling (top-1 minus top-2 below a threshold),
prediction entropy (normalised by ln C, above a threshold) or query-by-committee (the current student and its
last retrained checkpoints; call when at most ``threshold`` of the 4 previous checkpoints
give the current answer, and always until 4 exist; a checkpoint is kept at each retrain that
had new answers, and the untrained model is not one).

Faithful: the first ``warmup`` (100) requests go to the LLM; the student is retrained every
``retrain_every`` (100) requests; a fixed threshold per criterion; an optional fixed budget
of calls, spent while the rule asks and then on every request once the budget left covers
the rest of the stream (``rules.budget_gate``); QBC's committee of 4 checkpoints.
Adapted: the student is kcm's small model on kcm's cheap features (the paper fine-tunes
T5-base with LoRA), continued on the new answers with replay instead of retrained from
scratch (bounded cost per retrain); margins are on probabilities, not raw logits; labels the
stream reveals after a batch are learned too, as kcm learns them.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from kcm.features import Features
from kcm.models.small import SmallModel
from kcm.peers import rules
from kcm.peers.base import Ask, OnlinePolicy, Student

CRITERIA = ("margin", "entropy", "qbc")


class NeuralCaching(OnlinePolicy):
    def __init__(
        self,
        criterion: str = "margin",
        threshold: float = 0.5,
        budget: float | None = None,
        warmup: int = 100,
        retrain_every: int = 100,
        committee: int = 4,
        memory: int = 3000,
    ) -> None:
        self.criterion = criterion
        self.threshold = threshold
        self.budget = budget
        self.warmup = warmup
        self.retrain_every = retrain_every
        self.committee = committee
        self.memory = memory

    def start(self, n_classes: int, n_total: int, seed: int) -> NeuralCaching:
        if self.criterion not in CRITERIA:
            raise ValueError(f"criterion={self.criterion!r}; choose one of {CRITERIA}")
        super().start(n_classes, n_total, seed)
        self.student_ = Student(n_classes, seed=seed, memory=self.memory)
        self.checkpoints_: deque[SmallModel] = deque(maxlen=self.committee)
        self.budget_left_ = None if self.budget is None else round(self.budget * n_total)
        self.since_retrain_ = 0
        self.taught_: np.ndarray | None = None
        return self

    def train_seconds(self) -> float:
        return self.student_.seconds_

    def retrain_student(self) -> None:
        """Retrain on what arrived since the last retrain; QBC keeps the model it replaces
        (a retrain with nothing new changes nothing, and adds no checkpoint)."""
        if self.student_.pending == 0:
            return
        if self.criterion == "qbc" and self.student_.model_.is_fitted:
            self.checkpoints_.append(self.student_.frozen_copy())
        self.student_.retrain()

    def _value(self, proba: np.ndarray, x) -> np.ndarray:
        if self.criterion == "margin":
            return rules.margin(proba)
        if self.criterion == "entropy":  # normalised by ln C: one grid for any class count
            return rules.entropy(proba) / np.log(max(self.n_classes_, 2))
        if len(self.checkpoints_) < self.committee:  # QBC calls until the committee is full
            return np.full(len(proba), -1.0)
        votes = [m.predict(x) for m in self.checkpoints_]
        return rules.committee_votes(proba.argmax(axis=1), np.stack(votes)).astype(float)

    def _score(self, x) -> tuple[np.ndarray, np.ndarray]:
        proba = self.student_.proba(x)
        return proba.argmax(axis=1), self._value(proba, x)

    def serve(self, feats: Features, ask: Ask) -> np.ndarray:
        x = feats.small
        answer, value = self._score(x)
        out = answer.copy()
        self.taught_ = np.full(len(answer), -1)
        for i in range(len(answer)):
            self.seen_ += 1
            want = self.seen_ <= self.warmup or bool(
                rules.uncertain(self.criterion, value[i : i + 1], self.threshold)[0]
            )
            if self.budget_left_ is not None:
                remaining = self.n_total_ - self.seen_ + 1
                want = rules.budget_gate(want, self.budget_left_, remaining)
            if want:
                got = int(ask(np.array([i]))[0])
                self.calls_ += 1
                if self.budget_left_ is not None:
                    self.budget_left_ -= 1
                if got >= 0:
                    out[i] = self.taught_[i] = got
                    self.student_.add(x[i : i + 1], np.array([got]))
            self.since_retrain_ += 1
            if self.since_retrain_ >= self.retrain_every:
                self.since_retrain_ = 0
                self.retrain_student()
                if i + 1 < len(answer):  # the rest of the batch sees the new student
                    a, v = self._score(x[i + 1 :])
                    answer[i + 1 :], value[i + 1 :] = a, v
                    out[i + 1 :] = a
        return out

    def learn(self, feats: Features, target: np.ndarray) -> None:
        """What the stream reveals joins the student's data, except the LLM answers it
        already holds (a revealed label that corrects one is added)."""
        fresh = self.untaught(target)
        self.student_.add(feats.small, np.where(fresh, target, -1))
        self.taught_ = None
