"""Tests of tffd_viz.models: the CIFAR zoo against a plain re-statement of RepDistiller's models, and taps.

The reference forward passes below read nothing but the zoo model's ``state_dict`` (by RepDistiller's
key names) and use ``torch.nn.functional`` only, so they check key names, weight shapes, wiring and
tap semantics at once. Parameter counts are checked against closed-form counts of the same
architectures.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.models import (
    MODELS,
    TapInfo,
    ZooModel,
    create_model,
    default_taps,
    extract_taps,
    model_arch,
    resolve_taps,
    tap_info,
    tap_names,
)
from tffd_viz.models.imagenet import IMAGENET_ARCHS
from tffd_viz.models.resnet_a import RESNET_A_CONFIGS
from tffd_viz.models.vgg_bn import VGG_BN_CONFIGS

pytestmark = pytest.mark.usefixtures("single_thread")

# --------------------------------------------------------------------------------------------------
# RepDistiller's architectures, restated (depth and widths as in its models/{resnet,wrn,vgg}.py)
# --------------------------------------------------------------------------------------------------

REF_RESNETS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    **{f"resnet{d}": (d, (16, 16, 32, 64)) for d in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": (8, (32, 64, 128, 256)),
    "resnet32x4": (32, (32, 64, 128, 256)),
}
REF_WRNS: dict[str, tuple[int, int]] = {
    "wrn_16_1": (16, 1),
    "wrn_16_2": (16, 2),
    "wrn_40_1": (40, 1),
    "wrn_40_2": (40, 2),
}
REF_VGGS: dict[str, list[list[int]]] = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256, 256], [512, 512], [512, 512]],
    "vgg13": [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    "vgg16": [[64, 64], [128, 128], [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}
ZOO_NAMES = sorted(
    set(MODELS)
    - set(IMAGENET_ARCHS)  # the 224-pixel torchvision ones: test_models_imagenet.py
    - set(RESNET_A_CONFIGS)
    - set(VGG_BN_CONFIGS)
)  # option-A ResNets, BN-VGGs: test_cifar_zoos.py

# Per-sample stage shapes on a 32x32 input, as published for the zoo.
PUBLISHED_TAP_SHAPES: dict[str, list[tuple[int, int, int]]] = {
    **{n: [(16, 32, 32), (32, 16, 16), (64, 8, 8)] for n in REF_RESNETS if not n.endswith("x4")},
    "resnet8x4": [(64, 32, 32), (128, 16, 16), (256, 8, 8)],
    "resnet32x4": [(64, 32, 32), (128, 16, 16), (256, 8, 8)],
    "wrn_16_1": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "wrn_40_1": [(16, 32, 32), (32, 16, 16), (64, 8, 8)],
    "wrn_16_2": [(32, 32, 32), (64, 16, 16), (128, 8, 8)],
    "wrn_40_2": [(32, 32, 32), (64, 16, 16), (128, 8, 8)],
    **{n: [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 4, 4)] for n in REF_VGGS},
}

# Parameter counts in millions of RepDistiller's CIFAR-100 table (CRD, ICLR 2020), rounded there.
PUBLISHED_MILLIONS = {
    "resnet20": 0.28,
    "resnet110": 1.74,
    "resnet8x4": 1.23,
    "resnet32x4": 7.43,
    "wrn_16_2": 0.70,
    "wrn_40_2": 2.26,
    "vgg8": 3.96,
    "vgg13": 9.46,
}


def ref_resnet_params(depth: int, w: tuple[int, int, int, int], num_classes: int, in_chans: int) -> int:
    n = (depth - 2) // 6
    total = 9 * in_chans * w[0] + 2 * w[0]
    inplanes = w[0]
    for stage, planes in enumerate(w[1:]):
        for i in range(n):
            c_in = inplanes if i == 0 else planes
            total += 9 * c_in * planes + 2 * planes + 9 * planes * planes + 2 * planes
            if i == 0 and (stage > 0 or c_in != planes):
                total += c_in * planes + 2 * planes  # 1x1 downsample conv + BN
        inplanes = planes
    return total + w[3] * num_classes + num_classes


def ref_wrn_params(depth: int, k: int, num_classes: int, in_chans: int) -> int:
    n = (depth - 4) // 6
    ch = [16, 16 * k, 32 * k, 64 * k]
    total = 9 * in_chans * 16
    for s in (1, 2, 3):
        for i in range(n):
            a, b = (ch[s - 1] if i == 0 else ch[s]), ch[s]
            total += 2 * a + 9 * a * b + 2 * b + 9 * b * b + (a * b if a != b else 0)
    return total + 2 * ch[3] + ch[3] * num_classes + num_classes


def ref_vgg_params(cfg: list[list[int]], num_classes: int, in_chans: int) -> int:
    total, c = 0, in_chans
    for widths in cfg:
        for w in widths:
            total += 9 * c * w + w + 2 * w  # conv with bias + BN
            c = w
    return total + c * num_classes + num_classes


def ref_param_count(name: str, num_classes: int, in_chans: int) -> int:
    if name in REF_RESNETS:
        return ref_resnet_params(*REF_RESNETS[name], num_classes, in_chans)
    if name in REF_WRNS:
        return ref_wrn_params(*REF_WRNS[name], num_classes, in_chans)
    return ref_vgg_params(REF_VGGS[name], num_classes, in_chans)


class KeyRecorder(dict):
    """A state_dict that remembers which keys were read."""

    def __init__(self, *args: object, **kwargs: object):
        super().__init__(*args, **kwargs)
        self.used: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.used.add(key)
        return super().__getitem__(key)


def _bn(sd: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def ref_resnet_forward(sd: dict, x: torch.Tensor, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """RepDistiller ResNet, eval mode: logits and the post-ReLU stage outputs f1, f2, f3."""
    depth, widths = REF_RESNETS[name]
    x = F.relu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], padding=1)))
    feats = []
    for s in (1, 2, 3):
        for i in range((depth - 2) // 6):
            p = f"layer{s}.{i}"
            stride = 2 if (s > 1 and i == 0) else 1
            out = F.relu(_bn(sd, f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"], stride=stride, padding=1)))
            out = _bn(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1))
            if stride != 1 or x.shape[1] != widths[s]:
                x = _bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))
            x = F.relu(out + x)
        feats.append(x)
    return F.linear(F.avg_pool2d(x, 8).flatten(1), sd["fc.weight"], sd["fc.bias"]), feats


def ref_wrn_forward(sd: dict, x: torch.Tensor, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """RepDistiller WRN, eval mode: logits and the block outputs f1, f2, f3 (pre-activation sums)."""
    depth, k = REF_WRNS[name]
    x = F.conv2d(x, sd["conv1.weight"], padding=1)
    feats = []
    for s in (1, 2, 3):
        for i in range((depth - 4) // 6):
            p = f"block{s}.layer.{i}"
            stride = 2 if (s > 1 and i == 0) else 1
            act = F.relu(_bn(sd, f"{p}.bn1", x))
            out = F.relu(
                _bn(sd, f"{p}.bn2", F.conv2d(act, sd[f"{p}.conv1.weight"], stride=stride, padding=1))
            )
            out = F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1)
            equal_in_out = x.shape[1] == 16 * k * 2 ** (s - 1)
            x = (x if equal_in_out else F.conv2d(act, sd[f"{p}.convShortcut.weight"], stride=stride)) + out
        feats.append(x)
    x = F.relu(_bn(sd, "bn1", x))
    return F.linear(F.avg_pool2d(x, 8).flatten(1), sd["fc.weight"], sd["fc.bias"]), feats


def ref_vgg_forward(sd: dict, x: torch.Tensor, name: str) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """RepDistiller VGG (BN), eval mode, 32x32: logits and the post-ReLU block outputs f0..f4."""
    feats = []
    for b, widths in enumerate(REF_VGGS[name]):
        for j in range(len(widths)):  # Sequential of conv (3j), BN (3j+1), ReLU (3j+2)
            x = F.conv2d(x, sd[f"block{b}.{3 * j}.weight"], sd[f"block{b}.{3 * j}.bias"], padding=1)
            x = F.relu(_bn(sd, f"block{b}.{3 * j + 1}", x))
        feats.append(x)
        if b < 3:  # pool0..2; pool3 only for 64x64 inputs
            x = F.max_pool2d(x, 2, 2)
    return F.linear(
        F.adaptive_avg_pool2d(x, 1).flatten(1), sd["classifier.weight"], sd["classifier.bias"]
    ), feats


REF_FORWARDS: dict[str, Callable[[dict, torch.Tensor, str], tuple[torch.Tensor, list[torch.Tensor]]]] = {
    **dict.fromkeys(REF_RESNETS, ref_resnet_forward),
    **dict.fromkeys(REF_WRNS, ref_wrn_forward),
    **dict.fromkeys(REF_VGGS, ref_vgg_forward),
}


# --------------------------------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------------------------------


def hooks_left(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def randomize_bn(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running stats and affine parameters (so eval BN is not ~identity)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(torch.randn(c, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(c, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(c, generator=gen) * 0.1)


@pytest.fixture(scope="module")
def zoo() -> Callable[[str, int], ZooModel]:
    """Build each (name, in_chans) zoo model once, 7 classes, eval mode; treat as read-only."""
    cache: dict[tuple[str, int], ZooModel] = {}

    def get(name: str, in_chans: int = 3) -> ZooModel:
        if (name, in_chans) not in cache:
            torch.manual_seed(0)
            cache[(name, in_chans)] = create_model(name, num_classes=7, in_chans=in_chans).eval()
        return cache[(name, in_chans)]

    return get


@pytest.fixture
def resnet20() -> ZooModel:
    torch.manual_seed(0)
    return create_model("resnet20", num_classes=7)


# --------------------------------------------------------------------------------------------------
# the zoo
# --------------------------------------------------------------------------------------------------


def test_reference_tables_cover_the_zoo():
    assert set(REF_RESNETS) | set(REF_WRNS) | set(REF_VGGS) == set(ZOO_NAMES)
    assert set(PUBLISHED_TAP_SHAPES) == set(ZOO_NAMES)


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", ZOO_NAMES)
def test_zoo_logits_taps_and_param_count(zoo, name, in_chans):
    model = zoo(name, in_chans)
    assert isinstance(model, ZooModel)
    assert (model.arch, model.num_classes, model.in_chans) == (name, 7, in_chans)
    assert model_arch(model) == name
    x = torch.randn(2, in_chans, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits, taps = extract_taps(model, x, return_logits=True)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert list(taps) == list(model.default_taps) == list(default_taps(model))
    assert [tuple(t.shape) for t in taps.values()] == [(2, *s) for s in PUBLISHED_TAP_SHAPES[name]]
    assert sum(p.numel() for p in model.parameters()) == ref_param_count(name, 7, in_chans)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_tap_info_matches_published_shapes(zoo, name):
    infos = tap_info(zoo(name, 3))
    shapes = PUBLISHED_TAP_SHAPES[name]
    assert list(infos.values()) == [
        TapInfo(name=t, shape=s, channels=s[0], reduction=32 // s[1]) for t, s in zip(infos, shapes)
    ]


@pytest.mark.parametrize(("name", "count"), [("resnet20", 278_324), ("resnet110", 1_736_564)])
def test_param_counts_cifar100(name, count):
    model = create_model(name, num_classes=100)
    assert sum(p.numel() for p in model.parameters()) == count == ref_param_count(name, 100, 3)


@pytest.mark.parametrize("name", sorted(PUBLISHED_MILLIONS))
def test_param_counts_match_published_table(name):
    # the closed-form count is checked against every zoo model above; here against the rounded table
    count = ref_param_count(name, 100, 3)
    assert abs(count / 1e6 - PUBLISHED_MILLIONS[name]) <= 0.0051


@pytest.mark.parametrize(
    "name", ["resnet8", "resnet20", "resnet8x4", "wrn_16_1", "wrn_16_2", "vgg8", "vgg11"]
)
def test_zoo_matches_repdistiller_forward(name):
    """Same logits and taps as RepDistiller's architecture computed from the state_dict alone."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).double().eval()
    randomize_bn(model)
    sd = KeyRecorder(model.state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_logits, ref_feats = REF_FORWARDS[name](sd, x, name)
        logits, taps = extract_taps(model, x, return_logits=True)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-10, atol=1e-10)
    assert len(taps) == len(ref_feats)
    for got, want in zip(taps.values(), ref_feats):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # every learnable tensor and BN buffer is used by RepDistiller's forward, under the same name
    assert sd.used == {k for k in sd if not k.endswith("num_batches_tracked")}


