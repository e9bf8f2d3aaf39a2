"""Tests for tffd_viz.similarity.layers: layer x layer CKA of models over images, channel similarity views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.losses import salient_order
from tffd_viz.models import create_model
from tffd_viz.similarity.channels import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine
from tffd_viz.similarity.cka import CKA_METHODS, ConstantFeatureWarning
from tffd_viz.similarity.layers import channel_similarity_views, inter_layer_alignments, layer_cka_matrices
from tffd_viz.similarity.minibatch import MinibatchCKA

# ------------------------------------------------------------------------------------------------------------
# models over images: layer_cka_matrices, channel_similarity_views, inter_layer_alignments
# ------------------------------------------------------------------------------------------------------------


def zoo_pair(n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """Two differently initialised resnet8 (1 input channel, 10 classes, eval mode) and ``n`` 16x16 images."""
    torch.manual_seed(seed)
    a = create_model("resnet8", num_classes=10, in_chans=1).eval()
    b = create_model("resnet8", num_classes=10, in_chans=1).eval()
    images = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed + 100))
    return a, b, images


def test_layer_cka_minibatch_equals_direct_minibatch_cka() -> None:
    a, b, x = zoo_pair(42)
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(a, b, x, batch_size=16, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # slices 0:16, 16:32, 32:42
    fa, fb = extract_features(a, x), extract_features(b, x)
    names = ["layer1", "layer2", "layer3"]
    direct_ab, direct_aa, direct_bb = MinibatchCKA(3, 3), MinibatchCKA(3, 3), MinibatchCKA(3, 3)
    for sl in (slice(0, 16), slice(16, 32), slice(32, 42)):
        ba, bb = [fa[t][sl] for t in names], [fb[t][sl] for t in names]
        direct_ab.update(ba, bb)
        direct_aa.update(ba, ba)
        direct_bb.update(bb, bb)
    assert set(got) == {"AvA", "BvB", "AvB"}
    for key, direct in (("AvB", direct_ab), ("AvA", direct_aa), ("BvB", direct_bb)):
        matrix, rows, cols = got[key]
        assert (
            rows == names and cols == names and isinstance(matrix, np.ndarray) and matrix.dtype == np.float64
        )
        np.testing.assert_allclose(matrix, direct.compute().numpy(), rtol=0, atol=1e-10)
    ava = got["AvA"][0]
    np.testing.assert_allclose(ava, ava.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(ava), np.ones(3), rtol=0, atol=1e-12)
    assert 0.0 < ava[0, 2] < 0.999
    # the minibatch estimator ignores `debiased` (it is always HSIC_1)
    again = layer_cka_matrices(a, b, x, batch_size=16, debiased=True)
    np.testing.assert_array_equal(again["AvB"][0], got["AvB"][0])


def test_layer_cka_merges_a_last_minibatch_under_four() -> None:
    a, b, x = zoo_pair(34, seed=1)
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(
        a,
        b,
        x,
        taps_a=["layer2"],
        taps_b=["layer1", "layer3"],
        batch_size=16,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(1, 2), (2, 2)]  # 0:16 and 16:34 (the 2 left-over images join the second minibatch)
    fa, fb = extract_features(a, x, ["layer2"]), extract_features(b, x, ["layer1", "layer3"])
    direct = MinibatchCKA(1, 2)
    for sl in (slice(0, 16), slice(16, 34)):
        direct.update([fa["layer2"][sl]], [fb["layer1"][sl], fb["layer3"][sl]])
    matrix, rows, cols = got["AvB"]
    assert (rows, cols) == (["layer2"], ["layer1", "layer3"]) and matrix.shape == (1, 2)
    np.testing.assert_allclose(matrix, direct.compute().numpy(), rtol=0, atol=1e-10)
    assert got["BvB"][0].shape == (2, 2) and got["AvA"][0].shape == (1, 1)


@pytest.fixture(scope="module")
def flat_pair() -> tuple:
    """``zoo_pair(24)`` and both models' flattened default-tap features."""
    a, b, x = zoo_pair(24, seed=2)
    return a, b, x, extract_features(a, x, pool="flatten"), extract_features(b, x, pool="flatten")


@pytest.mark.parametrize("kind", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_layer_cka_full_batch_matches_pairwise_cka(kind: str, debiased: bool, flat_pair: tuple) -> None:
    a, b, x, fa, fb = flat_pair
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(
        a,
        b,
        x,
        kind=kind,
        debiased=debiased,
        estimator="full",
        batch_size=10,
        progress=lambda d, t: calls.append((d, t)),
    )
    # extraction batches 0:10, 10:20, 20:24 for A, then the same for B
    assert calls == [(i, 6) for i in range(1, 7)]
    fn = CKA_METHODS[kind]
    for key, (left, right) in {"AvA": (fa, fa), "BvB": (fb, fb), "AvB": (fa, fb)}.items():
        matrix, rows, cols = got[key]
        expected = np.array([[fn(left[r], right[c], debiased=debiased) for c in cols] for r in rows])
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-9)
    ava = got["AvA"][0]
    np.testing.assert_allclose(ava, ava.T, rtol=0, atol=0)
    np.testing.assert_allclose(np.diag(ava), np.ones(3), rtol=0, atol=1e-12)


