"""Tests of tffd_viz.data: digits, image folders/zips, CIFAR sources, deterministic sample batches.

Image trees are built in ``tmp_path`` with PIL; expected pixels come from solid colours (exact after
any resize) or from decoding the same bytes with PIL directly. Tests that read the shared CIFAR
files are marked ``data`` and skip where conftest's ``CIFAR_ROOT`` (``$TFFD_DATA``, else ``../shared/data``)
lacks them.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CIFAR_ROOT
from PIL import Image

import tffd_viz.data as data_mod
from tffd_viz.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    ImageDataset,
    default_data_root,
    load_dataset,
    sample_batch,
    sample_indices,
)
from tffd_viz.errors import DataError, TffdVizError

SHARED_DATA = Path(CIFAR_ROOT)  # $TFFD_DATA, else ../shared/data beside the project
# A GIF whose image descriptor claims 65535 x 65535 pixels: PIL raises DecompressionBombError on open.
BOMB_GIF = (
    b"GIF89a" + (30000).to_bytes(2, "little") * 2 + b"\x00\x00\x00,\x00\x00\x00\x00\xff\xff\xff\xff"
    b"\x00\x02\x02D\x01\x00;"
)


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch) -> Iterator[Path]:
    """An empty on-disk cache under tmp_path and an empty in-process cache (before and after)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("TFFD_CACHE", str(cache))
    data_mod._load_cached.cache_clear()
    yield cache
    data_mod._load_cached.cache_clear()


def chw(img: Image.Image) -> np.ndarray:
    """``uint8 (3, H, W)`` of an RGB PIL image."""
    return np.asarray(img.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def noise_image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8), "RGB")


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return root


def zip_files(path: Path, files: dict[str, bytes], top: str = "", dirs: bool = False) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        if dirs:
            for d in sorted({str(Path(top, rel).parent) + "/" for rel in files}):
                zf.writestr(d, b"")
        for rel, content in files.items():
            zf.writestr(str(Path(top, rel)), content)
    return path


def mixed_tree_files() -> tuple[dict[str, bytes], dict[str, list[np.ndarray]]]:
    """Files of a tiny tree with odd sizes and modes, junk files, and the expected (3, 32, 32) arrays.

    Class folders sort as ant (0), zebra (1); files sort by name within a class.
    """
    palette = Image.new("P", (17, 23), 1)
    palette.putpalette([0, 0, 0, 5, 250, 100] + [0] * 762)
    split = Image.new("RGB", (17, 23), (255, 0, 0))
    split.paste((0, 0, 255), (9, 0, 17, 23))  # left part red, right part blue
    solid = {
        c: np.broadcast_to(np.array(c, np.uint8)[:, None, None], (3, 32, 32))
        for c in [(200, 10, 30), (77, 77, 77), (10, 20, 30), (5, 250, 100), (0, 128, 255), (40, 40, 40)]
    }
    files = {
        "train/ant/a_rgb.png": png(Image.new("RGB", (17, 23), (200, 10, 30))),
        "train/ant/b_gray.png": png(Image.new("L", (23, 17), 77)),
        "train/ant/c_rgba.png": png(Image.new("RGBA", (17, 23), (10, 20, 30, 128))),
        "train/ant/d_palette.png": png(palette),
        "train/ant/e_split.png": png(split),
        "train/ant/notes.txt": b"not an image",
        "train/ant/zz_broken.jpg": np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8).tobytes(),
        "train/zebra/a.png": png(Image.new("RGB", (32, 32), (0, 128, 255))),
        "train/zebra/b.bmp": chw_to_bmp(np.full((3, 9, 5), 40, np.uint8)),
        "test/ant/a.png": png(Image.new("RGB", (5, 40), (200, 10, 30))),
        "test/zebra/a.png": png(Image.new("L", (32, 32), 77)),
    }
    expected = {
        "train": [
            solid[(200, 10, 30)],
            solid[(77, 77, 77)],
            solid[(10, 20, 30)],
            solid[(5, 250, 100)],
            None,
            solid[(0, 128, 255)],
            solid[(40, 40, 40)],
        ],
        "test": [solid[(200, 10, 30)], solid[(77, 77, 77)]],
    }
    return files, expected