def test_state_dict_key_names():
    keys = {
        n: set(create_model(n, num_classes=10).state_dict())
        for n in ("resnet20", "resnet8x4", "wrn_40_2", "vgg8", "vgg13")
    }
    assert {
        "conv1.weight",
        "bn1.running_var",
        "layer1.0.conv1.weight",
        "layer1.2.bn2.bias",
        "layer2.0.downsample.0.weight",
        "layer2.0.downsample.1.running_mean",
        "layer3.0.downsample.1.weight",
        "fc.weight",
        "fc.bias",
    } <= keys["resnet20"]
    assert "layer1.0.downsample.0.weight" not in keys["resnet20"]  # 16 -> 16 channels: identity shortcut
    assert "layer2.1.downsample.0.weight" not in keys["resnet20"]
    assert "layer1.0.downsample.0.weight" in keys["resnet8x4"]  # 32 -> 64 channels
    assert {
        "conv1.weight",
        "block1.layer.0.bn1.weight",
        "block1.layer.0.convShortcut.weight",
        "block2.layer.0.convShortcut.weight",
        "block3.layer.5.conv2.weight",
        "bn1.weight",
        "bn1.running_mean",
        "fc.weight",
    } <= keys["wrn_40_2"]
    assert "block2.layer.1.convShortcut.weight" not in keys["wrn_40_2"]
    assert {
        "block0.0.weight",
        "block0.0.bias",
        "block0.1.weight",
        "block0.1.running_var",
        "block4.0.weight",
        "classifier.weight",
        "classifier.bias",
    } <= keys["vgg8"]
    assert "block0.3.weight" not in keys["vgg8"] and "block0.3.weight" in keys["vgg13"]
    assert not any(k.startswith(("pool", "relu")) for k in keys["vgg8"] | keys["resnet20"])


