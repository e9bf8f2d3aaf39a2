"""Try lambdas: short fine-tunes from one model (control, Tf-FD arm, second control), live, with the answer."""

from __future__ import annotations

import dataclasses
import time

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from tffd_viz import whatif as wi
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.plots_whatif import whatif_curves_figure, whatif_heldout_figure

STATE = "whatif-run"
REDRAW_SECONDS = 1.0  # live curves are redrawn at most this often (drawing costs more than a digits step)

st.title("Try lambdas")
intro("If you trained with these lambdas on these stages, would the Tf-FD terms move, and would accuracy hold? Three "
      "short fine-tunes from the same weights: a **control** (CE only), the **Tf-FD arm** (CE + your weighted terms, "
      "the control's batches) and a **second control** on another batch order, whose distance from the first is the "
      "noise floor; every arm is evaluated on held-out test images before and after (eval mode, raw and relative).")
sel = selection()
refs = sel.refs()
wanted = st.query_params.get("whatif_model")
key = st.radio("Starting model", list(refs), format_func=lambda k: f"{k} · {sel.label(k)}", horizontal=True,
               key="whatif-model", index=list(refs).index(wanted) if wanted in refs else 0)
st.query_params["whatif_model"] = key
ref, card = refs[key], cache.model_card(refs[key])
taps = list(cache.run("tffd_viz.models:default_taps", ref))
all_pairs = [f"{a}->{b}" for i, a in enumerate(taps) for b in taps[i + 1:]]


def _param_float(name: str, default: float) -> float:
    try:
        return max(0.0, float(st.query_params.get(name, default)))
    except (TypeError, ValueError):
        return default


def _param_int(name: str, default: int, lo: int, hi: int) -> int:
    """An int query parameter clamped to ``[lo, hi]`` (``default`` when absent or not an int)."""
    try:
        return min(hi, max(lo, int(st.query_params.get(name, default))))
    except (TypeError, ValueError):
        return default


def _param_list(name: str, options: list[str]) -> list[str]:
    """The Losses page's convention: absent = all, empty = none, names this model lacks are dropped."""
    return list(options) if name not in st.query_params else [
        v for v in st.query_params[name].split(",") if v in options]


card_b = cache.model_card(sel.b)  # as on the Losses page: model B's lambdas when it is a Tf-FD model, else the paper's
defaults = {name: float(card_b[name]) if card_b.get("method") == "tffd" and card_b.get(name) is not None else paper
            for name, paper in (("lambda_intra", PAPER_LAMBDA_INTRA), ("lambda_inter", PAPER_LAMBDA_INTER))}
c1, c2, c3, c4 = st.columns(4)
li = c1.number_input("λ intra", 0.0, value=_param_float("lambda_intra", defaults["lambda_intra"]), format="%g",
                     key="whatif-li", help="Default: the Losses page's choice, else model B's card or the paper's.")
le = c2.number_input("λ inter", 0.0, value=_param_float("lambda_inter", defaults["lambda_inter"]), format="%g",
                     key="whatif-le")
steps = c3.number_input("Steps per arm", 1, 10000, key="whatif-steps",
                        value=_param_int("whatif_steps", wi.default_steps(sel.batch.dataset), 1, 10000))
heldout_n = c4.number_input("Held-out images", 8, 10000, key="whatif-heldout",
                            value=_param_int("whatif_heldout", wi.DEFAULT_HELDOUT_N, 8, 10000),
                            help="A fixed subset of the test split (all of it when smaller).")
c1, c2 = st.columns(2)
stages = c1.multiselect("Stages (intra terms)", taps, default=_param_list("stages", taps), key="whatif-stages")
pairs = c2.multiselect("Pairs (inter terms)", all_pairs, default=_param_list("pairs", all_pairs), key="whatif-pairs")
st.query_params.update({"lambda_intra": repr(float(li)), "lambda_inter": repr(float(le)), "stages": ",".join(stages),
                        "pairs": ",".join(pairs), "whatif_steps": str(int(steps)),
                        "whatif_heldout": str(int(heldout_n))})
