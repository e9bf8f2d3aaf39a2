"""Feature taps: named intermediate outputs of any ``torch.nn.Module``, by module name.

A tap is a module name (``"layer1"``, ``"layer2.0.conv1"``, ``"avgpool"``); its value is the
module's output on a forward pass, captured by a temporary forward hook. The hooks are always
removed, and the model's train/eval mode and grad state are never touched, so the same helper
serves training (one forward pass gives the logits and the taps) and analysis.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, overload

import torch
from torch import nn

from tffd_viz.errors import TapError

__all__ = ["TapInfo", "default_taps", "extract_taps", "first_tensor", "resolve_taps", "tap_info", "tap_names"]

_MAX_LISTED = 40


def first_tensor(output: object) -> torch.Tensor | None:
    """Return the tensor a module produced: itself, or the first tensor of a tuple/list/dict."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_tensor(item)
            if found is not None:
                return found
    if isinstance(output, dict):
        for item in output.values():
            found = first_tensor(item)
            if found is not None:
                return found
    return None


def _torchvision_stages(model: nn.Module) -> tuple[str, ...]:
    names = dict(model.named_children())
    return tuple(n for n in ("layer1", "layer2", "layer3", "layer4") if n in names)


def _features_children(model: nn.Module) -> tuple[str, ...]:
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential):
        return tuple(f"features.{n}" for n, _ in features.named_children())
    return ()


# How to find default taps on models that do not declare them, tried in order.
_DEFAULT_TAP_RULES: dict[str, Callable[[nn.Module], tuple[str, ...]]] = {
    "declared": lambda m: tuple(getattr(m, "default_taps", ()) or ()),
    "resnet_stages": _torchvision_stages,
    "features_children": _features_children,
}


def tap_names(model: nn.Module) -> list[str]:
    """Return every module name of ``model`` that can be tapped (all named submodules but the root)."""
    return [name for name, _ in model.named_modules() if name]


def default_taps(model: nn.Module) -> tuple[str, ...]:
    """Return the default stage taps of ``model``, shallow to deep.

    Zoo models declare them (``layer1..3`` for ResNets, ``block1..3`` for WRNs, ``block0..4`` for
    VGGs); torchvision-style ResNets give their ``layer1..4``; models with a ``features``
    ``nn.Sequential`` give its children.

    Raises
    ------
    TapError
        If no rule finds stages; pass ``taps=`` explicitly then.
    """
    for rule in _DEFAULT_TAP_RULES.values():
        found = rule(model)
        if found:
            return found
    raise TapError(
        f"{type(model).__name__} declares no default taps; pass taps=[...] with module names, e.g. "
        f"{tap_names(model)[:8]}"
    )


def resolve_taps(model: nn.Module, taps: Sequence[str] | str | None = None) -> list[str]:
    """Return the validated list of tap names (``None`` -> the model's default taps).

    Raises
    ------
    TapError
        Naming each unknown tap and listing the valid module names.
    """
    if taps is None:
        return list(default_taps(model))
    if isinstance(taps, str):
        taps = [taps]
    names = list(taps)
    if not names:
        raise TapError("the list of taps is empty: name at least one module")
    modules = dict(model.named_modules())
    unknown = [t for t in names if t not in modules or t == ""]
    if unknown:
        valid = tap_names(model)
        shown = ", ".join(valid[:_MAX_LISTED]) + (
            f", ... ({len(valid)} in all)" if len(valid) > _MAX_LISTED else ""
        )
        raise TapError(f"unknown tap(s) {unknown} for {type(model).__name__}; valid module names: {shown}")
    if len(set(names)) != len(names):
        raise TapError(f"duplicate tap names in {names}")
    return names


@overload
def extract_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: Sequence[str] | str | None = None,
    return_logits: Literal[False] = False,
    clone: bool = False,
) -> OrderedDict[str, torch.Tensor]: ...


@overload
def extract_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: Sequence[str] | str | None = None,
    *,
    return_logits: Literal[True],
    clone: bool = False,
) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]: ...


@overload
def extract_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: Sequence[str] | str | None = None,
    return_logits: bool = False,
    clone: bool = False,
) -> OrderedDict[str, torch.Tensor] | tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]: ...


