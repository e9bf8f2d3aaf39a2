"""Architecture inference: which zoo model, class count and input channels a state_dict's keys and shapes fit.

Each zoo family has a rule (:data:`ARCH_RULES`) that reads its depth and width off the key names and tensor
shapes (in zoo names, see :mod:`tffd_viz.checkpoints.layouts`), or says the keys are not of that family.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import torch

from tffd_viz.checkpoints.layouts import zoo_shapes
from tffd_viz.checkpoints.readers import MAX_LISTED, Shapes
from tffd_viz.errors import CheckpointError
from tffd_viz.models import MODELS
from tffd_viz.models.imagenet import torchvision_arch
from tffd_viz.models.vgg import VGG_CONFIGS

__all__ = [
    "ARCH_RULES",
    "CLASSIFIER_KEYS",
    "infer_arch",
    "inferred_in_chans",
    "inferred_num_classes",
    "inferred_with_layout",
    "inferred_zoo_arch",
]


def _indices(shapes: Shapes, prefix: str) -> set[int]:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return {int(m.group(1)) for k in shapes if (m := pattern.match(k))}


def _zoo_name(name: str, description: str) -> str:
    if name not in MODELS:
        raise CheckpointError(
            f"the weights look like {description} ({name}), which is not in the zoo {sorted(MODELS)}"
        )
    return name


def _resnet_arch(shapes: Shapes) -> str | None:
    if "layer1.0.conv1.weight" not in shapes or "conv1.weight" not in shapes:
        return None
    blocks = len(_indices(shapes, "layer1."))
    stem = shapes["conv1.weight"][0]
    name = f"resnet{6 * blocks + 2}" + ("x4" if stem == 32 else "")
    return _zoo_name(name, f"a CIFAR ResNet with {blocks} blocks per stage and a stem of width {stem}")


def _wrn_arch(shapes: Shapes) -> str | None:
    if "block1.layer.0.conv1.weight" not in shapes:
        return None
    blocks = len(_indices(shapes, "block1.layer."))
    widen = shapes["block1.layer.0.conv1.weight"][0] // 16
    return _zoo_name(
        f"wrn_{6 * blocks + 4}_{widen}", f"a wide ResNet with {blocks} blocks per stage, width x{widen}"
    )


def _vgg_arch(shapes: Shapes) -> str | None:
    if "block0.0.weight" not in shapes or "classifier.weight" not in shapes:
        return None
    counts = []
    for k in range(5):
        pattern = re.compile(rf"block{k}\.\d+\.weight")
        counts.append(sum(1 for name, s in shapes.items() if pattern.fullmatch(name) and len(s) == 4))
    for name, cfg in VGG_CONFIGS.items():
        if [len(block) for block in cfg] == counts:
            return name
    raise CheckpointError(
        f"the weights look like a VGG with {counts} convolutions per block, which no zoo VGG has"
    )


def _resnet_a_arch(shapes: Shapes) -> str | None:
    """A three-stage CIFAR ResNet whose widening blocks have no shortcut weights: option A (``resnetN_a``)."""
    widening = shapes.get("layer2.0.conv1.weight", ())
    if (
        "conv1.weight" not in shapes
        or len(widening) != 4
        or widening[0] == widening[1]
        or _indices(shapes, "layer4.")
        or any(".downsample." in k for k in shapes)
    ):
        return None
    blocks, stem = len(_indices(shapes, "layer1.")), shapes["conv1.weight"][0]
    name = f"resnet{6 * blocks + 2}" + ("" if stem == 16 else f"w{stem}") + "_a"
    return _zoo_name(
        name, f"an option-A CIFAR ResNet with {blocks} blocks per stage and a stem of width {stem}"
    )


def _vgg_bn_arch(shapes: Shapes) -> str | None:
    """A CIFAR BN-VGG with a 512-512-classes head (``cifar_vggN_bn``, N = convolutions + 3)."""
    if "features.0.weight" not in shapes or tuple(shapes.get("classifier.0.weight", ())) != (512, 512):
        return None
    convs = sum(1 for k, s in shapes.items() if re.fullmatch(r"features\.\d+\.weight", k) and len(s) == 4)
    return _zoo_name(
        f"cifar_vgg{convs + 3}_bn", f"a CIFAR BN-VGG with {convs} convolutions and a 3-layer head"
    )


#: Family -> rule returning the zoo name (None when the keys are not of that family), tried in order.
ARCH_RULES: dict[str, Callable[[Shapes], str | None]] = {
    "torchvision": torchvision_arch,  # before "resnet": torchvision ResNets have conv1 and layer1 too
    "resnet_a": _resnet_a_arch,  # before "resnet": the same keys, less the shortcut weights
    "resnet": _resnet_arch,
    "wrn": _wrn_arch,
    "vgg": _vgg_arch,
    "vgg_bn": _vgg_bn_arch,
}
#: Keys of the classifier weight whose rows are the classes, by family.
CLASSIFIER_KEYS = (
    "fc.weight",
    "classifier.weight",
    "linear.weight",
    "classifier.1.weight",
    "classifier.6.weight",
)
_STEM_KEYS = ("conv1.weight", "block0.0.weight", "features.0.0.weight", "features.0.weight")


def inferred_num_classes(shapes: Shapes) -> int | None:
    """Return the row count of the classifier weight (:data:`CLASSIFIER_KEYS`), or None without one."""
    return next((shapes[k][0] for k in CLASSIFIER_KEYS if len(shapes.get(k, ())) == 2), None)


def inferred_in_chans(shapes: Shapes) -> int | None:
    """Return the input channels of the stem convolution, or None without one."""
    return next((shapes[k][1] for k in _STEM_KEYS if len(shapes.get(k, ())) == 4), None)


def inferred_zoo_arch(shapes: Shapes) -> str:
    """Return the zoo architecture of zoo-named ``shapes`` (the first rule of :data:`ARCH_RULES` that
    fits)."""
    for rule in ARCH_RULES.values():
        name = rule(shapes)
        if name is not None:
            return name
    raise CheckpointError(
        f"cannot tell the architecture from the weights: no zoo family ({', '.join(ARCH_RULES)}) matches "
        f"keys like {', '.join(list(shapes)[:MAX_LISTED])} ({len(shapes)} keys); pass arch=... (one of "
        f"{sorted(MODELS)})"
    )


def _inferred(shapes: Shapes) -> tuple[str, int, int]:
    """Return ``(arch, num_classes, in_chans)`` of zoo-named ``shapes``."""
    arch = inferred_zoo_arch(shapes)
    num_classes, in_chans = inferred_num_classes(shapes), inferred_in_chans(shapes)
    if num_classes is None or in_chans is None:
        raise CheckpointError(
            f"the weights look like {arch} but have no classifier or stem weight to size it"
        )
    return arch, num_classes, in_chans


def inferred_with_layout(shapes: Shapes) -> tuple[str, tuple[str, int, int]]:
    """Return ``(layout name, (arch, num_classes, in_chans))`` for the first layout that fits a zoo family.

    Raises
    ------
    CheckpointError
        The first layout's reason when none fits.
    """
    errors = []
    for name, zoo in zoo_shapes(shapes):
        try:
            return name, _inferred(zoo)
        except CheckpointError as exc:
            errors.append(str(exc))
    raise CheckpointError(errors[0] if errors else "no layout maps the keys without collisions")


def infer_arch(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, int, int]:
    """Return the zoo architecture, class count and input channels that a state_dict's keys and shapes fit.

    Wrapper prefixes are stripped and every layout of :data:`~tffd_viz.checkpoints.layouts.LAYOUTS` is tried.
    ResNets are told apart by the number of ``layer1.{i}`` blocks (depth ``6 n + 2``) and the stem width
    (32 -> ``x4``); WRNs by the number of ``block1.layer.{i}`` blocks (depth ``6 n + 4``) and the width
    of the first stage (``16 k``); VGGs by their convolutions per block. ``num_classes`` is the row
    count of ``fc.weight``/``classifier.weight``, ``in_chans`` the input channels of ``conv1.weight`` /
    ``block0.0.weight``.

    Parameters
    ----------
    state_dict : mapping str -> Tensor

    Returns
    -------
    (arch, num_classes, in_chans) : (str, int, int)

    Raises
    ------
    CheckpointError
        When no zoo architecture fits, naming the keys seen.
    """
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    if not shapes:
        raise CheckpointError("cannot infer the architecture of an empty state_dict")
    return inferred_with_layout(shapes)[1]
