"""Tests of tffd_viz.checkpoints.readers: every format built here from zoo models, the metadata kept from
pickles, safety refusals (pickles that would run code) and broken files."""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from checkpoint_factories import (
    assert_state_equal,
    state_of,
    torch_bytes,
    trained_model,
)
from conftest import ExecsCode, OpensFile, RunsShell, unpickle_without_restriction

import tffd_viz.checkpoints as ckpt
import tffd_viz.checkpoints.readers as readers
from tffd_viz.checkpoints import (
    CARD_KEYS,
    CheckpointError,
    checkpoint_sha256,
    load_checkpoint,
    read_card,
    save_checkpoint,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def test_sha256_from_path_and_bytes(tmp_path):
    data = torch_bytes(state_of())
    (tmp_path / "x.pt").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert checkpoint_sha256(tmp_path / "x.pt") == checkpoint_sha256(data) == expected
    assert checkpoint_sha256(str(tmp_path / "x.pt")) == expected and len(expected) == 64


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_bare_state_dict_pt(tmp_path, legacy):
    state = state_of("resnet8", 10)
    path = tmp_path / "bare.pth"
    path.write_bytes(torch_bytes(state, legacy=legacy))
    model, card = load_checkpoint(path)
    assert_state_equal(model, state)
    assert (card["arch"], card["num_classes"], card["in_chans"]) == ("resnet8", 10, 3)
    assert card["source_format"] == ("torch-legacy" if legacy else "torch-zip")
    assert all(card[k] is None for k in CARD_KEYS if k not in ("arch", "num_classes", "in_chans"))


@pytest.mark.parametrize("key", ["model", "state_dict", "net", "snet", "student"])
def test_state_dict_under_container_key(key):
    state = state_of("resnet8", 10)
    model, card = load_checkpoint(torch_bytes({key: state, "epoch": 7, "misc": "text"}))
    assert_state_equal(model, state)
    assert card["epochs"] == 7


def test_repdistiller_dict_with_namespace_and_numpy_scalars(tmp_path):
    state = state_of("resnet8", num_classes=100)
    opt = argparse.Namespace(model="resnet8", dataset="cifar100", epochs=240, learning_rate=0.05, trial="0")
    saved = {
        "opt": opt,
        "model": state,
        "epoch": np.int64(240),
        "best_acc": np.float64(71.25),
        "dtype": np.dtype("float32"),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.05}]},
    }
    path = tmp_path / "resnet8_best.pth"
    path.write_bytes(torch_bytes(saved))
    model, card = load_checkpoint(path)
    assert_state_equal(model, state)
    assert card["arch"] == "resnet8" and card["dataset"] == "cifar100"
    assert card["epochs"] == 240 and type(card["epochs"]) is int
    assert card["best_acc"] == 71.25 and type(card["best_acc"]) is float
    assert card["source_name"] == "resnet8_best.pth"
    assert read_card(path)["best_acc"] == 71.25
    # the namespace's arch is a hint: weights that do not fit it but fit another zoo model load as that one
    saved["opt"] = argparse.Namespace(model="resnet20")
    with pytest.warns(UserWarning, match="names architecture 'resnet20', but the weights are resnet8"):
        model, card = load_checkpoint(torch_bytes(saved))
    assert_state_equal(model, state)
    assert card["arch"] == "resnet8"
    # ... and when they fit nothing, the strict error is about the closest candidate
    saved["model"] = {k: v for k, v in state.items() if k != "fc.bias"}
    with pytest.raises(
        CheckpointError, match=r"fit resnet8 \(arch from the weights.*: 1 missing key: fc\.bias$"
    ):
        load_checkpoint(torch_bytes(saved))
    saved["opt"] = argparse.Namespace(model="resnet8")
    with pytest.raises(
        CheckpointError, match=r"fit resnet8 \(arch from the checkpoint's metadata.*: 1 missing key"
    ):
        load_checkpoint(torch_bytes(saved))
    # RepDistiller's final file: accuracy instead of best_acc, epochs only in opt, arch in opt.model_s
    final = {
        "opt": argparse.Namespace(model_s="resnet8", epochs=240),
        "model": state,
        "accuracy": torch.tensor(70.5),
    }
    _, card = load_checkpoint(torch_bytes(final))
    assert (card["arch"], card["epochs"], card["best_acc"]) == ("resnet8", 240, 70.5)


