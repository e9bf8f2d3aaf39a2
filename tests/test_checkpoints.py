"""Tests of tffd_viz.checkpoints: every format built here from zoo models, safety refusals, strictness."""

from __future__ import annotations

import argparse
import builtins
import functools
import hashlib
import io
import json
import os
import pickle
import shlex
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import tffd_viz.checkpoints as ckpt
from tffd_viz.checkpoints import (
    CARD_KEYS,
    FORMAT_TAG,
    CheckpointError,
    checkpoint_sha256,
    empty_card,
    infer_arch,
    list_checkpoints,
    load_checkpoint,
    read_card,
    save_checkpoint,
)
from tffd_viz.errors import CheckpointError as ErrorsCheckpointError
from tffd_viz.models import create_model

SOURCE_KEYS = ["source_format", "source_name", "source_layout", "recognised_as", "sha256"]


# ------------------------------------------------------------------------------------------ helpers
pytestmark = pytest.mark.usefixtures("single_thread")


def trained_model(arch: str = "resnet8", num_classes: int = 10, in_chans: int = 3, seed: int = 0):
    """A zoo model whose BatchNorm buffers differ from their initial values (two train-mode passes).

    The passes use small 8x8 inputs (the zoo pools adaptively) to keep the tests fast.
    """
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, in_chans, 8, 8))
    return model.eval()


@functools.cache
def _cached_state(arch: str, num_classes: int, in_chans: int, seed: int) -> dict[str, torch.Tensor]:
    return trained_model(arch, num_classes, in_chans, seed).state_dict()


def state_of(arch: str = "resnet8", num_classes: int = 10, in_chans: int = 3, seed: int = 0):
    """A fresh copy of a trained model's state_dict (safe to modify)."""
    return {k: v.clone() for k, v in _cached_state(arch, num_classes, in_chans, seed).items()}


def torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def assert_state_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key].cpu(), value.cpu()), key


def full_card() -> dict:
    return {
        "arch": "resnet8", "num_classes": 10, "in_chans": 1, "dataset": "digits",
        "mean": (0.25,), "std": (0.5,), "method": "tffd", "lambda_intra": 8e-4, "lambda_inter": 5e-4,
        "taps": ("layer1", "layer2", "layer3"), "pairs": [("layer1", "layer3")], "epochs": np.int64(2),
        "warmup": 20, "seed": 0, "recipe": "digits-fast", "final_acc": np.float32(91.5), "best_acc": 92.25,
        "train_seconds": torch.tensor(3.5), "device": "cpu", "versions": {"torch": torch.__version__},
        "history": [
            {"epoch": 1, "lr": 0.1, "ce": 1.5, "intra": {"layer1": 0.01}, "inter": {"layer1->layer3": 0.2},
             "train_acc": 50.0, "test_acc": 60.0, "seconds": 1.25, "saliency": {"layer1": [0.5, 0.25]}},
        ],
        "notes": "an extra key",
    }


def full_card_json() -> dict:
    """``full_card()`` as JSON would hold it, written out by hand (tuples -> lists, scalars -> numbers)."""
    card = full_card()
    card.update(mean=[0.25], std=[0.5], taps=["layer1", "layer2", "layer3"], pairs=[["layer1", "layer3"]],
                epochs=2, final_acc=91.5, train_seconds=3.5)
    return card


# --------------------------------------------------------------------------------------- own format
def test_card_keys_and_empty_card():
    assert CARD_KEYS[:3] == ("arch", "num_classes", "in_chans")
    assert CARD_KEYS[-3:] == ("device", "versions", "history")
    assert len(CARD_KEYS) == 21 and len(set(CARD_KEYS)) == 21
    card = empty_card()
    assert list(card) == list(CARD_KEYS) and all(v is None for v in card.values())
    assert ErrorsCheckpointError is CheckpointError


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
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == ("resnet8", 10, 1, "digits")
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


def test_cardless_safetensors_gets_inferred_card(tmp_path):
    state = state_of("wrn_16_2", num_classes=5, in_chans=1)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    card = read_card(path)
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == ("wrn_16_2", 5, 1, None)
    model, card = load_checkpoint(path)
    assert_state_equal(model, state)
    assert card["arch"] == "wrn_16_2" and card["epochs"] is None


def test_sha256_from_path_and_bytes(tmp_path):
    data = torch_bytes(state_of())
    (tmp_path / "x.pt").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert checkpoint_sha256(tmp_path / "x.pt") == checkpoint_sha256(data) == expected
    assert checkpoint_sha256(str(tmp_path / "x.pt")) == expected and len(expected) == 64


