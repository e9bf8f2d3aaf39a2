"""Checkpoints of the common CIFAR model zoos load as they are (issue 16).

The references below are plain re-statements, from the state dict alone and ``torch.nn.functional``, of
akamaster/pytorch_resnet_cifar10's ``resnet.py`` (option-A ResNets, ``linear`` head) and of
chenyaofo/pytorch-cifar-models' ``vgg.py`` (BN-VGG, three-layer classifier), under those code bases' key
names. The real akamaster ResNet-20 file is read from ``../shared/data/external`` (skipped where absent).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR_ROOT

from tffd_viz.checkpoints import (
    LAYOUTS,
    infer_arch,
    load_checkpoint,
    read_card,
    recognised_as,
    save_checkpoint,
)
from tffd_viz.errors import CheckpointError
from tffd_viz.models import MODELS, create_model, default_taps, extract_taps, tap_info
from tffd_viz.models.resnet_a import RESNET_A_CONFIGS
from tffd_viz.models.vgg_bn import VGG_BN_CONFIGS
from tffd_viz.normalisation import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    trained_elsewhere,
)
from tffd_viz.terms import tffd_terms_on_batch

pytestmark = pytest.mark.usefixtures("single_thread")

AKAMASTER_FILE = Path(CIFAR_ROOT) / "external" / "akamaster_resnet20.th"
AKAMASTER_DEPTHS = (20, 32, 44, 56, 110, 1202)
# chenyaofo's cfgs: widths, "M" = 2x2 max-pool
VGG_CFGS = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
        "M",
    ],
}


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


# --------------------------------------------------------------------------- akamaster, restated
def akamaster_forward(sd: dict, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the three stage outputs of akamaster's option-A ResNet, keys without ``module.``."""
    h = F.relu(_bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], padding=1)))
    stages = []
    for stage in (1, 2, 3):
        blocks = len({k.split(".")[1] for k in sd if k.startswith(f"layer{stage}.")})
        for i in range(blocks):
            p = f"layer{stage}.{i}"
            w = sd[f"{p}.conv1.weight"]
            stride = 2 if stage > 1 and i == 0 else 1
            out = F.relu(_bn(sd, f"{p}.bn1", F.conv2d(h, w, stride=stride, padding=1)))
            out = _bn(sd, f"{p}.bn2", F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1))
            planes = w.shape[0]
            if stride != 1 or h.shape[1] != planes:  # option A: subsample, zero channels on both sides
                h = F.pad(h[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))
            h = F.relu(out + h)
        stages.append(h)
    h = F.avg_pool2d(h, h.shape[3]).flatten(1)
    return F.linear(h, sd["linear.weight"], sd["linear.bias"]), stages


def _random_bn(sd: dict, prefix: str, c: int, gen: torch.Generator, gain: float = 1.0) -> None:
    sd[f"{prefix}.weight"] = (torch.rand(c, generator=gen) + 0.5) * gain
    sd[f"{prefix}.bias"] = torch.randn(c, generator=gen) * 0.1
    sd[f"{prefix}.running_mean"] = torch.randn(c, generator=gen) * 0.1
    sd[f"{prefix}.running_var"] = torch.rand(c, generator=gen) + 0.5


def akamaster_state(depth: int, num_classes: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict in akamaster's names (as its old torch saved it: no num_batches_tracked)."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {"conv1.weight": torch.randn(16, 3, 3, 3, generator=gen) * 0.3}
    _random_bn(sd, "bn1", 16, gen)
    inplanes = 16
    for stage, planes in ((1, 16), (2, 32), (3, 64)):
        for i in range((depth - 2) // 6):
            p = f"layer{stage}.{i}"
            sd[f"{p}.conv1.weight"] = (
                torch.randn(planes, inplanes, 3, 3, generator=gen) * (2 / (9 * inplanes)) ** 0.5
            )
            _random_bn(sd, f"{p}.bn1", planes, gen)
            sd[f"{p}.conv2.weight"] = (
                torch.randn(planes, planes, 3, 3, generator=gen) * (2 / (9 * planes)) ** 0.5
            )
            _random_bn(sd, f"{p}.bn2", planes, gen, gain=min(1.0, 3 / depth))  # 1200 blocks stay finite
            inplanes = planes
    sd["linear.weight"] = torch.randn(num_classes, 64, generator=gen) * 0.1
    sd["linear.bias"] = torch.randn(num_classes, generator=gen) * 0.1
    return sd


def akamaster_file(sd: dict, best: float = 91.0) -> bytes:
    """Bytes as akamaster's trainer saves them: legacy pickle, DataParallel prefix, ``best_prec1``."""
    buf = io.BytesIO()
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in sd.items()}, "best_prec1": torch.tensor(best)},
        buf,
        _use_new_zipfile_serialization=False,
    )
    return buf.getvalue()


