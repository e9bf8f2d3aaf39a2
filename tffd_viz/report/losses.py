"""The report's ``losses`` section: the held-out Tf-FD terms of A and B, raw and scale-free, and every term on
the sample batch with the cross-entropy against the λ-weighted terms."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from tffd_viz.errors import TffdVizError
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.report._base import extras, plain, union
from tffd_viz.report.inputs import ReportInputs
from tffd_viz.report.render import ReportSection, ReportTable
from tffd_viz.terms import TermsReport, tffd_terms_on_batch

__all__ = ["card_lambdas", "losses_section"]


def card_lambdas(card: Mapping[str, Any]) -> tuple[float, float, str]:
    """Return ``(lambda_intra, lambda_inter, source)``: the card's values, else the paper's."""
    li, le = card.get("lambda_intra"), card.get("lambda_inter")
    if li is None or le is None:
        return PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, "paper"
    return float(li), float(le), "card"


def _trained_terms(card: Mapping[str, Any], rep: TermsReport) -> tuple[list[str] | None, list | None]:
    """The stages and pairs the card says Tf-FD trained on, when computed here (else None = all terms)."""
    stages, pairs = card.get("stages"), card.get("pairs")
    try:
        rep.selected(stages, pairs)
    except TffdVizError:
        return None, None
    return stages, pairs


def losses_section(ctx: ReportInputs) -> ReportSection:
    """The ``losses`` section: held-out terms (raw, scale-free, energy), batch terms, weighted shares."""
    pd, plots, _ = extras()
    reps = {k: tffd_terms_on_batch(ctx.models[k], ctx.images, ctx.targets, ctx.taps[k]) for k in ("A", "B")}
    ctx.record("cross-entropy on the batch", a=reps["A"].ce, b=reps["B"].ce)
    for family in ("intra", "inter"):
        for name in union([list(getattr(reps[k], family)) for k in ("A", "B")]):
            ctx.record(
                f"{family}-layer term (unweighted)",
                name,
                a=getattr(reps["A"], family).get(name),
                b=getattr(reps["B"], family).get(name),
            )
    weighted: dict[str, dict[str, float]] = {}
    term_rows: list[dict[str, Any]] = []
    lambda_text = []
    for key in ("A", "B"):
        li, le, source = card_lambdas(ctx.cards[key])
        stages, pairs = _trained_terms(ctx.cards[key], reps[key])
        weighted[ctx.labels[key]] = reps[key].weighted(li, le, stages, pairs)
        term_rows += [{"model": ctx.labels[key], **row} for row in reps[key].rows(li, le, stages, pairs)]
        lambda_text.append(f"{key}: λ_intra = {li:g}, λ_inter = {le:g} ({source})")
    ctx.record(
        "λ-weighted Tf-FD total", a=weighted[ctx.labels["A"]]["tffd"], b=weighted[ctx.labels["B"]]["tffd"]
    )
    comp = ctx.comparison()
    held = {ctx.labels[k]: comp["measures"][k]["heldout"] for k in ("A", "B")}
    figures = [
        plots.heldout_terms_figure(held, "intra"),
        plots.heldout_terms_figure(held, "inter"),
        plots.terms_bar_figure(
            {ctx.labels[k]: {"intra": reps[k].intra, "inter": reps[k].inter} for k in ("A", "B")},
            log_y=True,
            title=f"Tf-FD terms on the sample batch ({ctx.n} images, unweighted)",
        ),
        plots.weighted_contributions_figure(
            {label: {c: w[c] for c in ("ce", "intra", "inter")} for label, w in weighted.items()}, log_y=True
        ),
    ]
    mean_intra = {
        k: float(np.mean(list(reps[k].intra.values()))) if reps[k].intra else math.nan for k in ("A", "B")
    }
    term_lines = [
        plain(f"* {r['quantity']}, {r['item']}: A {r['A']:.4g}, B {r['B']:.4g}: {r['verdict']}.")
        for r in comp["rows"]
        if r["quantity"] in ("intra term (raw)", "inter term (raw)")
        and r["A"] is not None
        and r["B"] is not None
    ]
    held_rows = [
        {
            "model": label,
            "family": family,
            "term": item,
            "mean": h[family][item],
            "std over batches": (h.get(f"{family}_std") or {}).get(item),
            "term / energy": (h.get(f"{family}_rel") or {}).get(item),
            "std (term / energy)": (h.get(f"{family}_rel_std") or {}).get(item),
            "energy of the stage": (h.get("energy") or {}).get(item) if family == "intra" else None,
        }
        for label, h in held.items()
        for family in ("intra", "inter")
        for item in h.get(family) or {}
    ]
    batches = comp["measures"]["A"]["heldout"].get("batches")
    intro = (
        f"Held-out terms first: eval mode, the whole {comp['split']} split ({comp['n']} images) in {batches} "
        "batches, mean ± std over batches, raw next to the term divided by the activation energy of the maps "
        "it compares (a smaller activation scale alone lowers an MSE), and the energy per stage:\n\n"
        + "\n\n".join(term_lines)
        + "\n\nEach intra-layer term is the mean squared difference between a layer's salient half and its "
        "paired redundant half; each inter-layer term the mean squared difference between a shallow layer "
        f"and a deeper one pooled to the same size. On the sample batch the mean intra term is "
        f"{mean_intra['A']:.4g} for A and {mean_intra['B']:.4g} for B.\n\n"
        f"Weighted contributions use {'; '.join(lambda_text)}, over the stages and pairs each card trained "
        "on (mean over the terms of a family, no warm-up), against the batch cross-entropy."
    )
    tables = [
        ReportTable(
            "Held-out terms, raw and scale-free, with their spread over batches", pd.DataFrame(held_rows)
        ),
        ReportTable(
            "Weighted contributions", pd.DataFrame([{"model": label, **w} for label, w in weighted.items()])
        ),
        ReportTable("Every term: unweighted value and weighted contribution", pd.DataFrame(term_rows)),
    ]
    return ReportSection("losses", "Losses", intro, figures, tables)
