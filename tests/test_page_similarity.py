"""AppTest of the Similarity page: runs on the shipped digits models, reacts to its widgets,
shows library values."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CHECKPOINTS, plotly_array

N = 32


def features(at, slot: str, taps: list[str]):
    """The page's model ``slot`` features on the sidebar batch, computed directly."""
    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import sample_batch
    from tffd_viz.features import extract_features

    model, _ = load_checkpoint(CHECKPOINTS / f"{at.selectbox(key=f'model-{slot}').value}.safetensors")
    images, _ = sample_batch("digits", "test", N, seed=0)
    return extract_features(model, images, taps)


def test_similarity_page_values_and_widgets(app_at, assert_app_ok, chart_specs) -> None:
    from tffd_viz.losses import salient_order
    from tffd_viz.similarity import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine

    at = app_at("similarity", n=N)
    assert_app_ok(at)
    assert at.selectbox(key="similarity-layer").value == "layer3"  # the last stage by default
    charts = chart_specs(at)
    assert len(charts) == 5  # cosine A, cosine B, paired pairs, paired vs random pairs, inter-layer alignment
    paired, alignment = at.dataframe[0].value, at.dataframe[1].value
    assert set(paired["model"].str[0]) == {"A", "B"} and len(paired) == 2 * 32  # 64 channels -> 32 pairs each

    feats = features(at, "A", ["layer1", "layer2", "layer3"])
    f = feats["layer3"]
    order = salient_order(f)
    rows_a = paired[paired["model"].str.startswith("A")]
    np.testing.assert_allclose(
        rows_a["cosine"].to_numpy(), paired_channel_cosine(f, order).numpy(), rtol=0, atol=1e-6
    )
    assert rows_a["salient channel"].tolist() == order[:32].tolist()
    assert rows_a["redundant channel"].tolist() == order[32:].tolist()
    z = plotly_array(charts[0]["data"][0]["z"])
    np.testing.assert_allclose(z, channel_cosine_matrix(f, order).numpy(), rtol=0, atol=1e-6)
    al_a = alignment[alignment["model"].str.startswith("A")]
    assert sorted(set(al_a["pair"])) == ["layer1->layer2", "layer1->layer3", "layer2->layer3"]
    got = al_a[al_a["pair"] == "layer1->layer3"]["cosine"].to_numpy()
    np.testing.assert_allclose(
        got, inter_layer_alignment(feats["layer1"], feats["layer3"]).numpy(), rtol=0, atol=1e-6
    )
    # paired cosine next to the mean cosine of every pair of distinct channels of the layer
    reference = next(c for c in charts if c["layout"]["title"]["text"].startswith("Paired cosine vs random"))
    cos = channel_cosine_matrix(f).double()
    random_pairs = float((cos.sum() - cos.trace()) / (64 * 63))
    by_name = {t["name"]: plotly_array(t["y"])[0] for t in reference["data"]}
    a_label = next(n for n in by_name if n.startswith("A") and n.endswith("random pairs"))
    assert by_name[a_label] == pytest.approx(random_pairs, abs=1e-6)
    assert by_name[a_label.replace("random pairs", "salient/redundant pairs")] == pytest.approx(
        float(paired_channel_cosine(f, order).mean()), abs=1e-6
    )

    at.selectbox(key="similarity-layer").set_value("layer1").run()
    assert_app_ok(at)
    assert len(at.get("plotly_chart")) == 5 and len(at.dataframe[0].value) == 2 * 8

    # B switched to A's checkpoint: both halves of the pair table agree
    at.selectbox(key="model-B").set_value(at.selectbox(key="model-A").value).run()
    assert_app_ok(at)
    paired = at.dataframe[0].value
    a = paired[paired["model"].str.startswith("A")]["cosine"].to_numpy()
    b = paired[paired["model"].str.startswith("B")]["cosine"].to_numpy()
    np.testing.assert_array_equal(a, b)

    # a layer without a spatial map is an error message, not a traceback; the rest of the page still draws
    at.selectbox(key="similarity-layer").set_value("fc").run()
    assert not at.exception
    assert at.error and "4-D feature map" in at.error[0].value
    assert len(at.get("plotly_chart")) == 1  # inter-layer alignment
