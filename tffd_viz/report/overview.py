"""The report's first two sections: what the two models are (``overview``) and what changed between them
(``changed``), each difference against its noise reference."""

from __future__ import annotations

from tffd_viz.normalisation import DATA_COPY_CAVEAT, NORMALISATIONS, trained_elsewhere
from tffd_viz.report._base import as_float, extras, plain
from tffd_viz.report.inputs import ReportInputs
from tffd_viz.report.render import ReportSection, ReportTable
from tffd_viz.verdicts import NOISE_SIGMAS, WHAT_CHANGED_COLUMNS, effect_summary, lambda_text

__all__ = ["ERROR_BARS_ABOVE", "changed_section", "overview_section"]

ERROR_BARS_ABOVE: float = 99.0
"""Batch accuracy (%) of both models above which the overview draws per-class errors, not two matrices."""


def _normalisation_text(ctx: ReportInputs) -> str:
    """A paragraph on how each model sees the batch, guesses marked, and the caveat for models trained
    elsewhere."""
    parts = []
    for key in ("A", "B"):
        card, norm = ctx.cards[key], ctx.normalisation.get(key)
        known = f" It was recognised as {card['recognised_as']}." if card.get("recognised_as") else ""
        if norm is not None:
            text = f"Input normalisation of {key}: {norm.describe()}."
            if norm.guessed:
                choices = ", ".join(
                    f"{NORMALISATIONS[c]} {a:.2f} %" for c, a in ctx.guess_accuracy.get(key, {}).items()
                )
                text = (
                    f"Input normalisation of {key} is a guess: its file does not say, so "
                    f"{NORMALISATIONS[str(norm.choice)]} were used (batch accuracy with each choice: "
                    f"{choices})."
                )
            parts.append(text + known)
        if trained_elsewhere(card):
            best = card.get("best_acc")
            parts.append(
                f"{key}: {DATA_COPY_CAVEAT}"
                + (f" Its file reports {best:.2f} %." if best is not None else "")
            )
    return " ".join(parts)


def overview_section(ctx: ReportInputs) -> ReportSection:
    """The ``overview`` section: model cards, accuracy on the batch, per-class errors or confusion matrices,
    training curves."""
    pd, plots, summary = extras()
    preds = {k: p["pred"] for k, p in ctx.predictions.items()}
    accs = {k: float(p["accuracy"]) for k, p in ctx.predictions.items()}
    differ = summary.disagreements(preds["A"], preds["B"], ctx.targets)
    ctx.record("top-1 accuracy on the batch (%)", a=accs["A"], b=accs["B"])
    ctx.record("images where A and B disagree", ab=float(len(differ)))
    rows = [
        {
            "model": ctx.labels[k],
            "batch top-1 (%)": accs[k],
            "correct": int((preds[k] == ctx.targets).sum()),
            "images": ctx.n,
            "card final top-1 (%)": as_float(ctx.cards[k].get("final_acc")),
        }
        for k in ("A", "B")
    ]
    confusions = {ctx.labels[k]: ctx.predictions[k]["confusion"] for k in ("A", "B")}
    if min(accs.values()) >= ERROR_BARS_ABOVE:
        figures = [
            plots.class_error_figure(
                confusions, ctx.classes, title=f"Errors per class on the batch ({ctx.n} images)"
            )
        ]
        matrices = f"per-class errors (both models are above {ERROR_BARS_ABOVE:g} % on the batch)"
    else:
        figures = [
            plots.confusion_pair_figure(
                confusions, ctx.classes, title=f"Confusion matrices on the batch ({ctx.n} images)"
            )
        ]
        matrices = "confusion matrices (true class in rows, % of the class)"
    figures.append(
        plots.training_curves_figure({ctx.labels[k]: ctx.cards[k].get("history") or [] for k in ("A", "B")})
    )
    intro = (
        f"Model A ({ctx.paths['A']}) and model B ({ctx.paths['B']}) on {ctx.n} {ctx.split} images of "
        f"{ctx.dataset} (sample seed {ctx.seed}). A classifies {accs['A']:.2f} % of them correctly, B "
        f"{accs['B']:.2f} %; the two disagree on {len(differ)} image(s).\n\n"
        f"B: {lambda_text(ctx.cards['B'])}. The cards record how each model was trained; the figures show "
        f"the {matrices} on the batch, and the curves are the per-epoch history stored in each card."
    )
    normalisation = _normalisation_text(ctx)
    if normalisation:
        intro += "\n\n" + normalisation
    tables = [
        ReportTable("Model cards", summary.card_table(ctx.cards, names=ctx.names)),
        ReportTable("Accuracy on the sample batch", pd.DataFrame(rows)),
    ]
    return ReportSection("overview", "Overview", intro, figures, tables)


def changed_section(ctx: ReportInputs) -> ReportSection:
    """The ``changed`` section: every held-out quantity of A against B, its noise reference and verdict."""
    pd, plots, _ = extras()
    comp = ctx.comparison()
    rows = comp["rows"]
    seeds = comp["seeds"]
    batches = comp["measures"]["A"]["heldout"].get("batches")
    if max(seeds.values()) >= 2:
        source = (
            f"the spread over the shipped seeds ({seeds['A']} of A's configuration, {seeds['B']} of B's; "
            "CKA: the lowest seed-to-seed CKA)"
        )
    else:
        source = (
            f"the spread over the {batches} batches of the split (no second seed is shipped; accuracy: the "
            "binomial sampling noise of the split; CKA: no reference)"
        )
    intro = (
        f"Each quantity is measured on the whole {comp['split']} split ({comp['n']} images, eval mode, in "
        f"{batches} batches that each rank their own channels as the loss does); A: "
        f"{lambda_text(ctx.cards['A'])}; B: {lambda_text(ctx.cards['B'])}. A difference is written up only "
        f"when it exceeds its noise reference, {NOISE_SIGMAS:g} standard deviations of the difference of two "
        f"single runs, from {source}; otherwise the verdict reads 'within ... noise'.\n\n"
        "Every Tf-FD term comes raw and divided by the activation energy (mean square) of the maps it "
        "compares: an MSE falls when the maps shrink as a whole, so a raw term that falls while its "
        "scale-free version stays within noise is a drop of activation energy, not mimicry. The paired "
        "cosine of each salient/redundant pair is set against the cosine of random channel pairs of the "
        "same layer.\n\n"
        + f"Finding: {effect_summary(rows)}\n\n"
        + "\n\n".join(plain(line) for line in comp["text"])
    )
    frame = pd.DataFrame(rows, columns=list(WHAT_CHANGED_COLUMNS))
    figures = [plots.noise_ratio_figure(rows)]
    tables = [ReportTable("A vs B: difference, noise reference and verdict per quantity", frame)]
    if comp["mean_rows"]:
        intro += (
            f"\n\nOver all shipped seeds (the mean of A's {seeds['A']} seeds against the mean of B's "
            f"{seeds['B']}, against the noise of a mean): {effect_summary(comp['mean_rows'])}"
        )
        tables.append(
            ReportTable(
                "Over all seeds: mean of A's configuration vs mean of B's",
                pd.DataFrame(comp["mean_rows"], columns=list(WHAT_CHANGED_COLUMNS)),
            )
        )
    elsewhere = [k for k in ("A", "B") if trained_elsewhere(ctx.cards[k])]
    if elsewhere:  # held-out accuracy of a model trained on another copy of the data
        intro += f"\n\n{' and '.join(elsewhere)}: {DATA_COPY_CAVEAT}"
    return ReportSection("changed", "A vs B: what changed", intro, figures, tables)
