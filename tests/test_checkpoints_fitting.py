"""Tests of tffd_viz.checkpoints.fitting: strict loading (keys, shapes, NaN/Inf weights)
and readable errors."""

from __future__ import annotations

import json

import pytest
import torch
from checkpoint_factories import (
    assert_state_equal,
    state_of,
    torch_bytes,
)
from safetensors.torch import save_file

from tffd_viz.checkpoints import (
    FORMAT_TAG,
    CheckpointError,
    empty_card,
    load_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_old_checkpoint_without_num_batches_tracked():
    state = {k: v for k, v in state_of("resnet8", 10).items() if not k.endswith("num_batches_tracked")}
    model, _ = load_checkpoint(torch_bytes(state))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    assert int(got["bn1.num_batches_tracked"]) == 0


def test_caller_arch_and_num_classes_win_and_load_when_they_fit():
    state = state_of("resnet8", 10)
    model, _ = load_checkpoint(torch_bytes(state), arch="resnet8", num_classes=10)
    assert_state_equal(model, state)
    assert model.arch == "resnet8" and model.num_classes == 10
    with pytest.raises(CheckpointError, match=r"arch='resnet9' is not in the zoo"):
        load_checkpoint(torch_bytes(state), arch="resnet9")


def test_wrong_architecture_error_lists_keys():
    small, big = state_of("resnet8", 10), state_of("resnet20", 10)
    missing = [k for k in big if k not in small and not k.endswith("num_batches_tracked")]
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(torch_bytes(small), arch="resnet20")
    text = str(info.value)
    assert f"{len(missing)} missing keys: {missing[0]}" in text
    assert "arch from the caller" in text and "look like resnet8" in text
    assert "unexpected" not in text
    unexpected = [k for k in big if k not in small]
    with pytest.raises(CheckpointError, match=f"{len(unexpected)} unexpected keys: {unexpected[0]}"):
        load_checkpoint(torch_bytes(big), arch="resnet8")


def test_card_lying_about_arch(tmp_path):
    state = state_of("resnet20", 10)
    card = {**empty_card(), "arch": "resnet32", "num_classes": 10, "in_chans": 3}
    path = tmp_path / "liar.safetensors"
    save_file(state, str(path), metadata={"card": json.dumps(card), "format": FORMAT_TAG})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "resnet32 (arch from the card" in text and "missing keys: layer1.3." in text
    assert "look like resnet20 with 10 classes" in text
    # the caller can override the card; the weights then load and the card says what was loaded
    model, loaded = load_checkpoint(path, arch="resnet20")
    assert_state_equal(model, state)
    assert loaded["arch"] == "resnet20"


def test_other_class_count_error_names_shapes():
    state = state_of("resnet8", 10)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(torch_bytes(state), num_classes=100)
    text = str(info.value)
    assert "2 shape mismatches" in text
    assert "fc.weight checkpoint (10, 64) vs model (100, 64)" in text
    assert "fc.bias checkpoint (10,) vs model (100,)" in text


def test_nonfinite_weights_refused_or_allowed_with_warning():
    state = state_of("resnet8", 10)
    state["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["fc.bias"][3] = float("inf")
    data = torch_bytes(state)
    with pytest.raises(
        CheckpointError,
        match=r"2 tensor\(s\).*layer1\.0\.conv1\.weight \(1 of 2304 values\)"
        r".*fc\.bias \(1 of 10 values\)",
    ):
        load_checkpoint(data)
    with pytest.warns(UserWarning, match="fc.bias"):
        model, _ = load_checkpoint(data, allow_nonfinite=True)
    assert int(torch.isnan(model.layer1[0].conv1.weight).sum()) == 1
    assert torch.isinf(model.fc.bias[3])
