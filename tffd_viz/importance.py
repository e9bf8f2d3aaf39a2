"""Channel importance and ranking: which channels Tf-FD calls salient, and how robust that call is.

Intra-layer Tf-FD sorts the channels of a stage by :func:`tffd_viz.losses.channel_saliency` and
pulls the bottom half towards the top half. This module scores channels with that criterion and
with classical alternatives, ranks them exactly as Tf-FD does, splits them into Tf-FD's salient
and redundant halves, compares criteria and measures how stable a ranking is across batches and
bootstrap resamples.

Criteria live in the registry :data:`CRITERIA` (name -> :class:`Criterion`):

=============  ========  ==========================================================================
name           needs     score of channel ``c`` (shape ``(C,)``, higher = more important)
=============  ========  ==========================================================================
``tffd``       features  Tf-FD saliency, :func:`tffd_viz.losses.channel_saliency` (imported)
``l1``         features  mean over samples of the map's L1 norm ``sum_hw |f[n,c]|``
``l2``         features  mean over samples of the map's L2 norm ``||f[n,c]||_2``
``mean``       features  mean activation over samples and positions
``bn_gamma``   model     ``|gamma|`` of the BatchNorm2d tied to the tap (see :data:`BN_RULES`)
``taylor``     model     ``|mean_{n,h,w} a * dCE/da|`` at the tap (Molchanov et al. 2017)
=============  ========  ==========================================================================

A feature criterion is ``fn(f: Tensor (N, C, H, W)) -> Tensor (C,)``; a model criterion is
``fn(model, images (N, C, H, W) or None, labels (N,) or None, tap: str) -> Tensor (C,)``.
Captum criteria (``layer_conductance``, ``layer_grad_x_activation``) are added by
``tffd_viz.attribution`` through :func:`register_criterion`; :func:`available_criteria` imports
that module (the one lazy import here, so this core module imports without captum).

Nothing here changes a model: model criteria run in eval mode (restored afterwards) and the
Taylor criterion takes gradients with ``torch.autograd.grad`` with respect to the tap tensor only,
so no parameter's ``.grad`` is written.
"""

from __future__ import annotations

import importlib
import itertools
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import stats
from torch import Tensor, nn

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.features import (
    GRAD_PASS_PIXELS,
    batch_slices,
    eval_mode,
    extract_features,
    hooked_forward,
    model_device,
    pass_batch_size,
)
from tffd_viz.losses import channel_saliency
from tffd_viz.models import resolve_taps

__all__ = [
    "BN_RULES",
    "CRITERIA",
    "BNMatch",
    "ConstantScoresWarning",
    "Criterion",
    "SalientSplit",
    "TapRanking",
    "available_criteria",
    "bn_for_tap",
    "bn_gamma_scores",
    "bootstrap_rank_band",
    "channel_ranking",
    "channel_scores",
    "get_criterion",
    "rank_agreement",
    "rank_positions",
    "ranking_stability_across_batches",
    "rankings_table",
    "register_criterion",
    "salient_split",
    "split_stability",
    "tap_rank_stability",
    "tap_rankings",
    "taylor_scores",
]

NEEDS = ("features", "model")
"""What a criterion takes: a feature tensor, or the model with images, labels and a tap name."""


class ConstantScoresWarning(UserWarning):
    """A rank correlation was undefined (constant scores) and was set to 0."""


@dataclass(frozen=True)
class Criterion:
    """A channel-importance criterion.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"tffd"``.
    label : str
        Human-readable name for plots.
    needs : {"features", "model"}
        ``"features"``: ``fn(f (N, C, H, W)) -> (C,)``;
        ``"model"``: ``fn(model, images, labels, tap) -> (C,)``.
    fn : callable
        Computes the scores (higher = more important).
    description : str
        One or two sentences for the app.
    per_sample : callable, optional
        Feature criteria whose score is a mean over samples may give ``f -> (N, C)`` per-sample
        scores with ``fn(f) == per_sample(f).mean(0)``; bootstraps then reweight samples instead
        of recomputing ``fn`` per resample.
    """

    name: str
    label: str
    needs: str
    fn: Callable[..., Tensor]
    description: str = ""
    per_sample: Callable[[Tensor], Tensor] | None = None


# --------------------------------------------------------------------------------------------------
# feature criteria
# --------------------------------------------------------------------------------------------------


