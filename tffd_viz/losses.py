"""Tf-FD losses: intra-layer and inter-layer feature distillation without a teacher.

Teacher-free Feature Distillation (Tf-FD, Lujun Li, ECCV 2022) adds two
feature-mimicking terms, computed on the post-ReLU outputs of a CNN's stages,
to the cross-entropy loss of an ordinary training run:

* **intra-layer** (:func:`intra_fd`): the channels of one stage are sorted by
  their saliency (:func:`channel_saliency`), and the redundant (less salient)
  half is pulled towards the salient half, channel for channel, by an MSE;
* **inter-layer** (:func:`inter_fd`): a shallower stage mimics a deeper one
  (the deeper map is detached and acts as the teacher) after average-pooling
  the spatially larger map down to the smaller size, over the first
  ``min(C_shallow, C_deep)`` channels.

The reference training objective is::

    loss = CE + warmup_weight(epoch, 20) * (lambda_inter * mean(inter terms)
                                            + lambda_intra * mean(intra terms))

with the published ``lambda_intra = 8e-4`` and ``lambda_inter = 5e-4``
(:data:`PAPER_LAMBDA_INTRA`, :data:`PAPER_LAMBDA_INTER`, :data:`PAPER_WARMUP`).
:class:`TfFD` computes the bracket (no CE, no warm-up); :func:`warmup_weight`
gives the ramp.

Notes on the circulating "core code" snippet
--------------------------------------------
That snippet has bugs this module does not reproduce: it multiplies the
inter-layer sum by ``lambda_intra``; its ``forward`` returns nothing; its
helper methods lack ``self``; it sums the terms instead of averaging them (the
summed variant is still available as ``reduction="sum"``); ``intra_fd`` breaks
on an odd channel count (the two halves differ in size); and ``inter_fd``
pools to ``(H, H)``, assuming square maps. Here odd channel counts compare the
top ``C // 2`` with the bottom ``C // 2`` channels, and pooling targets the
smaller ``(H, W)``.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from tffd_viz.errors import TapError, TffdVizError

__all__ = [
    "PAPER_LAMBDA_INTER",
    "PAPER_LAMBDA_INTRA",
    "PAPER_WARMUP",
    "REDUCTIONS",
    "TfFD",
    "TfFDOutput",
    "channel_saliency",
    "inter_fd",
    "intra_fd",
    "logit_kd",
    "salient_order",
    "tffd_terms",
    "warmup_weight",
    "weighted_total",
]

PAPER_LAMBDA_INTRA: float = 8e-4
"""Published weight of the intra-layer term."""

PAPER_LAMBDA_INTER: float = 5e-4
"""Published weight of the inter-layer term."""

PAPER_WARMUP: int = 20
"""Published number of warm-up epochs over which the Tf-FD weight ramps from 0 to 1."""

StageKey = int | str
"""A stage given by 0-based position or by tap name."""

Features = Sequence[Tensor] | Mapping[str, Tensor]
"""Ordered stage features: a list/tuple (names ``"0"``, ``"1"``, ...) or a tap name -> tensor mapping."""

SaliencyFn = Callable[[Tensor], Tensor]
"""Maps a feature (N, C, H, W) to per-channel saliency (C,) used for ordering channels."""



_NORMALIZE_EPS = 1e-12  # F.normalize's default eps

def _stack_mean(terms: list[Tensor]) -> Tensor:
    return torch.stack(terms).mean()


def _stack_sum(terms: list[Tensor]) -> Tensor:
    return torch.stack(terms).sum()


REDUCTIONS: dict[str, Callable[[list[Tensor]], Tensor]] = {
    "mean": _stack_mean,
    "sum": _stack_sum,
}
"""How the terms of one family (intra or inter) are combined; ``"mean"`` is the paper's."""


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def _check_4d(f: object, what: str) -> Tensor:
    if not isinstance(f, Tensor):
        raise TapError(f"{what} must be a torch.Tensor of shape (N, C, H, W), got {type(f).__name__}")
    if f.dim() != 4:
        raise TapError(f"{what} must be a 4-D tensor (N, C, H, W), got shape {_shape(f)}")
    return f


