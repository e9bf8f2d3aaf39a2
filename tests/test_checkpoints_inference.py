"""Tests of tffd_viz.checkpoints.inference: architecture, class count and input channels from the weights."""

from __future__ import annotations

import pytest
import torch
from checkpoint_factories import (
    assert_state_equal,
    state_of,
)
from safetensors.torch import save_file

from tffd_viz.checkpoints import (
    CheckpointError,
    infer_arch,
    load_checkpoint,
    read_card,
)
from tffd_viz.models import create_model

pytestmark = pytest.mark.usefixtures("single_thread")


def test_cardless_safetensors_gets_inferred_card(tmp_path):
    state = state_of("wrn_16_2", num_classes=5, in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    card = read_card(path)
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == ("wrn_16_2", 5, 1, None)
    model, card = load_checkpoint(path)
    assert_state_equal(model, state)
    assert card["arch"] == "wrn_16_2" and card["epochs"] is None


@pytest.mark.parametrize(
    "arch",
    ["resnet8", "resnet20", "resnet32", "resnet110", "resnet8x4", "wrn_16_2", "wrn_40_2", "vgg8", "vgg13"],
)
def test_infer_arch(arch):
    torch.manual_seed(0)
    state = create_model(arch, num_classes=7, in_chans=1).state_dict()
    assert infer_arch(state) == (arch, 7, 1)
    assert infer_arch({"module." + k: v for k, v in state.items()}) == (arch, 7, 1)


def test_infer_arch_three_channels_and_unknown_keys():
    assert infer_arch(create_model("resnet32x4", num_classes=100).state_dict()) == ("resnet32x4", 100, 3)
    with pytest.raises(CheckpointError, match=r"cannot tell the architecture.*encoder\.weight"):
        infer_arch({"encoder.weight": torch.zeros(4, 4), "head.bias": torch.zeros(4)})
    with pytest.raises(CheckpointError, match="empty"):
        infer_arch({})