@pytest.mark.parametrize("name", ["resnet8", "resnet8x4", "wrn_16_2", "vgg8"])
def test_tap_signs(zoo, name):
    model = zoo(name, 3)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        taps = extract_taps(model, x)
    if name.startswith("wrn"):
        # pre-activation sums: not passed through a ReLU
        assert all(float(t.min()) < 0 for t in taps.values())
    else:
        # post-ReLU stage outputs: non-negative, and the ReLU actually clipped something
        assert all(float(t.min()) >= 0 for t in taps.values())
        assert all(bool((t == 0).any()) for t in taps.values())


def test_create_model_errors():
    with pytest.raises(TffdVizError, match=r"resnet_999.*resnet20.*vgg8"):
        create_model("resnet_999")
    with pytest.raises(TffdVizError, match="positive"):
        create_model("resnet8", num_classes=0)
    with pytest.raises(TffdVizError, match="positive"):
        create_model("resnet8", in_chans=0)


@pytest.mark.parametrize("name", ["resnet8", "wrn_16_1", "vgg8"])
def test_wrong_channel_count_raises_data_error(name):
    model = create_model(name, num_classes=3, in_chans=1)
    with pytest.raises(DataError, match=r"\(N, 1, H, W\).*\(2, 3, 32, 32\) with 3 channel"):
        model(torch.zeros(2, 3, 32, 32))
    with pytest.raises(DataError, match="1 input channel"):
        extract_taps(model, torch.zeros(2, 3, 32, 32))
    assert hooks_left(model) == 0
    with pytest.raises(DataError, match=r"\(3, 32, 32\)"):
        model(torch.zeros(3, 32, 32))


