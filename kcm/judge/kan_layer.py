"""A fast Kolmogorov–Arnold Network layer with pykan's exact parameterisation.

Each edge (i → o) carries ``φ_io(x) = mask_io · (scale_base_io · silu(x) + scale_sp_io · Σ_j
coef_ioj B_j(x))`` with B_j the order-k B-splines on a per-input grid of G intervals extended by
k knots on each side, exactly as ``kan.KANLayer``. pykan materialises a (batch, out, in) tensor
for every layer; here the B-spline basis is computed once per input, (batch, in, G+k), and the
sum over edges becomes two matrix products. ``KANNet.to_pykan()`` copies the weights into a
``kan.KAN`` so pykan's ``plot``, ``prune`` and ``auto_symbolic`` work on a trained judge.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def extend_grid(grid: torch.Tensor, k: int) -> torch.Tensor:
    """Extend a (in, G+1) grid by k equally spaced knots on both sides (as pykan)."""
    h = (grid[:, [-1]] - grid[:, [0]]) / (grid.shape[1] - 1)
    for _ in range(k):
        grid = torch.cat([grid[:, [0]] - h, grid, grid[:, [-1]] + h], dim=1)
    return grid


def b_spline_basis(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """B-spline basis of order ``k``: x (batch, in), grid (in, G+2k+1) -> (batch, in, G+k)."""
    x = x.unsqueeze(-1)
    g = grid.unsqueeze(0)
    value = ((x >= g[:, :, :-1]) & (x < g[:, :, 1:])).to(x.dtype)
    for p in range(1, k + 1):
        left = (x - g[:, :, : -(p + 1)]) / (g[:, :, p:-1] - g[:, :, : -(p + 1)])
        right = (g[:, :, p + 1 :] - x) / (g[:, :, p + 1 :] - g[:, :, 1:-p])
        value = left * value[:, :, :-1] + right * value[:, :, 1:]
    return torch.nan_to_num(value)


def _cardinal_table(k: int) -> torch.Tensor:
    """Polynomial coefficients of the uniform (cardinal) B-spline of order ``k`` piece by
    piece: ``table[r, d]`` so that on a uniform grid, for x in interval s with fractional
    position f, basis ``s - r`` equals ``sum_d table[r, d] * f**d`` (r = 0..k)."""
    import numpy as np

    # Fit each piece exactly from k+1 sample points of the Cox-de Boor recursion.
    knots = torch.arange(0, 2 * k + 2, dtype=torch.float64)[None, :]  # integer knots 0..2k+1
    f = torch.linspace(0.05, 0.95, k + 1, dtype=torch.float64)
    basis = b_spline_basis(f[:, None] + k, knots, k)[:, 0, :]  # x in interval index k
    vander = np.vander(f.numpy(), k + 1, increasing=True)
    table = np.zeros((k + 1, k + 1))
    for r in range(k + 1):  # x in interval k, where bases 0..k are non-zero: piece r = basis k-r
        table[r] = np.linalg.solve(vander, basis[:, k - r].numpy())
    return torch.from_numpy(table)


def uniform_basis(
    x: torch.Tensor,
    grid: torch.Tensor,
    k: int,
    table: torch.Tensor,
    origin: torch.Tensor | None = None,
    inv_step: torch.Tensor | None = None,
) -> torch.Tensor:
    """Same values as ``b_spline_basis`` for a grid with equal spacing per input, computed
    from the k+1 non-zero pieces only (closed-form polynomials) instead of the recursion.
    ``origin``/``inv_step`` (the first knot and 1/spacing per input) may be passed
    precomputed."""
    n_basis = grid.shape[1] - k - 1
    if origin is None or inv_step is None:
        origin, inv_step = grid[:, 0], 1.0 / (grid[:, 1] - grid[:, 0])
    u = (x - origin) * inv_step  # in knot intervals from the first extended knot
    s = torch.floor(u)
    f = (u - s).unsqueeze(-1)
    coef = table if table.dtype == x.dtype else table.to(x.dtype)
    vals = coef[:, k].expand(*x.shape, k + 1)
    for d in range(k - 1, -1, -1):  # Horner: the k+1 pieces at once
        vals = torch.addcmul(coef[:, d], vals, f)
    # piece r is basis s - r. Positions off 0..n_basis-1 (x near or off the grid's ends) land
    # in k+1 padding slots on either side, which are cut away.
    pos = (s.to(torch.long).unsqueeze(-1) - torch.arange(k + 1)).clamp_(-k - 1, n_basis + k)
    out = torch.zeros(*x.shape, n_basis + 2 * k + 2, dtype=x.dtype)
    out.scatter_(2, pos + (k + 1), vals)
    return out[:, :, k + 1 : k + 1 + n_basis]


class KANLayer(nn.Module):
    """One KAN layer: ``in_dim`` inputs, ``out_dim`` outputs, a learnable function per edge."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid: int = 5,
        k: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
        noise_scale: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.num, self.k = in_dim, out_dim, grid, k
        self.grid_eps = grid_eps
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        knots = torch.linspace(grid_range[0], grid_range[1], grid + 1).expand(in_dim, grid + 1)
        self.register_buffer("grid", extend_grid(knots.contiguous(), k))
        # Small random splines, as pykan initialises them (noise / G at the grid points).
        self.coef = nn.Parameter(
            (torch.rand(in_dim, out_dim, grid + k, generator=gen) - 0.5) * noise_scale / grid
        )
        scale = 1.0 / in_dim**0.5
        self.scale_base = nn.Parameter((torch.rand(in_dim, out_dim, generator=gen) * 2 - 1) * scale)
        self.scale_sp = nn.Parameter(torch.full((in_dim, out_dim), scale))
        self.register_buffer("mask", torch.ones(in_dim, out_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def _grid_is_uniform(self) -> bool:
        d = self.grid[:, 1:] - self.grid[:, :-1]
        return bool(torch.allclose(d, d[:, :1].expand_as(d), rtol=1e-4, atol=1e-6))

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in, G+k): the closed form on uniform grids, Cox-de Boor otherwise."""
        key = (self.grid._version, self.grid.data_ptr())
        if getattr(self, "_uniform_key", None) != key:
            self._uniform = self._grid_is_uniform()
            self._uniform_key = key
        if self._uniform:
            if getattr(self, "_fast_key", None) != (key, x.dtype):
                self._fast = (
                    _cardinal_table(self.k).to(x.dtype),
                    self.grid[:, 0].clone(),
                    1.0 / (self.grid[:, 1] - self.grid[:, 0]),
                )
                self._fast_key = (key, x.dtype)
            table, origin, inv_step = self._fast
            return uniform_basis(x, self.grid, self.k, table, origin, inv_step)
        return b_spline_basis(x, self.grid, self.k)

    def _weight(self) -> torch.Tensor:
        """Spline and base weights stacked: (in * (G+k) + in, out)."""
        w_sp = (self.coef * (self.scale_sp * self.mask).unsqueeze(-1)).permute(0, 2, 1)
        return torch.cat([w_sp.reshape(-1, self.out_dim), self.scale_base * self.mask])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = torch.cat([self.basis(x).reshape(x.shape[0], -1), F.silu(x)], dim=1)
        if torch.is_grad_enabled() and self.coef.requires_grad:
            return torch.addmm(self.bias, feats, self._weight())
        key = tuple(
            (p._version, p.data_ptr())
            for p in (self.coef, self.scale_sp, self.scale_base, self.mask)
        )
        if getattr(self, "_w_key", None) != key:  # inference: reuse the stacked weight
            self._w_cache = self._weight().detach()
            self._w_key = key
        return torch.addmm(self.bias, feats, self._w_cache)

    def edge_activations(self, x: torch.Tensor) -> torch.Tensor:
        """φ_io(x_i) for every edge: (batch, in, out). For plots and tests, not the hot path."""
        spline = torch.einsum("bij,ioj->bio", self.basis(x), self.coef)
        out = self.scale_base * F.silu(x).unsqueeze(-1) + self.scale_sp * spline
        return out * self.mask

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Move the grid to the samples' quantiles (blended with a uniform grid by grid_eps)
        and refit the coefficients so each edge function stays the same (pykan's method)."""
        n = x.shape[0]
        x_sorted = torch.sort(x, dim=0).values
        y_eval = torch.einsum("bij,ioj->bio", self.basis(x_sorted), self.coef)
        ids = [int(n / self.num * i) for i in range(self.num)] + [-1]
        adaptive = x_sorted[ids, :].T
        h = (adaptive[:, [-1]] - adaptive[:, [0]]) / self.num
        uniform = adaptive[:, [0]] + h * torch.arange(self.num + 1, dtype=x.dtype)[None, :]
        knots = self.grid_eps * uniform + (1 - self.grid_eps) * adaptive
        self.grid.copy_(extend_grid(knots, self.k))
        self.coef.copy_(_curve_to_coef(x_sorted, y_eval, self.grid, self.k))


def _curve_to_coef(x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """Least-squares spline coefficients: x (batch, in), y (batch, in, out) -> (in, out, G+k)."""
    mat = b_spline_basis(x, grid, k).permute(1, 0, 2)  # (in, batch, n_coef)
    rhs = y.permute(1, 0, 2)  # (in, batch, out)
    sol = torch.linalg.lstsq(mat, rhs).solution  # (in, n_coef, out)
    return sol.permute(0, 2, 1).contiguous()


class KANNet(nn.Module):
    """A stack of KAN layers, e.g. widths [in, hidden, out]."""

    def __init__(
        self,
        widths: list[int],
        grid: int = 5,
        k: int = 3,
        seed: int | None = 0,
        grid_eps: float = 0.02,
    ) -> None:
        super().__init__()
        if len(widths) < 2:
            raise ValueError(f"widths={widths}: give at least [in_dim, out_dim]")
        self.widths, self.grid_size, self.k = list(widths), grid, k
        self.layers = nn.ModuleList(
            KANLayer(
                a, b, grid=grid, k=k, seed=None if seed is None else seed + i, grid_eps=grid_eps
            )
            for i, (a, b) in enumerate(itertools.pairwise(widths))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        for layer in self.layers:
            layer.update_grid(x)
            x = layer(x)

    def to_pykan(self, **kwargs: Any) -> Any:
        """A ``kan.KAN`` with these weights (outputs match to float precision).

        Nothing is written to disk: ``auto_save`` is off unless you pass it.
        """
        from kan import KAN  # heavy (about 5 s): imported only here

        opts: dict[str, Any] = {"auto_save": False, "symbolic_enabled": False, "save_act": True}
        opts.update(kwargs)
        model = KAN(
            width=list(self.widths), grid=self.grid_size, k=self.k, seed=0, device="cpu", **opts
        )
        with torch.no_grad():
            for mine, theirs, node_bias in zip(
                self.layers, model.act_fun, model.node_bias, strict=True
            ):
                theirs.grid.data = mine.grid.clone()
                theirs.coef.data = mine.coef.detach().clone()
                theirs.scale_base.data = mine.scale_base.detach().clone()
                theirs.scale_sp.data = mine.scale_sp.detach().clone()
                theirs.mask.data = mine.mask.clone()
                node_bias.data = mine.bias.detach().clone()
        return model
