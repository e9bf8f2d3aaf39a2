"""Attribution: Grad-CAM and Integrated-Gradients maps of A and B on chosen images."""

import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure
from tffd_viz import plots
from tffd_viz.errors import TffdVizError

MAX_IMAGES = 8
TARGETS = {"predicted": "each model's predicted class", "true": "the true class"}

st.title("Attribution")
intro(
    "Where in the image each model looks when it decides. **Grad-CAM** weighs a layer's channels by the gradient "
    "of the class score and shows where the weighted activation is high (coarse, at the layer's resolution); "
    "**Integrated Gradients** attributes the score to input pixels along a path from a blank image. Brighter is "
    "more evidence; each map is scaled to [0, 1] per image, so compare where A and B look, not how strongly."
)
sel = selection()

c1, c2 = st.columns([2, 1])
with c1:
    picked = st.multiselect(
        "Images (positions in the sample batch)", list(range(sel.batch.n)),
        default=list(range(min(4, sel.batch.n))), max_selections=MAX_IMAGES, key="attr-images",
        help=f"At most {MAX_IMAGES}; the sidebar chooses the batch.")
    layer = layer_picker(sel, key="attribution", label="Grad-CAM layer")
with c2:
    target_mode = st.radio("Explain", list(TARGETS), format_func=TARGETS.get, key="attr-target")
    n_steps = st.slider("Integrated-Gradients steps", min_value=4, max_value=64, value=16, step=4, key="attr-steps",
                        help="Points along the path from the blank image; more is more exact and slower.")
if not picked:
    st.info("Choose at least one image.")
    st.stop()
indices = tuple(int(i) for i in picked)

batch = cache.batch(sel.batch)
labels = batch["labels"]
preds = {}
for key, ref in sel.refs().items():
    preds[key] = cache.run("tffd_viz.features:prediction_summary", ref, sel.batch.images, sel.batch.labels,
                           len(sel.classes))["pred"]
ds = cache.batch_split(sel.batch)
images01 = ds.float01(batch["indices"][list(indices)])
titles = [f"#{i} · true {sel.classes[int(labels[i])]} · A {sel.classes[int(preds['A'][i])]} · "
          f"B {sel.classes[int(preds['B'][i])]}" for i in indices]
target_labels = sel.batch.labels if target_mode == "true" else None
names = {key: f"{key} · {sel.label(key)}" for key in sel.refs()}


def _maps(method: str, **kw) -> dict:
    maps = {}
    for key, ref in sel.refs().items():
        try:
            maps[names[key]] = cache.run("tffd_viz.attribution:selected_attribution_maps", ref, sel.batch.images,
                                         indices, method=method, labels=target_labels, **kw)
        except TffdVizError as exc:
            show_error(exc, f"{method} of model {key}")
    return maps


st.subheader(f"Grad-CAM at {layer}")
gradcam = _maps("gradcam", layer=layer)
if gradcam:
    show_figure(plots.attribution_figure(images01, gradcam, titles=titles, title=f"Grad-CAM at {layer}",
                                         max_images=MAX_IMAGES),
                key="gradcam", name=f"gradcam_{layer}")

st.subheader("Integrated Gradients")
with st.spinner("Integrated Gradients ..."):
    ig = _maps("integrated_gradients", n_steps=int(n_steps))
if ig:
    show_figure(plots.attribution_figure(images01, ig, titles=titles,
                                         title=f"Integrated Gradients ({n_steps} steps, zero baseline)",
                                         max_images=MAX_IMAGES),
                key="ig", name="integrated_gradients")