# --------------------------------------------------------------------------------------------------
# extract_taps
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_extract_taps_logits_and_taps_agree(resnet20, mode):
    resnet20.train(mode == "train")
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        plain_logits = resnet20(x)
        logits, taps = extract_taps(resnet20, x, return_logits=True)
        taps_only = extract_taps(resnet20, x)
    assert torch.equal(logits, plain_logits)
    assert list(taps) == list(taps_only) == ["layer1", "layer2", "layer3"]
    for name in taps:
        assert torch.equal(taps[name], taps_only[name])
    # the last stage tap is what the head pools
    torch.testing.assert_close(resnet20.fc(taps["layer3"].mean(dim=(2, 3))), logits)


def test_extract_taps_leaves_hooks_modes_and_grad_flags(resnet20):
    own: list[int] = []
    handle = resnet20.layer2.register_forward_hook(lambda m, i, o: own.append(1))
    resnet20.train()
    resnet20.layer1.eval()
    resnet20.conv1.weight.requires_grad_(False)
    modes = {n: m.training for n, m in resnet20.named_modules()}
    flags = {n: p.requires_grad for n, p in resnet20.named_parameters()}
    x = torch.randn(2, 3, 32, 32)
    extract_taps(resnet20, x, taps=["layer1", "layer2", "layer2.0.conv1", "fc"])
    assert {n: m.training for n, m in resnet20.named_modules()} == modes
    assert {n: p.requires_grad for n, p in resnet20.named_parameters()} == flags
    assert own == [1]  # the user's own hook stays and still runs
    assert len(resnet20.layer2._forward_hooks) == 1
    handle.remove()
    assert hooks_left(resnet20) == 0
    with pytest.raises(TapError):
        extract_taps(resnet20, x, taps=["layer1", "nope"])
    assert hooks_left(resnet20) == 0
    resnet20.eval()
    extract_taps(resnet20, x)
    assert not any(m.training for m in resnet20.modules())
    assert hooks_left(resnet20) == 0


