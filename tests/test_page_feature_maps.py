"""AppTest of the Feature maps page: one image's channel maps ordered by batch saliency, A beside B."""

from __future__ import annotations

import os

import numpy as np

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.features import extract_features
from tffd_viz.losses import salient_order

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _feats(name: str, layer: str, n: int):
    model = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))[0]
    images, _ = sample_batch("digits", "test", n=n, seed=0)
    return extract_features(model, images, [layer])[layer]


def _maps_figures(figures):
    return [f for f in figures if "image" in (f.layout.title.text or "")]


def test_paired_maps_follow_the_batch_saliency_order(app_at, assert_app_ok, chart_figures):
    at = app_at("feature_maps", n=16, feature_maps_image=3)
    assert_app_ok(at)
    assert at.title[0].value == "Feature maps"
    assert at.slider(key="feature_maps-image").value == 3
    layer = at.selectbox(key="feature_maps-layer").value
    a = at.query_params["a"]
    f = _feats(a, layer, 16)
    order = salient_order(f).numpy()  # saliency of the whole batch, as Tf-FD computes it
    c, k = f.shape[1], f.shape[1] // 2
    fig_a, fig_b = _maps_figures(chart_figures(at))
    assert fig_a.layout.title.text.startswith(f"A: {layer}, image 3")
    assert fig_b.layout.title.text.startswith(f"B: {layer}, image 3")
    pairs = len(fig_a.data) // 2
    assert pairs == min(k, 12)
    # top row: the most salient channels of image 3; bottom row: their intra-Tf-FD partners
    for i in range(pairs):
        np.testing.assert_allclose(
            np.asarray(fig_a.data[i].z, dtype=float), f[3, order[i]].numpy(), rtol=1e-5, atol=1e-6
        )
        np.testing.assert_allclose(
            np.asarray(fig_a.data[pairs + i].z, dtype=float),
            f[3, order[c - k + i]].numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
    _, labels, indices = sample_batch("digits", "test", n=16, seed=0, return_indices=True)
    assert at.image[0].captions == [f"test image {int(indices[3])}, label {int(labels[3])}"]  # the thumbnail


def test_grid_view_layer_and_image_changes(app_at, assert_app_ok, chart_figures):
    at = app_at("feature_maps", n=16)
    at.radio(key="feature_maps-view").set_value("grid").run()
    at.selectbox(key="feature_maps-layer").set_value("layer1").run()
    at.slider(key="feature_maps-image").set_value(5).run()
    assert_app_ok(at)
    assert at.query_params["feature_maps_image"] == "5" and at.query_params["feature_maps_layer"] == "layer1"
    f = _feats(at.query_params["a"], "layer1", 16)
    order = salient_order(f).numpy()
    fig_a = _maps_figures(chart_figures(at))[0]
    assert len(fig_a.data) == f.shape[1]  # 16 channels <= the 32 tiles shown by default
    first = [int(t.name.split()[1]) for t in fig_a.data]
    np.testing.assert_array_equal(first, order)  # salient half first, then the redundant half, by rank
    np.testing.assert_allclose(
        np.asarray(fig_a.data[0].z, dtype=float), f[5, order[0]].numpy(), rtol=1e-5, atol=1e-6
    )
    other = "digits_resnet8_baseline_s1"
    at.selectbox(key="model-B").set_value(other).run()
    assert_app_ok(at)
    assert len(_maps_figures(chart_figures(at))) == 2
