"""The fast kernels behind :mod:`tffd_viz.losses`: fused forward/backward passes and layout-keeping pooling.

The formulas are those of :mod:`tffd_viz.losses`; this module computes them without the intermediate tensors
autograd would keep, and keeps the feature maps' memory layout (channels_last on the CPU) in the gradients:

* :func:`map_sums_and_norms` / :func:`saliency_from`: the channel saliency from per-map sums and norms, never
  materialising the normalised map;
* :func:`paired_mse`: the intra-layer MSE between salient and redundant channels as one GEMM forward and one
  GEMM backward (:class:`_PairedMSE`);
* :func:`inter_mse`: the inter-layer MSE through shared average-pooling pyramids (:class:`Pyramid`), with a
  backward that keeps the shallow map's layout (:class:`_MSEToTarget`).

Everything here is checked against plain autograd of the formulas in ``tests/test_fused_losses.py``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = [
    "Pyramid",
    "at_least_float32",
    "first_channels",
    "inter_mse",
    "map_sums_and_norms",
    "paired_mse",
    "pooled_to",
    "saliency_from",
]

_NORMALIZE_EPS = 1e-12  # F.normalize's default eps


def _is_channels_last(f: Tensor) -> bool:
    """Whether ``f (N, C, H, W)`` is stored channels_last (and not also plain contiguous, e.g. H = W = 1)."""
    return f.permute(0, 2, 3, 1).is_contiguous() and not f.is_contiguous()


def at_least_float32(t: Tensor) -> Tensor:
    """``t`` widened to float32 when it is half precision (sums and logged values), else ``t`` itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


# --------------------------------------------------------------------------------------------------
# saliency
# --------------------------------------------------------------------------------------------------


def map_sums_and_norms(f: Tensor) -> tuple[Tensor, Tensor]:
    """Per image and channel: the spatial sum and the clamped L2 norm of the map, shapes (N, C) and (N, C).

    On channels_last maps the spatial axis of ``(N, HW, C)`` is strided, which the reduction kernels walk
    slowly; a batched GEMM with a row of ones reduces it at memory speed (2-10x faster here). Taken in at
    least float32 (half-precision maps are widened: rankings must not hinge on bf16 rounding), outside any
    autocast region, without gradient.
    """
    n, c, h, w = f.shape
    channels_last = _is_channels_last(f)
    with torch.no_grad(), torch.autocast(f.device.type, enabled=False):
        maps = at_least_float32(
            f.permute(0, 2, 3, 1).reshape(n, h * w, c) if channels_last else f.reshape(n, c, h * w)
        )
        if channels_last:
            ones = torch.ones((n, 1, h * w), dtype=maps.dtype, device=maps.device)
            sums, squares = torch.bmm(ones, maps).squeeze(1), torch.bmm(ones, maps * maps).squeeze(1)
        else:
            sums, squares = maps.sum(dim=2), (maps * maps).sum(dim=2)
        return sums, squares.sqrt().clamp_min(_NORMALIZE_EPS)


def saliency_from(sums: Tensor, norms: Tensor, f: Tensor) -> Tensor:
    """The channel saliency of ``f`` from its :func:`map_sums_and_norms`: shape (C,), in the sums' dtype."""
    # mean_{n,h,w} f / max(||f_nc||, eps) without materialising the normalised map: per map, the spatial
    # sum divided by the clamped norm (the same quantity as F.normalize(f, p=2, dim=(2, 3)).mean((0, 2, 3))).
    return (sums / norms).mean(dim=0) / (f.shape[2] * f.shape[3])


# --------------------------------------------------------------------------------------------------
# intra-layer
# --------------------------------------------------------------------------------------------------


def _pairing_matrix(order: Tensor, k: int, dtype: torch.dtype) -> Tensor:
    """Return ``P (C, k)`` with ``P[order[i], i] = 1`` and ``P[order[C - k + i], i] = -1``.

    ``X @ P`` turns per-pixel channel vectors ``X (M, C)`` into the ``k`` differences
    salient_i - redundant_i that intra-Tf-FD compares (exact: the other products are zeros).
    """
    c = order.shape[0]
    cols = torch.arange(k, device=order.device)
    pairing = torch.zeros((c, k), dtype=dtype, device=order.device)
    pairing[order[:k], cols] = 1
    pairing[order[c - k :], cols] = -1
    return pairing


