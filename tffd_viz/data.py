"""Datasets for tffd-viz: scikit-learn's digits (embedded default), CIFAR-10/100 and image folders.

Every dataset is held in memory as one image tensor (uint8 for decoded image files, float32 in
[0, 1] for digits) plus int64 labels, so deterministic sample batches and fast tensor-side
augmentation need no worker processes. :func:`load_dataset` returns the train and test splits,
class names and normalisation; :func:`sample_batch` returns the same normalised images for the same
``(dataset, split, n, seed)`` every time.

Where CIFAR comes from, given a data root (argument, else ``$TFFD_DATA``, else ``./data``), looked
for in this order: ``<root>/cifar-10-batches-py`` (``cifar-100-python``, torchvision's format),
``<root>/{train,test}`` (an image-folder tree), ``<root>/cifar10/`` (``cifar100/``, either form),
``<root>/cifar10.zip`` (``cifar100.zip``, then ``cifar100-jpeg.npz``). Decoded JPEG trees are
cached as ``.npz`` under ``$TFFD_CACHE`` (default ``~/.cache/tffd_viz``) so a second load takes
about a second.

At a larger ``image_size`` (224 for the torchvision architectures) the ``imagefolder`` dataset is not held
in memory: :mod:`tffd_viz.imagefolder` lists the files and decodes only the images asked for, with
torchvision's evaluation transform and ImageNet's mean/std (``val/`` is accepted beside ``test/``).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache, partial
from pathlib import Path
from typing import TypeAlias

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tffd_viz.errors import DataError

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "DATASETS",
    "SIZED_DATASETS",
    "DatasetBundle",
    "ImageDataset",
    "card_image_size",
    "default_data_root",
    "images_from_files",
    "load_dataset",
    "sample_batch",
    "sample_indices",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")
IMAGE_SIZE = 32


class ImageDataset(Dataset):
    """An in-memory image classification split.

    Parameters
    ----------
    images : Tensor (N, C, H, W)
        ``uint8`` in [0, 255] or ``float32`` in [0, 1].
    labels : Tensor (N,)
        ``int64`` class indices.
    mean, std : sequence of C floats
        Normalisation applied by :meth:`normalized` and ``__getitem__``.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float]
    ):
        if images.ndim != 4 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(
                f"images (N, C, H, W) and labels (N,) must match, got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    def float01(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Return images ``(n, C, H, W)`` as float32 in [0, 1] (all, or those at ``index``)."""
        imgs = self.images if index is None else self.images[index]
        return imgs.float().div_(255.0) if imgs.dtype == torch.uint8 else imgs.float()

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """Return ``(x01 - mean) / std`` for a float batch ``(n, C, H, W)`` in [0, 1]."""
        mean = torch.tensor(self.mean, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
        return (x01 - mean) / std

    def normalized(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Return normalised float32 images ``(n, C, H, W)`` (the test transform)."""
        return self.normalize(self.float01(index))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.normalized(slice(i, i + 1))[0], int(self.labels[i])


@dataclass
class DatasetBundle:
    """Train and test splits of one dataset with its class names and normalisation."""

    name: str
    train: ImageDataset
    test: ImageDataset
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    in_chans: int
    source: str = ""
    extra: dict = field(default_factory=dict)

    def split(self, split: str) -> ImageDataset:
        """Return the ``"train"`` or ``"test"`` split."""
        if split not in ("train", "test"):
            raise DataError(f"split must be 'train' or 'test', got {split!r}")
        return self.train if split == "train" else self.test


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


def _load_digits(root: str | None = None, download: bool = False) -> DatasetBundle:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).div_(16.0).unsqueeze(1)  # (1797, 1, 8, 8)
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False).clamp_(0, 1)
    y = torch.tensor(bunch.target, dtype=torch.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, stratify=bunch.target, random_state=0
    )
    idx_train, idx_test = torch.as_tensor(idx_train), torch.as_tensor(idx_test)
    mean = (float(x[idx_train].mean()),)
    std = (float(x[idx_train].std()),)
    return DatasetBundle(
        name="digits",
        train=ImageDataset(x[idx_train], y[idx_train], mean, std),
        test=ImageDataset(x[idx_test], y[idx_test], mean, std),
        classes=[str(c) for c in range(10)],
        mean=mean,
        std=std,
        in_chans=1,
        source="sklearn.datasets.load_digits",
    )


# --------------------------------------------------------------------------------------------------
# image decoding (folders, zips, packed npz)
# --------------------------------------------------------------------------------------------------


def _decode_image(data: bytes, where: str, size: int = IMAGE_SIZE, mode: str = "RGB") -> np.ndarray:
    """Decode one image file's bytes to ``uint8 (C, size, size)``; converts mode, resizes."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("RGBA").convert(mode) if img.mode in ("P", "PA", "LA") else img.convert(mode)
            if img.size != (size, size):
                img = img.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"cannot decode image {where}: {exc}") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def images_from_files(
    items: Sequence[tuple[str, Callable[[], bytes]]], size: int = IMAGE_SIZE, mode: str = "RGB"
) -> tuple[np.ndarray, list[str]]:
    """Decode image files, skipping (with one warning) those that do not decode.

    Parameters
    ----------
    items : sequence of (name, read_bytes)
    size : int
        Output side length.
    mode : str
        PIL mode, ``"RGB"`` or ``"L"``.

    Returns
    -------
    images : ndarray uint8 (n_ok, C, size, size)
    skipped : list of str
        Names that could not be decoded.
    """
    arrays, skipped = [], []
    for name, read in items:
        try:
            arrays.append(_decode_image(read(), name, size, mode))
        except DataError:
            skipped.append(name)
    chans = 1 if mode == "L" else 3
    images = np.stack(arrays) if arrays else np.zeros((0, chans, size, size), np.uint8)
    return images, skipped


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


#: One image file of a class tree: ``(where, class index, read the bytes)``.
_Entry: TypeAlias = tuple[str, int, Callable[[], bytes]]


def _tree_entries_dir(split_dir: Path) -> tuple[list[str], list[_Entry]]:
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    entries: list[_Entry] = []
    for ci, cname in enumerate(classes):
        files = sorted(f for f in (split_dir / cname).rglob("*") if f.is_file() and _is_image_name(f.name))
        entries += [(str(f), ci, f.read_bytes) for f in files]
    return classes, entries


def _tree_entries_zip(zf: zipfile.ZipFile, split: str) -> tuple[list[str], list[_Entry]]:
    by_class: dict[str, list[str]] = {}
    for name in zf.namelist():
        parts = name.strip("/").split("/")
        # allow an optional top folder: [top/]split/class/file
        if split in parts[:-2]:
            k = parts.index(split)
            if len(parts) == k + 3 and _is_image_name(parts[-1]):
                by_class.setdefault(parts[k + 1], []).append(name)
    classes = sorted(by_class)
    entries: list[_Entry] = []
    for ci, cname in enumerate(classes):
        entries += [(f"{zf.filename}:{n}", ci, partial(zf.read, n)) for n in sorted(by_class[cname])]
    return classes, entries


def _split_from_entries(entries: list[_Entry], where: str, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    images, skipped = images_from_files([(n, r) for n, _, r in entries], mode=mode)
    labels = np.array([c for n, c, _ in entries if n not in set(skipped)], dtype=np.int64)
    if skipped:
        warnings.warn(
            f"{len(skipped)} file(s) under {where} are not readable images and were skipped, e.g. "
            f"{skipped[:3]}",
            stacklevel=3,
        )
    if len(images) == 0:
        raise DataError(f"no readable images under {where}")
    return torch.from_numpy(images), torch.from_numpy(labels)


def _cache_dir() -> Path:
    return Path(os.environ.get("TFFD_CACHE", Path.home() / ".cache" / "tffd_viz"))


def _cached_arrays(source: Path, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Return the arrays ``build()`` makes for ``source``, cached on disk by path, size and mtime.

    For a folder, the size and mtime of every file under it are part of the key.
    """
    st = source.stat()
    stamp = f"{st.st_size}|{st.st_mtime_ns}"
    if source.is_dir():  # a folder's own stat does not change when files in its subfolders do
        stamp += "".join(
            f"|{f.relative_to(source)}:{fs.st_size}:{fs.st_mtime_ns}"
            for f in sorted(source.rglob("*"))
            if f.is_file()
            for fs in [f.stat()]
        )
    key = hashlib.sha256(f"{source.resolve()}|{stamp}|v1".encode()).hexdigest()[:16]
    path = _cache_dir() / f"{source.name}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError):
            pass
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, allow_pickle=False, **arrays)
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs time
    return arrays


def _image_tree_arrays(source: Path, mode: str) -> dict[str, np.ndarray]:
    """Decode ``{train,test}/<class>/*`` from a folder or a zip into uint8 arrays and labels."""

    def build() -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        classes_seen: list[str] | None = None
        zf = None
        try:
            zf = zipfile.ZipFile(source) if source.is_file() else None
            for split in ("train", "test"):
                if zf is not None:
                    classes, entries = _tree_entries_zip(zf, split)
                else:
                    classes, entries = _tree_entries_dir(source / split)
                if not classes:
                    raise DataError(f"no class folders under {source}/{split}")
                if classes_seen is not None and classes != classes_seen:
                    raise DataError(
                        f"train and test class folders differ under {source}: "
                        f"{sorted(set(classes) ^ set(classes_seen))[:5]}"
                    )
                classes_seen = classes
                empty = [c for i, c in enumerate(classes) if not any(e[1] == i for e in entries)]
                if empty:
                    warnings.warn(
                        f"class folder(s) {empty[:5]} under {source}/{split} hold no images", stacklevel=4
                    )
                x, y = _split_from_entries(entries, f"{source}/{split}", mode)
                out[f"{split}_images"], out[f"{split}_labels"] = x.numpy(), y.numpy()
            out["classes"] = np.array(classes_seen)
        except zipfile.BadZipFile as exc:
            raise DataError(f"{source} is not a readable zip file: {exc}") from exc
        finally:
            if zf is not None:
                zf.close()
        return out

    return _cached_arrays(source, build)


def _packed_npz_arrays(source: Path) -> dict[str, np.ndarray]:
    """Decode the packed ``cifar100-jpeg.npz`` (JPEG bytes end to end plus offsets)."""

    def build() -> dict[str, np.ndarray]:
        try:
            z = np.load(source, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {source}: {exc}") from exc
        out: dict[str, np.ndarray] = {}
        with z:
            for split in ("train", "test"):
                jpeg, off = z[f"{split}_jpeg"], z[f"{split}_offsets"]
                items = [
                    (f"{source}:{split}[{i}]", (lambda a=off[i], b=off[i + 1], j=jpeg: j[a:b].tobytes()))
                    for i in range(len(off) - 1)
                ]
                images, skipped = images_from_files(items)
                if skipped:
                    raise DataError(f"{len(skipped)} image(s) in {source} do not decode, e.g. {skipped[:3]}")
                out[f"{split}_images"], out[f"{split}_labels"] = images, z[f"{split}_labels"].astype(np.int64)
            out["classes"] = z["classes"].astype(str)
        return out

    return _cached_arrays(source, build)


def _torchvision_cifar_arrays(root: Path, name: str, download: bool) -> dict[str, np.ndarray]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    out: dict[str, np.ndarray] = {}
    try:
        for split in ("train", "test"):
            ds = cls(str(root), train=split == "train", download=download)
            out[f"{split}_images"] = np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))
            out[f"{split}_labels"] = np.asarray(ds.targets, dtype=np.int64)
        out["classes"] = np.array(ds.classes)
    except (RuntimeError, OSError) as exc:
        raise DataError(f"cannot load {name} from {root} through torchvision: {exc}") from exc
    return out


_CIFAR_LAYOUT = {
    "cifar10": ("cifar-10-batches-py", "cifar10", ("cifar10.zip",)),
    "cifar100": ("cifar-100-python", "cifar100", ("cifar100.zip", "cifar100-jpeg.npz")),
}


def default_data_root() -> Path:
    """Return the data root: ``$TFFD_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("TFFD_DATA", "data"))


def _locate_cifar(name: str, root: Path) -> tuple[str, Path]:
    """Return ``(kind, path)`` of the first CIFAR source found under ``root``; raise naming all tries."""
    pickled, subdir, packed = _CIFAR_LAYOUT[name]
    tried: list[Path] = []
    for base in (root, root / subdir):
        cands = [("torchvision", base / pickled), ("tree", base)]
        for kind, path in cands:
            tried.append(path if kind == "torchvision" else path / "{train,test}")
            if kind == "torchvision" and path.is_dir():
                return "torchvision", base
            if kind == "tree" and (path / "train").is_dir() and (path / "test").is_dir():
                return "tree", path
    for fname in packed:
        path = root / fname
        tried.append(path)
        if path.is_file():
            return ("npz" if fname.endswith(".npz") else "tree"), path
    raise DataError(
        f"{name} not found under data root {root}; looked for: "
        + ", ".join(str(t) for t in tried)
        + f". Download it with load_dataset({name!r}, root=..., download=True) (torchvision), or point "
        "root / $TFFD_DATA at a folder holding one of these."
    )


def _cifar_loader(name: str) -> Callable[[str | None, bool], DatasetBundle]:
    mean, std = (CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else (CIFAR100_MEAN, CIFAR100_STD)

    def load(root: str | None = None, download: bool = False) -> DatasetBundle:
        base = Path(root) if root is not None else default_data_root()
        if download:
            base.mkdir(parents=True, exist_ok=True)
            kind, path, arrays = "torchvision", base, _torchvision_cifar_arrays(base, name, True)
        else:
            kind, path = _locate_cifar(name, base)
            arrays = _SOURCE_READERS[kind](path, name)
        return _bundle_from_arrays(name, arrays, mean, std, f"{kind}:{path}")

    return load


_SOURCE_READERS: dict[str, Callable[[Path, str], dict[str, np.ndarray]]] = {
    "torchvision": lambda path, name: _torchvision_cifar_arrays(path, name, False),
    "tree": lambda path, name: _image_tree_arrays(path, "RGB"),
    "npz": lambda path, name: _packed_npz_arrays(path),
}


def _bundle_from_arrays(
    name: str,
    arrays: dict[str, np.ndarray],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    source: str,
) -> DatasetBundle:
    train_x = torch.from_numpy(np.ascontiguousarray(arrays["train_images"]))
    test_x = torch.from_numpy(np.ascontiguousarray(arrays["test_images"]))
    if mean is None or std is None:
        f = train_x.float().div_(255.0)
        mean = tuple(f.mean(dim=(0, 2, 3)).tolist())
        std = tuple(f.std(dim=(0, 2, 3)).clamp_min(1e-6).tolist())
    train = ImageDataset(train_x, torch.from_numpy(arrays["train_labels"]), mean, std)
    test = ImageDataset(test_x, torch.from_numpy(arrays["test_labels"]), mean, std)
    return DatasetBundle(
        name=name,
        train=train,
        test=test,
        classes=[str(c) for c in arrays["classes"]],
        mean=tuple(mean),
        std=tuple(std),
        in_chans=int(train_x.shape[1]),
        source=source,
    )


def _load_imagefolder(root: str | None = None, download: bool = False) -> DatasetBundle:
    if root is None:
        raise DataError(
            "the imagefolder dataset needs root=<folder or zip with train/<class>/* and test/<class>/*>"
        )
    path = Path(root)
    if not path.exists():
        raise DataError(f"image folder {path} does not exist")
    if path.is_dir() and not ((path / "train").is_dir() and (path / "test").is_dir()):
        raise DataError(
            f"image folder {path} must hold train/<class>/* and test/<class>/* subfolders; "
            f"found {sorted(p.name for p in path.iterdir())[:10]}"
        )
    arrays = _image_tree_arrays(path, "RGB")
    return _bundle_from_arrays("imagefolder", arrays, None, None, f"tree:{path}")


DATASETS: dict[str, Callable[[str | None, bool], DatasetBundle]] = {
    "digits": _load_digits,
    "cifar10": _cifar_loader("cifar10"),
    "cifar100": _cifar_loader("cifar100"),
    "imagefolder": _load_imagefolder,
}


def _load_lazy_imagefolder(root: str | None, image_size: int) -> DatasetBundle:
    from tffd_viz.imagefolder import lazy_imagefolder

    if root is None:
        raise DataError("the imagefolder dataset needs root=<folder with train/<class>/* and test/<class>/*>")
    parts = lazy_imagefolder(root, image_size)
    return DatasetBundle(
        name="imagefolder",
        train=parts["train"],
        test=parts["test"],
        classes=parts["classes"],
        mean=parts["mean"],
        std=parts["std"],
        in_chans=3,
        source=parts["source"],
        extra=parts["extra"],
    )


#: Datasets that load at other image sizes than 32: name -> loader(root, image_size), decoded lazily.
SIZED_DATASETS: dict[str, Callable[[str | None, int], DatasetBundle]] = {
    "imagefolder": _load_lazy_imagefolder,
}


@lru_cache(maxsize=6)
def _load_cached(
    name: str, root: str | None, download: bool, data_env: str | None = None, image_size: int | None = None
) -> DatasetBundle:
    # data_env ($TFFD_DATA) only keys the cache: root=None resolves through it at load time
    if image_size not in (None, IMAGE_SIZE):
        if name not in SIZED_DATASETS:
            raise DataError(
                f"dataset {name!r} loads at {IMAGE_SIZE}x{IMAGE_SIZE} only, not at image_size="
                f"{image_size}; datasets at other sizes: {sorted(SIZED_DATASETS)}"
            )
        return SIZED_DATASETS[name](root, image_size)
    return DATASETS[name](root, download)


def card_image_size(card: dict, name: str) -> int | None:
    """The ``image_size`` to load dataset ``name`` at for a model with ``card``: the card's ``input_size``
    where the dataset has sized forms (:data:`SIZED_DATASETS`; 224 for the torchvision architectures) and it
    is above 32, else None (the in-memory 32x32 dataset)."""
    size = card.get("input_size")
    if name in SIZED_DATASETS and isinstance(size, int) and not isinstance(size, bool) and size > IMAGE_SIZE:
        return size
    return None


def load_dataset(
    name: str, root: str | os.PathLike | None = None, download: bool = False, image_size: int | None = None
) -> DatasetBundle:
    """Return the train/test splits, class names and normalisation of a dataset.

    Parameters
    ----------
    name : str
        ``"digits"`` (embedded, no files), ``"cifar10"``, ``"cifar100"`` or ``"imagefolder"``.
    root : path, optional
        Data root (CIFAR: see the module docstring; imagefolder: the tree or its zip). Default
        ``$TFFD_DATA`` or ``./data``.
    download : bool
        CIFAR only: fetch it through torchvision into ``root`` (needs network).
    image_size : int, optional
        None or 32: the in-memory 32x32 dataset. Larger (``imagefolder`` only, e.g. 224): the lazily decoded
        image folder of :mod:`tffd_viz.imagefolder` (resize ``round(S * 256 / 224)``, centre crop ``S``,
        ImageNet mean/std; ``test/`` or ``val/``).

    Returns
    -------
    DatasetBundle
        ``train``/``test`` (:class:`ImageDataset`, images ``(N, C, 32, 32)``; or
        :class:`tffd_viz.imagefolder.LazyImageSplit` at ``(N, 3, S, S)``), ``classes``, ``mean``,
        ``std``, ``in_chans`` (``extra`` holds the transform of a lazy folder). Loaded bundles are kept in
        a small in-process cache; treat them as read-only.
    """
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)}")
    return _load_cached(
        name,
        None if root is None else str(root),
        bool(download),
        os.environ.get("TFFD_DATA") if root is None else None,
        None if image_size in (None, IMAGE_SIZE) else image_size,
    )


def sample_indices(size: int, n: int, seed: int = 0) -> torch.Tensor:
    """Return the first ``n`` entries of ``torch.randperm(size)`` drawn with ``torch.Generator(seed)``."""
    if n < 1 or n > size:
        raise DataError(f"cannot sample n={n} images from a split of {size} images (1 <= n <= {size})")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(size, generator=gen)[:n]


def sample_batch(
    name: str,
    split: str = "test",
    n: int = 256,
    seed: int = 0,
    root: str | os.PathLike | None = None,
    return_indices: bool = False,
    image_size: int | None = None,
) -> tuple[torch.Tensor, ...]:
    """Return a deterministic, normalised sample batch of a dataset split.

    Parameters
    ----------
    name, root : see :func:`load_dataset`
    split : ``"train"`` or ``"test"``
    n : int
        Batch size; larger than the split raises :class:`DataError` naming the split size.
    seed : int
    image_size : int, optional
        See :func:`load_dataset`; a lazy image folder decodes only the ``n`` images drawn.

    Returns
    -------
    images : Tensor float32 (n, in_chans, S, S)
        Normalised with the test transform (``S`` = 32, or ``image_size``).
    labels : Tensor int64 (n,)
    indices : Tensor int64 (n,)
        Positions in the split, only when ``return_indices``.
    """
    ds = load_dataset(name, root, image_size=image_size).split(split)
    idx = sample_indices(len(ds), n, seed)
    images, labels = ds.normalized(idx), ds.labels[idx].clone()
    return (images, labels, idx) if return_indices else (images, labels)
