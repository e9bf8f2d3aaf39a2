"""Images and models the CKA, extraction and scaling benchmarks run on (core library modules only)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tffd_viz.data import load_dataset
from tffd_viz.errors import DataError
from tffd_viz.models import create_model
from tffd_viz.train import augment_batch

__all__ = ["IMAGE_SOURCES", "BenchImages", "benchmark_images", "model_pair"]

IMAGE_SOURCES: tuple[str, ...] = ("auto", "cifar10", "digits")


@dataclass
class BenchImages:
    """Normalised images ``(n, C, 32, 32)`` float32 on the CPU, the class count and their source."""

    images: Tensor
    num_classes: int
    source: str


def _cifar10(n: int, root: str | None) -> BenchImages:
    bundle = load_dataset("cifar10", root)
    test = bundle.test
    if n > len(test):
        raise DataError(f"asked for {n} CIFAR-10 test images but {bundle.source} has {len(test)}")
    return BenchImages(
        test.normalized(slice(0, n)),
        len(bundle.classes),
        f"CIFAR-10 test images 0..{n - 1} ({bundle.source})",
    )


def _digits(n: int, seed: int) -> BenchImages:
    bundle = load_dataset("digits")
    pool = torch.cat([bundle.train.float01(), bundle.test.float01()])
    reps = -(-n // pool.shape[0])
    gen = torch.Generator().manual_seed(seed)
    base = pool.repeat(reps, 1, 1, 1)[:n]
    offsets = torch.randint(0, 5, (n, 2), generator=gen)
    offsets[: min(n, pool.shape[0])] = 2  # the first pass over the digits is unaugmented (centre crop)
    x01 = augment_batch(base, offsets, None, padding=2)
    return BenchImages(
        bundle.test.normalize(x01),
        len(bundle.classes),
        f"scikit-learn digits (train+test, {pool.shape[0]} images, 1x32x32) repeated to {n} with "
        f"random 32x32 crops after zero padding 2 (seed {seed}; first pass uncropped)",
    )


def benchmark_images(source: str, n: int, data_root: str | None, seed: int = 0) -> BenchImages:
    """Return ``n`` benchmark images from ``source``.

    Parameters
    ----------
    source : {"auto", "cifar10", "digits"}
        ``auto``: CIFAR-10 test images when ``data_root`` holds CIFAR-10, else digits.
    n : int
    data_root : str or None
        Where CIFAR-10 is looked for (see :func:`tffd_viz.data.load_dataset`).
    seed : int
        Seeds the digits augmentation.

    Raises
    ------
    DataError
        ``source="cifar10"`` without the data, or more images than the split has.
    """
    if source not in IMAGE_SOURCES:
        raise DataError(f"image source must be one of {IMAGE_SOURCES}, got {source!r}")
    if n < 4:
        raise DataError(f"need at least 4 images, got {n}")
    if source == "cifar10":
        return _cifar10(n, data_root)
    if source == "auto" and data_root is not None and n <= 10000:
        try:
            return _cifar10(n, data_root)
        except DataError:
            pass
    return _digits(n, seed)


def model_pair(
    arch: str, num_classes: int, in_chans: int, device: torch.device, seeds: tuple[int, int] = (0, 1)
) -> tuple[nn.Module, nn.Module]:
    """Two freshly initialised models (seeds 0 and 1) in eval mode on ``device`` (timings and equality checks
    do not depend on training)."""
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(create_model(arch, num_classes=num_classes, in_chans=in_chans).to(device).eval())
    return models[0], models[1]
