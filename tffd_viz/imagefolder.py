"""Image folders at ImageNet resolution, decoded lazily: only the images asked for are ever read.

``<root>/train/<class>/*`` and ``<root>/test/<class>/*`` (or ``<root>/val/<class>/*`` when there is no
``test/``) load as the ``imagefolder`` dataset at ``image_size`` > 32 (:func:`tffd_viz.data.load_dataset`
with ``image_size=224``, which the app and ``train`` choose for the torchvision architectures):

* class names are the folder names of ``train/`` (sorted); the evaluation split may lack classes but may
  hold none that ``train/`` lacks;
* building a :class:`LazyImageSplit` lists nothing; its first ``len()`` or ``labels`` lists file names (no
  image is opened), and :meth:`LazyImageSplit.float01` decodes exactly the images at the indices asked for,
  on a few threads;
* the evaluation transform is torchvision's reference: resize the shorter side to ``round(size * 256 / 224)``
  (256 for 224) with bilinear (antialiased) resampling, centre crop ``size``, ImageNet mean/std
  (:func:`eval_transform`); training draws torchvision's ``RandomResizedCrop`` (scale 0.08-1, ratio 3/4-4/3)
  and a horizontal flip from pre-drawn uniforms (:func:`random_resized_crop_box`), so a seeded epoch is
  reproducible and independent of decoding order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from tffd_viz.errors import DataError
from tffd_viz.models.imagenet import IMAGENET_MEAN, IMAGENET_RESIZE, IMAGENET_STD

__all__ = [
    "EVAL_SPLITS",
    "MAX_DECODE",
    "RRC_ATTEMPTS",
    "RRC_RATIO",
    "RRC_SCALE",
    "LazyImageSplit",
    "eval_transform",
    "lazy_imagefolder",
    "random_resized_crop_box",
    "resize_side",
]

#: Folder names accepted for the evaluation split, tried in order.
EVAL_SPLITS: tuple[str, ...] = ("test", "val")
#: Most images one call may decode (a 224-pixel float batch of 4096 images is 2.4 GB).
MAX_DECODE = 4096
#: torchvision's RandomResizedCrop defaults.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_ATTEMPTS = 10
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def resize_side(size: int) -> int:
    """Shorter side the evaluation transform resizes to: ``round(size * 256 / 224)`` (256 for 224)."""
    return round(size * IMAGENET_RESIZE / 224)


def eval_transform(size: int) -> dict[str, Any]:
    """The evaluation transform at ``size`` as a card entry: resize, crop, interpolation, mean and std."""
    return {
        "resize": resize_side(size),
        "crop": int(size),
        "interpolation": "bilinear",
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }


def random_resized_crop_box(width: int, height: int, u: torch.Tensor) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` with its random numbers given.

    Parameters
    ----------
    width, height : int
        Size of the decoded image.
    u : Tensor (RRC_ATTEMPTS, 4)
        Uniforms in [0, 1) per attempt: area scale, log aspect ratio, top, left.

    Returns
    -------
    (top, left, h, w) : tuple of int
        The first attempt whose box fits the image, else torchvision's fallback (the central crop at the
        nearest allowed aspect ratio).
    """
    area = width * height
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    for s, r, ti, tj in u.tolist():
        target = area * (RRC_SCALE[0] + s * (RRC_SCALE[1] - RRC_SCALE[0]))
        aspect = math.exp(lo + r * (hi - lo))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return (
                min(int(ti * (height - h + 1)), height - h),
                min(int(tj * (width - w + 1)), width - w),
                h,
                w,
            )
    ratio = width / height
    if ratio < RRC_RATIO[0]:
        w, h = width, round(width / RRC_RATIO[0])
    elif ratio > RRC_RATIO[1]:
        h, w = height, round(height * RRC_RATIO[1])
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="tffd-decode")


def _open_rgb(path: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img = img.convert("RGBA") if img.mode in ("P", "PA", "LA") else img
            return img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {path}: {exc}") from None


def _to_uint8(img: Any) -> np.ndarray:
    return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)


