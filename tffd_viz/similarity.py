"""Representation similarity: CKA between layers and cosine similarity between channels.

Two families of measures, both pure math on tensors (torch + numpy only):

CKA (centered kernel alignment, Kornblith et al. 2019, "Similarity of Neural
Network Representations Revisited")
    :func:`linear_cka` and :func:`rbf_cka` compare two sets of features of the
    same ``n`` samples, ``x`` of shape ``(n, ...)`` and ``y`` of shape
    ``(n, ...)`` (flattened to ``(n, dx)`` and ``(n, dy)``), in float64. They
    restate the reference colab's ``gram_linear``, ``gram_rbf``,
    ``center_gram``, ``cka`` and ``feature_space_linear_cka``; ``debiased=True``
    uses the unbiased HSIC estimator of Song et al. (2012) (HSIC_1). These
    full-batch forms hold ``n x n`` matrices (or ``d x d`` for the linear
    feature-space form), so callers cap ``n`` at :data:`FULL_BATCH_MAX_N`.
    :class:`MinibatchCKA` accumulates the unbiased HSIC_1 over minibatches
    (Nguyen, Raghu and Kornblith 2021, "Do wide and deep networks learn the
    same things?") for every pair of layers of two models, with memory
    independent of the number of samples.

    :func:`layer_cka_matrices` runs two models over a set of images and returns
    the layer x layer CKA matrices A vs A, B vs B and A vs B, streaming
    (:class:`MinibatchCKA`) or full-batch (:data:`CKA_ESTIMATORS`).

Channel similarity (the Tf-FD "feature similarity" page)
    :func:`channel_cosine_matrix`, :func:`paired_channel_cosine` (intra-Tf-FD's
    pairing of salient with redundant channels) and
    :func:`inter_layer_alignment` (inter-Tf-FD's pairing of a shallow with a
    deep map); :func:`channel_similarity_views` and
    :func:`inter_layer_alignments` run a model over images and apply them.

Degenerate inputs never give a silent NaN:

* CKA with a side of zero variance (constant features over the samples, or a
  centred gram that is numerically zero) is **defined as 0.0** and a
  :class:`ConstantFeatureWarning` names the constant side.
* Fewer than 4 samples raise :class:`~tffd_viz.errors.TffdVizError` (HSIC_1 and
  the debiased estimator need ``n >= 4``); non-finite features raise too.
* A channel that is all zeros has cosine 0 with every channel, itself included.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.losses import salient_order
from tffd_viz.models import resolve_taps

__all__ = [
    "CKA_ESTIMATORS",
    "CKA_METHODS",
    "FULL_BATCH_MAX_N",
    "LINEAR_CKA_FORMS",
    "MIN_SAMPLES",
    "ConstantFeatureWarning",
    "MinibatchCKA",
    "center_gram",
    "channel_cosine_matrix",
    "channel_similarity_views",
    "cka",
    "cka_from_grams",
    "gram_linear",
    "gram_rbf",
    "inter_layer_alignment",
    "inter_layer_alignments",
    "layer_cka_matrices",
    "linear_cka",
    "paired_channel_cosine",
    "rbf_cka",
    "unbiased_hsic",
]

FULL_BATCH_MAX_N: int = 5000
"""Largest sample count the app feeds to the full-batch CKA forms (one ``n x n`` float64 matrix is 200 MB
at 5000; the RBF form holds a few at once)."""

MIN_SAMPLES: int = 4
"""Smallest sample (or minibatch) size: HSIC_1 divides by ``n (n - 3)`` and ``(n - 1)(n - 2)``."""

# Relative size under which centred features count as constant: the rounding
# error of subtracting a float64 mean is a few ulps of the feature magnitude.
_CONSTANT_RTOL: float = 1e-13

ArrayLike = torch.Tensor | np.ndarray


class ConstantFeatureWarning(RuntimeWarning):
    """A CKA side has zero variance over the samples; its CKA is defined as 0.0."""


# ----------------------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------------------


def _as_tensor(x: ArrayLike | Sequence[Any], name: str) -> torch.Tensor:
    """Return ``x`` (tensor, ndarray or nested list of reals) as a detached real tensor."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TffdVizError(
                f"{name}: expected a real numeric array, got dtype {arr.dtype} of shape {arr.shape}"
            )
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.is_complex():
        raise TffdVizError(f"{name}: complex features are not supported (shape {tuple(t.shape)})")
    return t


def _as_float64_matrix(
    x: ArrayLike | Sequence[Any], name: str, device: torch.device | None = None, check_finite: bool = True
) -> torch.Tensor:
    """Return ``x`` as a float64 ``(n, d)`` tensor (``(n, ...)`` flattened; ``(n,)`` becomes ``(n, 1)``).

    ``check_finite=False`` leaves the NaN/infinity check to the caller (MinibatchCKA checks all of a
    minibatch's layers with one reduction).
    """
    t = _as_tensor(x, name)
    shape = tuple(t.shape)
    if t.dim() == 0:
        raise TffdVizError(f"{name}: expected features of shape (n, ...), got a scalar")
    if device is not None and t.device != device:
        t = t.to(device)
    t = t.to(torch.float64).reshape(shape[0], -1)
    if t.shape[1] == 0:
        raise TffdVizError(f"{name}: features of shape {shape} have no feature dimensions")
    if check_finite and not bool(torch.isfinite(t).all()):
        raise TffdVizError(f"{name}: features of shape {shape} contain NaN or infinity")
    return t


