"""Tests of tffd_viz.importance.stability: rank stability across batches and bootstrap bands."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from importance_refs import _feat, ref_ranks, ref_scores
from scipy import stats

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance import (
    bootstrap_rank_band,
    channel_scores,
    rank_positions,
    ranking_stability_across_batches,
    split_stability,
    tap_rank_stability,
)
from tffd_viz.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_stability_identical_batches_is_zero() -> None:
    f = _feat(c=10, seed=4)
    out = ranking_stability_across_batches([f, f.clone(), f.clone()])
    np.testing.assert_array_equal(out["std_rank"], np.zeros(10))
    np.testing.assert_array_equal(out["min_rank"], out["max_rank"])
    assert out["mean_pairwise_spearman"] == pytest.approx(1.0)


def test_stability_against_restatement() -> None:
    batches = [_feat(n=5, c=6, seed=s) for s in range(4)]
    out = ranking_stability_across_batches(batches, criterion="l2")
    ranks = np.array([ref_ranks(ref_scores(f, "l2")) for f in batches])
    np.testing.assert_array_equal(out["ranks"], ranks)
    np.testing.assert_allclose(out["mean_rank"], ranks.mean(0))
    np.testing.assert_allclose(out["std_rank"], ranks.std(0))
    rhos = [stats.spearmanr(ranks[i], ranks[j])[0] for i in range(4) for j in range(i + 1, 4)]
    assert out["mean_pairwise_spearman"] == pytest.approx(np.mean(rhos))
    with pytest.raises(TffdVizError, match="at least 2 feature batches"):
        ranking_stability_across_batches([batches[0]])
    with pytest.raises(TffdVizError, match="needs the model"):
        ranking_stability_across_batches(batches, criterion="taylor")


def test_bootstrap_band_deterministic_and_against_resamples() -> None:
    f = _feat(n=12, c=7, seed=6)
    one = bootstrap_rank_band(f, n_boot=50, seed=3)
    two = bootstrap_rank_band(f, n_boot=50, seed=3)
    other = bootstrap_rank_band(f, n_boot=50, seed=4)
    for key in ("boot_ranks", "lower", "upper", "boot_scores"):
        np.testing.assert_array_equal(one[key], two[key])
    assert not np.array_equal(one["boot_ranks"], other["boot_ranks"])
    np.testing.assert_array_equal(one["rank"], rank_positions(channel_scores("tffd", features=f)).numpy())
    # each resample's scores = the criterion on the resampled batch
    idx = torch.randint(0, 12, (50, 12), generator=torch.Generator().manual_seed(3))
    ref = np.stack([np.array(ref_scores(f[row], "tffd")) for row in idx[:5]])
    np.testing.assert_allclose(one["boot_scores"][:5], ref, rtol=1e-5, atol=1e-8)
    lo = np.quantile(one["boot_ranks"], 0.05, axis=0, method="lower")
    hi = np.quantile(one["boot_ranks"], 0.95, axis=0, method="higher")
    np.testing.assert_array_equal(one["lower"], lo)
    np.testing.assert_array_equal(one["upper"], hi)
    assert bool((one["lower"] <= one["upper"]).all())


def test_bootstrap_identical_samples_zero_width() -> None:
    f = _feat(n=1, c=9, seed=7).expand(8, -1, -1, -1).contiguous()
    band = bootstrap_rank_band(f, criterion="l1", n_boot=40, seed=0)
    np.testing.assert_array_equal(band["width"], np.zeros(9))
    np.testing.assert_array_equal(band["lower"], band["rank"])
    split = split_stability(f, criterion="l1", n_boot=40)
    np.testing.assert_array_equal(split["p_salient"], split["in_salient"].astype(float))


def test_split_stability_matches_band_resamples() -> None:
    f = _feat(n=10, c=7, seed=8)
    band = bootstrap_rank_band(f, n_boot=60, seed=2)
    split = split_stability(f, n_boot=60, seed=2)
    k = 3
    np.testing.assert_allclose(split["p_salient"], (band["boot_ranks"] < k).mean(0))
    np.testing.assert_allclose(split["p_redundant"], (band["boot_ranks"] >= 7 - k).mean(0))
    middle = 1.0 - split["p_salient"] - split["p_redundant"]
    np.testing.assert_allclose(middle, (band["boot_ranks"] == k).mean(0))
    assert split["in_salient"].sum() == k
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TffdVizError, match="ci must lie in"):
            bootstrap_rank_band(f, ci=1.0)


def test_tap_rank_stability_equals_band_and_split_on_extracted_features() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1).eval()
    x = torch.randn(10, 1, 32, 32, generator=torch.Generator().manual_seed(9))
    out = tap_rank_stability(model, x, "layer2", n_boot=30, seed=5, ci=0.8, batch_size=4)
    f = extract_features(model, x, ["layer2"])["layer2"]
    band = bootstrap_rank_band(f, n_boot=30, seed=5, ci=0.8)
    split = split_stability(f, n_boot=30, seed=5)
    for key, value in {**band, **split}.items():
        np.testing.assert_allclose(
            np.asarray(out[key], dtype=float),
            np.asarray(value, dtype=float),
            rtol=1e-6,
            atol=1e-9,
            err_msg=key,
        )
    assert out["tap"] == "layer2" and out["criterion"] == "tffd" and out["ci"] == 0.8
    assert out["rank"].shape == (32,)
    k = 16
    ranks = band["boot_ranks"]
    for ch in range(32):
        in_salient = out["rank"][ch] < k
        ref = np.mean((ranks[:, ch] < k) == in_salient)
        assert out["p_same_half"][ch] == pytest.approx(ref)
    assert out["mean_width"] == pytest.approx(float(np.mean(band["upper"] - band["lower"])))
    assert out["share_stable_half"] == pytest.approx(float(np.mean(out["p_same_half"] >= 0.95)))
    with pytest.raises(TapError):
        tap_rank_stability(model, x, "nope", n_boot=5)
    with pytest.raises(TffdVizError, match="needs the model"):
        tap_rank_stability(model, x, "layer2", criterion="taylor", n_boot=5)
