"""AppTest of the Attribution page: runs on the shipped digits models, reacts to its widgets,
shows library maps."""

from __future__ import annotations

import numpy as np
from conftest import CHECKPOINTS, plotly_array

N = 32


def model_maps(spec: dict, model: int, rows: int) -> list[np.ndarray]:
    """The attribution heatmaps of model ``model`` (0 = A) in an attribution_figure: per row the traces are
    the input image, then (grayscale background, map) per model."""
    per_row = 1 + 2 * 2
    return [plotly_array(spec["data"][r * per_row + 2 + 2 * model]["z"]) for r in range(rows)]


def test_attribution_page_values_and_widgets(app_at, assert_app_ok, chart_specs) -> None:
    from tffd_viz.attribution import gradcam_maps, integrated_gradients_maps
    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch

    at = app_at("attribution", n=N)
    assert_app_ok(at)
    assert at.multiselect(key="attribution-images").value == [0, 1, 2, 3]
    assert at.selectbox(key="attribution-layer").value == "layer3"
    charts = chart_specs(at)
    assert len(charts) == 2  # Grad-CAM, Integrated Gradients

    model_b, _ = load_checkpoint(CHECKPOINTS / f"{at.selectbox(key='model-B').value}.safetensors")
    images, labels = sample_batch("digits", "test", N, seed=0)
    gradcam = charts[0]
    expected = gradcam_maps(model_b, images[:4], layer="layer3").numpy()
    np.testing.assert_allclose(np.stack(model_maps(gradcam, 1, 4)), expected, rtol=0, atol=1e-6)
    ig = charts[1]
    expected = integrated_gradients_maps(model_b, images[:4], n_steps=16).numpy()
    np.testing.assert_allclose(np.stack(model_maps(ig, 1, 4)), expected, rtol=0, atol=1e-6)
    titles = [a["text"] for a in gradcam["layout"]["annotations"]]
    assert titles[0].startswith("#0 · true ")

    # other images, another layer, the true class as target, fewer IG steps
    at.multiselect(key="attribution-images").set_value([5, 2])
    at.selectbox(key="attribution-layer").set_value("layer2")
    at.radio(key="attribution-target").set_value("true")
    at.slider(key="attribution-steps").set_value(8).run()
    assert_app_ok(at)
    charts = chart_specs(at)
    gradcam, ig = charts[0], charts[1]
    rows = [5, 2]
    expected = gradcam_maps(model_b, images[rows], target=labels[rows], layer="layer2").numpy()
    np.testing.assert_allclose(np.stack(model_maps(gradcam, 1, 2)), expected, rtol=0, atol=1e-6)
    expected = integrated_gradients_maps(model_b, images[rows], target=labels[rows], n_steps=8).numpy()
    np.testing.assert_allclose(np.stack(model_maps(ig, 1, 2)), expected, rtol=0, atol=1e-6)
    assert gradcam["layout"]["annotations"][0]["text"].startswith("#5 · true ")

    # B switched to A's checkpoint: identical maps in both columns
    at.selectbox(key="model-B").set_value(at.selectbox(key="model-A").value).run()
    assert_app_ok(at)
    gradcam = chart_specs(at)[0]
    for a, b in zip(model_maps(gradcam, 0, 2), model_maps(gradcam, 1, 2)):
        np.testing.assert_array_equal(a, b)

    at.multiselect(key="attribution-images").set_value([]).run()
    assert_app_ok(at)
    assert not at.get("plotly_chart") and any("at least one image" in i.value for i in at.info)
