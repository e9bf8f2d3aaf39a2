"""What changed: A against B on the whole test split, every difference set against the seed or batch noise."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._noise import requested_comparison
from app_pages._sidebar import selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import plots
from tffd_viz.verdicts import NOISE_SIGMAS, effect_summary, lambda_text, noise_table

st.title("What changed")
intro(
    "Does B differ from A beyond what a second seed, or another batch, would change? Both models are "
    "measured on the whole test split: accuracy, every Tf-FD term (raw and divided by the activation energy "
    "of the maps it compares), the channel cosines and the CKA. Each difference is set against its noise: "
    "the spread over the other shipped seeds of each configuration, else over the batches of the split."
)
sel = selection()
comp = requested_comparison(
    sel,
    "what_changed-whole-split",
    "Measuring both models (and their other seeds) on the whole test split ...",
    "A-vs-B comparison",
)
if comp is None:
    st.stop()

seeded = max(comp["seeds"].values()) >= 2
noise = (
    f"the spread over the shipped seeds ({comp['seeds']['A']} of A's configuration, {comp['seeds']['B']} "
    "of B's)"
    if seeded
    else f"the spread over the {comp['measures']['A']['heldout']['batches']} batches of the split "
    "(no second seed is shipped)"
)
measured = (
    ""
    if comp["n_measured"] == comp["n"]
    else f" (cosines and CKA on its first {comp['n_measured']}, held-out terms from the cards where they "
    "hold them)"
)
st.caption(
    f"B: {lambda_text(cache.model_card(sel.b))}. Whole {comp['split']} split ({comp['n']} images{measured}), "
    f"eval mode. A difference is a finding only beyond its noise reference ({NOISE_SIGMAS:g} standard "
    f"deviations of the difference of two single runs, from {noise}). Every Tf-FD term comes raw and divided "
    "by the activation energy of the maps it compares: a raw drop with an unchanged scale-free term is "
    "a drop of activation energy, not mimicry."
)
st.markdown(f"**Finding.** {effect_summary(comp['rows'])}")
if comp["mean_rows"]:
    st.markdown(
        f"**Over all shipped seeds** (mean of A's {comp['seeds']['A']} seeds against the mean of B's "
        f"{comp['seeds']['B']}, against the noise of a mean): {effect_summary(comp['mean_rows'])}"
    )
st.markdown("\n".join(comp["text"]))
fig = cache.figure(plots.noise_ratio_figure, comp["rows"])
show_figure(fig, key="what_changed-noise-ratio", name="what_changed")
show_table(comp["rows"], key="what_changed-rows", name="what_changed")
if comp["mean_rows"]:
    with st.expander("Over all shipped seeds: mean of A's configuration vs mean of B's"):
        show_table(comp["mean_rows"], key="what_changed-means", name="what_changed_seed_means")

# ------------------------------------------------------------------------------------------------
st.subheader("Held-out terms, with their spread over batches")
held = {sel.labels[key]: comp["measures"][key]["heldout"] for key in ("A", "B")}
st.caption(
    f"Eval mode, {comp['n']} {comp['split']} images in {held[sel.labels['A']]['batches']} batches (each "
    "ranks its own channels, as training does): mean ± standard deviation over batches, raw next to "
    "the term divided by the activation energy of the maps it compares, since a smaller activation "
    "scale alone lowers an MSE. From the cards where they hold them, else computed now. The table "
    f"sets each difference against the batch-to-batch noise ({NOISE_SIGMAS:g}·√(s_A² + s_B²))"
    + (
        " and against the seed-to-seed noise of the shipped seeds."
        if seeded
        else "; no second seed is shipped for a seed reference."
    )
)
for family in ("intra", "inter"):
    fig = cache.figure(plots.heldout_terms_figure, held, family)
    show_figure(fig, key=f"what_changed-heldout-{family}", name=f"heldout_{family}_terms")
show_table(noise_table(comp), key="what_changed-heldout-noise", name="heldout_terms_noise")
