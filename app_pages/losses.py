"""Losses and lambdas: every Tf-FD term on the sample batch, the lambda what-if, gradient shares, the sweep."""

from __future__ import annotations

import dataclasses

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from app_pages.noise import requested_comparison
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.terms import sweep_table, sweep_value_columns
from tffd_viz.verdicts import NOISE_SIGMAS, noise_table

LAMBDA_GRID: tuple[float, ...] = (0.0, 1e-4, 2e-4, 5e-4, 8e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5,
                                  1.0, 2.0, 5.0, 10.0)
GRAD_MAX_IMAGES = 32
GRAD_MAX_IMAGES_LARGE = 8  # inputs larger than 32x32
# Figures come from cache.run_resource: built once per input and shared by reference (never mutated here).
SWEEP_COMMAND = ("tffd-viz sweep --recipe digits --lambda-intra 0,8e-4,1e-2,1e-1,1 --lambda-inter 0,5e-4,1e-2,1e-1,1 "
                 "--seeds 0 --out checkpoints/{dataset}_sweep")

st.title("Losses and lambdas")
intro(
    "The Tf-FD loss of each model on the sample batch: every **intra-layer** term (a stage's redundant half against "
    "its salient half) and every **inter-layer** term (a shallow stage against a deeper one), unweighted, then "
    "weighted by the lambdas you pick and set next to the cross-entropy. The gradient-norm shares show how hard each "
    "weighted term pulls on each stage's parameters; the sweep heatmaps show what training with other lambdas gave."
)
sel = selection()
refs = sel.refs()
labels = {key: f"{key} · {sel.label(key)}" for key in refs}
card_b = cache.model_card(sel.b)


def _float_param(name: str, default: float) -> float:
    try:
        return float(st.query_params.get(name, default))
    except (TypeError, ValueError):
        return default


def _list_param(name: str, options: list[str]) -> list[str]:
    """Query parameter ``a,b`` -> the listed options that exist.

    All options when the parameter is absent, or when it names only terms this model lacks (another
    architecture); an empty parameter means none.
    """
    if name not in st.query_params:
        return list(options)
    listed = [v for v in st.query_params[name].split(",") if v]
    kept = [v for v in listed if v in options]
    return kept if kept or not listed else list(options)


def _lambda_picker(name: str, label: str, card_value: object, paper: float, key: str) -> float:
    default = float(card_value) if card_b.get("method") == "tffd" and card_value is not None else paper
    wanted = _float_param(name, default)
    grid = sorted(set(LAMBDA_GRID) | {default, wanted, paper})
    value = st.select_slider(label, grid, value=wanted, format_func=plots.format_lambda, key=key,
                             help=f"Default: model B's card ({plots.format_lambda(card_value)}) for a Tf-FD model, "
                                  f"else the paper's {plots.format_lambda(paper)}.")
    st.query_params[name] = repr(float(value))
    return float(value)


# ------------------------------------------------------------------------------------------------
reports = {}
for key, ref in refs.items():
    try:
        reports[key] = cache.run("tffd_viz.terms:tffd_terms_on_batch", ref, sel.batch.images, sel.batch.labels)
    except TffdVizError as exc:
        show_error(exc, f"Tf-FD terms of model {key} ({sel.label(key)})")
if not reports:
    st.stop()

st.subheader("Held-out terms: the whole test split, with their spread")
comp = requested_comparison(sel, "losses-heldout-large", "Held-out terms of both models (and their other seeds) ...",
                            "Held-out terms")
if comp is not None:
    held = {labels[key]: comp["measures"][key]["heldout"] for key in ("A", "B")}
    st.caption(f"Eval mode, {comp['n']} {comp['split']} images in {held[labels['A']]['batches']} batches (each "
               "ranks its own channels, as training does): mean ± standard deviation over batches, raw next to "
               "the term divided by the activation energy of the maps it compares, since a smaller activation "
               "scale alone lowers an MSE. From the cards where they hold them, else computed now. The table "
               f"sets each difference against the batch-to-batch noise ({NOISE_SIGMAS:g}·√(s_A² + s_B²))"
               + (" and against the seed-to-seed noise of the shipped seeds." if max(comp["seeds"].values()) >= 2
                  else "; no second seed is shipped for a seed reference."))
    for family in ("intra", "inter"):
        show_figure(cache.run_resource("tffd_viz.noise_plots:heldout_terms_figure", held, family),
                    key=f"heldout-{family}", name=f"heldout_{family}_terms")
    show_table(pd.DataFrame(noise_table(comp)), key="heldout-noise", name="heldout_terms_noise")