config = wi.WhatIfConfig(lambda_intra=float(li), lambda_inter=float(le), stages=tuple(stages),
                      pairs=tuple(tuple(p.split("->")) for p in pairs), steps=int(steps), heldout_n=int(heldout_n))
try:
    s = wi.whatif_settings(card, sel.batch.dataset, config, taps)  # lr None: the default
    lr = st.number_input("Learning rate (constant)", 1e-6, 10.0, value=s["lr"], format="%g", key="whatif-lr",
                         help=f"Default: a tenth of the recipe's peak lr ({s['recipe_lr']:g}).")
    config = dataclasses.replace(config, lr=float(lr))
    s = wi.whatif_settings(card, sel.batch.dataset, config, taps)
except TffdVizError as exc:
    show_error(exc, "Settings")
    st.stop()
st.caption(f"SGD, momentum {s['momentum']:g}{' (Nesterov)' if s['nesterov'] else ''}, weight decay "
           f"{s['weight_decay']:g}, batch {s['batch_size']} ({s['recipe']} recipe of the card), crop padding "
           f"{s['crop_padding']}, flip {s['flip']}, BatchNorm in train mode, no warm-up; batch-order seeds "
           f"{s['seed']} (control, Tf-FD arm) and {s['noise_seed']} (second control).")

c1, c2 = st.columns(2)
start = c1.button("Run", type="primary", key="whatif-start")
c2.button("Cancel", key="whatif-cancel", help="Stops after the current step and keeps what was done.")
if start:
    if getattr(sel.batch, "image_size", None):
        st.info("The what-if trains on the in-memory 32-pixel datasets only.")
        st.stop()
    try:
        bundle = cache.dataset(sel.batch.dataset, sel.batch.root)
        st.session_state[STATE] = cache.call("tffd_viz.whatif:WhatIf", ref, bundle, config, card=card)
    except TffdVizError as exc:
        show_error(exc, "What-if")
        st.stop()
runner = st.session_state.get(STATE)
if runner is None:
    st.info("Set the lambdas, stages and steps, then press **Run**.")
    st.plotly_chart(whatif_curves_figure([], title="What-if: training curves (press Run)"), key="fig-whatif-empty")
    st.stop()


def _progress_text() -> str:
    return f"step {runner.step} of {runner.total_steps} per arm ({runner.seconds:.1f} s)"


bar = st.progress(runner.step / runner.total_steps, text=_progress_text())
live = st.empty()
if start:
    drawn = time.monotonic()
    for row in runner.run():
        if row["arm"] == wi.ARMS[-1]:
            bar.progress(runner.step / runner.total_steps, text=_progress_text())
            if time.monotonic() - drawn > REDRAW_SECONDS:
                live.plotly_chart(whatif_curves_figure(runner.rows, total_steps=runner.total_steps))
                drawn = time.monotonic()
    live.empty()
if runner.step < runner.total_steps:
    st.warning(f"Stopped after {runner.step} of {runner.total_steps} steps (Cancel, or a change on the page); the "
               f"comparison below is at step {runner.step}. Press Run to start again.")
if runner.step == 0:
    st.stop()
with st.spinner("Held-out evaluation of every arm ..."):
    result = runner.result()
st.subheader("The answer")
lines = wi.whatif_answer(result).splitlines()[:-1]  # the last line is the command, drawn as code below
st.markdown("\n".join(f"- {line}" for line in lines))
st.markdown("Train with these settings for real:")
st.code(result["command"], language="bash", wrap_lines=True)
show_figure(whatif_curves_figure(runner.rows, total_steps=runner.total_steps), key="whatif-curves",
            name="whatif_curves")
show_figure(whatif_heldout_figure(result), key="whatif-heldout", name="whatif_heldout")
show_table(pd.DataFrame(result["comparison"]), key="whatif-comparison", name="whatif_comparison")
