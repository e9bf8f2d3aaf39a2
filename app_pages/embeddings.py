"""Embeddings: PCA / t-SNE of a layer's pooled features, and linear-probe accuracy per stage."""

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure, show_table
from tffd_viz import plots
from tffd_viz.embeddings import MIN_TSNE_SAMPLES
from tffd_viz.errors import TffdVizError

METHODS = {"pca": "PCA", "tsne": "t-SNE"}
TSNE_DEFAULT_N = 200

st.title("Embeddings")
intro(
    "Each image as one point: the chosen layer's feature maps are averaged over positions (one value per channel) "
    "and projected to 2-D, coloured by the true class; well separated colours mean the layer already sorts the "
    "images by class. The probe chart measures the same thing per stage: the test accuracy of a logistic "
    "regression fitted on those pooled features. Inter-layer Tf-FD, which makes shallow stages mimic deep ones, "
    "should raise the shallow stages' probe accuracy of B."
)
sel = selection()
names = {key: f"{key} · {sel.label(key)}" for key in sel.refs()}

c1, c2 = st.columns([2, 1])
with c1:
    layer = layer_picker(sel, key="embeddings")
with c2:
    qp_method = st.query_params.get("emb_method", "pca")
    method = st.radio("Method", list(METHODS), format_func=METHODS.get, horizontal=True, key="emb-method",
                      index=list(METHODS).index(qp_method) if qp_method in METHODS else 0)
st.query_params["emb_method"] = method

kw: dict = {}
n_points = sel.batch.n
if method == "tsne":
    t1, t2 = st.columns(2)
    with t1:
        low = min(MIN_TSNE_SAMPLES, sel.batch.n)
        n_points = int(st.number_input("t-SNE points (the first images of the batch)", min_value=low,
                                       max_value=sel.batch.n, value=max(low, min(TSNE_DEFAULT_N, sel.batch.n)),
                                       step=50, key="emb-tsne-n"))
    with t2:
        kw["perplexity"] = float(st.slider("Perplexity", min_value=5, max_value=50, value=30, key="emb-perplexity"))
    st.warning(f"t-SNE is slow on a CPU (seconds for {TSNE_DEFAULT_N} points, minutes for thousands), so it embeds "
               f"only the first {n_points} images; raise the number with care. Distances between clusters in a "
               "t-SNE plot mean little; PCA is linear and exact.")
    kw["max_samples"] = n_points

batch = cache.batch(sel.batch)
st.subheader(f"{METHODS[method]} of {layer} (pooled), {n_points} {sel.batch.split} images")
cols = st.columns(2)
for col, (key, ref) in zip(cols, sel.refs().items()):
    with col:
        try:
            with st.spinner(f"{METHODS[method]} of model {key} ..."):
                coords, axes = cache.run("tffd_viz.embeddings:layer_embedding", ref, sel.batch.images, layer,
                                         method=method, seed=sel.batch.seed, **kw)
        except TffdVizError as exc:
            show_error(exc, f"{METHODS[method]} of model {key}")
            continue
        fig = plots.embedding_figure(coords, batch["labels"][:n_points], class_names=list(sel.classes),
                                     title=f"{names[key]}: {layer}", indices=batch["indices"][:n_points],
                                     axis_names=tuple(axes))
        show_figure(fig, key=f"embedding-{key}", name=f"{method}_{key}_{layer}")

st.subheader("Linear-probe accuracy per stage")
st.caption(f"Logistic regression on the standardised pooled features of each default stage: fitted on 70 % of "
           f"the {sel.batch.n} images of the sample batch, accuracy on the other 30 % (same split for every "
           "stage and model). Use a larger batch in the sidebar for steadier numbers.")
tables = {}
for key, ref in sel.refs().items():
    try:
        tables[names[key]] = cache.run("tffd_viz.embeddings:layer_probe_table", ref, sel.batch.images,
                                       sel.batch.labels, seed=sel.batch.seed)
    except TffdVizError as exc:
        show_error(exc, f"Linear probe of model {key}")
if tables:
    show_figure(plots.probe_accuracy_figure(tables), key="probe", name="linear_probe_accuracy")
    df = pd.DataFrame([{"model": model, **row} for model, rows in tables.items() for row in rows])
    show_table(df, key="probe-table", name="linear_probe_accuracy")
