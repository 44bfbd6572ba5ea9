"""Online cascade learning (Nie et al., ICML 2024, "Online Cascade Learning for Efficient
Inference over Streams", arXiv:2402.04513; reference code Flitternie/online_cascade_learning).

A cascade of cheap models in front of the LLM, all learned online from the LLM's answers.
Each level has a deferral head (an MLP on the level's class distribution, sigmoid output)
trained whenever the LLM answers, towards "this level disagrees with the LLM" (plus a
calibration term, capped at 1) and through the cascade's expected cost,
Σ_j (Π_{i<j} d_i) [(1 − d_j) CE(p_j, LLM) + d_j μ cost_j]: μ trades accuracy for calls. A
level answers when its head says not to defer and a decaying exploration coin (defer anyway
with probability decay^updates) lets it; during the warm-up (until every level has been
updated ``warmup_updates`` times) everything goes to the LLM.

Faithful: the deferral heads, both losses, the warm-up, the exploration decay, the per-level
update caches (8 and 16 answers), μ as the knob. Adapted: level 1 is a (multinomial)
logistic regression trained by SGD on kcm's cheap TF-IDF features (the paper: one-vs-rest,
scikit-learn's SGDClassifier), here kcm's linear small model; level 2 is kcm's small model
with one hidden layer of 128 on the same features (the paper's level 2 is BERT-base, which would be
the large model's cost here); revealed labels are learned by the models too, as kcm learns
them.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from kcm.features import Features
from kcm.peers import rules
from kcm.peers.base import Ask, OnlinePolicy, Student


class _Level:
    """A cascade level: a student updated on every ``cache_size`` new answers (with replay)."""

    def __init__(
        self, n_classes: int, seed: int, cache_size: int, hidden: int, epochs: int
    ) -> None:
        self.student = Student(n_classes, seed=seed, epochs=epochs, hidden=hidden)
        self.cache_size = cache_size

    @property
    def updates(self) -> int:
        return self.student.updates_

    def add(self, x, y: int) -> None:
        self.student.add(x, np.array([y]))
        if self.student.pending >= self.cache_size:
            self.student.retrain()

    def proba(self, x) -> np.ndarray:
        return self.student.proba(x)


def deferral_head(n_classes: int) -> nn.Module:
    return nn.Sequential(nn.Linear(n_classes, 128), nn.ReLU(), nn.Linear(128, 1), nn.Sigmoid())


class OnlineCascade(OnlinePolicy):
    def __init__(
        self,
        mu: float = 0.01,
        costs: tuple[float, float] = (1.0, 100.0),
        calibration: tuple[float, float] = (0.3, 0.3),
        decay: tuple[float, float] = (0.97, 0.95),
        warmup_updates: int = 10,
        lr: float = 7e-4,
    ) -> None:
        self.mu = mu
        self.costs = costs
        self.calibration = calibration
        self.decay = decay
        self.warmup_updates = warmup_updates
        self.lr = lr

    def start(self, n_classes: int, n_total: int, seed: int) -> OnlineCascade:
        super().start(n_classes, n_total, seed)
        torch.manual_seed(seed)
        self.levels_ = [
            _Level(n_classes, seed, cache_size=8, hidden=0, epochs=2),
            _Level(n_classes, seed + 1, cache_size=16, hidden=128, epochs=4),
        ]
        self.heads_ = [deferral_head(n_classes) for _ in self.levels_]
        params = [p for h in self.heads_ for p in h.parameters()]
        self.opt_ = torch.optim.Adam(params, lr=self.lr, weight_decay=0.0)
        self.taught_: np.ndarray | None = None
        self.asked_ = 0
        return self

    def train_seconds(self) -> float:
        return sum(lv.student.seconds_ for lv in self.levels_)

    def warming_up(self) -> bool:
        """Everything goes to the LLM until each level could have been updated
        ``warmup_updates`` times from the LLM's answers alone (gold examples given at the
        start do not shorten it: the deferral heads learn only from the LLM)."""
        return self.asked_ < self.warmup_updates * max(lv.cache_size for lv in self.levels_)

    def _train_heads(self, probas: list[np.ndarray], teacher: int) -> None:
        if min(lv.updates for lv in self.levels_) <= 2:
            return
        p = [torch.from_numpy(pr.astype(np.float32)) for pr in probas]
        d = [h(x).squeeze() for h, x in zip(self.heads_, p, strict=True)]
        loss = torch.zeros(())
        reach = torch.ones(())
        for j, (dj, pj) in enumerate(zip(d, p, strict=True)):
            pred = int(pj.argmax())
            target = rules.deferral_target(pred, teacher, self.calibration[j])
            loss = loss + (dj - target) ** 2
            ce = -torch.log(pj[0, teacher].clamp_min(1e-9))
            loss = loss + reach * ((1 - dj) * ce + dj * self.costs[j] * self.mu)
            reach = reach * dj
        loss = loss + 1e-4 * sum((w**2).sum() for h in self.heads_ for w in h.parameters())
        self.opt_.zero_grad()
        loss.backward()
        self.opt_.step()

    def serve(self, feats: Features, ask: Ask) -> np.ndarray:
        x = feats.small
        out = np.zeros(x.shape[0], np.int64)
        self.taught_ = np.full(x.shape[0], -1)
        for i in range(x.shape[0]):
            self.seen_ += 1
            xi = x[i : i + 1]
            probas = [lv.proba(xi) for lv in self.levels_]
            answer = -1
            if not self.warming_up():
                for j, (lv, pr) in enumerate(zip(self.levels_, probas, strict=True)):
                    with torch.no_grad():
                        d = float(self.heads_[j](torch.from_numpy(pr.astype(np.float32))))
                    explore = self.decay[j] ** lv.updates
                    if rules.acts(d, explore, float(self.rng_.random())):
                        answer = int(pr.argmax())
                        break
            if answer < 0:
                got = int(ask(np.array([i]))[0])
                self.calls_ += 1
                self.asked_ += 1
                if got >= 0:
                    answer = self.taught_[i] = got
                    self._train_heads(probas, got)
                    for lv in self.levels_:
                        lv.add(xi, got)
                else:
                    answer = int(probas[-1].argmax())
            out[i] = answer
        return out

    def learn(self, feats: Features, target: np.ndarray) -> None:
        fresh = self.untaught(target)
        for i in np.flatnonzero(fresh):
            for lv in self.levels_:
                lv.add(feats.small[i : i + 1], int(target[i]))
        self.taught_ = None
