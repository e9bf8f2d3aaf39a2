"""Tests of tffd_viz.checkpoints.saving: the own format round trip (path and bytes), cards that must
agree with the model, weights that must be finite."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from checkpoint_factories import (
    SOURCE_KEYS,
    assert_state_equal,
    full_card,
    full_card_json,
    trained_model,
)
from safetensors import safe_open

from tffd_viz.checkpoints import (
    CARD_KEYS,
    FORMAT_TAG,
    CheckpointError,
    load_checkpoint,
    read_card,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_own_format_round_trip_from_path(tmp_path):
    model = trained_model("resnet8", num_classes=10, in_chans=1)
    expected_state = {k: v.clone() for k, v in model.state_dict().items()}
    assert int(expected_state["bn1.num_batches_tracked"]) == 2  # buffers really moved away from init
    assert not torch.equal(expected_state["bn1.running_mean"], torch.zeros(16))

    path = save_checkpoint(model, full_card(), tmp_path / "run.pt")
    assert path == tmp_path / "run.safetensors"
    assert path.is_file() and (tmp_path / "run.json").is_file()

    expected_card = full_card_json()
    beside = json.loads((tmp_path / "run.json").read_text())
    assert beside == expected_card
    assert list(beside)[: len(CARD_KEYS)] == list(CARD_KEYS) and list(beside)[-1] == "notes"
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == FORMAT_TAG and json.loads(meta["card"]) == expected_card

    loaded, card = load_checkpoint(path)
    assert not loaded.training
    assert_state_equal(loaded, expected_state)
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert {k: card[k] for k in expected_card} == expected_card
    assert list(card) == [*CARD_KEYS, "notes", *SOURCE_KEYS]
    assert card["source_format"] == FORMAT_TAG and card["source_name"] == "run.safetensors"
    assert card["source_layout"] == "zoo"
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_own_format_round_trip_from_bytes(tmp_path):
    model = trained_model("resnet8", num_classes=10, in_chans=1, seed=1)
    path = save_checkpoint(model, full_card(), tmp_path / "upload")
    data = path.read_bytes()
    path.unlink()
    (tmp_path / "upload.json").unlink()  # bytes alone keep their card
    loaded, card = load_checkpoint(data)
    assert_state_equal(loaded, model.state_dict())
    assert {k: card[k] for k in CARD_KEYS} == {k: full_card_json()[k] for k in CARD_KEYS}
    assert card["source_name"] is None and card["sha256"] == hashlib.sha256(data).hexdigest()
    assert read_card(data)["history"] == full_card_json()["history"]


def test_save_fills_model_facts_and_refuses_contradicting_card(tmp_path):
    model = trained_model("resnet8", num_classes=10, in_chans=1)
    path = save_checkpoint(model, {"dataset": "digits"}, tmp_path / "a.pth.tar")
    assert path.name == "a.safetensors"
    card = read_card(tmp_path / "a.json")
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == (
        "resnet8",
        10,
        1,
        "digits",
    )
    assert "sha256" not in card  # a JSON card path has no source keys
    with pytest.raises(CheckpointError, match=r"arch='resnet32'.*resnet8"):
        save_checkpoint(model, {"arch": "resnet32"}, tmp_path / "b")
    with pytest.raises(CheckpointError, match="num_classes=100"):
        save_checkpoint(model, {"num_classes": 100}, tmp_path / "b")
    assert not (tmp_path / "b.safetensors").exists()
    with pytest.raises(CheckpointError, match=r"card\['recipe'\]"):
        save_checkpoint(model, {"recipe": object()}, tmp_path / "c")
    # the source keys of a loaded card describe another file and are not written
    _, loaded_card = load_checkpoint(path)
    save_checkpoint(model, loaded_card, tmp_path / "d.safetensors")
    assert not set(SOURCE_KEYS) & set(json.loads((tmp_path / "d.json").read_text()))


def test_nonfinite_weights_are_never_written(tmp_path):
    model = trained_model(in_chans=1)
    with torch.no_grad():
        model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
        model.fc.bias[2] = float("inf")
    with pytest.raises(
        CheckpointError,
        match=r"refusing to write .*m\.safetensors.*2 tensor\(s\): "
        r"layer1\.0\.conv1\.weight \(1 of \d+ values\), fc\.bias \(1 of 10",
    ):
        save_checkpoint(model, None, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
