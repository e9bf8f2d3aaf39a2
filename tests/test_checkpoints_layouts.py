"""Tests of tffd_viz.checkpoints.layouts: wrapper prefixes and the Tf-FD reference key layout (the published
CIFAR zoos are in test_cifar_zoos.py)."""

from __future__ import annotations

import pytest
import torch
from checkpoint_factories import (
    assert_state_equal,
    state_of,
    torch_bytes,
)

from tffd_viz.checkpoints import (
    infer_arch,
    load_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("arch", ["vgg8", "wrn_16_1"])
def test_other_families_load_from_pickles(arch):
    state = state_of(arch, num_classes=10, in_chans=1)
    model, card = load_checkpoint(torch_bytes({"module." + k: v for k, v in state.items()}))
    assert_state_equal(model, state)
    assert (card["arch"], card["num_classes"], card["in_chans"]) == (arch, 10, 1)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module.student.", "module._orig_mod."])
def test_wrapper_prefixes_stripped(prefix):
    state = state_of("resnet8", 10)
    wrapped = {prefix + k: v for k, v in state.items()}
    model, _ = load_checkpoint(torch_bytes({"state_dict": wrapped}))
    assert_state_equal(model, state)


def reference_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The Tf-FD authors' ResNet names: ``res1..3`` stages and ``.ds.`` shortcuts, behind DataParallel."""
    out = {}
    for key, value in state.items():
        if key.startswith("layer"):
            key = "res" + key[len("layer") :]
        out["module." + key.replace(".downsample.", ".ds.")] = value
    return out


@pytest.mark.parametrize("arch", ["resnet20", "resnet110"])
def test_tffd_reference_layout(arch):
    state = state_of(arch, num_classes=100)
    ref = reference_layout(state)
    assert any(k.startswith("module.res1.") for k in ref) and any(".ds." in k for k in ref)
    assert not any("layer" in k or "downsample" in k for k in ref)
    model, card = load_checkpoint(torch_bytes({"epoch": 240, "snet": ref, "prec@1": 69.5, "prec@5": 91.0}))
    assert_state_equal(model, state)
    assert (card["arch"], card["num_classes"], card["source_layout"]) == (arch, 100, "tffd-reference")
    assert (card["epochs"], card["best_acc"]) == (240, 69.5)
    assert infer_arch(ref) == (arch, 100, 3)