def test_extract_taps_no_grad_and_grad(resnet20):
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        taps = extract_taps(resnet20, x)
    assert all(not t.requires_grad and t.grad_fn is None for t in taps.values())
    taps = extract_taps(resnet20, x)
    assert all(t.requires_grad and t.grad_fn is not None for t in taps.values())
    taps["layer1"].sum().backward()
    assert resnet20.conv1.weight.grad is not None and float(resnet20.conv1.weight.grad.abs().sum()) > 0
    assert resnet20.layer1[0].conv1.weight.grad is not None
    # layer1 does not depend on later layers
    assert resnet20.layer2[0].conv1.weight.grad is None and resnet20.fc.weight.grad is None


def test_extract_taps_arbitrary_module_names(resnet20):
    resnet20.eval()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        logits, taps = extract_taps(
            resnet20, x, taps=["fc", "layer2.0.conv1", "avgpool", "layer1", "layer3"], return_logits=True
        )
        conv = F.conv2d(taps["layer1"], resnet20.layer2[0].conv1.weight, stride=2, padding=1)
    assert list(taps) == ["fc", "layer2.0.conv1", "avgpool", "layer1", "layer3"]  # order asked for
    assert taps["layer2.0.conv1"].shape == (2, 32, 16, 16)
    torch.testing.assert_close(taps["layer2.0.conv1"], conv)
    assert taps["avgpool"].shape == (2, 64, 1, 1)
    torch.testing.assert_close(taps["avgpool"], taps["layer3"].mean(dim=(2, 3), keepdim=True))
    assert torch.equal(taps["fc"], logits) and taps["fc"].shape == (2, 7)
    single = extract_taps(resnet20, x, taps="layer2")
    assert list(single) == ["layer2"]


def test_unknown_and_bad_tap_names(resnet20):
    x = torch.zeros(1, 3, 32, 32)
    with pytest.raises(TapError, match=r"layer9.*valid module names: conv1, bn1, relu, layer1, layer1\.0"):
        extract_taps(resnet20, x, taps=["layer1", "layer9"])
    with pytest.raises(TapError) as info:
        resolve_taps(resnet20, ["layer9", "fc.weight"])
    err = info.value
    assert isinstance(err, TffdVizError) and isinstance(err, ValueError)
    assert "'layer9'" in str(err) and "'fc.weight'" in str(err) and "layer2.0.downsample.1" in str(err)
    with pytest.raises(TapError, match="empty"):
        resolve_taps(resnet20, [])
    with pytest.raises(TapError, match="duplicate"):
        resolve_taps(resnet20, ["layer1", "layer1"])
    with pytest.raises(TapError, match="unknown"):
        resolve_taps(resnet20, [""])
    assert resolve_taps(resnet20, None) == ["layer1", "layer2", "layer3"]
    assert tap_names(resnet20) == [n for n, _ in resnet20.named_modules() if n]
    with pytest.raises(TapError, match="declares no default taps"):
        default_taps(nn.Sequential(nn.Linear(2, 2)))


