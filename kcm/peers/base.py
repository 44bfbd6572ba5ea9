"""What every peer policy implements, and the retrained student several of them share.

A policy answers a stream one batch at a time: ``serve`` decides per request whether to ask
the large model (through ``ask``, which the bench counts) and returns the answers it
delivers; ``learn`` then receives what the stream reveals about the batch (a label where the
learner sees one, else the large model's answer where it was asked, else -1). Every answer is
delivered before anything about it is learned.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch
from torch.nn import functional as F

from kcm.defaults import REFIT_EPOCHS, REFIT_LR
from kcm.features import Features
from kcm.models.small import SmallModel

#: ``ask(rows)`` -> the large model's answer for those rows of the batch (-1: the call failed)
Ask = Callable[[np.ndarray], np.ndarray]


class OnlinePolicy(ABC):
    """A per-request routing policy with its own student (the peers of ``kcm bench``)."""

    def start(self, n_classes: int, n_total: int, seed: int) -> OnlinePolicy:
        """Reset the learned state for a stream of ``n_total`` requests; returns self."""
        self.n_classes_ = n_classes
        self.n_total_ = n_total
        self.seen_ = 0
        self.calls_ = 0
        self.rng_ = np.random.default_rng(seed)
        self.seed_ = seed
        return self

    def train_seconds(self) -> float:
        """Seconds spent learning so far (retraining inside ``serve`` included); 0 for a
        policy whose learning is only ``learn`` (the driver times that)."""
        return 0.0

    def warm(self, feats: Features, target: np.ndarray) -> None:
        """Gold examples the policy may start from (OCaTS's 3 per intent); default: learn them."""
        if len(feats):
            self.learn(feats, target)

    def untaught(self, target: np.ndarray) -> np.ndarray:
        """Where the revealed ``target`` adds something: known, and not the large model's
        answer the policy already learned during ``serve`` (kept in ``taught_``, -1 elsewhere;
        a revealed label that corrects it does add)."""
        fresh = np.asarray(target) >= 0
        taught = getattr(self, "taught_", None)
        if taught is not None and len(taught) == len(fresh):
            fresh &= np.asarray(target) != taught
        return fresh

    @abstractmethod
    def serve(self, feats: Features, ask: Ask) -> np.ndarray:
        """The answer delivered for every request of the batch."""

    @abstractmethod
    def learn(self, feats: Features, target: np.ndarray) -> None:
        """What the stream reveals after the batch was answered (-1: nothing)."""


def rows(x: Features | np.ndarray | sp.csr_matrix, idx: np.ndarray) -> np.ndarray | sp.csr_matrix:
    return x.small[idx] if isinstance(x, Features) else x[idx]


def stack(parts: list[np.ndarray | sp.csr_matrix]) -> np.ndarray | sp.csr_matrix:
    return sp.vstack(parts, format="csr") if sp.issparse(parts[0]) else np.vstack(parts)


class Student:
    """kcm's small model as a peer's student, retrained on the answers collected so far.

    Sparse (TF-IDF) features: ``retrain`` continues training on the answers added since the
    last retrain plus as many replayed from a bounded memory (kcm's incremental schedule).
    Dense (encoder) features: it trains anew on the whole bounded memory, as the papers do and
    as kcm's encoder student does, so peers and kcm are compared on the same student."""

    def __init__(
        self, n_classes: int, seed: int = 0, epochs: int = 8, memory: int = 3000, hidden: int = 0
    ) -> None:
        self.n_classes = n_classes
        self.seed = seed
        self.epochs = epochs
        self.memory = memory
        self.hidden = hidden
        self.model_ = SmallModel(
            n_classes, hidden=hidden, epochs=epochs, seed=seed, keep_optimizer=True
        )
        self.mem_x_: list[np.ndarray | sp.csr_matrix] = []
        self.mem_y_: list[np.ndarray] = []
        self.new_x_: list[np.ndarray | sp.csr_matrix] = []
        self.new_y_: list[np.ndarray] = []
        self.rng_ = np.random.default_rng(seed)
        self.updates_ = 0
        self.seconds_ = 0.0  # time spent retraining (the policy's learning cost)

    def add(self, x: np.ndarray | sp.csr_matrix, y: np.ndarray) -> None:
        keep = np.flatnonzero(np.asarray(y) >= 0)
        if len(keep):
            self.new_x_.append(x[keep])
            self.new_y_.append(np.asarray(y)[keep])

    @property
    def pending(self) -> int:
        return sum(len(y) for y in self.new_y_)

    def _take(self, picks: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """Rows ``picks`` (indices into the whole memory) from the memory's chunks."""
        offsets = np.cumsum([0, *(len(y) for y in self.mem_y_)])
        which = np.searchsorted(offsets, picks, side="right") - 1
        parts = [self.mem_x_[c][picks[which == c] - offsets[c]] for c in np.unique(which)]
        return stack(parts)

    def retrain(self) -> bool:
        """Train on the pending answers plus an equal replay; False when nothing is pending.
        The memory is a list of chunks (appending costs nothing); past ``memory`` entries it
        is thinned to a seeded uniform sample, so it stays bounded by configuration."""
        if not self.new_y_:
            return False
        t0 = time.perf_counter()
        x_new, y_new = stack(self.new_x_), np.concatenate(self.new_y_)
        xs, ys = [x_new], [y_new]
        n_mem = sum(len(y) for y in self.mem_y_)
        if n_mem:
            picks = np.sort(self.rng_.choice(n_mem, size=min(n_mem, len(y_new)), replace=False))
            xs.append(self._take(picks))
            ys.append(np.concatenate(self.mem_y_)[picks])
        if not sp.issparse(x_new):  # dense (encoder) features: anew on everything, as kcm
            xs, ys = [x_new, *self.mem_x_], [y_new, *self.mem_y_]
            self.model_ = SmallModel(
                self.n_classes, hidden=self.hidden, epochs=REFIT_EPOCHS, lr=REFIT_LR, seed=self.seed
            )
        x, y = stack(xs), np.concatenate(ys)
        yt = torch.from_numpy(y.astype(np.int64))
        self.model_.partial_fit(x, lambda z, r: F.cross_entropy(z, yt[r], reduction="none"))
        self.mem_x_.append(x_new)
        self.mem_y_.append(y_new)
        n_mem += len(y_new)
        if n_mem > self.memory * 1.25:
            keep = np.sort(self.rng_.choice(n_mem, size=self.memory, replace=False))
            self.mem_x_, self.mem_y_ = [self._take(keep)], [np.concatenate(self.mem_y_)[keep]]
        elif len(self.mem_y_) > 64:
            self.mem_x_, self.mem_y_ = [stack(self.mem_x_)], [np.concatenate(self.mem_y_)]
        self.new_x_, self.new_y_ = [], []
        self.updates_ += 1
        self.seconds_ += time.perf_counter() - t0
        return True

    def proba(self, x: np.ndarray | sp.csr_matrix) -> np.ndarray:
        if not self.model_.is_fitted:
            return np.full((x.shape[0], self.n_classes), 1.0 / self.n_classes)
        return self.model_.predict_proba(x)

    def frozen_copy(self) -> SmallModel:
        """A copy of the current student that later retraining leaves alone (QBC's committee
        keeps the last few)."""
        state = self.model_.get_state()
        other = SmallModel(self.n_classes, hidden=self.hidden, seed=self.seed)
        other.set_state(
            {"meta": state["meta"], "tensors": {k: v.clone() for k, v in state["tensors"].items()}}
        )
        return other
