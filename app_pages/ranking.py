"""Channel ranking: Tf-FD saliency per layer (A vs B), other importance criteria, how their rankings agree."""

from __future__ import annotations

import numpy as np
import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, layer_picker, selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import importance, plots
from tffd_viz.errors import TffdVizError
from tffd_viz.tables import criterion_score_rows, ranking_rows

FAST_CRITERIA = ("tffd", "l1", "l2", "mean", "bn_gamma", "taylor")
CORRELATIONS = {"Spearman ρ": "spearman", "Kendall τ": "kendall"}

st.title("Channel ranking")
intro(
    "How intra-layer Tf-FD ranks the channels of a layer: the **saliency** of every channel (mean of its "
    "spatially L2-normalised map over the sample batch), sorted, one bar colour per model. The **salient "
    "half** lies on the green band, left of the dashed line; the **redundant half**, on the grey band right "
    "of it, is pulled towards it. Below, other importance criteria and how well their rankings agree; "
    "**Ranking stability** shows how stable the ranking and the split are when the batch is resampled."
)
sel = selection()
layer = layer_picker(sel, "ranking")
labels = sel.labels

# ------------------------------------------------------------------------------------------------
st.subheader(f"Tf-FD saliency of {layer}, sorted")
found = each_model(
    sel, f"Tf-FD ranking of {layer}", importance.tap_rankings, "tffd", images=sel.batch.images, taps=[layer]
)
rankings = {key: by_tap[layer] for key, by_tap in found.items()}
if not rankings:
    st.stop()
overlay = st.toggle("One panel (bars of A and B side by side)", value=False, key="ranking-overlay")
# the y axis spans the scores (not from 0): the salient/redundant gap is a few percent of the scores
saliency = {labels[k]: r.scores for k, r in rankings.items()}
fig = cache.figure(plots.saliency_gap_figure, saliency, tap=layer, overlay=overlay)
show_figure(fig, key="ranking-saliency", name=f"saliency_{layer}")
for col, (key, r) in zip(st.columns(len(rankings)), rankings.items()):
    halves = f"Salient half: {len(r.salient)} channels; redundant half: {len(r.redundant)}"
    odd = "; the middle channel of an odd count is left out." if len(r.middle) else "."
    col.metric(f"{key}: channels in {layer}", r.channels, help=halves + odd)
with st.expander("Table: score, rank, half and intra-Tf-FD partner of every channel"):
    rows = ranking_rows({f"{k}: {sel.label(k)}": r for k, r in rankings.items()})
    show_table(rows, key="ranking-channels", name=f"tffd_ranking_{layer}")

# ------------------------------------------------------------------------------------------------
st.subheader("Other importance criteria and their agreement")
criteria = importance.available_criteria()
st.caption(
    "Higher = more important under every criterion. Feature criteria use the layer's activations; "
    "BatchNorm |γ|, Taylor and the captum criteria use the model itself (gradients on the sample batch). "
    + " ".join(f"**{c.label}**: {c.description}" for c in criteria.values())
)
picked = st.multiselect(
    "Criteria",
    list(criteria),
    default=[c for c in FAST_CRITERIA if c in criteria],
    key="ranking-criteria",
    format_func=lambda name: criteria[name].label,
    help="The captum criteria (layer conductance, gradient x activation) are slower.",
)
corr_label = st.radio("Rank correlation", list(CORRELATIONS), horizontal=True, key="ranking-corr")
if not picked:
    st.info("Pick at least one criterion.")
    st.stop()
by_model: dict[str, dict] = {}
for col, key in zip(st.columns(len(rankings)), rankings):
    scores = by_model.setdefault(labels[key], {})
    for name in picked:
        try:
            scores[name] = cache.run(
                importance.channel_scores,
                name,
                model=sel.refs()[key],
                images=sel.batch.images,
                labels=sel.batch.labels,
                tap=layer,
            ).numpy()
        except TffdVizError as exc:
            col.warning(f"{criteria[name].label} is not available for {layer} of model {key}: {exc}")
    # a criterion that scores every channel alike (BatchNorm |γ| of an untrained model) ranks nothing
    constant = [criteria[n].label for n, v in scores.items() if np.ptp(v) == 0]
    if constant:
        col.caption(
            f"Left out of the agreement of model {key}, every channel scored alike: {', '.join(constant)}."
        )
    ranked = {n: v for n, v in scores.items() if criteria[n].label not in constant}
    if ranked:
        agreement = cache.run(importance.rank_agreement, ranked)
        names = [criteria[n].label for n in agreement["names"]]
        fig = cache.figure(
            plots.rank_agreement_figure,
            agreement[CORRELATIONS[corr_label]],
            names,
            title=f"Rank agreement, {labels[key]}",
            metric=corr_label,
        )
        with col:
            show_figure(fig, key=f"ranking-agreement-{key}", name=f"rank_agreement_{layer}_{key}")
if any(by_model.values()):
    with st.expander("Table: every criterion's score of every channel"):
        show_table(criterion_score_rows(by_model), key="ranking-scores", name=f"criteria_scores_{layer}")
