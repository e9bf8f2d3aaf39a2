"""Tests of tffd_viz.plots.noise: each figure carries the numbers it was given."""

from __future__ import annotations

import numpy as np
import pytest

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError
from tffd_viz.verdicts import Noise, difference_verdict

HELD = {
    "A": {
        "n": 360,
        "batches": 4,
        "intra": {"l1": 0.99, "l2": 3.19},
        "intra_std": {"l1": 0.05, "l2": 0.2},
        "intra_rel": {"l1": 1.29, "l2": 1.35},
        "intra_rel_std": {"l1": 0.08, "l2": 0.1},
        "energy": {"l1": 0.77, "l2": 2.37},
        "energy_std": {"l1": 0.01, "l2": 0.02},
        "inter": {"l1->l2": 2.0},
        "inter_std": {"l1->l2": 0.1},
        "inter_rel": {"l1->l2": 0.87},
        "inter_rel_std": {"l1->l2": 0.01},
    },
    "B": {
        "n": 360,
        "batches": 4,
        "intra": {"l1": 0.067, "l2": 1.18},
        "intra_std": {"l1": 0.005, "l2": 0.08},
        "intra_rel": {"l1": 0.86, "l2": 1.29},
        "intra_rel_std": {"l1": 0.06, "l2": 0.09},
        "energy": {"l1": 0.077, "l2": 0.91},
        "energy_std": {"l1": 0.001, "l2": 0.02},
        "inter": {"l1->l2": 0.76},
        "inter_std": {"l1->l2": 0.03},
        "inter_rel": {"l1->l2": 0.86},
        "inter_rel_std": {"l1->l2": 0.004},
    },
}


def test_heldout_terms_figure_draws_means_and_batch_std_raw_next_to_scale_free() -> None:
    fig = P.heldout_terms_figure(HELD, "intra")
    assert [a.text for a in fig.layout.annotations][:3] == [
        "intra term (raw)",
        "intra term / energy",
        "activation energy mean(F²)",
    ]
    by = {(t.name, t.xaxis): t for t in fig.data}
    assert list(by["B", "x2"].y) == [0.86, 1.29] and list(by["B", "x2"].error_y.array) == [0.06, 0.09]
    assert list(by["A", "x3"].y) == [0.77, 2.37] and list(by["A", "x"].x) == ["l1", "l2"]
    assert "4 batches" in fig.layout.title.text and "360 images" in fig.layout.title.text
    inter = P.heldout_terms_figure(HELD, "inter")
    assert len(inter.data) == 4 and list(inter.data[1].y) == [0.87]
    with pytest.raises(TffdVizError, match="family"):
        P.heldout_terms_figure(HELD, "energy")


def test_cosine_reference_figure_pairs_each_paired_bar_with_its_random_bar() -> None:
    stats = {
        "A": {"paired": {"l1": 0.36}, "random": {"l1": 0.42}, "paired_std": {"l1": 0.02}},
        "B": {"paired": {"l1": 0.57}, "random": {"l1": 0.59}},
    }
    fig = P.cosine_reference_figure(stats)
    assert [t.name for t in fig.data] == [
        "A: salient/redundant pairs",
        "A: random pairs",
        "B: salient/redundant pairs",
        "B: random pairs",
    ]
    assert [t.y[0] for t in fig.data] == [0.36, 0.42, 0.57, 0.59]
    assert fig.data[0].error_y.visible and not fig.data[3].error_y.visible
    assert fig.data[1].marker.pattern.shape == "/"


def test_cka_reference_figure_marks_the_lowest_seed_to_seed_cka() -> None:
    fig = P.cka_reference_figure(
        {"l1": 0.984, "l2": 0.966}, {"l1": [0.98, 0.981, 0.977], "l2": [0.976, 0.955]}
    )
    names = [t.name for t in fig.data]
    assert names == ["seed to seed", "lowest seed-to-seed", "A vs B"]
    assert list(fig.data[1].y) == [0.977, 0.955] and list(fig.data[2].y) == [0.984, 0.966]
    assert len(fig.data[0].y) == 5
    alone = P.cka_reference_figure({"l1": 0.9}, {})
    assert [t.name for t in alone.data] == ["A vs B"] and "no reference" in alone.layout.title.text


def test_noise_ratio_figure_divides_each_difference_by_its_noise() -> None:
    rows = [
        {
            "quantity": "q",
            "item": "l1",
            "B − A": -0.9,
            "noise ±": 0.3,
            "noise source": "seeds",
            "verdict": difference_verdict(1.0, 0.1, Noise(0.3, "seeds", "")),
        },
        {
            "quantity": "r",
            "item": "",
            "B − A": 0.1,
            "noise ±": 0.2,
            "noise source": "batches",
            "verdict": "w",
        },
        {"quantity": "s", "item": "", "B − A": 0.1, "noise ±": None, "noise source": "none", "verdict": "n"},
    ]
    fig = P.noise_ratio_figure(rows)
    assert list(fig.data[0].x) == pytest.approx([-3.0, 0.5]) and list(fig.data[0].y) == ["q · l1", "r"]
    assert fig.data[0].marker.color[0] != fig.data[0].marker.color[1]


def test_saliency_gap_figure_starts_its_axis_near_the_smallest_score() -> None:
    scores = {"A": np.array([1.00, 1.02, 1.05, 1.10]), "B": np.array([0.99, 1.01, 1.04, 1.08])}
    fig = P.saliency_gap_figure(scores, tap="l1")
    lo, hi = fig.layout.yaxis.range
    assert lo == pytest.approx(0.99 - 0.011) and hi == pytest.approx(1.10 + 0.011)
    note = next(a.text for a in fig.layout.annotations if a.name == "zero")
    assert f"A: salient/redundant mean {(1.10 + 1.05) / (1.02 + 1.00):.3f}×" in note


def test_saliency_gap_figure_overlay_keeps_the_axis_off_zero() -> None:
    scores = {"A": np.array([2.0, 2.1, 2.2, 2.4]), "B": np.array([2.05, 2.1, 2.3, 2.35])}
    fig = P.saliency_gap_figure(scores, tap="l1", overlay=True)
    assert len(fig.data) == 2 and "yaxis2" not in fig.to_dict()["layout"]  # one panel
    lo, hi = fig.layout.yaxis.range
    assert lo == pytest.approx(2.0 - 0.04) and hi == pytest.approx(2.4 + 0.04) and lo > 0
