"""Captum attributions: Grad-CAM and Integrated Gradients maps, and captum channel-importance criteria.

Maps
    :func:`gradcam_maps` (captum ``LayerGradCam`` on a tap, upsampled to the input size with
    ``LayerAttribution.interpolate``) and :func:`integrated_gradients_maps` (captum
    ``IntegratedGradients``, absolute value summed over input channels) return one ``(H, W)`` map
    per image, **normalised per image to [0, 1] by min-max** (``(m - min) / (max - min)``); a
    constant map, e.g. all zeros because the ReLU'd Grad-CAM is empty, gives all zeros, never NaN.
    The un-normalised values come from :func:`gradcam_raw` and :func:`integrated_gradients_raw`.

Criteria
    Importing this module registers two model-based channel-importance criteria into
    :mod:`tffd_viz.importance` (``layer_conductance`` and ``layer_grad_x_activation``): captum's
    ``LayerConductance`` / ``LayerGradientXActivation`` attributions on the tap module, towards the
    true label, summed over ``(H, W)``, averaged over the batch, then the absolute value is taken
    (a channel whose contributions cancel over the batch scores low).

Every function runs the model in eval mode (a model in train mode is switched and restored module
by module), wraps it (:class:`LogitsOnly`) so that only the first tensor of its output is used as
logits (models that return tuples), hands captum a probe that carries the first output tensor of
the chosen layer (layers that return tuples), and leaves the parameters' ``.grad`` exactly as it found them
(captum takes gradients with :func:`torch.autograd.grad`; any ``.grad`` it might write is put back).
Results are detached CPU float32 tensors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from captum.attr import (
    IntegratedGradients,
    LayerAttribution,
    LayerConductance,
    LayerGradCam,
    LayerGradientXActivation,
)
from torch import Tensor, nn

from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.features import GRAD_PASS_PIXELS, batch_slices, eval_mode, model_device, pass_batch_size
from tffd_viz.importance import Criterion, register_criterion
from tffd_viz.models import resolve_taps
from tffd_viz.models.taps import first_tensor

__all__ = [
    "ATTRIBUTION_MAPS",
    "BASELINES",
    "LogitsOnly",
    "gradcam_maps",
    "gradcam_raw",
    "integrated_gradients_maps",
    "integrated_gradients_raw",
    "layer_conductance_scores",
    "layer_grad_x_activation_scores",
    "normalized_maps",
    "selected_attribution_maps",
]


# --------------------------------------------------------------------------------------------------
# model handling
# --------------------------------------------------------------------------------------------------


class LogitsOnly(nn.Module):
    """Wrap a model so that its forward returns one tensor: the output, or its first tensor.

    Captum needs a forward function returning a tensor; some models return ``(logits, features)``.
    The wrapped model is held by reference (its modules are the same objects, so a captum layer
    hook on ``model.layer3`` works through the wrapper).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = first_tensor(self.model(x))
        if out is None:
            raise TffdVizError(f"{type(self.model).__name__} returned no tensor on input {tuple(x.shape)}")
        return out


@contextmanager
def _analysis_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode for the block (:func:`~tffd_viz.features.eval_mode`); afterwards each module's mode and
    each parameter's ``.grad`` are restored."""
    grads = {p: (None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()}
    try:
        with eval_mode(model):
            yield
    finally:
        for p, g in grads.items():
            if g is None:
                p.grad = None
            elif p.grad is None or not torch.equal(p.grad, g):
                p.grad = g


def _checked_images(model: nn.Module, images: Tensor) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a non-empty tensor of shape (N, C, H, W), got {shape}")
    p = next(model.parameters(), None)
    dtype = p.dtype if p is not None and p.is_floating_point() else torch.float32
    return images.detach().to(device=model_device(model), dtype=dtype)


def _targets(forward: nn.Module, images: Tensor, target: int | Tensor | None) -> Tensor:
    """Target class per image, shape (n,): ``None`` -> predicted class, an int -> that class for all."""
    n = images.shape[0]
    with torch.no_grad():
        logits = forward(images)
    if logits.dim() != 2:
        raise TffdVizError(f"model output must be logits (N, K), got shape {tuple(logits.shape)}")
    k = logits.shape[1]
    if target is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(target, dtype=torch.long, device=images.device)
    if t.dim() == 0:
        t = t.expand(n)
    if t.shape != (n,):
        raise DataError(
            f"target must be None, an int or a tensor of shape ({n},), got shape {tuple(t.shape)}"
        )
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= k):
        raise DataError(f"target classes must lie in [0, {k - 1}], got {t.tolist()}")
    return t.clone()


