"""Try lambdas: short fine-tunes of one model (control, Tf-FD arm, second control), live, with the answer."""

from __future__ import annotations

import time

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import selection
from app_pages._ui import intro, show_error, show_figure, show_table
from app_pages._whatif import whatif_config
from tffd_viz import plots
from tffd_viz import whatif as wi
from tffd_viz.errors import TffdVizError

STATE = "whatif-run"
REDRAW_SECONDS = 1.0  # live curves are redrawn at most this often (drawing costs more than a digits step)

st.title("Try lambdas")
intro(
    "If you trained with these lambdas on these stages, would the Tf-FD terms move, and would accuracy hold? "
    "Three short fine-tunes from the same weights: a **control** (CE only), the **Tf-FD arm** (CE + your "
    "weighted terms, the control's batches) and a **second control** on another batch order, whose distance "
    "from the first is the noise floor; every arm is evaluated on held-out test images before and after "
    "(eval mode, raw and relative)."
)
sel = selection()
ref, card, config = whatif_config(sel)

c1, c2 = st.columns(2)
start = c1.button("Run", type="primary", key="whatif-start")
c2.button("Cancel", key="whatif-cancel", help="Stops after the current step and keeps what was done.")
if start and sel.batch.image_size:
    st.info("The what-if trains on the in-memory 32-pixel datasets only.")
    st.stop()
if start:
    try:
        bundle = cache.dataset(sel.batch.dataset, sel.batch.root)
        st.session_state[STATE] = cache.call(wi.WhatIf, ref, bundle, config, card=card)
    except TffdVizError as exc:
        show_error(exc, "What-if")
        st.stop()
runner = st.session_state.get(STATE)
if runner is None:
    st.info("Set the lambdas, stages and steps, then press **Run**.")
    fig = cache.figure(plots.whatif_curves_figure, [], title="What-if: training curves (press Run)")
    st.plotly_chart(fig, key="whatif-empty-figure")
    st.stop()


def progress_text() -> str:
    return f"step {runner.step} of {runner.total_steps} per arm ({runner.seconds:.1f} s)"


bar = st.progress(runner.step / runner.total_steps, text=progress_text())
live = st.empty()  # the one chart not cached: redrawn while the run goes on
if start:
    drawn = time.monotonic()
    for row in runner.run():
        if row["arm"] == wi.ARMS[-1]:
            bar.progress(runner.step / runner.total_steps, text=progress_text())
            if time.monotonic() - drawn > REDRAW_SECONDS:
                live.plotly_chart(plots.whatif_curves_figure(runner.rows, total_steps=runner.total_steps))
                drawn = time.monotonic()
    live.empty()
if runner.step < runner.total_steps:
    st.warning(
        f"Stopped after {runner.step} of {runner.total_steps} steps (Cancel, or a change on the page); the "
        f"comparison below is at step {runner.step}. Press Run to start again."
    )
if runner.step == 0:
    st.stop()
with st.spinner("Held-out evaluation of every arm ..."):
    result = runner.result()
st.subheader("The answer")
lines = wi.whatif_answer(result).splitlines()[:-1]  # the last line is the command, drawn as code below
st.markdown("\n".join(f"- {line}" for line in lines))
st.markdown("Train with these settings for real:")
st.code(result["command"], language="bash", wrap_lines=True)
fig = cache.figure(plots.whatif_curves_figure, runner.rows, total_steps=runner.total_steps)
show_figure(fig, key="whatif-curves", name="whatif_curves")
show_figure(cache.figure(plots.whatif_heldout_figure, result), key="whatif-heldout", name="whatif_heldout")
show_table(result["comparison"], key="whatif-comparison", name="whatif_comparison")
