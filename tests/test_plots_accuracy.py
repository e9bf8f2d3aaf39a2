"""Tests of tffd_viz.plots.accuracy: confusion matrices, per-class errors and accuracy over seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError


def test_confusion_matrix_counts_and_normalised():
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    fig = P.confusion_figure(m, ["cat", "dog", "ship"])
    np.testing.assert_array_equal(fig.data[0].z, m)
    assert list(fig.data[0].x) == ["cat", "dog", "ship"]
    assert fig.layout.xaxis.title.text == "predicted class" and fig.layout.yaxis.title.text == "true class"
    norm = P.confusion_figure(m, normalize=True)
    np.testing.assert_allclose(np.asarray(norm.data[0].z).sum(axis=1), 100.0)
    assert norm.data[0].z[1][0] == pytest.approx(100 * 2 / 6)


def test_accuracy_seeds_mean_and_std():
    rows = [{"config": "A · baseline", "seed": s, "acc": v} for s, v in enumerate((90.0, 91.0, 93.0))]
    rows += [{"config": "B · Tf-FD", "seed": 0, "acc": 94.0}]
    fig = P.accuracy_seeds_figure(rows)
    seeds, summary = fig.data
    assert list(seeds.y) == [90.0, 91.0, 93.0, 94.0]
    assert list(summary.x) == ["A · baseline", "B · Tf-FD"]
    assert summary.y[0] == pytest.approx(274 / 3)
    m = 274 / 3
    assert summary.error_y.array[0] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in (90, 91, 93)) / 2))
    assert summary.error_y.array[1] == 0.0
    assert list(summary.marker.color) == [P.COLOR_A, P.COLOR_B]


def test_class_error_and_confusion_pair_figures() -> None:
    a = np.array([[9, 1, 0], [0, 10, 0], [0, 0, 0]])
    b = np.array([[10, 0, 0], [2, 8, 0], [0, 0, 5]])
    fig = P.class_error_figure({"A": a, "B": b}, ["x", "y", "z"])
    assert fig.data[0].y[:2].tolist() == [10.0, 0.0] and np.isnan(fig.data[0].y[2])
    assert fig.data[1].y.tolist() == [0.0, 20.0, 0.0] and "A 1, B 2" in fig.layout.title.text
    pair = P.confusion_pair_figure({"A": a, "B": b}, ["x", "y", "z"])
    assert len(pair.data) == 2 and pair.data[1].z[1].tolist() == [20.0, 80.0, 0.0]
    assert pair.layout.coloraxis.cmax == 100.0
    with pytest.raises(TffdVizError, match="square"):
        P.class_error_figure({"A": np.ones((2, 3))}, ["x", "y"])


@pytest.mark.parametrize(
    ("b", "drawn"),
    [
        (np.array([[10, 0, 0], [0, 10, 0], [0, 0, 10]]), "errors"),  # both at 100 %
        (np.array([[10, 0, 0], [2, 8, 0], [0, 0, 10]]), "matrices"),  # B at 93.3 % < ERROR_BARS_ABOVE
    ],
)
def test_accuracy_breakdown_figure_picks_errors_near_100_percent(b, drawn) -> None:
    a = np.diag([10, 10, 10])
    fig = P.accuracy_breakdown_figure({"A": a, "B": b}, ["x", "y", "z"], normalize=False)
    if drawn == "errors":
        assert [t.type for t in fig.data] == ["bar", "bar"] and all(len(t.y) == 3 for t in fig.data)
        assert fig.layout.title.text.startswith("Errors per class")
    else:
        assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
        assert np.asarray(fig.data[1].z).tolist() == b.tolist()  # counts: normalize=False is passed on
        assert fig.layout.height == max(380, min(800, 140 + 26 * 3))
    # the threshold is the rule: lowered below B's 93.3 %, the errors are drawn
    low = P.accuracy_breakdown_figure({"A": a, "B": b}, ["x", "y", "z"], error_bars_above=90.0)
    assert [t.type for t in low.data] == ["bar", "bar"]
