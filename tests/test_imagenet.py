"""ImageNet-size models: torchvision architectures, their checkpoints,
the lazy 224-pixel image folder, training.

Covers tffd_viz.models.imagenet, tffd_viz.imagefolder, tffd_viz.scale and the ImageNet parts of checkpoints,
data, features and train. No ImageNet here: a tiny image-folder tree of generated images, random-init models.
"""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import save as safetensors_save

from tffd_viz.checkpoints import load_checkpoint, save_checkpoint
from tffd_viz.data import card_image_size, load_dataset, sample_batch, sample_indices
from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.features import extract_features, pass_batch_size
from tffd_viz.heldout import write_heldout_terms
from tffd_viz.imagefolder import (
    RRC_ATTEMPTS,
    RRC_RATIO,
    RRC_SCALE,
    eval_transform,
    random_resized_crop_box,
    resize_side,
)
from tffd_viz.losses import TfFD
from tffd_viz.models import create_model, extract_taps, input_size, tap_info
from tffd_viz.models.imagenet import IMAGENET_ARCHS, IMAGENET_MEAN, IMAGENET_STD, torchvision_arch
from tffd_viz.scale import cka_plan, ordered_block_mean
from tffd_viz.train import RECIPES, config_from_recipe, resume_path, state_sha256, train

pytestmark = pytest.mark.usefixtures("single_thread")
REPO = Path(__file__).resolve().parents[1]
CLASSES = ("ant", "bee", "cat")


def write_tree(root: Path, per_class: dict[str, int], eval_name: str = "val", seed: int = 0) -> Path:
    """``root/{train,<eval_name>}/<class>/<i>.png``: smooth random images of varied, non-square sizes."""
    rng = np.random.default_rng(seed)
    for split, k in per_class.items():
        name = eval_name if split == "eval" else split
        for c in CLASSES:
            folder = root / name / c
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                w, h = (int(v) for v in rng.integers(60, 120, 2))
                small = (rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8)
                Image.fromarray(small).resize((w, h), Image.BILINEAR).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("inet") / "tree", {"train": 3, "eval": 2})


# ---------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("arch", sorted(IMAGENET_ARCHS))
def test_logits_equal_torchvision_with_the_same_weights(arch):
    torch.manual_seed(0)
    ours = create_model(arch, num_classes=7).eval()
    theirs = getattr(torchvision.models, arch)(weights=None, num_classes=7).eval()
    theirs.load_state_dict(ours.state_dict(), strict=True)  # same module names, same shapes
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(ours(x), theirs(x))
    assert ours.arch == arch and ours.num_classes == 7 and ours.in_chans == 3 and input_size(arch) == 224
    assert input_size(ours) == 224 and input_size("resnet20") == 32


def test_built_by_torchvision_with_its_initialisation():
    torch.manual_seed(3)
    ours = create_model("resnet18", num_classes=5)
    torch.manual_seed(3)
    theirs = torchvision.models.resnet18(weights=None, num_classes=5)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))


@pytest.mark.parametrize(
    ("arch", "shapes"),
    [
        ("resnet18", [(64, 56, 56), (128, 28, 28), (256, 14, 14), (512, 7, 7)]),
        ("resnet50", [(256, 56, 56), (512, 28, 28), (1024, 14, 14), (2048, 7, 7)]),
        ("mobilenet_v2", [(16, 112, 112), (24, 56, 56), (32, 28, 28), (96, 14, 14), (320, 7, 7)]),
    ],
)
def test_default_taps_at_224(arch, shapes):
    info = tap_info(create_model(arch, num_classes=3))  # the model's own input size: 224
    assert [i.shape for i in info.values()] == shapes
    assert [i.reduction for i in info.values()] == [224 // s[1] for s in shapes]


def test_tffd_terms_on_resnet18_stage_maps():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3).eval()
    logits, taps = extract_taps(model, torch.randn(2, 3, 224, 224), return_logits=True)
    assert logits.shape == (2, 3)
    assert {k: tuple(v.shape) for k, v in taps.items()} == {
        "layer1": (2, 64, 56, 56),
        "layer2": (2, 128, 28, 28),
        "layer3": (2, 256, 14, 14),
        "layer4": (2, 512, 7, 7),
    }
    out = TfFD(lambda_intra=1.0, lambda_inter=1.0)(taps)
    assert list(out.intra) == ["layer1", "layer2", "layer3", "layer4"]
    assert len(out.inter) == 6 and "layer1->layer4" in out.inter
    assert all(
        v.ndim == 0 and math.isfinite(float(v.detach())) for v in [*out.intra.values(), *out.inter.values()]
    )
    # the inter term against its formula: pool the shallow map to the deep size, first m channels, MSE
    s, d = taps["layer3"], taps["layer4"]
    want = torch.mean((torch.nn.functional.adaptive_avg_pool2d(s, (7, 7))[:, :256] - d[:, :256]) ** 2)
    torch.testing.assert_close(out.inter["layer3->layer4"], want, rtol=1e-4, atol=1e-6)


