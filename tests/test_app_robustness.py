"""The app under bad input (AppTest): bad uploads, a missing dataset, a CUDA request without CUDA.

For every bad upload the app must show a message (``st.error`` in the sidebar or the main area), never
an exception, run no code from the file, and stay usable: switching model B back to a shipped
checkpoint gives no error and the Overview charts render again. Uses the shared ``app_at`` /
``assert_app_ok`` fixtures of ``tests/conftest.py``; the malicious upload pickles conftest's ``RunsShell``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RunsShell, unpickle_without_restriction

pytest.importorskip("streamlit")

from tffd_viz.checkpoints import save_checkpoint
from tffd_viz.devices import resolved_device
from tffd_viz.models import create_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_A = "digits_resnet8_baseline_s0"
MODEL_B = "digits_resnet8_tffd_s0"
UPLOAD = "Upload a file ..."  # app_pages._sidebar.UPLOAD


# ---------------------------------------------------------------------------------------- bad files
def digits_checkpoint(tmp: Path, num_classes: int = 10, card: dict | None = None) -> bytes:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=num_classes, in_chans=1).eval()
    return save_checkpoint(model, {"dataset": "digits", **(card or {})}, tmp / f"m{num_classes}").read_bytes()


def lying_card(tmp: Path) -> bytes:
    data = digits_checkpoint(tmp)
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + size])
    card = json.loads(header["__metadata__"]["card"])
    header["__metadata__"]["card"] = json.dumps({**card, "arch": "wrn_16_1"})
    raw = json.dumps(header).encode()
    return len(raw).to_bytes(8, "little") + raw + data[8 + size :]


def nan_weights(tmp: Path) -> bytes:
    torch.manual_seed(0)
    state = create_model("resnet8", num_classes=10, in_chans=1).state_dict()
    state["layer3.0.conv2.weight"][1, 2, 0, 0] = float("nan")
    buf = io.BytesIO()
    torch.save({"state_dict": state, "epoch": 3}, buf)
    return buf.getvalue()


def malicious(tmp: Path) -> bytes:
    buf = io.BytesIO()
    torch.save({"opt": RunsShell(tmp / "code_ran"), "model": {"w": torch.zeros(1)}}, buf)
    return buf.getvalue()


# name -> (file name, bytes factory, fragment of the message shown)
BAD_UPLOADS: dict[str, tuple[str, Callable[[Path], bytes], str]] = {
    "garbage-bytes": (
        "notes.pt",
        lambda t: b"\x13" + np.random.default_rng(1).bytes(999),
        "does not load: checkpoint uploaded bytes (1000 bytes) is in no known format",
    ),
    "malicious-pickle": ("evil.pth", malicious, "refused to load uploaded bytes"),
    "truncated-safetensors": ("cut.safetensors", lambda t: digits_checkpoint(t)[:4096], "is truncated"),
    "nan-weights": (
        "nan.pth.tar",
        nan_weights,
        "has NaN/Inf values in 1 tensor(s): layer3.0.conv2.weight (1 of 36864 values)",
    ),
    "lying-card": ("liar.safetensors", lying_card, "does not fit wrn_16_1 (arch from the card"),
    "wrong-class-count-for-the-dataset": (
        "cifar100_head.safetensors",
        lambda t: digits_checkpoint(t, 100),
        "Model B expects 1 input channel(s) and 100 classes, but digits has "
        "1 and 10: pick a matching dataset",
    ),
}


def messages(at) -> list[str]:
    return [str(e.value) for e in at.error]


def assert_usable_again(at, assert_app_ok, b: str) -> None:
    """Switch model B back to a shipped checkpoint: no error, no exception, charts drawn."""
    at.sidebar.selectbox(key="model-B").set_value(b).run()
    assert_app_ok(at)
    assert at.get("plotly_chart"), "no chart after switching back to a shipped model"


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_upload_shows_a_message_and_the_app_stays_usable(app_at, assert_app_ok, tmp_path, case):
    b = MODEL_B
    at = app_at(a=MODEL_A, b=b)
    assert_app_ok(at)
    at.sidebar.selectbox(key="model-B").set_value(UPLOAD).run()
    assert not at.exception
    assert any("Upload a checkpoint for model B" in str(i.value) for i in at.info)
    name, make, fragment = BAD_UPLOADS[case]
    at.file_uploader(key="upload-B").set_value((name, make(tmp_path), "application/octet-stream")).run()
    assert not at.exception, [str(e.value) for e in at.exception]
    shown = messages(at)
    assert any(fragment in m for m in shown), shown
    assert all("Traceback" not in m for m in shown)
    assert not (tmp_path / "code_ran").exists(), "code from the upload ran"
    assert_usable_again(at, assert_app_ok, b)


def test_oversize_upload_is_refused_before_loading(app_at, assert_app_ok, monkeypatch, tmp_path):
    """The sidebar's size limit (``MAX_UPLOAD_MB``, lowered here to 1 MB to keep the test small)."""
    from app_pages import _sidebar

    monkeypatch.setattr(_sidebar, "MAX_UPLOAD_MB", 1)
    b = MODEL_B
    at = app_at(a=MODEL_A, b=b)
    at.sidebar.selectbox(key="model-B").set_value(UPLOAD).run()
    big = digits_checkpoint(tmp_path) + b"\0" * (2 * 2**20)  # a valid file, too large
    at.file_uploader(key="upload-B").set_value(("big.safetensors", big, "application/octet-stream")).run()
    assert not at.exception
    shown = messages(at)
    assert any(
        f"big.safetensors is {len(big) / 2**20:.0f} MB, over the 1 MB upload limit" in m for m in shown
    ), shown
    assert any("Copy it into checkpoints/ beside the app instead" in m for m in shown), shown
    assert_usable_again(at, assert_app_ok, b)