# ------------------------------------------------------------------------------------------ pickles
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


@pytest.mark.parametrize("arch", ["vgg8", "wrn_16_1"])
def test_other_families_load_from_pickles(arch):
    state = state_of(arch, num_classes=10, in_chans=1)
    model, card = load_checkpoint(torch_bytes({"module." + k: v for k, v in state.items()}))
    assert_state_equal(model, state)
    assert (card["arch"], card["num_classes"], card["in_chans"]) == (arch, 10, 1)


@pytest.mark.parametrize("key", ["model", "state_dict", "net", "snet", "student"])
def test_state_dict_under_container_key(key):
    state = state_of("resnet8", 10)
    model, card = load_checkpoint(torch_bytes({key: state, "epoch": 7, "misc": "text"}))
    assert_state_equal(model, state)
    assert card["epochs"] == 7


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
            key = "res" + key[len("layer"):]
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


def test_repdistiller_dict_with_namespace_and_numpy_scalars(tmp_path):
    state = state_of("resnet8", num_classes=100)
    opt = argparse.Namespace(model="resnet8", dataset="cifar100", epochs=240, learning_rate=0.05, trial="0")
    saved = {"opt": opt, "model": state, "epoch": np.int64(240), "best_acc": np.float64(71.25),
             "dtype": np.dtype("float32"), "optimizer": {"state": {}, "param_groups": [{"lr": 0.05}]}}
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
    with pytest.raises(CheckpointError, match=r"fit resnet8 \(arch from the weights.*: 1 missing key: fc\.bias$"):
        load_checkpoint(torch_bytes(saved))
    saved["opt"] = argparse.Namespace(model="resnet8")
    with pytest.raises(CheckpointError, match=r"fit resnet8 \(arch from the checkpoint's metadata.*: 1 missing key"):
        load_checkpoint(torch_bytes(saved))
    # RepDistiller's final file: accuracy instead of best_acc, epochs only in opt, arch in opt.model_s
    final = {"opt": argparse.Namespace(model_s="resnet8", epochs=240), "model": state, "accuracy": torch.tensor(70.5)}
    _, card = load_checkpoint(torch_bytes(final))
    assert (card["arch"], card["epochs"], card["best_acc"]) == ("resnet8", 240, 70.5)


def test_numpy1_scalar_name_in_legacy_pickle():
    """numpy 1 names the scalar constructor numpy.core.multiarray.scalar, numpy 2 numpy._core...: both load."""
    data = torch_bytes({"model": state_of("resnet8", 10), "best_acc": np.float64(64.5)}, legacy=True)
    numpy2_name, numpy1_name = b"cnumpy._core.multiarray\nscalar\n", b"cnumpy.core.multiarray\nscalar\n"
    written, other = (numpy2_name, numpy1_name) if numpy2_name in data else (numpy1_name, numpy2_name)
    assert data.count(written) == 1
    for variant in (data, data.replace(written, other)):
        _, card = load_checkpoint(variant)
        assert card["best_acc"] == 64.5


def test_old_checkpoint_without_num_batches_tracked():
    state = {k: v for k, v in state_of("resnet8", 10).items() if not k.endswith("num_batches_tracked")}
    model, _ = load_checkpoint(torch_bytes(state))
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in state.items())
    assert int(got["bn1.num_batches_tracked"]) == 0


# -------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("arch", ["resnet8", "resnet20", "resnet32", "resnet110", "resnet8x4", "wrn_16_2",
                                  "wrn_40_2", "vgg8", "vgg13"])
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


def test_caller_arch_and_num_classes_win_and_load_when_they_fit():
    state = state_of("resnet8", 10)
    model, card = load_checkpoint(torch_bytes(state), arch="resnet8", num_classes=10)
    assert_state_equal(model, state)
    assert model.arch == "resnet8" and model.num_classes == 10
    with pytest.raises(CheckpointError, match=r"arch='resnet9' is not in the zoo"):
        load_checkpoint(torch_bytes(state), arch="resnet9")


# ----------------------------------------------------------------------------------------- strictness
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
    with pytest.raises(CheckpointError, match=r"2 tensor\(s\).*layer1\.0\.conv1\.weight \(1 of 2304 values\)"
                                              r".*fc\.bias \(1 of 10 values\)"):
        load_checkpoint(data)
    with pytest.warns(UserWarning, match="fc.bias"):
        model, _ = load_checkpoint(data, allow_nonfinite=True)
    assert int(torch.isnan(model.layer1[0].conv1.weight).sum()) == 1
    assert torch.isinf(model.fc.bias[3])


