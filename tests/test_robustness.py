"""Reliability and security of the public entry points a user hits: bad inputs, numerical faults, determinism.

Three parts:

* **Bad-input corpus** (:data:`CHECKPOINT_CORPUS`, :data:`CALL_CORPUS`): one table of ``input factory ->
  expected exception type + message fragment``. Every bad input is built here in ``tmp_path`` (no binary
  is committed). Checkpoints go through :func:`load_checkpoint` from a path AND from the bytes of an
  upload; the other rows call ``load_dataset`` / ``sample_batch`` / ``linear_cka`` / ``MinibatchCKA`` /
  ``extract_taps`` / ``channel_scores`` / ``tffd_terms_on_batch``. Each must raise a
  :class:`~tffd_viz.errors.TffdVizError` subclass whose message says what and where (path, shape or
  name), and no code from a malicious file may run (its marker file is never created; a control shows
  the payload is live when unpickled without restriction).
* **Numerical faults**: all-zero and constant channels, NaN/Inf features and huge (1e30) activations give
  defined values or a clear error, never a silent NaN. Policy: analysis functions raise naming the tap;
  the training loss (``tffd_viz.losses``) propagates NaN, as any PyTorch loss does.
* **Determinism**: two fresh processes computing a fingerprint (sample batch, taps, Tf-FD terms, CKA,
  scores) from the same checkpoint and seed agree bit for bit, and so do two runs in one process.

Checks of single modules that already live in ``test_checkpoints.py``, ``test_data.py`` and
``test_similarity_*.py`` are not repeated; the rows here are about what a user sees at the entry points.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import json
import os
import pickle
import re
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import Gadget, creates_marker_source, touch_command
from PIL import Image

import tffd_viz.data as data_mod
from tffd_viz import plots
from tffd_viz.checkpoints import load_checkpoint, save_checkpoint
from tffd_viz.data import load_dataset, sample_batch
from tffd_viz.errors import CheckpointError, DataError, TapError, TffdVizError
from tffd_viz.importance import channel_scores
from tffd_viz.losses import TfFD, channel_saliency, inter_fd, intra_fd, salient_order
from tffd_viz.models import create_model, extract_taps
from tffd_viz.similarity import (
    ConstantFeatureWarning,
    MinibatchCKA,
    channel_cosine_matrix,
    inter_layer_alignment,
    linear_cka,
    paired_channel_cosine,
    rbf_cka,
)
from tffd_viz.terms import tffd_terms_on_batch

ROOT = Path(__file__).resolve().parents[1]
FEATURE_CRITERIA = ("tffd", "l1", "l2", "mean")


pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------ helpers
@functools.cache
def _model_state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=num_classes, in_chans=1)
    model.train()
    with torch.no_grad():  # move the BatchNorm buffers away from their initial values
        model(torch.randn(4, 1, 8, 8))
    return model.eval().state_dict()


def digits_model(num_classes: int = 10) -> torch.nn.Module:
    """A resnet8 for 1-channel 32x32 inputs (digits), deterministic weights."""
    model = create_model("resnet8", num_classes=num_classes, in_chans=1)
    model.load_state_dict(_model_state(num_classes))
    return model.eval()


def state(num_classes: int = 10) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in _model_state(num_classes).items()}


def torch_bytes(obj: object, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


@functools.cache
def good_safetensors() -> bytes:
    """Bytes of a valid project checkpoint (resnet8, 10 classes, 1 channel, with a card)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = save_checkpoint(
            digits_model(), {"dataset": "digits", "method": "baseline"}, Path(tmp) / "good"
        )
        return path.read_bytes()


def safetensors_parts(data: bytes) -> tuple[dict, bytes]:
    """``(header dict, tensor bytes)`` of a safetensors file."""
    size = int.from_bytes(data[:8], "little")
    return json.loads(data[8 : 8 + size]), data[8 + size :]


