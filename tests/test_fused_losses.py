"""Tests of tffd_viz.fused_losses: each fused kernel against plain autograd of its formula,
in both memory layouts.

(The public terms built on them, intra_fd / inter_fd / tffd_terms, are checked against the restated reference
formulas in test_losses.py.)
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tffd_viz.fused_losses import (
    Pyramid,
    at_least_float32,
    first_channels,
    inter_mse,
    map_sums_and_norms,
    paired_mse,
    pooled_to,
    saliency_from,
)

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def maps(*shape: int, seed: int, layout: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Post-ReLU float64 maps of ``shape`` stored in ``layout``."""
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=g, dtype=torch.float64)).contiguous(memory_format=layout)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sums_norms_and_saliency_equal_the_normalize_formula(layout) -> None:
    f = maps(3, 5, 4, 6, seed=0, layout=layout)
    f[:, 2] = 0.0  # an all-zero map: norm clamped to 1e-12, saliency 0
    sums, norms = map_sums_and_norms(f)
    torch.testing.assert_close(sums, f.sum(dim=(2, 3)), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(norms, f.flatten(2).norm(dim=2).clamp_min(1e-12), rtol=1e-12, atol=1e-15)
    saliency = saliency_from(sums, norms, f)
    torch.testing.assert_close(
        saliency, F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3)), rtol=1e-12, atol=1e-15
    )
    assert saliency.shape == (5,) and float(saliency[2]) == 0.0


def test_half_precision_maps_are_summed_in_float32_without_gradient() -> None:
    f = maps(2, 3, 4, 4, seed=1).bfloat16().requires_grad_(True)
    sums, norms = map_sums_and_norms(f)
    assert sums.dtype == norms.dtype == torch.float32 and not sums.requires_grad
    torch.testing.assert_close(sums, f.detach().float().sum(dim=(2, 3)))
    assert (
        at_least_float32(f).dtype == torch.float32
        and at_least_float32(f.detach().double()).dtype == torch.float64
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("c", [2, 5, 16])
def test_paired_mse_value_and_gradient_equal_autograd_of_the_gather(layout, c: int) -> None:
    base = maps(3, c, 5, 4, seed=c, layout=layout)
    order = torch.randperm(c, generator=torch.Generator().manual_seed(c))
    k = c // 2
    f, g = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    fused = paired_mse(f, order, k)
    plain = F.mse_loss(g[:, order[:k]], g[:, order[c - k :]])  # salient i against redundant i
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-15)
    (grad,) = torch.autograd.grad(fused, f)
    torch.testing.assert_close(grad, torch.autograd.grad(plain, g)[0], rtol=1e-10, atol=1e-15)
    assert grad.is_contiguous(memory_format=layout)  # the gradient keeps the map's layout
    assert torch.autograd.gradcheck(lambda t: paired_mse(t, order, k), (base.clone().requires_grad_(True),))


@pytest.mark.parametrize(("size", "kind"), [((8, 6), "itself"), ((4, 3), "avg_pool2d"), ((3, 4), "adaptive")])
def test_pooled_to_equals_adaptive_average_pooling(size, kind: str) -> None:
    f = maps(2, 3, 8, 6, seed=2)
    out = pooled_to(f, size)
    torch.testing.assert_close(out, F.adaptive_avg_pool2d(f, size), rtol=1e-12, atol=1e-15)
    assert (out is f) == (kind == "itself")


def test_pyramid_pools_each_size_once_from_the_smallest_exact_level() -> None:
    f = maps(2, 3, 16, 16, seed=3)
    pyramid = Pyramid(f)
    assert pyramid.pooled((16, 16)) is f
    eight = pyramid.pooled((8, 8))
    assert pyramid.pooled((8, 8)) is eight  # made once
    four = pyramid.pooled((4, 4))  # a block mean of the 8x8 block means
    torch.testing.assert_close(four, F.adaptive_avg_pool2d(f, (4, 4)), rtol=1e-12, atol=1e-15)
    assert set(pyramid.levels) == {(16, 16), (8, 8), (4, 4)}
    torch.testing.assert_close(
        pyramid.pooled((5, 5)), F.adaptive_avg_pool2d(f, (5, 5)), rtol=1e-12, atol=1e-15
    )


def test_first_channels_slices_only_when_it_must() -> None:
    f = maps(2, 4, 3, 3, seed=4)
    assert first_channels(f, 4) is f
    assert torch.equal(first_channels(f, 2), f[:, :2])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("shallow_shape", "deep_shape"), [((2, 4, 8, 8), (2, 6, 4, 4)), ((2, 6, 6, 9), (2, 4, 4, 3))]
)
def test_inter_mse_equals_mse_of_pooled_maps_and_keeps_the_shallow_layout(
    layout, shallow_shape, deep_shape
) -> None:
    base = maps(*shallow_shape, seed=5, layout=layout)
    deep = maps(*deep_shape, seed=6, layout=layout)
    s, t = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    fused = inter_mse(Pyramid(s), Pyramid(deep))
    size = (min(shallow_shape[2], deep_shape[2]), min(shallow_shape[3], deep_shape[3]))
    m = min(shallow_shape[1], deep_shape[1])
    plain = F.mse_loss(F.adaptive_avg_pool2d(t, size)[:, :m], F.adaptive_avg_pool2d(deep, size)[:, :m])
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-15)
    (grad,) = torch.autograd.grad(fused, s)
    torch.testing.assert_close(grad, torch.autograd.grad(plain, t)[0], rtol=1e-10, atol=1e-15)
    if layout == torch.channels_last:
        assert grad.is_contiguous(memory_format=torch.channels_last)
