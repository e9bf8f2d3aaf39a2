"""AppTest of the Gradient shares page: the library's gradient-norm shares for the chosen model and terms."""

from __future__ import annotations

import os

import numpy as np
from conftest import figure_titled

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.terms import gradient_norm_share

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")
QUERY = {
    "gradients_lambda_intra": "0.01",
    "gradients_lambda_inter": "1.0",
    "gradients_stages": "layer2,layer3",
    "gradients_pairs": "layer1->layer2",
}


def test_shares_sum_to_one_hundred_per_stage(app_at, assert_app_ok, chart_figures):
    at = app_at("gradients", n=16)
    assert_app_ok(at)
    assert at.title[0].value == "Gradient shares"
    share = figure_titled(chart_figures(at), "Gradient norm per term and stage, A")
    z = np.asarray(share.data[0].z, dtype=float)
    np.testing.assert_allclose(np.nansum(z, axis=0)[np.isfinite(z).any(axis=0)], 100.0, rtol=1e-6)


def test_model_terms_and_raw_norms_are_the_library(app_at, assert_app_ok, chart_figures):
    at = app_at("gradients", n=16, **QUERY)
    assert (
        at.checkbox(key="gradients-stage-layer3").value
        and not at.checkbox(key="gradients-stage-layer1").value
    )
    at.radio(key="gradients-model").set_value("B").run()
    at.toggle(key="gradients-raw").set_value(True).run()
    assert_app_ok(at)
    grad = figure_titled(chart_figures(at), "Gradient norm per term and stage, B")
    assert list(grad.data[0].y) == ["ce", "layer2", "layer3", "layer1->layer2"]
    model = load_checkpoint(os.path.join(CKPT, f"{at.query_params['b']}.safetensors"))[0]
    images, labels = sample_batch("digits", "test", n=16, seed=0)
    ref = gradient_norm_share(
        model, images, labels, 0.01, 1.0, stages=("layer2", "layer3"), pairs=(("layer1", "layer2"),)
    )
    norms = np.asarray(ref["norms"], dtype=float)  # raw norms on hover, their log10 as the colour
    np.testing.assert_allclose(np.asarray(grad.data[0].customdata, dtype=float), norms, rtol=1e-5)
    logs = np.full_like(norms, np.nan)
    np.log10(norms, out=logs, where=norms > 0)  # a term that sends no gradient to a group: an empty cell
    np.testing.assert_allclose(np.asarray(grad.data[0].z, dtype=float), logs, rtol=1e-5)


def test_the_losses_page_links_here_with_its_choices(app_at, assert_app_ok):
    at = app_at("losses", n=16, losses_lambda_intra="0.01", losses_stages="layer3")
    assert_app_ok(at)
    links = [e.proto for e in at.get("page_link") if "gradients" in e.proto.page]
    assert links, "no link to the Gradient shares page"
    query = links[0].query_string
    assert (
        "gradients_lambda_intra=0.01" in query
        and "gradients_stages=layer3" in query
        and "losses_" not in query
    )
