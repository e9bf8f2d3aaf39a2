"""Tests of tffd_viz.plots.ranking: saliency bars, rank agreement, rank bands and split stability."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plots_helpers import nonfinite_texts

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import channel_saliency, salient_order


@pytest.mark.parametrize("c", [8, 7])
def test_saliency_bars_sorted_values_order_and_boundary(c):
    torch.manual_seed(0)
    f_a, f_b = torch.rand(4, c, 5, 5), torch.rand(4, c, 5, 5) ** 2
    s_a, s_b = channel_saliency(f_a), channel_saliency(f_b)
    fig = P.saliency_bars_figure({"A": s_a, "B": s_b.numpy()}, tap="layer2")
    assert "layer2" in fig.layout.title.text
    bars = [d for d in fig.data if isinstance(d, go.Bar)]
    assert [b.name for b in bars] == ["A", "B"]
    for bar, s, f in zip(bars, (s_a, s_b), (f_a, f_b)):
        np.testing.assert_array_equal(bar.x, np.arange(c))
        np.testing.assert_allclose(bar.y, np.sort(s.numpy())[::-1], rtol=1e-6)
        # hover channel indices are the library's own salient order (same stable tie-break)
        np.testing.assert_array_equal(bar.customdata[:, 0].astype(int), salient_order(f).numpy())
    assert bars[0].marker.color[0] == P.COLOR_A and bars[1].marker.color[0] == P.COLOR_B
    boundaries = [s for s in fig.layout.shapes if s.name == "boundary"]
    assert len(boundaries) == 2
    # the line sits just before rank floor(C/2): ranks < C // 2 are salient (as in tffd_viz.dynamics)
    assert all(s.x0 == s.x1 == c // 2 - 0.5 for s in boundaries)
    salient = [s for s in fig.layout.shapes if s.name == "salient"]
    assert all((s.x0, s.x1) == (-0.5, c // 2 - 0.5) for s in salient)
    redundant = [s for s in fig.layout.shapes if s.name == "redundant"]
    assert all((s.x0, s.x1) == (c - c // 2 - 0.5, c - 0.5) for s in redundant)
    left_out = [a for a in fig.layout.annotations if a.name == "left_out"]
    if c % 2:
        assert len(left_out) == 2
        assert bars[0].marker.color[c // 2] == P.LEFT_OUT_COLOR
        middle = int(bars[0].customdata[c // 2, 0])
        assert f"ch {middle} left out" in left_out[0].text
    else:
        assert not left_out and P.LEFT_OUT_COLOR not in bars[0].marker.color


def test_saliency_bars_unmarked_and_overlay():
    s = {"A": np.array([0.1, 0.3, 0.2, 0.4]), "B": np.array([0.4, 0.3, 0.2, 0.1])}
    assert not P.saliency_bars_figure(s, split_marked=False).layout.shapes
    fig = P.saliency_bars_figure(s, overlay=True)
    assert fig.layout.barmode == "group"
    assert {d.xaxis or "x" for d in fig.data} == {"x"}
    assert len([sh for sh in fig.layout.shapes if sh.name == "boundary"]) == 1
    np.testing.assert_array_equal(fig.data[0].y, [0.4, 0.3, 0.2, 0.1])
    np.testing.assert_array_equal(fig.data[0].customdata[:, 0].astype(int), [3, 1, 2, 0])
    with pytest.raises(TffdVizError, match=r"saliency_bars_figure.*empty"):
        P.saliency_bars_figure({})
    with pytest.raises(TffdVizError, match="1-D"):
        P.saliency_bars_figure({"A": np.ones((2, 2))})


def test_rank_agreement_heatmap_values_and_names():
    m = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    fig = P.rank_agreement_figure(torch.tensor(m), ["tffd", "l1", "taylor"], title="Spearman")
    np.testing.assert_allclose(fig.data[0].z, m)
    assert list(fig.data[0].x) == ["tffd", "l1", "taylor"]
    assert fig.data[0].text[0][1] == "0.50"
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    with pytest.raises(TffdVizError, match="2 names but the matrix has 3"):
        P.rank_agreement_figure(m, ["a", "b"])


def test_rank_band_sorted_points_and_interval_segments():
    rank = np.array([3.0, 1.0, 4.0, 2.0])
    lower = np.array([2.0, 1.0, 2.5, 1.0])
    upper = np.array([4.0, 2.0, 4.0, 3.5])
    fig = P.rank_band_figure(rank, lower, upper, tap="layer1", label="B")
    seg, pts = fig.data
    order = [1, 3, 0, 2]
    np.testing.assert_array_equal(pts.y, rank[order])
    np.testing.assert_array_equal(pts.customdata[:, 0], order)
    np.testing.assert_array_equal(pts.x, [0, 1, 2, 3])
    expected = []
    for ch in order:
        expected += [lower[ch], upper[ch], None]
    assert list(seg.y) == expected
    assert pts.marker.color == P.COLOR_B and "B" in pts.name
    assert seg.name == "B · 90% bootstrap interval"
    with pytest.raises(TffdVizError, match="same shape"):
        P.rank_band_figure(rank, lower[:3], upper)


def test_rank_band_short_title_and_full_label_in_a_legend_below():
    label = "A · digits_resnet8_baseline_s0"
    fig = P.rank_band_figure(
        np.arange(6.0), np.arange(6.0) - 1, np.arange(6.0) + 1, tap="layer3", label=label
    )
    assert fig.layout.title.text == "Bootstrap rank bands — layer3 (A)"
    assert [t.name for t in fig.data] == ["A · 90% bootstrap interval", "A · rank"]
    assert fig.data[1].hovertemplate.endswith(f"<extra>{label}</extra>")  # the full name stays in the hover
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "bottom"
    assert legend.title.text == label
    # the band below is added to the figure: the plot area keeps its height (380 - 60 - 50 px)
    assert fig.layout.height - fig.layout.margin.t - fig.layout.margin.b == 380 - 60 - 50
    assert fig.layout.margin.b > 50 + 2 * 20  # the label line and one line of entries
    plain = P.rank_band_figure(np.arange(6.0), np.arange(6.0) - 1, np.arange(6.0) + 1, label="B")
    assert not plain.layout.legend.title.text  # no longer label to spell out


def test_split_stability_bars_in_rank_order():
    rank = np.array([2, 0, 3, 1])
    p = np.array([0.4, 1.0, 0.0, np.nan])
    fig = P.split_stability_figure(
        {"A": {"rank": rank, "p_salient": p}, "B x": {"rank": rank, "p_salient": p}}, tap="layer2"
    )
    a, b = fig.data
    order = [1, 3, 0, 2]
    np.testing.assert_array_equal(a.customdata, order)
    assert list(a.y) == [1.0, None, 0.4, 0.0]
    np.testing.assert_array_equal(a.x, [0, 1, 2, 3])
    assert a.marker.color == P.COLOR_A and b.marker.color != P.COLOR_A
    assert [sh.x0 for sh in fig.layout.shapes if sh.name == "boundary"] == [1.5]
    assert "layer2" in fig.layout.title.text
    assert nonfinite_texts(fig)
    with pytest.raises(TffdVizError, match="differ in shape"):
        P.split_stability_figure({"A": {"rank": rank, "p_salient": p[:3]}})
    with pytest.raises(TffdVizError, match="'rank' and 'p_salient'"):
        P.split_stability_figure({"A": {"rank": rank}})
