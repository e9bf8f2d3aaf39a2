"""Tests of tffd_viz.importance.ranking: channel scores, Tf-FD's order and split, per-tap tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from importance_refs import _feat, ref_ranks

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance import (
    channel_ranking,
    channel_scores,
    get_criterion,
    rank_positions,
    rankings_table,
    salient_split,
    tap_rankings,
)
from tffd_viz.losses import intra_fd, salient_order
from tffd_viz.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


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
    assert rank_positions(np.array([1.0, 3.0, 3.0, 0.0, 2.0])).tolist() == ref_ranks(
        [1.0, 3.0, 3.0, 0.0, 2.0]
    )
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
    torch.testing.assert_close(
        channel_scores("tffd", model=model, images=x, tap="layer2"), channel_scores("tffd", features=f)
    )
    with pytest.raises(TffdVizError, match="needs features"):
        channel_scores("l1")
    with pytest.raises(TffdVizError, match="needs model and tap"):
        channel_scores("bn_gamma", features=f)
    with pytest.raises(TffdVizError, match="unknown criterion 'nope'"):
        get_criterion("nope")
    with pytest.raises(TapError, match=r"4-D tensor \(N, C, H, W\), got shape \(3, 4\)"):
        channel_scores("l2", features=torch.zeros(3, 4))


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
