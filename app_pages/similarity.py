"""Similarity: channel cosine matrices in saliency order, salient/redundant pair similarity, inter-layer alignment."""

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure, show_table
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.noise_plots import cosine_reference_figure
from tffd_viz.scale import MAX_MATRIX_SIDE, ordered_block_mean
from tffd_viz.verdicts import random_pair_cosine

st.title("Similarity")
intro(
    "How alike the channels of one layer are, in **A** and in **B**. Each matrix holds the cosine between every "
    "pair of channels (each flattened over images and positions), rows and columns sorted by Tf-FD saliency, the "
    "dashed lines splitting the salient half (top left) from the redundant half (bottom right). Intra-layer Tf-FD "
    "pulls each redundant channel towards its salient partner, so a Tf-FD model should show "
    "salient-vs-redundant pair cosines above those of random channel pairs of the same layer (the cosine is "
    "scale-free: the loss, an MSE, also falls when the maps merely shrink); inter-layer Tf-FD pulls each "
    "shallow stage towards the pooled deeper ones, "
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
if sel.batch.image_size:
    st.caption(f"At {sel.batch.image_size}x{sel.batch.image_size} pixels each channel is a vector of n x H x W "
               "values over the whole batch (no pooling: 64 images of 56x56 maps give 200,704 values per channel); "
               f"layers with more than {MAX_MATRIX_SIDE} channels are drawn block-averaged in saliency order.")
cols = st.columns(2)
for col, (key, view) in zip(cols, views.items()):
    with col:
        if len(view["order"]) > MAX_MATRIX_SIDE:
            blocks, size = ordered_block_mean(view["cosine"], view["order"])
            fig = plots.cosine_matrix_figure(blocks, split_at=blocks.shape[0] // 2,
                                             title=f"{names[key]}: {layer} (mean of {size}x{size} channel blocks, "
                                                   "saliency order)")
        else:
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

    reference = {names[k]: {"paired": {layer: float(v["paired"].mean())},
                            "random": {layer: random_pair_cosine(v["cosine"])}} for k, v in views.items()
                 if v["cosine"].shape[0] > 1}
    if reference:
        show_figure(cosine_reference_figure(reference, title=f"Paired cosine vs random channel pairs at {layer}"),
                    key="paired-reference", name=f"paired_vs_random_{layer}")
        st.caption("Random pairs: the mean cosine over every pair of distinct channels of the layer. "
                   + "; ".join(f"{m}: paired {r['paired'][layer]:.3f}, random {r['random'][layer]:.3f} "
                               f"({r['paired'][layer] - r['random'][layer]:+.3f})" for m, r in reference.items())
                   + ". The Overview sets these against the seed or batch noise on the whole test split.")

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
