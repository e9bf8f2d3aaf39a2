"""Models over images: layer x layer CKA of two models, and channel similarity views of one model.

The only part of :mod:`tffd_viz.similarity` that runs models. :func:`layer_cka_matrices` runs two models over
a set of images and returns the layer x layer CKA matrices A vs A, B vs B and A vs B, streaming
(:class:`~tffd_viz.similarity.minibatch.MinibatchCKA`) or full-batch (:data:`CKA_ESTIMATORS`).
:func:`channel_similarity_views` and :func:`inter_layer_alignments` run a model over images and apply the
channel measures of :mod:`tffd_viz.similarity.channels`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import batch_slices, extract_features
from tffd_viz.losses import salient_order
from tffd_viz.models import resolve_taps
from tffd_viz.similarity.channels import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine
from tffd_viz.similarity.cka import (
    _CONSTANT_RTOL,
    CKA_METHODS,
    FULL_BATCH_MAX_N,
    MIN_SAMPLES,
    _centered_gram,
    _check_threshold,
    _rbf_of_gram,
    _warn_constant,
    _zero_gram_atol,
)
from tffd_viz.similarity.minibatch import MinibatchCKA

__all__ = [
    "CKA_ESTIMATORS",
    "channel_similarity_views",
    "inter_layer_alignments",
    "layer_cka_matrices",
]


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
        raise TapError(
            f"tap {tap!r} gives features of shape {tuple(f.shape)}; channel similarity needs a "
            "4-D feature map (N, C, H, W): pick a convolutional stage"
        )
    order = salient_order(f)
    return {
        "order": order.cpu(),
        "cosine": channel_cosine_matrix(f).cpu(),
        "paired": paired_channel_cosine(f, order).cpu(),
    }


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
    return {
        f"{a}->{b}": inter_layer_alignment(feats[a], feats[b]).cpu()
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }


# ----------------------------------------------------------------------------------------------------------
# models over images: layer x layer CKA
# ----------------------------------------------------------------------------------------------------------

Progress = Callable[[int, int], None]
"""``progress(done, total)``: called after each batch of images."""

CkaMatrices = dict[str, tuple[np.ndarray, list[str], list[str]]]
"""``{"AvA": (matrix, names_a, names_a), "BvB": (matrix, names_b, names_b),
"AvB": (matrix, names_a, names_b)}``."""


def _cka_slices(n: int, batch_size: int) -> list[slice]:
    """:func:`tffd_viz.features.batch_slices` of ``range(n)``, with a last slice under :data:`MIN_SAMPLES`
    rows merged into the one before (HSIC_1 needs minibatches of at least 4)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < MIN_SAMPLES:
        raise TffdVizError(f"CKA batch_size must be an int >= {MIN_SAMPLES}, got {batch_size!r}")
    slices = batch_slices(n, batch_size)
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
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    images: torch.Tensor,
    names_a: list[str],
    names_b: list[str],
    kind: str,
    batch_size: int,
    progress: Progress | None,
    **_: Any,
) -> torch.Tensor:
    """Linear CKA of every pair of taps over minibatches (:class:`MinibatchCKA`, always debiased HSIC_1).

    ``**_`` takes the options of the full-batch estimator (``debiased``, ``threshold``, ``max_n``), which do
    not apply here.
    """
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
        xi = x[i : i + block].to(torch.float64)
        raw_sq += float((xi * xi).sum())
        xi = xi - mean
        for j in starts:
            if j < i:
                continue
            xj = xi if j == i else x[j : j + block].to(torch.float64) - mean
            gram[i : i + block, j : j + block] = xi @ xj.T
            if j != i:
                gram[j : j + block, i : i + block] = gram[i : i + block, j : j + block].T
    constant = math.sqrt(max(float(torch.diagonal(gram).sum()), 0.0)) <= _CONSTANT_RTOL * math.sqrt(raw_sq)
    return gram, constant


def _layer_grams(
    model: torch.nn.Module,
    images: torch.Tensor,
    names: list[str],
    batch_size: int,
    tick: Callable[[], None],
    side: str,
) -> tuple[list[torch.Tensor], list[bool]]:
    """Flattened features of every tap (extracted batch by batch, one tick each) -> their linear grams."""
    n = images.shape[0]
    feats: dict[str, torch.Tensor] = {}
    for sl in _cka_slices(n, batch_size):
        batch = extract_features(
            model, images[sl], names, batch_size=sl.stop - sl.start, pool="flatten", to_cpu=False
        )
        for name, f in batch.items():
            if name not in feats:
                feats[name] = torch.empty((n, f.shape[1]), dtype=f.dtype, device=f.device)
            feats[name][sl] = f
        tick()
    grams, constant = [], []
    for name in names:
        x = feats.pop(name)
        if not bool(torch.isfinite(x).all()):
            raise TffdVizError(
                f"model {side} tap {name!r}: features of shape {tuple(x.shape)} contain NaN or infinity"
            )
        gram, const = _centered_linear_gram(x)
        grams.append(gram)
        constant.append(const)
    return grams, constant


def _full_batch_cka(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    images: torch.Tensor,
    names_a: list[str],
    names_b: list[str],
    kind: str,
    debiased: bool,
    batch_size: int,
    progress: Progress | None,
    threshold: float = 1.0,
    max_n: int | None = FULL_BATCH_MAX_N,
) -> torch.Tensor:
    """Full-batch CKA (linear or RBF, biased or debiased) of every pair of taps from ``n x n`` grams."""
    if kind not in CKA_METHODS:
        raise TffdVizError(f"unknown CKA kind {kind!r}; choose from {sorted(CKA_METHODS)}")
    _check_threshold(threshold, "RBF CKA")
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
    # centred[i] is None for a layer that is constant or whose centred gram is rounding noise (CKA 0.0)
    centred: list[torch.Tensor | None] = []
    norms: list[float] = []
    for gram, const, label in zip(grams, constant, labels):
        k = None if const else gram if kind == "linear" else _rbf_of_gram(gram, threshold, "RBF CKA", label)
        c = None if k is None else _centered_gram(k, debiased)
        norm = 0.0 if c is None else float(torch.linalg.vector_norm(c))
        centred.append(None if c is None or norm <= _zero_gram_atol(gram) else c)
        norms.append(norm)
    zero = [label for label, c in zip(labels, centred) if c is None]
    if zero:
        _warn_constant("layer_cka_matrices", zero)
    size = len(grams)
    out = torch.zeros((size, size), dtype=torch.float64)
    for i in range(size):
        for j in range(i, size):
            ci, cj = centred[i], centred[j]
            if ci is not None and cj is not None:
                out[i, j] = out[j, i] = float((ci * cj).sum()) / (norms[i] * norms[j])
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
        raise TffdVizError(
            f"CKA needs at least {MIN_SAMPLES} images, got images of shape {tuple(images.shape)}"
        )
    names_a, names_b = resolve_taps(model_a, taps_a), resolve_taps(model_b, taps_b)
    matrix = CKA_ESTIMATORS[estimator](
        model_a,
        model_b,
        images,
        names_a,
        names_b,
        kind=kind,
        debiased=debiased,
        batch_size=batch_size,
        progress=progress,
        threshold=threshold,
        max_n=max_n,
    )
    return _blocks(matrix, names_a, names_b)
