"""A fast Kolmogorov–Arnold Network layer with pykan's exact parameterisation.

Each edge (i → o) carries ``φ_io(x) = mask_io · (scale_base_io · silu(x) + scale_sp_io · Σ_j
coef_ioj B_j(x))`` with B_j the order-k B-splines on a per-input grid of G intervals extended by
k knots on each side, exactly as ``kan.KANLayer``. pykan materialises a (batch, out, in) tensor
for every layer; here, in training, the B-spline basis is computed once per input, laid out
(batch, G+k, in), and the sum over edges becomes one matrix product. At inference on a uniform
grid each edge function is a degree-k polynomial per grid interval: the layer keeps a table of
those polynomials, built once per weight version, and one ``embedding_bag`` gathers and sums,
per sample, the k+1 coefficient rows of each input's interval weighted by 1, f, …, f^k (f the
position inside the interval) plus the base-function rows weighted by silu(x): exact, and no
basis tensor is built. ``KANNet.to_pykan()`` copies the weights into a ``kan.KAN`` so pykan's
``plot``, ``prune`` and ``auto_symbolic`` work on a trained judge.
"""

from __future__ import annotations

import functools
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


def cardinal_table(k: int) -> torch.Tensor:
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


def _horner(coef: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """All pieces at f (batch, in): coef (pieces, degree+1) in increasing powers ->
    (batch, pieces, in), computed along the contiguous ``in`` axis."""
    deg = coef.shape[1] - 1
    c = coef.unsqueeze(-1)  # (pieces, degree+1, 1)
    f = f.unsqueeze(1)  # (batch, 1, in)
    vals = c[:, deg].expand(f.shape[0], coef.shape[0], f.shape[2])
    for d in range(deg - 1, -1, -1):
        vals = torch.addcmul(c[:, d], vals, f)
    return vals


def _uniform_pieces(
    x: torch.Tensor, k: int, n_basis: int, origin: torch.Tensor, inv_step: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fractional position f in the knot interval and the padded basis position of each of the
    k+1 pieces, (batch, k+1, in) (piece r is basis s - r; off-grid positions land in k+1
    padding slots)."""
    u = (x - origin) * inv_step  # in knot intervals from the first extended knot
    s = torch.floor(u)
    pos = (s.to(torch.long).unsqueeze(1) - torch.arange(k + 1)[:, None]).clamp_(-k - 1, n_basis + k)
    return u - s, pos + (k + 1)


class _UniformBasis(torch.autograd.Function):
    """The closed-form basis, basis-major: (batch, G+k, in), with an analytic derivative
    (autograd through the Horner steps and the scatter costs more than the forward itself).
    Basis-major keeps every elementwise step on the contiguous ``in`` axis, and the result
    flattens to (batch, (G+k)·in) without a copy."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        table: torch.Tensor,
        dtable: torch.Tensor,
        origin: torch.Tensor,
        inv_step: torch.Tensor,
        n_basis: int,
    ) -> torch.Tensor:
        k = table.shape[0] - 1
        f, pos = _uniform_pieces(x, k, n_basis, origin, inv_step)
        out = torch.zeros(x.shape[0], n_basis + 2 * k + 2, x.shape[1], dtype=x.dtype)
        out.scatter_(1, pos, _horner(table, f))
        ctx.save_for_backward(f, pos, dtable, inv_step)
        ctx.n_basis = n_basis
        return out[:, k + 1 : k + 1 + n_basis]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None
        f, pos, dtable, inv_step = ctx.saved_tensors
        k = dtable.shape[0] - 1
        padded = torch.zeros(
            grad.shape[0], ctx.n_basis + 2 * k + 2, grad.shape[2], dtype=grad.dtype
        )
        padded[:, k + 1 : k + 1 + ctx.n_basis] = grad
        d_basis = _horner(dtable, f)  # d piece / du, (batch, k+1, in)
        grad_x = (padded.gather(1, pos) * d_basis).sum(1) * inv_step
        return grad_x, None, None, None, None, None


def uniform_basis(
    x: torch.Tensor,
    grid: torch.Tensor,
    k: int,
    table: torch.Tensor,
    origin: torch.Tensor | None = None,
    inv_step: torch.Tensor | None = None,
    major: bool = False,
) -> torch.Tensor:
    """Same values as ``b_spline_basis`` for a grid with equal spacing per input, computed
    from the k+1 non-zero pieces only (closed-form polynomials) instead of the recursion, with
    an analytic gradient in x. ``origin``/``inv_step`` (the first knot and 1/spacing per input)
    may be passed precomputed. Returns (batch, in, G+k), or with ``major`` (batch, G+k, in),
    the layout the layer's matrix product reads (the other is a view of it)."""
    n_basis = grid.shape[1] - k - 1
    if origin is None or inv_step is None:
        origin, inv_step = grid[:, 0], 1.0 / (grid[:, 1] - grid[:, 0])
    coef = table if table.dtype == x.dtype else table.to(x.dtype)
    dcoef = coef[:, 1:] * torch.arange(1, k + 1, dtype=x.dtype)  # derivative, increasing powers
    if dcoef.shape[1] == 0:
        dcoef = torch.zeros_like(coef[:, :1])
    basis = _UniformBasis.apply(x, coef, dcoef, origin, inv_step, n_basis)
    return basis if major else basis.transpose(1, 2)


@functools.cache
def _interval_map(k: int, n_basis: int) -> torch.Tensor:
    """``M[slot, d, j]``: the coefficient of f**d that basis j contributes on grid interval
    ``slot - 1`` of a uniform extended grid (``n_basis + k`` intervals). Slots 0 and last are the
    spans left and right of the extended grid, where every basis is zero (as in pykan)."""
    table = cardinal_table(k)
    n_int = n_basis + k
    m = torch.zeros(n_int + 2, k + 1, n_basis, dtype=torch.float64)
    for s in range(n_int):
        for r in range(k + 1):  # on interval s, basis s - r is piece r
            if 0 <= s - r < n_basis:
                m[s + 1, :, s - r] = table[r]
    return m


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
        self._fast_key: Any = None  # inference caches, each keyed by the versions of the
        self._w_key: Any = None  # tensors it is computed from
        self._uniform_key: Any = None
        self._pw_key: Any = None
        self._fast: tuple[Any, ...] = ()
        self._w_cache: tuple[Any, ...] = ()
        self._pw: tuple[Any, ...] = ()
        self._uniform = False

    def grid_is_uniform(self) -> bool:
        d = self.grid[:, 1:] - self.grid[:, :-1]
        return bool(torch.allclose(d, d[:, :1].expand_as(d), rtol=1e-4, atol=1e-6))

    def basis(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, in, G+k): the closed form on uniform grids, Cox-de Boor otherwise."""
        return self.basis_major(x).transpose(1, 2)

    def basis_major(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, G+k, in): the basis laid out as the layer's matrix product reads it."""
        if self._is_uniform():
            key = (self.grid._version, self.grid.data_ptr(), x.dtype)
            if self._fast_key != key:
                self._fast = (
                    cardinal_table(self.k).to(x.dtype),
                    self.grid[:, 0].clone(),
                    1.0 / (self.grid[:, 1] - self.grid[:, 0]),
                )
                self._fast_key = key
            table, origin, inv_step = self._fast
            return uniform_basis(x, self.grid, self.k, table, origin, inv_step, major=True)
        return b_spline_basis(x, self.grid, self.k).transpose(1, 2)

    def _spline_weight(self) -> torch.Tensor:
        """coef · scale_sp · mask: (in, out, G+k)."""
        return self.coef * (self.scale_sp * self.mask).unsqueeze(-1)

    def _weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Spline weights basis-major ((G+k) · in, out) and base weights (in, out)."""
        w_sp = self._spline_weight().permute(2, 0, 1)
        return w_sp.reshape(-1, self.out_dim), self.scale_base * self.mask

    def _param_key(self) -> tuple[Any, ...]:
        return tuple(
            (t._version, t.data_ptr())
            for t in (self.coef, self.scale_sp, self.scale_base, self.mask, self.grid)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.parameters())
        )
        if not needs_grad and self._is_uniform():
            return self._forward_piecewise(x)
        basis = self.basis_major(x).reshape(x.shape[0], -1)  # a view on uniform grids
        if needs_grad:
            w_sp, w_base = self._weights()
        else:  # inference on a non-uniform grid: reuse the weights until a parameter changes
            key = self._param_key()
            if self._w_key != key:
                self._w_cache, self._w_key = tuple(w.detach() for w in self._weights()), key
            w_sp, w_base = self._w_cache
        return torch.addmm(torch.addmm(self.bias, basis, w_sp), F.silu(x), w_base)

    def _is_uniform(self) -> bool:
        key = (self.grid._version, self.grid.data_ptr())
        if self._uniform_key != key:
            self._uniform, self._uniform_key = self.grid_is_uniform(), key
        return self._uniform

    def piecewise_table(self) -> torch.Tensor:
        """The layer as polynomials: row ``(i, slot, d)`` holds the coefficient of f**d of every
        output's edge function from input i on that grid interval (plus bias / in on the f**0
        rows: each input contributes exactly one of them, with weight 1), followed by ``in``
        rows of base weights (scale_base · mask). Shape (in · (G+2k+2) · (k+1) + in, out)."""
        n_basis = self.coef.shape[2]
        m = _interval_map(self.k, n_basis).to(self.coef.dtype)
        poly = torch.einsum("sdj,ioj->isdo", m, self._spline_weight())
        poly[:, :, 0, :] += self.bias / self.in_dim
        return torch.cat([poly.reshape(-1, self.out_dim), self.scale_base * self.mask]).detach()

    def _forward_piecewise(self, x: torch.Tensor) -> torch.Tensor:
        """Inference on a uniform grid: one ``embedding_bag`` over the polynomial table. Each
        sample's bag is laid out (k+2, in): the rows of f**0..f**k for every input, then the
        base rows; every write below runs along the contiguous ``in`` axis."""
        k, n_in = self.k, self.in_dim
        key = (self._param_key(), x.dtype)
        if self._pw_key != key:
            n_int = self.coef.shape[2] + k
            inv = 1.0 / (self.grid[:, 1] - self.grid[:, 0]).to(x.dtype)
            stride = (n_int + 2) * (k + 1)  # table rows per input
            self._pw = (
                self.piecewise_table().to(x.dtype),
                1.0 - self.grid[:, 0].to(x.dtype) * inv,  # slot position: x / step - origin + 1
                inv,
                torch.arange(k + 1)[:, None] + torch.arange(n_in)[None, :] * stride,  # (k+1, in)
                n_in * stride + torch.arange(n_in),  # the base rows
                float(n_int) + 1.5,
            )
            self._pw_key = key
        table, shift, inv, first, base_rows, top = self._pw
        n = x.shape[0]
        # slot 1 + s for x in grid interval s; slots 0 and n_int + 1 (off the grid) are zero
        # rows. Clamped positive, truncation is floor. NaN is kept out of the index (the base
        # weight silu(NaN) still carries it to the output).
        u = torch.nan_to_num(torch.addcmul(shift, x, inv).clamp_(0.5, top), nan=0.5)
        slot = u.to(torch.long)
        rows = torch.empty(n, k + 2, n_in, dtype=torch.long)
        torch.add(first, slot.unsqueeze(1), alpha=k + 1, out=rows[:, : k + 1])
        rows[:, k + 1] = base_rows
        w = torch.empty(n, k + 2, n_in, dtype=x.dtype)
        w[:, 0] = 1.0
        torch.sub(u, slot, out=w[:, 1])  # f, the position inside the interval
        for d in range(2, k + 1):
            torch.mul(w[:, d - 1], w[:, 1], out=w[:, d])
        w[:, k + 1] = F.silu(x)
        return F.embedding_bag(
            rows.view(n, -1), table, per_sample_weights=w.view(n, -1), mode="sum"
        )

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
