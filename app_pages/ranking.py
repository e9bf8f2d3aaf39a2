"""Channel ranking: Tf-FD saliency per layer (A vs B), other importance criteria, ranking stability."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, layer_picker, selection, show_error, show_figure, show_table
from tffd_viz.errors import TffdVizError
from tffd_viz.importance import available_criteria

FAST_CRITERIA = ("tffd", "l1", "l2", "mean", "bn_gamma", "taylor")
N_BOOT_CHOICES = (20, 50, 100, 200, 500)
CORRELATIONS = {"Spearman ρ": "spearman", "Kendall τ": "kendall"}
# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).

st.title("Channel ranking")
intro(
    "How intra-layer Tf-FD ranks the channels of a layer: the **saliency** of every channel (mean of its spatially "
    "L2-normalised map over the sample batch), sorted, one bar colour per model. The **salient half** lies on the "
    "green band, left of the dashed line; the **redundant half**, on the grey band right of it, is pulled towards it. "
    "Below, other importance criteria and how well their rankings agree, and how stable the ranking and the split "
    "are when the batch is resampled (bootstrap)."
)
sel = selection()
layer = layer_picker(sel, key="ranking")
labels = {key: f"{key} · {sel.label(key)}" for key in sel.refs()}

# ------------------------------------------------------------------------------------------------
st.subheader(f"Tf-FD saliency of {layer}, sorted")
rankings = {}
for key, ref in sel.refs().items():
    try:
        rankings[key] = cache.run("tffd_viz.importance:tap_rankings", ref, "tffd", images=sel.batch.images,
                                  taps=[layer])[layer]
    except TffdVizError as exc:
        show_error(exc, f"Model {key} ({sel.label(key)}) has no layer {layer!r} to rank")
if not rankings:
    st.stop()
overlay = st.toggle("One panel (bars of A and B side by side)", value=False, key="ranking-overlay")
# the y axis spans the scores (not from 0): the salient/redundant gap is a few percent of the scores
show_figure(cache.run_resource("tffd_viz.noise_plots:saliency_gap_figure", {labels[k]: r.scores for k, r in rankings.items()},
                               tap=layer, overlay=overlay), key="saliency", name=f"saliency_{layer}")
cols = st.columns(len(rankings))
for col, (key, r) in zip(cols, rankings.items()):
    col.metric(f"{key}: channels in {layer}", r.channels,
               help=f"Salient half: {len(r.salient)} channels; redundant half: {len(r.redundant)}"
                    + ("; the middle channel of an odd count is left out." if len(r.middle) else "."))
rows = [row for key, r in rankings.items() for row in r.rows(model=f"{key}: {sel.label(key)}")]
with st.expander("Table: score, rank, half and intra-Tf-FD partner of every channel"):
    show_table(pd.DataFrame(rows), key="ranking", name=f"tffd_ranking_{layer}")

# ------------------------------------------------------------------------------------------------
st.subheader("Other importance criteria and their agreement")
criteria = available_criteria()
st.caption("Higher = more important under every criterion. Feature criteria use the layer's activations; "
           "BatchNorm |γ|, Taylor and the captum criteria use the model itself (gradients on the sample batch). "
           + " ".join(f"**{c.label}**: {c.description}" for c in criteria.values()))
default = [name for name in FAST_CRITERIA if name in criteria]
picked = st.multiselect("Criteria", list(criteria), default=default, key="ranking-criteria",
                        format_func=lambda name: criteria[name].label,
                        help="The captum criteria (layer conductance, gradient x activation) are slower.")
corr_label = st.radio("Rank correlation", list(CORRELATIONS), horizontal=True, key="ranking-corr")
if picked:
    cols = st.columns(len(rankings))
    score_rows: list[dict] = []
    for col, key in zip(cols, rankings):
        scores = {}
        with col:
            for name in picked:
                try:
                    scores[name] = cache.run("tffd_viz.importance:channel_scores", name, model=sel.refs()[key],
                                             images=sel.batch.images, labels=sel.batch.labels, tap=layer).numpy()
                except TffdVizError as exc:
                    st.warning(f"{criteria[name].label} is not available for {layer} of model {key}: {exc}")
            if not scores:
                continue
            agreement = cache.run("tffd_viz.importance:rank_agreement", scores)
            show_figure(cache.run_resource(
                "tffd_viz.plots:rank_agreement_figure",
                agreement[CORRELATIONS[corr_label]], [criteria[n].label for n in agreement["names"]],
                title=f"Rank agreement, {labels[key]}", metric=corr_label),
                key=f"agreement-{key}", name=f"rank_agreement_{layer}_{key}")
        for name, values in scores.items():
            score_rows += [{"model": labels[key], "criterion": name, "channel": c, "score": float(v)}
                           for c, v in enumerate(values)]
    if score_rows:
        with st.expander("Table: every criterion's score of every channel"):
            show_table(pd.DataFrame(score_rows), key="criteria-scores", name=f"criteria_scores_{layer}")
else:
    st.info("Pick at least one criterion.")

# ------------------------------------------------------------------------------------------------
st.subheader("Ranking stability (bootstrap over the sample batch)")
st.caption("The batch's images are resampled with replacement; each channel's rank is recomputed on every "
           "resample. Bands: the central interval of those ranks; bars: how often each channel lands in the salient "
           "half (1 left of the dashed line and 0 right of it = a perfectly stable split).")
feature_criteria = [name for name, c in criteria.items() if c.needs == "features"]
c1, c2, c3 = st.columns(3)
stab_crit = c1.selectbox("Criterion", feature_criteria, index=feature_criteria.index("tffd"),
                         format_func=lambda name: criteria[name].label, key="ranking-stab-criterion")
n_boot = c2.select_slider("Resamples", N_BOOT_CHOICES, value=100, key="ranking-nboot")
ci = c3.slider("Interval coverage", min_value=0.5, max_value=0.99, value=0.9, step=0.01, key="ranking-ci")
stability = {}
for key in rankings:
    try:
        stability[key] = cache.run("tffd_viz.importance:tap_rank_stability", sel.refs()[key], sel.batch.images,
                                   layer, stab_crit, n_boot=int(n_boot), seed=sel.batch.seed, ci=float(ci))
    except TffdVizError as exc:
        show_error(exc, f"Ranking stability of model {key}")
if stability:
    cols = st.columns(len(stability))
    for col, (key, s) in zip(cols, stability.items()):
        with col:
            col.metric(f"{key}: mean interval width", f"{s['mean_width']:.1f} ranks",
                       help=f"Mean over the channels of the width of their {100 * ci:g}% bootstrap rank interval.")
            col.metric(f"{key}: same half in ≥ 95 % of resamples", f"{100 * s['share_stable_half']:.0f} %",
                       help="Share of channels that stay on their side of the salient/redundant split.")
            show_figure(cache.run_resource("tffd_viz.plots:rank_band_figure", s["rank"], s["lower"], s["upper"],
                                           tap=layer, label=labels[key], ci=ci),
                        key=f"band-{key}", name=f"rank_band_{layer}_{key}")
    show_figure(cache.run_resource("tffd_viz.plots:split_stability_figure",
                                   {labels[k]: {"rank": s["rank"], "p_salient": s["p_salient"]}
                                    for k, s in stability.items()}, tap=layer),
                key="split", name=f"split_stability_{layer}")
    stab_rows = [{"model": labels[key], "channel": c, "rank": int(s["rank"][c]), "lower": int(s["lower"][c]),
                  "upper": int(s["upper"][c]), "p_salient": float(s["p_salient"][c]),
                  "p_redundant": float(s["p_redundant"][c]), "p_same_half": float(s["p_same_half"][c])}
                 for key, s in stability.items() for c in range(len(s["rank"]))]
    with st.expander("Table: bootstrap interval and split probabilities of every channel"):
        show_table(pd.DataFrame(stab_rows), key="stability", name=f"rank_stability_{layer}")
