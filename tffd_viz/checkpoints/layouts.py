"""Key layouts: how other code bases name a zoo model's tensors, and the published model zoos among them.

A checkpoint's keys are first stripped of wrapper prefixes (:data:`WRAPPER_PREFIXES`: DataParallel,
``torch.compile``, distillation wrappers), then renamed by each :class:`Layout` of :data:`LAYOUTS` in turn;
``tffd-reference`` maps the Tf-FD authors' ``res1..3`` / ``.ds.`` ResNets. Layouts of published zoos also
say which models the zoo publishes and what their cards imply (dataset, mean, std).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from tffd_viz.checkpoints.readers import Shapes
from tffd_viz.normalisation import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "LAYOUTS",
    "WRAPPER_PREFIXES",
    "Layout",
    "class_note",
    "layout_keys",
    "published_title",
    "recognised_as",
    "stripped_keys",
    "unwrapped",
    "with_layout_card",
    "zoo_shapes",
]

#: Prefixes that wrappers add to every key (DataParallel/DDP, torch.compile, distillation wrappers,
#: Lightning). One is stripped only when *every* key carries it; stripping repeats until none fits.
WRAPPER_PREFIXES: tuple[str, ...] = ("module.student.", "module.", "_orig_mod.", "student.", "model.")


def stripped_keys(keys: list[str]) -> dict[str, str]:
    """Return ``original key -> key without wrapper prefixes`` (see :data:`WRAPPER_PREFIXES`)."""
    current = {k: k for k in keys}
    changed = True
    while changed and current:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(v.startswith(prefix) for v in current.values()):
                current = {k: v[len(prefix) :] for k, v in current.items()}
                changed = True
                break
    return current


def unwrapped(shapes: Shapes) -> Shapes:
    """Return ``shapes`` under their keys without wrapper prefixes."""
    stripped = stripped_keys(list(shapes))
    return {stripped[k]: s for k, s in shapes.items()}


@dataclass(frozen=True)
class Layout:
    """A key layout of some code base: ``(regex, replacement)`` rules that map its names onto the zoo's.

    Every rule is applied (``re.sub``) to every key, in order. A layout of a published model zoo also
    says where it comes from (``source``), which keys mark it (``signature``, on the keys with wrapper
    prefixes stripped: the layout is tried only when it returns true), which models the zoo publishes
    (``published``: zoo arch -> name) and what their cards imply (``cards``: class count -> card
    entries such as ``dataset``, ``mean``, ``std``, filled where a file's card leaves them empty).
    """

    name: str
    rules: tuple[tuple[str, str], ...] = ()
    source: str = ""
    signature: Callable[[Collection[str]], bool] | None = None
    published: Mapping[str, str] = field(default_factory=dict)
    cards: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)

    def renamed(self, key: str) -> str:
        """Return ``key`` in zoo names."""
        for pattern, replacement in self.rules:
            key = re.sub(pattern, replacement, key)
        return key


def _akamaster_signature(keys: Collection[str]) -> bool:
    """A three-stage CIFAR ResNet with a ``linear`` head and no shortcut weights (option A)."""
    return (
        ("linear.weight" in keys or "compressible_linear.weight" in keys)
        and any(k.startswith("layer3.") for k in keys)
        and not any(k.startswith("layer4.") for k in keys)
        and not any(".shortcut." in k or ".downsample." in k for k in keys)
    )


def _chenyaofo_vgg_signature(keys: Collection[str]) -> bool:
    """``features.<i>`` convolutions and a ``classifier.0/3/6`` three-layer head."""
    return all(
        k in keys
        for k in ("features.0.weight", "classifier.0.weight", "classifier.3.weight", "classifier.6.weight")
    )


#: Key layouts tried in order; the first whose renamed keys fit the target model exactly is used.
#: Layouts of published zoos come first: their signatures make them apply only to files they mark.
LAYOUTS: dict[str, Layout] = {
    # akamaster/pytorch_resnet_cifar10: option-A ResNets, `linear` head (`compressible_*` in later revisions).
    "akamaster": Layout(
        "akamaster",
        ((r"(^|\.)compressible_", r"\1"), (r"^linear\.", "fc.")),
        source="akamaster/pytorch_resnet_cifar10",
        signature=_akamaster_signature,
        published={f"resnet{d}_a": f"option-A ResNet-{d}" for d in (20, 32, 44, 56, 110, 1202)},
        cards={10: {"dataset": "cifar10", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}},
    ),
    # chenyaofo/pytorch-cifar-models BN-VGGs (its ResNets have the zoo's own names: "zoo" loads them).
    "chenyaofo-vgg": Layout(
        "chenyaofo-vgg",
        source="chenyaofo/pytorch-cifar-models",
        signature=_chenyaofo_vgg_signature,
        published={f"cifar_vgg{d}_bn": f"BN-VGG-{d}" for d in (11, 13, 16, 19)},
        cards={10: {"dataset": "cifar10"}, 100: {"dataset": "cifar100"}},
    ),
    "zoo": Layout("zoo"),
    # Tf-FD authors' code (network.py): res1..3 stages of `resblock`s with a `ds` shortcut.
    "tffd-reference": Layout(
        "tffd-reference", ((r"^res([1-3])\.", r"layer\1."), (r"\.ds\.", ".downsample."))
    ),
}


def layout_keys(layout: Layout, keys: list[str], signed: bool = True) -> dict[str, str] | None:
    """Return ``zoo key -> checkpoint key`` under ``layout``, or None when two keys collide or (``signed``)
    the keys lack the layout's signature."""
    if signed and layout.signature is not None and not layout.signature(set(keys)):
        return None
    mapping = {layout.renamed(k): k for k in keys}
    return mapping if len(mapping) == len(keys) else None


def zoo_shapes(shapes: Shapes) -> list[tuple[str, Shapes]]:
    """Return ``(layout name, shapes in zoo names)`` for every layout, after stripping wrapper prefixes."""
    base = unwrapped(shapes)
    out = []
    for name, layout in LAYOUTS.items():
        mapping = layout_keys(layout, list(base))
        if mapping is not None:
            out.append((name, {new: base[old] for new, old in mapping.items()}))
    return out


# ------------------------------------------------------------------------------ published model zoos
def published_title(layout: Layout, arch: str) -> str:
    """``"<model name> (<arch>) of <source>"`` for a model ``layout``'s zoo publishes."""
    return f"{layout.published[arch]} ({arch}) of {layout.source}"


def class_note(layout: Layout, arch: str, num_classes: object) -> str:
    """``"looks like <model> but has N classes (its models have ...)"``."""
    published = " or ".join(str(c) for c in sorted(layout.cards))
    return (
        f"looks like {published_title(layout, arch)} but has {num_classes} classes "
        f"(its models have {published})"
    )


def recognised_as(card: Mapping[str, Any]) -> str | None:
    """Return what a loaded checkpoint was recognised as, e.g. ``"option-A ResNet-20 (resnet20_a) of
    akamaster/pytorch_resnet_cifar10"``, or None for files of no published zoo (the project's own
    included)."""
    layout = LAYOUTS.get(str(card.get("source_layout")))
    if (
        layout is None
        or card.get("arch") not in layout.published
        or card.get("num_classes") not in layout.cards
    ):
        return None
    return published_title(layout, str(card["arch"]))


def with_layout_card(card: dict[str, Any], layout_name: str, label: str) -> dict[str, Any]:
    """Return ``card`` with the entries a published zoo implies (``dataset``, ``mean``, ``std``) filled where
    it leaves them empty; a file in such a zoo's key layout that is none of its published models gets nothing
    filled (its preprocessing is not known) and a warning saying so (attributed to the loader's caller)."""
    layout = LAYOUTS.get(layout_name)
    if layout is None or not layout.published:
        return card
    arch: Any = card.get("arch")
    classes: Any = card.get("num_classes")
    if arch not in layout.published or classes not in layout.cards:
        what = (
            class_note(layout, arch, classes)
            if arch in layout.published
            else f"has the key layout of {layout.source} but is {arch}, none of its published models"
        )
        warnings.warn(
            f"{label} {what}; its preprocessing is not known, so the card says none",
            UserWarning,
            stacklevel=3,
        )
        return card
    for key, value in layout.cards[classes].items():
        if card.get(key) is None:
            card[key] = value
    return card
