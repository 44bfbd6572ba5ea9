"""The judge contract: a score C_x in [0, 1] per sample; routing applies the threshold.

Two training targets (``judge.target``):

- ``correctness``: a two-way softmax that predicts whether the small model's answer is right,
  from the input's dense features and the small model's output distribution; C_x = P(right).
  With ``prior="max_softmax"`` the network learns a correction to the log-odds of the small
  model's own top-1 probability (a GLM offset): the judge learns only from the queries whose
  answer is known, the gold seeds and those the large model answered, the hard ones; on the
  easy ones it has no evidence, and C_x then follows the student's own confidence.
- ``labels``: the paper's judge, a classifier over the task labels whose max-softmax is C_x.

Where a sample has no label, the large model's answer stands in for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn
from torch.nn import functional as F

from kcm.config import JudgeConfig
from kcm.data.batch import OUT_OF_SCOPE
from kcm.errors import DataError, check_is_fitted
from kcm.features import l2_rows

Target = Literal["correctness", "labels"]
TARGETS: tuple[Target, ...] = ("correctness", "labels")


def small_output_stats(proba: np.ndarray) -> np.ndarray:
    """Summary of the small model's distribution, on log scales: log-odds of the top-1
    probability, log of the top-2 probability, log ratio top-1/top-2 and the log of the
    normalised entropy. Routing is decided where top-1 is close to 1 (ε = 0.98); on a linear
    scale those samples crowd into one spline interval of the KAN's grid, on the log-odds
    scale they spread over it."""
    p = np.clip(np.asarray(proba, dtype=np.float64), 1e-12, 1.0)
    top = -np.sort(-p, axis=1)
    top1 = np.clip(top[:, 0], 1e-12, 1 - 1e-12)
    top2 = np.clip(top[:, 1] if p.shape[1] > 1 else np.zeros(len(p)), 1e-12, 1.0)
    entropy = -(p * np.log(p)).sum(axis=1) / np.log(max(p.shape[1], 2))
    return np.stack(
        [
            np.log(top1) - np.log1p(-top1),
            np.log(top2),
            np.log(top1) - np.log(top2),
            np.log(np.clip(entropy, 1e-12, None)),
        ],
        axis=1,
    ).astype(np.float32)


def prior_logit(proba: np.ndarray) -> np.ndarray:
    """The offset of a ``max_softmax`` prior: the log-odds of the top-1 probability."""
    top1 = np.clip(np.asarray(proba, dtype=np.float64).max(axis=1), 1e-6, 1 - 1e-6)
    return (np.log(top1) - np.log1p(-top1)).astype(np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)


def _unit_rows(x: Any) -> Any:
    """Rows scaled to unit L2 norm; sparse stays sparse."""
    return l2_rows(sp.csr_matrix(x, dtype=np.float32)) if sp.issparse(x) else _unit(x)


def memory_features(
    dense: np.ndarray,
    pred: np.ndarray,
    ref_dense: np.ndarray,
    ref_target: np.ndarray,
    n_classes: int,
    k: int = 5,
    space: Any = None,
    ref_space: Any = None,
) -> np.ndarray:
    """How well the system's memory supports the small model's answer ``pred``.

    Per sample: log(1 + samples of the predicted class in memory), cosine similarity to that
    class's centroid (in ``dense``), cosine similarity to the nearest remembered sample
    (novelty), and the share of the k nearest remembered samples whose answer agrees with
    ``pred``. Neighbours are searched in ``space``/``ref_space`` when given (e.g. the small
    model's sparse TF-IDF rows, far more discriminative than a 32-d projection), else in
    ``dense``. ``ref_*`` is the reference memory (for training rows: a cross-fitting fold that
    does not contain them). Remembered out-of-scope samples are neighbours that never agree.
    """
    n = len(dense)
    out = np.zeros((n, 4), dtype=np.float32)
    keep = (ref_target >= 0) | (ref_target == OUT_OF_SCOPE)
    ref, target = _unit(ref_dense[keep]), ref_target[keep]
    if len(ref) == 0 or n == 0:
        return out
    x = _unit(dense)
    cls = target >= 0
    counts = np.bincount(target[cls], minlength=n_classes)
    out[:, 0] = np.log1p(counts[pred])
    cent = np.zeros((n_classes, ref.shape[1]), np.float32)
    np.add.at(cent, target[cls], ref[cls])
    cent = _unit(cent)
    out[:, 1] = (x * cent[pred]).sum(axis=1)
    if space is not None and ref_space is not None:
        xq, xr = _unit_rows(space), _unit_rows(ref_space[np.flatnonzero(keep)])
    else:
        xq, xr = x, ref
    kk = min(k, len(target))
    for s in range(0, n, 2048):
        sim = xq[s : s + 2048] @ xr.T
        sim = sim.toarray() if sp.issparse(sim) else np.asarray(sim)
        # torch.topk: ~30x faster than np.argpartition on these rows (measured), same result
        best, top = torch.topk(torch.from_numpy(np.ascontiguousarray(sim)), kk, dim=1)
        out[s : s + 2048, 2] = best[:, 0].numpy()
        out[s : s + 2048, 3] = (target[top.numpy()] == pred[s : s + 2048, None]).mean(axis=1)
    return out


class Judge(ABC):
    """``fit(X, y, small_proba) -> self``; ``predict_proba``; ``confidence`` (C_x)."""

    target: Target

    @abstractmethod
    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        small_proba: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> Judge: ...

    @abstractmethod
    def predict_proba(self, X: np.ndarray, small_proba: np.ndarray) -> np.ndarray: ...

    def confidence(self, X: np.ndarray, small_proba: np.ndarray) -> np.ndarray:
        """C_x: P(small model right) for ``correctness``, max-softmax for ``labels``."""
        return self.confidence_from(self.predict_proba(X, small_proba))

    def confidence_from(self, proba: np.ndarray) -> np.ndarray:
        """C_x from the judge's output ``proba`` (the one place the rule is written)."""
        return proba[:, 1] if self.target == "correctness" else proba.max(axis=1)


class NeuralJudge(Judge):
    """Shared training loop of the KAN and MLP judges; subclasses build the network."""

    def __init__(
        self,
        target: Target = "correctness",
        hidden: int = 16,
        epochs: int = 60,
        lr: float = 1e-2,
        weight_decay: float = 1e-4,
        batch_size: int = 256,
        seed: int = 0,
        val_fraction: float = 0.2,
        patience: int = 10,
        prior: str = "none",
    ) -> None:
        self.target = target
        self.prior = prior
        self.val_fraction = val_fraction
        self.patience = patience
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.seed = seed
        self.net_: nn.Module | None = None
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.n_classes_: int | None = None

    @classmethod
    def common_args(cls, cfg: JudgeConfig, seed: int) -> dict[str, Any]:
        return dict(
            target=cfg.target,
            hidden=cfg.hidden,
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            batch_size=cfg.batch_size,
            seed=seed,
            val_fraction=cfg.val_fraction,
            patience=cfg.patience,
            # auto is decided with the system (kcm.defaults); a judge built alone has none
            prior="none" if cfg.prior == "auto" else cfg.prior,
        )

    @classmethod
    def from_config(cls, cfg: JudgeConfig, seed: int = 0) -> NeuralJudge:
        """Build the judge from ``judge.*`` (its registry row points at the class)."""
        return cls(**cls.common_args(cfg, seed))

    # -- state export / import (kcm.persist writes it; no pickle) ------------------
    def get_state(self) -> dict[str, Any]:
        """``meta`` (JSON), ``arrays`` (numpy) and ``tensors`` (the network's state_dict)."""
        check_is_fitted(self, "net_")
        assert self.net_ is not None and self.mean_ is not None and self.std_ is not None
        out_dim = 2 if self.target == "correctness" else int(self.n_classes_ or 0)
        return {
            "meta": {
                "target": self.target,
                "in_dim": len(self.mean_),
                "out_dim": out_dim,
                "n_classes": self.n_classes_,
                "prior": self.prior,
            },
            "arrays": {"mean": self.mean_, "std": self.std_},
            "tensors": dict(self.net_.state_dict()),
        }

    def set_state(self, state: dict[str, Any]) -> NeuralJudge:
        """Restore what ``get_state`` exported."""
        meta = state["meta"]
        self.target = meta["target"]
        self.prior = meta.get("prior", "none")  # a judge saved before priors had none
        self.net_ = self._build(int(meta["in_dim"]), int(meta["out_dim"]))
        self.net_.load_state_dict(state["tensors"])
        self.net_.eval()
        self.mean_, self.std_ = state["arrays"]["mean"], state["arrays"]["std"]
        self.n_classes_ = meta["n_classes"]
        return self

    @abstractmethod
    def _build(self, in_dim: int, out_dim: int) -> nn.Module: ...

    def _prepare(self, X: np.ndarray) -> None:
        """Called once per fit on the scaled inputs (KAN: move the spline grid)."""

    def _inputs(self, X: np.ndarray, small_proba: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        small_proba = np.asarray(small_proba, dtype=np.float32)
        if X.ndim != 2 or small_proba.ndim != 2 or len(X) != len(small_proba):
            raise DataError(
                f"judge inputs must be 2-D with equal rows: X {X.shape}, small_proba "
                f"{small_proba.shape}"
            )
        return np.hstack([X, small_output_stats(small_proba)])

    def scaled_inputs(self, X: np.ndarray, small_proba: np.ndarray) -> torch.Tensor:
        """What the network reads: the inputs with the small model's summary, scaled."""
        return self._scale(self._inputs(X, small_proba))

    def prior_offset(self, small_proba: np.ndarray) -> torch.Tensor | None:
        """Added to the logits: 0 for "wrong", the prior's log-odds for "right"."""
        if self.target != "correctness" or self.prior == "none":
            return None
        if self.prior != "max_softmax":
            raise ValueError(f"prior={self.prior!r}; choose max_softmax or none")
        o = torch.from_numpy(prior_logit(small_proba))
        return torch.stack([torch.zeros_like(o), o], dim=1)

    def logits_of(self, x: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        assert self.net_ is not None
        out = self.net_(x)
        return out if offset is None else out + offset

    def _scale(self, Z: np.ndarray) -> torch.Tensor:
        assert self.mean_ is not None and self.std_ is not None
        # standardise, then squash into the KAN grid's [-1, 1] (same for both judges)
        return torch.from_numpy(np.tanh((Z - self.mean_) / self.std_ / 2).astype(np.float32))

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        small_proba: np.ndarray,
        sample_weight: np.ndarray | None = None,
    ) -> NeuralJudge:
        if self.target not in TARGETS:
            raise ValueError(f"target={self.target!r}; choose one of {TARGETS}")
        y = np.asarray(y, dtype=np.int64)
        # an out-of-scope sample is one the small model is wrong on (correctness only)
        keep = (y >= 0) | ((y == OUT_OF_SCOPE) & (self.target == "correctness"))
        if keep.sum() < 2:
            raise DataError(
                f"the judge needs at least 2 samples with a known answer; got {keep.sum()}"
            )
        Z = self._inputs(X, small_proba)[keep]
        self.n_classes_ = small_proba.shape[1]
        if self.target == "correctness":
            t = (np.asarray(small_proba)[keep].argmax(axis=1) == y[keep]).astype(np.int64)
            out_dim = 2
        else:
            t = y[keep]
            out_dim = self.n_classes_
        w = (
            np.ones(len(t), np.float32)
            if sample_weight is None
            else np.asarray(sample_weight, np.float32)[keep]
        )
        self.mean_ = Z.mean(axis=0)
        self.std_ = Z.std(axis=0) + 1e-6
        xt = self._scale(Z)
        off = self.prior_offset(np.asarray(small_proba)[keep])
        torch.manual_seed(self.seed)
        self.net_ = self._build(xt.shape[1], out_dim)
        self._prepare(xt)
        tt, wt = torch.from_numpy(t), torch.from_numpy(w)
        gen = torch.Generator().manual_seed(self.seed)
        # hold out a validation share for early stopping (keeps the best epoch's weights)
        perm = torch.randperm(len(tt), generator=gen)
        n_val = int(len(tt) * self.val_fraction) if len(tt) >= 50 else 0
        val, fit = perm[:n_val], perm[n_val:]
        opt = torch.optim.Adam(self.net_.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale = float("inf"), None, 0
        for _ in range(self.epochs):
            self.net_.train()
            order = fit[torch.randperm(len(fit), generator=gen)]
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                o = None if off is None else off[idx]
                loss = (
                    F.cross_entropy(self.logits_of(xt[idx], o), tt[idx], reduction="none") * wt[idx]
                ).sum()
                loss = loss / wt[idx].sum().clamp_min(1e-6)
                opt.zero_grad()
                loss.backward()
                opt.step()
            if n_val:
                self.net_.eval()
                with torch.no_grad():
                    o = None if off is None else off[val]
                    v = float(F.cross_entropy(self.logits_of(xt[val], o), tt[val]))
                if v < best - 1e-4:
                    best, stale = v, 0
                    best_state = {k: p.detach().clone() for k, p in self.net_.state_dict().items()}
                else:
                    stale += 1
                    if stale >= self.patience:
                        break
        if best_state is not None:
            self.net_.load_state_dict(best_state)
        self.net_.eval()
        return self

    @torch.no_grad()
    def predict_proba(self, X: np.ndarray, small_proba: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "net_")
        assert self.net_ is not None
        x = self._scale(self._inputs(X, small_proba))
        logits = self.logits_of(x, self.prior_offset(small_proba))
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)
