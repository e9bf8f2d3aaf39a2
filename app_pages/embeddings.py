"""Embeddings: PCA / t-SNE of a layer's pooled features, and linear-probe accuracy per stage."""

from __future__ import annotations

import math

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, layer_picker, selection
from app_pages._ui import intro, option_index, query_param, show_error, show_figure, show_table
from tffd_viz import plots
from tffd_viz.embeddings import MIN_TSNE_SAMPLES, layer_embedding, layer_probe_table
from tffd_viz.errors import TffdVizError
from tffd_viz.tables import labelled_rows

METHODS = {"pca": "PCA", "tsne": "t-SNE"}
TSNE_DEFAULT_N = 200
PROBE_FIT_SHARE = 0.7  # the probe fits on 70 % of the batch (layer_probe_table's default split)

st.title("Embeddings")
intro(
    "Each image as one point: the chosen layer's feature maps are averaged over positions (one value per "
    "channel) and projected to 2-D, coloured by the true class; well separated colours mean the layer "
    "already sorts the images by class. The probe chart measures the same thing per stage: the test accuracy "
    "of a logistic regression fitted on those pooled features. Inter-layer Tf-FD, which makes shallow stages "
    "mimic deep ones, should raise the shallow stages' probe accuracy of B."
)
sel = selection()
c1, c2 = st.columns([2, 1])
with c1:
    layer = layer_picker(sel, "embeddings")
method = c2.radio(
    "Method",
    list(METHODS),
    format_func=METHODS.get,
    horizontal=True,
    key="embeddings-method",
    index=option_index(list(METHODS), query_param("embeddings_method", "pca")),
)
st.query_params["embeddings_method"] = method

kw: dict = {}
n_points = sel.batch.n
if method == "tsne":
    t1, t2 = st.columns(2)
    low = min(MIN_TSNE_SAMPLES, sel.batch.n)
    n_points = int(
        t1.number_input(
            "t-SNE points (the first images of the batch)",
            min_value=low,
            max_value=sel.batch.n,
            value=max(low, min(TSNE_DEFAULT_N, sel.batch.n)),
            step=50,
            key="embeddings-tsne-n",
        )
    )
    kw["perplexity"] = float(
        t2.slider("Perplexity", min_value=5, max_value=50, value=30, key="embeddings-perplexity")
    )
    st.warning(
        f"t-SNE is slow on a CPU (seconds for {TSNE_DEFAULT_N} points, minutes for thousands), so it embeds "
        f"only the first {n_points} images; raise the number with care. Distances between clusters in a "
        "t-SNE plot mean little; PCA is linear and exact."
    )
    kw["max_samples"] = n_points

batch = cache.batch(sel.batch)
st.subheader(f"{METHODS[method]} of {layer} (pooled), {n_points} {sel.batch.split} images")
for col, (key, ref) in zip(st.columns(2), sel.refs().items()):
    try:
        with col, st.spinner(f"{METHODS[method]} of model {key} ..."):
            coords, axes = cache.run(
                layer_embedding, ref, sel.batch.images, layer, method=method, seed=sel.batch.seed, **kw
            )
    except TffdVizError as exc:
        with col:
            show_error(exc, f"{METHODS[method]} of model {key}")
        continue
    fig = cache.figure(
        plots.embedding_figure,
        coords,
        batch["labels"][:n_points],
        class_names=list(sel.classes),
        title=f"{sel.labels[key]}: {layer}",
        indices=batch["indices"][:n_points],
        axis_names=tuple(axes),
    )
    with col:
        show_figure(fig, key=f"embeddings-{key}", name=f"{method}_{key}_{layer}")

st.subheader("Linear-probe accuracy per stage")
st.caption(
    f"Logistic regression on the standardised pooled features of each default stage: fitted on 70 % of "
    f"the {sel.batch.n} images of the sample batch, accuracy on the other 30 % (same split for every "
    "stage and model). Use a larger batch in the sidebar for steadier numbers."
)
least = math.ceil(2 * len(sel.classes) / PROBE_FIT_SHARE)  # two images of each class to fit on
if sel.batch.n < least:
    st.info(
        f"A probe of {len(sel.classes)} classes needs two images of each to fit on: choose at least {least} "
        f"images in the sidebar (now {sel.batch.n})."
    )
    st.stop()
found = each_model(
    sel, "Linear probe", layer_probe_table, sel.batch.images, sel.batch.labels, seed=sel.batch.seed
)
tables = {sel.labels[key]: rows for key, rows in found.items()}
if tables:
    show_figure(
        cache.figure(plots.probe_accuracy_figure, tables),
        key="embeddings-probe",
        name="linear_probe_accuracy",
    )
    show_table(labelled_rows(tables), key="embeddings-probe", name="linear_probe_accuracy")