def test_other_input_channels_and_input_errors():
    model = create_model("mobilenet_v2", num_classes=4, in_chans=1).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 64, 64)).shape == (1, 4)
    with pytest.raises(DataError, match=r"\(N, 1, H, W\).*224x224"):
        model(torch.zeros(1, 3, 64, 64))


# ------------------------------------------------------------------------------------------ checkpoints
def _formats(state: dict[str, torch.Tensor]) -> dict[str, bytes]:
    def pickled(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    prefixed = {f"module.{k}": v for k, v in state.items()}
    return {
        "plain": pickled(state),
        "module": pickled(prefixed),
        "state_dict": pickled({"state_dict": prefixed}),
        "model": pickled({"model": state, "epoch": 89}),
        "safetensors": safetensors_save(state),
    }


@pytest.mark.parametrize(
    ("arch", "formats"),
    [
        ("resnet18", ("plain", "state_dict", "safetensors")),
        ("resnet34", ("module",)),
        ("resnet50", ("state_dict",)),
        ("mobilenet_v2", ("model",)),
    ],
)
def test_loads_from_every_format_without_naming_it(arch, formats):
    torch.manual_seed(1)
    source = create_model(arch, num_classes=11).eval()
    state = {k: v.clone() for k, v in source.state_dict().items()}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        want = source(x)
    blobs = _formats(state)
    for fmt in formats:
        model, card = load_checkpoint(blobs[fmt])
        assert (card["arch"], card["num_classes"], card["in_chans"]) == (arch, 11, 3), fmt
        assert card["input_size"] == 224 and card["dataset"] == "imagefolder"
        assert card["mean"] == list(IMAGENET_MEAN) and card["std"] == list(IMAGENET_STD)
        assert card["transform"] == {"resize": 256, "crop": 224, "interpolation": "bilinear"}
        assert card["epochs"] == (89 if fmt == "model" else None)
        with torch.no_grad():
            assert torch.equal(model(x), want), fmt


def test_shapes_tell_the_architectures_apart():
    with torch.device("meta"):
        shapes = {
            a: {k: tuple(v.shape) for k, v in create_model(a, num_classes=3).state_dict().items()}
            for a in ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "resnet20", "wrn_16_2")
        }
    assert {a: torchvision_arch(s) for a, s in shapes.items()} == {
        "resnet18": "resnet18",
        "resnet34": "resnet34",
        "resnet50": "resnet50",
        "mobilenet_v2": "mobilenet_v2",
        "resnet20": None,
        "wrn_16_2": None,
    }
    with torch.device("meta"):  # shapes only, no memory
        deeper = torchvision.models.resnet101(weights=None, num_classes=3).state_dict()
    assert torchvision_arch({k: tuple(v.shape) for k, v in deeper.items()}) is None
    cut = {
        k: v
        for k, v in create_model("resnet18", num_classes=3).state_dict().items()
        if not k.startswith("layer4.1.")
    }
    assert torchvision_arch({k: tuple(v.shape) for k, v in cut.items()}) is None


