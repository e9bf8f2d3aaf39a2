"""AppTest of the Attribution page: runs on the shipped digits models, reacts to its widgets, shows library maps."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# The default models (A = digits_resnet8_baseline_s0, B = digits_resnet8_tffd_s0); until the chosen-lambda Tf-FD
# checkpoint is shipped, B is the paper-lambda one.
MODELS = ({} if (ROOT / "checkpoints" / "digits_resnet8_tffd_s0.safetensors").is_file()
          else {"b": "digits_resnet8_tffd-paper_s0"})
N = 32


def plotly_array(value) -> np.ndarray:
    """A plotly JSON array: a list, or plotly's typed-array dict ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = [int(s) for s in str(value.get("shape", arr.size)).split(",")]
        return arr.reshape(shape)
    return np.asarray(value, dtype=float)


def model_maps(spec: dict, model: int, rows: int) -> list[np.ndarray]:
    """The attribution heatmaps of model ``model`` (0 = A) in an attribution_figure: per row the traces are
    the input image, then (grayscale background, map) per model."""
    per_row = 1 + 2 * 2
    return [plotly_array(spec["data"][r * per_row + 2 + 2 * model]["z"]) for r in range(rows)]


def test_attribution_page_values_and_widgets(app_at, assert_app_ok) -> None:
    from tffd_viz.attribution import gradcam_maps, integrated_gradients_maps
    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch

    at = app_at("attribution", **MODELS, n=N)
    assert_app_ok(at)
    assert at.multiselect(key="attr-images").value == [0, 1, 2, 3]
    assert at.selectbox(key="layer-attribution").value == "layer3"
    charts = at.get("plotly_chart")
    assert len(charts) == 2  # Grad-CAM, Integrated Gradients

    model_b, _ = load_checkpoint(ROOT / "checkpoints" / f"{at.selectbox(key='model-B').value}.safetensors")
    images, labels = sample_batch("digits", "test", N, seed=0)
    gradcam = json.loads(charts[0].proto.spec)
    expected = gradcam_maps(model_b, images[:4], layer="layer3").numpy()
    np.testing.assert_allclose(np.stack(model_maps(gradcam, 1, 4)), expected, rtol=0, atol=1e-6)
    ig = json.loads(charts[1].proto.spec)
    expected = integrated_gradients_maps(model_b, images[:4], n_steps=16).numpy()
    np.testing.assert_allclose(np.stack(model_maps(ig, 1, 4)), expected, rtol=0, atol=1e-6)
    titles = [a["text"] for a in gradcam["layout"]["annotations"]]
    assert titles[0].startswith("#0 · true ")

    # other images, another layer, the true class as target, fewer IG steps
    at.multiselect(key="attr-images").set_value([5, 2])
    at.selectbox(key="layer-attribution").set_value("layer2")
    at.radio(key="attr-target").set_value("true")
    at.slider(key="attr-steps").set_value(8).run()
    assert_app_ok(at)
    charts = at.get("plotly_chart")
    gradcam, ig = json.loads(charts[0].proto.spec), json.loads(charts[1].proto.spec)
    rows = [5, 2]
    expected = gradcam_maps(model_b, images[rows], target=labels[rows], layer="layer2").numpy()
    np.testing.assert_allclose(np.stack(model_maps(gradcam, 1, 2)), expected, rtol=0, atol=1e-6)
    expected = integrated_gradients_maps(model_b, images[rows], target=labels[rows], n_steps=8).numpy()
    np.testing.assert_allclose(np.stack(model_maps(ig, 1, 2)), expected, rtol=0, atol=1e-6)
    assert [a["text"] for a in gradcam["layout"]["annotations"]][0].startswith("#5 · true ")

    # B switched to A's checkpoint: identical maps in both columns
    at.selectbox(key="model-B").set_value(at.selectbox(key="model-A").value).run()
    assert_app_ok(at)
    gradcam = json.loads(at.get("plotly_chart")[0].proto.spec)
    for a, b in zip(model_maps(gradcam, 0, 2), model_maps(gradcam, 1, 2)):
        np.testing.assert_array_equal(a, b)

    at.multiselect(key="attr-images").set_value([]).run()
    assert_app_ok(at)
    assert not at.get("plotly_chart") and any("at least one image" in i.value for i in at.info)