def _with_first_replaced(output: object, new: Tensor) -> object:
    """``output`` with its first tensor (itself, or the first tensor of a nested tuple/list) replaced."""
    if isinstance(output, Tensor):
        return new
    if isinstance(output, tuple | list):
        items = list(output)
        for i, item in enumerate(items):
            if first_tensor(item) is not None:
                items[i] = _with_first_replaced(item, new)
                return type(output)(items) if isinstance(output, list) else tuple(items)
    return output


@contextmanager
def _layer_probe(model: nn.Module, layer: str) -> Iterator[nn.Module]:
    """A stand-in layer for captum that always outputs one tensor: the tap's (first) output tensor.

    A temporary forward hook on the tap module routes its first output tensor through an
    ``nn.Identity`` probe and puts the probe's output back in its place, so the model computes
    exactly what it did, while captum, hooked on the probe, sees a plain ``(N, C, h, w)`` tensor
    even for layers that return tuples (with scalars, ``None`` or other non-batch items).
    """
    (name,) = resolve_taps(model, [layer])
    module = dict(model.named_modules())[name]
    probe = nn.Identity()

    def hook(_m: nn.Module, _inputs: object, output: object) -> object:
        first = first_tensor(output)
        if first is None:
            raise TffdVizError(f"layer {name!r} of {type(model).__name__} returned no tensor")
        return _with_first_replaced(output, probe(first))

    handle = module.register_forward_hook(hook)
    try:
        yield probe
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------------
# maps
# --------------------------------------------------------------------------------------------------