def chw_to_bmp(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr.transpose(1, 2, 0), "RGB").save(buf, "BMP")
    return buf.getvalue()


def check_mixed_tree(bundle) -> None:
    _, expected = mixed_tree_files()
    assert bundle.classes == ["ant", "zebra"]
    assert bundle.in_chans == 3
    assert bundle.train.labels.tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert bundle.test.labels.tolist() == [0, 1]
    for split in ("train", "test"):
        ds = bundle.split(split)
        assert ds.images.dtype == torch.uint8 and tuple(ds.images.shape[1:]) == (3, 32, 32)
        for i, want in enumerate(expected[split]):
            if want is not None:
                np.testing.assert_array_equal(ds.images[i].numpy(), want, err_msg=f"{split}[{i}]")
    # the red | blue image: resized as (C, H, W), left column red, right column blue
    split_img = bundle.train.images[4].numpy()
    np.testing.assert_array_equal(split_img[:, :, 0], np.broadcast_to([[255], [0], [0]], (3, 32)))
    np.testing.assert_array_equal(split_img[:, :, 31], np.broadcast_to([[0], [0], [255]], (3, 32)))
    # normalisation: per-channel mean and (unbiased) std of the train split in [0, 1]
    x = bundle.train.images.numpy().astype(np.float64) / 255.0
    np.testing.assert_allclose(bundle.mean, x.mean(axis=(0, 2, 3)), rtol=1e-5)
    np.testing.assert_allclose(bundle.std, x.std(axis=(0, 2, 3), ddof=1), rtol=1e-5)
    assert bundle.train.mean == bundle.test.mean == bundle.mean


# --------------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_digits_split_sizes_and_range(digits):
    assert (len(digits.train), len(digits.test)) == (1437, 360)
    assert digits.in_chans == 1 and digits.classes == [str(i) for i in range(10)]
    for ds in (digits.train, digits.test):
        assert ds.images.dtype == torch.float32 and tuple(ds.images.shape[1:]) == (1, 32, 32)
        assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
        assert ds.labels.dtype == torch.int64
    assert float(digits.train.images.max()) == 1.0  # uses the full [0, 1] range


def test_digits_are_sklearn_digits_split_stratified(digits):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = F.interpolate(
        torch.tensor(bunch.images, dtype=torch.float32).div(16).unsqueeze(1),
        size=(32, 32),
        mode="bilinear",
        align_corners=False,
    ).clamp(0, 1)
    want = Counter((img.numpy().tobytes(), int(y)) for img, y in zip(x, bunch.target))
    got = Counter(
        (img.numpy().tobytes(), int(y))
        for ds in (digits.train, digits.test)
        for img, y in zip(ds.images, ds.labels)
    )
    assert got == want  # every image once, with its label, in exactly one split
    totals = np.bincount(bunch.target, minlength=10)
    in_test = np.bincount(digits.test.labels.numpy(), minlength=10)
    assert np.all(np.abs(in_test - 0.2 * totals) <= 1), (in_test, totals)


def test_digits_normalisation_from_train_split(digits):
    x = digits.train.images.numpy().astype(np.float64)
    assert digits.mean == pytest.approx((x.mean(),), rel=1e-6)
    assert digits.std == pytest.approx((x.std(ddof=1),), rel=1e-6)
    assert digits.train.mean == digits.test.mean == digits.mean
    assert digits.train.std == digits.test.std == digits.std
    xt = digits.test.images.numpy().astype(np.float64)
    assert abs(xt.mean() - x.mean()) > 1e-6  # the statistics really are the train split's


