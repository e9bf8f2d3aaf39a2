"""Tests of tffd_viz.plots.maps: feature maps, intra-Tf-FD pairs, attribution maps and galleries."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plots_helpers import seeded_rng

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import salient_order
from tffd_viz.similarity import paired_channel_cosine


@pytest.mark.parametrize("c", [6, 5])
def test_feature_maps_tiles_follow_saliency_order(c):
    torch.manual_seed(1)
    f = torch.rand(1, c, 6, 6)
    order = salient_order(f)
    fig = P.feature_maps_figure(f[0], order, cols=4)
    o = order.numpy()
    k = c // 2
    expected = list(o[:k]) + ([o[k]] if c % 2 else []) + list(o[c - k :])
    assert len(fig.data) == c
    np.testing.assert_allclose(fig.data[0].z, f[0, o[0]].numpy(), rtol=1e-6)  # the most salient channel
    for tr, ch in zip(fig.data, expected):
        np.testing.assert_allclose(tr.z, f[0, ch].numpy(), rtol=1e-6)
    titles = [a.text for a in fig.layout.annotations][: len(expected)]
    assert titles[0] == f"ch {o[0]} · #0" and titles[-1] == f"ch {o[-1]} · #{c - 1}"
    colors = [a.font.color for a in fig.layout.annotations][: len(expected)]
    assert colors[:k] == [P.SALIENT_COLOR] * k and colors[-k:] == [P.REDUNDANT_COLOR] * k
    assert all(tr.coloraxis == "coloraxis" for tr in fig.data)
    assert fig.layout.coloraxis.cmin == pytest.approx(float(f.min()))
    assert fig.layout.coloraxis.cmax == pytest.approx(float(f.max()))


def test_feature_maps_limits_tiles_and_downsamples():
    rng = seeded_rng()
    maps = rng.random((10, 8, 8))
    order = np.arange(10)[::-1].copy()
    fig = P.feature_maps_figure(maps, order, max_channels=4, max_side=4)
    assert len(fig.data) == 4
    shown = [9, 8, 4, 3]  # the 2 most salient, then the first 2 of the redundant half (their partners)
    for tr, ch in zip(fig.data, shown):
        block_mean = maps[ch].reshape(4, 2, 4, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(tr.z, block_mean)
    with pytest.raises(TffdVizError, match="permutation"):
        P.feature_maps_figure(maps, np.zeros(10, dtype=int))
    with pytest.raises(TffdVizError, match="length C = 10"):
        P.feature_maps_figure(maps, np.arange(9))


@pytest.mark.parametrize("c", [8, 7])
def test_paired_maps_pair_as_intra_tffd(c):
    torch.manual_seed(2)
    f = torch.rand(1, c, 5, 5)
    order = salient_order(f)
    fig = P.paired_maps_figure(f[0], order)
    k = c // 2
    assert len(fig.data) == 2 * k
    top, bottom = fig.data[:k], fig.data[k:]
    # the cosine of each drawn (top, bottom) pair equals the library's paired cosine
    cos = [
        float(np.dot(np.ravel(t.z), np.ravel(b.z)) / (np.linalg.norm(t.z) * np.linalg.norm(b.z)))
        for t, b in zip(top, bottom)
    ]
    np.testing.assert_allclose(cos, paired_channel_cosine(f, order).numpy(), rtol=1e-5)
    np.testing.assert_allclose(bottom[0].z, f[0, order[c - k]].numpy(), rtol=1e-6)
    assert len(P.paired_maps_figure(f[0], order, max_pairs=2).data) == 4


def _domain(fig: go.Figure, trace: go.Heatmap, kind: str) -> tuple[float, float]:
    name = getattr(trace, f"{kind}axis") or kind
    return tuple(fig.layout[f"{kind}axis{name[1:]}"].domain)


def test_paired_maps_wrap_pairs_into_blocks_partner_below():
    rng = seeded_rng()
    maps = rng.random((20, 4, 4))
    order = np.argsort(-maps.mean(axis=(1, 2)), kind="stable")
    fig = P.paired_maps_figure(maps, order, max_pairs=10, cols=4)
    n, k = 10, 10
    top, bottom = fig.data[:n], fig.data[n:]
    for i, (t, b) in enumerate(zip(top, bottom)):
        np.testing.assert_allclose(b.z, maps[order[20 - k + i]])
        assert _domain(fig, t, "x") == _domain(fig, b, "x")  # the partner sits in the same column ...
        assert _domain(fig, t, "y")[0] > _domain(fig, b, "y")[1]  # ... right below
        assert _domain(fig, t, "x") == _domain(fig, top[i % 4], "x")  # 4 pairs a row, wrapped
    assert len({_domain(fig, t, "y") for t in top}) == 3  # 10 pairs, 4 a row: 3 blocks
    colors = {a.text: a.font.color for a in fig.layout.annotations}
    assert colors[f"ch {order[0]} · #0"] == P.SALIENT_COLOR
    assert colors[f"ch {order[10]} · #10"] == P.REDUNDANT_COLOR
    assert fig.layout.title.text.endswith("(10 of 10 pairs)")
    # the figure grows with the blocks instead of shrinking the tiles
    one_block = P.paired_maps_figure(maps, order, max_pairs=4, cols=4)
    assert fig.layout.height - 115 == pytest.approx(3 * (one_block.layout.height - 115))


def test_feature_maps_colour_key_is_a_caption_not_the_title():
    rng = seeded_rng()
    maps = rng.random((6, 4, 4))
    fig = P.feature_maps_figure(maps, np.arange(6), title="A: layer3, image 0")
    assert fig.layout.title.text == "A: layer3, image 0 (6 channels)"
    captions = [a.text for a in fig.layout.annotations if a.name == "caption"]
    assert captions and "green" in captions[0] and "grey" in captions[0]


def test_attribution_rows_columns_and_values():
    rng = seeded_rng()
    images = rng.random((3, 3, 8, 8))
    maps = {"A": rng.random((3, 8, 8)), "B": rng.random((3, 8, 8)) - 0.5}
    fig = P.attribution_figure(images, maps, titles=["t0", "t1", "t2"], max_images=2)
    # per row: input image, then (gray background, attribution) per model
    assert len(fig.data) == 2 * (1 + 2 * 2)
    img = fig.data[0]
    assert isinstance(img, go.Image)
    np.testing.assert_array_equal(img.z, np.round(images[0].transpose(1, 2, 0) * 255).astype(np.uint8))
    attr_a, attr_b = fig.data[2], fig.data[4]
    np.testing.assert_allclose(attr_a.z, maps["A"][0])
    np.testing.assert_allclose(attr_b.z, maps["B"][0])
    gray = fig.data[1].z
    np.testing.assert_allclose(gray, (img.z.astype(float) @ [0.299, 0.587, 0.114]) / 255)
    assert fig.layout.coloraxis.cmid == 0  # diverging: B has negative attributions
    assert "t1" in [a.text for a in fig.layout.annotations]
    gray_input = P.attribution_figure(images[:, 0], {"A": maps["A"]})
    assert gray_input.data[0].z.shape == (8, 8, 3)
    with pytest.raises(TffdVizError, match=r"must have shape \(n, H, W\)"):
        P.attribution_figure(images, {"A": rng.random((3, 4, 4))})


def test_attribution_heads_columns_once_with_short_keys():
    rng = seeded_rng()
    images = rng.random((3, 1, 8, 8))
    labels = ["A · digits_resnet8_baseline_s0", "B · digits_resnet8_tffd_s0"]
    maps = {label: rng.random((3, 8, 8)) for label in labels}
    fig = P.attribution_figure(images, maps, titles=["r0", "r1", "r2"])
    heads = [a for a in fig.layout.annotations if a.name == "column"]
    assert [a.text for a in heads] == ["<b>input</b>", "<b>A</b>", "<b>B</b>"]
    for j, a in enumerate(heads):  # centred over columns 1, 2, 3 of the top row
        dom = fig.layout[f"xaxis{'' if j == 0 else j + 1}"].domain
        assert a.x == pytest.approx((dom[0] + dom[1]) / 2)
    titles = [a.text for a in fig.layout.annotations if a.name is None]
    assert titles == ["r0", "r1", "r2"]  # one title per row, over its input; none per model tile
    assert [a.text for a in fig.layout.annotations if a.name == "models"] == [
        "A: digits_resnet8_baseline_s0 · B: digits_resnet8_tffd_s0"
    ]
    assert fig.data[2].name == f"{labels[0]} attribution"  # traces keep the full label
    short = P.attribution_figure(images, {"A": maps[labels[0]]})
    assert not [a for a in short.layout.annotations if a.name == "models"]  # nothing to spell out


def test_disagreement_gallery_tiles_titles_and_empty():
    rng = seeded_rng()
    images = rng.random((5, 1, 8, 8))
    titles = [f"true {i} · A {i} · B {i + 1}" for i in range(5)]
    fig = P.disagreement_gallery_figure(images, titles, cols=2, max_images=4)
    assert len(fig.data) == 4
    np.testing.assert_array_equal(fig.data[3].z[..., 0], np.round(images[3, 0] * 255).astype(np.uint8))
    assert [a.text for a in fig.layout.annotations][:4] == titles[:4]
    assert "first 4 of 5" in fig.layout.title.text
    empty = P.disagreement_gallery_figure(np.zeros((0, 1, 8, 8)), [])
    assert any(a.name == "empty" for a in empty.layout.annotations)


def test_disagreement_gallery_tile_size_does_not_depend_on_the_count():
    rng = seeded_rng()
    one = P.disagreement_gallery_figure(rng.random((1, 1, 8, 8)), ["true 3 · A 3 · B 5"], cols=6)
    nine = P.disagreement_gallery_figure(rng.random((9, 1, 8, 8)), [f"t{i}" for i in range(9)], cols=6)
    width = [d[1] - d[0] for d in (one.layout.xaxis.domain, nine.layout.xaxis.domain)]
    assert width[0] == pytest.approx(width[1]) and width[0] < 1 / 6  # one image keeps a one-in-six tile
    plot_h = [f.layout.height - f.layout.margin.t - f.layout.margin.b for f in (one, nine)]
    assert plot_h[1] == pytest.approx(2 * plot_h[0], rel=0.05)  # two rows: twice the height
    assert one.layout.annotations[0].font.size >= 11
