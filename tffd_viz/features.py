"""Batched, streaming feature extraction and predictions for trained models.

Everything here runs the model in eval mode under ``no_grad`` over a large image tensor kept
where it is (normally on the CPU), moving one batch at a time to the model's device, so the
app, notebooks and report can analyse thousands of images without holding every activation on
the accelerator:

>>> import torch
>>> from tffd_viz.models import create_model
>>> model, images = create_model("resnet8", num_classes=10), torch.randn(6, 3, 32, 32)
>>> feats = extract_features(model, images, pool="avg", batch_size=4)   # tap -> (N, C)
>>> {name: tuple(f.shape) for name, f in feats.items()}
{'layer1': (6, 16), 'layer2': (6, 32), 'layer3': (6, 64)}
>>> logits = predict_logits(model, images)                             # (N, K)
>>> accuracy(logits, logits.argmax(1))                                 # top-1 in %
100.0

Models are never moved and never left in another mode: a model in training mode is switched to
eval mode for the duration of a call and every module's previous mode is restored afterwards
(models already in eval mode, as the app always passes them, are not touched at all).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.models import extract_taps, resolve_taps

__all__ = [
    "POOLS",
    "accuracy",
    "batch_slices",
    "confusion_matrix",
    "eval_mode",
    "extract_features",
    "extract_pair",
    "hooked_forward",
    "iter_tap_batches",
    "model_device",
    "pass_batch_size",
    "predict_logits",
    "prediction_summary",
]

Pool = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------------------------------
# pooling registry
# --------------------------------------------------------------------------------------------------


def _identity(f: Tensor) -> Tensor:
    return f


def _global_avg(f: Tensor) -> Tensor:
    return f.mean(dim=tuple(range(2, f.dim()))) if f.dim() > 2 else f


def _global_max(f: Tensor) -> Tensor:
    return f.flatten(2).amax(dim=2) if f.dim() > 2 else f


def _flatten(f: Tensor) -> Tensor:
    return f.flatten(1)


POOLS: dict[str | None, Pool] = {
    None: _identity,
    "avg": _global_avg,
    "max": _global_max,
    "flatten": _flatten,
}
"""How each tap is reduced per batch before it is stored.

``None``: kept as is ``(N, C, H, W)``; ``"avg"``: global average over the spatial positions
``(N, C)``; ``"max"``: global maximum over the positions ``(N, C)``; ``"flatten"``: ``(N, C*H*W)``.
Taps that are already ``(N, C)`` are left unchanged by ``"avg"`` and ``"max"``.
"""


def _pool_fn(pool: str | None) -> Pool:
    try:
        return POOLS[pool]
    except (KeyError, TypeError):
        raise TffdVizError(f"unknown pool {pool!r}; choose one of {list(POOLS)}") from None


# --------------------------------------------------------------------------------------------------
# model state helpers
# --------------------------------------------------------------------------------------------------


def model_device(model: nn.Module) -> torch.device:
    """Return the device of the model's first parameter (else first buffer, else the CPU)."""
    for param in model.parameters():
        return param.device
    for buffer in model.buffers():
        return buffer.device
    return torch.device("cpu")