def _is_channels_last(f: Tensor) -> bool:
    """Whether ``f (N, C, H, W)`` is stored channels_last (and not also plain contiguous, e.g. H = W = 1)."""
    return f.permute(0, 2, 3, 1).is_contiguous() and not f.is_contiguous()


def _at_least_float32(t: Tensor) -> Tensor:
    """``t`` widened to float32 when it is half precision (sums and logged values), else ``t`` itself."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _check_batches(shallow: Tensor, deep: Tensor, what: str) -> None:
    if shallow.shape[0] != deep.shape[0]:
        raise TapError(f"{what} has mismatched batch sizes: shallow {_shape(shallow)} vs deep {_shape(deep)}")


def _check_reduction(reduction: str) -> Callable[[list[Tensor]], Tensor]:
    try:
        return REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise TffdVizError(f"unknown reduction {reduction!r}; choose one of {sorted(REDUCTIONS)}") from None


# --------------------------------------------------------------------------------------------------
# single terms
# --------------------------------------------------------------------------------------------------


def channel_saliency(f: Tensor) -> Tensor:
    """Saliency of each channel: mean of its spatially L2-normalized map.

    Each map ``f[n, c]`` is divided by its L2 norm over the flattened ``(H, W)``
    positions (``F.normalize(f, p=2, dim=(2, 3))``, eps ``1e-12``), then
    averaged over batch and space.

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
        Post-ReLU features of one stage.

    Returns
    -------
    Tensor, shape (C,)
        Saliency per channel (same dtype/device as ``f``; differentiable).

    Notes
    -----
    The squared norm of a float32 map overflows for activations above about 1e18 (the saliency
    of such a map comes out 0). This function is on the training path and stays as cheap as the
    formula; the analysis entry points (``importance.channel_scores``) rescore such maps in float64.

    Raises
    ------
    TapError
        If ``f`` is not a 4-D tensor.
    """
    _check_4d(f, "feature")
    return _saliency_from(*_map_sums_and_norms(f), f).to(f.dtype)


def _map_sums_and_norms(f: Tensor) -> tuple[Tensor, Tensor]:
    """Per image and channel: the spatial sum and the clamped L2 norm of the map, shapes (N, C) and (N, C).

    On channels_last maps the spatial axis of ``(N, HW, C)`` is strided, which the reduction kernels walk
    slowly; a batched GEMM with a row of ones reduces it at memory speed (2-10x faster here). Taken in at
    least float32 (half-precision maps are widened: rankings must not hinge on bf16 rounding), outside any
    autocast region, without gradient.
    """
    n, c, h, w = f.shape
    channels_last = _is_channels_last(f)
    with torch.no_grad(), torch.autocast(f.device.type, enabled=False):
        maps = _at_least_float32(f.permute(0, 2, 3, 1).reshape(n, h * w, c) if channels_last
                                 else f.reshape(n, c, h * w))
        if channels_last:
            ones = torch.ones((n, 1, h * w), dtype=maps.dtype, device=maps.device)
            sums, squares = torch.bmm(ones, maps).squeeze(1), torch.bmm(ones, maps * maps).squeeze(1)
        else:
            sums, squares = maps.sum(dim=2), (maps * maps).sum(dim=2)
        return sums, squares.sqrt().clamp_min(_NORMALIZE_EPS)


def _saliency_from(sums: Tensor, norms: Tensor, f: Tensor) -> Tensor:
    """:func:`channel_saliency` of ``f`` from its :func:`_map_sums_and_norms`: shape (C,), in the sums' dtype."""
    # mean_{n,h,w} f / max(||f_nc||, eps) without materialising the normalised map: per map, the spatial
    # sum divided by the clamped norm (the same quantity as F.normalize(f, p=2, dim=(2, 3)).mean((0, 2, 3))).
    return (sums / norms).mean(dim=0) / (f.shape[2] * f.shape[3])


