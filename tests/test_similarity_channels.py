"""Tests for tffd_viz.similarity.channels: channel cosine matrices, salient/redundant pairs,
inter-layer alignment."""

from __future__ import annotations

import pytest
import torch

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.similarity.channels import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine

# ------------------------------------------------------------------------------------------------------------
# channel similarity
# ------------------------------------------------------------------------------------------------------------


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    nu, nv = float(u.norm()), float(v.norm())
    return 0.0 if nu == 0 or nv == 0 else float(u @ v) / (nu * nv)


def channel_vector(f: torch.Tensor, c: int) -> torch.Tensor:
    return torch.cat([f[i, c].reshape(-1) for i in range(f.shape[0])])


def feature_map(shape: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape[0], 1, shape[2], shape[3], generator=g, dtype=torch.float64)
    return base + torch.randn(*shape, generator=g, dtype=torch.float64)  # channels correlated through base


def test_channel_cosine_matrix_against_loop() -> None:
    f = feature_map((3, 5, 4, 6), seed=0)
    f[:, 2] = 0.0  # a dead channel
    got = channel_cosine_matrix(f)
    expected = [[cosine(channel_vector(f, i), channel_vector(f, j)) for j in range(5)] for i in range(5)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        torch.diagonal(got)[[0, 1, 3, 4]], torch.ones(4, dtype=got.dtype), rtol=0, atol=1e-12
    )
    assert torch.equal(got[2], torch.zeros(5, dtype=got.dtype)) and torch.equal(
        got[:, 2], torch.zeros(5, dtype=got.dtype)
    )
    assert channel_cosine_matrix(f.float()).dtype == torch.float32


def test_channel_cosine_matrix_order_permutes() -> None:
    f = feature_map((2, 6, 3, 3), seed=1)
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    plain = channel_cosine_matrix(f)
    ordered = channel_cosine_matrix(f, order)
    torch.testing.assert_close(ordered, plain[order][:, order], rtol=0, atol=0)
    torch.testing.assert_close(ordered, channel_cosine_matrix(f[:, order]), rtol=0, atol=1e-12)
    assert not torch.allclose(ordered, plain)
    with pytest.raises(TffdVizError, match=r"permutation of the 6 channels .* got shape \(5,\)"):
        channel_cosine_matrix(f, order[:5])
    with pytest.raises(TffdVizError, match=r"permutation of 0\.\.5"):
        channel_cosine_matrix(f, torch.tensor([0, 0, 1, 2, 3, 4]))
    with pytest.raises(TapError, match=r"4-D feature map \(N, C, H, W\), got shape \(2, 6, 9\)"):
        channel_cosine_matrix(f.reshape(2, 6, 9))


@pytest.mark.parametrize("c", [6, 7])
def test_paired_channel_cosine(c: int) -> None:
    f = feature_map((3, c, 2, 5), seed=c)
    order = torch.randperm(c, generator=torch.Generator().manual_seed(c))
    got = paired_channel_cosine(f, order)
    h = c // 2
    assert got.shape == (h,)
    # the top floor(C/2) salient channels paired in order with the bottom floor(C/2)
    # (middle one left out if odd)
    expected = [
        cosine(channel_vector(f, int(order[i])), channel_vector(f, int(order[c - h + i]))) for i in range(h)
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-12)
    with pytest.raises(TffdVizError, match="permutation"):
        paired_channel_cosine(f, order[:-1])
    with pytest.raises(TapError, match="got shape"):
        paired_channel_cosine(f[0], order)


def adaptive_avg_pool(f: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling written out: bin i covers [floor(i*H/out), ceil((i+1)*H/out))."""
    n, c, h, w = f.shape
    out = torch.empty(n, c, out_h, out_w, dtype=f.dtype)
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


@pytest.mark.parametrize(
    ("shallow_shape", "deep_shape"),
    [((2, 5, 8, 6), (2, 3, 4, 3)), ((2, 4, 7, 5), (2, 6, 3, 2)), ((3, 4, 4, 4), (3, 4, 4, 4))],
)
def test_inter_layer_alignment_against_restatement(shallow_shape: tuple, deep_shape: tuple) -> None:
    shallow, deep = feature_map(shallow_shape, seed=1), feature_map(deep_shape, seed=2)
    got = inter_layer_alignment(shallow, deep)
    k = min(shallow_shape[1], deep_shape[1])
    pooled = adaptive_avg_pool(shallow, deep_shape[2], deep_shape[3])
    expected = [cosine(channel_vector(pooled, c), channel_vector(deep, c)) for c in range(k)]
    assert got.shape == (k,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-12)
    # whichever map is larger gets pooled, so swapping the arguments changes nothing
    torch.testing.assert_close(inter_layer_alignment(deep, shallow), got, rtol=0, atol=1e-12)


def test_inter_layer_alignment_errors_and_zero_channels() -> None:
    shallow, deep = feature_map((2, 3, 4, 4), seed=3), feature_map((2, 3, 2, 2), seed=4)
    deep[:, 1] = 0.0
    got = inter_layer_alignment(shallow, deep)
    assert torch.isfinite(got).all() and got[1].item() == 0.0 and got[0].item() != 0.0
    with pytest.raises(TapError, match=r"\(2, 3, 4, 4\) and deep \(3, 3, 2, 2\)"):
        inter_layer_alignment(shallow, feature_map((3, 3, 2, 2), seed=5))
    with pytest.raises(
        TapError, match=r"\(deep\): expected a 4-D feature map \(N, C, H, W\), got shape \(2, 3, 2\)"
    ):
        inter_layer_alignment(shallow, deep[:, :, 0])
