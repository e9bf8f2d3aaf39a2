"""Ranking stability: how a layer's channel ranking and salient/redundant split hold under the bootstrap."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, layer_picker, selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import importance, plots
from tffd_viz.tables import rank_stability_rows

N_BOOT_CHOICES = (20, 50, 100, 200, 500)

st.title("Ranking stability")
intro(
    "How stable a layer's channel ranking is when the sample batch is resampled (bootstrap): the batch's "
    "images are drawn again with replacement and each channel's rank is recomputed on every resample. The "
    "**bands** show the central interval of each channel's ranks; the **bars** how often each channel lands "
    "in the salient half (1 left of the dashed line and 0 right of it = a perfectly stable split). A split "
    "that Tf-FD trains on should not move with the batch."
)
sel = selection()
criteria = importance.available_criteria()
feature_criteria = [name for name, c in criteria.items() if c.needs == "features"]
c1, c2, c3, c4 = st.columns(4)
with c1:
    layer = layer_picker(sel, "ranking_stability")
criterion = c2.selectbox(
    "Criterion",
    feature_criteria,
    index=feature_criteria.index("tffd"),
    format_func=lambda name: criteria[name].label,
    key="ranking_stability-criterion",
)
n_boot = c3.select_slider("Resamples", N_BOOT_CHOICES, value=100, key="ranking_stability-nboot")
ci = c4.slider(
    "Interval coverage", min_value=0.5, max_value=0.99, value=0.9, step=0.01, key="ranking_stability-ci"
)

stability = each_model(
    sel,
    "Ranking stability",
    importance.tap_rank_stability,
    sel.batch.images,
    layer,
    criterion,
    n_boot=int(n_boot),
    seed=sel.batch.seed,
    ci=float(ci),
)
if not stability:
    st.stop()

st.subheader(f"Bootstrap rank intervals of {layer} ({n_boot} resamples of {sel.batch.n} images)")
for col, (key, s) in zip(st.columns(len(stability)), stability.items()):
    col.metric(
        f"{key}: mean interval width",
        f"{s['mean_width']:.1f} ranks",
        help=f"Mean over the channels of the width of their {100 * ci:g}% bootstrap rank interval.",
    )
    col.metric(
        f"{key}: same half in ≥ 95 % of resamples",
        f"{100 * s['share_stable_half']:.0f} %",
        help="Share of channels that stay on their side of the salient/redundant split.",
    )
    fig = cache.figure(
        plots.rank_band_figure, s["rank"], s["lower"], s["upper"], tap=layer, label=sel.labels[key], ci=ci
    )
    with col:
        show_figure(fig, key=f"ranking_stability-band-{key}", name=f"rank_band_{layer}_{key}")

st.subheader("The salient/redundant split")
splits = {sel.labels[k]: {"rank": s["rank"], "p_salient": s["p_salient"]} for k, s in stability.items()}
fig = cache.figure(plots.split_stability_figure, splits, tap=layer)
show_figure(fig, key="ranking_stability-split", name=f"split_stability_{layer}")
with st.expander("Table: bootstrap interval and split probabilities of every channel"):
    rows = rank_stability_rows({sel.labels[k]: s for k, s in stability.items()})
    show_table(rows, key="ranking_stability-table", name=f"rank_stability_{layer}")
