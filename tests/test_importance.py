"""Tests of tffd_viz.importance: criteria against plain re-statements, Tf-FD's order and split,
agreement, stability and bootstrap bands."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance import (
    BN_RULES,
    CRITERIA,
    ConstantScoresWarning,
    Criterion,
    available_criteria,
    bn_for_tap,
    bootstrap_rank_band,
    channel_ranking,
    channel_scores,
    get_criterion,
    rank_agreement,
    rank_positions,
    ranking_stability_across_batches,
    rankings_table,
    register_criterion,
    salient_split,
    split_stability,
    tap_rank_stability,
    tap_rankings,
    taylor_scores,
)
from tffd_viz.losses import intra_fd, salient_order
from tffd_viz.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def _feat(n: int = 6, c: int = 8, h: int = 4, w: int = 5, seed: int = 0, relu: bool = True) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(n, c, h, w, generator=gen) + torch.linspace(-0.5, 0.5, c).view(1, c, 1, 1)
    return f.relu() if relu else f


# --------------------------------------------------------------------------------------------------
# plain re-statements (float64 loops, nothing from the module)
# --------------------------------------------------------------------------------------------------


def ref_scores(f: torch.Tensor, kind: str) -> list[float]:
    f = f.double()
    n, c, h, w = f.shape
    out = []
    for ch in range(c):
        total = 0.0
        for i in range(n):
            vals = [float(v) for v in f[i, ch].reshape(-1)]
            if kind == "tffd":
                norm = max(math.sqrt(sum(v * v for v in vals)), 1e-12)
                total += sum(v / norm for v in vals) / (h * w)
            elif kind == "l1":
                total += sum(abs(v) for v in vals)
            elif kind == "l2":
                total += math.sqrt(sum(v * v for v in vals))
            elif kind == "mean":
                total += sum(vals) / (h * w)
        out.append(total / n)
    return out


def ref_ranks(scores: list[float]) -> list[int]:
    order = sorted(range(len(scores)), key=lambda ch: -scores[ch])  # Python's sort is stable
    ranks = [0] * len(scores)
    for pos, ch in enumerate(order):
        ranks[ch] = pos
    return ranks


# --------------------------------------------------------------------------------------------------
# feature criteria
# --------------------------------------------------------------------------------------------------


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
    torch.testing.assert_close(channel_scores(kind, features=f[:, perm]), channel_scores(kind, features=f)[perm])


def test_tffd_ranking_equals_salient_order_with_ties() -> None:
    for seed in range(4):
        f = _feat(c=11, seed=seed)
        assert torch.equal(channel_ranking(channel_scores("tffd", features=f)), salient_order(f))
    # exact ties: duplicated channels and all-zero channels keep the lower index first
    f = _feat(c=6, seed=5)
    f[:, 4] = f[:, 1]
    f[:, 2] = 0.0
    f[:, 5] = 0.0
    order = channel_ranking(channel_scores("tffd", features=f))
    assert torch.equal(order, salient_order(f))
    assert order.tolist().index(1) < order.tolist().index(4)
    assert order.tolist()[-2:] == [2, 5]


def test_ranking_and_rank_positions_hand_case() -> None:
    scores = torch.tensor([1.0, 3.0, 3.0, 0.0, 2.0])
    assert channel_ranking(scores).tolist() == [1, 2, 4, 0, 3]
    assert rank_positions(scores).tolist() == [3, 0, 1, 4, 2]
    assert rank_positions(np.array([1.0, 3.0, 3.0, 0.0, 2.0])).tolist() == ref_ranks([1.0, 3.0, 3.0, 0.0, 2.0])
    with pytest.raises(TffdVizError, match=r"not finite at channels \[1\]"):
        channel_ranking(torch.tensor([0.0, float("nan")]))


def test_rank_positions_is_inverse_of_ranking() -> None:
    scores = torch.randn(37, generator=torch.Generator().manual_seed(2)).round(decimals=1)  # many ties
    order, ranks = channel_ranking(scores), rank_positions(scores)
    assert torch.equal(ranks[order], torch.arange(37))
    assert torch.equal(order[ranks], torch.arange(37))
    assert ranks.tolist() == ref_ranks(scores.tolist())


@pytest.mark.parametrize("c", [2, 7, 8])
def test_salient_split_sizes_and_intra_pairing(c: int) -> None:
    f = _feat(c=c, seed=c)
    scores = channel_scores("tffd", features=f)
    split = salient_split(scores)
    k = c // 2
    assert split.salient.numel() == split.redundant.numel() == k
    assert split.middle.numel() == c - 2 * k
    assert sorted(torch.cat(split).tolist()) == list(range(c))
    ranks = rank_positions(scores)
    assert bool((ranks[split.salient] < k).all()) and bool((ranks[split.redundant] >= c - k).all())
    # the pairs are exactly intra-Tf-FD's: redundant[i] mimics salient[i]
    ref = F.mse_loss(f[:, split.redundant], f[:, split.salient])
    torch.testing.assert_close(intra_fd(f), ref)


def test_channel_scores_dispatch_and_errors() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, in_chans=1).eval()
    x = torch.randn(4, 1, 32, 32)
    f = extract_features(model, x, ["layer2"])["layer2"]
    torch.testing.assert_close(channel_scores("tffd", model=model, images=x, tap="layer2"),
                               channel_scores("tffd", features=f))
    with pytest.raises(TffdVizError, match="needs features"):
        channel_scores("l1")
    with pytest.raises(TffdVizError, match="needs model and tap"):
        channel_scores("bn_gamma", features=f)
    with pytest.raises(TffdVizError, match="unknown criterion 'nope'"):
        get_criterion("nope")
    with pytest.raises(TapError, match=r"4-D tensor \(N, C, H, W\), got shape \(3, 4\)"):
        channel_scores("l2", features=torch.zeros(3, 4))


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


# --------------------------------------------------------------------------------------------------
# model criteria
# --------------------------------------------------------------------------------------------------


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data = torch.randn(m.num_features, generator=gen)
    return model.eval()


def test_bn_gamma_resnet_vgg_wrn() -> None:
    resnet = _randomize_bn(create_model("resnet8", num_classes=10, in_chans=1))
    scores = channel_scores("bn_gamma", model=resnet, tap="layer2")
    torch.testing.assert_close(scores, resnet.layer2[-1].bn2.weight.detach().abs())
    assert bn_for_tap(resnet, "layer2").rule == "residual_block"

    vgg = _randomize_bn(create_model("vgg8", num_classes=10, in_chans=1), seed=1)
    torch.testing.assert_close(channel_scores("bn_gamma", model=vgg, tap="block1"), vgg.block1[1].weight.detach().abs())
    assert bn_for_tap(vgg, "block1").bn == "block1.1"

    wrn = _randomize_bn(create_model("wrn_16_1", num_classes=10, in_chans=1), seed=2)
    match = bn_for_tap(wrn, "block1")
    assert (match.bn, match.rule, match.relation) == ("block2.layer.0.bn1", "next_bn", "normalises")
    assert bn_for_tap(wrn, "block3").bn == "bn1"
    torch.testing.assert_close(channel_scores("bn_gamma", model=wrn, tap="block3"), wrn.bn1.weight.detach().abs())
    # a BN tap is its own gamma; a conv tap is normalised by the BN that follows it
    assert bn_for_tap(resnet, "layer1.0.bn1").rule == "tap_is_batchnorm"
    assert bn_for_tap(resnet, "layer1.0.conv1").bn == "layer1.0.bn1"
    assert list(BN_RULES) == ["tap_is_batchnorm", "residual_block", "sequential_last_bn", "next_bn"]


def test_bn_gamma_without_bn_raises() -> None:
    resnet = create_model("resnet8", num_classes=10, in_chans=1).eval()
    with pytest.raises(TapError, match="no BatchNorm2d found for tap 'fc'"):
        channel_scores("bn_gamma", model=resnet, tap="fc")
    with pytest.raises(TapError, match="unknown tap"):
        bn_for_tap(resnet, "layer9")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.bn(self.conv1(x)))
        return self.fc(self.conv2(h).mean(dim=(2, 3)))


def _tiny() -> Tiny:
    torch.manual_seed(0)
    model = Tiny()
    model.bn.running_mean.uniform_(-0.3, 0.3)
    model.bn.running_var.uniform_(0.5, 1.5)
    return model


def test_taylor_against_explicit_autograd_and_no_side_effects() -> None:
    model = _tiny().train()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 2, 6, 6, generator=gen)
    y = torch.randint(0, 5, (7,), generator=gen)
    stats_before = model.bn.running_mean.clone()
    scores = channel_scores("taylor", model=model, images=x, labels=y, tap="act")
    # restatement: eval-mode pieces by hand, gradient of the summed CE w.r.t. the activation
    ref_model = _tiny().eval()
    with torch.no_grad():
        a = ref_model.act(ref_model.bn(ref_model.conv1(x)))
    a = a.clone().requires_grad_(True)
    logits = ref_model.fc(ref_model.conv2(a).mean(dim=(2, 3)))
    loss = sum(F.cross_entropy(logits[i:i + 1], y[i:i + 1]) for i in range(7))
    (g,) = torch.autograd.grad(loss, a)
    ref = (a * g).sum(dim=(0, 2, 3)).abs() / (7 * 6 * 6)
    torch.testing.assert_close(scores, ref.detach().double(), rtol=1e-5, atol=1e-9)
    # no parameter gradient, mode and BN statistics unchanged, batch size does not matter
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model.bn.training
    assert torch.equal(model.bn.running_mean, stats_before)
    torch.testing.assert_close(taylor_scores(model, x, y, "act", batch_size=3), scores)


def test_taylor_works_under_no_grad_and_with_frozen_params() -> None:
    model = _tiny().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(4, 2, 6, 6)
    y = torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        scores = taylor_scores(model, x, y, "conv2")
    assert scores.shape == (3,) and bool(torch.isfinite(scores).all()) and bool((scores > 0).any())
    with pytest.raises(TffdVizError, match="needs images"):
        channel_scores("taylor", model=model, images=x, tap="act")


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def test_tap_rankings_and_rankings_table() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=5, in_chans=1).eval()
    x = torch.randn(4, 1, 32, 32)
    feats = extract_features(model, x)
    from_model = tap_rankings(model, "tffd", images=x)
    from_feats = tap_rankings(feats, "tffd")
    assert list(from_model) == ["layer1", "layer2", "layer3"]
    for name, r in from_model.items():
        np.testing.assert_array_equal(r.order, salient_order(feats[name]).numpy())
        np.testing.assert_array_equal(r.order, from_feats[name].order)
        np.testing.assert_array_equal(r.ranks[r.order], np.arange(r.channels))
    rows = rankings_table({"a": model, "b": feats}, "tffd", images=x)
    assert len(rows) == 2 * (16 + 32 + 64)
    layer3 = [r for r in rows if r["model"] == "b" and r["tap"] == "layer3"]
    by_channel = {r["channel"]: r for r in layer3}
    for r in layer3:
        assert (r["half"] == "salient") == (r["rank"] < 32)
        assert by_channel[r["partner"]]["partner"] == r["channel"]
        assert by_channel[r["partner"]]["rank"] - r["rank"] in (32, -32)
    gamma = rankings_table(model, "bn_gamma", taps=["layer2"])
    assert {r["model"] for r in gamma} == {"model"} and len(gamma) == 32
    with pytest.raises(TffdVizError, match="needs the model"):
        tap_rankings(feats, "taylor")


# --------------------------------------------------------------------------------------------------
# agreement
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------------------


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
        np.testing.assert_allclose(np.asarray(out[key], dtype=float), np.asarray(value, dtype=float),
                                   rtol=1e-6, atol=1e-9, err_msg=key)
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
