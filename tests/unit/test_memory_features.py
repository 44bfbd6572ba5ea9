"""The judge's memory features: count, centroid similarity, nearest similarity, kNN agreement."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kcm.judge import memory_features


def test_neighbours_are_searched_in_the_space_given() -> None:
    rng = np.random.default_rng(0)
    # dense view: pure noise; sparse view: class c lives on its own coordinates
    ref_dense = rng.normal(size=(20, 4)).astype(np.float32)
    truth = np.repeat([0, 1], 10)
    ref_sparse = sp.csr_matrix(np.kron(np.eye(2), np.ones((10, 3))) + 0.1 * rng.random((20, 6)))
    q_dense = rng.normal(size=(4, 4)).astype(np.float32)
    q_sparse = sp.csr_matrix([[1, 1, 1, 0, 0, 0]] * 2 + [[0, 0, 0, 1, 1, 1]] * 2, dtype=float)
    pred = np.array([0, 1, 1, 0])  # right, wrong, right, wrong
    out = memory_features(
        q_dense, pred, ref_dense, truth, 2, k=5, space=q_sparse, ref_space=ref_sparse
    )
    assert out.shape == (4, 4)
    assert np.allclose(out[:, 0], np.log1p(10))
    assert out[:, 3].tolist() == [1.0, 0.0, 1.0, 0.0]  # kNN agreement from the sparse view
    assert (out[:, 2] > 0.9).all() and (out[:, 2] <= 1.0 + 1e-6).all()
    # unlabelled memory rows (truth -1) are ignored; the same with the dense view only
    truth_u = truth.copy()
    truth_u[:5] = -1
    dense_only = memory_features(q_dense, pred, ref_dense, truth_u, 2, k=5)
    assert dense_only.shape == (4, 4) and np.allclose(dense_only[:, 0], np.log1p([5, 10, 10, 5]))
    sparse_u = memory_features(
        q_dense, pred, ref_dense, truth_u, 2, k=5, space=q_sparse, ref_space=ref_sparse
    )
    assert sparse_u[:, 3].tolist() == [1.0, 0.0, 1.0, 0.0]
    # an empty memory gives zeros, not an error
    none = memory_features(q_dense, pred, ref_dense[:0], truth[:0], 2)
    assert (none == 0).all()
