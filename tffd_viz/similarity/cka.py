"""CKA as pure functions on features and grams (Kornblith et al. 2019, "Similarity of Neural Network
Representations Revisited").

:func:`linear_cka` and :func:`rbf_cka` compare two sets of features of the same ``n`` samples, ``x`` of shape
``(n, ...)`` and ``y`` of shape ``(n, ...)`` (flattened to ``(n, dx)`` and ``(n, dy)``), in float64. They
restate the reference colab's ``gram_linear``, ``gram_rbf``, ``center_gram``, ``cka`` (here
:func:`cka_from_grams`) and ``feature_space_linear_cka``; ``debiased=True`` uses the unbiased HSIC estimator
of Song et al. (2012) (HSIC_1). These full-batch forms hold ``n x n`` matrices (or ``d x d`` for the linear
feature-space form), so callers cap ``n`` at :data:`FULL_BATCH_MAX_N`.

Degenerate inputs never give a silent NaN: CKA with a side of zero variance (constant features over the
samples, or a centred gram that is numerically zero) is **defined as 0.0** and a
:class:`ConstantFeatureWarning` names the constant side; fewer than :data:`MIN_SAMPLES` samples and non-finite
features raise :class:`~tffd_viz.errors.TffdVizError`.

The private helpers here (input conversion, centring, the RBF kernel of a gram, the constant-side warning) are
shared with :mod:`tffd_viz.similarity.minibatch` and :mod:`tffd_viz.similarity.layers`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.types import ArrayLike

__all__ = [
    "CKA_METHODS",
    "FULL_BATCH_MAX_N",
    "LINEAR_CKA_FORMS",
    "MIN_SAMPLES",
    "ConstantFeatureWarning",
    "center_gram",
    "cka",
    "cka_from_grams",
    "gram_linear",
    "gram_rbf",
    "linear_cka",
    "rbf_cka",
]

FULL_BATCH_MAX_N: int = 5000
"""Largest sample count the app feeds to the full-batch CKA forms (one ``n x n`` float64 matrix is 200 MB
at 5000; the RBF form holds a few at once)."""

MIN_SAMPLES: int = 4
"""Smallest sample (or minibatch) size: HSIC_1 divides by ``n (n - 3)`` and ``(n - 1)(n - 2)``."""

# Relative size under which centred features count as constant: the rounding
# error of subtracting a float64 mean is a few ulps of the feature magnitude.
_CONSTANT_RTOL: float = 1e-13


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
            f"CKA needs at least {MIN_SAMPLES} samples, got n = {n} (x shape {tuple(x.shape)}, y shape "
            f"{tuple(y.shape)})"
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
        Symmetric, entries in [0, 1], ones on the diagonal.

    Raises
    ------
    TffdVizError
        If ``threshold <= 0`` or the median squared distance is 0 (more than half of all
        pairs are duplicates, the constant case included), where the bandwidth is undefined.
    """
    _check_threshold(threshold, "gram_rbf")
    x = _as_tensor(x, "x")
    xm = _as_float64_matrix(x, "x")
    return _rbf_of_gram(xm @ xm.T, threshold, "gram_rbf", f"shape {tuple(x.shape)}")


def _check_threshold(threshold: float, func: str) -> None:
    """Raise unless the RBF bandwidth ``threshold`` is a positive finite number."""
    if not threshold > 0 or not math.isfinite(threshold):
        raise TffdVizError(f"{func}: threshold must be a positive finite number, got {threshold!r}")


def _rbf_of_gram(gram: torch.Tensor, threshold: float, func: str, what: str) -> torch.Tensor:
    """Return the RBF gram of :func:`gram_rbf` from the float64 linear gram ``(n, n)`` of the same features.

    The squared distances ``d2_ij = K_ii + K_jj - 2 K_ij`` are the same for the raw and the mean-centred
    features' gram. ``func`` and ``what`` (the samples, e.g. ``"shape (n, d)"``) name the input in the error
    raised when the median squared distance is 0.
    """
    sq_norms = torch.diagonal(gram)
    sq_distances = (sq_norms[:, None] + sq_norms[None, :] - 2.0 * gram).clamp_min_(0.0)
    sq_median = _median(sq_distances)
    if float(sq_median) <= 0.0:
        raise TffdVizError(
            f"{func}: the median squared distance between the {gram.shape[0]} samples of {what} is 0 (mostly "
            "duplicate samples), so the RBF bandwidth is undefined"
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
        A new tensor, symmetric; rows and columns sum to 0 (biased), or zero diagonal (unbiased).

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
    """Return the linear CKA form with fewer multiply-adds: grams ``n^2 (dx + dy)`` vs features
    ``n (dx + dy)^2``."""
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