def salient_order(f: Tensor, saliency_fn: SaliencyFn | None = None) -> Tensor:
    """Channel indices sorted by saliency, most salient first.

    The sort is stable: among channels of exactly equal saliency the lower
    channel index comes first, so the order is deterministic.

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
        Post-ReLU features of one stage.
    saliency_fn : callable (N, C, H, W) -> (C,), optional
        Replaces :func:`channel_saliency` (e.g. one averaged over data-parallel
        ranks, so that every rank sorts by the global batch). Default: local.

    Returns
    -------
    LongTensor, shape (C,)
        ``order[0]`` is the most salient channel, ``order[-1]`` the least.

    Raises
    ------
    TapError
        If ``f`` is not a 4-D tensor.
    """
    _check_4d(f, "feature")
    saliency = _saliency_from(*_map_sums_and_norms(f), f) if saliency_fn is None else _checked_saliency(saliency_fn, f)
    return torch.sort(saliency, dim=0, descending=True, stable=True).indices


def _checked_saliency(saliency_fn: SaliencyFn, f: Tensor) -> Tensor:
    """``saliency_fn(f)`` under ``no_grad``, checked to give one value per channel (shape (C,))."""
    with torch.no_grad():
        saliency = saliency_fn(f)
    if saliency.shape != (f.shape[1],):
        raise TapError(
            f"saliency_fn must return one value per channel, shape ({f.shape[1]},), for a feature of "
            f"shape {_shape(f)}; got shape {_shape(saliency)}"
        )
    return saliency


def intra_fd(f: Tensor, detach_salient: bool = False, saliency_fn: SaliencyFn | None = None) -> Tensor:
    """Intra-layer Tf-FD term: redundant channels mimic salient ones.

    Channels are put in :func:`salient_order`; with ``k = C // 2`` the top
    ``k`` channels (salient half) and the bottom ``k`` channels (redundant
    half) are compared by MSE, the ``i``-th most salient channel against the
    ``i``-th channel of the bottom half (``sorted[:, :k]`` vs
    ``sorted[:, C - k:]``). For even ``C`` this is exactly the reference's
    first half vs second half; for odd ``C`` the middle channel
    (``sorted[:, k]``) is left out.

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
        Post-ReLU features of one stage, ``C >= 2``.
    detach_salient : bool, default False
        Detach the salient half so that gradient reaches only the redundant
        half. The reference does not detach (gradient flows into both halves).
    saliency_fn : callable (N, C, H, W) -> (C,), optional
        Passed to :func:`salient_order`; default :func:`channel_saliency`.

    Returns
    -------
    Tensor, shape ()
        Mean squared difference over ``N * k * H * W`` elements.

    Raises
    ------
    TapError
        If ``f`` is not 4-D or has fewer than 2 channels.
    """
    _check_4d(f, "intra-layer feature")
    c = f.shape[1]
    if c < 2:
        raise TapError(f"intra-layer term needs at least 2 channels, got shape {_shape(f)}")
    k = c // 2
    order = salient_order(f, saliency_fn).to(f.device)
    if not detach_salient:
        return _PairedMSE.apply(f, _pairing_matrix(order, k, f.dtype))
    ordered = f.index_select(1, order)
    salient = ordered[:, :k].detach()
    redundant = ordered[:, c - k :]
    return F.mse_loss(redundant, salient)


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
        flat = _at_least_float32(diff.reshape(-1))  # a bf16 loss would log three significant digits
        return torch.dot(flat, flat) / flat.numel()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        f, pairing = ctx.saved_tensors
        n, c, h, w = f.shape
        scale = grad.to(pairing.dtype) * (2.0 / (n * h * w * pairing.shape[1]))
        mixing = ((pairing @ pairing.t()) * scale).to(f.dtype)  # (C, C), symmetric
        if _is_channels_last(f):  # (M, C) @ (C, C)
            return (f.permute(0, 2, 3, 1).reshape(-1, c) @ mixing).reshape(n, h, w, c).permute(0, 3, 1, 2), None, None
        return (mixing @ f.reshape(n, c, h * w)).reshape(n, c, h, w), None, None


