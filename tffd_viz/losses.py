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

    loss = CE + warmup_weight(epoch, PAPER_WARMUP) * (lambda_inter * mean(inter terms)
                                                      + lambda_intra * mean(intra terms))

with the published weights :data:`PAPER_LAMBDA_INTRA` and :data:`PAPER_LAMBDA_INTER`
(re-exported from :mod:`tffd_viz.recipes`, where the paper's numbers are written).
:class:`TfFD` computes the bracket (no CE, no warm-up); :func:`warmup_weight`
gives the ramp. The fused forward/backward kernels behind the terms live in
:mod:`tffd_viz.fused_losses`; this module holds the API and the formulas.

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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.fused_losses import (
    Pyramid,
    at_least_float32,
    inter_mse,
    map_sums_and_norms,
    paired_mse,
    saliency_from,
)
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, PAPER_WARMUP
from tffd_viz.types import StageKey

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
    "reduction_fn",
    "salient_order",
    "tffd_terms",
    "warmup_weight",
    "weighted_total",
]

Features = Sequence[Tensor] | Mapping[str, Tensor]
"""Ordered stage features: a list/tuple (names ``"0"``, ``"1"``, ...) or a tap name -> tensor mapping."""

SaliencyFn = Callable[[Tensor], Tensor]
"""Maps a feature (N, C, H, W) to per-channel saliency (C,) used for ordering channels."""


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


def _check_batches(shallow: Tensor, deep: Tensor, what: str) -> None:
    if shallow.shape[0] != deep.shape[0]:
        raise TapError(f"{what} has mismatched batch sizes: shallow {_shape(shallow)} vs deep {_shape(deep)}")


def reduction_fn(reduction: str) -> Callable[[list[Tensor]], Tensor]:
    """The :data:`REDUCTIONS` entry named ``reduction``; raise :class:`TffdVizError` listing them
    otherwise."""
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
    return saliency_from(*map_sums_and_norms(f), f).to(f.dtype)


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
    saliency = (
        saliency_from(*map_sums_and_norms(f), f) if saliency_fn is None else _checked_saliency(saliency_fn, f)
    )
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
        return paired_mse(f, order, k)
    ordered = f.index_select(1, order)
    salient = ordered[:, :k].detach()
    redundant = ordered[:, c - k :]
    return F.mse_loss(redundant, salient)


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
    return inter_mse(Pyramid(shallow), Pyramid(deep.detach()))


def _checked_lambda(name: str, value: float) -> float:
    """Return ``float(value)``; raise :class:`TffdVizError` unless it is finite and >= 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TffdVizError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v >= 0):
        raise TffdVizError(
            f"{name} = {value!r} is not allowed: a finite number >= 0 (a negative weight "
            f"maximises the feature losses)"
        )
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
        raise TffdVizError(
            f"logit_kd needs student and teacher logits of one shape (N, K), got "
            f"{_shape(student_logits)} and {_shape(teacher_logits)}"
        )
    if not (math.isfinite(temperature) and temperature > 0):
        raise TffdVizError(f"temperature must be finite and > 0, got {temperature!r}")
    s = at_least_float32(student_logits) / temperature
    t = at_least_float32(teacher_logits.detach()) / temperature
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
        i = operator.index(key)  # type: ignore[arg-type]  # any object with __index__; TypeError otherwise
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
        names[i]: intra_fd(named[i][1], detach_salient=detach_salient, saliency_fn=saliency_fn)
        for i in stage_ids
    }
    # inter_fd per pair, with each stage's poolings shared between its pairs (see
    # tffd_viz.fused_losses.Pyramid)
    shallow_side = {i: Pyramid(named[i][1]) for i, _ in pair_ids}
    deep_side = {j: Pyramid(named[j][1].detach()) for _, j in pair_ids}
    inter = {}
    for i, j in pair_ids:
        _check_batches(named[i][1], named[j][1], f"inter-layer pair {names[i]}->{names[j]}")
        inter[f"{names[i]}->{names[j]}"] = inter_mse(shallow_side[i], deep_side[j])
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
    reduce = reduction_fn(reduction)
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
    lambda_intra : float, default PAPER_LAMBDA_INTRA
        Weight of the reduced intra-layer terms (default: the paper's value).
    lambda_inter : float, default PAPER_LAMBDA_INTER
        Weight of the reduced inter-layer terms (default: the paper's value).
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
    >>> import torch
    >>> loss_fn = TfFD()
    >>> feats = {"layer1": torch.randn(4, 16, 32, 32), "layer2": torch.randn(4, 32, 16, 16),
    ...          "layer3": torch.randn(4, 64, 8, 8)}
    >>> out = loss_fn(feats)
    >>> sorted(out.intra), sorted(out.inter)
    (['layer1', 'layer2', 'layer3'], ['layer1->layer2', 'layer1->layer3', 'layer2->layer3'])
    >>> ce = torch.tensor(2.3)
    >>> loss = ce + warmup_weight(epoch=5, warmup=PAPER_WARMUP) * out.total   # a quarter of the way in
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
        reduction_fn(reduction)
        if pairs is not None:
            for pair in pairs:
                ints = (
                    [k for k in pair if isinstance(k, int) and not isinstance(k, bool)]
                    if isinstance(pair, Sequence) and len(pair) == 2
                    else []
                )
                if len(ints) == 2 and ints[0] >= ints[1]:
                    raise TffdVizError(f"pair {tuple(pair)!r}: the shallow index must be < the deep index")
        self.lambda_intra = _checked_lambda("lambda_intra", lambda_intra)
        self.lambda_inter = _checked_lambda("lambda_inter", lambda_inter)
        self.stages = None if stages is None else list(stages)
        self.pairs: list[tuple[StageKey, StageKey]] | None = (
            None if pairs is None else [(p[0], p[1]) for p in pairs]
        )
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
            features,
            stages=self.stages,
            pairs=self.pairs,
            detach_salient=self.detach_salient,
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
