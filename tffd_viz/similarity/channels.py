"""Channel similarity (the Tf-FD "feature similarity" page): cosine between the channels of feature maps.

:func:`channel_cosine_matrix` (every pair of channels of one map), :func:`paired_channel_cosine`
(intra-Tf-FD's pairing of salient with redundant channels) and :func:`inter_layer_alignment` (inter-Tf-FD's
pairing of a shallow with a deep map). Pure math on ``(N, C, H, W)`` tensors; running a model over images is
:mod:`tffd_viz.similarity.layers`. A channel that is all zeros has cosine 0 with every channel, itself
included.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.types import ArrayLike

__all__ = ["channel_cosine_matrix", "inter_layer_alignment", "paired_channel_cosine"]


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
            f"order must be a 1-D permutation of the {c} channels of shape {shape}, got shape "
            f"{tuple(t.shape)}"
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
            f"inter_layer_alignment: shallow {tuple(s.shape)} and deep {tuple(d.shape)} have different batch "
            "sizes"
        )
    dtype = torch.promote_types(s.dtype, d.dtype)
    s, d = s.to(dtype), d.to(device=s.device, dtype=dtype)
    size = (min(s.shape[2], d.shape[2]), min(s.shape[3], d.shape[3]))
    s = s if tuple(s.shape[2:]) == size else F.adaptive_avg_pool2d(s, size)
    d = d if tuple(d.shape[2:]) == size else F.adaptive_avg_pool2d(d, size)
    k = min(s.shape[1], d.shape[1])
    return (_unit_rows(_channel_vectors(s[:, :k])) * _unit_rows(_channel_vectors(d[:, :k]))).sum(dim=1)
