"""2-D embeddings of tap features (PCA, t-SNE) and linear probes of how semantic a tap is.

* :func:`pooled_embedding` turns stage features ``(N, C, H, W)`` into one vector per sample by
  global average pooling (``(N, D)`` input is passed through).
* :func:`pca_embedding` and :func:`tsne_embedding` (scikit-learn) map the vectors to 2 (or k)
  coordinates for a scatter plot; :data:`EMBEDDINGS` / :func:`embedding` choose one by name.
* :func:`linear_probe_accuracy` fits a logistic regression on standardised pooled features of a
  held-out split; :func:`probe_table` does it for every tap, a direct view of whether inter-layer
  Tf-FD (shallow stages mimicking deep ones) makes the shallow stages more linearly separable by
  class.

* :func:`layer_embedding` and :func:`layer_probe_table` run a model over images first (globally
  average-pooled taps, :func:`tffd_viz.features.extract_features`), for the app.

All inputs may be torch tensors or numpy arrays; results are numpy float64.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.types import ArrayLike

__all__ = [
    "EMBEDDINGS",
    "LABELLED_EMBEDDINGS",
    "MIN_TSNE_SAMPLES",
    "TSNE_PCA_DIMS",
    "embedding",
    "layer_embedding",
    "layer_probe_table",
    "linear_probe_accuracy",
    "pca_embedding",
    "pooled_embedding",
    "probe_table",
    "tsne_embedding",
]

MIN_TSNE_SAMPLES: int = 5
"""Fewest samples :func:`tsne_embedding` accepts."""

TSNE_PCA_DIMS: int = 50
"""Features wider than this are reduced by PCA to this many dimensions before t-SNE."""


def _as_numpy(x: ArrayLike, what: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        arr = x.detach().cpu().double().numpy()
    elif isinstance(x, np.ndarray):
        arr = x.astype(np.float64, copy=False)
    else:
        raise TffdVizError(f"{what} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if not np.isfinite(arr).all():
        raise TffdVizError(f"{what} of shape {arr.shape} contains non-finite values")
    return arr


def pooled_embedding(features: ArrayLike) -> np.ndarray:
    """One vector per sample: global average pooling of ``(N, C, H, W)``; ``(N, D)`` passes through.

    Parameters
    ----------
    features : Tensor or ndarray, shape (N, C, H, W) or (N, D)
        Any ``(N, C, *spatial)`` input is averaged over its trailing dims.

    Returns
    -------
    ndarray, shape (N, C) or (N, D), float64
    """
    arr = _as_numpy(features, "features")
    if arr.ndim < 2:
        raise TffdVizError(f"features must have shape (N, C, H, W) or (N, D), got {arr.shape}")
    if arr.ndim == 2:
        return arr
    return arr.reshape(arr.shape[0], arr.shape[1], -1).mean(axis=2)


def _matrix(x: ArrayLike) -> np.ndarray:
    arr = pooled_embedding(x)
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise TffdVizError(
            f"need at least 2 samples of at least 1 dimension, got features of shape {arr.shape}"
        )
    return arr


def pca_embedding(x: ArrayLike, n_components: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """PCA coordinates of the (pooled) features.

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, D) or (N, C, H, W)
        Spatial inputs are globally average pooled first (:func:`pooled_embedding`).
    n_components : int, default 2
        ``1 <= k <= min(N, D)``.
    seed : int, default 0
        ``random_state`` of scikit-learn's PCA (used only by randomised solvers; the full SVD is used).

    Returns
    -------
    coords : ndarray, shape (N, k)
        Projections of the centred data on the top ``k`` principal axes.
    explained_variance_ratio : ndarray, shape (k,)
        Fraction of the total variance along each axis (sums to <= 1).
    """
    arr = _matrix(x)
    k = int(n_components)
    if not 1 <= k <= min(arr.shape):
        raise TffdVizError(
            f"n_components must be in [1, min(N, D)] = [1, {min(arr.shape)}] for features of "
            f"shape {arr.shape}, got {n_components}"
        )
    pca = PCA(n_components=k, svd_solver="full", random_state=seed)
    coords = pca.fit_transform(arr)
    ratio = np.nan_to_num(pca.explained_variance_ratio_, nan=0.0)
    return coords, ratio


def tsne_embedding(
    x: ArrayLike, perplexity: float = 30.0, seed: int = 0, n_components: int = 2
) -> np.ndarray:
    """t-SNE coordinates of the (pooled) features, deterministic for a given seed.

    Features wider than :data:`TSNE_PCA_DIMS` are first reduced by PCA to
    ``min(50, N, D)`` dimensions. The perplexity is capped at ``(N - 1) / 3`` (it must be below N;
    the cap keeps ~3 perplexities of neighbours available). PCA initialisation, automatic
    learning rate.

    Parameters
    ----------
    x : Tensor or ndarray, shape (N, D) or (N, C, H, W)
    perplexity : float, default 30
    seed : int, default 0
    n_components : int, default 2

    Returns
    -------
    ndarray, shape (N, n_components)

    Raises
    ------
    TffdVizError
        Fewer than :data:`MIN_TSNE_SAMPLES` samples, or a non-positive perplexity.
    """
    arr = pooled_embedding(x)
    n = arr.shape[0]
    if n < MIN_TSNE_SAMPLES:
        raise TffdVizError(
            f"t-SNE needs at least {MIN_TSNE_SAMPLES} samples, got features of shape {arr.shape}"
        )
    if perplexity <= 0:
        raise TffdVizError(f"perplexity must be > 0, got {perplexity}")
    if arr.shape[1] > TSNE_PCA_DIMS:
        arr = PCA(n_components=min(TSNE_PCA_DIMS, n), svd_solver="full", random_state=seed).fit_transform(arr)
    perp = float(min(perplexity, (n - 1) / 3.0))
    tsne = TSNE(
        n_components=int(n_components), perplexity=perp, init="pca", learning_rate="auto", random_state=seed
    )
    return tsne.fit_transform(arr).astype(np.float64)


def _pca_coords(x: ArrayLike, n_components: int = 2, seed: int = 0) -> np.ndarray:
    return pca_embedding(x, n_components=n_components, seed=seed)[0]


EMBEDDINGS: dict[str, Callable[..., np.ndarray]] = {
    "pca": _pca_coords,
    "tsne": tsne_embedding,
}
"""Embedding methods by name: ``fn(x, **kw) -> coords (N, k)``."""


def embedding(x: ArrayLike, method: str = "pca", **kw: Any) -> np.ndarray:
    """Coordinates ``(N, k)`` of ``x`` by a method of :data:`EMBEDDINGS` (keyword args passed on)."""
    if method not in EMBEDDINGS:
        raise TffdVizError(f"unknown embedding method {method!r}; choose one of {sorted(EMBEDDINGS)}")
    return EMBEDDINGS[method](x, **kw)


# --------------------------------------------------------------------------------------------------
# linear probes
# --------------------------------------------------------------------------------------------------


def _labels(labels: ArrayLike, n: int) -> np.ndarray:
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"labels must have shape ({n},) to match the features, got {y.shape}")
    return y


def _split(x: np.ndarray, y: np.ndarray, test_size: float, seed: int) -> tuple[list[np.ndarray], bool]:
    """Stratified split when every class can be represented on both sides, else a plain one."""
    try:
        return train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y), True
    except ValueError:
        return train_test_split(x, y, test_size=test_size, random_state=seed), False


def linear_probe_accuracy(
    features: ArrayLike,
    labels: ArrayLike,
    test_size: float = 0.3,
    seed: int = 0,
    C: float = 1.0,
    max_iter: int = 1000,
) -> dict[str, Any]:
    """Accuracy of a logistic-regression probe on standardised pooled features.

    Parameters
    ----------
    features : Tensor or ndarray, shape (N, C, H, W) or (N, D)
        Pooled by :func:`pooled_embedding`.
    labels : Tensor or ndarray, shape (N,)
    test_size : float, default 0.3
        Held-out fraction; the split is stratified by label, or plain when a class is too small
        for that (``"stratified"`` in the result says which).
    seed : int, default 0
        Seed of the split.
    C : float, default 1.0
        Inverse L2 regularisation strength of ``LogisticRegression``.
    max_iter : int, default 1000

    Returns
    -------
    dict
        ``train_acc``, ``test_acc`` (%), ``n_train``, ``n_test``, ``dim`` (feature width),
        ``chance`` (% of the test set in its most frequent class), ``stratified`` (bool),
        ``converged`` (bool: no ConvergenceWarning).

    Raises
    ------
    TffdVizError
        Fewer than 4 samples, a single class in the data or in the training split, or a
        ``test_size`` outside (0, 1).
    """
    x = _matrix(features)
    y = _labels(labels, x.shape[0])
    if x.shape[0] < 4:
        raise TffdVizError(f"a linear probe needs at least 4 samples, got features of shape {x.shape}")
    if not 0.0 < test_size < 1.0:
        raise TffdVizError(f"test_size must be in (0, 1), got {test_size}")
    if np.unique(y).size < 2:
        raise TffdVizError(f"a linear probe needs at least 2 classes, got only {np.unique(y).tolist()}")
    (x_tr, x_te, y_tr, y_te), stratified = _split(x, y, test_size, seed)
    if np.unique(y_tr).size < 2:
        raise TffdVizError(
            f"the training split of {len(y_tr)} samples holds a single class; use more samples"
        )
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    for w in caught:
        if not issubclass(w.category, ConvergenceWarning):
            warnings.warn(w.message, w.category, stacklevel=2)
    _, counts = np.unique(y_te, return_counts=True)
    return {
        "train_acc": 100.0 * float(clf.score(x_tr, y_tr)),
        "test_acc": 100.0 * float(clf.score(x_te, y_te)),
        "n_train": len(y_tr),
        "n_test": len(y_te),
        "dim": int(x.shape[1]),
        "chance": 100.0 * float(counts.max()) / float(len(y_te)),
        "stratified": bool(stratified),
        "converged": bool(converged),
    }


def probe_table(
    features_by_tap: Mapping[str, ArrayLike], labels: ArrayLike, **kw: Any
) -> list[dict[str, Any]]:
    """:func:`linear_probe_accuracy` for every tap, in the mapping's order.

    Parameters
    ----------
    features_by_tap : mapping of tap name -> Tensor/ndarray (N, C, H, W) or (N, D)
    labels : Tensor or ndarray, shape (N,)
    **kw
        Passed to :func:`linear_probe_accuracy` (same split for every tap with the same seed).

    Returns
    -------
    list of dict
        ``{"tap": name, **linear_probe_accuracy(...)}`` per tap.
    """
    if not features_by_tap:
        raise TffdVizError("features_by_tap is empty: give at least one tap name -> features")
    return [{"tap": str(tap), **linear_probe_accuracy(f, labels, **kw)} for tap, f in features_by_tap.items()]


# --------------------------------------------------------------------------------------------------
# models over images
# --------------------------------------------------------------------------------------------------


def _pca_with_axes(x: ArrayLike, seed: int = 0) -> tuple[np.ndarray, tuple[str, str]]:
    coords, ratio = pca_embedding(x, n_components=2, seed=seed)
    return coords, (
        f"PC 1 ({100 * ratio[0]:.1f} % of variance)",
        f"PC 2 ({100 * ratio[1]:.1f} % of variance)",
    )


def _tsne_with_axes(
    x: ArrayLike, seed: int = 0, perplexity: float = 30.0
) -> tuple[np.ndarray, tuple[str, str]]:
    return tsne_embedding(x, perplexity=perplexity, seed=seed), ("t-SNE 1", "t-SNE 2")


LABELLED_EMBEDDINGS: dict[str, Callable[..., tuple[np.ndarray, tuple[str, str]]]] = {
    "pca": _pca_with_axes,
    "tsne": _tsne_with_axes,
}
"""2-D embeddings with axis titles: ``fn(x, seed=0, **kw) -> (coords (N, 2), (x_title, y_title))``; PCA
axes name their share of the variance, t-SNE takes ``perplexity=``."""


def layer_embedding(
    model: torch.nn.Module,
    images: torch.Tensor,
    layer: str,
    method: str = "pca",
    max_samples: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    **kw: Any,
) -> tuple[np.ndarray, tuple[str, str]]:
    """2-D embedding of one layer's globally average-pooled features (one point per image).

    Parameters
    ----------
    model : nn.Module
        Run in eval mode over the images.
    images : Tensor, shape (N, C_in, H, W)
    layer : str
        Module name (a tap).
    method : str
        A key of :data:`LABELLED_EMBEDDINGS` (``"pca"`` or ``"tsne"``).
    max_samples : int, optional
        Embed only the first ``max_samples`` images (t-SNE is slow on many points).
    batch_size : int
    seed : int
    **kw
        Passed to the method (``perplexity=`` for t-SNE).

    Returns
    -------
    coords : ndarray, shape (min(N, max_samples), 2)
        Row ``i`` is image ``i``.
    axis_names : (str, str)
    """
    if method not in LABELLED_EMBEDDINGS:
        raise TffdVizError(
            f"unknown embedding method {method!r}; choose one of {sorted(LABELLED_EMBEDDINGS)}"
        )
    if max_samples is not None:
        if int(max_samples) < 2:
            raise TffdVizError(f"max_samples must be at least 2, got {max_samples}")
        images = images[: int(max_samples)]
    feats = extract_features(model, images, [layer], batch_size, pool="avg")[layer]
    return LABELLED_EMBEDDINGS[method](feats, seed=seed, **kw)


def layer_probe_table(
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: ArrayLike,
    taps: list[str] | tuple[str, ...] | None = None,
    batch_size: int = 256,
    **kw: Any,
) -> list[dict[str, Any]]:
    """:func:`probe_table` of a model's globally average-pooled taps over ``images``.

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C_in, H, W)
    labels : Tensor or ndarray, shape (N,)
    taps : list of str, optional
        Default: the model's default taps.
    batch_size : int
    **kw
        Passed to :func:`linear_probe_accuracy` (``test_size``, ``seed``, ``C``, ``max_iter``).

    Returns
    -------
    list of dict
        One row per tap, as :func:`probe_table`.
    """
    feats = extract_features(model, images, taps, batch_size, pool="avg")
    return probe_table(feats, labels, **kw)
