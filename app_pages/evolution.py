"""Evolution: how the saliency ranking and the Tf-FD terms changed over the epochs of training (card history)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA

# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).

st.title("Evolution")
intro(
    "How Tf-FD's channel ranking settled during training, from the per-epoch saliency stored in each checkpoint's "
    "card (measured on a fixed probe batch). The heatmaps show every channel's saliency rank (dark = salient) per "
    "epoch, channels sorted by their final rank, so the dashed line is the final salient/redundant split; the curves "
    "count the channels that crossed that boundary from one epoch to the next, and the Tf-FD terms over the epochs."
)
sel = selection()
refs = sel.refs()
labels = {key: f"{key} · {sel.label(key)}" for key in refs}
cards = {key: cache.model_card(ref) for key, ref in refs.items()}
histories = {key: card.get("history") or [] for key, card in cards.items()}
# the cache hashes these references, not the (long) histories themselves
history_refs = {key: cache.CardField(ref, "history") for key, ref in refs.items()}

taps_by_model: dict[str, list[str]] = {}
for key, history in histories.items():
    if not history:
        st.info(f"Model {key} ({sel.label(key)}) has no training history in its card (uploaded or foreign "
                "checkpoints usually have none), so there is nothing to show over epochs for it.")
        continue
    try:
        taps_by_model[key] = cache.run("tffd_viz.dynamics:history_taps", history_refs[key])
    except TffdVizError as exc:
        show_error(exc, f"History of model {key}")
    if not taps_by_model.get(key):
        st.info(f"Model {key} ({sel.label(key)}) recorded no per-epoch saliency in its history.")
        taps_by_model.pop(key, None)
if not taps_by_model:
    st.stop()

# ------------------------------------------------------------------------------------------------
all_taps = list(dict.fromkeys(t for taps in taps_by_model.values() for t in taps))
wanted = st.query_params.get("evo_tap")
c1, c2 = st.columns(2)
tap = c1.selectbox("Stage", all_taps, index=all_taps.index(wanted) if wanted in all_taps else len(all_taps) - 1,
                   key="evo-tap", help="The stages whose saliency the training loop recorded every epoch.")
st.query_params["evo_tap"] = tap
tolerance = c2.slider("Tolerance (channels still allowed to swap halves)", 0, 16, value=0, key="evo-tol",
                      help="The split counts as stable from the first epoch after which at most this many channels "
                           "are swapped between the salient and the redundant half, to the end of training.")
with_tap = [key for key, taps in taps_by_model.items() if tap in taps]
for key in taps_by_model:
    if key not in with_tap:
        st.info(f"Model {key} recorded no saliency for {tap}.")

st.subheader(f"Saliency rank of every channel of {tap}, per epoch")
change_stats: dict[str, list[dict]] = {}
cols = st.columns(2)
for col, key in zip(cols, with_tap):
    history = histories[key]
    with col:
        try:
            ranks = cache.run("tffd_viz.dynamics:rank_matrix", history_refs[key], tap)
            change_stats[key] = cache.run("tffd_viz.dynamics:rank_change_stats", history_refs[key], tap)
            stable = cache.run("tffd_viz.dynamics:split_stable_epoch", history_refs[key], tap, tolerance=int(tolerance))
        except TffdVizError as exc:
            show_error(exc, f"Saliency history of model {key}")
            continue
        epochs = [h.get("epoch", i + 1) for i, h in enumerate(history)]
        st.metric(f"{key}: split stable from epoch", "never (still changing)" if stable is None else str(stable),
                  help=f"of {len(epochs)} recorded epochs; tolerance {tolerance} channel(s).")
        show_figure(cache.run_resource("tffd_viz.plots:rank_evolution_figure", ranks,
                                       title=f"{labels[key]}: rank per epoch, {tap}", epochs=epochs),
                    key=f"ranks-{key}", name=f"rank_evolution_{tap}_{key}")

if change_stats:
    st.subheader("Boundary crossings per epoch")
    show_figure(cache.run_resource("tffd_viz.plots:crossings_figure",
                                   {labels[k]: rows for k, rows in change_stats.items()},
                                   title=f"Ranking changes between consecutive epochs, {tap}"),
                key="crossings", name=f"crossings_{tap}")
    show_table(pd.DataFrame([{"model": labels[k], **{**row, "entered": " ".join(map(str, row["entered"])),
                                                    "left": " ".join(map(str, row["left"]))}}
                             for k, rows in change_stats.items() for row in rows]),
               key="crossings", name=f"rank_changes_{tap}")

# ------------------------------------------------------------------------------------------------
st.subheader("Loss terms over epochs")
st.caption("Cross-entropy, every unweighted intra/inter term (log scale) and the accuracies recorded each epoch.")
show_figure(cache.run_resource("tffd_viz.plots:training_curves_figure",
                               {labels[k]: history_refs[k] for k in taps_by_model}, title="Training curves"),
            key="curves", name="training_curves")
curve_rows: list[dict] = []
for key in taps_by_model:
    card = cards[key]
    try:
        curves = cache.run("tffd_viz.dynamics:term_curves", history_refs[key],
                           lambda_intra=card.get("lambda_intra") or PAPER_LAMBDA_INTRA,
                           lambda_inter=card.get("lambda_inter") or PAPER_LAMBDA_INTER, warmup=card.get("warmup"))
    except TffdVizError as exc:
        show_error(exc, f"Term curves of model {key}")
        continue
    curve_rows += [{"model": labels[key], **{name: float(values[i]) for name, values in curves.items()}}
                   for i in range(len(curves["epoch"]))]
if curve_rows:
    show_table(pd.DataFrame(curve_rows), key="curves", name="term_curves")