def test_image_dataset_methods(digits):
    ds = digits.test
    img, label = ds[5]
    m, s = digits.mean[0], digits.std[0]
    torch.testing.assert_close(img, (ds.images[5] - m) / s)
    assert label == int(ds.labels[5]) and isinstance(label, int)
    torch.testing.assert_close(ds.normalized(slice(0, 3)), (ds.images[:3] - m) / s)
    u8 = ImageDataset(
        torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8), torch.tensor([1]), [0.5], [0.25]
    )
    torch.testing.assert_close(u8.float01(), torch.tensor([[[[0.0, 1.0], [0.2, 0.4]]]]))
    torch.testing.assert_close(u8.normalized(), torch.tensor([[[[-2.0, 2.0], [-1.2, -0.4]]]]))
    with pytest.raises(DataError, match=r"\(2, 1, 2, 2\).*\(3,\)"):
        ImageDataset(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), [0.0], [1.0])
    with pytest.raises(DataError, match="validation"):
        digits.split("validation")


def test_sample_batch_deterministic_and_restated(digits):
    x1, y1 = sample_batch("digits", "test", n=16, seed=3)
    x2, y2 = sample_batch("digits", "test", n=16, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.dtype == torch.float32 and y1.dtype == torch.int64
    assert x1.shape == (16, 1, 32, 32) and y1.shape == (16,)
    x3, _ = sample_batch("digits", "test", n=16, seed=4)
    assert not torch.equal(x1, x3)
    # the first n of torch.randperm drawn with Generator(seed), normalised with the train statistics
    idx = torch.randperm(360, generator=torch.Generator().manual_seed(3))[:16]
    assert torch.equal(y1, digits.test.labels[idx])
    torch.testing.assert_close(x1, (digits.test.images[idx] - digits.mean[0]) / digits.std[0])
    xi, yi, ii = sample_batch("digits", "test", n=16, seed=3, return_indices=True)
    assert torch.equal(ii, idx) and torch.equal(xi, x1) and torch.equal(yi, y1)
    assert torch.equal(sample_indices(360, 16, 3), idx)
    _, _, full = sample_batch("digits", "train", n=1437, seed=0, return_indices=True)
    assert sorted(full.tolist()) == list(range(1437))


def test_sample_batch_errors():
    with pytest.raises(DataError, match=r"n=361 .* 360 images"):
        sample_batch("digits", "test", n=361)
    with pytest.raises(DataError, match="1437"):
        sample_batch("digits", "train", n=5000)
    with pytest.raises(DataError, match="n=0"):
        sample_batch("digits", "test", n=0)
    with pytest.raises(DataError, match="split"):
        sample_batch("digits", "val", n=4)
    with pytest.raises(DataError, match=r"'mnist'.*cifar10.*digits"):
        load_dataset("mnist")
    assert issubclass(DataError, TffdVizError) and set(DATASETS) == {
        "digits",
        "cifar10",
        "cifar100",
        "imagefolder",
    }


# --------------------------------------------------------------------------------------------------
# image folders and zips
# --------------------------------------------------------------------------------------------------


def test_imagefolder_mixed_modes_and_junk(tmp_path, fresh_cache):
    files, _ = mixed_tree_files()
    root = write_files(tmp_path / "tree", files)
    with pytest.warns(UserWarning, match=r"1 file\(s\) .*not readable.*zz_broken\.jpg") as record:
        bundle = load_dataset("imagefolder", root)
    assert not any("notes.txt" in str(w.message) for w in record)
    check_mixed_tree(bundle)
    assert bundle.source == f"tree:{root}"
    assert load_dataset("imagefolder", str(root)) is bundle  # in-process cache


@pytest.mark.parametrize(("top", "dirs"), [("", False), ("mydata", True)])
def test_imagefolder_zip_loads_the_same(tmp_path, fresh_cache, top, dirs):
    files, _ = mixed_tree_files()
    archive = zip_files(tmp_path / "tree.zip", files, top=top, dirs=dirs)
    with pytest.warns(UserWarning, match=r"zz_broken\.jpg"):
        bundle = load_dataset("imagefolder", archive)
    check_mixed_tree(bundle)
    with pytest.warns(UserWarning, match=r"zz_broken\.jpg"):
        folder = load_dataset("imagefolder", write_files(tmp_path / "tree", files))
    assert torch.equal(bundle.train.images, folder.train.images)
    assert torch.equal(bundle.test.labels, folder.test.labels)


def test_imagefolder_disk_cache_and_change_detection(tmp_path, fresh_cache):
    files, _ = mixed_tree_files()
    root = write_files(tmp_path / "tree", files)
    with pytest.warns(UserWarning, match="not readable images"):
        first = load_dataset("imagefolder", root)
    assert len(list(fresh_cache.glob("tree-*.npz"))) == 1
    data_mod._load_cached.cache_clear()
    again = load_dataset("imagefolder", root)  # from the disk cache
    assert torch.equal(again.train.images, first.train.images) and again.classes == first.classes
    # changing a file inside a class folder must not serve stale pixels
    (root / "train/zebra/a.png").write_bytes(png(Image.new("RGB", (7, 3), (1, 2, 3))))
    data_mod._load_cached.cache_clear()
    with pytest.warns(UserWarning, match="not readable images"):
        changed = load_dataset("imagefolder", root)
    assert changed.train.images[5, :, 0, 0].tolist() == [1, 2, 3]


def test_imagefolder_empty_class_and_corrupt_headers_warn(tmp_path, fresh_cache):
    files = {
        "train/ant/a.png": png(Image.new("RGB", (32, 32), (1, 1, 1))),
        "train/ant/bomb.gif": BOMB_GIF,
        "train/zebra/a.png": png(Image.new("RGB", (32, 32), (2, 2, 2))),
        "test/ant/a.png": png(Image.new("RGB", (32, 32), (3, 3, 3))),
        "test/zebra/a.png": png(Image.new("RGB", (32, 32), (4, 4, 4))),
    }
    root = write_files(tmp_path / "tree", files)
    (root / "train/bird").mkdir()
    (root / "test/bird").mkdir()
    # the inner context takes the bomb's warning and passes the other on to the outer one
    with (
        pytest.warns(UserWarning, match=r"\['bird'\] under .* hold no images"),
        pytest.warns(UserWarning, match=r"not readable images .*bomb\.gif"),
    ):
        bundle = load_dataset("imagefolder", root)
    assert bundle.classes == ["ant", "bird", "zebra"]
    assert bundle.train.labels.tolist() == [0, 2] and bundle.test.labels.tolist() == [0, 2]
    assert bundle.train.images[:, 0, 0, 0].tolist() == [1, 2]


def test_imagefolder_errors(tmp_path, fresh_cache):
    missing = tmp_path / "no_such_folder"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        load_dataset("imagefolder", missing)
    with pytest.raises(DataError, match="needs root"):
        load_dataset("imagefolder")
    only_train = write_files(tmp_path / "only_train", {"train/a/x.png": png(Image.new("RGB", (4, 4)))})
    with pytest.raises(
        DataError, match=r"only_train must hold train/<class>/\* and test/<class>/\*.*'train'"
    ):
        load_dataset("imagefolder", only_train)
    archive = zip_files(tmp_path / "only_train.zip", {"train/a/x.png": png(Image.new("RGB", (4, 4)))})
    with pytest.raises(DataError, match=r"no class folders under .*only_train\.zip/test"):
        load_dataset("imagefolder", archive)
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"this is not a zip archive")
    with pytest.raises(DataError, match=r"fake\.zip is not a readable zip"):
        load_dataset("imagefolder", not_zip)
    junk_only = write_files(tmp_path / "junk", {"train/a/x.jpg": b"garbage", "test/a/y.png": b"garbage"})
    with (
        pytest.warns(UserWarning, match="not readable images"),
        pytest.raises(DataError, match="no readable images under"),
    ):
        load_dataset("imagefolder", junk_only)
    mismatch = write_files(
        tmp_path / "mismatch",
        {"train/a/x.png": png(Image.new("RGB", (4, 4))), "test/b/x.png": png(Image.new("RGB", (4, 4)))},
    )
    with pytest.raises(DataError, match="class folders differ"):
        load_dataset("imagefolder", mismatch)