def _check_feature(f: object, where: str = "features") -> Tensor:
    """Return ``f`` checked: a finite, non-empty ``(N, C, H, W)`` tensor (``where`` names it in errors).

    Float features so large that a sum of squares could overflow their dtype (float32 activations
    near 1e30) are returned as float64, so every criterion stays finite and scale-invariant ones
    (``tffd``) stay correct instead of silently collapsing to 0.
    """
    if not isinstance(f, Tensor):
        raise TapError(f"{where} must be a torch.Tensor of shape (N, C, H, W), got {type(f).__name__}")
    if f.dim() != 4:
        raise TapError(f"{where} must be a 4-D tensor (N, C, H, W), got shape {tuple(f.shape)}")
    if f.shape[0] == 0 or f.shape[1] == 0:
        raise TapError(f"{where} have no samples or no channels: shape {tuple(f.shape)}")
    if f.is_floating_point():
        finite = torch.isfinite(f)
        if not bool(finite.all()):
            channels = (~finite).any(dim=(0, 2, 3)).nonzero().flatten().tolist()
            raise TapError(f"{where} of shape {tuple(f.shape)} contain {int((~finite).sum())} NaN/Inf values, in "
                           f"channels {channels[:10]}{' ...' if len(channels) > 10 else ''} (non-finite weights "
                           "or inputs?)")
        if f.dtype != torch.float64 and float(f.abs().amax()) > (torch.finfo(f.dtype).max / f.numel()) ** 0.5:
            return f.double()
    return f


def _tffd_scores(f: Tensor) -> Tensor:
    return channel_saliency(_check_feature(f))


def _tffd_per_sample(f: Tensor) -> Tensor:
    # each (sample, channel) map as its own "channel" of a one-sample batch: channel_saliency then
    # gives the per-map mean of the L2-normalised map, exactly the per-sample term it averages
    f = _check_feature(f)
    n, c, h, w = f.shape
    return channel_saliency(f.reshape(1, n * c, h, w)).reshape(n, c)


def _l1_per_sample(f: Tensor) -> Tensor:
    return _check_feature(f).abs().sum(dim=(2, 3))


def _l2_per_sample(f: Tensor) -> Tensor:
    return torch.linalg.vector_norm(_check_feature(f), ord=2, dim=(2, 3))


def _mean_per_sample(f: Tensor) -> Tensor:
    return _check_feature(f).mean(dim=(2, 3))


def _l1_scores(f: Tensor) -> Tensor:
    return _l1_per_sample(f).mean(dim=0)


def _l2_scores(f: Tensor) -> Tensor:
    return _l2_per_sample(f).mean(dim=0)


def _mean_scores(f: Tensor) -> Tensor:
    return _check_feature(f).mean(dim=(0, 2, 3))


# --------------------------------------------------------------------------------------------------
# BatchNorm gamma: which BN belongs to a tap
# --------------------------------------------------------------------------------------------------


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
    handles += [m.register_forward_pre_hook(bn_pre_hook(n)) for n, m in modules.items()
                if n and n != tap and isinstance(m, nn.BatchNorm2d)]
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
    return BNMatch(tap, bn, "residual_block", "feeds",
                   f"{tap} ends with residual block {block}: {bn} scales its residual branch, which is "
                   "added to the shortcut and passed through ReLU to give the tap")


_PASS_THROUGH = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Identity,
                 nn.Dropout, nn.Dropout2d)


def _rule_sequential_last_bn(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    module = modules[tap]
    if not isinstance(module, nn.Sequential):
        return None
    for name, child in reversed(list(module.named_children())):
        if isinstance(child, nn.BatchNorm2d):
            bn = f"{tap}.{name}"
            return BNMatch(tap, bn, "sequential_last_bn", "feeds",
                           f"{bn} is the last BatchNorm2d of {tap}, followed only by activations")
        if not isinstance(child, _PASS_THROUGH):
            return None
    return None


def _rule_next_bn(modules: Mapping[str, nn.Module], tap: str, trace: _TapTrace) -> BNMatch | None:
    if trace.consumer is None:
        return None
    return BNMatch(tap, trace.consumer, "next_bn", "normalises",
                   f"no BatchNorm2d produces {tap} (e.g. a WRN pre-activation stage sum); {trace.consumer} "
                   "is the BatchNorm2d that takes the tap as its input and normalises it")


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


def _probe(model: nn.Module, images: Tensor | None) -> Tensor:
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    if images is not None:
        if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise DataError(f"images must be a non-empty (N, C, H, W) tensor, got {got}")
        return images[:1].to(device=device, dtype=dtype)
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
            f"no BatchNorm2d found for tap {tap!r} ({type(modules[tap]).__name__}) of {type(model).__name__}: "
            f"it is not a BatchNorm2d, not a residual block or Sequential ending in BN(+activation), and no "
            f"BatchNorm2d takes its output as input (rules tried: {list(BN_RULES)}); use another criterion"
        )
    bn = modules[match.bn]
    if trace.channels is not None and bn.num_features != trace.channels:
        raise TapError(f"BatchNorm2d {match.bn} has {bn.num_features} channels but tap {tap!r} has "
                       f"{trace.channels}; bn_gamma cannot score this tap")
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


