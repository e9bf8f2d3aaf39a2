"""AppTest of the Evolution page: rank heatmaps per epoch, boundary crossings, stable epoch, term curves."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from conftest import figure_titled

from tffd_viz.checkpoints import empty_card, save_checkpoint
from tffd_viz.dynamics import rank_change_stats, rank_matrix, split_stable_epoch
from tffd_viz.models import create_model

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _history(name: str) -> list[dict]:
    with open(os.path.join(CKPT, f"{name}.json")) as fh:
        return json.load(fh)["history"]


def _metric(at, prefix: str) -> str:
    return next(m.value for m in at.metric if m.label.startswith(prefix))


def test_evolution_values_match_dynamics(app_at, assert_app_ok, chart_figures):
    at = app_at("evolution", n=16)
    assert_app_ok(at)
    assert at.title[0].value == "Evolution"
    tap = at.selectbox(key="evolution-tap").value
    assert tap == "layer3"
    a, b = at.query_params["a"], at.query_params["b"]
    figures = chart_figures(at)
    for key, name in (("A", a), ("B", b)):
        history = _history(name)
        ranks = rank_matrix(history, tap)
        heat = figure_titled(figures, f"{key} · {name}: rank per epoch")
        order = np.argsort(ranks[-1], kind="stable")
        np.testing.assert_array_equal(np.asarray(heat.data[0].z, dtype=float), ranks[:, order].T)
        stable = split_stable_epoch(history, tap, tolerance=0)
        assert _metric(at, f"{key}: split stable") == (
            "never (still changing)" if stable is None else str(stable)
        )
    crossings = figure_titled(figures, "Ranking changes between consecutive epochs")
    trace = next(t for t in crossings.data if t.name == f"A · {a} · crossings")
    assert list(trace.y) == [row["crossings"] for row in rank_change_stats(_history(a), tap)]
    curves = figure_titled(figures, "Training curves")
    assert any(t.name == f"B · {b} · intra layer1" for t in curves.data)
    table = next(d.value for d in at.dataframe if "tffd_total" in d.value.columns)
    rows = table[table["model"] == f"A · {a}"]
    np.testing.assert_allclose(rows["ce"].to_numpy(), [h["ce"] for h in _history(a)])


def test_evolution_reacts_to_stage_tolerance_and_model(app_at, assert_app_ok, chart_figures):
    at = app_at("evolution", n=16)
    at.selectbox(key="evolution-tap").set_value("layer1").run()
    at.slider(key="evolution-tol").set_value(2).run()
    assert_app_ok(at)
    assert at.query_params["evolution_tap"] == "layer1"
    a = at.query_params["a"]
    stable = split_stable_epoch(_history(a), "layer1", tolerance=2)
    assert _metric(at, "A: split stable") == ("never (still changing)" if stable is None else str(stable))
    heat = figure_titled(chart_figures(at), f"A · {a}: rank per epoch, layer1")
    assert np.asarray(heat.data[0].z).shape[0] == 16  # resnet8 layer1 channels
    other = "digits_resnet8_baseline_s1"
    at.selectbox(key="model-B").set_value(other).run()
    assert_app_ok(at)
    figure_titled(chart_figures(at), f"B · {other}: rank per epoch")


def test_an_upload_without_history_gets_a_clear_message(app_at, assert_app_ok, chart_figures, tmp_path):
    from app_pages._sidebar import UPLOAD

    torch.manual_seed(0)
    card = empty_card()
    card.update(arch="resnet8", num_classes=10, in_chans=1, dataset="digits")
    path = save_checkpoint(
        create_model("resnet8", num_classes=10, in_chans=1), card, tmp_path / "nohist.safetensors"
    )
    at = app_at("evolution", n=16)
    at.selectbox(key="model-B").set_value(UPLOAD).run()
    at.file_uploader(key="upload-B").upload("nohist.safetensors", path.read_bytes()).run()
    assert_app_ok(at)
    assert any("Model B (nohist.safetensors) has no training history" in i.value for i in at.info)
    assert figure_titled(chart_figures(at), f"A · {at.query_params['a']}: rank per epoch")  # A is still drawn