# --------------------------------------------------------------------------------------------------
# CIFAR sources
# --------------------------------------------------------------------------------------------------


def fake_cifar_files(classes: list[str], n_train: int, n_test: int) -> dict[str, bytes]:
    files, seed = {}, 0
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            for i in range(n):
                files[f"{split}/{c}/{i:04d}.jpg"] = jpeg(noise_image(seed))
                seed += 1
    return files


def decoded(files: dict[str, bytes], split: str) -> np.ndarray:
    """PIL-decoded (n, 3, 32, 32) of a split's files in sorted path order."""
    return np.stack(
        [chw(Image.open(io.BytesIO(files[k]))) for k in sorted(files) if k.startswith(split + "/")]
    )


def test_cifar_not_found_lists_every_place(tmp_path, fresh_cache):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", empty)
    msg = str(info.value)
    for tried in (
        empty / "cifar-10-batches-py",
        empty / "{train,test}",
        empty / "cifar10" / "cifar-10-batches-py",
        empty / "cifar10" / "{train,test}",
        empty / "cifar10.zip",
    ):
        assert str(tried) in msg
    assert "download=True" in msg
    with pytest.raises(DataError) as info:
        load_dataset("cifar100", tmp_path / "absent")
    for part in ("cifar-100-python", "cifar100.zip", "cifar100-jpeg.npz", str(tmp_path / "absent")):
        assert part in str(info.value)


