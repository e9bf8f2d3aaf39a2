"""AppTest of the Embeddings page: runs on the shipped digits models, reacts to its widgets,
shows library values."""

from __future__ import annotations

import numpy as np
import pandas as pd
from conftest import CHECKPOINTS, plotly_array

N = 32


def scatter_points(spec: dict) -> dict[int, tuple[float, float]]:
    """Sample index (hover customdata) -> (x, y) over every class trace of an embedding_figure."""
    out = {}
    for trace in spec["data"]:
        for i, x, y in zip(
            plotly_array(trace["customdata"]), plotly_array(trace["x"]), plotly_array(trace["y"])
        ):
            out[int(i)] = (float(x), float(y))
    return out


def test_embeddings_page_values_and_widgets(app_at, assert_app_ok, chart_specs) -> None:
    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch
    from tffd_viz.embeddings import pca_embedding, probe_table
    from tffd_viz.features import extract_features

    at = app_at("embeddings", n=N)
    assert_app_ok(at)
    assert (
        at.selectbox(key="embeddings-layer").value == "layer3"
        and at.radio(key="embeddings-method").value == "pca"
    )
    charts = chart_specs(at)
    assert len(charts) == 3  # embedding A, embedding B, probe accuracy
    names = {s: at.selectbox(key=f"model-{s}").value for s in ("A", "B")}
    models = {s: load_checkpoint(CHECKPOINTS / f"{n}.safetensors")[0] for s, n in names.items()}
    images, labels, indices = sample_batch("digits", "test", N, seed=0, return_indices=True)

    # the probe table is embeddings.probe_table of the pooled default taps, model by model
    table = at.dataframe[0].value
    for slot, model in models.items():
        expected = pd.DataFrame(probe_table(extract_features(model, images, pool="avg"), labels, seed=0))
        got = table[table["model"] == f"{slot} · {names[slot]}"].drop(columns="model").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    # the PCA scatter of A is pca_embedding of its pooled layer3 features
    pooled = extract_features(models["A"], images, ["layer3"], pool="avg")["layer3"]
    coords, _ = pca_embedding(pooled)
    points = scatter_points(charts[0])
    assert sorted(points) == sorted(indices.tolist())
    for row, index in enumerate(indices.tolist()):
        np.testing.assert_allclose(points[index], coords[row], rtol=0, atol=1e-5)

    # another layer and B switched to A's checkpoint: the two scatters coincide
    at.selectbox(key="embeddings-layer").set_value("layer1")
    at.selectbox(key="model-B").set_value(names["A"]).run()
    assert_app_ok(at)
    charts = chart_specs(at)
    a, b = (scatter_points(c) for c in charts[:2])
    assert a == b

    # t-SNE: a warning about its cost, a small number of points, still two scatters and the probe chart
    at.radio(key="embeddings-method").set_value("tsne").run()
    assert_app_ok(at)
    assert at.warning and "t-SNE is slow" in at.warning[0].value
    assert at.number_input(key="embeddings-tsne-n").value == N
    charts = chart_specs(at)
    assert len(charts) == 3
    spec = charts[0]
    assert spec["layout"]["xaxis"]["title"]["text"] == "t-SNE 1" and len(scatter_points(spec)) == N


def test_a_batch_too_small_for_the_probe_says_how_many_images_it_needs(
    app_at, assert_app_ok, chart_specs
) -> None:
    at = app_at(
        "embeddings", n=16
    )  # 16 digits of 10 classes: fewer than two of each class to fit the probe on
    assert_app_ok(at)
    assert any("needs two images of each to fit on: choose at least 29 images" in i.value for i in at.info)
    assert [c["layout"]["title"]["text"].split(":")[0] for c in chart_specs(at)] == [
        f"A · {at.query_params['a']}",
        f"B · {at.query_params['b']}",
    ]  # the two embeddings, no probe chart
