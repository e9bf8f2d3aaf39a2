"""Evolution: how the saliency ranking and the Tf-FD terms changed over the training epochs (card history)."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import PAPER_LAMBDAS, selection
from app_pages._ui import intro, option_index, query_param, show_error, show_figure, show_table
from tffd_viz import dynamics, plots
from tffd_viz.errors import TffdVizError
from tffd_viz.tables import rank_change_rows, term_curve_rows

st.title("Evolution")
intro(
    "How Tf-FD's channel ranking settled during training, from the per-epoch saliency stored in each "
    "checkpoint's card (measured on a fixed probe batch). The heatmaps show every channel's saliency rank "
    "(dark = salient) per epoch, channels sorted by their final rank, so the dashed line is the final "
    "salient/redundant split; the curves count the channels that crossed that boundary from one epoch to the "
    "next, and the Tf-FD terms over the epochs."
)
sel = selection()
labels = sel.labels
cards = {key: cache.model_card(ref) for key, ref in sel.refs().items()}
# the cache hashes these references, not the (long) histories themselves
histories = {key: cache.CardField(ref, "history") for key, ref in sel.refs().items()}
taps_by_model: dict[str, list[str]] = {}
for key, card in cards.items():
    if not card.get("history"):
        st.info(
            f"Model {key} ({sel.label(key)}) has no training history in its card (uploaded or foreign "
            "checkpoints usually have none), so there is nothing to show over epochs for it."
        )
        continue
    try:
        taps_by_model[key] = cache.run(dynamics.history_taps, histories[key])
    except TffdVizError as exc:
        show_error(exc, f"History of model {key}")
    if not taps_by_model.get(key):
        st.info(f"Model {key} ({sel.label(key)}) recorded no per-epoch saliency in its history.")
        taps_by_model.pop(key, None)
if not taps_by_model:
    st.stop()

# ------------------------------------------------------------------------------------------------
all_taps = list(dict.fromkeys(t for taps in taps_by_model.values() for t in taps))
c1, c2 = st.columns(2)
last = len(all_taps) - 1
tap = c1.selectbox(
    "Stage",
    all_taps,
    index=option_index(all_taps, query_param("evolution_tap", ""), last),
    key="evolution-tap",
    help="The stages whose saliency the training loop recorded every epoch.",
)
st.query_params["evolution_tap"] = tap
tolerance = c2.slider(
    "Tolerance (channels still allowed to swap halves)",
    max_value=16,
    key="evolution-tol",
    help="The split counts as stable from the first epoch after which at most this many channels "
    "are swapped between the salient and the redundant half, to the end of training.",
)
for key in taps_by_model:
    if tap not in taps_by_model[key]:
        st.info(f"Model {key} recorded no saliency for {tap}.")

st.subheader(f"Saliency rank of every channel of {tap}, per epoch")
changes: dict[str, list[dict]] = {}
for col, key in zip(st.columns(2), [k for k, taps in taps_by_model.items() if tap in taps]):
    try:
        ranks = cache.run(dynamics.rank_matrix, histories[key], tap)
        changes[labels[key]] = cache.run(dynamics.rank_change_stats, histories[key], tap)
        stable = cache.run(dynamics.split_stable_epoch, histories[key], tap, tolerance=int(tolerance))
    except TffdVizError as exc:
        with col:
            show_error(exc, f"Saliency history of model {key}")
        continue
    epochs = [h.get("epoch", i + 1) for i, h in enumerate(cards[key]["history"])]
    col.metric(
        f"{key}: split stable from epoch",
        "never (still changing)" if stable is None else str(stable),
        help=f"of {len(epochs)} recorded epochs; tolerance {tolerance} channel(s).",
    )
    fig = cache.figure(
        plots.rank_evolution_figure, ranks, title=f"{labels[key]}: rank per epoch, {tap}", epochs=epochs
    )
    with col:
        show_figure(fig, key=f"evolution-ranks-{key}", name=f"rank_evolution_{tap}_{key}")
if changes:
    st.subheader("Boundary crossings per epoch")
    fig = cache.figure(
        plots.crossings_figure, changes, title=f"Ranking changes between consecutive epochs, {tap}"
    )
    show_figure(fig, key="evolution-crossings", name=f"crossings_{tap}")
    show_table(rank_change_rows(changes), key="evolution-crossings", name=f"rank_changes_{tap}")

# ------------------------------------------------------------------------------------------------
st.subheader("Loss terms over epochs")
st.caption(
    "Cross-entropy, every unweighted intra/inter term (log scale) and the accuracies recorded each epoch."
)
fig = cache.figure(
    plots.training_curves_figure, {labels[k]: histories[k] for k in taps_by_model}, title="Training curves"
)
show_figure(fig, key="evolution-curves", name="training_curves")
curves = {}
for key in taps_by_model:
    lambdas = {name: cards[key].get(name) or paper for name, paper in PAPER_LAMBDAS.items()}  # as trained
    try:
        curves[labels[key]] = cache.run(
            dynamics.term_curves, histories[key], warmup=cards[key].get("warmup"), **lambdas
        )
    except TffdVizError as exc:
        show_error(exc, f"Term curves of model {key}")
if curves:
    show_table(term_curve_rows(curves), key="evolution-curves", name="term_curves")