def test_torchvision_resnet18_taps():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    assert default_taps(model) == ("layer1", "layer2", "layer3", "layer4")
    assert model_arch(model) == "ResNet"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits, taps = extract_taps(model, x, return_logits=True)
        picked = extract_taps(model, x, taps=["layer3.1.conv2"])
        plain = model(x)
    assert torch.equal(logits, plain) and logits.shape == (1, 10)
    assert [tuple(t.shape) for t in taps.values()] == [
        (1, 64, 16, 16),
        (1, 128, 8, 8),
        (1, 256, 4, 4),
        (1, 512, 2, 2),
    ]
    assert list(picked) == ["layer3.1.conv2"] and picked["layer3.1.conv2"].shape == (1, 256, 4, 4)
    infos = tap_info(model, input_shape=(3, 64, 64))
    assert [(i.shape, i.reduction) for i in infos.values()] == [
        ((64, 16, 16), 4),
        ((128, 8, 8), 8),
        ((256, 4, 4), 16),
        ((512, 2, 2), 32),
    ]
    assert hooks_left(model) == 0


# --------------------------------------------------------------------------------------------------
# tap_info
# --------------------------------------------------------------------------------------------------


def test_tap_info_values(resnet20):
    infos = tap_info(resnet20, ["layer1", "layer3", "avgpool", "fc"])
    assert list(infos) == ["layer1", "layer3", "avgpool", "fc"]
    assert infos["layer1"] == TapInfo("layer1", (16, 32, 32), 16, 1)
    assert infos["layer3"] == TapInfo("layer3", (64, 8, 8), 64, 4)
    assert infos["avgpool"] == TapInfo("avgpool", (64, 1, 1), 64, 32)
    assert infos["fc"] == TapInfo("fc", (7,), 7, 0)
    gray = create_model("resnet8", num_classes=4, in_chans=1)
    assert [i.shape for i in tap_info(gray).values()] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    with pytest.raises(TapError, match="layer7"):
        tap_info(resnet20, ["layer7"])


def test_tap_info_restores_modes_and_leaves_bn_stats(resnet20):
    randomize_bn(resnet20)
    resnet20.train()
    resnet20.layer2.eval()
    modes = {n: m.training for n, m in resnet20.named_modules()}
    buffers = {n: b.clone() for n, b in resnet20.named_buffers()}
    tap_info(resnet20)
    assert {n: m.training for n, m in resnet20.named_modules()} == modes
    for n, b in resnet20.named_buffers():
        assert torch.equal(b, buffers[n]), n
    assert torch.is_grad_enabled()
    assert hooks_left(resnet20) == 0
    resnet20.eval()
    tap_info(resnet20)
    assert not any(m.training for m in resnet20.modules())
    # a forward pass in train mode does change them (so the check above can fail)
    resnet20.train()
    with torch.no_grad():
        resnet20(torch.randn(2, 3, 32, 32))
    assert not torch.equal(resnet20.bn1.running_mean, buffers["bn1.running_mean"])


def test_taps_survive_later_inplace_ops():
    """torchvision's ReLU(inplace=True) after bn1 would overwrite the tap: it must come back pre-ReLU."""
    import torchvision

    from tffd_viz.models import extract_taps as _extract

    torch.manual_seed(0)
    m = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        taps = _extract(m, x, ["bn1", "layer1"])
        expected = m.bn1(m.conv1(x))
    assert float(taps["bn1"].min()) < 0
    torch.testing.assert_close(taps["bn1"], expected)
    assert float(taps["layer1"].min()) >= 0