st.subheader("Unweighted terms on the sample batch")
log_terms = st.toggle("Logarithmic y axis", value=True, key="losses-log-terms")
show_figure(cache.run_resource("tffd_viz.plots:terms_bar_figure",
                               {labels[k]: {"intra": r.intra, "inter": r.inter} for k, r in reports.items()},
                               log_y=log_terms, title=f"Tf-FD terms on {sel.batch.n} images (unweighted)"),
            key="terms", name="tffd_terms")

# ------------------------------------------------------------------------------------------------
st.subheader("Weighted: the lambda what-if")
c1, c2 = st.columns(2)
with c1:
    lambda_intra = _lambda_picker("lambda_intra", "λ intra", card_b.get("lambda_intra"), PAPER_LAMBDA_INTRA,
                                  "losses-lambda-intra")
with c2:
    lambda_inter = _lambda_picker("lambda_inter", "λ inter", card_b.get("lambda_inter"), PAPER_LAMBDA_INTER,
                                  "losses-lambda-inter")

all_stages = list(dict.fromkeys(s for r in reports.values() for s in r.intra))
all_pairs = list(dict.fromkeys(p for r in reports.values() for p in r.inter))
want_stages, want_pairs = _list_param("stages", all_stages), _list_param("pairs", all_pairs)
c1, c2 = st.columns(2)
with c1:
    st.markdown("**Stages (intra terms)**")
    stages = [s for s in all_stages if st.checkbox(s, value=s in want_stages, key=f"losses-stage-{s}")]
with c2:
    st.markdown("**Pairs (inter terms)**")
    pairs = [p for p in all_pairs if st.checkbox(p, value=p in want_pairs, key=f"losses-pair-{p}")]
st.query_params["stages"] = ",".join(stages)
st.query_params["pairs"] = ",".join(pairs)
st.page_link("app_pages/whatif.py", label="Try these lambdas, stages and pairs in a short fine-tune (Try lambdas)",
             icon=":material/science:", query_params=st.query_params.to_dict())


def _picked(report) -> tuple[list[str], list[str]]:
    return [s for s in stages if s in report.intra], [p for p in pairs if p in report.inter]


weighted = {}
term_rows: list[dict] = []
for key, r in reports.items():
    st_k, pa_k = _picked(r)
    weighted[key] = r.weighted(lambda_intra, lambda_inter, stages=st_k, pairs=pa_k)
    used = {row["term"]: row["weighted"] for row in r.rows(lambda_intra, lambda_inter, stages=st_k, pairs=pa_k)}
    term_rows += [{"model": labels[key], "term": row["term"], "kind": row["kind"], "value": row["value"],
                   "in loss": row["term"] in used, "weighted": used.get(row["term"])}
                  for row in r.rows(lambda_intra, lambda_inter)]

cols = st.columns(len(weighted))
for col, (key, w) in zip(cols, weighted.items()):
    share = w["tffd"] / w["ce+tffd"] if w["ce+tffd"] else float("nan")
    col.metric(f"{key}: CE + weighted Tf-FD", f"{w['ce+tffd']:.4g}",
               help=f"CE {w['ce']:.4g}; weighted intra {w['intra']:.3g}; weighted inter {w['inter']:.3g}.")
    col.metric(f"{key}: Tf-FD share of the loss", f"{100 * share:.2f} %")
log_weighted = st.toggle("Logarithmic y axis (weighted)", value=True, key="losses-log-weighted")
show_figure(cache.run_resource(
    "tffd_viz.plots:weighted_contributions_figure",
    {labels[k]: {"ce": w["ce"], "intra": w["intra"], "inter": w["inter"]} for k, w in weighted.items()},
    log_y=log_weighted,
    title=f"CE vs weighted Tf-FD (λ intra {plots.format_lambda(lambda_intra)}, "
          f"λ inter {plots.format_lambda(lambda_inter)})"), key="weighted", name="weighted_contributions")
