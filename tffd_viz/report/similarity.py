"""The report's ``similarity`` and ``cka`` sections: how alike channels are within a layer (paired cosine
against random pairs, inter-layer alignment) and what layers of A and B represent (linear CKA)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from tffd_viz.report._base import extras, plain, position_name, union
from tffd_viz.report.inputs import CKA_BATCH, ReportInputs
from tffd_viz.report.render import ReportSection, ReportTable
from tffd_viz.similarity import channel_similarity_views, inter_layer_alignments, layer_cka_matrices
from tffd_viz.verdicts import random_pair_cosine

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["cka_section", "similarity_section"]


def similarity_section(ctx: ReportInputs) -> ReportSection:
    """The ``similarity`` section: paired vs random-pair cosine, channel cosine matrices, inter-layer
    alignment."""
    pd, plots, _ = extras()
    figures: list[go.Figure] = []
    views = {
        k: {t: channel_similarity_views(ctx.models[k], ctx.images, t) for t in ctx.taps[k]}
        for k in ("A", "B")
    }
    paired = {k: {t: v["paired"] for t, v in views[k].items()} for k in ("A", "B")}
    comp = ctx.comparison()
    cosine = {ctx.labels[k]: comp["measures"][k]["cosine"] for k in ("A", "B")}
    figures.append(
        plots.cosine_reference_figure(
            cosine,
            title=f"Paired cosine vs random channel pairs, whole {comp['split']} split ({comp['n']} images), "
            "mean ± std over batches",
        )
    )
    rows: list[dict[str, Any]] = []
    for key in ("A", "B"):
        for tap, view in views[key].items():
            cos = view["cosine"]
            rows.append(
                {
                    "model": ctx.labels[key],
                    "layer": tap,
                    "channels": cos.shape[0],
                    "mean paired cosine": float(view["paired"].mean()),
                    "random-pair cosine": random_pair_cosine(cos) if cos.shape[0] > 1 else math.nan,
                }
            )
        tap = ctx.taps[key][-1]  # one matrix per model: the deepest layer
        figures.append(
            plots.cosine_matrix_figure(
                views[key][tap]["cosine"],
                order=views[key][tap]["order"],
                title=f"Channel cosine similarity, sorted by saliency — {ctx.labels[key]} · {tap}",
            ).update_layout(height=360)
        )
    for ta, tb in ctx.tap_positions():
        values = {ctx.labels[k]: paired[k][t] for k, t in (("A", ta), ("B", tb)) if t is not None}
        figures.append(plots.paired_similarity_figure(values, tap=position_name(ta, tb)))
        ctx.record(
            "mean paired cosine (salient vs redundant)",
            position_name(ta, tb),
            a=float(paired["A"][ta].mean()) if ta else None,
            b=float(paired["B"][tb].mean()) if tb else None,
        )
    alignment = {
        ctx.labels[k]: inter_layer_alignments(ctx.models[k], ctx.images, ctx.taps[k])
        for k in ("A", "B")
        if len(ctx.taps[k]) > 1
    }
    for pair in union([list(v) for v in alignment.values()]):
        a, b = (alignment.get(ctx.labels[k], {}).get(pair) for k in ("A", "B"))
        ctx.record(
            "mean inter-layer alignment (cosine)",
            pair,
            a=None if a is None else float(a.mean()),
            b=None if b is None else float(b.mean()),
        )
    if alignment:
        figures.append(plots.alignment_figure(alignment))
    last = {k: ctx.taps[k][-1] for k in ("A", "B")}
    lines = [
        plain(f"* {r['quantity']}, {r['item']}: A {r['A']:.3f}, B {r['B']:.3f}: {r['verdict']}.")
        for r in comp["rows"]
        if r["quantity"].startswith(("paired − random", "inter-layer alignment"))
        and r["A"] is not None
        and r["B"] is not None
    ]
    intro = (
        "Cosine similarity between channels, each flattened over images and positions. The intra-layer loss "
        "pulls each redundant channel towards its salient partner, but an MSE also falls when the maps "
        "shrink; the paired cosine (scale-free) says whether the partners became more alike, and only "
        "against the cosine of random channel pairs of the same layer (a paired cosine at the random-pair "
        f"level means no pair structure). Whole {comp['split']} split, B − A against the noise:\n\n"
        + "\n\n".join(lines)
        + "\n\nOn the sample batch the deepest layer's mean paired cosine is "
        f"{float(paired['A'][last['A']].mean()):.3f} for A and {float(paired['B'][last['B']].mean()):.3f} "
        "for B. The alignment panels compare channel c of a shallow layer (pooled to the deep layer's size) "
        "with channel c of the deep layer, the pairing inter-layer Tf-FD trains (an arbitrary pairing of "
        "channel indices)."
    )
    return ReportSection(
        "similarity",
        "Similarity",
        intro,
        figures,
        [ReportTable("Channel similarity per layer", pd.DataFrame(rows))],
    )


def cka_section(ctx: ReportInputs) -> ReportSection:
    """The ``cka`` section: layer x layer linear CKA of A vs B and within each model, against seed to seed."""
    pd, plots, _ = extras()
    cka = layer_cka_matrices(
        ctx.models["A"], ctx.models["B"], ctx.images, ctx.taps["A"], ctx.taps["B"], batch_size=CKA_BATCH
    )
    ab, ta, tb = cka["AvB"]
    for i in range(min(len(ta), len(tb))):
        ctx.record("linear CKA, A layer vs the same B layer", position_name(ta[i], tb[i]), ab=float(ab[i, i]))
    figures = [
        plots.cka_heatmap_figure(
            ab,
            ta,
            tb,
            title="Linear CKA between the layers of A and B",
            label_a=ctx.labels["A"],
            label_b=ctx.labels["B"],
        ),
        plots.cka_grid_figure(
            {"A vs A": (*cka["AvA"], "A", "A"), "B vs B": (*cka["BvB"], "B", "B")},
            title="Linear CKA within each model",
        ),
    ]
    comp = ctx.comparison()
    figures.insert(
        1,
        plots.cka_reference_figure(
            comp["cka_ab"],
            comp["cka_seeds"],
            title=(
                f"Same layer of A and B against seed to seed, whole {comp['split']} split "
                f"({comp['n']} images)"
            ),
        ),
    )
    cka_lines = [
        plain(f"* {r['item']}: {r['verdict']}.")
        for r in comp["rows"]
        if r["quantity"].startswith("1 − linear CKA")
    ]
    table = pd.DataFrame(ab, columns=[f"B {t}" for t in tb])
    table.insert(0, "A layer", list(ta))
    full, tail = divmod(ctx.n, CKA_BATCH)
    # a tail under 4 images joins the last minibatch
    minibatches = full + (1 if tail >= 4 or full == 0 else 0)
    diag = ", ".join(f"{position_name(ta[i], tb[i])} {ab[i, i]:.3f}" for i in range(min(len(ta), len(tb))))
    intro = (
        "Centered kernel alignment (linear kernel) compares what two layers represent, independent of "
        "rotations and scale of their features: 1 = the same representation up to those, 0 = unrelated. "
        f"It is estimated with the unbiased HSIC_1 summed over {minibatches} minibatch(es) of about "
        f"{min(CKA_BATCH, ctx.n)} images (the app's minibatch estimator).\n\n"
        f"Same layer in A and B: {diag}.\n\n"
        "Two seeds of one configuration never give CKA 1; the reference is the seed-to-seed CKA over the "
        f"whole {comp['split']} split (grey):\n\n" + "\n\n".join(cka_lines)
    )
    return ReportSection(
        "cka", "CKA", intro, figures, [ReportTable("Linear CKA, A (rows) vs B (columns)", table)]
    )