def test_numpy1_scalar_name_in_legacy_pickle():
    """numpy 1 names the scalar constructor numpy.core.multiarray.scalar,
    numpy 2 numpy._core...: both load."""
    data = torch_bytes({"model": state_of("resnet8", 10), "best_acc": np.float64(64.5)}, legacy=True)
    numpy2_name, numpy1_name = b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"
    written, other = (numpy2_name, numpy1_name) if numpy2_name in data else (numpy1_name, numpy2_name)
    assert data.count(written) == 1
    for variant in (data, data.replace(written, other)):
        _, card = load_checkpoint(variant)
        assert card["best_acc"] == 64.5


def test_plain_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(RunsShell(marker), protocol=2)
    (tmp_path / "evil.pt").write_bytes(payload)
    for source in (tmp_path / "evil.pt", payload):
        with pytest.raises(CheckpointError, match=r"refused to load.*system"):
            load_checkpoint(source)
        with pytest.raises(CheckpointError, match="refused"):
            read_card(source)
    assert not marker.exists()
    pickle.loads(payload)  # control: these very bytes do run code when unpickled without restriction
    assert marker.exists()


@pytest.mark.parametrize("gadget", [RunsShell, OpensFile, ExecsCode])
def test_zip_checkpoint_that_runs_code_is_refused(tmp_path, gadget):
    marker = tmp_path / "pwned"
    data = torch_bytes({"opt": gadget(marker), "model": state_of("resnet8", 10)})
    (tmp_path / "evil.pth").write_bytes(data)
    for source in (tmp_path / "evil.pth", data):
        with pytest.raises(CheckpointError, match="refused to load") as info:
            load_checkpoint(source)
    assert "weights_only=False" not in str(info.value) and "add_safe_globals" not in str(info.value)
    assert not marker.exists()
    unpickle_without_restriction(data)  # control: the archive's pickle is live
    assert marker.exists()


def test_module_never_loads_with_weights_only_false():
    sources = {p.name: p.read_text() for p in Path(ckpt.__file__).parent.glob("*.py")}
    assert not [name for name, source in sources.items() if "weights_only=False" in source]
    # torch.load is called by the readers only, always with weights_only=True
    calls = {
        name: [
            {k.arg: ast.unparse(k.value) for k in node.keywords}.get("weights_only")
            for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load"
        ]
        for name, source in sources.items()
    }
    assert {name: found for name, found in calls.items() if found} == {Path(readers.__file__).name: ["True"]}


def test_broken_files_are_refused(tmp_path):
    state = state_of("resnet8", 10)
    good_zip, good_legacy = torch_bytes(state), torch_bytes(state, legacy=True)
    st_path = save_checkpoint(trained_model(), {}, tmp_path / "good")
    good_st = st_path.read_bytes()
    rng = np.random.default_rng(0)
    random_bytes = b"\x42" + rng.integers(0, 256, 4095, dtype=np.uint8).tobytes()
    other_zip = io.BytesIO()
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("hello.txt", "not a checkpoint")
    header_size = int.from_bytes(good_st[:8], "little")
    corrupt_header = bytearray(good_st)
    corrupt_header[8 + header_size // 2 : 8 + header_size // 2 + 16] = b"\xff" * 16
    cases = {
        "empty": (b"", "empty"),
        "random": (random_bytes, "no known format.*safetensors.*PK"),
        "truncated zip": (good_zip[: len(good_zip) // 2], "truncated or corrupt"),
        "truncated legacy": (good_legacy[: len(good_legacy) // 2], "truncated"),
        "truncated safetensors": (good_st[: len(good_st) // 2], "truncated"),
        "safetensors header cut": (good_st[: 8 + header_size // 2], "truncated"),
        "corrupted safetensors header": (bytes(corrupt_header), "corrupted header"),
        "zip that is not a checkpoint": (other_zip.getvalue(), "not a PyTorch checkpoint.*hello.txt"),
        "plain pickle of a dict": (pickle.dumps({"w": 1}, protocol=2), "not a readable PyTorch checkpoint"),
        "list instead of dict": (torch_bytes([torch.zeros(2)]), "holds a list"),
        "dict without tensors": (torch_bytes({"epoch": 3, "lr": 0.1}), r"no state_dict found.*'epoch'"),
    }
    for name, (data, pattern) in cases.items():
        path = tmp_path / "broken.bin"
        path.write_bytes(data)
        for source in (path, data):
            with pytest.raises(CheckpointError, match=pattern):
                load_checkpoint(source)
        if name != "dict without tensors":
            with pytest.raises(CheckpointError, match=pattern):
                read_card(data)
    # the good bytes these were cut from do load
    for data in (good_zip, good_legacy, good_st):
        load_checkpoint(data)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="path or bytes"):
        load_checkpoint(12)
