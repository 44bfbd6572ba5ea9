from __future__ import annotations

import pytest
import torch

from kcm.judge.kan_layer import KANLayer, KANNet, b_spline_basis, extend_grid


def test_basis_is_a_partition_of_unity_inside_the_grid() -> None:
    grid = extend_grid(torch.linspace(-1, 1, 6).expand(3, 6).contiguous(), 3)
    x = torch.rand(50, 3) * 1.98 - 0.99
    basis = b_spline_basis(x, grid, 3)
    assert basis.shape == (50, 3, 5 + 3)
    assert torch.allclose(basis.sum(-1), torch.ones(50, 3), atol=1e-5)


def test_forward_equals_sum_of_edge_activations() -> None:
    layer = KANLayer(4, 3, seed=0)
    x = torch.rand(20, 4) * 2 - 1
    edges = layer.edge_activations(x)
    assert torch.allclose(layer(x), edges.sum(1) + layer.bias, atol=1e-5)


def test_update_grid_keeps_the_function_on_the_samples() -> None:
    torch.manual_seed(0)
    layer = KANLayer(2, 2, seed=1)
    x = torch.rand(400, 2) * 1.6 - 0.8
    before = layer(x)
    layer.update_grid(x)
    assert torch.allclose(layer(x), before, atol=5e-3)
    assert layer.grid[0, 3] == pytest.approx(float(x[:, 0].min()), abs=0.02)


def test_to_pykan_matches_outputs(tmp_path) -> None:
    net = KANNet([6, 4, 3], seed=2)
    x = torch.randn(64, 6)
    net.update_grid(x)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model = net.to_pykan()
    with torch.no_grad():
        assert torch.allclose(net(x), model(x), atol=1e-5)
    assert not (tmp_path / "model").exists()  # nothing written to ./model


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_closed_form_basis_equals_cox_de_boor_on_uniform_grids(k: int) -> None:
    from kcm.judge.kan_layer import cardinal_table, uniform_basis

    grid = extend_grid(torch.linspace(-0.7, 1.3, 6).expand(5, 6).contiguous(), k)
    x = torch.rand(400, 5) * 4 - 2  # inside, at the edges and outside the extended grid
    x[0] = grid[:, 0]
    x[1] = grid[:, -1]
    want = b_spline_basis(x, grid, k)
    got = uniform_basis(x, grid, k, cardinal_table(k))
    assert torch.allclose(got, want, atol=1e-5)


def test_uniform_grid_layer_matches_pykan_and_tracks_weight_updates() -> None:
    net = KANNet([6, 5, 2], seed=3, grid_eps=1.0)
    x = torch.rand(128, 6) * 2 - 1
    net.update_grid(x)
    assert all(layer.grid_is_uniform() for layer in net.layers)
    with torch.no_grad():
        before = net(x)
        net.layers[0].coef.add_(0.3)  # the cached inference weight must follow
        after = net(x)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        assert torch.allclose(after, net.to_pykan()(x), atol=1e-5)
    loss = net(x).pow(2).mean()  # training path: gradients reach every parameter
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_piecewise_inference_equals_the_training_path(k: int) -> None:
    net = KANNet([5, 4, 3], k=k, seed=4, grid_eps=1.0)
    net.update_grid(torch.rand(256, 5) * 2 - 1)
    x = torch.randn(300, 5) * 2  # inside, near the edges and off the extended grid
    first = net.layers[0].grid
    x[0], x[1], x[2] = first[:, 0], first[:, -1], first[:, k]  # exactly on knots
    want = net(x)  # grad enabled: the dense-basis path
    with torch.no_grad():
        got = net(x)  # no grad on a uniform grid: the polynomial table
    assert hasattr(net.layers[0], "_pw")
    assert torch.allclose(got, want, atol=1e-5)


def test_piecewise_inference_lets_nan_through_without_failing() -> None:
    net = KANNet([3, 2], seed=0, grid_eps=1.0)
    net.update_grid(torch.rand(64, 3))
    x = torch.rand(4, 3)
    x[1, 2] = float("nan")
    with torch.no_grad():
        out = net(x)
    assert torch.isnan(out[1]).all() and not torch.isnan(out[[0, 2, 3]]).any()


def test_piecewise_table_follows_load_state_dict() -> None:
    a, b = KANNet([4, 3, 2], seed=0, grid_eps=1.0), KANNet([4, 3, 2], seed=9, grid_eps=1.0)
    x = torch.rand(32, 4) * 2 - 1
    a.update_grid(x)
    with torch.no_grad():
        b(x)  # builds b's table for its own weights
        b.load_state_dict(a.state_dict())
        assert torch.allclose(b(x), a(x), atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_closed_form_basis_gradient_matches_cox_de_boor(k: int) -> None:
    from kcm.judge.kan_layer import cardinal_table, uniform_basis

    knots = torch.linspace(-1, 1, 6, dtype=torch.float64).expand(3, 6).contiguous()
    grid = extend_grid(knots, k)
    x = (torch.rand(64, 3, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    w = torch.randn(64, 3, 5 + k, dtype=torch.float64)
    (uniform_basis(x, grid, k, cardinal_table(k)) * w).sum().backward()
    got = x.grad.clone()
    x.grad = None
    (b_spline_basis(x, grid, k) * w).sum().backward()
    assert torch.allclose(got, x.grad, atol=1e-8)