def _paired_matrices(x: ArrayLike, y: ArrayLike, max_n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``x``, ``y`` as float64 ``(n, dx)``, ``(n, dy)`` on ``x``'s device, checking ``n``."""
    x, y = _as_tensor(x, "x"), _as_tensor(y, "y")
    xm = _as_float64_matrix(x, "x")
    ym = _as_float64_matrix(y, "y", device=xm.device)
    if xm.shape[0] != ym.shape[0]:
        raise TffdVizError(
            f"CKA needs the same samples on both sides: x has shape {tuple(x.shape)} and y has shape "
            f"{tuple(y.shape)} (n = {xm.shape[0]} vs {ym.shape[0]})"
        )
    n = xm.shape[0]
    if n < MIN_SAMPLES:
        raise TffdVizError(
            f"CKA needs at least {MIN_SAMPLES} samples, got n = {n} (x shape {tuple(x.shape)}, y shape {tuple(y.shape)})"
        )
    if max_n is not None and n > max_n:
        raise TffdVizError(
            f"CKA on n = {n} samples exceeds max_n = {max_n} (the full-batch forms hold n x n matrices); "
            "subsample or use MinibatchCKA"
        )
    return xm, ym


def _centered_features(x: torch.Tensor) -> torch.Tensor:
    """Return ``x - mean(x, 0)``, shape ``(n, d)``."""
    return x - x.mean(dim=0, keepdim=True)


def _is_constant(raw: torch.Tensor, centered: torch.Tensor) -> bool:
    """Whether the centred features are zero up to the rounding of the mean subtraction."""
    raw_norm = float(torch.linalg.vector_norm(raw))
    return float(torch.linalg.vector_norm(centered)) <= _CONSTANT_RTOL * raw_norm


def _warn_constant(func: str, sides: Sequence[str]) -> None:
    warnings.warn(
        f"{func}: features {' and '.join(sides)} have zero variance over the samples (constant); "
        "CKA with a constant side is defined as 0.0",
        ConstantFeatureWarning,
        stacklevel=3,
    )


# ----------------------------------------------------------------------------------------------------------
# grams and HSIC
# ----------------------------------------------------------------------------------------------------------


def gram_linear(x: ArrayLike) -> torch.Tensor:
    """Return the linear kernel gram ``x x^T``.

    Parameters
    ----------
    x : Tensor or ndarray, shape (n, ...)
        Features, flattened to ``(n, d)``.

    Returns
    -------
    Tensor, shape (n, n), float64
    """
    xm = _as_float64_matrix(x, "x")
    return xm @ xm.T


def _median(values: torch.Tensor) -> torch.Tensor:
    """``np.median`` of all entries (mean of the two middle values for an even count), as a 0-d tensor."""
    flat = values.reshape(-1)
    k = flat.numel()
    if k % 2 == 1:
        return flat.kthvalue((k + 1) // 2).values
    return 0.5 * (flat.kthvalue(k // 2).values + flat.kthvalue(k // 2 + 1).values)


def gram_rbf(x: ArrayLike, threshold: float = 1.0) -> torch.Tensor:
    """Return the RBF kernel gram with the reference's median-distance bandwidth.

    ``K_ij = exp(-d2_ij / (2 threshold^2 median(d2)))`` where ``d2`` holds the squared
    Euclidean distances between all ``n x n`` pairs, the zero diagonal included in the
    median (as the reference's ``np.median(sq_distances)``). Tiny negative distances from
    rounding are clamped to 0.

    Parameters
    ----------
    x : Tensor or ndarray, shape (n, ...)
        Features, flattened to ``(n, d)``.
    threshold : float
        Bandwidth as a fraction of the median distance; must be positive.

    Returns
    -------
    Tensor, shape (n, n), float64

    Raises
    ------
    TffdVizError
        If ``threshold <= 0`` or the median squared distance is 0 (more than half of all
        pairs are duplicates, the constant case included), where the bandwidth is undefined.
    """
    if not threshold > 0 or not math.isfinite(threshold):
        raise TffdVizError(f"gram_rbf: threshold must be a positive finite number, got {threshold!r}")
    x = _as_tensor(x, "x")
    xm = _as_float64_matrix(x, "x")
    dot = xm @ xm.T
    sq_norms = torch.diagonal(dot)
    sq_distances = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * dot).clamp_min_(0.0)
    sq_median = _median(sq_distances)
    if float(sq_median) <= 0.0:
        raise TffdVizError(
            f"gram_rbf: the median squared distance between the {xm.shape[0]} samples of shape "
            f"{tuple(x.shape)} is 0 (mostly duplicate samples), so the RBF bandwidth is undefined"
        )
    return torch.exp(-sq_distances / (2.0 * threshold**2 * sq_median))


def _as_gram(gram: ArrayLike, name: str) -> torch.Tensor:
    gram = _as_tensor(gram, name)
    g = _as_float64_matrix(gram, name)
    if g.shape[0] != g.shape[1] or tuple(gram.shape) != tuple(g.shape):
        raise TffdVizError(f"{name}: a gram matrix must be square (n, n), got shape {tuple(gram.shape)}")
    scale = float(g.abs().max()) if g.numel() else 0.0
    if not torch.allclose(g, g.T, rtol=1e-7, atol=1e-12 * scale):
        raise TffdVizError(f"{name}: a gram matrix must be symmetric (shape {tuple(g.shape)})")
    return g


def _centered_gram(g: torch.Tensor, unbiased: bool) -> torch.Tensor:
    """Centre float64 grams of shape ``(..., n, n)`` (a fresh tensor; see :func:`center_gram`)."""
    n = g.shape[-1]
    if unbiased:
        # U-centring of Szekely & Rizzo (2014), as in the reference colab (more stable than Song et al. 2007).
        g = g.clone()
        g.diagonal(dim1=-2, dim2=-1).zero_()
        means = g.sum(dim=-2) / (n - 2)
        means = means - means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
        g = g - means[..., :, None] - means[..., None, :]
        g.diagonal(dim1=-2, dim2=-1).zero_()
        return g
    means = g.mean(dim=-2)
    means = means - means.mean(dim=-1, keepdim=True) / 2
    return g - means[..., :, None] - means[..., None, :]


def center_gram(gram: ArrayLike, unbiased: bool = False) -> torch.Tensor:
    """Return the centred gram ``H K H`` (biased) or its U-centred version (unbiased).

    Parameters
    ----------
    gram : Tensor or ndarray, shape (n, n)
        Symmetric gram matrix; it is not modified.
    unbiased : bool
        If True, U-centre (zero diagonal) so that ``<U(K), U(L)> / (n (n - 3))`` is the
        unbiased HSIC_1 estimator of Song et al. (2012); needs ``n >= 4``.

    Returns
    -------
    Tensor, shape (n, n), float64

    Raises
    ------
    TffdVizError
        If ``gram`` is not square and symmetric, or ``unbiased`` with ``n < 4``.
    """
    g = _as_gram(gram, "gram")
    if unbiased and g.shape[0] < MIN_SAMPLES:
        raise TffdVizError(
            f"center_gram: unbiased centring needs n >= {MIN_SAMPLES}, got gram shape {tuple(g.shape)}"
        )
    return _centered_gram(g, unbiased)


def _paired_grams(gram_x: ArrayLike, gram_y: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    gx = _as_gram(gram_x, "gram_x")
    gy = _as_gram(gram_y, "gram_y").to(gx.device)
    if gx.shape != gy.shape:
        raise TffdVizError(
            f"the two grams must cover the same samples: gram_x has shape {tuple(gx.shape)}, "
            f"gram_y has shape {tuple(gy.shape)}"
        )
    if gx.shape[0] < MIN_SAMPLES:
        raise TffdVizError(f"CKA needs at least {MIN_SAMPLES} samples, got grams of shape {tuple(gx.shape)}")
    return gx, gy


def unbiased_hsic(gram_x: ArrayLike, gram_y: ArrayLike) -> float:
    """Return the unbiased HSIC_1 estimator of Song et al. (2012).

    ``HSIC_1 = <U(K), U(L)> / (n (n - 3))`` with ``U`` the U-centring of
    :func:`center_gram`, which equals Song et al.'s
    ``[tr(K~ L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n (n - 3))``
    where ``K~`` is ``K`` with a zeroed diagonal.

    Parameters
    ----------
    gram_x, gram_y : Tensor or ndarray, shape (n, n)
        Symmetric gram matrices of the same ``n >= 4`` samples.

    Returns
    -------
    float
    """
    gx, gy = _paired_grams(gram_x, gram_y)
    n = gx.shape[0]
    ux, uy = _centered_gram(gx, True), _centered_gram(gy, True)
    return float((ux * uy).sum()) / (n * (n - 3))


def cka_from_grams(gram_x: ArrayLike, gram_y: ArrayLike, debiased: bool = False) -> float:
    """Return CKA between two gram matrices (the reference colab's ``cka(gram_x, gram_y, debiased)``).

    ``CKA = <C(K), C(L)> / (||C(K)|| ||C(L)||)`` with ``C`` the (U-)centring of
    :func:`center_gram`; the HSIC scale factors cancel.

    Parameters
    ----------
    gram_x, gram_y : Tensor or ndarray, shape (n, n)
        Symmetric grams of the same ``n >= 4`` samples.
    debiased : bool
        Use the unbiased HSIC estimator (U-centring) instead of the biased one.

    Returns
    -------
    float
        CKA; 0.0 (with a :class:`ConstantFeatureWarning`) when a centred gram is zero.
    """
    gx, gy = _paired_grams(gram_x, gram_y)
    return _cka_of_grams(gx, gy, debiased, "cka_from_grams")


def _cka_of_grams(gx: torch.Tensor, gy: torch.Tensor, debiased: bool, func: str) -> float:
    cx, cy = _centered_gram(gx, debiased), _centered_gram(gy, debiased)
    norm_x, norm_y = float(torch.linalg.vector_norm(cx)), float(torch.linalg.vector_norm(cy))
    zero = [side for side, norm, g in (("x", norm_x, gx), ("y", norm_y, gy)) if norm <= _zero_gram_atol(g)]
    if zero:
        _warn_constant(func, zero)
        return 0.0
    return float((cx * cy).sum()) / (norm_x * norm_y)


def _zero_gram_atol(g: torch.Tensor) -> float:
    """Norm under which a centred gram is rounding noise of ``g`` (relative to its largest entry)."""
    return _CONSTANT_RTOL * g.shape[0] * float(g.abs().max())


# ----------------------------------------------------------------------------------------------------------
# full-batch CKA
# ----------------------------------------------------------------------------------------------------------


def _debiased_dot_product_similarity(
    xty: torch.Tensor,
    sum_squared_rows_x: torch.Tensor,
    sum_squared_rows_y: torch.Tensor,
    squared_norm_x: torch.Tensor,
    squared_norm_y: torch.Tensor,
    n: int,
) -> torch.Tensor:
    """``n (n - 3) HSIC_1`` of linear kernels from centred features (reference ``_debiased_..._helper``)."""
    return (
        xty
        - n / (n - 2.0) * (sum_squared_rows_x @ sum_squared_rows_y)
        + squared_norm_x * squared_norm_y / ((n - 1) * (n - 2))
    )


def _linear_cka_feature(xc: torch.Tensor, yc: torch.Tensor, debiased: bool) -> tuple[float, float, float]:
    """Return (similarity, norm_x, norm_y) of feature-space linear CKA from centred features."""
    sim = torch.linalg.matrix_norm(xc.T @ yc) ** 2
    norm_x = torch.linalg.matrix_norm(xc.T @ xc)
    norm_y = torch.linalg.matrix_norm(yc.T @ yc)
    if debiased:
        n = xc.shape[0]
        rows_x, rows_y = (xc * xc).sum(dim=1), (yc * yc).sum(dim=1)
        sq_x, sq_y = rows_x.sum(), rows_y.sum()
        sim = _debiased_dot_product_similarity(sim, rows_x, rows_y, sq_x, sq_y, n)
        norm_x = (
            _debiased_dot_product_similarity(norm_x**2, rows_x, rows_x, sq_x, sq_x, n).clamp_min(0.0).sqrt()
        )
        norm_y = (
            _debiased_dot_product_similarity(norm_y**2, rows_y, rows_y, sq_y, sq_y, n).clamp_min(0.0).sqrt()
        )
    return float(sim), float(norm_x), float(norm_y)


def _linear_cka_gram(xc: torch.Tensor, yc: torch.Tensor, debiased: bool) -> tuple[float, float, float]:
    """Return (similarity, norm_x, norm_y) of gram-form linear CKA from centred features."""
    cx = _centered_gram(xc @ xc.T, debiased)
    cy = _centered_gram(yc @ yc.T, debiased)
    return float((cx * cy).sum()), float(torch.linalg.vector_norm(cx)), float(torch.linalg.vector_norm(cy))


LINEAR_CKA_FORMS: dict[str, Callable[[torch.Tensor, torch.Tensor, bool], tuple[float, float, float]]] = {
    "gram": _linear_cka_gram,
    "feature": _linear_cka_feature,
}
"""The two exact forms of linear CKA: ``n x n`` grams or ``d x d`` feature cross-products."""


def _cheaper_linear_form(n: int, dx: int, dy: int) -> str:
    """Return the linear CKA form with fewer multiply-adds: grams ``n^2 (dx + dy)`` vs features ``n (dx + dy)^2``."""
    return "feature" if (dx + dy) < n else "gram"


def linear_cka(
    x: ArrayLike,
    y: ArrayLike,
    debiased: bool = False,
    *,
    method: str = "auto",
    max_n: int | None = None,
) -> float:
    """Return linear CKA between two representations of the same samples.

    Parameters
    ----------
    x : Tensor or ndarray, shape (n, ...)
        First representation, flattened to ``(n, dx)``; computed in float64 on its device.
    y : Tensor or ndarray, shape (n, ...)
        Second representation, flattened to ``(n, dy)``.
    debiased : bool
        Use the unbiased HSIC_1 estimator (Song et al. 2012) instead of the biased HSIC.
    method : {"auto", "gram", "feature"}
        ``"gram"``: ``n x n`` linear grams (reference ``cka(gram_linear(x), gram_linear(y))``);
        ``"feature"``: ``d x d`` cross-products (reference ``feature_space_linear_cka``);
        ``"auto"``: the one with fewer operations (feature form when ``dx + dy < n``).
    max_n : int, optional
        Hard guard: raise if ``n > max_n`` (the app passes :data:`FULL_BATCH_MAX_N`).

    Returns
    -------
    float
        CKA in [0, 1] (debiased may dip slightly below 0); 0.0 with a
        :class:`ConstantFeatureWarning` if either side is constant over the samples.

    Raises
    ------
    TffdVizError
        Different ``n``, ``n < 4``, ``n > max_n``, non-finite features, unknown ``method``.
    """
    if method != "auto" and method not in LINEAR_CKA_FORMS:
        raise TffdVizError(
            f"linear_cka: unknown method {method!r}; choose from {['auto', *LINEAR_CKA_FORMS]}"
        )
    xm, ym = _paired_matrices(x, y, max_n)
    xc, yc = _centered_features(xm), _centered_features(ym)
    constant = [side for side, raw, c in (("x", xm, xc), ("y", ym, yc)) if _is_constant(raw, c)]
    if constant:
        _warn_constant("linear_cka", constant)
        return 0.0
    form = _cheaper_linear_form(xm.shape[0], xm.shape[1], ym.shape[1]) if method == "auto" else method
    sim, norm_x, norm_y = LINEAR_CKA_FORMS[form](xc, yc, debiased)
    if norm_x <= 0.0 or norm_y <= 0.0:
        _warn_constant("linear_cka", [s for s, v in (("x", norm_x), ("y", norm_y)) if v <= 0.0])
        return 0.0
    return sim / (norm_x * norm_y)


def rbf_cka(
    x: ArrayLike,
    y: ArrayLike,
    threshold: float = 1.0,
    debiased: bool = False,
    *,
    max_n: int | None = None,
) -> float:
    """Return RBF-kernel CKA between two representations of the same samples.

    Uses :func:`gram_rbf` (bandwidth ``threshold`` times the median pairwise distance,
    per side) and :func:`cka_from_grams`, in float64 with ``n x n`` memory.

    Parameters
    ----------
    x : Tensor or ndarray, shape (n, ...)
        First representation, flattened to ``(n, dx)``.
    y : Tensor or ndarray, shape (n, ...)
        Second representation, flattened to ``(n, dy)``.
    threshold : float
        Bandwidth as a fraction of the median distance.
    debiased : bool
        Use the unbiased HSIC_1 estimator.
    max_n : int, optional
        Hard guard: raise if ``n > max_n`` (the app passes :data:`FULL_BATCH_MAX_N`).

    Returns
    -------
    float
        CKA; 0.0 with a :class:`ConstantFeatureWarning` if either side is constant.

    Raises
    ------
    TffdVizError
        Different ``n``, ``n < 4``, ``n > max_n``, non-finite features, ``threshold <= 0``,
        or a zero median distance on a non-constant side.
    """
    xm, ym = _paired_matrices(x, y, max_n)
    constant = [side for side, raw in (("x", xm), ("y", ym)) if _is_constant(raw, _centered_features(raw))]
    if constant:
        _warn_constant("rbf_cka", constant)
        return 0.0
    return _cka_of_grams(gram_rbf(xm, threshold), gram_rbf(ym, threshold), debiased, "rbf_cka")


CKA_METHODS: dict[str, Callable[..., float]] = {"linear": linear_cka, "rbf": rbf_cka}
"""CKA kernels by name; each takes ``(x, y, ..., debiased=...)`` and returns a float."""


def cka(x: ArrayLike, y: ArrayLike, kind: str = "linear", debiased: bool = False, **kw: Any) -> float:
    """Return CKA of the given ``kind`` (a key of :data:`CKA_METHODS`).

    Parameters
    ----------
    x, y : Tensor or ndarray, shape (n, ...)
        Two representations of the same samples.
    kind : {"linear", "rbf"}
        Kernel.
    debiased : bool
        Use the unbiased HSIC_1 estimator.
    **kw
        Passed on (``method``/``max_n`` for linear, ``threshold``/``max_n`` for rbf).

    Returns
    -------
    float
    """
    if kind not in CKA_METHODS:
        raise TffdVizError(f"unknown CKA kind {kind!r}; choose from {sorted(CKA_METHODS)}")
    return CKA_METHODS[kind](x, y, debiased=debiased, **kw)


# ----------------------------------------------------------------------------------------------------------
# minibatch CKA
# ----------------------------------------------------------------------------------------------------------


class MinibatchCKA:
    """Linear CKA between every layer of model A and every layer of model B, over minibatches.

    For each minibatch of ``m`` samples and each layer, the linear gram ``K = X X^T`` is
    formed in float64 from the minibatch-centred features, and the unbiased estimator
    ``HSIC_1(K, L) = <U(K), U(L)> / (m (m - 3))`` (Song et al. 2012) is summed over
    minibatches for every pair (a_i, b_j) and for (a_i, a_i), (b_j, b_j). Then
    ``CKA_ij = sum HSIC_1(K_ai, L_bj) / sqrt(sum HSIC_1(K_ai, K_ai) sum HSIC_1(L_bj, L_bj))``
    (Nguyen, Raghu and Kornblith 2021). Every minibatch counts equally. Memory is
    ``O(layers * m^2)`` per update and ``O(n_a n_b)`` in between, independent of the number
    of samples. Centring does not change HSIC_1 but keeps float32 features with a large
    offset precise.

    A layer that is constant over every minibatch seen gets CKA 0.0 with every layer (and
    a :class:`ConstantFeatureWarning` naming it) instead of NaN.

    Parameters
    ----------
    n_a, n_b : int
        Number of layers (taps) of model A and model B. For one model against itself use
        ``MinibatchCKA(n, n)`` and ``update(feats, feats)``.

    Attributes
    ----------
    n_batches : int
        Minibatches accumulated since construction or :meth:`reset`.
    n_samples : int
        Samples accumulated.
    names_a, names_b : list of str or None
        Tap names, when :meth:`update` got dicts.
    """

    def __init__(self, n_a: int, n_b: int) -> None:
        for name, value in (("n_a", n_a), ("n_b", n_b)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TffdVizError(
                    f"MinibatchCKA: {name} must be a positive int (number of layers), got {value!r}"
                )
        self.n_a = n_a
        self.n_b = n_b
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated minibatch."""
        self.n_batches: int = 0
        self.n_samples: int = 0
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self._hsic_ab: torch.Tensor | None = None  # (n_a, n_b) float64
        self._hsic_aa: torch.Tensor | None = None  # (n_a,)
        self._hsic_bb: torch.Tensor | None = None  # (n_b,)
        self._varies_a: torch.Tensor | None = None  # (n_a,) bool: non-constant in some minibatch
        self._varies_b: torch.Tensor | None = None

    @property
    def device(self) -> torch.device | None:
        """Device of the accumulators (that of the first update), or None before it."""
        return None if self._hsic_ab is None else self._hsic_ab.device

    def _feature_list(
        self, feats: Sequence[ArrayLike] | Mapping[str, ArrayLike], side: str, expected: int
    ) -> tuple[list[ArrayLike], list[str] | None]:
        if isinstance(feats, Mapping):
            names: list[str] | None = [str(k) for k in feats]
            items = list(feats.values())
        elif isinstance(feats, (torch.Tensor, np.ndarray)):
            raise TffdVizError(
                f"MinibatchCKA.update: feats_{side} must be a list (or dict) of per-layer tensors, got one "
                f"tensor of shape {tuple(feats.shape)}"
            )
        else:
            names, items = None, list(feats)
        if len(items) != expected:
            raise TffdVizError(
                f"MinibatchCKA.update: feats_{side} has {len(items)} layers, expected n_{side} = {expected}"
            )
        return items, names

    def _u_centered_grams(
        self, items: list[ArrayLike], side: str, device: torch.device | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Return flattened U-centred grams ``(layers, m*m)``, a non-constant flag per layer and ``m``."""
        grams, raw_norms, centred_norms, mats = [], [], [], []
        m: int | None = None
        for i, item in enumerate(items):
            f = _as_tensor(item, f"feats_{side}[{i}]")
            xm = _as_float64_matrix(f, f"feats_{side}[{i}]", device=device, check_finite=False)
            if m is None:
                m = xm.shape[0]
            elif xm.shape[0] != m:
                raise TffdVizError(
                    f"MinibatchCKA.update: feats_{side}[{i}] has {xm.shape[0]} samples (shape "
                    f"{tuple(f.shape)}) but feats_{side}[0] has {m}"
                )
            device = xm.device
            xc = _centered_features(xm)
            mats.append((xm, tuple(f.shape)))
            raw_norms.append(torch.linalg.vector_norm(xm))
            centred_norms.append(torch.linalg.vector_norm(xc))
            grams.append(xc @ xc.T)
        assert m is not None
        if m < MIN_SAMPLES:
            raise TffdVizError(
                f"MinibatchCKA.update: minibatch size {m} is below {MIN_SAMPLES} (HSIC_1 needs m >= 4)"
            )
        stacked = torch.stack(grams)
        # One reduction checks every layer: NaN or infinity in a layer's features makes its gram non-finite.
        if not bool(torch.isfinite(stacked).all()):
            for i, (xm, shape) in enumerate(mats):
                if not bool(torch.isfinite(xm).all()):
                    raise TffdVizError(f"feats_{side}[{i}]: features of shape {shape} contain NaN or infinity")
            raise TffdVizError(f"MinibatchCKA.update: the grams of feats_{side} overflow (features too large)")
        # Constant layers (zero up to the rounding of the mean subtraction), kept as a tensor: no sync per layer.
        varies = torch.stack(centred_norms) > _CONSTANT_RTOL * torch.stack(raw_norms)
        u = _centered_gram(stacked, unbiased=True).reshape(len(grams), m * m)
        return u, varies, m

    @staticmethod
    def _check_ids(ids_a: ArrayLike | None, ids_b: ArrayLike | None, m: int) -> None:
        checked = []
        for side, ids in (("a", ids_a), ("b", ids_b)):
            if ids is None:
                continue
            t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids).detach().cpu()
            if t.dim() != 1 or t.shape[0] != m or t.is_floating_point() or t.is_complex():
                raise TffdVizError(
                    f"MinibatchCKA.update: ids_{side} must be a 1-D integer array of the {m} minibatch sample "
                    f"ids, got dtype {t.dtype} shape {tuple(t.shape)}"
                )
            checked.append(t.to(torch.int64))
        if len(checked) == 2 and not torch.equal(checked[0], checked[1]):
            bad = int(torch.nonzero(checked[0] != checked[1])[0])
            raise TffdVizError(
                f"MinibatchCKA.update: the two models saw different samples: position {bad} has id "
                f"{int(checked[0][bad])} in ids_a but {int(checked[1][bad])} in ids_b"
            )

    def update(
        self,
        feats_a: Sequence[ArrayLike] | Mapping[str, ArrayLike],
        feats_b: Sequence[ArrayLike] | Mapping[str, ArrayLike],
        ids_a: ArrayLike | None = None,
        ids_b: ArrayLike | None = None,
    ) -> None:
        """Accumulate one minibatch.

        Parameters
        ----------
        feats_a : list of Tensor or dict str -> Tensor, n_a entries, each shape (m, ...)
            Model A's layer features for the minibatch (flattened to ``(m, d)``).
        feats_b : list of Tensor or dict str -> Tensor, n_b entries, each shape (m, ...)
            Model B's features for the same ``m`` samples in the same order (may be
            ``feats_a`` itself; its grams are then reused).
        ids_a, ids_b : 1-D int Tensor or ndarray of length m, optional
            Sample ids; when both are given they must be equal.

        Raises
        ------
        TffdVizError
            Wrong number of layers, differing ``m`` within or between models, ``m < 4``,
            mismatched ids, non-finite features.
        """
        items_a, names_a = self._feature_list(feats_a, "a", self.n_a)
        items_b, names_b = self._feature_list(feats_b, "b", self.n_b)
        device = self.device
        u_a, varies_a, m = self._u_centered_grams(items_a, "a", device)
        if feats_b is feats_a:
            u_b, varies_b, m_b = u_a, varies_a, m
        else:
            u_b, varies_b, m_b = self._u_centered_grams(items_b, "b", u_a.device)
        if m_b != m:
            raise TffdVizError(
                f"MinibatchCKA.update: model A's minibatch has {m} samples but model B's has {m_b}"
            )
        self._check_ids(ids_a, ids_b, m)
        scale = 1.0 / (m * (m - 3))
        hsic_ab = (u_a @ u_b.T) * scale
        hsic_aa = (u_a * u_a).sum(dim=1) * scale
        hsic_bb = hsic_aa if u_b is u_a else (u_b * u_b).sum(dim=1) * scale
        if self._hsic_ab is None:
            self._hsic_ab, self._hsic_aa, self._hsic_bb = hsic_ab, hsic_aa, hsic_bb.clone()
            self._varies_a, self._varies_b = varies_a, varies_b.clone()
        else:
            self._hsic_ab += hsic_ab
            self._hsic_aa += hsic_aa
            self._hsic_bb += hsic_bb
            self._varies_a |= varies_a
            self._varies_b |= varies_b
        if names_a is not None:
            self.names_a = names_a
        if names_b is not None:
            self.names_b = names_b
        self.n_batches += 1
        self.n_samples += m

    def _layer_label(self, side: str, i: int) -> str:
        names = self.names_a if side == "a" else self.names_b
        return f"{side}[{i}]" + (f" ({names[i]!r})" if names is not None else "")

    def compute(self) -> torch.Tensor:
        """Return the CKA matrix.

        Returns
        -------
        Tensor, shape (n_a, n_b), float64, on the accumulators' device
            ``CKA[i, j]`` between layer i of model A and layer j of model B; rows/columns of
            constant layers are 0.0 (with a :class:`ConstantFeatureWarning`).

        Raises
        ------
        TffdVizError
            Before the first :meth:`update`.
        """
        if self._hsic_ab is None:
            raise TffdVizError("MinibatchCKA.compute: no minibatch accumulated yet; call update() first")
        assert self._hsic_aa is not None and self._hsic_bb is not None
        assert self._varies_a is not None and self._varies_b is not None
        ok_a = self._varies_a & (self._hsic_aa > 0)
        ok_b = self._varies_b & (self._hsic_bb > 0)
        if not bool(ok_a.all() and ok_b.all()):
            bad = [self._layer_label("a", i) for i in torch.nonzero(~ok_a).flatten().tolist()]
            bad += [self._layer_label("b", j) for j in torch.nonzero(~ok_b).flatten().tolist()]
            _warn_constant("MinibatchCKA.compute", bad)
        norm_a = torch.where(ok_a, self._hsic_aa, torch.ones_like(self._hsic_aa)).sqrt()
        norm_b = torch.where(ok_b, self._hsic_bb, torch.ones_like(self._hsic_bb)).sqrt()
        result = self._hsic_ab / (norm_a[:, None] * norm_b[None, :])
        return torch.where(ok_a[:, None] & ok_b[None, :], result, torch.zeros_like(result))


# ----------------------------------------------------------------------------------------------------------
# channel similarity
# ----------------------------------------------------------------------------------------------------------


def _check_feature_map(f: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(f, torch.Tensor):
        raise TapError(f"{name}: expected a torch.Tensor feature map (N, C, H, W), got {type(f).__name__}")
    if f.dim() != 4:
        raise TapError(f"{name}: expected a 4-D feature map (N, C, H, W), got shape {tuple(f.shape)}")
    if f.is_complex():
        raise TapError(f"{name}: complex feature map of shape {tuple(f.shape)} is not supported")
    if not bool(torch.isfinite(f).all()):
        raise TapError(f"{name}: feature map of shape {tuple(f.shape)} contains NaN or infinity")
    return f.detach().to(torch.promote_types(f.dtype, torch.float32))


def _channel_vectors(f: torch.Tensor) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(C, N*H*W)``: each channel flattened over samples and positions."""
    return f.transpose(0, 1).reshape(f.shape[1], -1)


def _unit_rows(v: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit norm; all-zero rows stay zero.

    A row whose norm overflows the dtype (e.g. float32 activations near 1e30) is first divided by
    its largest magnitude, so it still gets unit norm instead of being divided by infinity.
    """
    norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    if not bool(torch.isfinite(norms).all()):
        peak = v.abs().amax(dim=1, keepdim=True)
        v = v / torch.where(peak > 0, peak, torch.ones_like(peak))
        norms = torch.linalg.vector_norm(v, dim=1, keepdim=True)
    return torch.where(
        norms > 0, v / torch.where(norms > 0, norms, torch.ones_like(norms)), torch.zeros_like(v)
    )


def _checked_order(order: ArrayLike, c: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(order)
    if t.dim() != 1 or t.shape[0] != c:
        raise TffdVizError(
            f"order must be a 1-D permutation of the {c} channels of shape {shape}, got shape {tuple(t.shape)}"
        )
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TffdVizError(f"order must hold integer channel indices, got dtype {t.dtype}")
    t = t.to(torch.int64).cpu()
    if not torch.equal(torch.sort(t).values, torch.arange(c)):
        listed = t.tolist()
        shown = f"{listed[:16]}{' ...' if c > 16 else ''}"
        raise TffdVizError(
            f"order must be a permutation of 0..{c - 1} (channels of shape {shape}), got {shown}"
        )
    return t.to(device)


def channel_cosine_matrix(f: torch.Tensor, order: ArrayLike | None = None) -> torch.Tensor:
    """Return the cosine similarity between every pair of channels of a feature map.

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
        Feature map; each channel is flattened over ``(N, H, W)``.
    order : LongTensor, shape (C,), optional
        Permutation of the channels (e.g. descending saliency); row/column ``i`` of the
        result is channel ``order[i]``.

    Returns
    -------
    Tensor, shape (C, C), dtype of ``f`` promoted to at least float32
        Symmetric; diagonal 1 for non-zero channels. An all-zero channel has cosine 0 with
        every channel, itself included (never NaN).

    Raises
    ------
    TapError
        ``f`` not 4-D (or non-finite).
    TffdVizError
        ``order`` not a permutation of the ``C`` channels.
    """
    f = _check_feature_map(f, "channel_cosine_matrix")
    perm = None if order is None else _checked_order(order, f.shape[1], tuple(f.shape), f.device)
    unit = _unit_rows(_channel_vectors(f))
    sim = unit @ unit.T
    return sim if perm is None else sim[perm][:, perm]


def paired_channel_cosine(f: torch.Tensor, order: ArrayLike) -> torch.Tensor:
    """Return the cosine between each salient channel and its paired redundant channel (intra-Tf-FD).

    With ``h = C // 2``, the top ``h`` channels of ``order`` (descending saliency) are paired
    in order with the bottom ``h``: ``order[i]`` with ``order[C - h + i]`` (for even ``C`` that
    is ``order[h + i]``; for odd ``C`` the middle channel is left out).

    Parameters
    ----------
    f : Tensor, shape (N, C, H, W)
        Feature map; channels flattened over ``(N, H, W)``.
    order : LongTensor, shape (C,)
        Permutation of the channels, most salient first.

    Returns
    -------
    Tensor, shape (C // 2,)
        Cosine of each pair; 0 where either channel is all zeros.

    Raises
    ------
    TapError
        ``f`` not 4-D.
    TffdVizError
        ``order`` not a permutation of the ``C`` channels.
    """
    f = _check_feature_map(f, "paired_channel_cosine")
    c = f.shape[1]
    perm = _checked_order(order, c, tuple(f.shape), f.device)
    h = c // 2
    unit = _unit_rows(_channel_vectors(f))
    return (unit[perm[:h]] * unit[perm[c - h :]]).sum(dim=1)


def inter_layer_alignment(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    """Return the per-channel cosine between a shallow and a deep feature map (inter-Tf-FD's pairing).

    Each map larger than the common size ``(min(Hs, Hd), min(Ws, Wd))`` is adaptive-average
    pooled down to it (normally: the shallow, larger map to the deep map's size); then
    channel ``c < min(Cs, Cd)`` of one is compared with channel ``c`` of the other, each
    flattened over ``(N, H, W)``.

    Parameters
    ----------
    shallow : Tensor, shape (N, Cs, Hs, Ws)
    deep : Tensor, shape (N, Cd, Hd, Wd)

    Returns
    -------
    Tensor, shape (min(Cs, Cd),)
        Cosine per channel; 0 where either channel is all zeros.

    Raises
    ------
    TapError
        Either map not 4-D, or different batch sizes ``N``.
    """
    s = _check_feature_map(shallow, "inter_layer_alignment (shallow)")
    d = _check_feature_map(deep, "inter_layer_alignment (deep)")
    if s.shape[0] != d.shape[0]:
        raise TapError(
            f"inter_layer_alignment: shallow {tuple(s.shape)} and deep {tuple(d.shape)} have different batch sizes"
        )
    dtype = torch.promote_types(s.dtype, d.dtype)
    s, d = s.to(dtype), d.to(device=s.device, dtype=dtype)
    size = (min(s.shape[2], d.shape[2]), min(s.shape[3], d.shape[3]))
    s = s if tuple(s.shape[2:]) == size else F.adaptive_avg_pool2d(s, size)
    d = d if tuple(d.shape[2:]) == size else F.adaptive_avg_pool2d(d, size)
    k = min(s.shape[1], d.shape[1])
    return (_unit_rows(_channel_vectors(s[:, :k])) * _unit_rows(_channel_vectors(d[:, :k]))).sum(dim=1)


# ----------------------------------------------------------------------------------------------------------
# models over images: channel similarity views
# ----------------------------------------------------------------------------------------------------------


def channel_similarity_views(
    model: torch.nn.Module, images: torch.Tensor, tap: str, batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Return one layer's channel cosine matrix, Tf-FD saliency order and salient/redundant pair cosines.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode over ``images`` (see :func:`tffd_viz.features.extract_features`).
    images : Tensor, shape (N, C_in, H, W)
        Normalised images.
    tap : str
        Module name whose output ``(N, C, h, w)`` is analysed.
    batch_size : int

    Returns
    -------
    dict
        ``"order"``: LongTensor ``(C,)``, :func:`tffd_viz.losses.salient_order` (most salient first);
        ``"cosine"``: ``(C, C)`` :func:`channel_cosine_matrix` in channel-index order (pass ``order`` to
        :func:`tffd_viz.plots.cosine_matrix_figure`; ``cosine[order][:, order]`` equals
        ``channel_cosine_matrix(f, order)``); ``"paired"``: ``(C // 2,)`` :func:`paired_channel_cosine`.
        All on the CPU.

    Raises
    ------
    TapError
        Unknown tap, or a tap whose output is not a 4-D feature map.
    """
    f = extract_features(model, images, [tap], batch_size)[tap]
    if f.dim() != 4:
        raise TapError(f"tap {tap!r} gives features of shape {tuple(f.shape)}; channel similarity needs a "
                       "4-D feature map (N, C, H, W): pick a convolutional stage")
    order = salient_order(f)
    return {"order": order.cpu(), "cosine": channel_cosine_matrix(f).cpu(),
            "paired": paired_channel_cosine(f, order).cpu()}


def inter_layer_alignments(
    model: torch.nn.Module,
    images: torch.Tensor,
    taps: Sequence[str] | None = None,
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Return :func:`inter_layer_alignment` for every (shallow, deep) pair of taps, as inter-Tf-FD pairs them.

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C_in, H, W)
    taps : list of str, optional
        Stages shallow to deep (default: the model's default taps).
    batch_size : int

    Returns
    -------
    dict[str, Tensor]
        ``"shallow->deep"`` -> ``(min(Cs, Cd),)`` per-channel cosine, for every pair ``i < j`` of taps
        (the default pairs of :class:`tffd_viz.losses.TfFD`), on the CPU.

    Raises
    ------
    TapError
        Unknown taps, fewer than two taps, or a tap that is not a 4-D feature map.
    """
    feats = extract_features(model, images, taps, batch_size)
    names = list(feats)
    if len(names) < 2:
        raise TapError(f"inter-layer alignment needs at least two taps, got {names}")
    return {f"{a}->{b}": inter_layer_alignment(feats[a], feats[b]).cpu()
            for i, a in enumerate(names) for b in names[i + 1:]}


# ----------------------------------------------------------------------------------------------------------
# models over images: layer x layer CKA
# ----------------------------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each batch of images."""

CkaMatrices = dict[str, tuple[np.ndarray, list[str], list[str]]]
"""``{"AvA": (matrix, names_a, names_a), "BvB": (matrix, names_b, names_b), "AvB": (matrix, names_a, names_b)}``."""


def _cka_slices(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices of ``range(n)`` of ``batch_size`` rows; a last slice under :data:`MIN_SAMPLES` rows
    is merged into the one before (HSIC_1 needs minibatches of at least 4)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < MIN_SAMPLES:
        raise TffdVizError(f"CKA batch_size must be an int >= {MIN_SAMPLES}, got {batch_size!r}")
    slices = [slice(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    if len(slices) > 1 and slices[-1].stop - slices[-1].start < MIN_SAMPLES:
        last = slices.pop()
        slices[-1] = slice(slices[-1].start, last.stop)
    return slices


def _blocks(matrix: torch.Tensor, names_a: list[str], names_b: list[str]) -> CkaMatrices:
    """Split the ``(na + nb, na + nb)`` CKA matrix over the taps of A then B into its three blocks."""
    m = matrix.detach().cpu().numpy().astype(np.float64)
    na = len(names_a)
    return {
        "AvA": (m[:na, :na].copy(), list(names_a), list(names_a)),
        "BvB": (m[na:, na:].copy(), list(names_b), list(names_b)),
        "AvB": (m[:na, na:].copy(), list(names_a), list(names_b)),
    }


def _minibatch_cka(
    model_a: torch.nn.Module, model_b: torch.nn.Module, images: torch.Tensor, names_a: list[str],
    names_b: list[str], kind: str, debiased: bool, batch_size: int, progress: Progress | None, **_: Any,
) -> torch.Tensor:
    """Linear CKA of every pair of taps over minibatches (:class:`MinibatchCKA`, always debiased HSIC_1)."""
    if kind != "linear":
        raise TffdVizError(
            f"the minibatch CKA estimator is linear only, got kind={kind!r}; use estimator='full' for rbf"
        )
    slices = _cka_slices(images.shape[0], batch_size)
    acc = MinibatchCKA(len(names_a) + len(names_b), len(names_a) + len(names_b))
    for done, sl in enumerate(slices, start=1):
        fa = extract_features(model_a, images[sl], names_a, batch_size=sl.stop - sl.start, to_cpu=False)
        fb = extract_features(model_b, images[sl], names_b, batch_size=sl.stop - sl.start, to_cpu=False)
        feats = [*fa.values(), *fb.values()]
        acc.update(feats, feats)
        if progress is not None:
            progress(done, len(slices))
    return acc.compute()


def _centered_linear_gram(x: torch.Tensor, block: int = 1024) -> tuple[torch.Tensor, bool]:
    """Float64 gram ``Xc Xc^T`` of the mean-centred rows of ``x`` ``(n, d)``, built in row blocks (only
    ``block x d`` float64 copies at a time), and whether ``x`` is constant over the rows."""
    n = x.shape[0]
    mean = x.mean(dim=0, dtype=torch.float64)
    gram = torch.empty((n, n), dtype=torch.float64, device=x.device)
    raw_sq = 0.0
    starts = list(range(0, n, block))
    for i in starts:
        xi = x[i:i + block].to(torch.float64)
        raw_sq += float((xi * xi).sum())
        xi = xi - mean
        for j in starts:
            if j < i:
                continue
            xj = xi if j == i else x[j:j + block].to(torch.float64) - mean
            gram[i:i + block, j:j + block] = xi @ xj.T
            if j != i:
                gram[j:j + block, i:i + block] = gram[i:i + block, j:j + block].T
    constant = math.sqrt(max(float(torch.diagonal(gram).sum()), 0.0)) <= _CONSTANT_RTOL * math.sqrt(raw_sq)
    return gram, constant


def _rbf_of_linear_gram(gram: torch.Tensor, threshold: float, what: str) -> torch.Tensor:
    """RBF gram (bandwidth ``threshold`` x median squared distance, as :func:`gram_rbf`) from a linear gram."""
    sq_norms = torch.diagonal(gram)
    sq_distances = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min_(0.0)
    sq_median = _median(sq_distances)
    if float(sq_median) <= 0.0:
        raise TffdVizError(
            f"RBF CKA: the median squared distance between the {gram.shape[0]} samples of {what} is 0 (mostly "
            "duplicate samples), so the RBF bandwidth is undefined"
        )
    return torch.exp(-sq_distances / (2.0 * threshold**2 * sq_median))


def _layer_grams(
    model: torch.nn.Module, images: torch.Tensor, names: list[str], batch_size: int, tick: Callable[[], None],
    side: str,
) -> tuple[list[torch.Tensor], list[bool]]:
    """Flattened features of every tap (extracted batch by batch, one tick each) -> their linear grams."""
    n = images.shape[0]
    feats: dict[str, torch.Tensor] = {}
    for sl in _cka_slices(n, batch_size):
        batch = extract_features(model, images[sl], names, batch_size=sl.stop - sl.start, pool="flatten",
                                 to_cpu=False)
        for name, f in batch.items():
            if name not in feats:
                feats[name] = torch.empty((n, f.shape[1]), dtype=f.dtype, device=f.device)
            feats[name][sl] = f
        tick()
    grams, constant = [], []
    for name in names:
        x = feats.pop(name)
        if not bool(torch.isfinite(x).all()):
            raise TffdVizError(f"model {side} tap {name!r}: features of shape {tuple(x.shape)} contain NaN or "
                               "infinity")
        gram, const = _centered_linear_gram(x)
        grams.append(gram)
        constant.append(const)
    return grams, constant


def _full_batch_cka(
    model_a: torch.nn.Module, model_b: torch.nn.Module, images: torch.Tensor, names_a: list[str],
    names_b: list[str], kind: str, debiased: bool, batch_size: int, progress: Progress | None,
    threshold: float = 1.0, max_n: int | None = FULL_BATCH_MAX_N,
) -> torch.Tensor:
    """Full-batch CKA (linear or RBF, biased or debiased) of every pair of taps from ``n x n`` grams."""
    if kind not in CKA_METHODS:
        raise TffdVizError(f"unknown CKA kind {kind!r}; choose from {sorted(CKA_METHODS)}")
    if not threshold > 0 or not math.isfinite(threshold):
        raise TffdVizError(f"RBF CKA: threshold must be a positive finite number, got {threshold!r}")
    n = images.shape[0]
    if max_n is not None and n > max_n:
        raise TffdVizError(
            f"full-batch CKA on n = {n} images exceeds max_n = {max_n} (it holds n x n matrices per layer); "
            "use fewer images or the minibatch estimator"
        )
    total, done = 2 * len(_cka_slices(n, batch_size)), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    grams_a, const_a = _layer_grams(model_a, images, names_a, batch_size, tick, "A")
    grams_b, const_b = _layer_grams(model_b, images, names_b, batch_size, tick, "B")
    device = grams_a[0].device
    grams = grams_a + [g.to(device) for g in grams_b]
    constant = const_a + const_b
    labels = [f"A {t!r}" for t in names_a] + [f"B {t!r}" for t in names_b]
    centred, norms = [], []
    for gram, const, label in zip(grams, constant, labels):
        if const:
            centred.append(None)
            norms.append(0.0)
            continue
        k = gram if kind == "linear" else _rbf_of_linear_gram(gram, threshold, label)
        c = _centered_gram(k, debiased)
        centred.append(c)
        norms.append(float(torch.linalg.vector_norm(c)))
    zero = [lab for lab, c, g, nrm in zip(labels, centred, grams, norms) if c is None or nrm <= _zero_gram_atol(g)]
    if zero:
        _warn_constant("layer_cka_matrices", zero)
    size = len(grams)
    out = torch.zeros((size, size), dtype=torch.float64)
    for i in range(size):
        for j in range(i, size):
            if labels[i] in zero or labels[j] in zero:
                continue
            value = float((centred[i] * centred[j]).sum()) / (norms[i] * norms[j])
            out[i, j] = out[j, i] = value
    return out


CKA_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {
    "minibatch": _minibatch_cka,
    "full": _full_batch_cka,
}
"""How :func:`layer_cka_matrices` estimates CKA. ``"minibatch"``: linear CKA from the unbiased HSIC_1 summed
over minibatches of ``batch_size`` images (:class:`MinibatchCKA`; always debiased, memory flat in the number
of images); ``"full"``: the full-batch linear or RBF forms, biased or debiased, over all images at once
(``n x n`` float64 grams per layer, ``n <= max_n``)."""


def layer_cka_matrices(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    images: torch.Tensor,
    taps_a: Sequence[str] | None = None,
    taps_b: Sequence[str] | None = None,
    kind: str = "linear",
    debiased: bool = False,
    batch_size: int = 256,
    progress: Progress | None = None,
    estimator: str = "minibatch",
    threshold: float = 1.0,
    max_n: int | None = FULL_BATCH_MAX_N,
) -> CkaMatrices:
    """Return the layer x layer CKA matrices of two models over the same images: A vs A, B vs B, A vs B.

    Parameters
    ----------
    model_a, model_b : nn.Module
        Run in eval mode (see :func:`tffd_viz.features.extract_features`); may be the same model.
    images : Tensor, shape (N, C_in, H, W)
        Normalised images, kept where they are; one batch at a time goes to each model's device.
    taps_a, taps_b : list of str, optional
        Layers of each model (default: its default taps).
    kind : {"linear", "rbf"}
        Kernel (a key of :data:`CKA_METHODS`); ``"rbf"`` needs ``estimator="full"``.
    debiased : bool
        Unbiased HSIC_1 for the full-batch forms. The minibatch estimator is always debiased (HSIC_1
        per minibatch) and ignores this flag.
    batch_size : int, default 256
        Images per forward pass, and the minibatch size ``m >= 4`` of the minibatch estimator (a last
        minibatch under 4 images is merged into the previous one).
    progress : callable (done, total) -> None, optional
        Called after each batch: ``total`` minibatches (both models per step) for ``"minibatch"``,
        the extraction batches of A then B for ``"full"``.
    estimator : {"minibatch", "full"}
        A key of :data:`CKA_ESTIMATORS`.
    threshold : float, default 1.0
        RBF bandwidth as a fraction of the median distance (as :func:`rbf_cka`).
    max_n : int or None, default FULL_BATCH_MAX_N
        The full-batch forms raise when ``N > max_n``.

    Returns
    -------
    dict
        ``{"AvA": (matrix (na, na), names_a, names_a), "BvB": (matrix (nb, nb), names_b, names_b),
        "AvB": (matrix (na, nb), names_a, names_b)}``, float64 numpy matrices; ``matrix[i, j]`` is the CKA
        between row layer ``i`` and column layer ``j`` (ready for :func:`tffd_viz.plots.cka_grid_figure`).
        Layers constant over the images give rows/columns of 0.0 with a :class:`ConstantFeatureWarning`.
        Full-batch entries equal :func:`linear_cka` / :func:`rbf_cka` of the flattened features.

    Raises
    ------
    TffdVizError
        Unknown ``estimator`` or ``kind``, ``"rbf"`` with the minibatch estimator, ``N < 4``,
        ``N > max_n`` (full batch), ``batch_size < 4``, non-finite features.
    TapError
        Unknown taps.
    DataError
        ``images`` not a float ``(N, C, H, W)`` tensor.
    """
    if estimator not in CKA_ESTIMATORS:
        raise TffdVizError(f"unknown CKA estimator {estimator!r}; choose from {sorted(CKA_ESTIMATORS)}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise TffdVizError(f"images must be a tensor of shape (N, C, H, W), got {got}")
    if images.shape[0] < MIN_SAMPLES:
        raise TffdVizError(f"CKA needs at least {MIN_SAMPLES} images, got images of shape {tuple(images.shape)}")
    names_a, names_b = resolve_taps(model_a, taps_a), resolve_taps(model_b, taps_b)
    matrix = CKA_ESTIMATORS[estimator](
        model_a, model_b, images, names_a, names_b, kind=kind, debiased=debiased, batch_size=batch_size,
        progress=progress, threshold=threshold, max_n=max_n,
    )
    return _blocks(matrix, names_a, names_b)