def safetensors_from(header: dict, body: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + body


def with_card(**changes: object) -> bytes:
    """The good checkpoint with its embedded card edited (the weights unchanged): a lying card."""
    header, body = safetensors_parts(good_safetensors())
    card = json.loads(header["__metadata__"]["card"])
    card.update(changes)
    header["__metadata__"] = {**header["__metadata__"], "card": json.dumps(card)}
    return safetensors_from(header, body)


# ------------------------------------------------------------------------------- checkpoint corpus
@dataclass(frozen=True)
class BadCheckpoint:
    """A bad checkpoint: ``make(marker) -> bytes``, the error it must raise and a message fragment."""

    make: Callable[[Path], bytes]
    pattern: str
    error: type[TffdVizError] = CheckpointError
    malicious: bool = False
    kwargs: tuple[tuple[str, object], ...] = ()


def _st_corrupted_header(_m: Path) -> bytes:
    data = good_safetensors()
    size = int.from_bytes(data[:8], "little")
    return data[:8] + b'{"broken json' + b" " * (size - 13) + data[8 + size :]


def _st_shape_lie(_m: Path) -> bytes:
    header, body = safetensors_parts(good_safetensors())
    name = "layer1.0.conv1.weight"
    header[name] = {**header[name], "shape": [16, 16, 3, 300]}  # 100x more elements than its bytes
    return safetensors_from(header, body)


def _st_with_nonfinite(_m: Path) -> bytes:
    from safetensors.torch import save

    tensors = state()
    tensors["layer2.0.bn1.weight"][3] = float("inf")
    tensors["fc.bias"][0] = float("nan")
    return save(tensors)


def _st_card_not_json(_m: Path) -> bytes:
    header, body = safetensors_parts(good_safetensors())
    header["__metadata__"] = {**header["__metadata__"], "card": "{'arch': resnet8"}
    return safetensors_from(header, body)


def _pt_with_nan(_m: Path) -> bytes:
    tensors = state()
    tensors["layer1.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    return torch_bytes(tensors)


def _zip_with_gadget_as_tensor(marker: Path) -> bytes:
    tensors: dict[str, object] = dict(state())
    tensors["fc.weight"] = Gadget(builtins.eval, creates_marker_source(marker))
    return torch_bytes({"state_dict": tensors})


def _storage_trick(marker: Path) -> bytes:
    # torch.storage._load_from_bytes(b) runs torch.load(b) with the full unpickler: a classic bypass
    inner = pickle.dumps(Gadget(os.system, touch_command(marker)), protocol=2)
    return pickle.dumps(Gadget(torch.storage._load_from_bytes, inner), protocol=2)


CHECKPOINT_CORPUS: dict[str, BadCheckpoint] = {
    # malicious: code execution when unpickled
    "pickle-os.system": BadCheckpoint(
        lambda m: pickle.dumps(Gadget(os.system, touch_command(m)), protocol=2),
        r"refused to load .*would call '(posix|nt)\.system'",
        malicious=True,
    ),
    "pickle-builtins.eval": BadCheckpoint(
        lambda m: pickle.dumps(Gadget(builtins.eval, creates_marker_source(m)), protocol=2),
        r"refused to load .*would call 'eval'",
        malicious=True,
    ),
    "pickle-torch.storage._load_from_bytes": BadCheckpoint(
        _storage_trick, r"refused to load .*torch\.storage\._load_from_bytes", malicious=True
    ),
    "zip-pt-reduce-in-opt": BadCheckpoint(
        lambda m: torch_bytes({"opt": Gadget(os.system, touch_command(m)), "model": state()}),
        r"refused to load .*system",
        malicious=True,
    ),
    "zip-pt-eval-as-a-weight": BadCheckpoint(
        _zip_with_gadget_as_tensor, r"refused to load .*'eval'", malicious=True
    ),
    "legacy-pt-exec": BadCheckpoint(
        lambda m: torch_bytes(
            {"model": state(), "x": Gadget(builtins.exec, creates_marker_source(m))}, legacy=True
        ),
        r"refused to load .*'exec'",
        malicious=True,
    ),
    # damaged files
    "empty-file": BadCheckpoint(lambda m: b"", r"is empty \(0 bytes\)"),
    "random-bytes": BadCheckpoint(
        lambda m: b"\x42" + np.random.default_rng(0).integers(0, 256, 2047, dtype=np.uint8).tobytes(),
        r"is in no known format",
    ),
    "truncated-safetensors": BadCheckpoint(lambda m: good_safetensors()[:5000], r"is truncated"),
    "truncated-zip-pt": BadCheckpoint(lambda m: torch_bytes(state())[:3000], r"truncated or corrupt"),
    "safetensors-corrupted-header": BadCheckpoint(_st_corrupted_header, r"has a corrupted header"),
    "safetensors-header-lies-about-a-shape": BadCheckpoint(_st_shape_lie, r"is corrupt"),
    "card-not-json": BadCheckpoint(_st_card_not_json, r"model card in the metadata of .* is not valid JSON"),
    # well-formed files that do not fit
    "card-lies-about-arch": BadCheckpoint(
        lambda m: with_card(arch="resnet20"),
        (
            r"does not fit resnet20 \(arch from the card.*missing keys: layer1\.1\..*"
            r"look like resnet8 with 10 classes"
        ),
    ),
    "card-lies-about-class-count": BadCheckpoint(
        lambda m: with_card(num_classes=100), r"fc\.weight checkpoint \(10, 64\) vs model \(100, 64\)"
    ),
    "state-dict-for-another-class-count": BadCheckpoint(
        lambda m: torch_bytes(state(num_classes=100)),
        r"num_classes=10 from the caller.*fc\.weight checkpoint \(100, 64\) vs model \(10, 64\)",
        kwargs=(("num_classes", 10),),
    ),
    "nan-weights": BadCheckpoint(
        _pt_with_nan, r"NaN/Inf values in 1 tensor\(s\): layer1\.0\.conv1\.weight \(1 of 2304 values\)"
    ),
    "inf-and-nan-weights-safetensors": BadCheckpoint(
        _st_with_nonfinite, r"NaN/Inf values in 2 tensor\(s\).*fc\.bias.*layer2\.0\.bn1\.weight"
    ),
}


@pytest.mark.parametrize("how", ["path", "bytes"])
@pytest.mark.parametrize("case", list(CHECKPOINT_CORPUS))
def test_bad_checkpoint_is_refused_with_a_message_naming_it(tmp_path, case, how):
    bad = CHECKPOINT_CORPUS[case]
    marker = tmp_path / "code_ran"
    data = bad.make(marker)
    path = tmp_path / f"{case}.pt"
    path.write_bytes(data)
    source: Path | bytes = path if how == "path" else data
    where = re.escape(repr(str(path))) if how == "path" else re.escape(f"uploaded bytes ({len(data)} bytes)")
    with pytest.raises(bad.error) as info:
        load_checkpoint(source, **dict(bad.kwargs))
    message = str(info.value)
    assert isinstance(info.value, TffdVizError) and isinstance(info.value, ValueError)
    assert re.search(bad.pattern, message, re.DOTALL), message
    assert re.search(where, message), f"the message does not say where: {message}"
    assert "Traceback" not in message and "weights_only=False" not in message
    assert not marker.exists(), "code from the checkpoint ran"


MALICIOUS_RAW_PICKLES = [k for k, v in CHECKPOINT_CORPUS.items() if v.malicious and k.startswith("pickle-")]


@pytest.mark.parametrize("case", MALICIOUS_RAW_PICKLES)
def test_malicious_pickles_are_live_controls(tmp_path, case):
    """Control: the refused payloads really run code when unpickled without restriction."""
    marker = tmp_path / "code_ran"
    data = CHECKPOINT_CORPUS[case].make(marker)
    # the nested torch.load of the storage trick fails (it returns a non-storage): after running the gadget
    with warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        pickle.loads(data)
    assert marker.exists()


def test_the_good_checkpoint_loads_from_path_and_bytes(tmp_path):
    """Control for the corpus: the bytes its rows were cut from do load."""
    path = tmp_path / "good.safetensors"
    path.write_bytes(good_safetensors())
    for source in (path, good_safetensors(), torch_bytes(state())):
        model, card = load_checkpoint(source)
        assert card["arch"] == "resnet8" and card["num_classes"] == 10 and not model.training


# ------------------------------------------------------------------------------------- call corpus
def _png(mode: str, size: tuple[int, int], color: object) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def _write(root: Path, files: dict[str, bytes]) -> Path:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(6, 1, 32, 32, generator=gen), torch.randint(0, 10, (6,), generator=gen)


def _feature(n: int = 6, c: int = 8, hw: int = 4) -> torch.Tensor:
    return torch.rand(n, c, hw, hw, generator=torch.Generator().manual_seed(1))


def _nan_model() -> torch.nn.Module:
    tensors = state()
    tensors["layer2.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    with pytest.warns(UserWarning, match="allow_nonfinite=True"):
        model, _ = load_checkpoint(torch_bytes(tensors), allow_nonfinite=True)
    return model


def _nonimage_folder(tmp: Path) -> Callable[[], object]:
    root = _write(
        tmp / "junk",
        {"train/cat/notes.txt": b"hello", "train/cat/data.csv": b"1,2", "test/cat/readme.md": b"# hi"},
    )
    return lambda: load_dataset("imagefolder", root)


def _undecodable_folder(tmp: Path) -> Callable[[], object]:
    root = _write(
        tmp / "garbage",
        {
            "train/cat/a.png": b"not a png",
            "train/dog/b.jpg": b"\xff\xd8 nope",
            "test/cat/c.png": b"\x89PNG broken",
            "test/dog/d.jpg": b"",
        },
    )
    return lambda: load_dataset("imagefolder", root)


def _tapped(
    fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], object],
) -> Callable[[Path], Callable]:
    return lambda tmp: lambda: fn(digits_model(), *_images())


@dataclass(frozen=True)
class BadCall:
    """``make(tmp_path) -> call``: a call of a public entry point on a bad input, and what it must raise."""

    make: Callable[[Path], Callable[[], object]]
    error: type[TffdVizError]
    pattern: str


CALL_CORPUS: dict[str, BadCall] = {
    # data
    "load_dataset-unknown-name": BadCall(
        lambda t: lambda: load_dataset("mnist"), DataError, r"unknown dataset 'mnist'"
    ),
    "load_dataset-missing-folder": BadCall(
        lambda t: lambda: load_dataset("imagefolder", t / "nowhere"),
        DataError,
        r"image folder .*nowhere does not exist",
    ),
    "load_dataset-folder-without-splits": BadCall(
        lambda t: (
            lambda: load_dataset("imagefolder", _write(t / "flat", {"cat/a.png": _png("RGB", (8, 8), 0)}))
        ),
        DataError,
        r"flat must hold train/<class>/\* and test/<class>/\* subfolders; found \['cat'\]",
    ),
    "load_dataset-only-non-image-files": BadCall(
        _nonimage_folder, DataError, r"no readable images under .*junk/train"
    ),
    "load_dataset-only-undecodable-images": BadCall(
        _undecodable_folder, DataError, r"no readable images under .*garbage/train"
    ),
    "sample_batch-n-0": BadCall(
        lambda t: lambda: sample_batch("digits", n=0),
        DataError,
        r"cannot sample n=0 images from a split of 360 images",
    ),
    "sample_batch-n-too-large": BadCall(
        lambda t: lambda: sample_batch("digits", n=100_000), DataError, r"n=100000 images from a split of 360"
    ),
    "sample_batch-bad-split": BadCall(
        lambda t: lambda: sample_batch("digits", split="val", n=4),
        DataError,
        r"split must be 'train' or 'test', got 'val'",
    ),
    # CKA sample sizes 1..3 and other shape faults
    **{
        f"linear_cka-n-{n}": BadCall(
            lambda t, n=n: lambda: linear_cka(_feature(n), _feature(n) + 1),
            TffdVizError,
            rf"at least 4 samples, got n = {n} \(x shape \({n}, 8, 4, 4\)",
        )
        for n in (1, 2, 3)
    },
    "linear_cka-different-samples": BadCall(
        lambda t: lambda: linear_cka(_feature(6), _feature(5)),
        TffdVizError,
        r"same samples.*\(6, 8, 4, 4\).*\(5, 8, 4, 4\)",
    ),
    "linear_cka-nan-features": BadCall(
        lambda t: (
            lambda: linear_cka(
                _feature().index_put_((torch.tensor([0]),), torch.tensor(float("nan"))), _feature()
            )
        ),
        TffdVizError,
        r"x: features of shape \(6, 8, 4, 4\) contain NaN or infinity",
    ),
    "MinibatchCKA-minibatch-of-3": BadCall(
        lambda t: lambda: MinibatchCKA(1, 1).update([_feature(3)], [_feature(3)]),
        TffdVizError,
        r"minibatch size 3 is below 4",
    ),
    # taps (layer names)
    "extract_taps-unknown-layer": BadCall(
        _tapped(lambda m, x, y: extract_taps(m, x, ["layer1", "layer9"])),
        TapError,
        r"unknown tap\(s\) \['layer9'\] for CifarResNet; valid "
        r"module names: conv1, bn1",
    ),
    "extract_taps-wrong-input-channels": BadCall(
        _tapped(lambda m, x, y: extract_taps(m, x.repeat(1, 3, 1, 1))),
        DataError,
        r"expects images of shape \(N, 1, H, W\).*got \(6, 3, 32, 32\)",
    ),
    # importance
    "channel_scores-unknown-layer": BadCall(
        _tapped(lambda m, x, y: channel_scores("tffd", model=m, images=x, tap="layer9")),
        TapError,
        r"unknown tap\(s\) \['layer9'\]",
    ),
    "channel_scores-non-spatial-layer": BadCall(
        _tapped(lambda m, x, y: channel_scores("tffd", model=m, images=x, tap="fc")),
        TapError,
        r"features of tap 'fc' must be a 4-D tensor \(N, C, H, W\), got shape \(6, 10\)",
    ),
    "channel_scores-bn_gamma-layer-without-bn": BadCall(
        _tapped(lambda m, x, y: channel_scores("bn_gamma", model=m, images=x, tap="fc")),
        TapError,
        r"no BatchNorm2d found for tap 'fc' \(Linear\)",
    ),
    "channel_scores-unknown-criterion": BadCall(
        lambda t: lambda: channel_scores("magic", features=_feature()),
        TffdVizError,
        r"unknown criterion 'magic'; choose one of \[.*'tffd'",
    ),
    "channel_scores-nan-model": BadCall(
        lambda t: lambda: channel_scores("l2", model=_nan_model(), images=_images()[0], tap="layer3"),
        TapError,
        r"features of tap 'layer3' of shape \(6, 64, 8, 8\) contain 24576 NaN/Inf values",
    ),
    # Tf-FD terms
    "tffd_terms_on_batch-unknown-layer": BadCall(
        _tapped(lambda m, x, y: tffd_terms_on_batch(m, x, y, taps=["layer1", "nope"])),
        TapError,
        r"unknown tap\(s\) \['nope'\] for CifarResNet",
    ),
    "tffd_terms_on_batch-non-spatial-layer": BadCall(
        _tapped(lambda m, x, y: tffd_terms_on_batch(m, x, y, taps=["layer1", "fc"])),
        TapError,
        r"stage 'fc' must be a 4-D tensor \(N, C, H, W\), got shape \(6, 10\)",
    ),
    "tffd_terms_on_batch-labels-do-not-match": BadCall(
        _tapped(lambda m, x, y: tffd_terms_on_batch(m, x, y[:4])),
        DataError,
        r"labels must have shape \(N,\) = \(6,\) to match images \(6, 1, 32, 32\), got \(4,\)",
    ),
    "tffd_terms_on_batch-nan-model": BadCall(
        lambda t: lambda: tffd_terms_on_batch(_nan_model(), *_images()),
        TapError,
        r"features of tap 'layer2' \(shape \(6, 32, 16, 16\)\) contain \d+ NaN/Inf values",
    ),
}


@pytest.fixture
def fresh_data_cache(tmp_path, monkeypatch) -> Iterator[None]:
    monkeypatch.setenv("TFFD_CACHE", str(tmp_path / "cache"))
    data_mod._load_cached.cache_clear()
    yield
    data_mod._load_cached.cache_clear()


@pytest.mark.parametrize("case", list(CALL_CORPUS))
def test_bad_call_raises_a_named_error(tmp_path, fresh_data_cache, case):
    bad = CALL_CORPUS[case]
    call = bad.make(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skipped-file warnings of the image folders
        with pytest.raises(bad.error) as info:
            call()
    assert isinstance(info.value, TffdVizError)
    assert re.search(bad.pattern, str(info.value), re.DOTALL), str(info.value)


def test_odd_images_and_an_empty_class_are_accepted(tmp_path, fresh_data_cache):
    """Grayscale, RGBA, palette and odd-sized images load as (N, 3, 32, 32); an empty class only warns."""
    root = _write(
        tmp_path / "odd",
        {
            "train/ant/gray.png": _png("L", (7, 5), 200),
            "train/ant/rgba.png": _png("RGBA", (64, 3), (10, 20, 30, 0)),
            "train/bee/palette.png": _png("P", (1, 1), 3),
            "train/bee/big.png": _png("RGB", (300, 200), (1, 2, 3)),
            "test/ant/a.png": _png("RGB", (32, 32), (4, 5, 6)),
            "test/bee/b.png": _png("I;16", (9, 9), 40000),
        },
    )
    (root / "train" / "cow").mkdir()
    (root / "test" / "cow").mkdir()
    with pytest.warns(UserWarning, match=r"\['cow'\] .* hold no images"):
        bundle = load_dataset("imagefolder", root)
    assert bundle.classes == ["ant", "bee", "cow"]
    assert tuple(bundle.train.images.shape) == (4, 3, 32, 32) and bundle.train.images.dtype == torch.uint8
    assert bundle.train.labels.tolist() == [0, 0, 1, 1]
    assert bundle.train.images[0, :, 0, 0].tolist() == [200, 200, 200]  # gray -> equal RGB
    assert bundle.train.images[2, :, 0, 0].tolist() == [1, 2, 3]  # bee/big.png
    images, labels = sample_batch("imagefolder", "train", n=4, root=root)
    assert bool(torch.isfinite(images).all()) and sorted(labels.tolist()) == [0, 0, 1, 1]


# -------------------------------------------------------------------------------- numerical faults
def test_all_zero_and_constant_channels_give_defined_values():
    f = _feature(6, 4, 5)
    f[:, 1] = 0.0  # dead channel
    f[:, 2] = 3.0  # constant channel
    hw = 25
    saliency = channel_saliency(f)
    assert saliency[1].item() == 0.0  # F.normalize's eps: 0 / 1e-12 = 0, not NaN
    assert saliency[2].item() == pytest.approx(1 / hw**0.5, rel=1e-6)  # unit map of 25 equal values
    assert salient_order(f)[-1].item() == 1
    for name in FEATURE_CRITERIA:
        scores = channel_scores(name, features=f)
        assert bool(torch.isfinite(scores).all()) and scores[1].item() == 0.0, name
    assert channel_scores("l2", features=f)[2].item() == pytest.approx(3.0 * hw**0.5)
    cos = channel_cosine_matrix(f)
    assert bool(torch.isfinite(cos).all())
    assert cos[1].abs().sum().item() == 0.0 and cos[:, 1].abs().sum().item() == 0.0  # diagonal too
    assert cos[2, 2].item() == pytest.approx(1.0)
    assert paired_channel_cosine(f, torch.tensor([0, 2, 3, 1]))[1].item() == 0.0
    assert torch.isfinite(intra_fd(f)) and torch.isfinite(inter_fd(f, f[:, :, ::2, ::2]))
    assert inter_layer_alignment(f, f)[1].item() == 0.0

    zeros = torch.zeros(6, 4, 5, 5)
    assert channel_saliency(zeros).abs().sum().item() == 0.0
    assert salient_order(zeros).tolist() == [0, 1, 2, 3]  # stable: ties keep channel order
    assert intra_fd(zeros).item() == 0.0 and inter_fd(zeros, zeros).item() == 0.0
    assert channel_cosine_matrix(zeros).abs().sum().item() == 0.0


@pytest.mark.parametrize("kind", ["zeros", "constant"])
def test_cka_of_a_constant_layer_is_zero_with_a_warning(kind):
    x = _feature(8)
    const = torch.zeros(8, 8, 4, 4) if kind == "zeros" else torch.full((8, 8, 4, 4), 2.5)
    for fn in (linear_cka, rbf_cka):
        with pytest.warns(ConstantFeatureWarning, match="features y have zero variance"):
            assert fn(x, const) == 0.0
    mb = MinibatchCKA(2, 1)
    mb.update({"live": x, "dead": const}, [x])
    with pytest.warns(ConstantFeatureWarning, match="'dead'"):
        matrix = mb.compute()
    assert matrix[1, 0].item() == 0.0 and matrix[0, 0].item() == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nonfinite_features_raise_in_analysis_and_propagate_in_the_loss(bad):
    f = _feature(6, 4, 5)
    f[2, 3, 1, 1] = bad
    # analysis: a clear error naming the tap / input and its shape
    with pytest.raises(
        TapError,
        match=r"features of tap 'layer2' of shape \(6, 4, 5, 5\) contain 1 NaN/Inf"
        r" values, in channels \[3\]",
    ):
        channel_scores("tffd", features=f, tap="layer2")
    for name in FEATURE_CRITERIA:
        with pytest.raises(TapError, match="NaN/Inf"):
            channel_scores(name, features=f)
    for fn in (
        channel_cosine_matrix,
        lambda t: paired_channel_cosine(t, torch.arange(4)),
        lambda t: inter_layer_alignment(t, t),
    ):
        with pytest.raises(TapError, match=r"\(6, 4, 5, 5\) contains NaN or infinity"):
            fn(f)
    with pytest.raises(TffdVizError, match=r"y: features of shape \(6, 4, 5, 5\) contain NaN or infinity"):
        linear_cka(_feature(6, 4, 5), f)
    with pytest.raises(TffdVizError, match=r"feats_b\[0\]: features of shape \(6, 4, 5, 5\) contain NaN"):
        MinibatchCKA(1, 1).update([_feature(6, 4, 5)], [f])
    # the training loss propagates (as any PyTorch loss): documented, not silent in analysis
    assert not torch.isfinite(channel_saliency(f)[3])
    assert not torch.isfinite(intra_fd(f))
    assert not torch.isfinite(TfFD()([f, f[:, :, ::2, ::2]]).total)


def test_nonfinite_weights_are_named_by_the_terms_and_scores():
    model = _nan_model()
    x, y = _images()
    with pytest.raises(TapError, match=r"features of tap 'layer2'.*NaN/Inf.*weights or the images are not"):
        tffd_terms_on_batch(model, x, y)
    # layer1 runs before the NaN weight: its features are finite, the logits are not
    with pytest.raises(TffdVizError, match=r"logits \(shape \(6, 10\)\) contain 60 NaN/Inf values"):
        tffd_terms_on_batch(model, x, y, taps=["layer1"])
    with pytest.raises(TffdVizError, match=r"taylor scores of tap 'layer3' are not finite"):
        channel_scores("taylor", model=model, images=x, labels=y, tap="layer3")
    # NaN only in the classifier: the taps are fine, the logits are not
    tensors = state()
    tensors["fc.weight"][2, 5] = float("nan")
    with pytest.warns(UserWarning, match="allow_nonfinite=True"):
        head_nan, _ = load_checkpoint(torch_bytes(tensors), allow_nonfinite=True)
    with pytest.raises(TffdVizError, match=r"logits \(shape \(6, 10\)\) contain 6 NaN/Inf values"):
        tffd_terms_on_batch(head_nan, x, y)


def test_huge_activations_give_finite_scale_invariant_results():
    f = _feature(6, 4, 5) + 0.1
    huge = f * 1e30  # finite in float32, but a sum of squares overflows it
    assert torch.isfinite(huge).all()
    for name in FEATURE_CRITERIA:
        scores = channel_scores(name, features=huge)
        assert bool(torch.isfinite(scores).all()), name
        scale = 1.0 if name == "tffd" else 1e30  # Tf-FD saliency is scale-invariant, the others linear
        torch.testing.assert_close(
            scores.double(), channel_scores(name, features=f).double() * scale, rtol=1e-5, atol=0
        )
    torch.testing.assert_close(channel_cosine_matrix(huge), channel_cosine_matrix(f), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        paired_channel_cosine(huge, torch.arange(4)),
        paired_channel_cosine(f, torch.arange(4)),
        rtol=1e-5,
        atol=1e-6,
    )
    torch.testing.assert_close(
        inter_layer_alignment(huge, f), inter_layer_alignment(f, f), rtol=1e-5, atol=1e-6
    )
    assert linear_cka(huge, f * 2 + 1) == pytest.approx(linear_cka(f, f * 2 + 1), rel=1e-9)
    # Tf-FD terms of a model whose last stage is ~1e30: recomputed in float64, finite
    model = digits_model()
    with torch.no_grad():
        model.layer3[0].bn2.weight.mul_(1e30)
        model.layer3[0].bn2.bias.mul_(1e30)
    x, y = _images()
    report = tffd_terms_on_batch(model, x, y)
    values = [report.ce, *report.intra.values(), *report.inter.values()]
    assert all(np.isfinite(v) for v in values), values
    assert report.intra["layer3"] > 1e50 and report.inter["layer2->layer3"] > 1e50


def test_figures_mark_nonfinite_inputs_instead_of_failing():
    scores = np.array([0.3, np.nan, 0.1, np.inf])
    matrix = np.eye(4)
    matrix[0, 1] = matrix[1, 0] = np.nan
    figures = {
        "saliency": plots.saliency_bars_figure({"A": scores, "B": scores[::-1].copy()}, tap="layer1"),
        "cosine": plots.cosine_matrix_figure(matrix, order=np.array([0, 1, 2, 3])),
        "cka": plots.cka_heatmap_figure(matrix, names_a=list("abcd"), names_b=list("efgh")),
    }
    for name, fig in figures.items():
        notes = [a.text for a in fig.layout.annotations if a.name == "nonfinite"]
        assert len(notes) == 1 and "not finite" in notes[0], name
        fig.to_json()  # serialisable for the browser
    assert "4 values are not finite" in next(
        a.text for a in figures["saliency"].layout.annotations if a.name == "nonfinite"
    )


# ------------------------------------------------------------------------------------- determinism
FINGERPRINT_SCRIPT = r"""
import hashlib, json, sys
import torch
from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.importance import channel_scores
from tffd_viz.models import extract_taps
from tffd_viz.similarity import MinibatchCKA, linear_cka
from tffd_viz.terms import tffd_terms_on_batch

def digest(t):
    return hashlib.sha256(t.detach().contiguous().cpu().numpy().tobytes()).hexdigest()[:16]

def fingerprint(path):
    images, labels, idx = sample_batch("digits", "test", n=48, seed=7, return_indices=True)
    model, card = load_checkpoint(path)
    with torch.no_grad():
        taps = extract_taps(model, images)
    out = {"images": digest(images), "labels": digest(labels), "indices": digest(idx), "card": card["sha256"]}
    out.update({f"tap:{k}": digest(v) for k, v in taps.items()})
    report = tffd_terms_on_batch(model, images, labels)
    out["terms"] = [report.ce.hex(), *(v.hex() for v in report.intra.values()),
                    *(v.hex() for v in report.inter.values())]
    out["cka"] = linear_cka(taps["layer1"], taps["layer3"]).hex()
    mb = MinibatchCKA(3, 3)
    for part in (slice(0, 24), slice(24, 48)):
        feats = [v[part] for v in taps.values()]
        mb.update(feats, feats)
    out["minibatch_cka"] = digest(mb.compute())
    out["scores"] = digest(channel_scores("tffd", model=model, images=images, tap="layer2"))
    return out

first, second = fingerprint(sys.argv[1]), fingerprint(sys.argv[1])
assert first == second, "two runs in one process differ"
print(json.dumps(first, sort_keys=True))
"""


def test_same_checkpoint_and_seed_give_bit_identical_numbers_across_processes(tmp_path):
    path = save_checkpoint(digits_model(), {"dataset": "digits"}, tmp_path / "det")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TFFD_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FINGERPRINT_SCRIPT, str(path)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    assert outputs[0] == outputs[1]
    assert {"tap:layer1", "tap:layer2", "tap:layer3", "terms", "cka", "minibatch_cka", "scores"} <= set(
        outputs[0]
    )
    assert len(outputs[0]["terms"]) == 1 + 3 + 3
    # and it is a fingerprint of these inputs: another seed changes the batch
    other = sample_batch("digits", "test", n=48, seed=8)[0]
    assert not torch.equal(other, sample_batch("digits", "test", n=48, seed=7)[0])
