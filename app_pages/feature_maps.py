"""Feature maps: one image's channel maps in a layer by Tf-FD saliency, salient half beside redundant half."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import layer_picker, selection
from app_pages._ui import clamped, intro, query_param, show_error, show_figure
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.features import extract_features
from tffd_viz.importance import tap_rankings

VIEWS = {
    "paired": "Pairs: each salient channel above its redundant partner",
    "grid": "Grid: every channel, salient half first",
}
FIGURES = {
    "paired": (plots.paired_maps_figure, "max_pairs"),
    "grid": (plots.feature_maps_figure, "max_channels"),
}
"""Each view's figure and its argument for the most pairs / tiles shown."""
PAIRS_PER_ROW = 4
"""Pairs (paired view) or tiles (grid view) per row: readable tiles and labels in a half-width column."""
TILE_SIDE_LARGE = 56
"""Largest tile side for 224-pixel models (a ResNet's 56x56 layer1 maps as they are; MobileNetV2's 112x112
features.1 block-averaged 2x2); the CIFAR zoo's maps are drawn at 32 at most."""

st.title("Feature maps")
intro(
    "The activation maps of one image in one layer, one tile per channel, ordered by Tf-FD saliency "
    "(computed on the whole sample batch, as Tf-FD does during training). In the **paired** view each "
    "salient channel (green title) sits above the redundant channel that intra-layer Tf-FD pulls towards it "
    "(grey title); the **grid** view shows all channels, salient half first. Model A is on the left, model B "
    "on the right, on one colour scale per model."
)
sel = selection()

c1, c2 = st.columns([3, 1])
with c1:
    layer = layer_picker(sel, "feature_maps")
    image = st.slider(
        "Image (position in the sample batch)",
        0,
        sel.batch.n - 1,
        key="feature_maps-image",
        value=query_param("feature_maps_image", 0, clamped(int, 0, sel.batch.n - 1)),
    )
    st.query_params["feature_maps_image"] = str(image)
    view = st.radio("View", list(VIEWS), format_func=VIEWS.get, horizontal=True, key="feature_maps-view")
    most = st.slider(
        "Most pairs / tiles shown",
        4,
        64,
        value=12 if view == "paired" else 32,
        step=4,
        key=f"feature_maps-max-{view}",
    )
batch = cache.batch(sel.batch)
thumb = cache.batch_split(sel.batch).float01(batch["indices"][image : image + 1])[0]
c2.image(
    thumb[0].numpy() if thumb.shape[0] == 1 else thumb.permute(1, 2, 0).numpy(),
    width=128,
    clamp=True,
    caption=f"{sel.batch.split} image {int(batch['indices'][image])}, label "
    f"{sel.classes[int(batch['labels'][image])]}",
)

# tiles are block-averaged to this side: 32 for the CIFAR zoo, 56 (a ResNet's layer1 as it is) at 224 pixels
max_side = TILE_SIDE_LARGE if sel.batch.image_size else 32
for col, (key, ref) in zip(st.columns(2), sel.refs().items()):
    col.markdown(f"**{sel.labels[key]}**")
    try:
        ranking = cache.run(tap_rankings, ref, "tffd", images=sel.batch.images, taps=[layer])[layer]
        maps = cache.run_resource(extract_features, ref, sel.batch.images, [layer])[layer][image]
    except TffdVizError as exc:
        with col:
            show_error(exc, f"Layer {layer!r} of model {key}")
        continue
    if maps.dim() != 3:
        col.warning(
            f"{layer} of model {key} gives {tuple(maps.shape)} per image, not channel maps (C, H, W)."
        )
        continue
    # the title is short: the figure sits in a half-width column
    figure, most_arg = FIGURES[view]
    fig = cache.figure(
        figure,
        maps.numpy(),
        ranking.order,
        cols=PAIRS_PER_ROW,
        title=f"{key}: {layer}, image {image}",
        max_side=max_side,
        **{most_arg: most},
    )
    with col:
        show_figure(fig, key=f"feature_maps-{key}", name=f"feature_maps_{layer}_{image}_{key}")
    shrunk = (
        f" (drawn block-averaged to at most {max_side}x{max_side})" if max(maps.shape[1:]) > max_side else ""
    )
    col.caption(
        f"{ranking.channels} channels of {tuple(maps.shape[1:])} pixels{shrunk}; saliency order from all "
        f"{sel.batch.n} images of the batch."
    )
