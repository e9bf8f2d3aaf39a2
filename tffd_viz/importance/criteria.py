"""The criteria registry: :class:`Criterion` and :data:`CRITERIA` (name -> criterion), built-ins registered
here.

A feature criterion is ``fn(f: Tensor (N, C, H, W)) -> Tensor (C,)``
(:mod:`~tffd_viz.importance.feature_criteria`); a model criterion is
``fn(model, images (N, C, H, W) or None, labels (N,) or None, tap: str) -> Tensor (C,)``
(:mod:`~tffd_viz.importance.model_criteria`). Captum criteria (``layer_conductance``,
``layer_grad_x_activation``) are added by ``tffd_viz.attribution`` through :func:`register_criterion`;
:func:`available_criteria` imports that module (the one lazy import here, so the package imports without
captum).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from tffd_viz.errors import TffdVizError
from tffd_viz.importance.feature_criteria import (
    l1_per_sample,
    l1_scores,
    l2_per_sample,
    l2_scores,
    mean_per_sample,
    mean_scores,
    tffd_per_sample,
    tffd_scores,
)
from tffd_viz.importance.model_criteria import bn_gamma_scores, taylor_scores

__all__ = [
    "CRITERIA",
    "NEEDS",
    "Criterion",
    "available_criteria",
    "feature_criterion",
    "get_criterion",
    "register_criterion",
]

NEEDS = ("features", "model")
"""What a criterion takes: a feature tensor, or the model with images, labels and a tap name."""


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
        raise TffdVizError(
            f"criterion {criterion.name!r}: needs must be one of {NEEDS}, got {criterion.needs!r}"
        )
    if not callable(criterion.fn):
        raise TffdVizError(f"criterion {criterion.name!r}: fn is not callable")
    existing = CRITERIA.get(criterion.name)
    if existing is not None and existing != criterion and not replace:
        raise TffdVizError(
            f"a different criterion named {criterion.name!r} is already registered; "
            "pass replace=True to override it"
        )
    CRITERIA[criterion.name] = criterion
    return criterion


for _crit in (
    Criterion(
        "tffd",
        "Tf-FD saliency",
        "features",
        tffd_scores,
        "Mean of each channel's spatially L2-normalised map over samples and positions; the "
        "criterion intra-layer Tf-FD sorts channels by.",
        per_sample=tffd_per_sample,
    ),
    Criterion(
        "l1",
        "L1 norm",
        "features",
        l1_scores,
        "Mean over samples of the L1 norm of each channel's map.",
        per_sample=l1_per_sample,
    ),
    Criterion(
        "l2",
        "L2 norm",
        "features",
        l2_scores,
        "Mean over samples of the L2 norm of each channel's map.",
        per_sample=l2_per_sample,
    ),
    Criterion(
        "mean",
        "Mean activation",
        "features",
        mean_scores,
        "Mean activation of each channel over samples and positions.",
        per_sample=mean_per_sample,
    ),
    Criterion(
        "bn_gamma",
        "BatchNorm |gamma|",
        "model",
        bn_gamma_scores,
        "Absolute scale of the BatchNorm2d that produces (or, for WRN stage sums, normalises) the tap "
        "(network slimming).",
    ),
    Criterion(
        "taylor",
        "Taylor (activation x gradient)",
        "model",
        taylor_scores,
        "|mean of activation x gradient of the cross-entropy| per channel (Molchanov et al. 2017).",
    ),
):
    register_criterion(_crit)

_OPTIONAL_CRITERIA_MODULE = "tffd_viz.attribution"


def available_criteria() -> dict[str, Criterion]:
    """Return every criterion that can run here, importing the captum ones when captum is installed.

    ``tffd_viz.attribution`` registers its criteria when imported; it is imported here, lazily and
    inside ``try``, so that this core package imports without captum. An ``ImportError`` about
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


def feature_criterion(criterion: str | Criterion) -> Criterion:
    """Return :func:`get_criterion` of ``criterion``; :class:`TffdVizError` when it needs the model."""
    crit = get_criterion(criterion)
    if crit.needs != "features":
        raise TffdVizError(
            f"criterion {crit.name!r} needs the model; this function takes feature criteria "
            f"only: {[n for n, c in CRITERIA.items() if c.needs == 'features']}"
        )
    return crit