st.caption("Each family is the mean of its selected terms times its lambda (the paper's objective; no warm-up).")
show_table(pd.DataFrame(term_rows), key="terms", name="tffd_terms")

# ------------------------------------------------------------------------------------------------
st.subheader("Gradient-norm share per stage")
# one backward pass per term: at 224 pixels (ImageNet models) a pass costs ~50x one at 32, so fewer images
gn_max = GRAD_MAX_IMAGES if (sel.batch.image_size or 32) <= 32 else GRAD_MAX_IMAGES_LARGE
gn_batch = dataclasses.replace(sel.batch, n=min(sel.batch.n, gn_max))
st.caption("L2 norm of the gradient that the CE and each weighted term send to each stage's parameters, as a share "
           "of the stage's column (each column sums to 100 %). One backward pass per term, on "
           + (f"{gn_batch.n} images drawn with the sidebar's seed (the passes are the slow part of this page)."
              if gn_batch.n < sel.batch.n else "the sample batch."))
c1, c2, c3 = st.columns(3)
gn_on = c1.toggle("Compute", value=True, key="losses-gn-on")
gn_key = c2.radio("Model", list(reports), horizontal=True, format_func=lambda k: labels[k], key="losses-gn-model")
raw = c3.toggle("Raw norms (log colour) instead of shares", value=False, key="losses-gn-raw")
st_k, pa_k = _picked(reports[gn_key])
share = None
if gn_on:
    try:
        with st.spinner("Backward passes ..."):
            share = cache.run("tffd_viz.terms:gradient_norm_share", refs[gn_key], gn_batch.images, gn_batch.labels,
                              lambda_intra, lambda_inter, stages=tuple(st_k),
                              pairs=tuple(tuple(p.split("->")) for p in pa_k))
    except TffdVizError as exc:
        show_error(exc, "Gradient-norm share")
if share is not None:
    show_figure(cache.run_resource("tffd_viz.plots:grad_share_figure", share["norms"], share["terms"], share["groups"],
                                   share=not raw, log_color=raw,
                                   title=f"Gradient norm per term and stage, {labels[gn_key]}"),
                key="grad-share", name=f"grad_share_{gn_key}")

# ------------------------------------------------------------------------------------------------
st.subheader("Sweep: what training with other lambdas gave")
prefix = cache.CHECKPOINT_DIR / f"{sel.batch.dataset}_sweep"
shown_prefix = prefix.relative_to(cache.CHECKPOINT_DIR.parent)  # as the project sees it, not this machine
try:
    rows = sweep_table(prefix)
except TffdVizError:
    rows = []
if not rows:
    st.info(f"No sweep table for {sel.batch.dataset} ({shown_prefix}.csv / .json). Create one with\n\n"
            f"`{SWEEP_COMMAND.format(dataset=sel.batch.dataset)}`\n\n(short trainings over a lambda grid; the table "
            "grows row by row, reload this page to see new rows).")
else:
    st.caption(f"{len(rows)} training runs from `{shown_prefix}.json/.csv`; each cell is the mean over seeds (hover: "
               "spread). The colours span the bulk of the cells: a cell far outside it (e.g. a diverged run) keeps "
               "its number but takes the end colour, as the colour bar and the hover say.")
    layer_sets = sorted({str(r.get("layers")) for r in rows})
    facet = "layers" if len(layer_sets) > 1 else None
    columns = sweep_value_columns(rows)
    acc_col = "final_acc" if "final_acc" in columns else columns[0]
    show_figure(cache.run_resource("tffd_viz.plots:sweep_heatmap_figure", rows, value=acc_col, facet=facet,
                                   title="Sweep: test accuracy (%)"),
                key="sweep-acc", name="sweep_accuracy")
    others = [c for c in columns if c != acc_col]
    if others:
        default = next((i for i, c in enumerate(others) if c.startswith("intra_")), 0)
        value = st.selectbox("Value", others, index=default, key="losses-sweep-value",
                             help="intra_<stage> / inter_<a>-><b>: the unweighted term at the last epoch.")
        show_figure(cache.run_resource("tffd_viz.plots:sweep_heatmap_figure", rows, value=value, facet=facet),
                    key="sweep-value",
                    name=f"sweep_{value}")
    show_table(pd.DataFrame(rows), key="sweep", name=f"{sel.batch.dataset}_sweep")
