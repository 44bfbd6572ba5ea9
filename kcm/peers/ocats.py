"""OCaTS (Stogiannidis et al., Findings of EMNLP 2023, "Cache me if you Can: an Online
Cost-aware Teacher-Student framework to Reduce the Calls to Large Language Models",
arXiv:2310.13395; reference code stogiannidis/OCaTS).

The student is a k-NN classifier over the cached teacher answers: the k = 5 nearest cached
queries vote with weights 1/d² (d = cosine distance). The teacher (the LLM) is called when
the vote's entropy exceeds t_H or the query's cosine distance to the neighbours' weighted
centroid exceeds t_c; every teacher answer is added to the cache at once. The thresholds are
tuned for the discounted accuracy φ = accuracy − λ·calls/N.

Faithful: k, the weights, both criteria and their "either" combination, the cache update, the
initial cache of gold examples. Adapted: the neighbours are searched in kcm's cheap TF-IDF
space (the paper embeds queries with a sentence encoder, which would be the large model's
cost here); labels the stream reveals after a batch are cached too, as kcm learns them;
the cache keeps at most ``memory`` entries (oldest dropped), so cost is bounded.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kcm.features import Features, l2_rows
from kcm.peers import rules
from kcm.peers.base import Ask, OnlinePolicy


class OCaTS(OnlinePolicy):
    def __init__(self, t_h: float = 0.5, t_c: float = 0.5, k: int = 5, memory: int = 20000) -> None:
        self.t_h = t_h
        self.t_c = t_c
        self.k = k
        self.memory = memory

    def start(self, n_classes: int, n_total: int, seed: int) -> OCaTS:
        super().start(n_classes, n_total, seed)
        self.base_: sp.csr_matrix | None = None
        self.base_y_ = np.zeros(0, np.int64)
        self.new_: list[sp.csr_matrix] = []
        self.new_y_: list[int] = []
        self.taught_: np.ndarray | None = None
        return self

    def _add(self, x: sp.csr_matrix, y: np.ndarray) -> None:
        for j in np.flatnonzero(np.asarray(y) >= 0):
            self.new_.append(x[j])
            self.new_y_.append(int(y[j]))
        if len(self.new_) >= 256:
            self._compact()

    def _compact(self) -> None:
        if not self.new_:
            return
        parts = ([self.base_] if self.base_ is not None else []) + self.new_
        self.base_ = sp.vstack(parts, format="csr")
        self.base_y_ = np.concatenate([self.base_y_, np.asarray(self.new_y_, np.int64)])
        if len(self.base_y_) > self.memory:
            self.base_, self.base_y_ = self.base_[-self.memory :], self.base_y_[-self.memory :]
        self.new_, self.new_y_ = [], []

    def predict_one(self, q: sp.csr_matrix) -> tuple[int, float, float]:
        """(answer, vote entropy, distance to the neighbours' centroid); no cache: (-1, inf, inf).
        The cache is the compacted part plus the answers added since (compacted every 256)."""
        parts, ys = [], []
        if self.base_ is not None and len(self.base_y_):
            parts.append(self.base_)
            ys.append(self.base_y_)
        if self.new_:
            parts.append(sp.vstack(self.new_, format="csr"))
            ys.append(np.asarray(self.new_y_, np.int64))
        if not ys:
            return -1, float("inf"), float("inf")
        y = np.concatenate(ys)
        sims = np.concatenate([np.asarray((p @ q.T).todense()).ravel() for p in parts])
        kk = min(self.k, len(y))
        top = np.argpartition(-sims, kk - 1)[:kk]
        offsets = np.cumsum([0, *(p.shape[0] for p in parts)])
        rows = [
            parts[int(np.searchsorted(offsets, t, side="right") - 1)][
                int(t - offsets[int(np.searchsorted(offsets, t, side="right") - 1)])
            ]
            for t in top
        ]
        nb = sp.vstack(rows, format="csr")
        gram = np.asarray((nb @ nb.T).todense())
        p, h, dist = rules.knn_vote(sims[top], y[top], gram, self.n_classes_)
        return int(p.argmax()), h, dist

    def serve(self, feats: Features, ask: Ask) -> np.ndarray:
        x = l2_rows(sp.csr_matrix(feats.small))
        out = np.zeros(x.shape[0], np.int64)
        self.taught_ = np.full(x.shape[0], -1)
        for i in range(x.shape[0]):
            self.seen_ += 1
            answer, h, dist = self.predict_one(x[i])
            if answer < 0 or rules.ocats_calls(h, dist, self.t_h, self.t_c):
                got = int(ask(np.array([i]))[0])
                self.calls_ += 1
                if got >= 0:
                    answer = self.taught_[i] = got
                    self._add(x[i], np.array([got]))
            out[i] = max(answer, 0)
        return out

    def learn(self, feats: Features, target: np.ndarray) -> None:
        fresh = self.untaught(target)
        self._add(l2_rows(sp.csr_matrix(feats.small)), np.where(fresh, target, -1))
        self.taught_ = None
