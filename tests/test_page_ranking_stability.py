"""AppTest of the Ranking stability page: bootstrap rank bands and split stability, equal to the library's."""

from __future__ import annotations

import os

import numpy as np
from conftest import figure_titled

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.importance import tap_rank_stability

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _stability(name: str, layer: str, n: int, **kw) -> dict:
    model = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))[0]
    images, _ = sample_batch("digits", "test", n=n, seed=0)
    return tap_rank_stability(model, images, layer, **kw)


def test_bands_and_split_equal_the_library(app_at, assert_app_ok, chart_figures):
    at = app_at("ranking_stability", n=24)
    assert_app_ok(at)
    assert at.title[0].value == "Ranking stability"
    layer = at.selectbox(key="ranking_stability-layer").value
    assert layer == "layer3"
    ref = _stability(at.query_params["a"], layer, 24, n_boot=100, seed=0, ci=0.9)
    figures = chart_figures(at)
    band = figure_titled(figures, "Bootstrap rank bands")
    np.testing.assert_array_equal(np.asarray(band.data[1].y, dtype=float), np.sort(ref["rank"]).astype(float))
    split = figure_titled(figures, "Stability of the salient/redundant split")
    order = np.argsort(ref["rank"], kind="stable")
    np.testing.assert_allclose(np.asarray(split.data[0].y, dtype=float), ref["p_salient"][order])
    table = at.dataframe[0].value
    rows = table[table["model"] == f"A · {at.query_params['a']}"].sort_values("channel")
    np.testing.assert_array_equal(rows["rank"].to_numpy(), ref["rank"])
    np.testing.assert_allclose(rows["p_salient"].to_numpy(), ref["p_salient"])


def test_resamples_layer_and_criterion_are_used(app_at, assert_app_ok):
    at = app_at("ranking_stability", n=16, ranking_stability_layer="layer1")
    assert at.selectbox(key="ranking_stability-layer").value == "layer1"
    at.select_slider(key="ranking_stability-nboot").set_value(20).run()
    at.selectbox(key="ranking_stability-criterion").set_value("l1").run()
    assert_app_ok(at)
    ref = _stability(at.query_params["a"], "layer1", 16, criterion="l1", n_boot=20, seed=0, ci=0.9)
    table = at.dataframe[0].value
    rows = table[table["model"] == f"A · {at.query_params['a']}"].sort_values("channel")
    assert len(rows) == 16  # resnet8 layer1: 16 channels
    np.testing.assert_allclose(rows["p_salient"].to_numpy(), ref["p_salient"])
