"""Losses and lambdas: every Tf-FD term on the sample batch, weighted by the lambdas and terms you pick."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import each_model, loss_picker, selection
from app_pages._ui import carried_params, intro, show_figure, show_table
from tffd_viz import plots
from tffd_viz.tables import term_rows
from tffd_viz.terms import tffd_terms_on_batch

st.title("Losses and lambdas")
intro(
    "The Tf-FD loss of each model on the sample batch: every **intra-layer** term (a stage's redundant half "
    "against its salient half) and every **inter-layer** term (a shallow stage against a deeper one), "
    "unweighted, then weighted by the lambdas and terms you pick and set next to the cross-entropy. "
    "**Gradient shares** show how hard each weighted term pulls on each stage's parameters, **What changed** "
    "the terms on the whole test split, **Sweep** what training with other lambdas gave, and **Try lambdas** "
    "what a short fine-tune with yours does."
)
sel = selection()
labels = sel.labels
reports = each_model(sel, "Tf-FD terms", tffd_terms_on_batch, sel.batch.images, sel.batch.labels)
if not reports:
    st.stop()

st.subheader("Unweighted terms on the sample batch")
log_terms = st.toggle("Logarithmic y axis", value=True, key="losses-log-terms")
terms = {labels[k]: {"intra": r.intra, "inter": r.inter} for k, r in reports.items()}
title = f"Tf-FD terms on {sel.batch.n} images (unweighted)"
show_figure(
    cache.figure(plots.terms_bar_figure, terms, log_y=log_terms, title=title),
    key="losses-terms",
    name="tffd_terms",
)

# ------------------------------------------------------------------------------------------------
st.subheader("Weighted: the lambda what-if")
stages = list(dict.fromkeys(s for r in reports.values() for s in r.intra))  # of either model, in order
pairs = list(dict.fromkeys(p for r in reports.values() for p in r.inter))
loss = loss_picker(sel, "losses", stages, pairs)
c1, c2 = st.columns(2)
c1.page_link(
    "app_pages/gradients.py",
    label="Gradient shares of these terms",
    icon=":material/call_split:",
    query_params=carried_params("losses", "gradients"),
)
c2.page_link(
    "app_pages/whatif.py",
    label="Try these lambdas, stages and pairs in a short fine-tune (Try lambdas)",
    icon=":material/science:",
    query_params=carried_params("losses", "whatif"),
)

picked = {key: loss.of(r.intra, r.inter) for key, r in reports.items()}
weighted = {key: r.weighted(loss.lambda_intra, loss.lambda_inter, *picked[key]) for key, r in reports.items()}
for col, (key, w) in zip(st.columns(len(weighted)), weighted.items()):
    share = w["tffd"] / w["ce+tffd"] if w["ce+tffd"] else float("nan")
    col.metric(
        f"{key}: CE + weighted Tf-FD",
        f"{w['ce+tffd']:.4g}",
        help=f"CE {w['ce']:.4g}; weighted intra {w['intra']:.3g}; weighted inter {w['inter']:.3g}.",
    )
    col.metric(f"{key}: Tf-FD share of the loss", f"{100 * share:.2f} %")
log_weighted = st.toggle("Logarithmic y axis (weighted)", value=True, key="losses-log-weighted")
families = {labels[k]: {f: w[f] for f in ("ce", "intra", "inter")} for k, w in weighted.items()}
lambdas = (
    f"λ intra {plots.format_lambda(loss.lambda_intra)}, λ inter {plots.format_lambda(loss.lambda_inter)}"
)
fig = cache.figure(
    plots.weighted_contributions_figure,
    families,
    log_y=log_weighted,
    title=f"CE vs weighted Tf-FD ({lambdas})",
)
show_figure(fig, key="losses-weighted", name="weighted_contributions")
st.caption(
    "Each family is the mean of its selected terms times its lambda (the paper's objective; no warm-up)."
)
rows = term_rows(
    {labels[k]: r for k, r in reports.items()},
    loss.lambda_intra,
    loss.lambda_inter,
    {labels[k]: p for k, p in picked.items()},
)
show_table(rows, key="losses-table", name="tffd_terms")
