"""Model criteria: channel scores that need the model itself, ``fn(model, images, labels, tap) -> (C,)``.

* ``bn_gamma``: ``|gamma|`` of the BatchNorm2d tied to the tap (network slimming); which BN that is, is
  decided by the rules of :data:`BN_RULES` (:func:`bn_for_tap`).
* ``taylor``: ``|mean_{n,h,w} a * dCE/da|`` at the tap (Molchanov et al. 2017), :func:`taylor_scores`.

Nothing here changes a model: the criteria run in eval mode (restored afterwards) and the Taylor criterion
takes gradients with ``torch.autograd.grad`` with respect to the tap tensor only, so no parameter's ``.grad``
is written. The captum criteria live in :mod:`tffd_viz.attribution` (an optional dependency).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.features import (
    GRAD_PASS_PIXELS,
    batch_slices,
    eval_mode,
    hooked_forward,
    model_device,
    pass_batch_size,
)
from tffd_viz.models import resolve_taps

__all__ = ["BN_RULES", "RESIDUAL_BLOCK_LAST_BN", "BNMatch", "bn_for_tap", "bn_gamma_scores", "taylor_scores"]


# ------------------------------------------------------------------------------------- BatchNorm gamma
@dataclass(frozen=True)
class BNMatch:
    """The BatchNorm2d whose ``|gamma|`` scores the channels of a tap.

    Attributes
    ----------
    tap : str
    bn : str
        Module name of the BatchNorm2d.
    rule : str
        Key of :data:`BN_RULES` that found it.
    relation : {"is", "feeds", "normalises"}
        ``"is"``: the tap is that BN; ``"feeds"``: the BN produces the tap (up to ReLU or a
        residual sum); ``"normalises"``: no BN produces the tap, this one takes it as input.
    note : str
        Explanation for the app.
    """

    tap: str
    bn: str
    rule: str
    relation: str
    note: str


@dataclass
class _TapTrace:
    channels: int | None
    consumer: str | None


def _trace_tap(model: nn.Module, tap: str, probe: Tensor) -> _TapTrace:
    """One eval-mode forward on ``probe``: the tap's channel count and the first BN fed the tap tensor."""
    modules = dict(model.named_modules())
    seen: dict[str, object] = {}

    def tap_hook(_m: nn.Module, _inp: object, out: object) -> None:
        if isinstance(out, Tensor):
            seen["out"] = out

    def bn_pre_hook(name: str) -> Callable[[nn.Module, tuple], None]:
        def hook(_m: nn.Module, inputs: tuple) -> None:
            out = seen.get("out")
            if "consumer" not in seen and out is not None and inputs and inputs[0] is out:
                seen["consumer"] = name

        return hook

    handles = [modules[tap].register_forward_hook(tap_hook)]
    handles += [
        m.register_forward_pre_hook(bn_pre_hook(n))
        for n, m in modules.items()
        if n and n != tap and isinstance(m, nn.BatchNorm2d)
    ]
    hooked_forward(model, probe, handles)
    out = seen.get("out")
    channels = int(out.shape[1]) if isinstance(out, Tensor) and out.dim() >= 2 else None
    consumer = seen.get("consumer")
    return _TapTrace(channels=channels, consumer=consumer if isinstance(consumer, str) else None)


RESIDUAL_BLOCK_LAST_BN: dict[str, str] = {
    "tffd_viz.models.resnet.BasicBlock": "bn2",
    "torchvision.models.resnet.BasicBlock": "bn2",
    "torchvision.models.resnet.Bottleneck": "bn3",
}
"""Post-activation residual blocks (by qualified class name) -> their last BN, which scales the
residual branch right before ``relu(branch + shortcut)``."""


def _residual_last_bn(module: nn.Module) -> str | None:
    cls = type(module)
    attr = RESIDUAL_BLOCK_LAST_BN.get(f"{cls.__module__}.{cls.__qualname__}")
    return attr if attr is not None and isinstance(getattr(module, attr, None), nn.BatchNorm2d) else None


