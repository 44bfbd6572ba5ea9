"""The small model: a cheap softmax classifier over the cheap features, trained by distillation.

Sparse text features go through an ``EmbeddingBag`` (sum of weighted n-gram rows) with sparse
gradients, so one step costs what the batch's n-grams cost, not the whole hashing space.
Dense features go through a ``Linear`` layer. ``hidden > 0`` adds one hidden layer.
The training loop takes a per-sample loss function, so the distillation losses stay pure
functions in ``kcm.distill.losses``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from kcm.errors import DataError, check_is_fitted

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class _Net(nn.Module):
    def __init__(self, n_features: int, n_classes: int, hidden: int, sparse: bool) -> None:
        super().__init__()
        width = hidden if hidden > 0 else n_classes
        self.sparse = sparse
        if sparse:
            self.embed = nn.EmbeddingBag(n_features, width, mode="sum", sparse=True)
            nn.init.zeros_(self.embed.weight) if hidden == 0 else nn.init.normal_(
                self.embed.weight, std=0.01
            )
            self.bias = nn.Parameter(torch.zeros(width))
        else:
            self.linear = nn.Linear(n_features, width)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(hidden, n_classes)) if hidden > 0 else None

    def forward(
        self, x: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | torch.Tensor
    ) -> torch.Tensor:
        if self.sparse:
            assert isinstance(x, tuple)
            idx, offsets, weights = x
            h = self.embed(idx, offsets, per_sample_weights=weights) + self.bias
        else:
            assert isinstance(x, torch.Tensor)
            h = self.linear(x)
        return self.head(h) if self.head is not None else h


def _to_input(X: np.ndarray | sp.csr_matrix) -> tuple[torch.Tensor, ...] | torch.Tensor:
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        return (
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(X.indptr[:-1].astype(np.int64)),
            torch.from_numpy(X.data.astype(np.float32)),
        )
    return torch.from_numpy(np.asarray(X, dtype=np.float32))


class SmallModel:
    """A softmax classifier over sparse or dense features.

    ``fit`` trains from scratch on labels; ``partial_fit`` continues training with any
    per-sample loss (the distillation objective); ``predict_proba`` answers.
    """

    def __init__(
        self,
        n_classes: int,
        hidden: int = 0,
        epochs: int = 8,
        lr: float = 5e-3,
        weight_decay: float = 0.0,
        batch_size: int = 64,
        seed: int = 0,
        keep_optimizer: bool = False,
    ) -> None:
        self.n_classes = n_classes
        self.keep_optimizer = keep_optimizer
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.seed = seed
        self.net_: _Net | None = None
        self.n_features_: int | None = None
        self._step = 0
        self._opts: list[torch.optim.Optimizer] | None = None

    def _init(self, X: np.ndarray | sp.csr_matrix) -> None:
        self.n_features_ = X.shape[1]
        self._opts = None
        torch.manual_seed(self.seed)
        self.net_ = _Net(self.n_features_, self.n_classes, self.hidden, sp.issparse(X))

    def _check(self, X: np.ndarray | sp.csr_matrix) -> None:
        if X.shape[1] != self.n_features_:
            raise DataError(
                f"the small model was fitted on {self.n_features_} features, got {X.shape[1]}: "
                f"use the same featurizer for training and prediction"
            )

    def _optimizers(self) -> list[torch.optim.Optimizer]:
        assert self.net_ is not None
        if self.net_.sparse:
            dense = [p for n, p in self.net_.named_parameters() if not n.startswith("embed")]
            return [
                torch.optim.SparseAdam(list(self.net_.embed.parameters()), lr=self.lr),
                torch.optim.AdamW(dense, lr=self.lr, weight_decay=self.weight_decay),
            ]
        return [
            torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        ]

    def partial_fit(
        self,
        X: np.ndarray | sp.csr_matrix,
        loss_fn: LossFn,
        epochs: int | None = None,
    ) -> SmallModel:
        """Train on ``X`` minimising ``loss_fn(logits, rows)`` (per-sample losses, mean-reduced
        here; ``rows`` indexes the minibatch into ``X``)."""
        if self.net_ is None:
            self._init(X)
        self._check(X)
        assert self.net_ is not None
        X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X, dtype=np.float32)
        # a new optimizer per call by default; ``keep_optimizer`` keeps its state between calls
        # (many small updates: a fresh SparseAdam state is as large as the embedding table)
        opts = self._opts if self._opts is not None else self._optimizers()
        if self.keep_optimizer:
            self._opts = opts
        gen = torch.Generator().manual_seed(self.seed + self._step)
        self._step += 1
        n = X.shape[0]
        self.net_.train()
        for _ in range(self.epochs if epochs is None else epochs):
            order = torch.randperm(n, generator=gen).numpy()
            for start in range(0, n, self.batch_size):
                rows = np.sort(order[start : start + self.batch_size])
                logits = self.net_(_to_input(X[rows]))
                loss = loss_fn(logits, torch.from_numpy(rows)).mean()
                for o in opts:
                    o.zero_grad()
                loss.backward()
                for o in opts:
                    o.step()
        self.net_.eval()
        return self

    def fit(self, X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> SmallModel:
        """Train from scratch with cross-entropy on labels (-1 rows are ignored)."""
        y = np.asarray(y, dtype=np.int64)
        keep = np.flatnonzero(y >= 0)
        if len(keep) == 0:
            raise DataError("no labeled rows to fit the small model on")
        self.net_ = None
        self._step = 0
        self._opts = None
        Xk = X[keep]
        yt = torch.from_numpy(y[keep])
        return self.partial_fit(
            Xk, lambda logits, rows: F.cross_entropy(logits, yt[rows], reduction="none")
        )

    @torch.no_grad()
    def logits(self, X: np.ndarray | sp.csr_matrix, chunk: int = 4096) -> np.ndarray:
        check_is_fitted(self, "net_")
        self._check(X)
        assert self.net_ is not None
        out = [self.net_(_to_input(X[i : i + chunk])).numpy() for i in range(0, X.shape[0], chunk)]
        return np.vstack(out) if out else np.zeros((0, self.n_classes), np.float32)

    def predict_proba(self, X: np.ndarray | sp.csr_matrix) -> np.ndarray:
        z = self.logits(X).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray | sp.csr_matrix) -> np.ndarray:
        return self.predict_proba(X).argmax(axis=1)

    @property
    def is_fitted(self) -> bool:
        return self.net_ is not None

    # -- state export / import (kcm.persist writes it; no pickle) ----------------------
    def get_state(self) -> dict[str, Any]:
        """``meta`` (JSON: feature count, sparse or dense, training step) and ``tensors``
        (the network's state_dict; empty before the first fit)."""
        sparse = bool(self.net_ is not None and self.net_.sparse)
        return {
            "meta": {"n_features": self.n_features_, "sparse": sparse, "step": self._step},
            "tensors": {} if self.net_ is None else dict(self.net_.state_dict()),
        }

    def set_state(self, state: dict[str, Any]) -> SmallModel:
        """Restore what ``get_state`` exported (hyperparameters come from ``__init__``)."""
        meta = state["meta"]
        self._step = int(meta.get("step", 0))
        if state.get("tensors"):
            n = int(meta["n_features"])
            self._init(sp.csr_matrix((1, n)) if meta["sparse"] else np.zeros((1, n), np.float32))
            assert self.net_ is not None
            self.net_.load_state_dict(state["tensors"])
            self.net_.eval()
        return self
