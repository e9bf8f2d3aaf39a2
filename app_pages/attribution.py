"""Attribution: Grad-CAM and Integrated-Gradients maps of A and B on chosen images."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, layer_picker, selection
from app_pages._ui import intro, show_figure
from tffd_viz import plots
from tffd_viz.attribution import selected_attribution_maps
from tffd_viz.features import prediction_summary
from tffd_viz.tables import prediction_titles

MAX_IMAGES = 8
TARGETS = {"predicted": "each model's predicted class", "true": "the true class"}

st.title("Attribution")
intro(
    "Where in the image each model looks when it decides. **Grad-CAM** weighs a layer's channels by the "
    "gradient of the class score and shows where the weighted activation is high (coarse, at the layer's "
    "resolution); **Integrated Gradients** attributes the score to input pixels along a path from a blank "
    "image. Brighter is more evidence; each map is scaled to [0, 1] per image, so compare where A and B "
    "look, not how strongly."
)
sel = selection()

c1, c2 = st.columns([2, 1])
with c1:
    picked = st.multiselect(
        "Images (positions in the sample batch)",
        list(range(sel.batch.n)),
        default=list(range(min(4, sel.batch.n))),
        max_selections=MAX_IMAGES,
        key="attribution-images",
        help=f"At most {MAX_IMAGES}; the sidebar chooses the batch.",
    )
    layer = layer_picker(sel, "attribution", label="Grad-CAM layer")
target_mode = c2.radio("Explain", list(TARGETS), format_func=TARGETS.get, key="attribution-target")
n_steps = c2.slider(
    "Integrated-Gradients steps",
    min_value=4,
    max_value=64,
    value=16,
    step=4,
    key="attribution-steps",
    help="Points along the path from the blank image; more is more exact and slower.",
)
if not picked:
    st.info("Choose at least one image.")
    st.stop()
indices = tuple(int(i) for i in picked)

batch = cache.batch(sel.batch)
found = each_model(
    sel, "Predictions", prediction_summary, sel.batch.images, sel.batch.labels, len(sel.classes)
)
preds = {key: summary["pred"] for key, summary in found.items()}
if len(preds) < 2:
    st.stop()
images01 = cache.batch_split(sel.batch).float01(batch["indices"][list(indices)]).numpy()
titles = prediction_titles(indices, batch["labels"], preds, sel.classes, numbered=True)
target_labels = sel.batch.labels if target_mode == "true" else None


st.subheader(f"Grad-CAM at {layer}")
found = each_model(
    sel,
    "Grad-CAM",
    selected_attribution_maps,
    sel.batch.images,
    indices,
    method="gradcam",
    labels=target_labels,
    layer=layer,
)
gradcam = {sel.labels[key]: maps for key, maps in found.items()}
if gradcam:
    fig = cache.figure(
        plots.attribution_figure,
        images01,
        gradcam,
        titles=titles,
        title=f"Grad-CAM at {layer}",
        max_images=MAX_IMAGES,
    )
    show_figure(fig, key="attribution-gradcam", name=f"gradcam_{layer}")

st.subheader("Integrated Gradients")
with st.spinner("Integrated Gradients ..."):
    found = each_model(
        sel,
        "Integrated Gradients",
        selected_attribution_maps,
        sel.batch.images,
        indices,
        method="integrated_gradients",
        labels=target_labels,
        n_steps=int(n_steps),
    )
ig = {sel.labels[key]: maps for key, maps in found.items()}
if ig:
    fig = cache.figure(
        plots.attribution_figure,
        images01,
        ig,
        titles=titles,
        max_images=MAX_IMAGES,
        title=f"Integrated Gradients ({n_steps} steps, zero baseline)",
    )
    show_figure(fig, key="attribution-ig", name="integrated_gradients")
