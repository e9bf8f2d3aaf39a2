"""Tests of tffd_viz.importance.criteria: registering criteria and listing the available ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from importance_refs import _feat

from tffd_viz.errors import TffdVizError
from tffd_viz.importance import (
    CRITERIA,
    Criterion,
    available_criteria,
    bootstrap_rank_band,
    channel_scores,
    register_criterion,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_register_criterion_and_available() -> None:
    names = set(available_criteria())
    assert {"tffd", "l1", "l2", "mean", "bn_gamma", "taylor"} <= names
    crit = Criterion("test_max", "Max", "features", lambda f: f.amax(dim=(0, 2, 3)), "max activation")
    try:
        register_criterion(crit)
        f = _feat()
        torch.testing.assert_close(channel_scores("test_max", features=f), f.amax(dim=(0, 2, 3)))
        register_criterion(crit)  # the same criterion again is fine
        with pytest.raises(TffdVizError, match="already registered"):
            register_criterion(Criterion("test_max", "Other", "features", lambda f: f.sum((0, 2, 3))))
        with pytest.raises(TffdVizError, match="needs must be one of"):
            register_criterion(Criterion("test_bad", "Bad", "images", lambda f: f))
        # a criterion without per_sample is bootstrapped by recomputing fn per resample
        band = bootstrap_rank_band(f, "test_max", n_boot=5, seed=0)
        idx = torch.randint(0, f.shape[0], (5, f.shape[0]), generator=torch.Generator().manual_seed(0))
        ref = torch.stack([f[row].amax(dim=(0, 2, 3)) for row in idx]).double()
        np.testing.assert_allclose(band["boot_scores"], ref.numpy())
    finally:
        CRITERIA.pop("test_max", None)
