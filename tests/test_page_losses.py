"""AppTest of the Losses and lambdas page: term table, lambda what-if, stage/pair choice,
links with the choices."""

from __future__ import annotations

import os

import pytest
from conftest import figure_titled

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.terms import tffd_terms_on_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "checkpoints")


def _report(name: str, n: int):
    model = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))[0]
    images, labels = sample_batch("digits", "test", n=n, seed=0)
    return tffd_terms_on_batch(model, images, labels)


def _terms_table(at):
    return next(d.value for d in at.dataframe if "in loss" in d.value.columns)


def test_losses_term_table_equals_the_library(app_at, assert_app_ok, chart_figures):
    at = app_at("losses", n=24)
    assert_app_ok(at)
    assert at.title[0].value == "Losses and lambdas"
    a, b = at.query_params["a"], at.query_params["b"]
    table = _terms_table(at)
    for key, name in (("A", a), ("B", b)):
        ref = _report(name, 24)
        rows = table[table["model"] == f"{key} · {name}"].set_index("term")
        assert rows.loc["ce", "value"] == pytest.approx(ref.ce, rel=1e-5)
        for tap, value in ref.intra.items():
            assert rows.loc[tap, "value"] == pytest.approx(value, rel=1e-5)
        for pair, value in ref.inter.items():
            assert rows.loc[pair, "value"] == pytest.approx(value, rel=1e-5)
        assert rows["in loss"].all()
        # default lambdas: model B's card (a Tf-FD model) -> the weighted column is the library's weighting
        li, le = float(at.query_params["losses_lambda_intra"]), float(at.query_params["losses_lambda_inter"])
        w = ref.weighted(li, le)
        assert rows.loc[list(ref.intra), "weighted"].sum() == pytest.approx(w["intra"], rel=1e-5)
        assert rows.loc[list(ref.inter), "weighted"].sum() == pytest.approx(w["inter"], rel=1e-5)
    figures = chart_figures(at)
    figure_titled(figures, "Tf-FD terms on 24 images")
    figure_titled(figures, "CE vs weighted Tf-FD")


def test_losses_lambdas_stages_and_pairs_are_mirrored_and_used(app_at, assert_app_ok, chart_figures):
    at = app_at(
        "losses", n=16, losses_lambda_intra="0.01", losses_stages="layer3", losses_pairs="layer1->layer2"
    )
    assert_app_ok(at)
    assert at.select_slider(key="losses-lambda-intra").value == 0.01
    assert at.checkbox(key="losses-stage-layer3").value and not at.checkbox(key="losses-stage-layer1").value
    assert at.checkbox(key="losses-pair-layer1->layer2").value
    assert not at.checkbox(key="losses-pair-layer2->layer3").value
    at.select_slider(key="losses-lambda-inter").set_value(1.0).run()
    at.checkbox(key="losses-stage-layer2").check().run()
    assert_app_ok(at)
    qp = at.query_params
    assert qp["losses_lambda_intra"] == "0.01" and qp["losses_lambda_inter"] == "1.0"
    assert qp["losses_stages"] == "layer2,layer3" and qp["losses_pairs"] == "layer1->layer2"
    ref = _report(qp["a"], 16)
    w = ref.weighted(0.01, 1.0, stages=["layer2", "layer3"], pairs=["layer1->layer2"])
    bars = figure_titled(chart_figures(at), "CE vs weighted Tf-FD")
    a_trace = next(t for t in bars.data if t.name.startswith("A"))
    assert list(a_trace.y) == pytest.approx([w["ce"], w["intra"], w["inter"]], rel=1e-5)
    table = _terms_table(at)
    rows = table[table["model"].str.startswith("A")].set_index("term")
    assert list(rows.index[rows["in loss"]]) == ["ce", "layer2", "layer3", "layer1->layer2"]


def test_losses_without_any_term_is_the_plain_cross_entropy(app_at, assert_app_ok, chart_figures):
    at = app_at("losses", n=16, losses_stages="", losses_pairs="")
    assert_app_ok(at)
    assert not any(at.checkbox(key=f"losses-stage-{s}").value for s in ("layer1", "layer2", "layer3"))
    bars = figure_titled(chart_figures(at), "CE vs weighted Tf-FD")
    a_trace = next(t for t in bars.data if t.name.startswith("A"))
    assert list(a_trace.y)[1:] == [0.0, 0.0] and a_trace.y[0] == pytest.approx(
        _report(at.query_params["a"], 16).ce
    )
    assert next(m.value for m in at.metric if m.label.startswith("A: Tf-FD share")) == "0.00 %"