def extract_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: Sequence[str] | str | None = None,
    return_logits: bool = False,
    clone: bool = False,
) -> OrderedDict[str, torch.Tensor] | tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
    """Run one forward pass and return the outputs of the tapped modules.

    Parameters
    ----------
    model : nn.Module
        Any module; its mode (train/eval) and grad state are left as they are.
    x : Tensor (N, C, H, W)
        Input batch.
    taps : list of str, str or None
        Module names; ``None`` means :func:`default_taps`.
    return_logits : bool
        Also return the model output of the same pass (training uses this: no second forward).
    clone : bool
        Copy each tap when its module runs. Needed only when a later in-place op (e.g. torchvision's
        ``ReLU(inplace=True)`` after a BatchNorm) would overwrite the tapped tensor; without it, such
        an overwrite is detected and the taps are re-captured with copies (zoo models never need it).

    Returns
    -------
    taps : OrderedDict[str, Tensor]
        ``name -> output`` in the order asked for (for the zoo's stages ``(N, C_k, H_k, W_k)``).
        The tensors are the module outputs themselves (no copy), attached to the graph when grad
        is enabled. If a module runs several times in one pass, its last output is kept.
    (logits, taps) : tuple
        When ``return_logits`` is true.

    Raises
    ------
    TapError
        For an unknown tap name, a tapped module that never ran or returned no tensor, or (with
        ``return_logits``) a model whose output holds no tensor.
    """
    names = resolve_taps(model, taps)
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    versions: dict[str, int] = {}

    def make_hook(name: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                captured[name] = tensor.clone() if clone else tensor
                versions[name] = captured[name]._version

        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in names if n not in captured]
    if missing:
        raise TapError(
            f"tap(s) {missing} of {type(model).__name__} did not run or returned no tensor "
            f"on an input of shape {tuple(x.shape)}"
        )
    if not clone and any(captured[n]._version != versions[n] for n in names):
        # A later in-place op overwrote a tap (its version counter moved): capture copies instead.
        return extract_taps(model, x, names, return_logits=return_logits, clone=True)
    out = OrderedDict((n, captured[n]) for n in names)
    if return_logits:
        first = first_tensor(logits)
        if first is None:
            raise TapError(
                f"{type(model).__name__} returned no tensor (got {type(logits).__name__}) "
                f"on an input of shape {tuple(x.shape)}"
            )
        return first, out
    return out


@dataclass(frozen=True)
class TapInfo:
    """Metadata of one tap on a given input size.

    Attributes
    ----------
    name : str
    shape : tuple of int
        Per-sample output shape, e.g. ``(16, 32, 32)``.
    channels : int
        ``shape[0]``.
    reduction : int
        Spatial reduction factor relative to the input (input H / tap H), 0 for non-spatial taps.
    """

    name: str
    shape: tuple[int, ...]
    channels: int
    reduction: int


def tap_info(
    model: nn.Module, taps: Sequence[str] | str | None = None, input_shape: tuple[int, int, int] | None = None
) -> OrderedDict[str, TapInfo]:
    """Return ``name -> TapInfo`` from one forward pass on a zero batch of one image.

    The pass runs under ``no_grad`` with every module temporarily in eval mode (so BatchNorm
    statistics are not updated); the previous modes are restored afterwards.

    Parameters
    ----------
    input_shape : (C, H, W), optional
        Default ``(model.in_chans or 3, S, S)`` with ``S = model.input_size`` (32 when absent, 224 for
        the ImageNet architectures).
    """
    if input_shape is None:
        side = int(getattr(model, "input_size", 32))
        input_shape = (int(getattr(model, "in_chans", 3)), side, side)
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            feats = extract_taps(model, torch.zeros((1, *input_shape), device=device, dtype=dtype), taps)
    finally:
        for m, mode in modes.items():
            m.training = mode
    infos: OrderedDict[str, TapInfo] = OrderedDict()
    for name, f in feats.items():
        shape = tuple(int(s) for s in f.shape[1:])
        red = input_shape[1] // shape[1] if len(shape) == 3 and shape[1] > 0 else 0
        infos[name] = TapInfo(name=name, shape=shape, channels=shape[0] if shape else 1, reduction=red)
    return infos