def _pooled_to(f: Tensor, size: tuple[int, int]) -> Tensor:
    """Average-pool ``f (N, C, H, W)`` to ``size``; exact divisions use ``avg_pool2d`` (same values, faster backward)."""
    h, w = f.shape[2], f.shape[3]
    if (h, w) == size:
        return f
    if h % size[0] == 0 and w % size[1] == 0:
        return F.avg_pool2d(f, kernel_size=(h // size[0], w // size[1]))
    return F.adaptive_avg_pool2d(f, size)


def inter_fd(shallow: Tensor, deep: Tensor) -> Tensor:
    """Inter-layer Tf-FD term: a shallow stage mimics a (detached) deeper one.

    Both maps are brought to the common size ``(min(H_s, H_d), min(W_s, W_d))``
    with ``F.adaptive_avg_pool2d`` (in practice the larger map is pooled down
    to the smaller one, in either direction, square or not; a map already at
    that size is left as is). Then the MSE between the first
    ``m = min(C_s, C_d)`` channels of both is taken, with ``deep`` detached.

    Parameters
    ----------
    shallow : Tensor, shape (N, C_s, H_s, W_s)
        Student side; receives gradient.
    deep : Tensor, shape (N, C_d, H_d, W_d)
        Teacher side; detached, receives no gradient.

    Returns
    -------
    Tensor, shape ()
        Mean squared difference over ``N * m * H * W`` elements.

    Raises
    ------
    TapError
        If either tensor is not 4-D or the batch sizes differ.
    """
    _check_4d(shallow, "inter-layer shallow feature")
    _check_4d(deep, "inter-layer deep feature")
    _check_batches(shallow, deep, "inter-layer pair")
    return _inter_mse(_Pyramid(shallow), _Pyramid(deep.detach()))


def _inter_mse(shallow: _Pyramid, deep: _Pyramid) -> Tensor:
    """:func:`inter_fd` of two stage maps (deep side already detached), pooled through their pyramids.

    Both maps go to ``(min(H_s, H_d), min(W_s, W_d))``; the MSE is over the first ``min(C_s, C_d)`` channels.
    """
    (_, cs, hs, ws), (_, cd, hd, wd) = shallow.full.shape, deep.full.shape
    size, m = (min(hs, hd), min(ws, wd)), min(cs, cd)
    return _MSEToTarget.apply(_first_channels(shallow.pooled(size), m), _first_channels(deep.pooled(size), m))


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


def _first_channels(f: Tensor, m: int) -> Tensor:
    """``f[:, :m]``, or ``f`` itself when it has ``m`` channels (no slice node: its backward would hand the
    stage a contiguous gradient, slow to add to the channels_last gradients from the rest of the network)."""
    return f if f.shape[1] == m else f[:, :m]


class _Pyramid:
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
        self.levels[size] = out = _pooled_to(source, size)
        return out


def _checked_lambda(name: str, value: float) -> float:
    """Return ``float(value)``; raise :class:`TffdVizError` unless it is finite and >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TffdVizError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise TffdVizError(f"{name} = {value!r} is not allowed: a finite number >= 0 (a negative weight "
                           f"maximises the feature losses)")
    return v


def logit_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton's logit distillation term of Tf-FD+: ``T^2 * KL(softmax(t / T) || softmax(s / T))``.

    Parameters
    ----------
    student_logits, teacher_logits : Tensor (N, K)
        The teacher side is detached here (it acts as a fixed target).
    temperature : float
        ``T > 0``; the ``T^2`` factor keeps the gradient scale independent of ``T``.

    Returns
    -------
    Tensor, shape ()
        ``T^2 / N * sum_n sum_k p_t[n,k] (log p_t[n,k] - log p_s[n,k])`` in float32 or wider
        (``F.kl_div(..., reduction="batchmean")``, the reference's form).
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise TffdVizError(f"logit_kd needs student and teacher logits of one shape (N, K), got "
                           f"{_shape(student_logits)} and {_shape(teacher_logits)}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise TffdVizError(f"temperature must be finite and > 0, got {temperature!r}")
    s = _at_least_float32(student_logits) / temperature
    t = _at_least_float32(teacher_logits.detach()) / temperature
    return F.kl_div(F.log_softmax(s, dim=1), F.softmax(t, dim=1), reduction="batchmean") * temperature**2


def warmup_weight(epoch: float, warmup: float) -> float:
    """Warm-up factor of the Tf-FD terms: ``min(1, epoch / warmup)``.

    Parameters
    ----------
    epoch : float
        Current epoch, counted from 1 (epoch 1 of a 20-epoch warm-up gives 0.05).
    warmup : float
        Warm-up length in epochs; ``warmup <= 0`` means no warm-up (weight 1).

    Returns
    -------
    float
        Weight in ``[0, 1]``.

    Raises
    ------
    TffdVizError
        If ``epoch`` is negative.
    """
    if epoch < 0:
        raise TffdVizError(f"epoch must be >= 0 (counted from 1), got {epoch}")
    if warmup <= 0:
        return 1.0
    return float(min(1.0, epoch / warmup))


# --------------------------------------------------------------------------------------------------
# families of terms
# --------------------------------------------------------------------------------------------------


def _named_features(features: Features) -> list[tuple[str, Tensor]]:
    if isinstance(features, Tensor):
        raise TapError(
            f"features must be a list/tuple or dict of stage tensors, got a single tensor of shape "
            f"{_shape(features)}"
        )
    if isinstance(features, Mapping):
        named = [(str(name), t) for name, t in features.items()]
    elif isinstance(features, Sequence) and not isinstance(features, str | bytes):
        named = [(str(i), t) for i, t in enumerate(features)]
    else:
        raise TapError(
            f"features must be a list/tuple or dict of stage tensors, got {type(features).__name__}"
        )
    if not named:
        raise TapError("features is empty: Tf-FD needs at least one stage tensor of shape (N, C, H, W)")
    for name, t in named:
        _check_4d(t, f"stage {name!r}")
    return named


def _stage_index(key: object, names: list[str]) -> int:
    if isinstance(key, str):
        if key not in names:
            raise TapError(f"unknown stage name {key!r}; stages are {names}")
        return names.index(key)
    if isinstance(key, bool):
        raise TffdVizError(f"stage must be an index or a name, got {key!r}")
    try:
        i = operator.index(key)
    except TypeError:
        raise TffdVizError(f"stage must be an index or a name, got {key!r}") from None
    if not 0 <= i < len(names):
        raise TapError(f"stage index {i} out of range for {len(names)} stages {names}")
    return i


def _stage_indices(stages: Sequence[StageKey] | None, names: list[str]) -> list[int]:
    if stages is None:
        return list(range(len(names)))
    if isinstance(stages, str | int):
        raise TffdVizError(f"stages must be a list of indices or names, got {stages!r}")
    picked: list[int] = []
    for key in stages:
        i = _stage_index(key, names)
        if i not in picked:
            picked.append(i)
    return picked


def _pair_indices(
    pairs: Sequence[tuple[StageKey, StageKey]] | None, names: list[str]
) -> list[tuple[int, int]]:
    n = len(names)
    if pairs is None:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    picked: list[tuple[int, int]] = []
    for pair in pairs:
        if isinstance(pair, str) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise TffdVizError(f"each pair must be (shallow, deep), got {pair!r}")
        i, j = (_stage_index(key, names) for key in pair)
        if i >= j:
            raise TffdVizError(
                f"pair {tuple(pair)!r} -> indices ({i}, {j}): the shallow stage must come before the deep "
                f"one (i < j); stages are {names}"
            )
        if (i, j) not in picked:
            picked.append((i, j))
    return picked


def tffd_terms(
    features: Features,
    stages: Sequence[StageKey] | None = None,
    pairs: Sequence[tuple[StageKey, StageKey]] | None = None,
    detach_salient: bool = False,
    saliency_fn: SaliencyFn | None = None,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Unweighted Tf-FD terms of ordered stage features.

    Parameters
    ----------
    features : list/tuple of Tensor or dict[str, Tensor]
        Stage features, shallow to deep, each of shape (N, C_i, H_i, W_i).
        A list's stages are named ``"0"``, ``"1"``, ...; a dict's by its keys.
    stages : sequence of int or str, optional
        Stages (0-based indices or names) that take the intra term; default all.
        Duplicates count once. An empty sequence gives no intra terms.
    pairs : sequence of (int or str, int or str), optional
        ``(shallow, deep)`` pairs for the inter term, by index or name, with
        shallow strictly before deep. Default: every ``i < j`` (three stages:
        (0, 1), (0, 2), (1, 2)). Duplicates count once. Empty: no inter terms.
    detach_salient : bool, default False
        Passed to :func:`intra_fd`.
    saliency_fn : callable (N, C, H, W) -> (C,), optional
        Passed to :func:`intra_fd` (default: local :func:`channel_saliency`).

    Returns
    -------
    intra : dict[str, Tensor]
        Stage name -> scalar :func:`intra_fd` term, in stage order.
    inter : dict[str, Tensor]
        ``"shallow->deep"`` (e.g. ``"layer1->layer2"`` or ``"0->1"``) -> scalar
        :func:`inter_fd` term, in pair order.

    Raises
    ------
    TffdVizError
        Bad stage/pair spec (out-of-range index, unknown name, ``i >= j``).
    TapError
        Empty features, non-4-D tensors, fewer than 2 channels in an intra
        stage, mismatched batch sizes in a pair.
    """
    named = _named_features(features)
    names = [name for name, _ in named]
    stage_ids = _stage_indices(stages, names)
    pair_ids = _pair_indices(pairs, names)
    intra = {
        names[i]: intra_fd(named[i][1], detach_salient=detach_salient, saliency_fn=saliency_fn) for i in stage_ids
    }
    # inter_fd per pair, with each stage's poolings shared between its pairs (see _Pyramid)
    shallow_side = {i: _Pyramid(named[i][1]) for i, _ in pair_ids}
    deep_side = {j: _Pyramid(named[j][1].detach()) for _, j in pair_ids}
    inter = {}
    for i, j in pair_ids:
        _check_batches(named[i][1], named[j][1], f"inter-layer pair {names[i]}->{names[j]}")
        inter[f"{names[i]}->{names[j]}"] = _inter_mse(shallow_side[i], deep_side[j])
    return intra, inter


def _reduced(terms: Mapping[str, Tensor], reduce: Callable[[list[Tensor]], Tensor], zero: Tensor) -> Tensor:
    if not terms:
        return zero
    return reduce(list(terms.values()))


def weighted_total(
    intra: Mapping[str, Tensor],
    inter: Mapping[str, Tensor],
    lambda_intra: float,
    lambda_inter: float,
    reduction: str = "mean",
    *,
    reference: Tensor | None = None,
) -> Tensor:
    """``lambda_intra * reduce(intra terms) + lambda_inter * reduce(inter terms)``.

    An empty family contributes 0.

    Parameters
    ----------
    intra, inter : dict[str, Tensor]
        Scalar terms, as returned by :func:`tffd_terms`.
    lambda_intra, lambda_inter : float
        Weights of the two families.
    reduction : {"mean", "sum"}, default "mean"
        Key of :data:`REDUCTIONS`; ``"mean"`` is the paper's.
    reference : Tensor, optional
        Gives device and dtype of the zero used for an empty family when no
        term exists to take them from (default: the first term, else CPU float32).

    Returns
    -------
    Tensor, shape ()
        Weighted total, without cross-entropy and without warm-up.

    Raises
    ------
    TffdVizError
        Unknown ``reduction``.
    """
    reduce = _check_reduction(reduction)
    if reference is None:
        first = next(iter([*intra.values(), *inter.values()]), None)
        reference = first if first is not None else torch.zeros(())
    zero = torch.zeros((), dtype=reference.dtype, device=reference.device)
    return lambda_intra * _reduced(intra, reduce, zero) + lambda_inter * _reduced(inter, reduce, zero)


# --------------------------------------------------------------------------------------------------
# module
# --------------------------------------------------------------------------------------------------


@dataclass
class TfFDOutput:
    """Result of :class:`TfFD`.

    Attributes
    ----------
    total : Tensor, shape ()
        ``lambda_intra * reduce(intra) + lambda_inter * reduce(inter)`` (no CE, no warm-up).
    intra : dict[str, Tensor]
        Stage name -> unweighted scalar intra term.
    inter : dict[str, Tensor]
        ``"shallow->deep"`` -> unweighted scalar inter term.
    """

    total: Tensor
    intra: dict[str, Tensor]
    inter: dict[str, Tensor]


class TfFD(nn.Module):
    """Tf-FD loss over ordered stage features (no parameters).

    Parameters
    ----------
    lambda_intra : float, default 8e-4
        Weight of the reduced intra-layer terms (paper value).
    lambda_inter : float, default 5e-4
        Weight of the reduced inter-layer terms (paper value).
    stages : sequence of int or str, optional
        Stages taking the intra term (index or name); default all. Empty: intra contributes 0.
    pairs : sequence of (int or str, int or str), optional
        ``(shallow, deep)`` pairs with shallow before deep; default every ``i < j``.
        Empty: inter contributes 0.
    reduction : {"mean", "sum"}, default "mean"
        How each family's terms are combined (key of :data:`REDUCTIONS`).
    detach_salient : bool, default False
        Detach the salient half in the intra term (the reference does not).
    saliency_fn : callable (N, C, H, W) -> (C,), optional
        Saliency used to order channels in the intra term; default the local
        :func:`channel_saliency` (training passes a rank-averaged one).

    Raises
    ------
    TffdVizError
        Unknown ``reduction``, a lambda that is negative or not finite (a negative weight maximises the
        feature losses), or an index pair with ``i >= j``.

    Examples
    --------
    >>> loss_fn = TfFD()
    >>> out = loss_fn({"layer1": f1, "layer2": f2, "layer3": f3})  # doctest: +SKIP
    >>> loss = ce + warmup_weight(epoch, PAPER_WARMUP) * out.total  # doctest: +SKIP
    """

    def __init__(
        self,
        lambda_intra: float = PAPER_LAMBDA_INTRA,
        lambda_inter: float = PAPER_LAMBDA_INTER,
        stages: Sequence[StageKey] | None = None,
        pairs: Sequence[tuple[StageKey, StageKey]] | None = None,
        reduction: str = "mean",
        detach_salient: bool = False,
        saliency_fn: SaliencyFn | None = None,
    ) -> None:
        super().__init__()
        _check_reduction(reduction)
        if pairs is not None:
            for pair in pairs:
                if (
                    isinstance(pair, Sequence)
                    and len(pair) == 2
                    and all(isinstance(k, int) and not isinstance(k, bool) for k in pair)
                    and pair[0] >= pair[1]
                ):
                    raise TffdVizError(f"pair {tuple(pair)!r}: the shallow index must be < the deep index")
        self.lambda_intra = _checked_lambda("lambda_intra", lambda_intra)
        self.lambda_inter = _checked_lambda("lambda_inter", lambda_inter)
        self.stages = None if stages is None else list(stages)
        self.pairs = None if pairs is None else [tuple(p) for p in pairs]
        self.reduction = reduction
        self.detach_salient = bool(detach_salient)
        self.saliency_fn = saliency_fn

    def forward(self, features: Features) -> TfFDOutput:
        """Compute the Tf-FD terms and their weighted total.

        Parameters
        ----------
        features : list/tuple of Tensor or dict[str, Tensor]
            Post-ReLU stage features, shallow to deep, each (N, C_i, H_i, W_i).

        Returns
        -------
        TfFDOutput
            Total (shape ()) and the unweighted terms by name.
        """
        intra, inter = tffd_terms(
            features, stages=self.stages, pairs=self.pairs, detach_salient=self.detach_salient,
            saliency_fn=self.saliency_fn,
        )
        first = next(iter(features.values())) if isinstance(features, Mapping) else features[0]
        total = weighted_total(
            intra, inter, self.lambda_intra, self.lambda_inter, self.reduction, reference=first
        )
        return TfFDOutput(total=total, intra=intra, inter=inter)

    def extra_repr(self) -> str:
        return (
            f"lambda_intra={self.lambda_intra}, lambda_inter={self.lambda_inter}, stages={self.stages}, "
            f"pairs={self.pairs}, reduction={self.reduction!r}, detach_salient={self.detach_salient}"
        )
