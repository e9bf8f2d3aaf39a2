"""Tests of tffd_viz.checkpoints.loading: cards read without building the model, folder listings, devices."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from checkpoint_factories import (
    assert_state_equal,
    state_of,
    torch_bytes,
    trained_model,
)
from safetensors.torch import save_file

from tffd_viz.checkpoints import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    read_card,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_read_card_and_list_checkpoints(tmp_path):
    for name, seed in (("b_model", 0), ("a_model", 1)):
        save_checkpoint(trained_model(seed=seed), {"seed": seed, "dataset": "digits"}, tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    listed = list_checkpoints(tmp_path)
    assert [p.name for p, _ in listed] == ["a_model.safetensors", "b_model.safetensors"]
    assert [c["seed"] for _, c in listed] == [1, 0]
    _, loaded_card = load_checkpoint(tmp_path / "a_model.safetensors")
    assert read_card(tmp_path / "a_model.safetensors") == loaded_card

    # a card in the metadata wins over (and does not need) the .json beside it
    (tmp_path / "a_model.json").write_text(json.dumps({"arch": "resnet8", "seed": 99}))
    assert read_card(tmp_path / "a_model.safetensors")["seed"] == 1
    # a foreign safetensors file without metadata: the .json beside it is the card
    save_file(state_of("resnet8", 10), str(tmp_path / "foreign.safetensors"))
    (tmp_path / "foreign.json").write_text(json.dumps({"seed": 7, "dataset": "cifar10"}))
    card = read_card(tmp_path / "foreign.safetensors")
    assert (card["seed"], card["dataset"], card["arch"], card["num_classes"]) == (7, "cifar10", "resnet8", 10)
    assert card["source_format"] == "safetensors"
    with pytest.raises(CheckpointError, match="does not exist"):
        list_checkpoints(tmp_path / "nowhere")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on machines without CUDA")
def test_cuda_request_without_cuda_warns_and_loads_on_cpu():
    data = torch_bytes(state_of("resnet8", 10))
    with pytest.warns(UserWarning, match="CUDA is not available"):
        model, _ = load_checkpoint(data, device="cuda")
    assert next(model.parameters()).device.type == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, _ = load_checkpoint(data, device="auto")
    assert next(model.parameters()).device.type == "cpu"


def test_bad_device_name():
    with pytest.raises(CheckpointError, match="device"):
        load_checkpoint(torch_bytes(state_of("resnet8", 10)), device="gpu-please")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_load_on_cuda(tmp_path):
    state = state_of("resnet8", 10)
    for data in (torch_bytes(state), save_checkpoint(trained_model(), {}, tmp_path / "g").read_bytes()):
        for device in ("cuda", "auto", "cuda:0"):
            model, _ = load_checkpoint(data, device=device)
            assert all(t.device.type == "cuda" for t in model.state_dict().values())
            x = torch.randn(2, 3, 32, 32, device="cuda")
            with torch.no_grad():
                assert model(x).shape == (2, 10)
    model, _ = load_checkpoint(torch_bytes(state), device="cuda")
    assert_state_equal(model, state)
