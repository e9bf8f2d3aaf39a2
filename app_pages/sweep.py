"""Sweep: what training with other lambdas gave (a sweep table of short trainings over a lambda grid)."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import selection
from app_pages._ui import intro, show_figure, show_table
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.sweeps import sweep_table, sweep_value_columns

SWEEP_COMMAND = (
    "tffd-viz sweep --recipe digits --lambda-intra 0,8e-4,1e-2,1e-1,1 --lambda-inter 0,5e-4,1e-2,1e-1,1 "
    "--seeds 0 --out checkpoints/{dataset}_sweep"
)

st.title("Sweep")
intro(
    "What training with other lambdas gave: short trainings over a grid of λ intra x λ inter (and layer "
    "sets), each cell the mean over seeds of the test accuracy, or of a term at the last epoch. The lambdas "
    "that keep the accuracy and move the terms are the ones worth a full training; **Try lambdas** tries one "
    "choice in a short fine-tune."
)
sel = selection()
prefix = cache.CHECKPOINT_DIR / f"{sel.batch.dataset}_sweep"
shown_prefix = prefix.relative_to(cache.CHECKPOINT_DIR.parent)  # as the project sees it, not this machine
try:
    rows = sweep_table(prefix)
except TffdVizError:
    rows = []
if not rows:
    st.info(
        f"No sweep table for {sel.batch.dataset} ({shown_prefix}.csv / .json). Create one "
        f"with\n\n`{SWEEP_COMMAND.format(dataset=sel.batch.dataset)}`\n\n(short trainings over a lambda "
        "grid; the table grows row by row, reload this page to see new rows)."
    )
    st.stop()

st.subheader("Test accuracy over the lambda grid")
st.caption(
    f"{len(rows)} training runs from `{shown_prefix}.json/.csv`; each cell is the mean over seeds (hover: "
    "spread). The colours span the bulk of the cells: a cell far outside it (e.g. a diverged run) keeps "
    "its number but takes the end colour, as the colour bar and the hover say."
)
facet = "layers" if len({str(r.get("layers")) for r in rows}) > 1 else None
columns = sweep_value_columns(rows)
accuracy = "final_acc" if "final_acc" in columns else columns[0]
fig = cache.figure(
    plots.sweep_heatmap_figure, rows, value=accuracy, facet=facet, title="Sweep: test accuracy (%)"
)
show_figure(fig, key="sweep-accuracy", name="sweep_accuracy")

others = [c for c in columns if c != accuracy]
if others:
    st.subheader("Any other value")
    default = next((i for i, c in enumerate(others) if c.startswith("intra_")), 0)
    value = st.selectbox(
        "Value",
        others,
        index=default,
        key="sweep-value",
        help="intra_<stage> / inter_<a>-><b>: the unweighted term at the last epoch.",
    )
    fig = cache.figure(plots.sweep_heatmap_figure, rows, value=value, facet=facet)
    show_figure(fig, key="sweep-other", name=f"sweep_{value}")
show_table(rows, key="sweep-table", name=f"{sel.batch.dataset}_sweep")
