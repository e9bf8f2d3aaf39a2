"""Similarity: channel cosines in saliency order, salient/redundant pair similarity, inter-layer alignment."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, layer_picker, selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import plots
from tffd_viz.scale import MAX_MATRIX_SIDE, ordered_block_mean
from tffd_viz.similarity import channel_similarity_views, inter_layer_alignments
from tffd_viz.tables import alignment_rows, paired_cosine_rows
from tffd_viz.verdicts import random_pair_cosine

st.title("Similarity")
intro(
    "How alike the channels of one layer are, in **A** and in **B**. Each matrix holds the "
    "cosine between every pair of channels (each flattened over images and positions), rows and "
    "columns sorted by Tf-FD saliency, the dashed lines splitting the salient half (top left) "
    "from the redundant half (bottom right). Intra-layer Tf-FD pulls each redundant channel "
    "towards its salient partner, so a Tf-FD model should show salient-vs-redundant pair cosines "
    "above those of random channel pairs of the same layer (the cosine is scale-free: the loss, "
    "an MSE, also falls when the maps merely shrink); inter-layer Tf-FD pulls each shallow "
    "stage towards the pooled deeper ones, which the alignment panels show channel by channel."
)
sel = selection()
layer = layer_picker(sel, "similarity")
names = sel.labels
views = each_model(sel, f"Channel cosines at {layer}", channel_similarity_views, sel.batch.images, layer)

st.subheader(f"Channel cosine similarity at {layer}, sorted by Tf-FD saliency")
st.caption(
    f"Over the {sel.batch.n} {sel.batch.split} images of the sample batch; hover a cell for the two "
    "channel indices."
)
if sel.batch.image_size:
    st.caption(
        f"At {sel.batch.image_size}x{sel.batch.image_size} pixels each channel is a vector of n x H x W "
        "values over the whole batch (no pooling: 64 images of 56x56 maps give 200,704 values per channel); "
        f"layers with more than {MAX_MATRIX_SIDE} channels are drawn block-averaged in saliency order."
    )
for col, (key, view) in zip(st.columns(2), views.items()):
    if len(view["order"]) > MAX_MATRIX_SIDE:
        blocks, size = ordered_block_mean(view["cosine"], view["order"])
        title = f"{names[key]}: {layer} (mean of {size}x{size} channel blocks, saliency order)"
        fig = cache.figure(plots.cosine_matrix_figure, blocks, split_at=blocks.shape[0] // 2, title=title)
    else:
        fig = cache.figure(
            plots.cosine_matrix_figure, view["cosine"], order=view["order"], title=f"{names[key]}: {layer}"
        )
    with col:
        show_figure(fig, key=f"similarity-cosine-{key}", name=f"channel_cosine_{key}_{layer}")

if views:
    st.subheader("Salient channel vs its paired redundant channel")
    st.caption(
        "Pair i compares the channel of saliency rank i with the channel of rank C - C//2 + i, the pairs "
        "intra-layer Tf-FD pulls together; the legend gives each model's mean."
    )
    fig = cache.figure(
        plots.paired_similarity_figure, {names[k]: v["paired"] for k, v in views.items()}, tap=layer
    )
    show_figure(fig, key="similarity-paired", name=f"paired_similarity_{layer}")
    rows = paired_cosine_rows({names[k]: v for k, v in views.items()})
    show_table(rows, key="similarity-paired", name=f"paired_similarity_{layer}")
    reference = {
        names[k]: {
            "paired": {layer: float(v["paired"].mean())},
            "random": {layer: random_pair_cosine(v["cosine"])},
        }
        for k, v in views.items()
        if v["cosine"].shape[0] > 1
    }
    if reference:
        fig = cache.figure(
            plots.cosine_reference_figure,
            reference,
            title=f"Paired cosine vs random channel pairs at {layer}",
        )
        show_figure(fig, key="similarity-reference", name=f"paired_vs_random_{layer}")
        st.caption(
            "Random pairs: the mean cosine over every pair of distinct channels of the layer. "
            + "; ".join(
                f"{m}: paired {r['paired'][layer]:.3f}, random {r['random'][layer]:.3f} "
                f"({r['paired'][layer] - r['random'][layer]:+.3f})"
                for m, r in reference.items()
            )
            + ". **What changed** sets these against the seed or batch noise on the whole test split."
        )

st.subheader("Inter-layer alignment (default stages)")
st.caption(
    "For every pair of stages (shallow -> deep), the shallow map is average-pooled to the deep map's size "
    "and channel c of one is compared with channel c of the other, as inter-layer Tf-FD pairs them."
)
found = each_model(sel, "Inter-layer alignment", inter_layer_alignments, sel.batch.images)
alignments = {names[key]: pairs for key, pairs in found.items()}
if alignments:
    show_figure(
        cache.figure(plots.alignment_figure, alignments),
        key="similarity-alignment",
        name="inter_layer_alignment",
    )
    show_table(alignment_rows(alignments), key="similarity-alignment", name="inter_layer_alignment")
