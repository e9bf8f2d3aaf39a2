"""Gradient shares: how hard cross-entropy and each weighted Tf-FD term pull on each stage's parameters."""

from __future__ import annotations

import dataclasses

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import loss_picker, selection
from app_pages._ui import intro, show_error, show_figure
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.terms import gradient_norm_share, tffd_terms_on_batch

GRAD_MAX_IMAGES = 32
GRAD_MAX_IMAGES_LARGE = 8  # inputs larger than 32x32

st.title("Gradient shares")
intro(
    "Which terms of the loss move which stage: the L2 norm of the gradient that the cross-entropy and each "
    "weighted Tf-FD term send to each stage's parameters, as a share of the stage's column (each column sums "
    "to 100 %). A term whose share is tiny everywhere trains nothing, whatever its value; pick the lambdas, "
    "stages and pairs as on **Losses and lambdas**."
)
sel = selection()
c1, c2 = st.columns(2)
key = c1.radio("Model", list(sel.refs()), horizontal=True, format_func=sel.labels.get, key="gradients-model")
raw = c2.toggle("Raw norms (log colour) instead of shares", value=False, key="gradients-raw")
try:
    report = cache.run(tffd_terms_on_batch, sel.refs()[key], sel.batch.images, sel.batch.labels)
except TffdVizError as exc:
    show_error(exc, f"Tf-FD terms of model {key} ({sel.label(key)})")
    st.stop()
loss = loss_picker(sel, "gradients", list(report.intra), list(report.inter))
stages, pairs = loss.of(report.intra, report.inter)

st.subheader("Gradient-norm share per stage")
# one backward pass per term: at 224 pixels (ImageNet models) a pass costs ~50x one at 32, so fewer images
most = GRAD_MAX_IMAGES if (sel.batch.image_size or 32) <= 32 else GRAD_MAX_IMAGES_LARGE
batch = dataclasses.replace(sel.batch, n=min(sel.batch.n, most))
st.caption(
    "One backward pass per term, on "
    + (
        f"{batch.n} images drawn with the sidebar's seed (the passes are the slow part of this page)."
        if batch.n < sel.batch.n
        else "the sample batch."
    )
)
try:
    with st.spinner("Backward passes ..."):
        share = cache.run(
            gradient_norm_share,
            sel.refs()[key],
            batch.images,
            batch.labels,
            loss.lambda_intra,
            loss.lambda_inter,
            stages=tuple(stages),
            pairs=tuple(tuple(p.split("->")) for p in pairs),
        )
except TffdVizError as exc:
    show_error(exc, "Gradient-norm share")
    st.stop()
fig = cache.figure(
    plots.grad_share_figure,
    share["norms"],
    share["terms"],
    share["groups"],
    share=not raw,
    log_color=raw,
    title=f"Gradient norm per term and stage, {sel.labels[key]}",
)
show_figure(fig, key="gradients-share", name=f"grad_share_{key}")