def test_own_card_round_trip_keeps_what_training_wrote(tmp_path):
    model = create_model("resnet18", num_classes=3)
    path = save_checkpoint(
        model, {"dataset": "imagefolder", "mean": [0.5] * 3, "std": [0.25] * 3}, tmp_path / "r18"
    )
    _, card = load_checkpoint(path)
    assert (
        card["mean"] == [0.5] * 3 and card["input_size"] == 224
    )  # the card wins; what it leaves out is filled
    path = save_checkpoint(model, {"dataset": "cifar10", "input_size": 32}, tmp_path / "r18_cifar")
    _, card = load_checkpoint(path)  # trained at 32 pixels: nothing of ImageNet's is filled in
    assert (card["input_size"], card["dataset"], card["mean"], card.get("transform")) == (
        32,
        "cifar10",
        None,
        None,
    )


# --------------------------------------------------------------------------------------------- data
def test_lazy_folder_with_val_split(tree):
    bundle = load_dataset("imagefolder", tree, image_size=224)
    assert bundle.classes == list(CLASSES) and bundle.in_chans == 3
    assert bundle.mean == IMAGENET_MEAN and bundle.std == IMAGENET_STD
    assert bundle.extra["eval_split"] == "val" and bundle.extra["transform"] == eval_transform(224)
    assert (len(bundle.train), len(bundle.test)) == (9, 6)
    assert bundle.test.labels.tolist() == [0, 0, 1, 1, 2, 2]
    images, labels, idx = sample_batch(
        "imagefolder", "test", n=4, seed=0, root=tree, image_size=224, return_indices=True
    )
    assert images.shape == (4, 3, 224, 224) and images.dtype == torch.float32
    assert torch.equal(labels, bundle.test.labels[idx])
    # the 32-pixel in-memory form of the same tree is a different bundle (train/test needed there)
    with pytest.raises(DataError, match="train/<class>"):
        load_dataset("imagefolder", tree)
    with pytest.raises(DataError, match="32x32 only"):
        load_dataset("cifar10", tree, image_size=224)
    assert card_image_size({"input_size": 224}, "imagefolder") == 224
    assert [
        card_image_size(c, n)
        for c, n in [
            ({"input_size": 224}, "cifar10"),
            ({"input_size": 32}, "imagefolder"),
            ({}, "imagefolder"),
        ]
    ] == [None, None, None]


def test_eval_transform_matches_a_restatement(tmp_path):
    root = tmp_path / "t"
    (root / "train" / "a").mkdir(parents=True)
    (root / "test" / "a").mkdir(parents=True)
    rng = np.random.default_rng(5)
    arr = (rng.random((150, 300, 3)) * 255).astype(np.uint8)  # 300 wide, 150 high
    Image.fromarray(arr).save(root / "test" / "a" / "x.png")
    Image.fromarray(arr).save(root / "train" / "a" / "x.png")
    got = load_dataset("imagefolder", root, image_size=224).test.uint8([0])[0]
    resized = Image.fromarray(arr).resize((512, 256), Image.BILINEAR)  # shorter side 256, 300 * 256 / 150
    want = np.asarray(resized)[16:240, 144:368].transpose(
        2, 0, 1
    )  # centre 224: top (256-224)/2, left (512-224)/2
    assert torch.equal(got, torch.from_numpy(np.ascontiguousarray(want)))
    assert resize_side(224) == 256 and resize_side(112) == 128


def test_a_sample_batch_decodes_only_its_images(tmp_path):
    root = write_tree(tmp_path / "t", {"train": 1, "eval": 6}, eval_name="test")
    split = load_dataset("imagefolder", root, image_size=224).test
    chosen = set(sample_indices(len(split), 4, seed=2).tolist())
    for i, path in enumerate(split.paths):
        if i not in chosen:
            Path(path).write_bytes(b"not an image")  # any read of these would fail
    images, _ = sample_batch("imagefolder", "test", n=4, seed=2, root=root, image_size=224)
    assert images.shape == (4, 3, 224, 224)
    broken = next(i for i in range(len(split)) if i not in chosen)
    with pytest.raises(DataError, match=Path(split.paths[broken]).name):
        split.float01([broken])


