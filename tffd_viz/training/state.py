"""The files of a training run: output paths, the resumable state, and the hash of a model's weights.

After every epoch rank 0 writes ``<out>.resume.pt`` (``torch.save`` of plain tensors and values, read back
with ``weights_only=True``). A run resumes from it only when every option that changes the trained weights is
the same as the saved run's (:func:`checked_resume_state`); the saved config's keys are :class:`TrainConfig`'s
fields, so those stay as they are.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tffd_viz.errors import CheckpointError
from tffd_viz.training.config import TrainConfig, config_dict
from tffd_viz.training.step import inner

__all__ = ["checked_resume_state", "checkpoint_stem", "resume_path", "save_resume_state", "state_sha256"]

#: Options a resumed run may change without changing the trained weights.
_RESUME_FREE = frozenset(
    {
        "device",
        "out",
        "resume",
        "quiet",
        "threads",
        "probe_size",
        "stop_after",
        "time_limit",
        "data_root",
        "eval_batch_size",
    }
)

#: Options added after runs were already in progress: the value a saved state that lacks the key was trained
#: with. A state without the key resumes only where the option now has that value; any other key a state lacks
#: is a difference.
_RESUME_ABSENT_MEANS: dict[str, Any] = {
    "padding_mode": "zeros",
    "lambda_kd": 1.0,
    "kd_temperature": 4.0,
    "teacher": None,
    "augment": "pad_crop_flip",
}


def checkpoint_stem(out: str | os.PathLike[str]) -> Path:
    """Return ``out`` without a ``.safetensors`` / ``.json`` suffix (``runs/x.safetensors`` -> ``runs/x``)."""
    path = Path(out)
    return path.with_suffix("") if path.suffix in (".safetensors", ".json") else path


def resume_path(out: str | os.PathLike[str]) -> Path:
    """Return the resumable-state path of output ``out``: ``<stem>.resume.pt``."""
    stem = checkpoint_stem(out)
    return stem.with_name(stem.name + ".resume.pt")


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of ``model.state_dict()`` (sorted by name)."""
    digest = hashlib.sha256()
    for name, t in sorted(inner(model).state_dict().items()):
        t = t.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checked_resume_state(path: Path, cfg: TrainConfig) -> dict[str, Any]:
    """Read the resume state at ``path`` (read-only) and return it if ``cfg`` may continue it.

    Parameters
    ----------
    path : Path
        A ``<out>.resume.pt`` written by :func:`tffd_viz.train.train`.
    cfg : TrainConfig
        The config of the run that wants to continue.

    Returns
    -------
    dict
        ``config``, ``epoch``, ``model``, ``optimizer``, ``scheduler``, ``generator``, ``torch_rng``,
        ``cuda_rng``, ``history``, ``best_acc``, ``train_seconds``.

    Raises
    ------
    CheckpointError
        An unreadable file, one that is no resume state, or a state whose options differ from ``cfg`` in
        anything but the options of ``_RESUME_FREE`` (naming each: saved value, value now). A key the saved
        config lacks counts as its ``_RESUME_ABSENT_MEANS`` value (options added later), else as a difference.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the resume state {str(path)!r}: {exc}") from None
    if not isinstance(state, dict) or "config" not in state or "epoch" not in state:
        raise CheckpointError(f"{str(path)!r} is not a tffd-viz resume state (no 'config'/'epoch' keys)")
    now, then = config_dict(cfg), dict(state["config"])
    for key, value in _RESUME_ABSENT_MEANS.items():
        then.setdefault(key, value)
        if isinstance(then.get("hparams"), dict) and key in (
            now.get("hparams") or {}
        ):  # recipe keys added later
            then["hparams"] = {**then["hparams"], key: then["hparams"].get(key, value)}
    differ = {
        k: (then.get(k, "<absent>"), now[k])
        for k in now
        if k not in _RESUME_FREE and then.get(k, "<absent>") != now[k]
    }
    if differ:
        raise CheckpointError(
            f"cannot resume from {str(path)!r}: these options differ from the saved run "
            f"(saved, now): {differ}"
        )
    return state


def save_resume_state(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (a ``.tmp`` file renamed over it), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
