"""Tests of tffd_viz.importance.agreement: rank correlations between criteria."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from tffd_viz.errors import TffdVizError
from tffd_viz.importance import (
    ConstantScoresWarning,
    rank_agreement,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_rank_agreement_hand_case_and_properties() -> None:
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    b = torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])
    c = -a
    out = rank_agreement({"a": a, "b": b, "c": c})
    assert out["names"] == ["a", "b", "c"]
    for key in ("spearman", "kendall"):
        m = out[key]
        np.testing.assert_allclose(np.diag(m), 1.0)
        np.testing.assert_allclose(m, m.T)
    assert out["spearman"][0, 1] == pytest.approx(0.8)  # 1 - 6 * 4 / (5 * 24)
    assert out["kendall"][0, 1] == pytest.approx(0.6)  # (8 - 2) / 10
    assert out["spearman"][0, 2] == pytest.approx(-1.0)
    assert out["spearman"][1, 2] == pytest.approx(stats.spearmanr(b.numpy(), c.numpy())[0])
    assert out["kendall"][1, 2] == pytest.approx(stats.kendalltau(b.numpy(), c.numpy())[0])


def test_rank_agreement_constant_scores_warn_and_are_zero() -> None:
    with pytest.warns(ConstantScoresWarning, match="'flat'"):
        out = rank_agreement({"x": torch.arange(4.0), "flat": torch.ones(4)})
    assert out["spearman"][0, 1] == 0.0 and out["kendall"][0, 1] == 0.0
    assert out["spearman"][1, 1] == 1.0
    with pytest.raises(TffdVizError, match="same channels"):
        rank_agreement({"x": torch.arange(4.0), "y": torch.arange(5.0)})
