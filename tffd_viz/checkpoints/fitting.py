"""Strict fitting: which zoo model a checkpoint loads into, and exactly how its keys, shapes and values fit.

:func:`plan` tries every key layout and returns the first whose renamed keys fit the target model exactly;
when none does, it raises one readable error about the closest candidate (missing, unexpected and
mis-shaped keys), with the closest published model of a known zoo (:func:`closest_known`).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tffd_viz.checkpoints.inference import (
    CLASSIFIER_KEYS,
    inferred_in_chans,
    inferred_num_classes,
    inferred_with_layout,
    inferred_zoo_arch,
)
from tffd_viz.checkpoints.layouts import (
    LAYOUTS,
    Layout,
    class_note,
    layout_keys,
    published_title,
    stripped_keys,
    unwrapped,
)
from tffd_viz.checkpoints.readers import RawCheckpoint, Shapes, shown
from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.models import MODELS, create_model

__all__ = ["Fit", "Plan", "Target", "closest_known", "fit", "nonfinite_summary", "plan"]


# ----------------------------------------------------------------------------------------- the target
@dataclass
class Target:
    """The zoo model a checkpoint is loaded into, and where each of its settings came from."""

    arch: str
    num_classes: int
    in_chans: int
    origin: dict[str, str]

    def describe(self) -> str:
        """``"<arch> (arch from ...; num_classes=N from ...; in_chans=C from ...)"``."""
        return (
            f"{self.arch} (arch from {self.origin['arch']}; num_classes={self.num_classes} from "
            f"{self.origin['num_classes']}; in_chans={self.in_chans} from {self.origin['in_chans']})"
        )


def _first_given(*options: tuple[Any, str]) -> tuple[Any, str]:
    return next(((v, origin) for v, origin in options if v is not None), (None, "nowhere"))


def _target(
    shapes: Shapes,
    arch: str | None,
    num_classes: int | None,
    card: Mapping[str, Any],
    meta: Mapping[str, Any],
) -> Target:
    """Return the model to build: caller's choice, else the card's, else the checkpoint's metadata, else
    inferred."""
    if arch is not None and arch not in MODELS:
        raise CheckpointError(f"arch={arch!r} is not in the zoo; choose one of {sorted(MODELS)}")
    if card.get("arch") is not None and card["arch"] not in MODELS:
        raise CheckpointError(
            f"the model card names architecture {card['arch']!r}, which is not in the zoo "
            f"{sorted(MODELS)}; pass arch=... to override"
        )
    meta_arch = meta.get("arch") if meta.get("arch") in MODELS else None
    chosen_arch, arch_origin = _first_given(
        (arch, "the caller"), (card.get("arch"), "the card"), (meta_arch, "the checkpoint's metadata")
    )
    if chosen_arch is None:
        chosen_arch, arch_origin = inferred_zoo_arch(shapes), "the weights"
    nc, nc_origin = _first_given(
        (num_classes, "the caller"),
        (card.get("num_classes"), "the card"),
        (inferred_num_classes(shapes), "the weights"),
    )
    ic, ic_origin = _first_given(
        (card.get("in_chans"), "the card"), (inferred_in_chans(shapes), "the weights"), (3, "the default")
    )
    if nc is None:
        raise CheckpointError(
            f"cannot tell the number of classes of {chosen_arch}: the weights have no "
            f"{' / '.join(CLASSIFIER_KEYS)}; pass num_classes=..."
        )
    try:
        nc, ic = int(nc), int(ic)
    except (TypeError, ValueError):
        raise CheckpointError(
            f"num_classes={nc!r} (from {nc_origin}) and in_chans={ic!r} (from {ic_origin}) must be integers"
        ) from None
    return Target(chosen_arch, nc, ic, {"arch": arch_origin, "num_classes": nc_origin, "in_chans": ic_origin})


# -------------------------------------------------------------------------------------- keys & shapes
@dataclass
class Fit:
    """How a checkpoint's keys and shapes compare with a model's state_dict."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]

    @property
    def ok(self) -> bool:
        """Whether the keys and shapes match exactly."""
        return not (self.missing or self.unexpected or self.mismatched)

    @property
    def problems(self) -> int:
        """Number of missing, unexpected and mis-shaped keys (the closest candidate has fewest)."""
        return len(self.missing) + len(self.unexpected) + len(self.mismatched)

    def describe(self) -> str:
        """``"2 missing keys: a, b; 1 shape mismatch: k checkpoint (10, 64) vs model (100, 64)"``."""

        def listed(items: list[str], one: str, many: str) -> str:
            return f"{len(items)} {one if len(items) == 1 else many}: {shown(items)}"

        parts = []
        if self.missing:
            parts.append(listed(self.missing, "missing key", "missing keys"))
        if self.unexpected:
            parts.append(listed(self.unexpected, "unexpected key", "unexpected keys"))
        if self.mismatched:
            parts.append(
                listed(
                    [f"{k} checkpoint {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched],
                    "shape mismatch",
                    "shape mismatches",
                )
            )
        return "; ".join(parts)


def fit(shapes: Shapes, expected: Shapes) -> Fit:
    """Compare checkpoint ``shapes`` with a model's; an absent BatchNorm ``num_batches_tracked`` is
    tolerated."""
    missing = [k for k in expected if k not in shapes and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in shapes if k not in expected]
    mismatched = [
        (k, shapes[k], expected[k]) for k in expected if k in shapes and tuple(shapes[k]) != expected[k]
    ]
    return Fit(missing, unexpected, mismatched)


@functools.lru_cache(maxsize=64)
def _expected_shapes(arch: str, num_classes: int, in_chans: int) -> Shapes:
    """Return the state_dict shapes of a zoo model, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def closest_known(shapes: Shapes, within: int | None = None) -> str:
    """Say which published model of a known zoo (:data:`LAYOUTS` with ``published``) the raw ``shapes``
    are closest to, and what differs; ``""`` when none is as close as ``within`` missing/unexpected/mis-shaped
    keys or shares no key with them.

    Every published model of every class count is compared (signatures ignored: an extra shortcut weight
    should still find its zoo). Differences only in the classifier's rows say "but has N classes".
    """
    base = unwrapped(shapes)
    best: tuple[int, Layout, str, Fit] | None = None
    for layout in LAYOUTS.values():
        mapping = layout_keys(layout, list(base), signed=False) if layout.published else None
        if mapping is None:
            continue
        renamed = {new: base[old] for new, old in mapping.items()}
        in_chans = inferred_in_chans(renamed) or 3
        for arch in layout.published:
            for classes in sorted(layout.cards):
                found = fit(renamed, _expected_shapes(arch, classes, in_chans))
                shared = len(renamed) - len(found.unexpected)
                if shared and (best is None or found.problems < best[0]):
                    best = (found.problems, layout, arch, found)
    if best is None or (within is not None and best[0] > within):
        return ""
    _, layout, arch, found = best
    renamed_classes = inferred_num_classes({layout.renamed(k): v for k, v in base.items()})
    heads = {k.rsplit(".", 1)[0] for k in CLASSIFIER_KEYS}
    only_head = (
        not found.missing
        and not found.unexpected
        and all(k.rsplit(".", 1)[0] in heads and tuple(a)[1:] == tuple(b)[1:] for k, a, b in found.mismatched)
    )
    if only_head and renamed_classes is not None:
        return f"; closest known layout: {class_note(layout, arch, renamed_classes)}"
    return f"; closest known layout: {published_title(layout, arch)}, which differs by {found.describe()}"


# ------------------------------------------------------------------------------------------- the plan
@dataclass
class Plan:
    """A layout whose renamed keys fit a built model: ``mapping`` is zoo key -> checkpoint key."""

    layout: str
    mapping: dict[str, str]
    target: Target
    model: nn.Module
    fit: Fit


def plan(
    raw: RawCheckpoint, arch: str | None, num_classes: int | None, card: Mapping[str, Any], label: str
) -> Plan:
    """Pick the layout whose renamed keys fit the target model; raise the strict error when none does.

    An architecture named only by a pickle's metadata (``opt.model``) is a hint: when the weights do
    not fit it but fit the inferred architecture, the inferred one is used, with a warning (attributed to
    the loader's caller).
    """
    back = {v: k for k, v in stripped_keys(list(raw.shapes)).items()}
    plans: list[Plan] = []
    errors: list[str] = []
    for name, layout in LAYOUTS.items():
        renamed = layout_keys(layout, list(back))
        if renamed is None:
            continue
        mapping = {new: back[old] for new, old in renamed.items()}
        shapes = {new: raw.shapes[old] for new, old in mapping.items()}
        for meta in (raw.meta, {}):
            try:
                target = _target(shapes, arch, num_classes, card, meta)
                model = create_model(target.arch, num_classes=target.num_classes, in_chans=target.in_chans)
            except CheckpointError as exc:
                errors.append(str(exc))
                break
            except TffdVizError as exc:
                raise CheckpointError(f"cannot build the model for {label}: {exc}") from None
            expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
            candidate = Plan(name, mapping, target, model, fit(shapes, expected))
            if candidate.fit.ok:
                if meta is not raw.meta:
                    warnings.warn(
                        f"the metadata of {label} names architecture {raw.meta['arch']!r}, but the "
                        f"weights are {target.arch}; loaded as {target.arch}",
                        UserWarning,
                        stacklevel=3,
                    )
                return candidate
            plans.append(candidate)
            if target.origin["arch"] != "the checkpoint's metadata":
                break
    if not plans:
        raise CheckpointError(
            f"cannot load {label}: {errors[0] if errors else 'no layout fits its keys'}"
            + closest_known(raw.shapes)
        )
    best = min(plans, key=lambda p: p.fit.problems)
    hint = ""
    try:
        looks = inferred_with_layout(raw.shapes)[1]
        if looks != (best.target.arch, best.target.num_classes, best.target.in_chans):
            hint = (
                f"; the weights look like {looks[0]} with {looks[1]} classes and {looks[2]} input channel(s)"
            )
    except CheckpointError:
        pass
    raise CheckpointError(
        f"checkpoint {label} does not fit {best.target.describe()}: {best.fit.describe()}{hint}"
        + closest_known(raw.shapes, within=best.fit.problems)
    )


# ----------------------------------------------------------------------------------------------- values
def nonfinite_summary(state: Mapping[str, torch.Tensor]) -> str | None:
    """Return ``"NaN/Inf values in K tensor(s): name (k of n values), ..."`` for the floating-point tensors of
    ``state`` that hold NaN or Inf, or None when every value is finite."""
    bad = []
    for name, tensor in state.items():
        if (tensor.is_floating_point() or tensor.is_complex()) and not bool(torch.isfinite(tensor).all()):
            count = int((~torch.isfinite(tensor)).sum())
            bad.append(f"{name} ({count} of {tensor.numel()} values)")
    return f"NaN/Inf values in {len(bad)} tensor(s): {shown(bad)}" if bad else None
