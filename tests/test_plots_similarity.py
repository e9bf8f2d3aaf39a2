"""Tests of tffd_viz.plots.similarity: channel cosines, inter-layer alignment and CKA heatmaps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import salient_order
from tffd_viz.similarity import channel_cosine_matrix


@pytest.mark.parametrize("c", [6, 5])
def test_cosine_matrix_reorders_and_marks_split(c):
    torch.manual_seed(3)
    f = torch.rand(3, c, 4, 4)
    order = salient_order(f)
    fig = P.cosine_matrix_figure(channel_cosine_matrix(f), order=order)
    np.testing.assert_allclose(fig.data[0].z, channel_cosine_matrix(f, order=order).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fig.data[0].customdata[0, 1], [order[0], order[1]])
    k = c // 2
    cuts = sorted(
        {s.x0 for s in fig.layout.shapes if s.name == "split" and s.type == "line" and s.x0 == s.x1}
    )
    assert cuts == sorted({k - 0.5, c - k - 0.5})
    plain = P.cosine_matrix_figure(np.eye(c))
    assert not plain.layout.shapes and plain.layout.xaxis.title.text == "channel index"
    with pytest.raises(TffdVizError, match="square"):
        P.cosine_matrix_figure(np.ones((3, 4)))


def test_paired_similarity_and_alignment_values():
    a, b = np.array([0.9, 0.5, 0.1]), np.array([0.95, 0.8, 0.7])
    fig = P.paired_similarity_figure({"A": a, "B": torch.tensor(b)})
    np.testing.assert_array_equal(fig.data[0].x, [0, 1, 2])
    np.testing.assert_allclose(fig.data[1].y, b)
    assert fig.data[0].name == "A (mean 0.500)" and fig.data[1].line.color == P.COLOR_B
    vals = {
        "A": {"l1->l2": np.array([0.1, 0.2]), "l2->l3": np.array([0.3, 0.4, 0.5])},
        "B": {"l2->l3": np.array([0.6, 0.7, 0.8])},
    }
    al = P.alignment_figure(vals)
    assert [(d.name, d.xaxis) for d in al.data] == [("A", "x"), ("A", "x2"), ("B", "x2")]
    assert [d.showlegend for d in al.data] == [True, False, True]
    np.testing.assert_allclose(al.data[2].y, [0.6, 0.7, 0.8])
    np.testing.assert_array_equal(al.data[1].x, [0, 1, 2])


def test_cka_heatmap_and_grid_values():
    m = np.array([[1.0, 0.4], [0.3, 0.9], [0.2, 0.8]])
    fig = P.cka_heatmap_figure(m, ["a1", "a2", "a3"], ["b1", "b2"])
    np.testing.assert_array_equal(fig.data[0].z, m)
    assert list(fig.data[0].y) == ["a1", "a2", "a3"] and list(fig.data[0].x) == ["b1", "b2"]
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)
    mats = {
        "A vs A": (np.eye(2), ["l1", "l2"], ["l1", "l2"]),
        "A vs B": (m, ["l1", "l2", "l3"], ["l1", "l2"]),
    }
    grid = P.cka_grid_figure(mats)
    np.testing.assert_array_equal(grid.data[0].z, np.eye(2))
    np.testing.assert_array_equal(grid.data[1].z, m)
    assert grid.layout.xaxis2.title.text == "B layer" and grid.layout.yaxis2.title.text == "A layer"
    assert (grid.layout.coloraxis.cmin, grid.layout.coloraxis.cmax) == (0, 1)
    with pytest.raises(TffdVizError, match="names_b"):
        P.cka_heatmap_figure(m, ["a1", "a2", "a3"], ["b1"])