def test_layer_cka_same_model_and_constant_layer() -> None:
    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
            self.act = torch.nn.ReLU()
            self.flat = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.flat.weight.zero_()
                self.flat.bias.fill_(0.5)  # output 0.5 everywhere: constant over the images
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.conv(x))
            return self.fc(h.mean(dim=(2, 3))) + self.flat(h).mean()

    torch.manual_seed(3)
    model = WithConstant().eval()
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for estimator in ("minibatch", "full"):
        with pytest.warns(ConstantFeatureWarning):
            got = layer_cka_matrices(
                model,
                model,
                x,
                taps_a=["act", "flat"],
                taps_b=["act", "flat"],
                estimator=estimator,
                batch_size=8,
            )
        for key in ("AvA", "BvB", "AvB"):
            matrix = got[key][0]
            assert np.isfinite(matrix).all()
            assert matrix[0, 0] == pytest.approx(1.0, abs=1e-12)
            assert (matrix[1, :] == 0).all() and (matrix[:, 1] == 0).all()


def test_layer_cka_errors() -> None:
    a, b, x = zoo_pair(8, seed=4)
    with pytest.raises(TffdVizError, match="linear only"):
        layer_cka_matrices(a, b, x, kind="rbf", estimator="minibatch")
    with pytest.raises(TffdVizError, match="unknown CKA estimator 'streaming'"):
        layer_cka_matrices(a, b, x, estimator="streaming")
    with pytest.raises(TffdVizError, match="unknown CKA kind 'poly'"):
        layer_cka_matrices(a, b, x, kind="poly", estimator="full")
    with pytest.raises(TffdVizError, match="n = 8 images exceeds max_n = 6"):
        layer_cka_matrices(a, b, x, estimator="full", max_n=6)
    with pytest.raises(TffdVizError, match=r"at least 4 images, got images of shape \(3, 1, 16, 16\)"):
        layer_cka_matrices(a, b, x[:3])
    with pytest.raises(TffdVizError, match="batch_size must be an int >= 4, got 2"):
        layer_cka_matrices(a, b, x, batch_size=2)
    with pytest.raises(TapError, match="nope"):
        layer_cka_matrices(a, b, x, taps_b=["nope"])


def test_channel_similarity_views_and_alignments_equal_direct_calls() -> None:
    a, _, x = zoo_pair(12, seed=5)
    feats = extract_features(a, x)
    views = channel_similarity_views(a, x, "layer2", batch_size=5)
    f = feats["layer2"]
    order = salient_order(f)
    assert torch.equal(views["order"], order)
    torch.testing.assert_close(views["cosine"], channel_cosine_matrix(f), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        views["cosine"][order][:, order], channel_cosine_matrix(f, order), rtol=0, atol=1e-6
    )
    torch.testing.assert_close(views["paired"], paired_channel_cosine(f, order), rtol=0, atol=1e-6)
    assert views["cosine"].shape == (32, 32) and views["paired"].shape == (16,)
    with pytest.raises(TapError, match=r"'fc' gives features of shape \(12, 10\)"):
        channel_similarity_views(a, x, "fc")

    got = inter_layer_alignments(a, x)
    assert list(got) == ["layer1->layer2", "layer1->layer3", "layer2->layer3"]
    for pair, values in got.items():
        s, d = pair.split("->")
        torch.testing.assert_close(values, inter_layer_alignment(feats[s], feats[d]), rtol=0, atol=1e-6)
    assert got["layer1->layer3"].shape == (16,)
    assert list(inter_layer_alignments(a, x, taps=["layer3", "layer1"])) == ["layer3->layer1"]
    with pytest.raises(TapError, match="at least two taps"):
        inter_layer_alignments(a, x, taps=["layer1"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("estimator", ["minibatch", "full"])
def test_layer_cka_matrices_on_cuda(estimator: str) -> None:
    a, b, x = zoo_pair(40, seed=6)
    on_cpu = layer_cka_matrices(a, b, x, estimator=estimator, batch_size=16)
    # models on the GPU, images on the CPU (moved batch by batch); B may also stay on the CPU
    a.cuda()
    for device_b in ("cuda", "cpu"):
        got = layer_cka_matrices(a, b.to(device_b), x, estimator=estimator, batch_size=16)
        for key in ("AvA", "BvB", "AvB"):
            # cuDNN convolutions may use TF32: features agree to ~1e-3, CKA values as well
            np.testing.assert_allclose(got[key][0], on_cpu[key][0], rtol=0, atol=2e-3)
    a.cpu()