def test_random_resized_crop_box_invariants():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        w, h = (int(v) for v in torch.randint(40, 400, (2,), generator=gen))
        top, left, ch, cw = random_resized_crop_box(w, h, torch.rand(RRC_ATTEMPTS, 4, generator=gen))
        assert 0 <= top <= h - ch and 0 <= left <= w - cw and ch > 0 and cw > 0
    # an attempt that fits is taken as torchvision computes it
    u = torch.tensor([[0.5, 0.5, 0.0, 1.0 - 1e-9]] * RRC_ATTEMPTS, dtype=torch.float64)
    area = 100 * 100 * (RRC_SCALE[0] + 0.5 * (RRC_SCALE[1] - RRC_SCALE[0]))
    side = round(math.sqrt(area))  # aspect exp(mean log ratio) = 1
    assert random_resized_crop_box(100, 100, u) == (0, 100 - side, side, side)
    assert (
        random_resized_crop_box(100, 100, u.float())[1] == 100 - side
    )  # 1 - 1e-9 is 1.0 in float32: clamped
    # no attempt fits (full area at the widest ratio on a tall image): central crop at the nearest ratio
    never = torch.tensor([[1.0 - 1e-9, 1.0 - 1e-9, 0.0, 0.0]] * RRC_ATTEMPTS)
    assert random_resized_crop_box(50, 200, never) == (
        (200 - round(50 / RRC_RATIO[0])) // 2,
        0,
        round(50 / RRC_RATIO[0]),
        50,
    )


# ----------------------------------------------------------------------------------- sizes and costs
def test_pass_batch_size_caps_large_inputs_only():
    assert pass_batch_size(torch.zeros(1, 3, 32, 32), 256) == 256
    assert pass_batch_size(torch.zeros(1, 3, 224, 224), 256) == 1024 * 32 * 32 // (224 * 224)
    assert pass_batch_size(torch.zeros(1, 3, 224, 224), None, 256 * 32 * 32) == 5
    assert pass_batch_size(torch.zeros(1, 3, 4096, 4096), 256) == 1


def test_features_do_not_depend_on_the_pass_size():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3).eval()
    x = torch.randn(3, 3, 224, 224)
    big = extract_features(model, x, ["layer4"], batch_size=256)["layer4"]
    one = extract_features(model, x, ["layer4"], batch_size=1)["layer4"]
    torch.testing.assert_close(big, one, rtol=1e-4, atol=1e-5)


def test_ordered_block_mean_restates_block_averages():
    rng = np.random.default_rng(0)
    m = rng.random((10, 10))
    order = rng.permutation(10)
    blocks, b = ordered_block_mean(m, order, max_side=4)
    z = m[order][:, order]
    assert b == 3 and blocks.shape == (4, 4)
    assert np.isclose(blocks[0, 1], z[0:3, 3:6].mean()) and np.isclose(blocks[3, 3], z[9, 9])
    assert np.isclose(blocks[2, 3], z[6:9, 9:10].mean())
    same, one = ordered_block_mean(m, order, max_side=10)
    assert one == 1 and np.array_equal(same, z)


def test_cka_plan_says_what_it_does():
    assert cka_plan(None, {}, 64)["large"] is False
    plan = cka_plan(224, {"layer1": 64 * 56 * 56, "layer4": 512 * 7 * 7}, 64)
    assert plan["large"] and plan["n"] == 64 and plan["minibatch"] == 32
    assert "200,704" in plan["note"] and "layer1" in plan["note"]


