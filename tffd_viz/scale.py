"""Sizes and costs at ImageNet resolution: the reduced forms the app shows when maps or channel counts are
large.

At 224x224 a ResNet-18 stage map flattens to ``64 x 56 x 56 = 200,704`` values per image and a ResNet-50 stage
has up to 2048 channels. The app never forms a ``D x D`` matrix over flattened maps (CKA works on ``n x n``
Gram matrices of minibatches, :func:`cka_plan`), and a channel x channel matrix over more than
:data:`MAX_MATRIX_SIDE` channels is shown block-averaged in saliency order (:func:`ordered_block_mean`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tffd_viz.errors import TffdVizError

__all__ = ["CKA_LARGE_MINIBATCH", "LARGE_INPUT", "MAX_MATRIX_SIDE", "cka_plan", "ordered_block_mean"]

#: Largest channel x channel matrix drawn cell by cell (512 x 512 = 262,144 cells).
MAX_MATRIX_SIDE = 512
#: Inputs with a side above this are "large" (the torchvision architectures at 224).
LARGE_INPUT = 32
#: CKA minibatch (images per forward pass and per HSIC_1 term) for large inputs.
CKA_LARGE_MINIBATCH = 32


def ordered_block_mean(matrix: Any, order: Any, max_side: int = MAX_MATRIX_SIDE) -> tuple[np.ndarray, int]:
    """Return ``matrix`` in saliency ``order``, averaged over blocks of ``b`` consecutive channels.

    Parameters
    ----------
    matrix : array (C, C)
        In channel-index order.
    order : int array (C,)
        Channel indices, most salient first.
    max_side : int
        Largest side of the result.

    Returns
    -------
    blocks : ndarray (ceil(C / b), ceil(C / b))
        ``blocks[i, j]`` = mean of ``matrix[order][:, order]`` over rows ``i*b .. i*b+b-1`` and columns
        ``j*b .. j*b+b-1`` (the last block may be smaller).
    b : int
        ``ceil(C / max_side)`` channels per block (1: the ordered matrix itself).
    """
    z = np.asarray(matrix, dtype=np.float64)
    o = np.asarray(order, dtype=np.int64)
    c = z.shape[0]
    if z.shape != (c, c) or o.shape != (c,) or sorted(o.tolist()) != list(range(c)):
        raise TffdVizError(
            f"ordered_block_mean needs a square (C, C) matrix and a permutation of range(C), got "
            f"matrix {z.shape} and order of shape {o.shape}"
        )
    if max_side < 1:
        raise TffdVizError(f"max_side must be >= 1, got {max_side}")
    z = z[o][:, o]
    b = math.ceil(c / max_side)
    if b == 1:
        return z, 1
    starts = np.arange(0, c, b)
    sums = np.add.reduceat(np.add.reduceat(z, starts, axis=0), starts, axis=1)
    sizes = np.minimum(b, c - starts).astype(np.float64)
    return sums / np.outer(sizes, sizes), b


def cka_plan(image_size: int | None, flat_dims: Mapping[str, int], n_images: int) -> dict[str, Any]:
    """How the CKA page computes at this input size, and the sentence that says so.

    Parameters
    ----------
    image_size : int or None
        The sample batch's side (None: 32).
    flat_dims : mapping tap -> int
        ``C * H * W`` of each tap's map.
    n_images : int

    Returns
    -------
    dict
        ``large`` (bool), ``n`` (default number of images: 512 at 32 pixels, ``n_images`` for large inputs),
        ``minibatch`` (default minibatch: 256, or :data:`CKA_LARGE_MINIBATCH`), ``note``
        (str, empty at 32 pixels).
    """
    side = int(image_size or 32)
    if side <= LARGE_INPUT:
        return {"large": False, "n": 512, "minibatch": 256, "note": ""}
    widest = max(flat_dims.items(), key=lambda kv: kv[1], default=("", 0))
    gram = 8 * CKA_LARGE_MINIBATCH * widest[1] / 2**20
    note = (
        f"At {side}x{side} pixels the maps are large (widest: {widest[0]}, {widest[1]:,} values per image "
        "when flattened), so CKA uses the linear kernel on the flattened maps through n x n Gram matrices "
        f"only, minibatch by minibatch (default {CKA_LARGE_MINIBATCH} images, about {gram:.0f} MB of float64 "
        f"features per layer at a time); no {widest[1]:,} x {widest[1]:,} matrix is ever formed. "
        f"It starts from the sidebar's {n_images} images."
    )
    return {"large": True, "n": int(n_images), "minibatch": CKA_LARGE_MINIBATCH, "note": note}