def test_cifar10_fake_zip(tmp_path, fresh_cache):
    files = fake_cifar_files(["airplane", "automobile"], n_train=3, n_test=2)
    root = tmp_path / "root"
    root.mkdir()
    zip_files(root / "cifar10.zip", files)
    bundle = load_dataset("cifar10", root)
    assert bundle.source == f"tree:{root / 'cifar10.zip'}"
    assert bundle.classes == ["airplane", "automobile"]
    assert bundle.mean == (0.4914, 0.4822, 0.4465) == CIFAR10_MEAN
    assert bundle.std == (0.2470, 0.2435, 0.2616) == CIFAR10_STD
    assert bundle.train.labels.tolist() == [0, 0, 0, 1, 1, 1] and bundle.test.labels.tolist() == [0, 0, 1, 1]
    np.testing.assert_array_equal(bundle.train.images.numpy(), decoded(files, "train"))
    np.testing.assert_array_equal(bundle.test.images.numpy(), decoded(files, "test"))
    x, y, idx = sample_batch("cifar10", "test", n=3, seed=1, root=root, return_indices=True)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (bundle.test.images[idx].float() / 255 - mean) / std)
    assert torch.equal(y, bundle.test.labels[idx])


def test_cifar10_unzipped_tree_in_subfolder(tmp_path, fresh_cache):
    files = fake_cifar_files(["cat", "dog"], n_train=2, n_test=1)
    root = tmp_path / "root"
    write_files(root / "cifar10", files)
    bundle = load_dataset("cifar10", root)
    assert bundle.source == f"tree:{root / 'cifar10'}" and bundle.classes == ["cat", "dog"]
    np.testing.assert_array_equal(bundle.train.images.numpy(), decoded(files, "train"))


def test_cifar100_fake_packed_npz(tmp_path, fresh_cache):
    classes = np.array(["apple", "aquarium_fish", "baby"])
    arrays: dict[str, np.ndarray] = {"classes": classes}
    expected: dict[str, np.ndarray] = {}
    for split, n, seed in (("train", 6, 0), ("test", 3, 100)):
        blobs = [jpeg(noise_image(seed + i)) for i in range(n)]
        arrays[f"{split}_jpeg"] = np.frombuffer(b"".join(blobs), dtype=np.uint8)
        arrays[f"{split}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{split}_labels"] = (np.arange(n) % 3).astype(np.int64)
        expected[split] = np.stack([chw(Image.open(io.BytesIO(b))) for b in blobs])
    root = tmp_path / "root"
    root.mkdir()
    np.savez(root / "cifar100-jpeg.npz", **arrays)
    bundle = load_dataset("cifar100", root)
    assert bundle.source == f"npz:{root / 'cifar100-jpeg.npz'}"
    assert bundle.classes == ["apple", "aquarium_fish", "baby"]
    assert bundle.mean == CIFAR100_MEAN == (0.5071, 0.4867, 0.4408)
    assert bundle.std == CIFAR100_STD == (0.2675, 0.2565, 0.2761)
    for split in ("train", "test"):
        ds = bundle.split(split)
        np.testing.assert_array_equal(ds.images.numpy(), expected[split])
        assert ds.labels.tolist() == arrays[f"{split}_labels"].tolist()