# ------------------------------------------------------------------------------------------- training
def test_recipes_share_keys_and_the_imagenet_recipe_is_torchvisions():
    assert all(set(r) == set(RECIPES["paper"]) for r in RECIPES.values())
    r = RECIPES["imagenet"]
    assert (r["lr"], r["batch_size"], r["epochs"], tuple(r["milestones"]), r["weight_decay"]) == (
        0.1,
        256,
        90,
        (30, 60),
        1e-4,
    )
    assert (r["augment"], r["flip"], r["nesterov"], r["momentum"]) == (
        "random_resized_crop",
        True,
        False,
        0.9,
    )
    assert (r["lambda_intra"], r["lambda_inter"]) == (
        RECIPES["paper"]["lambda_intra"],
        RECIPES["paper"]["lambda_inter"],
    )
    assert {RECIPES[k]["augment"] for k in ("paper", "cpu30", "digits")} == {"pad_crop_flip"}
    with pytest.raises(TffdVizError, match="augment"):
        config_from_recipe("digits", augment="mixup")


def test_a_resume_state_from_before_augment_resumes(tmp_path):
    base = dict(epochs=2, limit_train=32, batch_size=16, probe_size=8, quiet=True, threads=1)
    out = tmp_path / "d"
    train(config_from_recipe("digits", method="tffd", out=str(out), stop_after=1, **base))
    state = torch.load(resume_path(out), weights_only=True)
    del (
        state["config"]["augment"],
        state["config"]["hparams"]["augment"],
    )  # as states written before the option
    torch.save(state, resume_path(out))
    _, card = train(config_from_recipe("digits", method="tffd", out=str(out), resume="auto", **base))
    assert [r["epoch"] for r in card["history"]] == [1, 2]


def test_random_resized_crop_in_memory_keeps_shape_and_range():
    _, card = train(
        config_from_recipe(
            "digits",
            method="baseline",
            augment="random_resized_crop",
            epochs=1,
            limit_train=32,
            batch_size=16,
            probe_size=8,
            quiet=True,
            threads=1,
        )
    )
    assert card["hparams"]["augment"] == "random_resized_crop" and len(card["history"]) == 1


@pytest.mark.slow
def test_imagenet_recipe_one_short_epoch_on_a_tiny_folder(tree, tmp_path):
    out = tmp_path / "r18"
    model, card = train(
        config_from_recipe(
            "imagenet",
            data_root=str(tree),
            epochs=1,
            milestones=(),
            batch_size=3,
            limit_train=6,
            probe_size=3,
            eval_batch_size=6,
            device="cpu",
            quiet=True,
            threads=1,
            out=str(out),
        )
    )
    assert card["recipe"] == "imagenet" and card["arch"] == "resnet18" and card["num_classes"] == 3
    assert card["input_size"] == 224 and card["transform"] == eval_transform(224)
    assert card["mean"] == list(IMAGENET_MEAN) and len(card["history"]) == 1
    row = card["history"][0]
    assert set(row["intra"]) == {"layer1", "layer2", "layer3", "layer4"} and len(row["inter"]) == 6
    assert all(math.isfinite(v) for v in row["intra"].values()) and len(row["saliency"]["layer4"]) == 512
    loaded, loaded_card = load_checkpoint(out.with_suffix(".safetensors"))
    assert loaded_card["input_size"] == 224 and loaded_card["recipe"] == "imagenet"
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert card["heldout_terms"]["n"] == 6  # the 6 images of val/, at 224, written at the end of training
    again = write_heldout_terms(out.with_suffix(".safetensors"), str(tree))  # tffd-viz heldout
    assert again["n"] == 6 and again["intra"] == card["heldout_terms"]["intra"]


@pytest.mark.slow
def test_imagenet_recipe_under_torchrun_two_ranks(tree, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    out = tmp_path / "ddp.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tffd_viz",
        "train",
        "--arch",
        "resnet18",
        "--dataset",
        "imagefolder",
        "--data-root",
        str(tree),
        "--epochs",
        "1",
        "--milestones",
        "",
        "--limit-train",
        "4",
        "--batch-size",
        "2",
        "--probe-size",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model, card = load_checkpoint(out)
    assert card["ranks_agree"] is True and card["state_sha256"] == state_sha256(
        model
    )  # the ranks' weights agree
    assert card["recipe"] == "imagenet" and card["world_size"] == 2 and card["input_size"] == 224
