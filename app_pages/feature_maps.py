"""Feature maps: one image's channel maps in a layer, ordered by Tf-FD saliency, salient half beside redundant half."""

from __future__ import annotations

import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure
from tffd_viz.errors import TffdVizError

# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).
VIEWS = {"paired": "Pairs: each salient channel above its redundant partner",
         "grid": "Grid: every channel, salient half first"}
PAIRS_PER_ROW = 4
"""Pairs (paired view) or tiles (grid view) per row: readable tiles and labels in a half-width column."""
TILE_SIDE_LARGE = 56
"""Largest tile side for 224-pixel models (a ResNet's 56x56 layer1 maps as they are; MobileNetV2's 112x112
features.1 block-averaged 2x2); the CIFAR zoo's maps are drawn at 32 at most."""



def _image_param(n: int) -> int:
    try:
        return min(max(int(st.query_params.get("image", 0)), 0), n - 1)
    except (TypeError, ValueError):
        return 0


st.title("Feature maps")
intro(
    "The activation maps of one image in one layer, one tile per channel, ordered by Tf-FD saliency (computed on the "
    "whole sample batch, as Tf-FD does during training). In the **paired** view each salient channel (green title) "
    "sits above the redundant channel that intra-layer Tf-FD pulls towards it (grey title); the **grid** view shows "
    "all channels, salient half first. Model A is on the left, model B on the right, on one colour scale per model."
)
sel = selection()
refs = sel.refs()
labels = {key: f"{key} · {sel.label(key)}" for key in refs}

c1, c2 = st.columns([3, 1])
with c1:
    layer = layer_picker(sel, key="maps")
    image = st.slider("Image (position in the sample batch)", 0, sel.batch.n - 1,
                      value=_image_param(sel.batch.n), key="maps-image")
    st.query_params["image"] = str(image)
    view = st.radio("View", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="maps-view")
    most = st.slider("Most pairs / tiles shown", 4, 64, value=12 if view == "paired" else 32, step=4,
                     key=f"maps-max-{view}")
with c2:
    batch = cache.batch(sel.batch)
    split = cache.batch_split(sel.batch)
    label = sel.classes[int(batch["labels"][image])]
    thumb = split.float01(batch["indices"][image: image + 1])[0]
    st.image(thumb[0].numpy() if thumb.shape[0] == 1 else thumb.permute(1, 2, 0).numpy(), width=128, clamp=True,
             caption=f"{sel.batch.split} image {int(batch['indices'][image])}, label {label}")

# tiles are block-averaged down to this side: 32 for the CIFAR zoo, 56 (a ResNet's layer1 as it is) at 224 pixels
max_side = TILE_SIDE_LARGE if sel.batch.image_size else 32
for col, (key, ref) in zip(st.columns(2), refs.items()):
    with col:
        st.markdown(f"**{labels[key]}**")
        try:
            ranking = cache.run("tffd_viz.importance:tap_rankings", ref, "tffd", images=sel.batch.images,
                                taps=[layer])[layer]
            feats = cache.run_resource("tffd_viz.features:extract_features", ref, sel.batch.images, [layer])
        except TffdVizError as exc:
            show_error(exc, f"Layer {layer!r} of model {key}")
            continue
        maps = feats[layer][image]
        if maps.dim() != 3:
            st.warning(f"{layer} of model {key} gives {tuple(maps.shape)} per image, not channel maps (C, H, W).")
            continue
        title = f"{key}: {layer}, image {image}"  # short: the figure sits in a half-width column
        if view == "paired":
            fig = cache.run_resource("tffd_viz.plots:paired_maps_figure", maps.numpy(), ranking.order, max_pairs=most,
                                     cols=PAIRS_PER_ROW, title=title, max_side=max_side)
        else:
            fig = cache.run_resource("tffd_viz.plots:feature_maps_figure", maps.numpy(), ranking.order,
                                     max_channels=most, cols=PAIRS_PER_ROW, title=title, max_side=max_side)
        show_figure(fig, key=f"maps-{key}", name=f"feature_maps_{layer}_{image}_{key}")
        shrunk = max(maps.shape[1:]) > max_side
        st.caption(f"{ranking.channels} channels of {tuple(maps.shape[1:])} pixels"
                   + (f" (drawn block-averaged to at most {max_side}x{max_side})" if shrunk else "")
                   + f"; saliency order from all {sel.batch.n} images of the batch.")