# --------------------------------------------------------------------------------------------------
# Taylor criterion
# --------------------------------------------------------------------------------------------------


def taylor_scores(model: nn.Module, images: Tensor, labels: Tensor, tap: str, batch_size: int = 256) -> Tensor:
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
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] == 0:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a non-empty (N, C, H, W) tensor, got {got}")
    if not isinstance(labels, Tensor) or labels.shape != (images.shape[0],):
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise DataError(f"labels must have shape ({images.shape[0]},) to match images {tuple(images.shape)}, "
                        f"got {got}")
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


def _taylor_fn(model: nn.Module, images: Tensor, labels: Tensor, tap: str) -> Tensor:
    return taylor_scores(model, images, labels, tap)


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------

CRITERIA: dict[str, Criterion] = {}
"""Registered criteria by name; captum ones appear after :func:`available_criteria`."""


def register_criterion(criterion: Criterion, *, replace: bool = False) -> Criterion:
    """Add ``criterion`` to :data:`CRITERIA` (tffd_viz.attribution registers the captum ones).

    Raises
    ------
    TffdVizError
        Not a :class:`Criterion`, ``needs`` not in ``("features", "model")``, or the name is
        taken by another criterion and ``replace`` is false.
    """
    if not isinstance(criterion, Criterion):
        raise TffdVizError(f"register_criterion needs a Criterion, got {type(criterion).__name__}")
    if criterion.needs not in NEEDS:
        raise TffdVizError(f"criterion {criterion.name!r}: needs must be one of {NEEDS}, got {criterion.needs!r}")
    if not callable(criterion.fn):
        raise TffdVizError(f"criterion {criterion.name!r}: fn is not callable")
    existing = CRITERIA.get(criterion.name)
    if existing is not None and existing != criterion and not replace:
        raise TffdVizError(f"a different criterion named {criterion.name!r} is already registered; "
                           "pass replace=True to override it")
    CRITERIA[criterion.name] = criterion
    return criterion


for _crit in (
    Criterion("tffd", "Tf-FD saliency", "features", _tffd_scores,
              "Mean of each channel's spatially L2-normalised map over samples and positions; the "
              "criterion intra-layer Tf-FD sorts channels by.", per_sample=_tffd_per_sample),
    Criterion("l1", "L1 norm", "features", _l1_scores,
              "Mean over samples of the L1 norm of each channel's map.", per_sample=_l1_per_sample),
    Criterion("l2", "L2 norm", "features", _l2_scores,
              "Mean over samples of the L2 norm of each channel's map.", per_sample=_l2_per_sample),
    Criterion("mean", "Mean activation", "features", _mean_scores,
              "Mean activation of each channel over samples and positions.", per_sample=_mean_per_sample),
    Criterion("bn_gamma", "BatchNorm |gamma|", "model", bn_gamma_scores,
              "Absolute scale of the BatchNorm2d that produces (or, for WRN stage sums, normalises) the tap "
              "(network slimming)."),
    Criterion("taylor", "Taylor (activation x gradient)", "model", _taylor_fn,
              "|mean of activation x gradient of the cross-entropy| per channel (Molchanov et al. 2017)."),
):
    register_criterion(_crit)

_OPTIONAL_CRITERIA_MODULE = "tffd_viz.attribution"


def available_criteria() -> dict[str, Criterion]:
    """Return every criterion that can run here, importing the captum ones when captum is installed.

    ``tffd_viz.attribution`` registers its criteria when imported; it is imported here, lazily and
    inside ``try``, so that this core module imports without captum. An ``ImportError`` about
    captum or that module being absent is ignored; any other import error is raised.
    """
    try:
        importlib.import_module(_OPTIONAL_CRITERIA_MODULE)
    except ImportError as exc:
        missing = exc.name or ""
        if not (missing == _OPTIONAL_CRITERIA_MODULE or missing == "captum" or missing.startswith("captum.")):
            raise
    return dict(CRITERIA)


def get_criterion(criterion: str | Criterion) -> Criterion:
    """Return the :class:`Criterion` for a name (or the criterion itself).

    Raises
    ------
    TffdVizError
        Unknown name, listing the available ones.
    """
    if isinstance(criterion, Criterion):
        return criterion
    if isinstance(criterion, str):
        if criterion in CRITERIA:
            return CRITERIA[criterion]
        found = available_criteria()
        if criterion in found:
            return found[criterion]
        raise TffdVizError(f"unknown criterion {criterion!r}; choose one of {sorted(found)}")
    raise TffdVizError(f"criterion must be a name or a Criterion, got {type(criterion).__name__}")


