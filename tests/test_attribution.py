"""Tests of tffd_viz.attribution against plain autograd re-statements of Grad-CAM, IG and the criteria."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tffd_viz import importance
from tffd_viz.attribution import (
    BASELINES,
    gradcam_maps,
    gradcam_raw,
    integrated_gradients_maps,
    integrated_gradients_raw,
    layer_conductance_scores,
    layer_grad_x_activation_scores,
    normalized_maps,
)
from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.models import create_model


class TinyNet(nn.Module):
    """conv-BN-ReLU -> conv(stride 2)-ReLU (``act2``, the tap) -> global average pool -> linear head."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.act2 = nn.ReLU()
        self.fc = nn.Linear(6, classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.act2(self.conv2(self.act1(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class PairOut(nn.Module):
    """A layer whose output is a tuple (its first element is the feature map)."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(x), x.mean()


class TupleNet(nn.Module):
    """Same computation as TinyNet, but the tap returns a tuple and the model returns (logits, feats)."""

    def __init__(self, tiny: TinyNet):
        super().__init__()
        self.conv1, self.bn1, self.act1, self.conv2, self.fc = (
            tiny.conv1,
            tiny.bn1,
            tiny.act1,
            tiny.conv2,
            tiny.fc,
        )
        self.act2 = PairOut()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f, _ = self.act2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.fc(f.mean(dim=(2, 3))), f


@pytest.fixture
def tiny() -> TinyNet:
    torch.manual_seed(0)
    m = TinyNet()
    m.bn1.running_mean.uniform_(-0.2, 0.2)
    m.bn1.running_var.uniform_(0.5, 1.5)
    return m.train()  # the functions must switch to eval mode and back


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(5, 1, 16, 16, generator=torch.Generator().manual_seed(1))


def _snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, bool]]:
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
    )


def _assert_untouched(model: nn.Module, snap) -> None:
    state, modes = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(p.grad is None for p in model.parameters())


def _act_and_grad(model: TinyNet, x: torch.Tensor, target: torch.Tensor | None):
    """Eval-mode tap output A (N, C, h, w) and d logit_target / dA by plain autograd."""
    ref = TinyNet(classes=model.fc.out_features)
    ref.load_state_dict(model.state_dict())
    ref.eval()
    a = ref.features(x)
    logits = ref.fc(a.mean(dim=(2, 3)))
    t = logits.argmax(1) if target is None else target
    (g,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), a)
    return a.detach(), g, t, ref


# --------------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, torch.tensor([0, 1, 2, 1, 0])])
def test_gradcam_raw_equals_restatement(tiny, images, target):
    snap = _snapshot(tiny)
    raw = gradcam_raw(tiny, images, target=target, layer="act2")
    _assert_untouched(tiny, snap)
    a, g, _, _ = _act_and_grad(tiny, images, target)
    expected = F.relu((g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1))
    assert raw.shape == (5, 8, 8)
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-7)
    signed = gradcam_raw(tiny, images, target=target, layer="act2", relu=False)
    torch.testing.assert_close(
        signed, (g.mean(dim=(2, 3), keepdim=True) * a).sum(dim=1), rtol=1e-5, atol=1e-7
    )


def test_gradcam_maps_upsampled_and_normalised(tiny, images):
    snap = _snapshot(tiny)
    maps = gradcam_maps(tiny, images, layer="act2")
    _assert_untouched(tiny, snap)
    assert maps.shape == (5, 16, 16)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    raw = gradcam_raw(tiny, images, layer="act2")
    up = F.interpolate(raw[:, None], size=(16, 16), mode="bilinear", align_corners=False)[:, 0]
    for i in range(5):
        m = up[i]
        exp = (m - m.min()) / (m.max() - m.min()) if m.max() > m.min() else torch.zeros_like(m)
        torch.testing.assert_close(maps[i], exp, rtol=1e-5, atol=1e-6)


def test_gradcam_without_positive_evidence_is_zero_not_nan(tiny, images):
    with torch.no_grad():
        tiny.fc.weight[0].fill_(-1.0)  # target 0: every channel weight negative -> CAM <= 0 -> ReLU -> 0
    maps = gradcam_maps(tiny, images, target=0, layer="act2")
    assert torch.equal(maps, torch.zeros(5, 16, 16))


def test_tuple_outputs_are_unwrapped(tiny, images):
    tuple_net = TupleNet(tiny)
    torch.testing.assert_close(
        gradcam_raw(tuple_net, images, layer="act2"), gradcam_raw(tiny, images, layer="act2")
    )
    torch.testing.assert_close(
        integrated_gradients_raw(tuple_net, images, n_steps=8),
        integrated_gradients_raw(tiny, images, n_steps=8),
    )
    torch.testing.assert_close(
        layer_grad_x_activation_scores(tuple_net, images, None, "act2"),
        layer_grad_x_activation_scores(tiny, images, None, "act2"),
    )
    assert all(p.grad is None for p in tuple_net.parameters())


def test_gradcam_on_zoo_model():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_chans=1).eval()
    maps = gradcam_maps(model, torch.randn(2, 1, 32, 32))
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert all(p.grad is None for p in model.parameters())


def test_normalized_maps_edge_cases():
    maps = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 3.0), torch.arange(16.0).view(4, 4)])
    out = normalized_maps(maps)
    assert torch.equal(out[0], torch.zeros(4, 4)) and torch.equal(out[1], torch.zeros(4, 4))
    torch.testing.assert_close(out[2], torch.arange(16.0).view(4, 4) / 15.0)
    bad = torch.tensor([[[float("nan"), 1.0], [2.0, float("inf")]]])
    assert torch.isfinite(normalized_maps(bad)).all()


# --------------------------------------------------------------------------------------------------
# Integrated Gradients
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("baseline", ["zeros", "channel_mean"])
def test_integrated_gradients_completeness(tiny, images, baseline):
    snap = _snapshot(tiny)
    raw = integrated_gradients_raw(tiny, images, n_steps=64, baseline=baseline)
    _assert_untouched(tiny, snap)
    assert raw.shape == images.shape
    ref = TinyNet()
    ref.load_state_dict(tiny.state_dict())
    ref.eval()
    base = BASELINES[baseline](images)
    with torch.no_grad():
        out = ref(images)
        t = out.argmax(1)
        diff = out.gather(1, t[:, None])[:, 0] - ref(base).gather(1, t[:, None])[:, 0]
    total = raw.sum(dim=(1, 2, 3))
    assert diff.abs().min() > 1e-3  # the check is not vacuous
    torch.testing.assert_close(total, diff, rtol=2e-2, atol=2e-3)


def test_integrated_gradients_tensor_baseline_and_maps(tiny, images):
    base = torch.full((1, 1, 16, 16), 0.5)
    raw = integrated_gradients_raw(tiny, images, target=2, n_steps=64, baseline=base)
    ref = TinyNet()
    ref.load_state_dict(tiny.state_dict())
    ref.eval()
    with torch.no_grad():
        diff = ref(images)[:, 2] - ref(base.expand_as(images))[:, 2]
    torch.testing.assert_close(raw.sum(dim=(1, 2, 3)), diff, rtol=2e-2, atol=2e-3)
    maps = integrated_gradients_maps(tiny, images, n_steps=16)
    assert maps.shape == (5, 16, 16)
    assert maps.min() >= 0 and maps.max() <= 1
    torch.testing.assert_close(
        maps, normalized_maps(integrated_gradients_raw(tiny, images, n_steps=16).abs().sum(1))
    )
    assert all(p.grad is None for p in tiny.parameters())


# --------------------------------------------------------------------------------------------------
# channel-importance criteria
# --------------------------------------------------------------------------------------------------


def test_criteria_registered():
    for name, fn in [
        ("layer_conductance", layer_conductance_scores),
        ("layer_grad_x_activation", layer_grad_x_activation_scores),
    ]:
        crit = importance.CRITERIA[name]
        assert crit.name == name and crit.fn is fn


def test_grad_x_activation_equals_restatement(tiny, images):
    labels = torch.tensor([2, 0, 1, 1, 0])
    snap = _snapshot(tiny)
    scores = layer_grad_x_activation_scores(tiny, images, labels, "act2")
    _assert_untouched(tiny, snap)
    a, g, _, _ = _act_and_grad(tiny, images, labels)
    expected = (a * g).sum(dim=(2, 3)).mean(dim=0).abs()
    assert scores.shape == (6,)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-8)


def test_conductance_equals_linear_head_restatement(tiny, images):
    # act2 is followed by mean-pool + linear, so the conductance of channel c of image n is exactly
    # W[t_n, c] * (mean_hw A(x_n) - mean_hw A(0))[c]
    labels = torch.tensor([1, 1, 0, 2, 0])
    snap = _snapshot(tiny)
    scores = layer_conductance_scores(tiny, images, labels, "act2", n_steps=8)
    _assert_untouched(tiny, snap)
    a, _, _, ref = _act_and_grad(tiny, images, labels)
    with torch.no_grad():
        a0 = ref.features(torch.zeros_like(images))
    per_image = ref.fc.weight[labels].detach() * (a.mean(dim=(2, 3)) - a0.mean(dim=(2, 3)))
    assert scores.shape == (6,)
    torch.testing.assert_close(scores, per_image.mean(dim=0).abs(), rtol=1e-4, atol=1e-6)


def test_existing_grads_are_kept(tiny, images):
    tiny.fc.weight.grad = torch.full_like(tiny.fc.weight, 7.0)
    layer_conductance_scores(tiny, images, None, "act2", n_steps=4)
    gradcam_raw(tiny, images, layer="act2")
    assert torch.equal(tiny.fc.weight.grad, torch.full_like(tiny.fc.weight, 7.0))
    assert all(p.grad is None for n, p in tiny.named_parameters() if n != "fc.weight")


def test_errors(tiny, images):
    with pytest.raises(TapError, match="layer9"):
        gradcam_raw(tiny, images, layer="layer9")
    with pytest.raises(DataError, match=r"\(5,\)"):
        gradcam_raw(tiny, images, target=torch.tensor([0, 1]), layer="act2")
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        integrated_gradients_raw(tiny, images, target=3)
    with pytest.raises(TffdVizError, match="baseline"):
        integrated_gradients_raw(tiny, images, baseline="noise")
    with pytest.raises(DataError, match="N, C, H, W"):
        gradcam_maps(tiny, images[0], layer="act2")


def test_selected_attribution_maps_equal_maps_of_the_rows(tiny, images):
    from tffd_viz.attribution import ATTRIBUTION_MAPS, selected_attribution_maps

    assert set(ATTRIBUTION_MAPS) == {"gradcam", "integrated_gradients"}
    snap = _snapshot(tiny)
    rows = [3, 0]
    got = selected_attribution_maps(tiny, images, rows, layer="act2")
    torch.testing.assert_close(got, gradcam_maps(tiny, images[rows], layer="act2"), rtol=0, atol=0)
    labels = torch.tensor([2, 1, 0, 1, 2])
    got = selected_attribution_maps(tiny, images, rows, labels=labels, layer="act2")
    torch.testing.assert_close(
        got, gradcam_maps(tiny, images[rows], target=labels[rows], layer="act2"), rtol=0, atol=0
    )
    got = selected_attribution_maps(
        tiny, images, (1,), method="integrated_gradients", labels=labels, n_steps=8
    )
    expected = integrated_gradients_maps(tiny, images[[1]], target=labels[[1]], n_steps=8)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.shape == (1, 16, 16)
    _assert_untouched(tiny, snap)
    with pytest.raises(TffdVizError, match="unknown attribution method 'lime'"):
        selected_attribution_maps(tiny, images, [0], method="lime")
    with pytest.raises(DataError, match=r"rows in \[0, 5\).*got \[5\]"):
        selected_attribution_maps(tiny, images, [5], layer="act2")
    with pytest.raises(DataError, match="non-empty"):
        selected_attribution_maps(tiny, images, [], layer="act2")
    with pytest.raises(DataError, match=r"labels must have shape \(5,\)"):
        selected_attribution_maps(tiny, images, [0], labels=labels[:3], layer="act2")
