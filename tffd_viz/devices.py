"""The one rule for turning a device request (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``) into
a device.

Training, the checkpoint loader, the app and the benchmarks all call :func:`resolved_device`; they differ only
in what an unavailable accelerator means for them, which they say with ``unavailable``:

- ``"raise"`` (training, benchmarks): a run that asked for CUDA must not silently run for hours on the CPU;
- ``"cpu"`` (loading a checkpoint, the app): fall back to the CPU and return a note saying so, which the
  caller shows (a ``UserWarning`` in the library, a sidebar warning in the app).

An unknown device name, or a CUDA index past the last card, is always an error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from tffd_viz.errors import TffdVizError

__all__ = ["DEVICE_CHOICES", "ResolvedDevice", "device_available", "resolved_device"]

#: What a user may ask for (``cuda:N`` / ``mps:N`` too).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")

_AVAILABLE: dict[str, Callable[[], bool]] = {
    "cpu": lambda: True,
    "cuda": torch.cuda.is_available,
    "mps": lambda: hasattr(torch.backends, "mps") and torch.backends.mps.is_available(),
}


class ResolvedDevice(NamedTuple):
    """A resolved request: the device, and a note when it is not what was asked for (else ``None``)."""

    device: torch.device
    note: str | None


def device_available(kind: str) -> bool:
    """Return whether a device type (``"cpu"``, ``"cuda"``, ``"mps"``) can be used on this machine."""
    check = _AVAILABLE.get(kind)
    return bool(check is not None and check())


def resolved_device(
    spec: str | torch.device | None,
    *,
    unavailable: Literal["raise", "cpu"] = "raise",
    local_rank: int | None = None,
    error: type[Exception] = TffdVizError,
) -> ResolvedDevice:
    """Return the device for a request, and a note when it fell back to the CPU.

    Parameters
    ----------
    spec : str, torch.device or None
        ``None`` or ``"auto"``: CUDA where available, else the CPU (``None`` means the CPU for callers that
        pass ``"cpu"`` as their default; they pass it explicitly). ``"cuda"`` without an index gets
        ``cuda:<local_rank>`` when ``local_rank`` is given (one process per card), else the current card.
    unavailable : {"raise", "cpu"}
        What a request for an accelerator this machine lacks does: raise ``error``, or resolve to the CPU
        with a note.
    local_rank : int, optional
        The process's local rank under ``torchrun``.
    error : exception type
        The error raised (a :class:`~tffd_viz.errors.TffdVizError` subclass at library call sites).

    Returns
    -------
    ResolvedDevice
        ``(device, note)``; ``note`` is ``None`` unless the request fell back to the CPU.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() == "auto"):
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(spec.strip() if isinstance(spec, str) else spec)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise error(
            f"unknown device {str(spec)!r}: {exc}; use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)"
        ) from None
    if dev.type not in _AVAILABLE:
        raise error(
            f"device {str(spec)!r} is not supported; use one of {', '.join(DEVICE_CHOICES)} (or cuda:N)"
        )
    if not device_available(dev.type):
        if unavailable == "raise":
            raise error(
                f"device {str(spec)!r} was asked for but {dev.type.upper()} is not available here "
                f"(torch.{dev.type}.is_available() is False)"
            )
        return ResolvedDevice(
            torch.device("cpu"),
            f"device {str(spec)!r} was requested but {dev.type.upper()} "
            "is not available; running on the CPU instead",
        )
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if dev.index >= torch.cuda.device_count():
            raise error(f"device {str(spec)!r} does not exist: {torch.cuda.device_count()} CUDA device(s)")
    return ResolvedDevice(dev, None)
