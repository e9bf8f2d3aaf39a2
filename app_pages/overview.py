"""Overview: the two model cards, accuracy on the sample batch, where A and B disagree, seeds, training curves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from tffd_viz.errors import TffdVizError
from tffd_viz.summary import card_table, config_name, disagreements, seed_groups

GALLERY_MAX = 32
# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).

st.title("Overview")
intro(
    "Model **A** and model **B** side by side: what their cards say (architecture, recipe, lambdas, accuracy) and "
    "what they do on the sample batch chosen in the sidebar. The accuracies and confusion matrices are recomputed "
    "now on that batch (rows = true class, columns = prediction); the gallery shows the images on which A and B "
    "predict different classes, and the curves how training went, epoch by epoch, from the history in each card."
)
sel = selection()
cards = {key: cache.model_card(ref) for key, ref in sel.refs().items()}

# ------------------------------------------------------------------------------------------------
st.subheader("Model cards")
show_table(card_table(cards, names=sel.names), key="cards", name="model_cards")

# ------------------------------------------------------------------------------------------------
st.subheader(f"Accuracy on {sel.batch.n} {sel.batch.split} images of {sel.batch.dataset}")
summaries: dict[str, dict] = {}
for key, ref in sel.refs().items():
    try:
        summaries[key] = cache.run("tffd_viz.features:prediction_summary", ref, sel.batch.images, sel.batch.labels,
                                   len(sel.classes))
    except TffdVizError as exc:
        show_error(exc, f"Model {key} ({sel.label(key)}) cannot classify this batch")
if len(summaries) < 2:
    st.stop()

normalize = st.toggle("Confusion matrices as % of each true class", value=False, key="ov-normalize")
cols = st.columns(2)
for col, (key, summary) in zip(cols, summaries.items()):
    card_acc = cards[key].get("final_acc")
    with col:
        st.metric(f"{key}: {sel.label(key)}", f"{summary['accuracy']:.2f} %",
                  help="Top-1 accuracy recomputed now on the sample batch. "
                       + (f"The card reports {card_acc:.2f} % on the whole test split." if card_acc is not None
                          else "This checkpoint has no accuracy in its card."))
        show_figure(cache.run_resource("tffd_viz.plots:confusion_figure", summary["confusion"].numpy(),
                                       list(sel.classes), normalize=normalize,
                                       title=f"Confusion matrix, {key}: {sel.label(key)}"),
                    key=f"conf-{key}", name=f"confusion_{key}")

# ------------------------------------------------------------------------------------------------
labels = cache.batch(sel.batch)["labels"]
pred_a, pred_b = summaries["A"]["pred"], summaries["B"]["pred"]
dis = disagreements(pred_a, pred_b, labels)
st.subheader(f"Where A and B disagree ({len(dis)} of {sel.batch.n} images)")
if len(dis):
    shown = dis[:GALLERY_MAX]
    split = cache.dataset(sel.batch.dataset, sel.batch.root).split(sel.batch.split)
    index = cache.batch(sel.batch)["indices"][shown]
    names = sel.classes
    titles = [f"true {names[int(labels[i])]} · A {names[int(pred_a[i])]} · B {names[int(pred_b[i])]}" for i in shown]
    st.caption("Images where exactly one model is right come first, then those both get wrong (differently).")
    show_figure(cache.run_resource("tffd_viz.plots:disagreement_gallery_figure", split.float01(index).numpy(), titles,
                                   max_images=GALLERY_MAX),
                key="gallery", name="disagreements")
    show_table(pd.DataFrame({
        "batch position": shown.tolist(), f"{sel.batch.split} index": index.tolist(),
        "true": [names[int(labels[i])] for i in shown], "A": [names[int(pred_a[i])] for i in shown],
        "B": [names[int(pred_b[i])] for i in shown]}), key="disagreements", name="disagreements")
else:
    st.info("A and B predict the same class for every image of this batch.")

# ------------------------------------------------------------------------------------------------
groups = seed_groups(cache.shipped_checkpoints())
if groups:
    st.subheader("Spread over seeds (shipped checkpoints)")
    st.caption("Test accuracy from the cards of every configuration shipped with several seeds: grey dots are "
               "the seeds, diamonds the mean ± sample standard deviation. A: "
               f"{config_name(cards['A'])}; B: {config_name(cards['B'])}.")
    runs = [{"config": g["config"], "seed": s, "acc": a} for g in groups for s, a in zip(g["seeds"], g["accs"])]
    show_figure(cache.run_resource("tffd_viz.plots:accuracy_seeds_figure", runs, title="Test accuracy over seeds"),
                key="seeds",
                name="accuracy_over_seeds")
    show_table(pd.DataFrame([{**g, "seeds": ", ".join(map(str, g["seeds"])),
                              "accs": ", ".join(f"{a:.2f}" for a in g["accs"])} for g in groups]),
               key="seeds-table", name="accuracy_over_seeds")

# ------------------------------------------------------------------------------------------------
st.subheader("Training curves")
histories = {f"{key} · {sel.label(key)}": card.get("history") or [] for key, card in cards.items()}
if not any(histories.values()):
    st.info("Neither checkpoint has a training history in its card (uploaded checkpoints usually have none).")
else:
    history_refs = {f"{key} · {sel.label(key)}": cache.CardField(ref, "history") for key, ref in sel.refs().items()}
    show_figure(cache.run_resource("tffd_viz.plots:training_curves_figure", history_refs), key="curves",
                name="training_curves")