class _PairedMSE(torch.autograd.Function):
    """``mean((X @ P) ** 2)`` over the pixels ``X (M, C)`` of ``f (N, C, H, W)``: the intra-layer MSE.

    Forward takes the differences ``X @ [P, -P]`` with one GEMM along the map's memory layout (the mirrored
    half costs nothing in the mean and makes the GEMM ``2k ~ C`` columns wide, a shape the CPU kernels run
    about twice as fast as ``k``) and reduces them with one dot product; nothing of that size is kept.
    Backward is one GEMM in the map's layout, ``grad_X = (2 g / (M k)) X @ (P P.T)``, instead of autograd's
    chain through the difference, ``pow`` and ``mean``. (The trace form ``trace(P.T G P)`` from the channel
    Gram matrix ``G = X.T X`` would save the forward GEMM, but it cancels when paired channels nearly agree:
    1 % error at a term 1e-5 of the maps' mean square in float32.) ``P`` receives no gradient.
    """

    @staticmethod
    def forward(ctx: Any, f: Tensor, pairing: Tensor) -> Tensor:
        ctx.save_for_backward(f, pairing)
        n, c, h, w = f.shape
        wide = torch.cat([pairing, -pairing], dim=1).to(f.dtype)  # (C, 2k)
        if _is_channels_last(f):  # (M, C) @ (C, 2k)
            diff = f.permute(0, 2, 3, 1).reshape(-1, c) @ wide
        else:  # (2k, C) @ (N, C, HW)
            diff = wide.t() @ f.reshape(n, c, h * w)
        flat = at_least_float32(diff.reshape(-1))  # a bf16 loss would log three significant digits
        return torch.dot(flat, flat) / flat.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        f, pairing = ctx.saved_tensors
        n, c, h, w = f.shape
        scale = grad.to(pairing.dtype) * (2.0 / (n * h * w * pairing.shape[1]))
        mixing = ((pairing @ pairing.t()) * scale).to(f.dtype)  # (C, C), symmetric
        if _is_channels_last(f):  # (M, C) @ (C, C)
            return (f.permute(0, 2, 3, 1).reshape(-1, c) @ mixing).reshape(n, h, w, c).permute(
                0, 3, 1, 2
            ), None
        return (mixing @ f.reshape(n, c, h * w)).reshape(n, c, h, w), None


def paired_mse(f: Tensor, order: Tensor, k: int) -> Tensor:
    """Intra-layer MSE of ``f (N, C, H, W)``: channel ``order[i]`` against ``order[C - k + i]``, ``i < k``.

    Returns
    -------
    Tensor, shape ()
        ``mean((f[:, order[:k]] - f[:, order[C - k:]]) ** 2)`` over ``N * k * H * W`` elements (float32 or
        wider), differentiable in ``f`` through the fused backward.
    """
    return _PairedMSE.apply(f, _pairing_matrix(order, k, f.dtype))


# --------------------------------------------------------------------------------------------------
# inter-layer
# --------------------------------------------------------------------------------------------------


def pooled_to(f: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool ``f (N, C, H, W)`` to ``size``; exact divisions use ``avg_pool2d`` (same values, faster
    backward)."""
    h, w = f.shape[2], f.shape[3]
    if (h, w) == size:
        return f
    if h % size[0] == 0 and w % size[1] == 0:
        return F.avg_pool2d(f, kernel_size=(h // size[0], w // size[1]))
    return F.adaptive_avg_pool2d(f, size)


def first_channels(f: Tensor, m: int) -> Tensor:
    """``f[:, :m]``, or ``f`` itself when it has ``m`` channels (no slice node: its backward would hand the
    stage a contiguous gradient, slow to add to the channels_last gradients from the rest of the network)."""
    return f if f.shape[1] == m else f[:, :m]


class Pyramid:
    """One stage map and the average-pooled copies of it made so far, by ``(H, W)``.

    A new size is pooled from the smallest copy it divides exactly (a block mean of block means is the
    block mean), so a shallow stage paired with two deeper ones is read at full size once, and its
    gradient flows back through one full-size pooling.

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
    """

    def __init__(self, f: Tensor) -> None:
        self.full = f
        self.levels: dict[tuple[int, int], Tensor] = {(int(f.shape[2]), int(f.shape[3])): f}

    def pooled(self, size: tuple[int, int]) -> Tensor:
        """The map average-pooled to ``size`` (the map itself at its own size), shape (N, C, *size)."""
        if size in self.levels:
            return self.levels[size]
        exact = [(h * w, lvl) for (h, w), lvl in self.levels.items() if h % size[0] == 0 and w % size[1] == 0]
        source = min(exact, key=lambda e: e[0])[1] if exact else self.full
        self.levels[size] = out = pooled_to(source, size)
        return out


class _MSEToTarget(torch.autograd.Function):
    """``F.mse_loss(x, target)`` with ``target`` fixed, whose gradient keeps ``x``'s memory layout.

    ``mse_loss``'s own backward may hand a channels_last ``x`` a contiguous gradient; the pooling's
    backward then converts layouts on every step (several times the cost of the pooling itself).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, target: Tensor) -> Tensor:
        ctx.save_for_backward(x, target)
        return F.mse_loss(x, target)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, target = ctx.saved_tensors
        out = torch.empty_like(x, memory_format=torch.preserve_format)
        torch.sub(x, target, out=out)
        return out.mul_(grad * (2.0 / x.numel())), None


def inter_mse(shallow: Pyramid, deep: Pyramid) -> Tensor:
    """Inter-layer MSE of two stage maps (deep side already detached), pooled through their pyramids.

    Both maps go to ``(min(H_s, H_d), min(W_s, W_d))``; the MSE is over the first ``min(C_s, C_d)`` channels.

    Returns
    -------
    Tensor, shape ()
        Differentiable in the shallow map; its gradient keeps the shallow map's memory layout.
    """
    (_, cs, hs, ws), (_, cd, hd, wd) = shallow.full.shape, deep.full.shape
    size, m = (min(hs, hd), min(ws, wd)), min(cs, cd)
    return _MSEToTarget.apply(first_channels(shallow.pooled(size), m), first_channels(deep.pooled(size), m))