def test_tffd_data_env_is_the_default_root(tmp_path, fresh_cache, monkeypatch):
    monkeypatch.delenv("TFFD_DATA", raising=False)
    assert default_data_root() == Path("data")
    root_a, root_b = tmp_path / "a", tmp_path / "b"
    root_a.mkdir()
    root_b.mkdir()
    zip_files(root_a / "cifar10.zip", fake_cifar_files(["airplane", "automobile"], 1, 1))
    zip_files(root_b / "cifar10.zip", fake_cifar_files(["bird", "cat", "deer"], 1, 1))
    monkeypatch.setenv("TFFD_DATA", str(root_a))
    assert default_data_root() == root_a
    bundle_a = load_dataset("cifar10")
    assert bundle_a.source == f"tree:{root_a / 'cifar10.zip'}" and bundle_a.classes == [
        "airplane",
        "automobile",
    ]
    _, y = sample_batch("cifar10", "train", n=2, seed=0)
    assert sorted(y.tolist()) == [0, 1]
    # a new $TFFD_DATA is honoured in the same process (no stale in-process cache)
    monkeypatch.setenv("TFFD_DATA", str(root_b))
    assert load_dataset("cifar10").classes == ["bird", "cat", "deer"]
    monkeypatch.setenv("TFFD_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="nowhere"):
        load_dataset("cifar10")


# --------------------------------------------------------------------------------------------------
# the shared CIFAR files (real data; decoded once, then served from the default on-disk cache)
# --------------------------------------------------------------------------------------------------

needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "cifar10.zip").is_file(), reason=f"CIFAR files absent under {SHARED_DATA}"
)


@pytest.mark.data
@needs_shared
def test_real_cifar10_zip():
    bundle = load_dataset("cifar10", SHARED_DATA)
    assert bundle.source == f"tree:{SHARED_DATA / 'cifar10.zip'}"
    assert (len(bundle.train), len(bundle.test)) == (50000, 10000)
    assert len(bundle.classes) == 10 and bundle.classes[0] == "airplane" and bundle.classes[9] == "truck"
    assert bundle.train.images.dtype == torch.uint8 and tuple(bundle.train.images.shape) == (50000, 3, 32, 32)
    assert torch.bincount(bundle.train.labels).tolist() == [5000] * 10
    assert torch.bincount(bundle.test.labels).tolist() == [1000] * 10
    means = [float(bundle.train.images[:, c].double().mean()) / 255 for c in range(3)]
    # JPEG re-encoding moves the channel means only slightly off the official figures
    assert means == pytest.approx(list(CIFAR10_MEAN), abs=2e-3)


@pytest.mark.data
@pytest.mark.skipif(
    not (SHARED_DATA / "cifar100-jpeg.npz").is_file(), reason=f"cifar100-jpeg.npz absent under {SHARED_DATA}"
)
def test_real_cifar100_packed_npz(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar100-jpeg.npz").symlink_to(SHARED_DATA / "cifar100-jpeg.npz")  # only the npz is found here
    bundle = load_dataset("cifar100", root)
    assert bundle.source.startswith("npz:")
    assert (len(bundle.train), len(bundle.test)) == (50000, 10000)
    assert len(bundle.classes) == 100 and bundle.classes[0] == "apple" and bundle.classes[-1] == "worm"
    assert bundle.train.images.dtype == torch.uint8 and tuple(bundle.test.images.shape) == (10000, 3, 32, 32)
    assert torch.bincount(bundle.train.labels).tolist() == [500] * 100
    x = bundle.train.images
    means = [float(x[:, c].double().mean()) / 255 for c in range(3)]
    stds = [float((x[:, c].double() / 255).std()) for c in range(3)]
    assert means == pytest.approx([0.5067, 0.4864, 0.4410], abs=2e-3)  # shared/data/README.md
    assert stds == pytest.approx([0.2649, 0.2553, 0.2740], abs=2e-3)