def normalized_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map to [0, 1]; a constant (or non-finite) map becomes zeros.

    Parameters
    ----------
    maps : Tensor, shape (n, H, W)

    Returns
    -------
    Tensor, shape (n, H, W)
        ``(m - min(m)) / (max(m) - min(m))`` per image, 0 where ``max == min``.
    """
    if maps.dim() != 3:
        raise TffdVizError(f"maps must have shape (n, H, W), got {tuple(maps.shape)}")
    m = torch.nan_to_num(maps.detach().float(), nan=0.0, posinf=0.0, neginf=0.0)
    flat = m.flatten(1)
    lo = flat.min(dim=1).values.view(-1, 1, 1)
    span = flat.max(dim=1).values.view(-1, 1, 1) - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (m - lo) / safe, torch.zeros_like(m)).clamp_(0.0, 1.0)


def gradcam_raw(
    model: nn.Module,
    images: Tensor,
    target: int | Tensor | None = None,
    layer: str = "layer3",
    relu: bool = True,
) -> Tensor:
    """Grad-CAM at the layer's resolution (captum ``LayerGradCam``).

    ``cam[n] = ReLU(sum_c mean_hw(d logit_target / d A)[n, c] * A[n, c])`` with ``A`` the layer output.

    Parameters
    ----------
    model : nn.Module
        Returns logits (or a tuple whose first tensor is the logits).
    images : Tensor, shape (n, C, H, W)
    target : int, Tensor (n,) or None
        Class per image; ``None`` = the predicted class.
    layer : str
        Module name of the layer (a tap), e.g. ``"layer3"``.
    relu : bool, default True
        Apply the ReLU (Grad-CAM's definition); ``False`` keeps the signed map.

    Returns
    -------
    Tensor, shape (n, h, w)
        CPU float32, ``(h, w)`` the layer's spatial size.
    """
    x = _checked_images(model, images)
    forward = LogitsOnly(model)
    with _analysis_mode(model), _layer_probe(model, layer) as probe:
        t = _targets(forward, x, target)
        cam = LayerGradCam(forward, probe)
        attr = cam.attribute(x.clone().requires_grad_(True), target=t, relu_attributions=relu)
    if attr.dim() != 4:
        raise TffdVizError(
            f"Grad-CAM needs a spatial layer output (N, C, h, w); {layer!r} gave attributions "
            f"of shape {tuple(attr.shape)}"
        )
    return attr.detach()[:, 0].float().cpu()


def gradcam_maps(
    model: nn.Module, images: Tensor, target: int | Tensor | None = None, layer: str = "layer3"
) -> Tensor:
    """Grad-CAM maps upsampled (bilinear) to the input size and min-max normalised per image.

    Returns
    -------
    Tensor, shape (n, H, W)
        Values in [0, 1] (a map with no positive evidence is all zeros); see :func:`gradcam_raw`.
    """
    raw = gradcam_raw(model, images, target=target, layer=layer)
    size = tuple(int(s) for s in images.shape[2:])
    up = LayerAttribution.interpolate(raw.unsqueeze(1), size, interpolate_mode="bilinear")
    return normalized_maps(up[:, 0].clamp(min=0.0))


def _zeros_baseline(x: Tensor) -> Tensor:
    return torch.zeros_like(x)


def _channel_mean_baseline(x: Tensor) -> Tensor:
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()


BASELINES: dict[str, Callable[[Tensor], Tensor]] = {
    "zeros": _zeros_baseline,
    "channel_mean": _channel_mean_baseline,
}
"""Integrated-Gradients baselines by name. ``"zeros"`` is 0 in normalised space, i.e. the dataset's
mean colour; ``"channel_mean"`` is each image's own mean colour (a flat image)."""


def _baseline(x: Tensor, baseline: str | Tensor) -> Tensor:
    if isinstance(baseline, Tensor):
        b = baseline.detach().to(device=x.device, dtype=x.dtype)
        if b.shape != x.shape:
            try:
                b = b.expand_as(x).clone()
            except RuntimeError:
                raise DataError(
                    f"baseline of shape {tuple(baseline.shape)} does not broadcast to images {tuple(x.shape)}"
                ) from None
        return b
    if baseline not in BASELINES:
        raise TffdVizError(
            f"unknown baseline {baseline!r}; choose one of {sorted(BASELINES)} or pass a tensor"
        )
    return BASELINES[baseline](x)


def integrated_gradients_raw(
    model: nn.Module,
    images: Tensor,
    target: int | Tensor | None = None,
    n_steps: int = 32,
    baseline: str | Tensor = "zeros",
    internal_batch_size: int | None = 256,
) -> Tensor:
    """Integrated Gradients w.r.t. the input pixels (captum, Gauss-Legendre rule).

    Completeness: ``attr[n].sum() ~= f(x_n)[t_n] - f(baseline_n)[t_n]`` (up to the quadrature error).

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (n, C, H, W)
    target : int, Tensor (n,) or None
        ``None`` = predicted class.
    n_steps : int, default 32
        Quadrature points along the path.
    baseline : str or Tensor, default "zeros"
        A key of :data:`BASELINES` or a tensor broadcastable to ``images``.
    internal_batch_size : int or None, default 256
        Images per forward pass inside captum (bounds memory).

    Returns
    -------
    Tensor, shape (n, C, H, W)
        CPU float32 attributions.
    """
    if int(n_steps) < 1:
        raise TffdVizError(f"n_steps must be >= 1, got {n_steps}")
    x = _checked_images(model, images)
    base = _baseline(x, baseline)
    forward = LogitsOnly(model)
    with _analysis_mode(model):
        t = _targets(forward, x, target)
        ig = IntegratedGradients(forward)
        attr = ig.attribute(
            x,
            baselines=base,
            target=t,
            n_steps=int(n_steps),
            internal_batch_size=pass_batch_size(x, internal_batch_size, GRAD_PASS_PIXELS),
        )
    return attr.detach().float().cpu()


def integrated_gradients_maps(
    model: nn.Module,
    images: Tensor,
    target: int | Tensor | None = None,
    n_steps: int = 32,
    baseline: str | Tensor = "zeros",
) -> Tensor:
    """Integrated-Gradients saliency: ``sum_c |attr|`` per pixel, min-max normalised per image.

    Returns
    -------
    Tensor, shape (n, H, W)
        Values in [0, 1]; see :func:`integrated_gradients_raw`.
    """
    raw = integrated_gradients_raw(model, images, target=target, n_steps=n_steps, baseline=baseline)
    return normalized_maps(raw.abs().sum(dim=1))


ATTRIBUTION_MAPS: dict[str, Callable[..., Tensor]] = {
    "gradcam": gradcam_maps,
    "integrated_gradients": integrated_gradients_maps,
}
"""Per-image attribution maps by name: ``fn(model, images, target=None, **kw) -> (n, H, W)`` in [0, 1]
(``gradcam`` takes ``layer=``, ``integrated_gradients`` takes ``n_steps=`` and ``baseline=``)."""


def selected_attribution_maps(
    model: nn.Module,
    images: Tensor,
    indices: Sequence[int],
    method: str = "gradcam",
    labels: Tensor | None = None,
    **kw: object,
) -> Tensor:
    """Attribution maps of the chosen rows of a batch (the app passes a whole cached batch and indices).

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C, H, W)
    indices : sequence of int
        Rows of ``images`` to explain, in this order (``0 <= i < N``, at least one).
    method : str
        A key of :data:`ATTRIBUTION_MAPS`.
    labels : Tensor (N,), optional
        Explain these classes (``labels[indices]``); ``None`` explains each model's predicted class.
    **kw
        Passed to the method (``layer=`` for Grad-CAM, ``n_steps=``/``baseline=`` for IG).

    Returns
    -------
    Tensor, shape (len(indices), H, W)
        Maps in [0, 1], CPU float32; row ``k`` explains ``images[indices[k]]``.
    """
    if method not in ATTRIBUTION_MAPS:
        raise TffdVizError(f"unknown attribution method {method!r}; choose one of {sorted(ATTRIBUTION_MAPS)}")
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a tensor of shape (N, C, H, W), got {shape}")
    idx = [int(i) for i in indices]
    n = images.shape[0]
    if not idx or any(not 0 <= i < n for i in idx):
        raise DataError(
            f"indices must be a non-empty list of rows in [0, {n}) of images {tuple(images.shape)}, got {idx}"
        )
    rows = torch.tensor(idx, dtype=torch.long)
    target = None
    if labels is not None:
        if not isinstance(labels, Tensor) or labels.shape != (n,):
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise DataError(
                f"labels must have shape ({n},) to match images {tuple(images.shape)}, got {shape}"
            )
        target = labels.detach().cpu().long()[rows]
    return ATTRIBUTION_MAPS[method](model, images[rows.to(images.device)], target=target, **kw)


# --------------------------------------------------------------------------------------------------
# channel-importance criteria
# --------------------------------------------------------------------------------------------------


def _channel_scores(attr: Tensor, tap: str) -> Tensor:
    """(N, C, ...) attributions -> (C,): sum over the spatial dims, mean over N, then abs."""
    if attr.dim() < 2:
        raise TffdVizError(f"tap {tap!r} gave attributions of shape {tuple(attr.shape)}; need (N, C, ...)")
    per_image = attr.flatten(2).sum(dim=2) if attr.dim() > 2 else attr
    return per_image.mean(dim=0).abs().detach().float().cpu()


def layer_conductance_scores(
    model: nn.Module,
    images: Tensor,
    labels: Tensor | None,
    tap: str,
    n_steps: int = 16,
    internal_batch_size: int | None = 256,
) -> Tensor:
    """Channel importance by captum ``LayerConductance`` on the tap module.

    Conductance of each activation towards the label's logit (zero input baseline, ``n_steps + 1``
    path points of the trapezoid rule, endpoints included, so for a tap followed by a linear head
    the channel's conductance is exactly ``w_c * (mean_hw A(x) - mean_hw A(0))``), summed over
    ``(H, W)``, averaged over the images, then abs.

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C_in, H, W)
    labels : Tensor (N,) or None
        Target classes (``None`` = predicted).
    tap : str
        Module name of the tapped layer.
    n_steps : int, default 16
    internal_batch_size : int or None, default 256

    Returns
    -------
    Tensor, shape (C,)
        Non-negative scores, one per channel of the tap.
    """
    if int(n_steps) < 1:
        raise TffdVizError(f"n_steps must be >= 1, got {n_steps}")
    x = _checked_images(model, images)
    forward = LogitsOnly(model)
    with _analysis_mode(model), _layer_probe(model, tap) as probe:
        t = _targets(forward, x, labels)
        lc = LayerConductance(forward, probe)
        attr = lc.attribute(
            x,
            baselines=torch.zeros_like(x),
            target=t,
            n_steps=int(n_steps),
            method="riemann_trapezoid",
            internal_batch_size=pass_batch_size(x, internal_batch_size, GRAD_PASS_PIXELS),
        )
    return _channel_scores(attr, tap)


def layer_grad_x_activation_scores(
    model: nn.Module, images: Tensor, labels: Tensor | None, tap: str
) -> Tensor:
    """Channel importance by captum ``LayerGradientXActivation`` on the tap module.

    ``A * d logit_label / d A`` for the tap output ``A`` (N, C, H, W), summed over ``(H, W)``,
    averaged over the images, then abs.

    Returns
    -------
    Tensor, shape (C,)
        Non-negative scores, one per channel of the tap.
    """
    x = _checked_images(model, images)
    forward = LogitsOnly(model)
    with _analysis_mode(model), _layer_probe(model, tap) as probe:
        t = _targets(forward, x, labels)
        gxa = LayerGradientXActivation(forward, probe)
        slices = batch_slices(x.shape[0], pass_batch_size(x, None, GRAD_PASS_PIXELS))  # one pass for 32x32
        attr = torch.cat([gxa.attribute(x[sl].clone().requires_grad_(True), target=t[sl]) for sl in slices])
    return _channel_scores(attr, tap)


register_criterion(
    Criterion(
        name="layer_conductance",
        label="Layer conductance (captum)",
        needs="model",
        fn=layer_conductance_scores,
        description="captum LayerConductance of each channel towards the true label's logit, summed over "
        "H, W, averaged over the images, absolute value.",
    ),
    replace=True,
)
register_criterion(
    Criterion(
        name="layer_grad_x_activation",
        label="Gradient x activation (captum)",
        needs="model",
        fn=layer_grad_x_activation_scores,
        description="captum LayerGradientXActivation (activation times the gradient of the true label's "
        "logit) summed over H, W, averaged over the images, absolute value.",
    ),
    replace=True,
)
