"""Tests of tffd_viz.dynamics on hand-made histories with known rank sequences."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from tffd_viz.dynamics import (
    boundary_crossings,
    history_taps,
    rank_change_stats,
    rank_matrix,
    saliency_matrix,
    salient_set_changes,
    split_stable_epoch,
    term_curves,
)
from tffd_viz.errors import TffdVizError


def saliency_from_ranks(ranks: list[int]) -> list[float]:
    """Saliency that puts channel ``c`` at rank ``ranks[c]`` (higher saliency = lower rank)."""
    c = len(ranks)
    return [float(c - r) / c for r in ranks]


def history_from_ranks(seq: list[list[int]], tap: str = "layer1", first_epoch: int = 1) -> list[dict]:
    return [{"epoch": first_epoch + i, "saliency": {tap: saliency_from_ranks(r)}} for i, r in enumerate(seq)]


# --------------------------------------------------------------------------------------------------
# matrices
# --------------------------------------------------------------------------------------------------


def test_saliency_and_rank_matrices() -> None:
    seq = [[0, 1, 2, 3], [3, 2, 1, 0], [1, 0, 3, 2]]
    hist = history_from_ranks(seq)
    sal = saliency_matrix(hist, "layer1")
    assert sal.shape == (3, 4) and sal.dtype == np.float64
    np.testing.assert_allclose(sal[1], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_array_equal(rank_matrix(hist, "layer1"), np.array(seq))
    assert history_taps(hist) == ["layer1"]


def test_rank_matrix_ties_keep_lower_channel_first() -> None:
    hist = [{"epoch": 1, "saliency": {"t": [0.5, 0.9, 0.5, 0.9, 0.1]}}]
    np.testing.assert_array_equal(rank_matrix(hist, "t"), [[2, 0, 3, 1, 4]])


def test_errors_name_tap_and_epoch() -> None:
    hist = history_from_ranks([[0, 1], [1, 0]])
    with pytest.raises(TffdVizError, match=r"tap 'layer9' at epoch 1; recorded taps: \['layer1'\]"):
        saliency_matrix(hist, "layer9")
    hist[1]["saliency"] = {}
    with pytest.raises(TffdVizError, match="tap 'layer1' at epoch 2"):
        rank_matrix(hist, "layer1")
    grow = history_from_ranks([[0, 1], [0, 1, 2]])
    with pytest.raises(TffdVizError, match="changes from 2 at epoch 1 to 3 at epoch 2"):
        rank_matrix(grow, "layer1")
    bad = [{"epoch": 5, "saliency": {"t": [0.1, math.nan]}}]
    with pytest.raises(TffdVizError, match=r"epoch 5 is not finite at channels \[1\]"):
        saliency_matrix(bad, "t")
    with pytest.raises(TffdVizError, match="history is empty"):
        saliency_matrix([], "t")


# --------------------------------------------------------------------------------------------------
# crossings and rank changes
# --------------------------------------------------------------------------------------------------


def test_boundary_crossings_known_counts() -> None:
    assert boundary_crossings([0, 1, 2, 3], [0, 1, 2, 3], 4) == 0
    assert boundary_crossings([0, 1, 2, 3], [2, 1, 0, 3], 4) == 2  # channel 0 out, channel 2 in
    assert boundary_crossings([0, 1, 2, 3], [3, 2, 1, 0], 4) == 4
    assert boundary_crossings([0, 1, 2, 3, 4], [4, 3, 2, 1, 0], 5) == 4  # middle channel 2 never counts
    assert boundary_crossings([0, 1, 2, 3, 4], [0, 2, 1, 3, 4], 5) == 2  # 1 moves to the middle
    with pytest.raises(TffdVizError, match=r"permutation of 0\.\.3"):
        boundary_crossings([0, 1, 1, 3], [0, 1, 2, 3], 4)


def test_rank_change_stats_identical_and_reversed() -> None:
    c = 6
    ident = list(range(c))
    rev = ident[::-1]
    hist = history_from_ranks([ident, ident, rev], first_epoch=10)
    out = rank_change_stats(hist, "layer1")
    assert [d["epoch"] for d in out] == [11, 12] and [d["prev_epoch"] for d in out] == [10, 11]
    assert out[0]["spearman"] == pytest.approx(1.0) and out[0]["kendall"] == pytest.approx(1.0)
    assert out[0]["crossings"] == 0 and out[0]["entered"] == [] and out[0]["left"] == []
    assert out[1]["spearman"] == pytest.approx(-1.0) and out[1]["kendall"] == pytest.approx(-1.0)
    assert out[1]["crossings"] == 6
    assert out[1]["entered"] == [3, 4, 5] and out[1]["left"] == [0, 1, 2]
    assert rank_change_stats(history_from_ranks([ident]), "layer1") == []


def test_rank_change_stats_against_scipy() -> None:
    rng = np.random.default_rng(0)
    seq = [rng.permutation(9).tolist() for _ in range(4)]
    out = rank_change_stats(history_from_ranks(seq), "layer1")
    for t, d in enumerate(out, start=1):
        assert d["spearman"] == pytest.approx(stats.spearmanr(seq[t - 1], seq[t])[0])
        assert d["kendall"] == pytest.approx(stats.kendalltau(seq[t - 1], seq[t])[0])
        prev = {c for c in range(9) if seq[t - 1][c] < 4}
        cur = {c for c in range(9) if seq[t][c] < 4}
        assert d["crossings"] == len(prev ^ cur)
        assert sorted(d["entered"]) == sorted(cur - prev) and sorted(d["left"]) == sorted(prev - cur)


# --------------------------------------------------------------------------------------------------
# stable epoch
# --------------------------------------------------------------------------------------------------

A = [0, 1, 2, 3]  # salient {0, 1}
A2 = [1, 0, 3, 2]  # same salient set, different order
B = [2, 1, 0, 3]  # salient {1, 2}
D = [0, 2, 3, 1]  # salient {0, 3}


def test_split_stable_epoch_changes_at_2_and_4() -> None:
    hist = history_from_ranks([A, B, B, D, D, D])  # changes at epochs 2 and 4
    assert salient_set_changes(hist, "layer1").tolist() == [1, 0, 2, 0, 0]
    assert split_stable_epoch(hist, "layer1") == 4


def test_split_stable_epoch_reorders_within_half_do_not_count() -> None:
    assert split_stable_epoch(history_from_ranks([A, A2, A, A2]), "layer1") == 1
    assert split_stable_epoch(history_from_ranks([A, A, A], first_epoch=0), "layer1") == 0


def test_split_stable_epoch_none_when_last_epoch_changes() -> None:
    assert split_stable_epoch(history_from_ranks([A, A, A, B]), "layer1") is None
    assert split_stable_epoch(history_from_ranks([A]), "layer1") is None  # nothing to judge
    # a change back to an earlier set still counts as a change
    assert split_stable_epoch(history_from_ranks([A, B, A, A]), "layer1") == 3


def test_split_stable_epoch_tolerance() -> None:
    c = 8  # salient = top 4
    base = list(range(c))
    one_swap = [0, 1, 2, 4, 3, 5, 6, 7]  # channel 3 <-> 4 across the boundary
    big = [4, 5, 6, 7, 0, 1, 2, 3]  # the whole half swapped
    hist = history_from_ranks([big, base, one_swap, base, one_swap])
    assert split_stable_epoch(hist, "layer1", tolerance=0) is None
    assert split_stable_epoch(hist, "layer1", tolerance=1) == 2
    assert split_stable_epoch(hist, "layer1", tolerance=4) == 1
    with pytest.raises(TffdVizError, match="tolerance"):
        split_stable_epoch(hist, "layer1", tolerance=-1)


def test_split_stable_epoch_missing_tap() -> None:
    with pytest.raises(TffdVizError, match="tap 'layer2' at epoch 1"):
        split_stable_epoch(history_from_ranks([A, B]), "layer2")


# --------------------------------------------------------------------------------------------------
# term curves
# --------------------------------------------------------------------------------------------------


def _card_history() -> list[dict]:
    return [
        {
            "epoch": 1,
            "lr": 0.1,
            "ce": 2.0,
            "intra": {"l1": 4.0, "l2": 2.0},
            "inter": {"l1->l2": 1.0},
            "train_acc": 20.0,
            "test_acc": 25.0,
        },
        {
            "epoch": 2,
            "lr": 0.05,
            "ce": 1.5,
            "intra": {"l1": 3.0, "l2": 1.0},
            "inter": {"l1->l2": 0.5},
            "train_acc": 40.0,
            "test_acc": None,
        },
    ]


def test_term_curves_values() -> None:
    curves = term_curves(_card_history(), lambda_intra=0.1, lambda_inter=0.01)
    np.testing.assert_array_equal(curves["epoch"], [1, 2])
    np.testing.assert_array_equal(curves["ce"], [2.0, 1.5])
    np.testing.assert_array_equal(curves["intra/l1"], [4.0, 3.0])
    np.testing.assert_array_equal(curves["inter/l1->l2"], [1.0, 0.5])
    np.testing.assert_allclose(curves["intra_mean"], [3.0, 2.0])
    np.testing.assert_allclose(curves["tffd_total"], [0.1 * 3.0 + 0.01 * 1.0, 0.1 * 2.0 + 0.01 * 0.5])
    np.testing.assert_array_equal(curves["train_acc"], [20.0, 40.0])
    assert curves["test_acc"][0] == 25.0 and np.isnan(curves["test_acc"][1])
    np.testing.assert_array_equal(curves["lr"], [0.1, 0.05])
    warm = term_curves(_card_history(), lambda_intra=0.1, lambda_inter=0.01, warmup=4)
    np.testing.assert_allclose(warm["tffd_total"], curves["tffd_total"] * np.array([0.25, 0.5]))
    summed = term_curves(_card_history(), lambda_intra=0.1, lambda_inter=0.01, reduction="sum")
    np.testing.assert_allclose(summed["tffd_total"], [0.1 * 6.0 + 0.01 * 1.0, 0.1 * 4.0 + 0.01 * 0.5])


def test_term_curves_baseline_history_without_terms() -> None:
    hist = [{"epoch": 1, "ce": 2.0, "intra": {}, "inter": {}, "train_acc": 10.0, "test_acc": 12.0}]
    curves = term_curves(hist)
    assert "tffd_total" not in curves and "intra_mean" not in curves
    assert np.isnan(curves["lr"][0]) and curves["ce"][0] == 2.0