def _decode_eval(path: str, size: int) -> np.ndarray:
    """``uint8 (3, size, size)``: shorter side to :func:`resize_side`, centre crop (torchvision's
    arithmetic)."""
    from PIL import Image

    img = _open_rgb(path)
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    side = resize_side(size)
    new_short, new_long = side, int(side * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.Resampling.BILINEAR)
    if new_w < size or new_h < size:  # torchvision's CenterCrop pads; a resize to >= size never needs it
        raise DataError(f"image {path} is {w}x{h}, too small to crop {size}x{size} after resizing")
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    return _to_uint8(img.crop((left, top, left + size, top + size)))


def _decode_rrc(path: str, size: int, u: torch.Tensor, flip: bool) -> np.ndarray:
    """``uint8 (3, size, size)``: :func:`random_resized_crop_box` resized to ``size``, mirrored when
    ``flip``."""
    from PIL import Image

    img = _open_rgb(path)
    top, left, h, w = random_resized_crop_box(img.size[0], img.size[1], u)
    img = img.crop((left, top, left + w, top + h)).resize((size, size), Image.Resampling.BILINEAR)
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _to_uint8(img)


def _listed(split_dir: Path, classes: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """File paths (sorted per class, classes in order) and labels of one split; opens no image."""
    present = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    unknown = sorted(set(present) - set(classes))
    if unknown:
        raise DataError(
            f"{split_dir} has class folder(s) {unknown[:5]} that the train split lacks "
            f"({len(classes)} classes: {list(classes)[:5]} ...)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for ci, cname in enumerate(classes):
        folder = split_dir / cname
        if not folder.is_dir():
            continue
        found = sorted(
            os.path.join(d, f)
            for d, _, files in os.walk(folder)
            for f in files
            if f.lower().endswith(_EXTENSIONS)
        )
        paths += found
        labels += [ci] * len(found)
    if not paths:
        raise DataError(f"no image files ({', '.join(_EXTENSIONS)}) under {split_dir}")
    return paths, np.asarray(labels, dtype=np.int64)


class LazyImageSplit(Dataset):
    """One split of an image folder, decoded on demand at ``image_size``; the in-memory split's interface.

    Parameters
    ----------
    folder : Path
        The split's folder (``<root>/train`` ...), holding one subfolder per class.
    classes : sequence of str
        Class names in label order.
    image_size : int
        Side of the square images returned.

    Attributes
    ----------
    mean, std : tuple of 3 floats
        ImageNet's; :meth:`normalized` applies them.
    """

    def __init__(self, folder: Path, classes: Sequence[str], image_size: int):
        self.folder = Path(folder)
        self.classes = list(classes)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(IMAGENET_MEAN), tuple(IMAGENET_STD)
        self._paths: list[str] | None = None
        self._labels: torch.Tensor | None = None

    def _list(self) -> None:
        if self._paths is None:
            paths, labels = _listed(self.folder, self.classes)
            self._paths, self._labels = paths, torch.from_numpy(labels)

    @property
    def paths(self) -> list[str]:
        """Every image file of the split, in index order (listed on first use)."""
        self._list()
        return self._paths  # type: ignore[return-value]

    @property
    def labels(self) -> torch.Tensor:
        """``int64 (N,)`` class indices (listed on first use)."""
        self._list()
        return self._labels  # type: ignore[return-value]

    @property
    def in_chans(self) -> int:
        return 3

    def __len__(self) -> int:
        return len(self.paths)

    def _positions(self, index: torch.Tensor | slice | Sequence[int] | None) -> list[int]:
        n = len(self)
        if index is None:
            positions = list(range(n))
        elif isinstance(index, slice):
            positions = list(range(n))[index]
        else:
            positions = [int(i) for i in torch.as_tensor(index).reshape(-1).tolist()]
        bad = [i for i in positions if not -n <= i < n]
        if bad:
            raise DataError(f"indices {bad[:5]} are out of range for the {n} images under {self.folder}")
        if len(positions) > MAX_DECODE:
            raise DataError(
                f"asked to decode {len(positions)} images of {self.folder} at once; at most {MAX_DECODE} "
                "(pass an index or slice)"
            )
        return positions

    def _decoded(self, jobs: list[tuple[Any, ...]], fn: Any) -> torch.Tensor:
        if not jobs:
            return torch.zeros((0, 3, self.image_size, self.image_size), dtype=torch.uint8)
        arrays = list(_pool().map(lambda job: fn(*job), jobs)) if len(jobs) > 1 else [fn(*jobs[0])]
        return torch.from_numpy(np.stack(arrays))

    def uint8(self, index: torch.Tensor | slice | Sequence[int] | None = None) -> torch.Tensor:
        """Return ``uint8 (n, 3, S, S)`` images at ``index`` with the evaluation transform
        (decodes only those)."""
        paths = self.paths
        return self._decoded([(paths[i], self.image_size) for i in self._positions(index)], _decode_eval)

    def float01(self, index: torch.Tensor | slice | Sequence[int] | None = None) -> torch.Tensor:
        """Return float32 ``(n, 3, S, S)`` images in [0, 1] at ``index`` (evaluation transform)."""
        return self.uint8(index).float().div_(255.0)

    def random_resized_crops01(
        self, index: torch.Tensor | Sequence[int], uniforms: torch.Tensor, flips: torch.Tensor | None
    ) -> torch.Tensor:
        """Return float32 ``(n, 3, S, S)`` training crops in [0, 1].

        Parameters
        ----------
        index : (n,) ints
        uniforms : Tensor (n, RRC_ATTEMPTS, 4)
            Per image, the random numbers of :func:`random_resized_crop_box`.
        flips : BoolTensor (n,) or None
        """
        positions = self._positions(index)
        if tuple(uniforms.shape) != (len(positions), RRC_ATTEMPTS, 4):
            raise DataError(
                f"uniforms must be ({len(positions)}, {RRC_ATTEMPTS}, 4), got {tuple(uniforms.shape)}"
            )
        paths = self.paths
        flip = [False] * len(positions) if flips is None else [bool(f) for f in flips.tolist()]
        jobs = [(paths[i], self.image_size, uniforms[k], flip[k]) for k, i in enumerate(positions)]
        return self._decoded(jobs, _decode_rrc).float().div_(255.0)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Return ``(x01 - mean) / std`` for a float batch ``(n, 3, H, W)`` in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def normalized(self, index: torch.Tensor | slice | Sequence[int] | None = None) -> torch.Tensor:
        """Return normalised float32 ``(n, 3, S, S)`` images at ``index`` (the evaluation transform)."""
        return self.normalize(self.float01(index))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalized([i])[0], int(self.labels[i])


@dataclass
class _Folders:
    train: Path
    test: Path
    classes: list[str]


def _folders(root: Path) -> _Folders:
    if not root.is_dir():
        what = (
            "is a file (zipped trees load at 32 pixels only; unpack it)"
            if root.exists()
            else "does not exist"
        )
        raise DataError(f"image folder {root} {what}")
    evaluation = next((root / s for s in EVAL_SPLITS if (root / s).is_dir()), None)
    if not (root / "train").is_dir() or evaluation is None:
        raise DataError(
            f"image folder {root} must hold train/<class>/* and test/<class>/* (or val/<class>/*) "
            f"subfolders; found {sorted(p.name for p in root.iterdir())[:10]}"
        )
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"no class folders under {root / 'train'}")
    return _Folders(root / "train", evaluation, classes)


def lazy_imagefolder(root: str | os.PathLike[str], image_size: int) -> dict[str, Any]:
    """Return the parts of a lazily decoded image-folder bundle (lists only the class folders).

    Returns
    -------
    dict
        ``train``, ``test`` (:class:`LazyImageSplit`; ``test`` reads ``test/``, else ``val/``), ``classes``,
        ``mean``, ``std`` (ImageNet's), ``source`` and ``extra`` (``image_size``, ``eval_split`` and the
        ``transform`` of :func:`eval_transform`).
    """
    if not isinstance(image_size, int) or isinstance(image_size, bool) or not 33 <= image_size <= 1024:
        raise DataError(
            f"image_size must be a whole number of pixels in [33, 1024] for the lazy image folder, "
            f"got {image_size!r}"
        )
    folders = _folders(Path(root))
    return {
        "train": LazyImageSplit(folders.train, folders.classes, image_size),
        "test": LazyImageSplit(folders.test, folders.classes, image_size),
        "classes": folders.classes,
        "mean": tuple(IMAGENET_MEAN),
        "std": tuple(IMAGENET_STD),
        "source": f"lazy:{root}",
        "extra": {
            "image_size": image_size,
            "eval_split": folders.test.name,
            "transform": eval_transform(image_size),
        },
    }
