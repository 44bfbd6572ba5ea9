from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from kcm.errors import DataError, NotFittedError
from kcm.models.small import SmallModel


def _blobs(rng: np.random.Generator, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    y = rng.integers(0, 3, n)
    centers = np.array([[2, 0], [-2, 0], [0, 2.5]])
    return (centers[y] + rng.normal(scale=0.5, size=(n, 2))).astype(np.float32), y


def test_fit_dense(rng: np.random.Generator) -> None:
    X, y = _blobs(rng)
    m = SmallModel(3, epochs=30, lr=0.05).fit(X, y)
    assert (m.predict(X) == y).mean() > 0.95
    p = m.predict_proba(X)
    assert np.allclose(p.sum(1), 1.0)


def test_fit_sparse_with_hidden_layer(rng: np.random.Generator) -> None:
    X, y = _blobs(rng)
    Xs = sp.csr_matrix(np.hstack([np.clip(X, 0, None), np.clip(-X, 0, None)]))
    for hidden in (0, 16):
        m = SmallModel(3, hidden=hidden, epochs=40, lr=0.05).fit(Xs, y)
        assert (m.predict(Xs) == y).mean() > 0.9


def test_not_fitted_and_wrong_width(rng: np.random.Generator) -> None:
    m = SmallModel(3)
    with pytest.raises(NotFittedError, match="call fit first"):
        m.predict_proba(np.zeros((2, 2), np.float32))
    X, y = _blobs(rng)
    m.fit(X, y)
    with pytest.raises(DataError, match="fitted on 2 features, got 5"):
        m.predict(np.zeros((1, 5), np.float32))
    with pytest.raises(DataError, match="no labeled rows"):
        SmallModel(3).fit(X, np.full(len(X), -1))
