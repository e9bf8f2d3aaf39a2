"""Plain re-statements (float64 loops, nothing from tffd_viz.importance) shared by the importance tests,
and the feature batches they score."""

from __future__ import annotations

import math

import torch


def _feat(n: int = 6, c: int = 8, h: int = 4, w: int = 5, seed: int = 0, relu: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, c, h, w, generator=gen) + torch.linspace(-0.5, 0.5, c).view(1, c, 1, 1)
    return f.relu() if relu else f


def ref_scores(f: torch.Tensor, kind: str) -> list[float]:
    f = f.double()
    n, c, h, w = f.shape
    out = []
    for ch in range(c):
        total = 0.0
        for i in range(n):
            vals = [float(v) for v in f[i, ch].reshape(-1)]
            if kind == "tffd":
                norm = max(math.sqrt(sum(v * v for v in vals)), 1e-12)
                total += sum(v / norm for v in vals) / (h * w)
            elif kind == "l1":
                total += sum(abs(v) for v in vals)
            elif kind == "l2":
                total += math.sqrt(sum(v * v for v in vals))
            elif kind == "mean":
                total += sum(vals) / (h * w)
        out.append(total / n)
    return out


def ref_ranks(scores: list[float]) -> list[int]:
    order = sorted(range(len(scores)), key=lambda ch: -scores[ch])  # Python's sort is stable
    ranks = [0] * len(scores)
    for pos, ch in enumerate(order):
        ranks[ch] = pos
    return ranks
