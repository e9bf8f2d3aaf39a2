"""Tests of tffd_viz.embeddings: pooling, PCA / t-SNE coordinates and linear probes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import silhouette_score

from tffd_viz.embeddings import (
    EMBEDDINGS,
    embedding,
    linear_probe_accuracy,
    pca_embedding,
    pooled_embedding,
    probe_table,
    tsne_embedding,
)
from tffd_viz.errors import DataError, TffdVizError


def _two_clusters(n: int = 60, d: int = 8, gap: float = 20.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, d))
    x[y == 1, 0] += gap
    return x, y


def test_pooled_embedding_is_global_average():
    f = torch.randn(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    out = pooled_embedding(f)
    assert out.shape == (4, 3) and out.dtype == np.float64
    for n in range(4):
        for c in range(3):
            assert out[n, c] == pytest.approx(float(f[n, c].double().sum()) / 30.0, rel=1e-12)
    flat = np.arange(12.0).reshape(4, 3)
    assert np.array_equal(pooled_embedding(flat), flat)
    with pytest.raises(TffdVizError, match=r"\(5,\)"):
        pooled_embedding(np.zeros(5))
    with pytest.raises(TffdVizError, match="non-finite"):
        pooled_embedding(np.array([[1.0, np.nan], [0.0, 1.0]]))


def test_pca_equals_svd_up_to_sign():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6)) * np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.1])
    coords, ratio = pca_embedding(x, n_components=3)
    xc = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    expected = xc @ vt[:3].T
    assert coords.shape == (40, 3)
    for k in range(3):
        sign = np.sign(np.dot(coords[:, k], expected[:, k]))
        np.testing.assert_allclose(sign * coords[:, k], expected[:, k], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ratio, (s**2 / (s**2).sum())[:3], rtol=1e-9)
    assert ratio.sum() <= 1.0 + 1e-12 and np.all(np.diff(ratio) <= 0)
    _, full = pca_embedding(x, n_components=6)
    assert full.sum() == pytest.approx(1.0)


def test_pca_pools_spatial_features_and_checks_k():
    f = torch.randn(10, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    coords, _ = pca_embedding(f)
    ref, _ = pca_embedding(f.mean(dim=(2, 3)).numpy())
    np.testing.assert_allclose(coords, ref, rtol=1e-6, atol=1e-9)
    with pytest.raises(TffdVizError, match=r"\[1, 4\]"):
        pca_embedding(f, n_components=5)
    with pytest.raises(TffdVizError, match="at least 2 samples"):
        pca_embedding(np.zeros((1, 3)))


def test_tsne_deterministic_and_separates_far_clusters():
    x, y = _two_clusters(n=60, d=8)
    a = tsne_embedding(x, perplexity=10, seed=3)
    b = tsne_embedding(x, perplexity=10, seed=3)
    assert a.shape == (60, 2)
    np.testing.assert_array_equal(a, b)
    # every point's nearest neighbour in the embedding belongs to its own cluster
    dist = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert np.all(y[dist.argmin(axis=1)] == y)
    assert silhouette_score(a, y) > 0.5


def test_tsne_reduces_wide_features_and_caps_perplexity():
    x, y = _two_clusters(n=12, d=80, gap=30.0)
    out = tsne_embedding(x, perplexity=30)  # perplexity 30 > N: capped
    assert out.shape == (12, 2) and np.isfinite(out).all()
    dist = ((out[:, None, :] - out[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(dist, np.inf)
    assert np.all(y[dist.argmin(axis=1)] == y)
    with pytest.raises(TffdVizError, match="at least 5 samples"):
        tsne_embedding(np.zeros((4, 3)))
    with pytest.raises(TffdVizError, match="perplexity"):
        tsne_embedding(x, perplexity=0)


def test_embedding_registry():
    assert set(EMBEDDINGS) == {"pca", "tsne"}
    x, _ = _two_clusters(n=20)
    np.testing.assert_array_equal(embedding(x, "pca"), pca_embedding(x)[0])
    np.testing.assert_array_equal(
        embedding(x, "tsne", perplexity=5, seed=1), tsne_embedding(x, perplexity=5, seed=1)
    )
    with pytest.raises(TffdVizError, match="umap"):
        embedding(x, "umap")


def test_linear_probe_separable_and_random_labels():
    x, y = _two_clusters(n=100, d=5, gap=6.0)
    res = linear_probe_accuracy(x, y)
    assert res["test_acc"] == 100.0 and res["train_acc"] == 100.0
    assert res["n_train"] == 70 and res["n_test"] == 30 and res["dim"] == 5 and res["stratified"]
    assert res["chance"] == pytest.approx(50.0)
    rng = np.random.default_rng(5)
    noise = rng.normal(size=(400, 5))
    rand = rng.integers(0, 4, size=400)
    res_r = linear_probe_accuracy(noise, rand, C=0.1)
    assert 10.0 <= res_r["test_acc"] <= 40.0  # chance is 25 %
    assert res_r["n_train"] + res_r["n_test"] == 400


def test_linear_probe_small_class_falls_back_and_errors():
    x, y = _two_clusters(n=20, d=3, gap=8.0)
    y = y.copy()
    y[0] = 2  # a class with one sample cannot be stratified
    res = linear_probe_accuracy(torch.from_numpy(x), torch.from_numpy(y))
    assert not res["stratified"] and res["n_train"] + res["n_test"] == 20
    with pytest.raises(TffdVizError, match="2 classes"):
        linear_probe_accuracy(x, np.zeros(20, dtype=int))
    with pytest.raises(TffdVizError, match="at least 4 samples"):
        linear_probe_accuracy(x[:3], y[:3])
    with pytest.raises(DataError, match=r"\(20,\)"):
        linear_probe_accuracy(x, y[:5])
    with pytest.raises(TffdVizError, match="test_size"):
        linear_probe_accuracy(x, y, test_size=1.5)


def test_probe_table_rows():
    x, y = _two_clusters(n=60, d=4, gap=8.0)
    rng = np.random.default_rng(7)
    feats = {"layer1": torch.from_numpy(rng.normal(size=(60, 4, 2, 2))), "layer3": x}
    rows = probe_table(feats, y, seed=1)
    assert [r["tap"] for r in rows] == ["layer1", "layer3"]
    assert rows[1]["test_acc"] == 100.0
    assert rows[0] == {"tap": "layer1", **linear_probe_accuracy(feats["layer1"], y, seed=1)}
    with pytest.raises(TffdVizError, match="empty"):
        probe_table({}, y)


# --------------------------------------------------------------------------------------------------
# models over images: layer_embedding, layer_probe_table
# --------------------------------------------------------------------------------------------------


def _zoo_model_and_batch(n: int = 40):
    from tffd_viz.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_chans=1).eval()
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 4
    images = torch.randn(n, 1, 16, 16, generator=g) + labels.view(-1, 1, 1, 1).float()
    return model, images, labels


def test_layer_embedding_equals_pca_of_pooled_features():
    from tffd_viz.embeddings import LABELLED_EMBEDDINGS, layer_embedding
    from tffd_viz.features import extract_features

    model, images, _ = _zoo_model_and_batch()
    coords, axes = layer_embedding(model, images, "layer2", batch_size=16)
    pooled = extract_features(model, images, ["layer2"])["layer2"].double().mean(dim=(2, 3))
    expected, ratio = pca_embedding(pooled.numpy())
    np.testing.assert_allclose(coords, expected, rtol=0, atol=1e-5)
    assert axes == (
        f"PC 1 ({100 * ratio[0]:.1f} % of variance)",
        f"PC 2 ({100 * ratio[1]:.1f} % of variance)",
    )
    first, _ = layer_embedding(model, images, "layer2", max_samples=10)
    np.testing.assert_allclose(first, pca_embedding(pooled[:10].numpy())[0], rtol=0, atol=1e-5)
    # t-SNE goes through the same extraction (its values are tested above; one run costs seconds)
    tsne, tsne_axes = layer_embedding(model, images, "layer3", method="tsne", max_samples=12, perplexity=3.0)
    assert tsne.shape == (12, 2) and np.isfinite(tsne).all() and tsne_axes == ("t-SNE 1", "t-SNE 2")
    assert set(LABELLED_EMBEDDINGS) == set(EMBEDDINGS)
    with pytest.raises(TffdVizError, match="unknown embedding method 'umap'"):
        layer_embedding(model, images, "layer2", method="umap")
    with pytest.raises(TffdVizError, match="max_samples must be at least 2, got 1"):
        layer_embedding(model, images, "layer2", max_samples=1)


def test_layer_probe_table_equals_probe_table_of_pooled_taps():
    from tffd_viz.embeddings import layer_probe_table
    from tffd_viz.features import extract_features

    model, images, labels = _zoo_model_and_batch()
    rows = layer_probe_table(model, images, labels, seed=3)
    expected = probe_table(extract_features(model, images, pool="avg"), labels, seed=3)
    assert [r["tap"] for r in rows] == ["layer1", "layer2", "layer3"]
    assert rows == expected
    spatial = {t: f for t, f in extract_features(model, images).items()}
    assert rows == probe_table(spatial, labels, seed=3)  # pooling inside equals pooling before
    assert [r["tap"] for r in layer_probe_table(model, images, labels, taps=["layer3"])] == ["layer3"]
