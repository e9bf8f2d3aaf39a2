"""Overview: the two model cards, sample-batch accuracy, where A and B disagree, seeds, training curves."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import plots
from tffd_viz.features import prediction_summary
from tffd_viz.normalisation import DATA_COPY_CAVEAT, trained_elsewhere
from tffd_viz.summary import card_table, disagreements, seed_groups, seed_spread_note
from tffd_viz.tables import disagreement_rows, prediction_titles, seed_group_rows, seed_runs

GALLERY_MAX = 32

st.title("Overview")
intro(
    "Model **A** and model **B** side by side: what their cards say (architecture, recipe, lambdas, "
    "accuracy) and what they do on the sample batch chosen in the sidebar. The accuracies and confusion "
    "matrices are recomputed now on that batch (rows = true class, columns = prediction; when both models "
    "are near 100 %, the errors per class instead); the gallery shows the images on which A and B predict "
    "different classes, and the curves how training went, epoch by epoch, from the history in each card. "
    "**What changed** sets A against B on the whole test split."
)
sel = selection()
cards = {key: cache.model_card(ref) for key, ref in sel.refs().items()}

# ------------------------------------------------------------------------------------------------
st.subheader("Model cards")
show_table(card_table(cards, names=sel.names), key="overview-cards", name="model_cards")

# ------------------------------------------------------------------------------------------------
st.subheader(f"Accuracy on {sel.batch.n} {sel.batch.split} images of {sel.batch.dataset}")
summaries = each_model(
    sel, "Predictions", prediction_summary, sel.batch.images, sel.batch.labels, len(sel.classes)
)
if len(summaries) < 2:
    st.stop()

normalize = st.toggle("Confusion matrices as % of each true class", value=False, key="overview-normalize")
for col, (key, summary) in zip(st.columns(2), summaries.items(), strict=True):
    acc, best = cards[key].get("final_acc"), cards[key].get("best_acc")
    on_card = f"reports {acc:.2f} % on the whole test split" if acc is not None else "holds no accuracy"
    col.metric(
        f"{key}: {sel.label(key)}",
        f"{summary['accuracy']:.2f} %",
        help=f"Top-1 accuracy recomputed now on the sample batch. The card {on_card}.",
    )
    if trained_elsewhere(cards[key]):
        col.caption(DATA_COPY_CAVEAT + (f" Its file reports {best:.2f} %." if best is not None else ""))
# one full-width figure: per-class errors when both models are near 100 %, else both matrices side by side
confusions = {sel.labels[key]: s["confusion"].numpy() for key, s in summaries.items()}
fig = cache.figure(plots.accuracy_breakdown_figure, confusions, list(sel.classes), normalize=normalize)
show_figure(fig, key="overview-confusion", name="confusion")

# ------------------------------------------------------------------------------------------------
batch = cache.batch(sel.batch)
preds = {key: s["pred"] for key, s in summaries.items()}
dis = disagreements(preds["A"], preds["B"], batch["labels"])
st.subheader(f"Where A and B disagree ({len(dis)} of {sel.batch.n} images)")
if len(dis):
    shown = dis[:GALLERY_MAX]
    index = batch["indices"][shown]
    st.caption("Images where exactly one model is right come first, then those both get wrong (differently).")
    titles = prediction_titles(shown, batch["labels"], preds, sel.classes)
    images = cache.batch_split(sel.batch).float01(index).numpy()
    fig = cache.figure(plots.disagreement_gallery_figure, images, titles, max_images=GALLERY_MAX)
    show_figure(fig, key="overview-gallery", name="disagreements")
    rows = disagreement_rows(shown, index, batch["labels"], preds, sel.classes, sel.batch.split)
    show_table(rows, key="overview-disagreements", name="disagreements")
else:
    st.info("A and B predict the same class for every image of this batch.")

# ------------------------------------------------------------------------------------------------
groups = seed_groups(cache.shipped_checkpoints())
if groups:
    st.subheader("Spread over seeds (shipped checkpoints)")
    st.caption(
        "Test accuracy from the cards of every configuration shipped with several seeds: grey dots are "
        f"the seeds, diamonds the mean ± sample standard deviation. {seed_spread_note(groups, cards)}"
    )
    fig = cache.figure(plots.accuracy_seeds_figure, seed_runs(groups), title="Test accuracy over seeds")
    show_figure(fig, key="overview-seeds", name="accuracy_over_seeds")
    show_table(seed_group_rows(groups), key="overview-seeds", name="accuracy_over_seeds")

# ------------------------------------------------------------------------------------------------
st.subheader("Training curves")
if not any(card.get("history") for card in cards.values()):
    st.info("Neither checkpoint has a training history in its card (uploaded checkpoints usually have none).")
else:
    history_refs = {sel.labels[key]: cache.CardField(ref, "history") for key, ref in sel.refs().items()}
    fig = cache.figure(plots.training_curves_figure, history_refs)
    show_figure(fig, key="overview-curves", name="training_curves")
