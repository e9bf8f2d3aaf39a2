"""Tests of tffd_viz.plots.embeddings: the 2-D embedding scatter and the linear-probe accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError


def test_embedding_one_trace_per_class_and_probe_accuracy():
    coords = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    labels = np.array([2, 0, 2, 1])
    fig = P.embedding_figure(coords, torch.tensor(labels), ["zero", "one", "two"], indices=[10, 11, 12, 13])
    assert [d.name for d in fig.data] == ["zero", "one", "two"]
    np.testing.assert_array_equal(fig.data[2].x, [0.0, 2.0])
    np.testing.assert_array_equal(fig.data[2].customdata, [10, 12])
    assert len({d.marker.color for d in fig.data}) == 3
    with pytest.raises(TffdVizError, match=r"\(N, 2\)"):
        P.embedding_figure(np.ones((4, 3)), labels)
    pr = P.probe_accuracy_figure(
        {"A": {"layer1": 40.0, "layer2": 55.0}, "B": {"layer2": 60.0, "layer3": 70.0}}
    )
    assert list(pr.data[0].x) == ["layer1", "layer2", "layer3"]
    assert list(pr.data[1].y) == [None, 60.0, 70.0]
    assert pr.layout.yaxis.title.text == "linear-probe test accuracy (%)"
    table = [{"tap": "layer1", "train_acc": 99.0, "test_acc": 41.0}, {"tap": "layer2", "test_acc": 52.0}]
    assert list(P.probe_accuracy_figure({"A": table}).data[0].y) == [41.0, 52.0]