def test_the_upload_limit_is_stated_beside_the_uploader_and_is_the_servers(app_at):
    """The limit the app states and enforces is ``server.maxUploadSize`` of .streamlit/config.toml."""
    import tomllib

    from app_pages import _sidebar

    limit = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["server"]["maxUploadSize"]
    assert limit == _sidebar.MAX_UPLOAD_MB
    at = app_at(a=MODEL_A, b=MODEL_B)
    at.sidebar.selectbox(key="model-B").set_value(UPLOAD).run()
    assert not at.exception
    assert at.file_uploader(key="upload-B").proto.help == f"At most {limit} MB per file."
    captions = [str(c.value) for c in at.sidebar.caption]
    assert any(c.startswith(f"Upload limit: {limit} MB per file") for c in captions), captions


def test_a_valid_upload_loads(app_at, assert_app_ok, tmp_path):
    """Control for the bad uploads: a good file through the same widget gives no error."""
    at = app_at(a=MODEL_A, b=MODEL_B)
    at.sidebar.selectbox(key="model-B").set_value(UPLOAD).run()
    at.file_uploader(key="upload-B").set_value(
        ("good.safetensors", digits_checkpoint(tmp_path), "application/octet-stream")
    ).run()
    assert_app_ok(at)
    assert at.get("plotly_chart")


def test_missing_dataset_shows_the_instructions(app_at, assert_app_ok, tmp_path):
    empty = tmp_path / "no_data_here"
    empty.mkdir()
    b = MODEL_B
    at = app_at(a=MODEL_A, b=b, dataset="cifar10", root=str(empty))
    assert not at.exception, [str(e.value) for e in at.exception]
    shown = messages(at)
    assert any("Dataset 'cifar10' is not available" in m and str(empty) in m for m in shown), shown
    assert any("Get it with the button below" in str(i.value) for i in at.info)
    assert at.button(key="download-data").label.startswith("Download cifar10 through torchvision")
    assert not at.get("plotly_chart")
    at.sidebar.selectbox(key="dataset").set_value("digits").run()
    assert_app_ok(at)
    assert at.get("plotly_chart")


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the fallback on machines without CUDA")
def test_cuda_request_without_cuda_warns_and_runs_on_cpu(app_at, assert_app_ok):
    """The sidebar resolves the device with the library's one rule and shows its note as a warning."""
    at = app_at(a=MODEL_A, b=MODEL_B, device="cuda")
    assert_app_ok(at)
    note = resolved_device("cuda", unavailable="cpu").note
    assert note and "running on the CPU" in note
    assert any(str(w.value) == f"{note[:1].upper()}{note[1:]}." for w in at.sidebar.warning)
    assert any("Running on **cpu**" in str(c.value) for c in at.sidebar.caption)
    assert at.sidebar.selectbox(key="device").value == "cuda"
    assert at.get("plotly_chart")


GARBAGE_URLS = {
    "names-and-words": (
        {
            "a": "no_such_model",
            "b": "../../etc/passwd",
            "device": "tpu",
            "dataset": "imagenet",
            "n": "lots",
            "seed": "-x",
            "split": "validation",
            "layer": "nope",
        },
        {"device": "auto", "dataset": "digits", "n": 256, "seed": 0, "split": "test"},
    ),
    "numbers-below-range": ({"n": "1", "seed": "-3"}, {"n": 4, "seed": 0}),
    "numbers-above-range": ({"n": "999999", "seed": "99999999999999"}, {"n": 360, "seed": 2**31 - 1}),
}


@pytest.mark.parametrize("case", list(GARBAGE_URLS))
def test_garbage_query_parameters_fall_back_to_defaults(app_at, assert_app_ok, case):
    """A hand-edited URL (unknown names, words for numbers, numbers out of range) must not break the app."""
    from streamlit.testing.v1 import AppTest

    b = MODEL_B
    app_at(a=MODEL_A, b=b)  # fails unless the pages and shipped checkpoints are there
    query, expected = GARBAGE_URLS[case]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    for key, value in {"a": MODEL_A, "b": b, **query}.items():
        at.query_params[key] = value
    at.run()
    assert_app_ok(at)
    widgets = {
        "device": at.sidebar.selectbox(key="device"),
        "dataset": at.sidebar.selectbox(key="dataset"),
        "n": at.sidebar.slider(key="n"),
        "seed": at.sidebar.number_input(key="seed"),
        "split": at.sidebar.radio(key="split"),
    }
    assert {k: widgets[k].value for k in expected} == expected
    assert at.get("plotly_chart")


def test_the_malicious_upload_is_live(tmp_path):
    """Control for the malicious row above: its payload runs code when unpickled without restriction."""
    unpickle_without_restriction(malicious(tmp_path))
    assert (tmp_path / "code_ran").exists()