def _rule_tap_is_batchnorm(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    if not isinstance(modules[tap], nn.BatchNorm2d):
        return None
    return BNMatch(tap, tap, "tap_is_batchnorm", "is", f"{tap} is a BatchNorm2d: its own |gamma|")


def _rule_residual_block(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    module = modules[tap]
    attr = _residual_last_bn(module)
    block = tap
    if attr is None and isinstance(module, nn.Sequential) and len(module) > 0:
        last_name, last = list(module.named_children())[-1]
        attr, block = _residual_last_bn(last), f"{tap}.{last_name}"
    if attr is None:
        return None
    bn = f"{block}.{attr}"
    return BNMatch(
        tap,
        bn,
        "residual_block",
        "feeds",
        f"{tap} ends with residual block {block}: {bn} scales its residual branch, which is "
        "added to the shortcut and passed through ReLU to give the tap",
    )


_PASS_THROUGH = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
)


def _rule_sequential_last_bn(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    module = modules[tap]
    if not isinstance(module, nn.Sequential):
        return None
    for name, child in reversed(list(module.named_children())):
        if isinstance(child, nn.BatchNorm2d):
            bn = f"{tap}.{name}"
            return BNMatch(
                tap,
                bn,
                "sequential_last_bn",
                "feeds",
                f"{bn} is the last BatchNorm2d of {tap}, followed only by activations",
            )
        if not isinstance(child, _PASS_THROUGH):
            return None
    return None


def _rule_next_bn(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    if trace.consumer is None:
        return None
    return BNMatch(
        tap,
        trace.consumer,
        "next_bn",
        "normalises",
        f"no BatchNorm2d produces {tap} (e.g. a WRN pre-activation stage sum); {trace.consumer} "
        "is the BatchNorm2d that takes the tap as its input and normalises it",
    )


BN_RULES: dict[str, Callable[[Mapping[str, nn.Module], str, _TapTrace], BNMatch | None]] = {
    "tap_is_batchnorm": _rule_tap_is_batchnorm,
    "residual_block": _rule_residual_block,
    "sequential_last_bn": _rule_sequential_last_bn,
    "next_bn": _rule_next_bn,
}
"""How the BatchNorm2d of a tap is found, tried in order (first match wins).

* ``tap_is_batchnorm``: the tap is a BatchNorm2d -> itself.
* ``residual_block``: the tap is a post-activation residual block (:data:`RESIDUAL_BLOCK_LAST_BN`)
  or an ``nn.Sequential`` ending with one -> that block's last BN. ResNet stage ``layerK`` ->
  ``layerK.<last>.bn2`` (e.g. resnet8 ``layer2`` -> ``layer2.0.bn2``).
* ``sequential_last_bn``: an ``nn.Sequential`` whose last BatchNorm2d is followed only by
  activations/dropout -> that BN. VGG ``blockK`` -> its last ``BatchNorm2d`` (vgg8 ``block1`` ->
  ``block1.1``).
* ``next_bn``: otherwise, the BatchNorm2d that receives the tap tensor itself as input (found with
  one eval-mode forward pass). WRN stage sums have no BN before the sum: ``blockK`` ->
  ``block{K+1}.layer.0.bn1``, the last stage -> the final ``bn1``.
"""


def _checked_images(images: object) -> Tensor:
    """Return ``images`` when they are a non-empty ``(N, C, H, W)`` tensor; raise :class:`DataError`
    otherwise."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a non-empty (N, C, H, W) tensor, got {got}")
    return images


def _probe(model: nn.Module, images: Tensor | None) -> Tensor:
    """The input of :func:`bn_for_tap`'s probe pass: the first image, else a zero
    ``(1, in_chans, 32, 32)``."""
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if images is not None:
        return _checked_images(images)[:1].to(device=device, dtype=dtype)
    return torch.zeros((1, int(getattr(model, "in_chans", 3)), 32, 32), device=device, dtype=dtype)


def bn_for_tap(model: nn.Module, tap: str, images: Tensor | None = None) -> BNMatch:
    """Return the BatchNorm2d whose ``|gamma|`` scores the channels of ``tap`` (see :data:`BN_RULES`).

    Parameters
    ----------
    model : nn.Module
    tap : str
        Module name.
    images : Tensor (N, C, H, W), optional
        The first image drives the one probe forward pass (default a zero ``(1, in_chans, 32, 32)``).

    Raises
    ------
    TapError
        Unknown tap, no rule matched, or the BN's channel count differs from the tap's.
    """
    (tap,) = resolve_taps(model, [tap])
    modules = dict(model.named_modules())
    trace = _trace_tap(model, tap, _probe(model, images))
    for rule in BN_RULES.values():
        match = rule(modules, tap, trace)
        if match is not None:
            break
    else:
        raise TapError(
            f"no BatchNorm2d found for tap {tap!r} ({type(modules[tap]).__name__}) of "
            f"{type(model).__name__}: it is not a BatchNorm2d, not a residual block or Sequential ending in "
            f"BN(+activation), and no BatchNorm2d takes its output as input (rules tried: {list(BN_RULES)}); "
            "use another criterion"
        )
    bn = modules[match.bn]
    if trace.channels is not None and bn.num_features != trace.channels:
        raise TapError(
            f"BatchNorm2d {match.bn} has {bn.num_features} channels but tap {tap!r} has "
            f"{trace.channels}; bn_gamma cannot score this tap"
        )
    if bn.weight is None:
        raise TapError(f"BatchNorm2d {match.bn} (for tap {tap!r}) has affine=False: no gamma to score")
    return match


def bn_gamma_scores(model: nn.Module, images: Tensor | None, labels: Tensor | None, tap: str) -> Tensor:
    """Return ``|gamma|`` of the BatchNorm2d of ``tap`` (:func:`bn_for_tap`), shape ``(C,)``, on the CPU.

    ``labels`` is unused; ``images`` (optional) only drives the probe pass of :func:`bn_for_tap`.
    """
    match = bn_for_tap(model, tap, images)
    bn = dict(model.named_modules())[match.bn]
    return bn.weight.detach().abs().cpu().clone()


# ---------------------------------------------------------------------------------------------- Taylor
def taylor_scores(
    model: nn.Module, images: Tensor, labels: Tensor, tap: str, batch_size: int = 256
) -> Tensor:
    """First-order Taylor importance (Molchanov et al., ICLR 2017) of the channels of ``tap``.

    ``score[c] = | mean over n, h, w of a[n, c, h, w] * dL/da[n, c, h, w] |`` with ``a`` the tap
    output and ``L = sum_n CE(logits_n, labels_n)`` (summed, so ``dL/da[n]`` is sample ``n``'s own
    gradient and the score does not depend on the batch size). The absolute value is taken after
    the mean over the whole batch, as in the brief (Molchanov et al. average per-example absolute
    values instead).

    The tap output is replaced, through a temporary forward hook, by a detached leaf tensor that
    requires grad, and ``torch.autograd.grad`` differentiates with respect to that leaf only: no
    ``.backward()``, no parameter ``.grad`` is written, and frozen models work too. The model runs
    in eval mode (restored afterwards) in batches of ``batch_size`` (the result does not depend on it).

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(b, K)``.
    images : Tensor (N, C, H, W)
    labels : LongTensor (N,)
    tap : str
    batch_size : int

    Returns
    -------
    Tensor (C,)
        float64 on the CPU.
    """
    if images is None or labels is None:
        raise TffdVizError("the taylor criterion needs images (N, C, H, W) and labels (N,)")
    _checked_images(images)
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise DataError(
            f"labels must have shape ({images.shape[0]},) to match images {tuple(images.shape)}, got {got}"
        )
    (tap,) = resolve_taps(model, [tap])
    module = dict(model.named_modules())[tap]
    device = model_device(model)
    leaves: list[Tensor] = []

    def hook(_m: nn.Module, _inp: object, out: object) -> Tensor:
        if not isinstance(out, Tensor) or not out.is_floating_point() or out.dim() < 2:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise TapError(f"taylor needs tap {tap!r} to output a float tensor (N, C, ...), got {got}")
        leaf = out.detach().requires_grad_(True)
        leaves.append(leaf)
        return leaf

    total: Tensor | None = None
    count = 0
    handle = module.register_forward_hook(hook)
    try:
        with eval_mode(model), torch.enable_grad():
            for sl in batch_slices(images.shape[0], pass_batch_size(images, batch_size, GRAD_PASS_PIXELS)):
                leaves.clear()
                x = images[sl].to(device)
                logits = model(x)
                if not leaves:
                    raise TapError(f"tap {tap!r} did not run on an input of shape {tuple(x.shape)}")
                a = leaves[-1]
                loss = F.cross_entropy(logits, labels[sl].to(device).long(), reduction="sum")
                (grad,) = torch.autograd.grad(loss, a, allow_unused=True)
                if grad is None:
                    grad = torch.zeros_like(a)
                dims = [d for d in range(a.dim()) if d != 1]
                part = (a.detach() * grad).double().sum(dim=dims).cpu()
                total = part if total is None else total + part
                count += a[:, 0].numel()
    finally:
        handle.remove()
    assert total is not None
    return (total / count).abs()
