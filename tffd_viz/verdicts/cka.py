"""CKA of A with B layer by layer, read against the seed-to-seed CKA.

Part of :mod:`tffd_viz.verdicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from tffd_viz.similarity import (
    layer_cka_matrices,
)
from tffd_viz.verdicts.noise import Noise


def cka_diagonal(
    model_a: nn.Module,
    model_b: nn.Module,
    images: torch.Tensor,
    taps_a: Sequence[str] | None = None,
    taps_b: Sequence[str] | None = None,
    **cka: Any,
) -> dict[str, float]:
    """CKA of each layer of A with the same-position layer of B (the diagonal of ``layer_cka_matrices``).

    ``cka`` is passed on to :func:`tffd_viz.similarity.layer_cka_matrices` (kind, estimator, batch_size, ...).

    Returns
    -------
    dict
        Layer name (``"a / b"`` where the names differ) -> CKA.
    """
    matrix, ta, tb = layer_cka_matrices(model_a, model_b, images, taps_a, taps_b, **cka)["AvB"]
    return {(a if a == b else f"{a} / {b}"): float(matrix[i, i]) for i, (a, b) in enumerate(zip(ta, tb))}


def seed_cka(
    models: Sequence[nn.Module], images: torch.Tensor, taps: Sequence[str] | None = None, **cka: Any
) -> dict[str, list[float]]:
    """Seed-to-seed CKA: :func:`cka_diagonal` between every two of ``models`` (the seeds of one
    configuration).

    Returns
    -------
    dict
        Layer -> one CKA per pair ``i < j`` (empty lists with fewer than two models).
    """
    out: dict[str, list[float]] = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            for layer, value in cka_diagonal(a, b, images, taps, taps, **cka).items():
                out.setdefault(layer, []).append(value)
    return out


def cka_rows(cka_ab: Mapping[str, float], seed_values: Mapping[str, Sequence[float]]) -> list[dict[str, Any]]:
    """What-changed rows for the A-vs-B CKA of each layer, read as a dissimilarity ``1 - CKA``.

    The noise is the largest seed-to-seed dissimilarity of the layer, ``1 - min(seed CKA)``: two seeds of one
    configuration differ that much without any change of method. B's layer departs from A's beyond seed noise
    only when ``1 - CKA(A, B)`` exceeds it.

    Parameters
    ----------
    cka_ab : dict
        Layer -> CKA(A, B).
    seed_values : dict
        Layer -> seed-to-seed CKAs (both configurations' pairs together); a layer without any has no
        reference.
    """
    rows = []
    for layer, value in cka_ab.items():
        seeds = [float(v) for v in seed_values.get(layer, ())]
        d = 1.0 - float(value)
        if seeds:
            size = 1.0 - min(seeds)
            noise = Noise(
                size,
                "seeds",
                f"1 − min seed-to-seed CKA over {len(seeds)} pairs ({min(seeds):.3f}–{max(seeds):.3f})",
            )
            verdict = (
                f"B's layer departs from A's more than two seeds do (1 − CKA {d:.3g} > {size:.3g})"
                if d > size
                else f"within seeds noise: two seeds differ as much (CKA {value:.3f}; seed-to-seed "
                f"{min(seeds):.3f}–{max(seeds):.3f})"
            )
        else:
            noise = Noise(None, "none", "no second seed shipped")
            verdict = "no seed reference: cannot tell a change of method from a change of seed"
        rows.append(
            {
                "quantity": "1 − linear CKA(A, B), same layer",
                "item": layer,
                "A": None,
                "B": None,
                "B − A": d,
                "noise ±": noise.size,
                "noise source": noise.source,
                "verdict": verdict,
            }
        )
    return rows
