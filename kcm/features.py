"""Cheap featurizers for the small model and the judge (the large model never uses these).

Text: hashed word and character n-grams with TF-IDF weights (sparse, for the small model)
and a truncated-SVD projection of it (dense, for the judge). Numeric features: standardised
values, and a PCA projection when there are more of them than the judge reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from kcm.config import FeaturesConfig
from kcm.data.batch import Task
from kcm.errors import check_is_fitted

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


def stack_features(parts: list[Features]) -> Features:
    smalls = [p.small for p in parts]
    small = sp.vstack(smalls, format="csr") if sp.issparse(smalls[0]) else np.vstack(smalls)
    return Features(small=small, dense=np.vstack([p.dense for p in parts]))


class TextFeaturizer:
    """Hashed word (1-2) and char_wb (2-5) n-gram TF-IDF, plus an SVD view for the judge."""

    def __init__(self, cfg: FeaturesConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.tfidf_: Any = None
        self.svd_: Any = None

    def _hash(self, texts: list[str]) -> sp.csr_matrix:
        from sklearn.feature_extraction.text import HashingVectorizer

        t = self.cfg.text
        half = t.n_features // 2
        word = HashingVectorizer(
            n_features=half,
            ngram_range=t.word_ngrams,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        char = HashingVectorizer(
            n_features=t.n_features - half,
            analyzer="char_wb",
            ngram_range=t.char_ngrams,
            alternate_sign=False,
            norm=None,
            lowercase=True,
        )
        return sp.hstack([word.transform(texts), char.transform(texts)], format="csr")

    def fit(self, texts: list[str]) -> TextFeaturizer:
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfTransformer

        counts = self._hash(list(texts))
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(counts)
        x = self.tfidf_.transform(counts)
        dim = max(2, min(self.cfg.judge_dim, x.shape[0] - 1, x.shape[1] - 1))
        self.svd_ = TruncatedSVD(n_components=dim, random_state=self.seed).fit(x)
        return self

    def transform(self, texts: list[str]) -> Features:
        check_is_fitted(self, "tfidf_")
        x = self.tfidf_.transform(self._hash(list(texts))).astype(np.float32)
        dense = self.svd_.transform(x).astype(np.float32)
        return Features(small=sp.csr_matrix(x), dense=dense)

    @property
    def n_small(self) -> int:
        return self.cfg.text.n_features


class NumericFeaturizer:
    """Standardised features; the judge reads a PCA projection when they are many."""

    def __init__(self, cfg: FeaturesConfig, seed: int = 0) -> None:
        self.cfg = cfg
        self.seed = seed
        self.mean_: np.ndarray | None = None
        self.std_: np.ndarray | None = None
        self.pca_: Any = None

    def fit(self, x: np.ndarray) -> NumericFeaturizer:
        x = np.asarray(x, dtype=np.float32)
        self.mean_ = x.mean(axis=0)
        self.std_ = x.std(axis=0) + 1e-6
        z = (x - self.mean_) / self.std_
        if z.shape[1] > self.cfg.judge_dim:
            from sklearn.decomposition import PCA

            dim = min(self.cfg.judge_dim, z.shape[0] - 1)
            self.pca_ = PCA(n_components=dim, random_state=self.seed).fit(z)
        return self

    def transform(self, x: np.ndarray) -> Features:
        check_is_fitted(self, "mean_")
        assert self.std_ is not None
        z = ((np.asarray(x, dtype=np.float32) - self.mean_) / self.std_).astype(np.float32)
        dense = self.pca_.transform(z).astype(np.float32) if self.pca_ is not None else z
        return Features(small=z, dense=dense)

    @property
    def n_small(self) -> int:
        assert self.mean_ is not None
        return len(self.mean_)


def make_featurizer(
    task: Task, cfg: FeaturesConfig, seed: int = 0
) -> TextFeaturizer | NumericFeaturizer:
    return TextFeaturizer(cfg, seed) if task.kind == "text" else NumericFeaturizer(cfg, seed)
