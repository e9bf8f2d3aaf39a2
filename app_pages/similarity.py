"""Similarity: channel cosine matrices in saliency order, salient/redundant pair similarity, inter-layer alignment."""

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure, show_table
from tffd_viz import plots
from tffd_viz.errors import TffdVizError

st.title("Similarity")
intro(
    "How alike the channels of one layer are, in **A** and in **B**. Each matrix holds the cosine between every "
    "pair of channels (each flattened over images and positions), rows and columns sorted by Tf-FD saliency, the "
    "dashed lines splitting the salient half (top left) from the redundant half (bottom right). Intra-layer Tf-FD "
    "pulls each redundant channel towards its salient partner, so a Tf-FD model should show higher "
    "salient-vs-redundant pair cosines; inter-layer Tf-FD pulls each shallow stage towards the pooled deeper ones, "
    "which the alignment panels show channel by channel."
)
sel = selection()
layer = layer_picker(sel, key="similarity")
names = {key: f"{key} · {sel.label(key)}" for key in sel.refs()}

views: dict[str, dict] = {}
for key, ref in sel.refs().items():
    try:
        views[key] = cache.run("tffd_viz.similarity:channel_similarity_views", ref, sel.batch.images, layer)
    except TffdVizError as exc:
        show_error(exc, f"Model {key}, layer {layer}")

st.subheader(f"Channel cosine similarity at {layer}, sorted by Tf-FD saliency")
st.caption(f"Over the {sel.batch.n} {sel.batch.split} images of the sample batch; hover a cell for the two "
           "channel indices.")
cols = st.columns(2)
for col, (key, view) in zip(cols, views.items()):
    with col:
        fig = plots.cosine_matrix_figure(view["cosine"], order=view["order"], title=f"{names[key]}: {layer}")
        show_figure(fig, key=f"cosine-{key}", name=f"channel_cosine_{key}_{layer}")

if views:
    st.subheader("Salient channel vs its paired redundant channel")
    st.caption("Pair i compares the channel of saliency rank i with the channel of rank C - C//2 + i, the pairs "
               "intra-layer Tf-FD pulls together; the legend gives each model's mean.")
    show_figure(plots.paired_similarity_figure({names[k]: v["paired"] for k, v in views.items()}, tap=layer),
                key="paired", name=f"paired_similarity_{layer}")
    rows = []
    for key, view in views.items():
        order = view["order"].tolist()
        c, half = len(order), len(order) // 2
        for i, value in enumerate(view["paired"].tolist()):
            rows.append({"model": names[key], "pair": i, "salient channel": order[i],
                         "redundant channel": order[c - half + i], "cosine": value})
    show_table(pd.DataFrame(rows), key="paired-table", name=f"paired_similarity_{layer}")

st.subheader("Inter-layer alignment (default stages)")
st.caption("For every pair of stages (shallow -> deep), the shallow map is average-pooled to the deep map's size "
           "and channel c of one is compared with channel c of the other, as inter-layer Tf-FD pairs them.")
alignments: dict[str, dict] = {}
for key, ref in sel.refs().items():
    try:
        alignments[names[key]] = cache.run("tffd_viz.similarity:inter_layer_alignments", ref, sel.batch.images)
    except TffdVizError as exc:
        show_error(exc, f"Inter-layer alignment of model {key}")
if alignments:
    show_figure(plots.alignment_figure(alignments), key="alignment", name="inter_layer_alignment")
    rows = [{"model": model, "pair": pair, "channel": c, "cosine": value}
            for model, pairs in alignments.items() for pair, values in pairs.items()
            for c, value in enumerate(values.tolist())]
    show_table(pd.DataFrame(rows), key="alignment-table", name="inter_layer_alignment")