def _feature_criterion(criterion: str | Criterion) -> Criterion:
    crit = get_criterion(criterion)
    if crit.needs != "features":
        raise TffdVizError(f"criterion {crit.name!r} needs the model; this function takes feature criteria "
                           f"only: {[n for n, c in CRITERIA.items() if c.needs == 'features']}")
    return crit


# --------------------------------------------------------------------------------------------------
# scores and rankings
# --------------------------------------------------------------------------------------------------


def _as_scores(scores: object, what: str = "scores") -> Tensor:
    t = scores if isinstance(scores, Tensor) else torch.as_tensor(np.asarray(scores))
    if t.dim() != 1:
        raise TffdVizError(f"{what} must be 1-D (C,), got shape {tuple(t.shape)}")
    t = t.detach()
    if t.is_floating_point():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            raise TffdVizError(f"{what} are not finite at channels {bad.nonzero().flatten().tolist()[:10]}")
    return t


def channel_scores(
    criterion: str | Criterion,
    *,
    features: Tensor | None = None,
    model: nn.Module | None = None,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    tap: str | None = None,
) -> Tensor:
    """Return the importance score of every channel of a tap under ``criterion``.

    Parameters
    ----------
    criterion : str or Criterion
        A key of :func:`available_criteria`.
    features : Tensor (N, C, H, W), optional
        The tap's features (feature criteria). When absent, they are extracted from ``model``,
        ``images`` and ``tap`` (eval mode).
    model, images, labels, tap
        Model criteria: ``fn(model, images, labels, tap)``.

    Returns
    -------
    Tensor (C,)
        Detached, on the CPU; higher = more important. Float32 features so large that the criterion
        could overflow (activations near 1e30) are scored in float64 (float64 scores).

    Raises
    ------
    TapError
        Features not ``(N, C, H, W)`` or holding NaN/Inf (naming ``tap`` when given).
    TffdVizError
        Missing inputs for the criterion, unknown criterion, non-finite scores (naming ``tap``).
    """
    crit = get_criterion(criterion)
    if crit.needs == "features":
        if features is None:
            if model is None or images is None or tap is None:
                raise TffdVizError(f"criterion {crit.name!r} needs features=(N, C, H, W), or model, images and "
                                   "tap to extract them")
            features = extract_features(model, images, [tap])[tap]
        features = _check_feature(features, "features" if tap is None else f"features of tap {tap!r}")
        with torch.no_grad():
            scores = crit.fn(features)
    else:
        if model is None or tap is None:
            raise TffdVizError(f"criterion {crit.name!r} needs model and tap (and images/labels)")
        scores = crit.fn(model, images, labels, tap)
    return _as_scores(scores, f"{crit.name} scores" + ("" if tap is None else f" of tap {tap!r}")).cpu()


