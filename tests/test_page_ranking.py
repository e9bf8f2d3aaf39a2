"""AppTest of the Channel ranking page: saliency bars and table, criteria and their agreement."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import figure_titled

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.features import extract_features
from tffd_viz.importance import rank_agreement
from tffd_viz.losses import channel_saliency

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _model(name: str):
    return load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))[0]


def _assert_axis_shows_the_gap(bars) -> None:
    """Every panel's y axis spans the scores of all models, 10 % of their range either side (not from 0)."""
    ys = np.concatenate([np.asarray(t.y, dtype=float) for t in bars.data if t.type == "bar"])
    lo, hi = float(ys.min()), float(ys.max())
    axes = [v for k, v in bars.to_dict()["layout"].items() if k.startswith("yaxis")]
    assert axes and all(
        ax["range"] == pytest.approx([lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)]) for ax in axes
    )
    assert lo > 0.1 * (
        hi - lo
    )  # the shipped saliencies are positive and close: from 0 the gap would not show
    assert all(ax["range"][0] > 0 for ax in axes)


def test_ranking_defaults_match_the_library(app_at, assert_app_ok, chart_figures):
    at = app_at("ranking", n=24)
    assert_app_ok(at)
    assert at.title[0].value == "Channel ranking"
    layer = at.selectbox(key="ranking-layer").value
    assert layer == "layer3"
    a = at.query_params["a"]
    images, labels = sample_batch("digits", "test", n=24, seed=0)
    f = extract_features(_model(a), images, [layer])[layer]
    saliency = channel_saliency(f).numpy()
    table = at.dataframe[0].value
    rows_a = table[table["model"] == f"A: {a}"].sort_values("channel")
    np.testing.assert_allclose(rows_a["score"].to_numpy(), saliency, rtol=1e-5, atol=1e-7)
    assert (rows_a["half"] == "salient").sum() == len(saliency) // 2
    figures = chart_figures(at)
    bars = figure_titled(figures, "Channel saliency, sorted")
    np.testing.assert_allclose(np.asarray(bars.data[0].y, dtype=float), np.sort(saliency)[::-1], rtol=1e-5)
    _assert_axis_shows_the_gap(bars)
    # the agreement heatmap of A is the library's rank correlation of the picked criteria
    picked = at.multiselect(key="ranking-criteria").value
    assert "tffd" in picked and len(picked) >= 4
    heat = figure_titled(figures, "Rank agreement, A")
    assert np.asarray(heat.data[0].z).shape == (len(picked), len(picked))
    # one panel: the same axis off zero
    at.toggle(key="ranking-overlay").set_value(True).run()
    assert_app_ok(at)
    one = figure_titled(chart_figures(at), "Channel saliency, sorted")
    assert "yaxis2" not in one.to_dict()["layout"]
    _assert_axis_shows_the_gap(one)
    del labels


def test_ranking_reacts_to_layer_and_criteria(app_at, assert_app_ok, chart_figures):
    at = app_at("ranking", n=16)
    at.selectbox(key="ranking-layer").set_value("layer1").run()
    assert_app_ok(at)
    assert at.query_params["ranking_layer"] == "layer1"
    table = at.dataframe[0].value
    assert set(table["tap"]) == {"layer1"} and table["channel"].max() == 15  # resnet8 layer1: 16 channels
    at.multiselect(key="ranking-criteria").set_value(["tffd", "l1"]).run()
    at.radio(key="ranking-corr").set_value("Kendall τ").run()
    assert_app_ok(at)
    heat = figure_titled(chart_figures(at), "Rank agreement, A")
    z = np.asarray(heat.data[0].z, dtype=float)
    scores = at.dataframe[1].value
    a = scores[scores["model"].str.startswith("A")]
    ref = rank_agreement(
        {
            c: np.array(a[a["criterion"] == c].sort_values("channel")["score"], dtype=float)
            for c in ("tffd", "l1")
        }
    )
    np.testing.assert_allclose(z, ref["kendall"], atol=1e-9)


def test_ranking_follows_a_model_switch(app_at, assert_app_ok, chart_figures):
    at = app_at("ranking", n=16)
    other = "digits_resnet8_baseline_s1"
    at.selectbox(key="model-B").set_value(other).run()
    assert_app_ok(at)
    bars = figure_titled(chart_figures(at), "Channel saliency, sorted")
    assert [t.name for t in bars.data][1] == f"B · {other}"
