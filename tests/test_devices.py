"""The one device resolver: what each request resolves to, and what an unavailable accelerator does."""

from __future__ import annotations

import pytest
import torch

from tffd_viz.devices import DEVICE_CHOICES, ResolvedDevice, device_available, resolved_device
from tffd_viz.errors import CheckpointError, TffdVizError

HAS_CUDA = torch.cuda.is_available()


def test_cpu_and_auto_resolve_without_a_note():
    assert resolved_device("cpu") == ResolvedDevice(torch.device("cpu"), None)
    assert resolved_device(torch.device("cpu")).device == torch.device("cpu")
    for spec in ("auto", " AUTO ", None):
        device, note = resolved_device(spec)
        assert note is None
        assert device.type == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.parametrize("spec", ["gpu-please", "tpu", "", "cuda:x"])
def test_unknown_devices_always_raise_naming_the_request(spec):
    for unavailable in ("raise", "cpu"):
        with pytest.raises(TffdVizError, match="device") as err:
            resolved_device(spec, unavailable=unavailable)  # type: ignore[arg-type]
        assert repr(spec) in str(err.value) or spec == ""


def test_the_caller_picks_the_error_type():
    with pytest.raises(CheckpointError, match=r"not supported|unknown device"):
        resolved_device("tpu", error=CheckpointError)


@pytest.mark.skipif(HAS_CUDA, reason="tests the behaviour on machines without CUDA")
def test_missing_cuda_raises_or_falls_back_with_a_note():
    with pytest.raises(TffdVizError, match=r"'cuda' was asked for but CUDA is not available"):
        resolved_device("cuda")
    with pytest.raises(TffdVizError, match="cuda:1"):
        resolved_device("cuda:1", unavailable="raise")
    device, note = resolved_device("cuda", unavailable="cpu")
    assert device == torch.device("cpu")
    assert note is not None and "CUDA is not available" in note and "CPU" in note


def test_availability_table():
    assert device_available("cpu")
    assert device_available("cuda") == HAS_CUDA
    assert not device_available("tpu")
    assert set(DEVICE_CHOICES) == {"auto", "cpu", "cuda", "mps"}


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_cuda_requests_get_an_index():
    assert resolved_device("cuda").device == torch.device("cuda", torch.cuda.current_device())
    assert resolved_device("cuda", local_rank=0).device == torch.device("cuda", 0)
    n = torch.cuda.device_count()
    with pytest.raises(TffdVizError, match="does not exist"):
        resolved_device(f"cuda:{n}")
