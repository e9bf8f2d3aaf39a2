"""The report on checkpoints of other zoos (issue 16): akamaster's real ResNet-20 as model A, a card-less copy
of the same weights as model B with a guessed normalisation. Skipped where the CIFAR files or the akamaster
file are absent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import CIFAR_FILES, CIFAR_ROOT

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import ImageDataset, load_dataset, sample_batch
from tffd_viz.features import accuracy, predict_logits
from tffd_viz.normalisation import DATA_COPY_CAVEAT, IMAGENET_MEAN, IMAGENET_STD, renormalised
from tffd_viz.report import SECTIONS, load_report_inputs

pytestmark = [pytest.mark.data]

AKAMASTER = Path(CIFAR_ROOT) / "external" / "akamaster_resnet20.th"
N = 32


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    if not AKAMASTER.is_file() or not any((Path(CIFAR_ROOT) / f).exists() for f in CIFAR_FILES["cifar10"]):
        pytest.skip(f"{AKAMASTER} or the CIFAR-10 files in {CIFAR_ROOT} are absent")
    raw = torch.load(AKAMASTER, weights_only=True, map_location="cpu")["state_dict"]
    bare = tmp_path_factory.mktemp("zoo") / "bare.pt"
    torch.save({k.removeprefix("module.").replace("linear.", "fc."): v for k, v in raw.items()}, bare)
    ctx = load_report_inputs(AKAMASTER, bare, root=CIFAR_ROOT, n=N, normalisation={"B": "imagenet"})
    return ctx, bare


def _imagenet_accuracy() -> float:
    model, _ = load_checkpoint(AKAMASTER)
    images, labels = sample_batch("cifar10", "test", n=N, seed=0, root=CIFAR_ROOT)
    bundle = load_dataset("cifar10", CIFAR_ROOT)
    return accuracy(
        predict_logits(model, renormalised(images, bundle.mean, bundle.std, IMAGENET_MEAN, IMAGENET_STD)),
        labels,
    )


def test_report_inputs_follow_the_card_and_the_guess(inputs):
    ctx, _ = inputs
    assert ctx.dataset == "cifar10"  # from the card the akamaster layout implies
    norm_a, norm_b = ctx.normalisation["A"], ctx.normalisation["B"]
    assert (norm_a.mean, norm_a.std, norm_a.guessed) == (IMAGENET_MEAN, IMAGENET_STD, False)
    assert (norm_b.mean, norm_b.guessed, norm_b.choice) == (IMAGENET_MEAN, True, "imagenet")
    want = _imagenet_accuracy()
    assert ctx.predictions["A"]["accuracy"] == pytest.approx(want)
    assert ctx.predictions["B"]["accuracy"] == pytest.approx(want)  # same weights, same (guessed) statistics
    assert "A" not in ctx.guess_accuracy and list(ctx.guess_accuracy["B"]) == ["dataset", "imagenet", "none"]
    assert ctx.guess_accuracy["B"]["imagenet"] == pytest.approx(want)


def test_report_overview_marks_the_guess_and_the_data_copy(inputs):
    ctx, _ = inputs
    intro = SECTIONS["overview"](ctx).intro
    assert (
        "Input normalisation of A: from its card (mean 0.485, 0.456, 0.406; std 0.229, 0.224, 0.225). It was "
        "recognised as option-A ResNet-20 (resnet20_a) of akamaster/pytorch_resnet_cifar10."
    ) in intro
    accs = ctx.guess_accuracy["B"]
    assert (
        "Input normalisation of B is a guess: its file does not say, so ImageNet statistics were used (batch "
        f"accuracy with each choice: dataset statistics {accs['dataset']:.2f} %, ImageNet statistics "
        f"{accs['imagenet']:.2f} %, none (pixels in [0, 1]) {accs['none']:.2f} %)."
    ) in intro
    assert f"A: {DATA_COPY_CAVEAT} Its file reports 91.78 %." in intro and f"B: {DATA_COPY_CAVEAT}" in intro


@pytest.mark.slow  # the comparison measures both models and reads the shipped seeds' cards (~1 min here)
def test_heldout_comparison_carries_the_data_copy_caveat(inputs):
    ctx, _ = inputs
    if "changed" not in SECTIONS:
        pytest.skip("the report has no held-out comparison section")
    full = ctx.heldout
    small = ImageDataset(full.images[:64], full.labels[:64], full.mean, full.std)  # a fast stand-in split
    intro = SECTIONS["changed"](dataclasses.replace(ctx, heldout=small, _comparison=None)).intro
    assert intro.endswith(f"A and B: {DATA_COPY_CAVEAT}")


def test_cli_takes_a_guess_per_model():
    import argparse

    from tffd_viz.report import add_report_arguments

    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args(["--a", "x.th", "--b", "y.pt", "--norm-b", "imagenet"])
    assert (args.norm_a, args.norm_b) == ("dataset", "imagenet")
    with pytest.raises(SystemExit):
        parser.parse_args(["--a", "x.th", "--b", "y.pt", "--norm-a", "cifar"])