# --------------------------------------------------------------------------------------------- safety
class RunsShell:
    """Pickles to ``os.system("touch <path>")``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(str(self.path))}",))


class OpensFile:
    """Pickles to ``builtins.open(<path>, "w")`` (creates the file when unpickled)."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (builtins.open, (str(self.path), "w"))


class ExecsCode:
    """Pickles to ``exec("open(<path>, 'w').close()")``."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.path)!r}, 'w').close()",))


def unpickle_without_restriction(zip_bytes: bytes) -> object:
    """Unpickle a torch.save archive's ``data.pkl`` with the plain pickle module (tensor storages -> None)."""
    with zipfile.ZipFile(io.BytesIO(zip_bytes)) as archive:
        raw = archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))

    class NoStorages(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    try:
        return NoStorages(io.BytesIO(raw)).load()
    except Exception:  # tensors cannot be rebuilt without storages; the gadget ran before that
        return None


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
    source = Path(ckpt.__file__).read_text()
    assert "weights_only=False" not in source
    assert "weights_only=True" in source


# ------------------------------------------------------------------------------------- broken files
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
    corrupt_header[8 + header_size // 2: 8 + header_size // 2 + 16] = b"\xff" * 16
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


# --------------------------------------------------------------------------------------------- device
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


# ------------------------------------------------------------------------------- strict cards (issue 21)
def strict_json(text: str | bytes, where: str):
    """``json.loads`` that refuses the non-JSON constants NaN, Infinity and -Infinity."""

    def refuse(constant: str):
        raise AssertionError(f"{where} holds {constant}")

    return json.loads(text, parse_constant=refuse)


def test_nonfinite_card_figures_are_stored_as_null_with_a_note(tmp_path):
    card = full_card()
    card["history"] = [dict(card["history"][0]), dict(card["history"][0], epoch=2, ce=float("nan"),
                                                      intra={"layer1": float("inf")})]
    card.update(final_acc=float("-inf"), lambda_inter=np.float32("nan"))
    path = save_checkpoint(trained_model(in_chans=1), card, tmp_path / "m")
    for where, text in (("the .json card", path.with_suffix(".json").read_text()),
                        ("the safetensors metadata", safe_open(str(path), "pt").metadata()["card"])):
        got = strict_json(text, where)
        assert got["history"][1]["ce"] is None and got["history"][1]["intra"] == {"layer1": None}, where
        assert got["final_acc"] is None and got["lambda_inter"] is None, where
        assert got["history"][0]["ce"] == 1.5 and got["history"][1]["lr"] == 0.1, where  # finite values kept
        assert got["notes"] == ["an extra key", "lambda_inter was NaN; stored as null",
                                "final_acc was -inf; stored as null", "history[1].ce was NaN; stored as null",
                                "history[1].intra.layer1 was inf; stored as null"], where
    _, loaded = load_checkpoint(path)
    assert loaded["final_acc"] is None and loaded["history"][1]["ce"] is None


def test_a_finite_card_is_written_unchanged_without_notes(tmp_path):
    card = full_card()
    del card["notes"]
    path = save_checkpoint(trained_model(in_chans=1), card, tmp_path / "m")
    got = strict_json(path.with_suffix(".json").read_text(), "card")
    assert "notes" not in got and got["history"] == full_card_json()["history"]


def test_nonfinite_weights_are_never_written(tmp_path):
    model = trained_model(in_chans=1)
    with torch.no_grad():
        model.layer1[0].conv1.weight[0, 0, 0, 0] = float("nan")
        model.fc.bias[2] = float("inf")
    with pytest.raises(CheckpointError, match=r"refusing to write .*m\.safetensors.*2 tensor\(s\): "
                                              r"layer1\.0\.conv1\.weight \(1 of \d+ values\), fc\.bias \(1 of 10"):
        save_checkpoint(model, None, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_no_shipped_card_or_table_holds_nan_or_infinity():
    folder = Path(__file__).resolve().parents[1] / "checkpoints"
    texts = [(str(p), p.read_text()) for p in sorted(folder.glob("*.json"))]
    for p in sorted(folder.glob("*.safetensors")):
        with safe_open(str(p), "pt") as fh:
            texts.append((f"{p} metadata", (fh.metadata() or {}).get("card", "{}")))
    if not texts:
        pytest.skip(f"no checkpoints shipped in {folder}")
    for where, text in texts:
        strict_json(text, where)
