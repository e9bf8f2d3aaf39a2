"""Tests of tffd_viz.importance.model_criteria: the BatchNorm of a tap (bn_gamma) and the Taylor criterion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.importance import (
    BN_RULES,
    bn_for_tap,
    channel_scores,
    taylor_scores,
)
from tffd_viz.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


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
    torch.testing.assert_close(
        channel_scores("bn_gamma", model=vgg, tap="block1"), vgg.block1[1].weight.detach().abs()
    )
    assert bn_for_tap(vgg, "block1").bn == "block1.1"

    wrn = _randomize_bn(create_model("wrn_16_1", num_classes=10, in_chans=1), seed=2)
    match = bn_for_tap(wrn, "block1")
    assert (match.bn, match.rule, match.relation) == ("block2.layer.0.bn1", "next_bn", "normalises")
    assert bn_for_tap(wrn, "block3").bn == "bn1"
    torch.testing.assert_close(
        channel_scores("bn_gamma", model=wrn, tap="block3"), wrn.bn1.weight.detach().abs()
    )
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
    loss = sum(F.cross_entropy(logits[i : i + 1], y[i : i + 1]) for i in range(7))
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