def _model_float_dtype(model: nn.Module) -> torch.dtype:
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _canonical(device: torch.device | str) -> torch.device:
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and torch.cuda.is_available():
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Context in which ``model`` is in eval mode; every module's previous mode is restored on exit.

    A model whose modules are all in eval mode already is not touched (no attribute is written),
    so a model shared between threads (the app's cached models) is never mutated.
    """
    modes = {m: m.training for m in model.modules()}
    switched = any(modes.values())
    if switched:
        model.eval()
    try:
        yield model
    finally:
        if switched:
            for m, mode in modes.items():
                m.training = mode


def hooked_forward(model: nn.Module, x: Tensor, handles: Sequence[RemovableHandle]) -> object:
    """Return ``model(x)`` from one pass in eval mode (:func:`eval_mode`) under ``no_grad``.

    ``handles`` are the hooks registered for this pass; they are removed afterwards, also when the
    pass raises, so the model is left as it was.

    Parameters
    ----------
    model : nn.Module
    x : Tensor (N, C, H, W)
        Already on the model's device.
    handles : sequence of RemovableHandle
    """
    try:
        with eval_mode(model), torch.no_grad():
            return model(x)
    finally:
        for h in handles:
            h.remove()


def _run_device(model: nn.Module, device: torch.device | str | None) -> torch.device:
    """The device batches go to: the model's, checked against ``device`` when one is given."""
    own = model_device(model)
    if device is None:
        return own
    wanted = _canonical(device)
    has_state = (
        next(iter(model.parameters()), None) is not None or next(iter(model.buffers()), None) is not None
    )
    if has_state and wanted != _canonical(own):
        raise TffdVizError(
            f"device={str(device)!r} but the model's parameters are on {own}; move the model first "
            "(models are never moved here, they may be shared) or leave device=None"
        )
    return wanted


def _check_images(images: object) -> Tensor:
    if not isinstance(images, Tensor):
        raise DataError(f"images must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}")
    if images.dim() != 4:
        raise DataError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise DataError(
            f"images must be floating point (normalised), got dtype {images.dtype}; use "
            "ImageDataset.normalized(...) to convert uint8 images"
        )
    if images.shape[0] == 0:
        raise DataError(f"images is empty: shape {tuple(images.shape)}")
    return images


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise TffdVizError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


#: Input pixels (images x H x W) of one no-grad pass at most: 1024 images of 32x32, 20 of 224x224 (a ResNet-18
#: pass on 20 images of 224 peaks near 0.3 GB), so 224-pixel pages stay far under 2 GB whatever batch they ask
#: for.
PASS_PIXELS = 1024 * 32 * 32
#: The same for a pass that keeps its graph for gradients (about 10x the memory per image): 5 images of
#: 224x224.
GRAD_PASS_PIXELS = 256 * 32 * 32


def pass_batch_size(images: Tensor, batch_size: int | None, pixels: int = PASS_PIXELS) -> int:
    """Return ``batch_size`` (None: no limit) capped so one pass over ``images (N, C, H, W)`` holds at most
    ``pixels`` input pixels per channel, and at least one image. Unchanged for 32x32 inputs and the
    defaults."""
    h, w = int(images.shape[-2]), int(images.shape[-1])
    cap = max(1, int(pixels) // max(1, h * w))
    return cap if batch_size is None else max(1, min(int(batch_size), cap))


def batch_slices(n: int, batch_size: int) -> list[slice]:
    """Return the consecutive slices ``[0:b], [b:2b], ...`` covering ``range(n)`` (last one shorter)."""
    b = _check_batch_size(batch_size)
    return [slice(start, min(start + b, n)) for start in range(0, n, b)]


# --------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------


def iter_tap_batches(
    model: nn.Module,
    images: Tensor,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Iterator[tuple[slice, OrderedDict[str, Tensor]]]:
    """Stream the taps of ``model`` over ``images``, one batch at a time.

    Parameters
    ----------
    model : nn.Module
        Any model; never moved. If it is in training mode it is put in eval mode for as long as
        the iterator runs and every module's previous mode is restored when the iterator is
        exhausted or closed (consume it fully, or close it, e.g. with ``contextlib.closing``).
    images : Tensor (N, C, H, W)
        Normalised float images, kept where they are (normally on the CPU); each batch is moved
        to the model's device (and cast to its float dtype).
    taps : list of str, str or None
        Module names; ``None`` means the model's default taps.
    batch_size : int
    device : torch.device or str, optional
        Where batches go; default (and required to be) the model's device.

    Yields
    ------
    slice
        The rows of ``images`` in this batch.
    OrderedDict[str, Tensor]
        ``tap -> output`` for this batch, e.g. ``(b, C, H, W)``, on the model's device, computed
        under ``no_grad`` (grad mode is not held disabled between yields).

    Raises
    ------
    DataError
        ``images`` not a float ``(N, C, H, W)`` tensor or empty.
    TapError
        Unknown tap names.
    """
    images = _check_images(images)
    names = resolve_taps(model, taps)
    slices = batch_slices(images.shape[0], pass_batch_size(images, _check_batch_size(batch_size)))
    run_on = _run_device(model, device)
    # validated eagerly above; the generator below only runs the batches
    return _tap_batches(model, images, names, slices, run_on, _model_float_dtype(model))


def _tap_batches(
    model: nn.Module,
    images: Tensor,
    names: list[str],
    slices: list[slice],
    run_on: torch.device,
    dtype: torch.dtype,
) -> Iterator[tuple[slice, OrderedDict[str, Tensor]]]:
    with eval_mode(model):
        for sl in slices:
            with torch.no_grad():
                batch = images[sl].to(device=run_on, dtype=dtype, non_blocking=True)
                feats = extract_taps(model, batch, names)
            yield sl, feats


def extract_features(
    model: nn.Module,
    images: Tensor,
    taps: Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    pool: str | None = None,
    to_cpu: bool = True,
) -> OrderedDict[str, Tensor]:
    """Return the taps of ``model`` for all ``images``, extracted in batches.

    Parameters
    ----------
    model, images, taps, batch_size, device
        As in :func:`iter_tap_batches`.
    pool : {None, "avg", "max", "flatten"}
        Key of :data:`POOLS`, applied per batch to keep memory small.
    to_cpu : bool, default True
        Store the result on the CPU (else on the model's device).

    Returns
    -------
    OrderedDict[str, Tensor]
        ``tap -> (N, ...)``: ``(N, C, H, W)`` without pooling, ``(N, C)`` for ``"avg"``/``"max"``,
        ``(N, C*H*W)`` for ``"flatten"``; equal to one forward pass over all images (eval mode).
    """
    reduce = _pool_fn(pool)
    n = _check_images(images).shape[0]
    out: OrderedDict[str, Tensor] = OrderedDict()
    for sl, feats in iter_tap_batches(model, images, taps, batch_size, device):
        for name, f in feats.items():
            pooled = reduce(f)
            if name not in out:
                target = torch.device("cpu") if to_cpu else pooled.device
                out[name] = torch.empty((n, *pooled.shape[1:]), dtype=pooled.dtype, device=target)
            out[name][sl] = pooled.to(out[name].device)
    return out


def extract_pair(
    model_a: nn.Module,
    model_b: nn.Module,
    images: Tensor,
    taps_a: Sequence[str] | str | None = None,
    taps_b: Sequence[str] | str | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    pool: str | None = None,
    to_cpu: bool = True,
) -> tuple[OrderedDict[str, Tensor], OrderedDict[str, Tensor]]:
    """Return the taps of two models on the very same images (row ``i`` is image ``i`` in both).

    Parameters
    ----------
    model_a, model_b : nn.Module
        May live on different devices when ``device`` is None.
    images : Tensor (N, C, H, W)
    taps_a, taps_b : list of str, str or None
        Taps of each model (``None``: its default taps).
    batch_size, device, pool, to_cpu
        As in :func:`extract_features`.

    Returns
    -------
    feats_a, feats_b : OrderedDict[str, Tensor]
        Each ``tap -> (N, ...)`` as in :func:`extract_features`.
    """
    feats_a = extract_features(model_a, images, taps_a, batch_size, device, pool, to_cpu)
    feats_b = extract_features(model_b, images, taps_b, batch_size, device, pool, to_cpu)
    return feats_a, feats_b


# --------------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------------


def predict_logits(
    model: nn.Module,
    images: Tensor,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """Return the logits of ``model`` on ``images`` (eval mode, ``no_grad``, batched).

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(b, K)``; its mode is restored as in :func:`iter_tap_batches`.
    images : Tensor (N, C, H, W)
    batch_size : int
    device : torch.device or str, optional
        As in :func:`iter_tap_batches`.

    Returns
    -------
    Tensor (N, K)
        On the CPU.
    """
    images = _check_images(images)
    slices = batch_slices(images.shape[0], pass_batch_size(images, _check_batch_size(batch_size)))
    run_on = _run_device(model, device)
    dtype = _model_float_dtype(model)
    chunks = []
    with eval_mode(model), torch.no_grad():
        for sl in slices:
            logits = model(images[sl].to(device=run_on, dtype=dtype, non_blocking=True))
            if not isinstance(logits, Tensor) or logits.dim() != 2:
                got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                raise TffdVizError(f"{type(model).__name__} must return logits of shape (b, K), got {got}")
            chunks.append(logits.cpu())
    return torch.cat(chunks)


def _check_labels(labels: object, n: int, what: str) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 1:
        got = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise DataError(f"labels must be a 1-D tensor (N,), got {got}")
    if labels.shape[0] != n:
        raise DataError(f"{what} has {n} rows but labels has {labels.shape[0]}")
    if n == 0:
        raise DataError("no samples: labels is empty")
    return labels


def accuracy(logits: Tensor, labels: Tensor) -> float:
    """Return the top-1 accuracy in percent.

    Parameters
    ----------
    logits : Tensor (N, K)
    labels : LongTensor (N,)

    Returns
    -------
    float
        ``100 * mean(argmax(logits, 1) == labels)``.
    """
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise DataError(f"logits must have shape (N, K), got {got}")
    labels = _check_labels(labels, logits.shape[0], f"logits {tuple(logits.shape)}")
    correct = logits.argmax(dim=1).cpu() == labels.cpu()
    return 100.0 * float(correct.double().mean())


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Return the confusion matrix, rows = true class, columns = predicted class.

    Parameters
    ----------
    pred : LongTensor (N,)
        Predicted class indices (pass ``logits.argmax(1)``).
    labels : LongTensor (N,)
        True class indices.
    num_classes : int
        ``K``; every index must lie in ``[0, K)``.

    Returns
    -------
    LongTensor (K, K)
        ``cm[t, p]`` = number of samples of true class ``t`` predicted as ``p``; sums to ``N``.
    """
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
        raise DataError(f"num_classes must be a positive integer, got {num_classes!r}")
    k = int(num_classes)
    if not isinstance(pred, Tensor) or pred.dim() != 1:
        got = tuple(pred.shape) if isinstance(pred, Tensor) else type(pred).__name__
        raise DataError(f"pred must be a 1-D tensor of class indices (N,), got {got} (use logits.argmax(1))")
    labels = _check_labels(labels, pred.shape[0], f"pred {tuple(pred.shape)}")
    pred, labels = pred.long().cpu(), labels.long().cpu()
    for what, t in (("pred", pred), ("labels", labels)):
        bad = (t < 0) | (t >= k)
        if bool(bad.any()):
            raise DataError(f"{what} has indices outside [0, {k}): {sorted(set(t[bad].tolist()))[:10]}")
    return torch.bincount(labels * k + pred, minlength=k * k).reshape(k, k)


def prediction_summary(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    num_classes: int | None = None,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> dict:
    """Return the predictions of ``model`` on a labelled batch with their accuracy and confusion matrix.

    One batched pass of :func:`predict_logits`; the accuracy is :func:`accuracy` of those logits and
    the confusion matrix :func:`confusion_matrix` of their argmax.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(b, K)``.
    images : Tensor (N, C, H, W)
        Normalised float images.
    labels : LongTensor (N,)
        True class indices.
    num_classes : int, optional
        ``K`` of the confusion matrix; default the logits' width.
    batch_size, device
        As in :func:`predict_logits`.

    Returns
    -------
    dict
        ``"pred"`` LongTensor ``(N,)`` (argmax of the logits, CPU); ``"accuracy"`` float, top-1 in %;
        ``"confusion"`` LongTensor ``(K, K)`` (rows = true class); ``"n"`` int, the batch size.

    Raises
    ------
    DataError
        Bad images or labels, or labels outside ``[0, K)``.
    """
    logits = predict_logits(model, images, batch_size=batch_size, device=device)
    acc = accuracy(logits, labels)
    pred = logits.argmax(dim=1)
    k = int(logits.shape[1]) if num_classes is None else num_classes
    return {
        "pred": pred,
        "accuracy": acc,
        "confusion": confusion_matrix(pred, labels, k),
        "n": int(pred.shape[0]),
    }
