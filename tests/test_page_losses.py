"""AppTest of the Losses and lambdas page: term table, lambda what-if, stage/pair choice, gradient shares, sweep."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.terms import sweep_table, tffd_terms_on_batch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "checkpoints")


def _report(name: str, n: int):
    model = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))[0]
    images, labels = sample_batch("digits", "test", n=n, seed=0)
    return tffd_terms_on_batch(model, images, labels)


def _figure(figures, title_start: str):
    found = [f for f in figures if (f.layout.title.text or "").startswith(title_start)]
    assert found, f"no figure titled {title_start!r}: {[f.layout.title.text for f in figures]}"
    return found[0]


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
        li, le = float(at.query_params["lambda_intra"]), float(at.query_params["lambda_inter"])
        w = ref.weighted(li, le)
        assert rows.loc[list(ref.intra), "weighted"].sum() == pytest.approx(w["intra"], rel=1e-5)
        assert rows.loc[list(ref.inter), "weighted"].sum() == pytest.approx(w["inter"], rel=1e-5)
    figures = chart_figures(at)
    _figure(figures, "Tf-FD terms on 24 images")
    _figure(figures, "CE vs weighted Tf-FD")
    share = _figure(figures, "Gradient norm per term and stage")
    z = np.asarray(share.data[0].z, dtype=float)
    np.testing.assert_allclose(np.nansum(z, axis=0)[np.isfinite(z).any(axis=0)], 100.0, rtol=1e-6)


def test_losses_lambdas_stages_and_pairs_are_mirrored_and_used(app_at, assert_app_ok, chart_figures):
    at = app_at("losses", n=16, lambda_intra="0.01", stages="layer3", pairs="layer1->layer2")
    assert_app_ok(at)
    assert at.select_slider(key="losses-lambda-intra").value == 0.01
    assert at.checkbox(key="losses-stage-layer3").value and not at.checkbox(key="losses-stage-layer1").value
    assert at.checkbox(key="losses-pair-layer1->layer2").value
    assert not at.checkbox(key="losses-pair-layer2->layer3").value
    at.select_slider(key="losses-lambda-inter").set_value(1.0).run()
    at.checkbox(key="losses-stage-layer2").check().run()
    assert_app_ok(at)
    qp = at.query_params
    assert qp["lambda_intra"] == "0.01" and qp["lambda_inter"] == "1.0"
    assert qp["stages"] == "layer2,layer3" and qp["pairs"] == "layer1->layer2"
    ref = _report(qp["a"], 16)
    w = ref.weighted(0.01, 1.0, stages=["layer2", "layer3"], pairs=["layer1->layer2"])
    bars = _figure(chart_figures(at), "CE vs weighted Tf-FD")
    a_trace = next(t for t in bars.data if t.name.startswith("A"))
    assert list(a_trace.y) == pytest.approx([w["ce"], w["intra"], w["inter"]], rel=1e-5)
    table = _terms_table(at)
    rows = table[table["model"].str.startswith("A")].set_index("term")
    assert list(rows.index[rows["in loss"]]) == ["ce", "layer2", "layer3", "layer1->layer2"]
    # gradient shares for model B, raw norms
    at.radio(key="losses-gn-model").set_value("B").run()
    at.toggle(key="losses-gn-raw").set_value(True).run()
    assert_app_ok(at)
    grad = _figure(chart_figures(at), "Gradient norm per term and stage, B")
    assert list(grad.data[0].y) == ["ce", "layer2", "layer3", "layer1->layer2"]


def test_losses_sweep_heatmaps_or_a_hint(app_at, assert_app_ok, chart_figures):
    at = app_at("losses", n=16)
    assert_app_ok(at)
    prefix = os.path.join(CKPT, "digits_sweep")
    if not (os.path.exists(prefix + ".json") or os.path.exists(prefix + ".csv")):
        assert any("tffd-viz sweep" in i.value for i in at.info)
        return
    rows = sweep_table(prefix)
    figures = chart_figures(at)
    acc = _figure(figures, "Sweep: test accuracy")
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("final_acc") is not None:
            key = (str(r.get("layers")), float(r["lambda_intra"]), float(r["lambda_inter"]))
            cells.setdefault(key, []).append(float(r["final_acc"]))
    drawn = np.concatenate([np.asarray(t.z, dtype=float).ravel() for t in acc.data])
    drawn = np.sort(drawn[np.isfinite(drawn)])
    np.testing.assert_allclose(drawn, np.sort([np.mean(v) for v in cells.values()]), rtol=1e-9)
    value = at.selectbox(key="losses-sweep-value")
    assert value.value.startswith("intra_")
    at.selectbox(key="losses-sweep-value").set_value("ce").run()
    assert_app_ok(at)
    _figure(chart_figures(at), "Sweep: mean ce")


def test_losses_without_any_term_is_the_plain_cross_entropy(app_at, assert_app_ok, chart_figures):
    at = app_at("losses", n=16, stages="", pairs="")
    assert_app_ok(at)
    assert not any(at.checkbox(key=f"losses-stage-{s}").value for s in ("layer1", "layer2", "layer3"))
    bars = _figure(chart_figures(at), "CE vs weighted Tf-FD")
    a_trace = next(t for t in bars.data if t.name.startswith("A"))
    assert list(a_trace.y)[1:] == [0.0, 0.0] and a_trace.y[0] == pytest.approx(_report(at.query_params["a"], 16).ce)
    assert next(m.value for m in at.metric if m.label.startswith("A: Tf-FD share")) == "0.00 %"


def test_losses_heldout_terms_come_from_the_cards_with_their_batch_noise(app_at, assert_app_ok, chart_figures):
    import math

    from tffd_viz.verdicts import NOISE_SIGMAS

    at = app_at("losses", n=16)
    assert_app_ok(at)
    cards = {slot: load_checkpoint(os.path.join(CKPT, f"{at.query_params[slot.lower()]}.safetensors"))[1]
             for slot in ("A", "B")}
    if any("heldout_terms" not in c for c in cards.values()):
        pytest.skip("the shipped cards hold no heldout_terms yet")
    held = {slot: c["heldout_terms"] for slot, c in cards.items()}
    fig = _figure(chart_figures(at), "Held-out intra terms")
    bars = {(t.name[0], t.xaxis): t for t in fig.data}
    for slot in ("A", "B"):
        np.testing.assert_allclose(bars[slot, "x"].y, [held[slot]["intra"][t] for t in bars[slot, "x"].x])
        np.testing.assert_allclose(bars[slot, "x2"].error_y.array,
                                   [held[slot]["intra_rel_std"][t] for t in bars[slot, "x2"].x])
    table = next(d.value for d in at.dataframe if "verdict (batches)" in d.value.columns)
    row = table.set_index(["quantity", "item"]).loc[("intra term / energy", "layer1")]
    sa, sb = held["A"]["intra_rel_std"]["layer1"], held["B"]["intra_rel_std"]["layer1"]
    assert row["batch noise ±"] == pytest.approx(NOISE_SIGMAS * math.hypot(sa, sb))
    assert row["verdict (batches)"].startswith(("within", "B higher", "B lower"))
