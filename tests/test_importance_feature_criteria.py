"""Tests of tffd_viz.importance.feature_criteria: the feature criteria against plain re-statements."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from importance_refs import _feat, ref_scores

from tffd_viz.importance import (
    CRITERIA,
    channel_scores,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("kind", ["tffd", "l1", "l2", "mean"])
def test_feature_criteria_against_restatement(kind: str) -> None:
    f = _feat(relu=kind != "mean")
    scores = channel_scores(kind, features=f)
    assert scores.shape == (8,) and scores.device.type == "cpu" and not scores.requires_grad
    np.testing.assert_allclose(scores.double().numpy(), ref_scores(f, kind), rtol=1e-5, atol=1e-7)
    crit = CRITERIA[kind]
    assert crit.needs == "features" and crit.per_sample is not None
    torch.testing.assert_close(crit.per_sample(f).mean(0), crit.fn(f), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", ["tffd", "l1", "l2", "mean"])
def test_feature_criteria_are_permutation_equivariant(kind: str) -> None:
    f = _feat(c=9, seed=3)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(
        channel_scores(kind, features=f[:, perm]), channel_scores(kind, features=f)[perm]
    )