# ---------------------------------------------------------------------------- chenyaofo, restated
def vgg_forward(sd: dict, x: torch.Tensor, depth: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits and the five pooled stage outputs of chenyaofo's BN-VGG."""
    pooled, i = [], 0
    for v in VGG_CFGS[depth]:
        if v == "M":
            x = F.max_pool2d(x, 2, 2)
            pooled.append(x)
            i += 1
        else:
            x = F.relu(
                _bn(
                    sd,
                    f"features.{i + 1}",
                    F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1),
                )
            )
            i += 3
    h = x.flatten(1)
    h = F.relu(F.linear(h, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    h = F.relu(F.linear(h, sd["classifier.3.weight"], sd["classifier.3.bias"]))
    return F.linear(h, sd["classifier.6.weight"], sd["classifier.6.bias"]), pooled


def vgg_state(depth: int, num_classes: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    i, c = 0, 3
    for v in VGG_CFGS[depth]:
        if v == "M":
            i += 1
            continue
        sd[f"features.{i}.weight"] = torch.randn(v, c, 3, 3, generator=gen) * (2 / (9 * c)) ** 0.5
        sd[f"features.{i}.bias"] = torch.randn(v, generator=gen) * 0.1
        _random_bn(sd, f"features.{i + 1}", v, gen)
        sd[f"features.{i + 1}.num_batches_tracked"] = torch.tensor(7)
        i, c = i + 3, v
    for j, (rows, cols) in {0: (512, 512), 3: (512, 512), 6: (num_classes, 512)}.items():
        sd[f"classifier.{j}.weight"] = torch.randn(rows, cols, generator=gen) * (2 / cols) ** 0.5
        sd[f"classifier.{j}.bias"] = torch.randn(rows, generator=gen) * 0.1
    return sd


def torch_file(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------ the real file
@pytest.fixture(scope="module")
def akamaster_real():
    if not AKAMASTER_FILE.is_file():
        pytest.skip(f"{AKAMASTER_FILE} is absent")
    raw = torch.load(AKAMASTER_FILE, weights_only=True, map_location="cpu")
    return raw, load_checkpoint(AKAMASTER_FILE)


def test_real_akamaster_file_loads_without_arch_and_matches_its_code(akamaster_real):
    raw, (model, card) = akamaster_real
    sd = {k.removeprefix("module."): v for k, v in raw["state_dict"].items()}
    assert model.arch == "resnet20_a" and (card["arch"], card["num_classes"], card["in_chans"]) == (
        "resnet20_a",
        10,
        3,
    )
    x = _x(4)
    with torch.no_grad():
        logits, taps = extract_taps(model, x, return_logits=True)
        ref_logits, ref_stages = akamaster_forward(sd, x)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5)
    for got, want in zip(taps.values(), ref_stages, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert list(taps) == ["layer1", "layer2", "layer3"]


def test_real_akamaster_card_says_imagenet_stats_and_the_zoo(akamaster_real):
    raw, (_, card) = akamaster_real
    assert card["mean"] == list(IMAGENET_MEAN) and card["std"] == list(IMAGENET_STD)
    assert card["dataset"] == "cifar10"
    assert (
        card["source_layout"] == "akamaster"
        and LAYOUTS["akamaster"].source == "akamaster/pytorch_resnet_cifar10"
    )
    assert card["recognised_as"] == "option-A ResNet-20 (resnet20_a) of akamaster/pytorch_resnet_cifar10"
    assert card["best_acc"] == pytest.approx(float(raw["best_prec1"]))
    assert trained_elsewhere(card)
    assert read_card(AKAMASTER_FILE)["mean"] == list(IMAGENET_MEAN)


# --------------------------------------------------------------------------- every published size
@pytest.mark.parametrize("depth", AKAMASTER_DEPTHS)
def test_option_a_resnets_load_from_akamaster_files(depth):
    sd = akamaster_state(depth)
    model, card = load_checkpoint(akamaster_file(sd))
    assert (card["arch"], card["source_layout"], card["dataset"]) == (
        f"resnet{depth}_a",
        "akamaster",
        "cifar10",
    )
    assert card["mean"] == list(IMAGENET_MEAN)
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), akamaster_forward(sd, x)[0], rtol=1e-4, atol=1e-5)
    # no weighted shortcut anywhere: the state dict is exactly akamaster's, head renamed
    assert set(model.state_dict()) - {k for k in model.state_dict() if k.endswith("num_batches_tracked")} == {
        k.replace("linear.", "fc.") for k in sd
    }


def test_option_a_later_revision_names_load():
    """Later revisions of akamaster's resnet.py name the convolutions and head ``compressible_*``."""
    sd = akamaster_state(20, seed=3)
    renamed = {
        k.replace("conv", "compressible_conv").replace("linear", "compressible_linear"): v
        for k, v in sd.items()
    }
    model, card = load_checkpoint(akamaster_file(renamed))
    x = _x(1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), akamaster_forward(sd, x)[0], rtol=1e-5, atol=1e-5)
    assert card["recognised_as"].startswith("option-A ResNet-20")


@pytest.mark.parametrize(("depth", "classes"), [(11, 10), (13, 100), (16, 10), (19, 100)])
def test_chenyaofo_bn_vggs_load_with_their_taps(depth, classes):
    sd = vgg_state(depth, classes)
    model, card = load_checkpoint(torch_file(sd))
    assert (card["arch"], card["num_classes"], card["source_layout"]) == (
        f"cifar_vgg{depth}_bn",
        classes,
        "chenyaofo-vgg",
    )
    assert card["dataset"] == f"cifar{classes}" and card["mean"] is None  # the file does not say
    assert card["recognised_as"] == f"BN-VGG-{depth} (cifar_vgg{depth}_bn) of chenyaofo/pytorch-cifar-models"
    x = _x(2)
    with torch.no_grad():
        logits, taps = extract_taps(model, x, return_logits=True)
        ref_logits, ref_pooled = vgg_forward(sd, x, depth)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-5)
    assert list(taps) == [f"features.pool{k}" for k in range(5)] == list(default_taps(model))
    for got, want in zip(taps.values(), ref_pooled, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def option_a_params(depth: int, classes: int, in_chans: int) -> int:
    """Closed-form parameter count of an option-A ResNet: convolutions, BatchNorm affine, linear head."""
    n = (depth - 2) // 6
    convs = 16 * in_chans * 9 + sum(
        w * cin * 9 + w * w * 9 + (n - 1) * 2 * w * w * 9 for w, cin in ((16, 16), (32, 16), (64, 32))
    )
    return convs + 2 * (16 + 2 * n * (16 + 32 + 64)) + 64 * classes + classes


def vgg_bn_params(depth: int, classes: int, in_chans: int) -> int:
    total, c = 0, in_chans
    for v in VGG_CFGS[depth]:
        if v != "M":
            total, c = total + 9 * c * v + v + 2 * v, v
    return total + 2 * (512 * 512 + 512) + 512 * classes + classes


NEW_FAMILIES = {
    **{
        f"resnet{d}_a": (option_a_params, d, [(16, 32, 32), (32, 16, 16), (64, 8, 8)])
        for d in AKAMASTER_DEPTHS
        if d != 1202
    },
    **{
        f"cifar_vgg{d}_bn": (
            vgg_bn_params,
            d,
            [(64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2), (512, 1, 1)],
        )
        for d in VGG_CFGS
    },
}


def test_new_families_are_all_in_the_zoo():
    assert set(RESNET_A_CONFIGS) == {f"resnet{d}_a" for d in AKAMASTER_DEPTHS} and set(NEW_FAMILIES) < set(
        MODELS
    )
    assert set(VGG_BN_CONFIGS) == {f"cifar_vgg{d}_bn" for d in VGG_CFGS}
    # published sizes (akamaster's table: 0.27M, 0.46M, 0.66M, 0.85M, 1.7M, 19.4M parameters)
    published = {20: 0.27, 32: 0.46, 44: 0.66, 56: 0.85, 110: 1.7, 1202: 19.4}
    assert all(abs(option_a_params(d, 10, 3) / 1e6 - m) < 0.06 * m for d, m in published.items())


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", sorted(NEW_FAMILIES))
def test_new_families_taps_and_param_counts(name, in_chans):
    count, depth, shapes = NEW_FAMILIES[name]
    model = create_model(name, num_classes=7, in_chans=in_chans).eval()
    assert [i.shape for i in tap_info(model).values()] == shapes
    assert sum(p.numel() for p in model.parameters()) == count(depth, 7, in_chans)


def test_tffd_terms_on_the_new_families():
    vgg = create_model("cifar_vgg11_bn", num_classes=10).eval()
    res = create_model("resnet32_a", num_classes=10).eval()
    labels = torch.tensor([0, 1])
    for model in (vgg, res):
        report = tffd_terms_on_batch(model, _x(2), labels)
        assert report.intra and report.inter
        assert all(torch.isfinite(torch.tensor(v)) for v in report.intra.values())


def test_infer_arch_of_the_new_families():
    assert infer_arch({f"module.{k}": v for k, v in akamaster_state(56).items()}) == ("resnet56_a", 10, 3)
    assert infer_arch(vgg_state(16, 100)) == ("cifar_vgg16_bn", 100, 3)
    for name in ("resnet110_a", "cifar_vgg19_bn"):
        assert infer_arch(create_model(name, num_classes=7).state_dict()) == (name, 7, 3)


def test_saved_copy_keeps_the_preprocessing_but_not_the_recognition(tmp_path):
    model, card = load_checkpoint(akamaster_file(akamaster_state(20)))
    path = save_checkpoint(model, card, tmp_path / "copy")
    _, again = load_checkpoint(path)
    assert again["mean"] == list(IMAGENET_MEAN) and again["arch"] == "resnet20_a"
    assert again["source_layout"] == "zoo" and again["recognised_as"] is None and not trained_elsewhere(again)


# --------------------------------------------------------------------- unrecognised: closest layout
def test_unpublished_class_count_loads_but_says_its_preprocessing_is_unknown():
    sd = akamaster_state(32, num_classes=100)
    with pytest.warns(
        UserWarning,
        match=r"looks like option-A ResNet-32 \(resnet32_a\) of "
        r"akamaster/pytorch_resnet_cifar10 but has 100 classes \(its models have 10\)",
    ):
        model, card = load_checkpoint(akamaster_file(sd))
    assert card["arch"] == "resnet32_a" and card["mean"] is None and card["dataset"] is None
    assert card["recognised_as"] is None
    with torch.no_grad():
        torch.testing.assert_close(model(_x(1)), akamaster_forward(sd, _x(1))[0], rtol=1e-4, atol=1e-5)


def test_strict_error_ends_with_the_closest_known_layout():
    sd = akamaster_state(32, num_classes=100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(akamaster_file(sd), arch="resnet32")
    text = str(info.value)
    assert (
        text.startswith("checkpoint uploaded bytes") and "does not fit resnet32 (arch from the caller" in text
    )
    assert text.endswith(
        "; closest known layout: looks like option-A ResNet-32 (resnet32_a) of "
        "akamaster/pytorch_resnet_cifar10 but has 100 classes (its models have 10)"
    )
    # an option-B shortcut (weights where option A has none) is not akamaster's: nothing fits, closest named
    sd = akamaster_state(20)
    sd["layer2.0.shortcut.0.weight"] = torch.zeros(32, 16, 1, 1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(akamaster_file(sd))
    assert info.value.args[0].endswith(
        "; closest known layout: option-A ResNet-20 (resnet20_a) of akamaster/pytorch_resnet_cifar10, which "
        "differs by 1 unexpected key: layer2.0.shortcut.0.weight"
    )


def test_zoo_files_keep_their_error_without_a_far_layout():
    state = create_model("resnet8", num_classes=10).state_dict()
    del state["fc.bias"]
    with pytest.raises(CheckpointError, match=r"1 missing key: fc\.bias$"):
        load_checkpoint(torch_file(state))


def test_recognised_as_needs_a_published_model():
    assert recognised_as({"source_layout": "akamaster", "arch": "resnet20_a", "num_classes": 10})
    assert recognised_as({"source_layout": "akamaster", "arch": "resnet20_a", "num_classes": 100}) is None
    assert recognised_as({"source_layout": "zoo", "arch": "resnet20", "num_classes": 10}) is None
