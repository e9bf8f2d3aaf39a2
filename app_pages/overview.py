"""Overview: the two model cards, accuracy on the sample batch, where A and B disagree, seeds, training curves."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from app_pages.noise import requested_comparison
from tffd_viz.errors import TffdVizError
from tffd_viz.normalisation import DATA_COPY_CAVEAT, trained_elsewhere
from tffd_viz.summary import card_table, config_name, disagreements, seed_groups
from tffd_viz.verdicts import NOISE_SIGMAS, effect_summary, lambda_text

GALLERY_MAX = 32
# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).

st.title("Overview")
intro(
    "Model **A** and model **B** side by side: what their cards say (architecture, recipe, lambdas, accuracy) and "
    "what they do on the sample batch chosen in the sidebar. The accuracies and confusion matrices are recomputed "
    "now on that batch (rows = true class, columns = prediction; when both models are near 100 %, the errors per "
    "class instead); the gallery shows the images on which A and B "
    "predict different classes, and the curves how training went, epoch by epoch, from the history in each card."
)
sel = selection()
cards = {key: cache.model_card(ref) for key, ref in sel.refs().items()}

# ------------------------------------------------------------------------------------------------
st.subheader("Model cards")
show_table(card_table(cards, names=sel.names), key="cards", name="model_cards")

# ------------------------------------------------------------------------------------------------
st.subheader("A vs B: what changed, against the noise")
comp = requested_comparison(sel, "ov-compare-large", "Measuring both models (and their other seeds) on the whole "
                            "test split ...", "A-vs-B comparison")
if comp is not None:
    seeded = max(comp["seeds"].values()) >= 2
    noise = (f"the spread over the shipped seeds ({comp['seeds']['A']} of A's configuration, {comp['seeds']['B']} "
             "of B's)" if seeded else
             f"the spread over the {comp['measures']['A']['heldout']['batches']} batches of the split "
             "(no second seed is shipped)")
    measured = ("" if comp["n_measured"] == comp["n"] else
                f" (cosines and CKA on its first {comp['n_measured']}, held-out terms from the cards where they "
                "hold them)")
    st.caption(f"B: {lambda_text(cards['B'])}. Whole {comp['split']} split ({comp['n']} images{measured}), eval "
               "mode. A "
               f"difference is a finding only beyond its noise reference ({NOISE_SIGMAS:g} standard deviations "
               f"of the difference of two single runs, from {noise}). Every Tf-FD term comes raw and divided "
               "by the activation energy of the maps it compares: a raw drop with an unchanged scale-free term is "
               "a drop of activation energy, not mimicry.")
    st.markdown(f"**Finding.** {effect_summary(comp['rows'])}")
    if comp["mean_rows"]:
        st.markdown(f"**Over all shipped seeds** (mean of A's {comp['seeds']['A']} seeds against the mean of B's "
                    f"{comp['seeds']['B']}, against the noise of a mean): {effect_summary(comp['mean_rows'])}")
    st.markdown("\n".join(comp["text"]))
    held = {f"{key} · {sel.label(key)}": comp["measures"][key]["heldout"] for key in ("A", "B")}
    show_figure(cache.run_resource("tffd_viz.noise_plots:heldout_terms_figure", held, "intra"), key="heldout",
                name="heldout_intra_terms")
    show_figure(cache.run_resource("tffd_viz.noise_plots:noise_ratio_figure", comp["rows"]), key="noise-ratio",
                name="what_changed")
    show_table(pd.DataFrame(comp["rows"]), key="what-changed", name="what_changed")
    if comp["mean_rows"]:
        with st.expander("Over all shipped seeds: mean of A's configuration vs mean of B's"):
            show_table(pd.DataFrame(comp["mean_rows"]), key="what-changed-means", name="what_changed_seed_means")

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
        if trained_elsewhere(cards[key]):
            best = cards[key].get("best_acc")
            st.caption(DATA_COPY_CAVEAT + (f" Its file reports {best:.2f} %." if best is not None else ""))
# one full-width figure: per-class errors when both models are near 100 %, else both matrices side by side
show_figure(cache.run_resource("tffd_viz.noise_plots:accuracy_breakdown_figure",
                               {f"{key} · {sel.label(key)}": s["confusion"].numpy() for key, s in summaries.items()},
                               list(sel.classes), normalize=normalize),
            key="confusion", name="confusion")

# ------------------------------------------------------------------------------------------------
labels = cache.batch(sel.batch)["labels"]
pred_a, pred_b = summaries["A"]["pred"], summaries["B"]["pred"]
dis = disagreements(pred_a, pred_b, labels)
st.subheader(f"Where A and B disagree ({len(dis)} of {sel.batch.n} images)")
if len(dis):
    shown = dis[:GALLERY_MAX]
    split = cache.batch_split(sel.batch)
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