def channel_ranking(scores: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    """Return channel indices by descending score, ties broken by lower index (stable).

    For ``channel_scores("tffd", features=f)`` this equals :func:`tffd_viz.losses.salient_order`.

    Parameters
    ----------
    scores : Tensor (C,)

    Returns
    -------
    LongTensor (C,)
        ``order[0]`` is the most important channel.
    """
    t = _as_scores(scores)
    return torch.sort(t, dim=0, descending=True, stable=True).indices


def rank_positions(scores: Tensor | np.ndarray | Sequence[float]) -> Tensor:
    """Return the rank of every channel (0 = most important), the inverse of :func:`channel_ranking`.

    Returns
    -------
    LongTensor (C,)
        ``ranks[channel_ranking(scores)[i]] == i``.
    """
    order = channel_ranking(scores)
    ranks = torch.empty_like(order)
    ranks[order] = torch.arange(order.numel(), device=order.device)
    return ranks


class SalientSplit(NamedTuple):
    """Tf-FD's halves of a stage: ``salient[i]`` is paired with (mimicked by) ``redundant[i]``."""

    salient: Tensor
    redundant: Tensor
    middle: Tensor


def salient_split(scores: Tensor | np.ndarray | Sequence[float]) -> SalientSplit:
    """Split channels into Tf-FD's salient and redundant halves, paired as intra-Tf-FD pairs them.

    With ``order = channel_ranking(scores)`` and ``k = C // 2``: ``salient = order[:k]``,
    ``redundant = order[C - k:]`` and ``middle = order[k:C - k]`` (the middle channel of an odd
    ``C``, else empty). Intra-layer Tf-FD pulls ``redundant[i]`` towards ``salient[i]``.

    Returns
    -------
    SalientSplit
        ``(salient (k,), redundant (k,), middle (C - 2k,))`` LongTensors.
    """
    order = channel_ranking(scores)
    c = order.numel()
    k = c // 2
    return SalientSplit(order[:k], order[c - k:], order[k:c - k])


# --------------------------------------------------------------------------------------------------
# per-tap tables
# --------------------------------------------------------------------------------------------------


@dataclass
class TapRanking:
    """Scores and Tf-FD split of one tap under one criterion (numpy arrays, for plotting).

    Attributes
    ----------
    tap, criterion : str
    scores : ndarray float64 (C,)
    order : ndarray int64 (C,)
        Channels by descending score.
    ranks : ndarray int64 (C,)
        Rank of each channel (0 = most important).
    salient, redundant, middle : ndarray int64
        As :func:`salient_split`.
    """

    tap: str
    criterion: str
    scores: np.ndarray
    order: np.ndarray
    ranks: np.ndarray
    salient: np.ndarray
    redundant: np.ndarray
    middle: np.ndarray

    @classmethod
    def from_scores(cls, tap: str, criterion: str, scores: Tensor) -> TapRanking:
        split = salient_split(scores)
        return cls(tap=tap, criterion=criterion, scores=_as_scores(scores).double().cpu().numpy(),
                   order=channel_ranking(scores).cpu().numpy(), ranks=rank_positions(scores).cpu().numpy(),
                   salient=split.salient.cpu().numpy(), redundant=split.redundant.cpu().numpy(),
                   middle=split.middle.cpu().numpy())

    @property
    def channels(self) -> int:
        return int(self.scores.shape[0])

    def rows(self, model: str = "model") -> list[dict]:
        """One dict per channel: model, tap, criterion, channel, score, rank, half, partner.

        ``half`` is ``"salient"``, ``"redundant"`` or ``"middle"``; ``partner`` is the channel it is
        paired with in intra-layer Tf-FD (-1 for the middle channel).
        """
        half = np.full(self.channels, "middle", dtype=object)
        partner = np.full(self.channels, -1, dtype=np.int64)
        half[self.salient] = "salient"
        half[self.redundant] = "redundant"
        partner[self.salient] = self.redundant
        partner[self.redundant] = self.salient
        return [
            {"model": model, "tap": self.tap, "criterion": self.criterion, "channel": c,
             "score": float(self.scores[c]), "rank": int(self.ranks[c]), "half": str(half[c]),
             "partner": int(partner[c])}
            for c in range(self.channels)
        ]


def tap_rankings(
    source: nn.Module | Mapping[str, Tensor],
    criterion: str | Criterion = "tffd",
    *,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
) -> OrderedDict[str, TapRanking]:
    """Return ``tap -> TapRanking`` for a model or for already extracted features.

    Parameters
    ----------
    source : nn.Module or Mapping[str, Tensor (N, C, H, W)]
        A model (feature criteria extract its taps from ``images``) or ``tap -> features``
        (feature criteria only).
    criterion : str or Criterion
    images, labels : Tensor, optional
        Needed for models (labels only by criteria that need them, e.g. ``taylor``).
    taps : list of str, optional
        Default: the model's default taps, or every key of the features mapping.
    batch_size : int
        Extraction batch size.
    """
    crit = get_criterion(criterion)
    out: OrderedDict[str, TapRanking] = OrderedDict()
    if isinstance(source, nn.Module):
        names = resolve_taps(source, taps)
        if crit.needs == "features":
            if images is None:
                raise TffdVizError(f"criterion {crit.name!r} on a model needs images (N, C, H, W)")
            feats = extract_features(source, images, names, batch_size=batch_size)
            for name in names:
                out[name] = TapRanking.from_scores(name, crit.name, channel_scores(crit, features=feats[name],
                                                                                   tap=name))
        else:
            for name in names:
                scores = channel_scores(crit, model=source, images=images, labels=labels, tap=name)
                out[name] = TapRanking.from_scores(name, crit.name, scores)
        return out
    if not isinstance(source, Mapping):
        raise TffdVizError(f"source must be a model or a tap -> features mapping, got {type(source).__name__}")
    if crit.needs != "features":
        raise TffdVizError(f"criterion {crit.name!r} needs the model, not extracted features")
    names = list(source) if taps is None else ([taps] if isinstance(taps, str) else list(taps))
    unknown = [n for n in names if n not in source]
    if unknown:
        raise TapError(f"taps {unknown} not among the features' keys {list(source)}")
    for name in names:
        out[name] = TapRanking.from_scores(name, crit.name, channel_scores(crit, features=source[name], tap=name))
    return out


def rankings_table(
    sources: nn.Module | Mapping[str, Tensor] | Mapping[str, nn.Module | Mapping[str, Tensor]],
    criterion: str | Criterion = "tffd",
    *,
    images: Tensor | None = None,
    labels: Tensor | None = None,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
) -> list[dict]:
    """Return a long table (one row per model, tap and channel) of scores, ranks and Tf-FD halves.

    Parameters
    ----------
    sources : model, tap -> features mapping, or name -> (model or tap -> features)
        One source (named ``"model"`` in the rows) or several by name. A mapping whose values are
        all tensors is one feature source; a mapping of models/mappings is several sources.
    criterion, images, labels, taps, batch_size
        As in :func:`tap_rankings` (the same images for every model).

    Returns
    -------
    list of dict
        Keys ``model, tap, criterion, channel, score, rank, half, partner`` (see
        :meth:`TapRanking.rows`), models in the given order, then taps, then channels.
    """
    if isinstance(sources, nn.Module) or (
        isinstance(sources, Mapping) and sources and all(isinstance(v, Tensor) for v in sources.values())
    ):
        named = {"model": sources}
    elif isinstance(sources, Mapping) and sources:
        named = dict(sources)
    else:
        raise TffdVizError(f"sources must be a model, a tap -> features mapping or a non-empty name -> source "
                           f"mapping, got {type(sources).__name__}")
    rows: list[dict] = []
    for model_name, source in named.items():
        table = tap_rankings(source, criterion, images=images, labels=labels, taps=taps, batch_size=batch_size)
        for ranking in table.values():
            rows += ranking.rows(model=str(model_name))
    return rows


# --------------------------------------------------------------------------------------------------
# agreement between criteria
# --------------------------------------------------------------------------------------------------


def _rank_corr(fn: Callable, a: np.ndarray, b: np.ndarray) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = fn(a, b)[0]
    return float(value)


_CORRELATIONS: dict[str, Callable] = {
    "spearman": stats.spearmanr,
    "kendall": stats.kendalltau,
}


def rank_agreement(scores_by_criterion: Mapping[str, Tensor | np.ndarray]) -> dict:
    """Return the rank correlation between every pair of criteria's scores of the same channels.

    Spearman's rho (``scipy.stats.spearmanr``) and Kendall's tau-b (``scipy.stats.kendalltau``) on
    the scores (ties get average ranks). The diagonal is 1 by definition. A pair whose correlation
    is undefined (one side constant) gets 0 and a :class:`ConstantScoresWarning` naming it.

    Parameters
    ----------
    scores_by_criterion : Mapping[str, Tensor (C,)]
        At least one criterion, all with the same ``C >= 2``.

    Returns
    -------
    dict
        ``"names"``: list of k names; ``"spearman"``, ``"kendall"``: float64 ``(k, k)`` symmetric.
    """
    if not scores_by_criterion:
        raise TffdVizError("rank_agreement needs at least one criterion's scores")
    names = list(scores_by_criterion)
    arrays = [_as_scores(scores_by_criterion[n], f"scores of {n!r}").double().cpu().numpy() for n in names]
    sizes = {n: a.shape[0] for n, a in zip(names, arrays)}
    if len(set(sizes.values())) != 1:
        raise TffdVizError(f"all criteria must score the same channels; got channel counts {sizes}")
    if arrays[0].shape[0] < 2:
        raise TffdVizError(f"rank correlation needs at least 2 channels, got {arrays[0].shape[0]}")
    k = len(names)
    out: dict = {"names": names}
    undefined: set[tuple[str, str]] = set()
    for key, fn in _CORRELATIONS.items():
        mat = np.eye(k)
        for i, j in itertools.combinations(range(k), 2):
            value = _rank_corr(fn, arrays[i], arrays[j])
            if not np.isfinite(value):
                undefined.add((names[i], names[j]))
                value = 0.0
            mat[i, j] = mat[j, i] = value
        out[key] = mat
    if undefined:
        warnings.warn(f"rank_agreement: rank correlation undefined (constant scores) for {sorted(undefined)}; "
                      "set to 0", ConstantScoresWarning, stacklevel=2)
    return out


# --------------------------------------------------------------------------------------------------
# stability
# --------------------------------------------------------------------------------------------------


def _ranks_rows(scores: Tensor) -> Tensor:
    """Row-wise rank positions of ``(B, C)`` scores, descending and stable."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(scores.shape[1]).expand_as(order).contiguous())
    return ranks


def _mean_pairwise_spearman(ranks: np.ndarray) -> tuple[np.ndarray, float]:
    b = ranks.shape[0]
    mat = np.eye(b)
    for i, j in itertools.combinations(range(b), 2):
        mat[i, j] = mat[j, i] = _rank_corr(stats.spearmanr, ranks[i], ranks[j])
    off = mat[np.triu_indices(b, 1)]
    return mat, float(off.mean())


def ranking_stability_across_batches(feature_batches: Sequence[Tensor], criterion: str | Criterion = "tffd") -> dict:
    """How much each channel's rank moves between batches of the same tap.

    Parameters
    ----------
    feature_batches : list of Tensor (N_b, C, H, W)
        At least two batches of the same tap (sizes may differ, ``C >= 2`` the same).
    criterion : str or Criterion
        A feature criterion.

    Returns
    -------
    dict
        ``"scores"`` float64 ``(B, C)``; ``"ranks"`` int64 ``(B, C)`` (0 = most important);
        ``"mean_rank"``, ``"std_rank"`` (population std, ddof 0), ``"min_rank"``, ``"max_rank"``
        ``(C,)``; ``"pairwise_spearman"`` ``(B, B)`` between the batches' rankings and
        ``"mean_pairwise_spearman"`` (float, mean over pairs ``i < j``).
    """
    crit = _feature_criterion(criterion)
    batches = list(feature_batches)
    if len(batches) < 2:
        raise TffdVizError(f"ranking stability needs at least 2 feature batches, got {len(batches)}")
    channels = {tuple(_check_feature(f).shape[1:2]) for f in batches}
    if len(channels) != 1:
        raise TapError(f"all batches must have the same channel count, got shapes {[tuple(f.shape) for f in batches]}")
    scores = torch.stack([channel_scores(crit, features=f).double() for f in batches])
    if scores.shape[1] < 2:
        raise TffdVizError(f"ranking stability needs at least 2 channels, got {scores.shape[1]}")
    ranks = _ranks_rows(scores).numpy()
    pairwise, mean_rho = _mean_pairwise_spearman(ranks)
    return {
        "scores": scores.numpy(), "ranks": ranks, "mean_rank": ranks.mean(axis=0), "std_rank": ranks.std(axis=0),
        "min_rank": ranks.min(axis=0), "max_rank": ranks.max(axis=0), "pairwise_spearman": pairwise,
        "mean_pairwise_spearman": mean_rho,
    }


def _bootstrap(f: Tensor, criterion: str | Criterion, n_boot: int, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Full-batch scores ``(C,)``, bootstrap scores ``(n_boot, C)`` float64 and their ranks."""
    crit = _feature_criterion(criterion)
    f = _check_feature(f)
    if isinstance(n_boot, bool) or int(n_boot) != n_boot or n_boot < 1:
        raise TffdVizError(f"n_boot must be a positive integer, got {n_boot!r}")
    n = f.shape[0]
    full = channel_scores(crit, features=f)
    gen = torch.Generator().manual_seed(int(seed))
    idx = torch.randint(0, n, (int(n_boot), n), generator=gen)
    with torch.no_grad():
        if crit.per_sample is not None:
            # resample = reweight: score_b = sum_n count_bn * s_n / N with s the per-sample scores
            per_sample = crit.per_sample(f).double().cpu()
            counts = torch.zeros((int(n_boot), n), dtype=torch.float64)
            counts.scatter_add_(1, idx, torch.ones_like(idx, dtype=torch.float64))
            boot = counts @ per_sample / n
        else:
            boot = torch.stack([crit.fn(f[row.to(f.device)]).double().cpu() for row in idx])
    return full, boot, _ranks_rows(boot)


def bootstrap_rank_band(
    f: Tensor, criterion: str | Criterion = "tffd", n_boot: int = 200, seed: int = 0, ci: float = 0.9
) -> dict:
    """Bootstrap band of each channel's rank: resample the ``N`` samples with replacement.

    Resamples are drawn with ``torch.Generator().manual_seed(seed)`` (same seed, same result); for
    criteria with ``per_sample`` scores (all built-in feature criteria) a resample is a reweighting
    of the per-sample scores (one matrix product for all resamples).

    Parameters
    ----------
    f : Tensor (N, C, H, W)
    criterion : str or Criterion
        A feature criterion.
    n_boot : int
    seed : int
    ci : float in (0, 1)
        Central coverage of the band.

    Returns
    -------
    dict
        ``"rank"`` int64 ``(C,)`` on the full batch (for ``tffd`` the rank in
        :func:`~tffd_viz.losses.salient_order`); ``"scores"`` ``(C,)``; ``"lower"``, ``"upper"`` int64
        ``(C,)``: the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` percentiles of the bootstrap ranks
        (numpy methods ``"lower"``/``"higher"``, so whole ranks and a band at least ``ci`` wide);
        ``"width"`` = upper - lower; ``"mean_rank"`` ``(C,)``; ``"boot_ranks"`` ``(n_boot, C)``;
        ``"boot_scores"`` ``(n_boot, C)``.
    """
    if not 0.0 < float(ci) < 1.0:
        raise TffdVizError(f"ci must lie in (0, 1), got {ci!r}")
    full, boot, ranks = _bootstrap(f, criterion, n_boot, seed)
    ranks_np = ranks.numpy()
    lower = np.quantile(ranks_np, (1.0 - ci) / 2.0, axis=0, method="lower").astype(np.int64)
    upper = np.quantile(ranks_np, (1.0 + ci) / 2.0, axis=0, method="higher").astype(np.int64)
    return {
        "rank": rank_positions(full).numpy(), "scores": full.double().numpy(), "lower": lower, "upper": upper,
        "width": upper - lower, "mean_rank": ranks_np.mean(axis=0), "boot_ranks": ranks_np,
        "boot_scores": boot.numpy(),
    }


def split_stability(f: Tensor, criterion: str | Criterion = "tffd", n_boot: int = 200, seed: int = 0) -> dict:
    """Probability that each channel lands in Tf-FD's salient (or redundant) half over bootstraps.

    Same resamples as :func:`bootstrap_rank_band` with the same ``seed`` and ``n_boot``.

    Returns
    -------
    dict
        ``"p_salient"``, ``"p_redundant"`` float64 ``(C,)``: fraction of resamples with the channel's
        rank ``< C // 2`` (salient) or ``>= C - C // 2`` (redundant); ``"in_salient"`` bool ``(C,)``:
        membership on the full batch; ``"n_boot"``.
    """
    full, _boot, ranks = _bootstrap(f, criterion, n_boot, seed)
    c = full.shape[0]
    k = c // 2
    ranks_np = ranks.numpy()
    return {
        "p_salient": (ranks_np < k).mean(axis=0), "p_redundant": (ranks_np >= c - k).mean(axis=0),
        "in_salient": rank_positions(full).numpy() < k, "n_boot": int(n_boot),
    }


def tap_rank_stability(
    model: nn.Module,
    images: Tensor,
    tap: str,
    criterion: str | Criterion = "tffd",
    n_boot: int = 100,
    seed: int = 0,
    ci: float = 0.9,
    batch_size: int = 256,
) -> dict:
    """Bootstrap rank band and salient/redundant split stability of one tap of a model.

    Extracts the tap's features on ``images`` (eval mode) once, then runs
    :func:`bootstrap_rank_band` and :func:`split_stability` on them with the same resamples
    (same ``n_boot`` and ``seed``).

    Parameters
    ----------
    model : nn.Module
    images : Tensor (N, C_in, H, W)
        Normalised images.
    tap : str
        Module name.
    criterion : str or Criterion
        A feature criterion.
    n_boot, seed, ci
        As in :func:`bootstrap_rank_band`.
    batch_size : int
        Extraction batch size.

    Returns
    -------
    dict
        Every key of :func:`bootstrap_rank_band` (``rank``, ``scores``, ``lower``, ``upper``, ``width``,
        ``mean_rank``, ``boot_ranks``, ``boot_scores``) and of :func:`split_stability` (``p_salient``,
        ``p_redundant``, ``in_salient``, ``n_boot``), plus ``"tap"``, ``"criterion"``, ``"ci"``,
        ``"p_same_half"`` float64 ``(C,)``: fraction of resamples that put each channel in the same part
        (salient half, redundant half or, for odd ``C``, the middle) as the full batch does, and
        ``"mean_width"``: the mean of ``width`` over channels; ``"share_stable_half"``: the fraction of
        channels whose ``p_same_half`` is at least 0.95.

    Raises
    ------
    TapError
        Unknown tap; TffdVizError for a model criterion or bad ``n_boot``/``ci``.
    """
    crit = _feature_criterion(criterion)
    f = extract_features(model, images, [tap], batch_size=batch_size)[tap]
    band = bootstrap_rank_band(f, crit, n_boot=n_boot, seed=seed, ci=ci)
    split = split_stability(f, crit, n_boot=n_boot, seed=seed)
    c = band["rank"].shape[0]
    k = c // 2
    p_middle = 1.0 - split["p_salient"] - split["p_redundant"]
    same = np.where(band["rank"] < k, split["p_salient"], np.where(band["rank"] >= c - k, split["p_redundant"],
                                                                   p_middle))
    return {**band, **split, "tap": tap, "criterion": crit.name, "ci": float(ci), "p_same_half": same,
            "mean_width": float(band["width"].mean()), "share_stable_half": float((same >= 0.95).mean())}
