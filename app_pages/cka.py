"""CKA: layer x layer similarity of representations within and across the two models."""

import dataclasses
import math

import pandas as pd
import streamlit as st

from app_pages import cache
from app_pages.common import intro, selection, show_error, show_figure, show_table
from app_pages.noise import seed_refs
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.noise_plots import cka_reference_figure
from tffd_viz.similarity import FULL_BATCH_MAX_N
from tffd_viz.verdicts import cka_rows

ESTIMATORS = {
    "minibatch": "Minibatch (streaming, linear only, always debiased)",
    "full": "Full batch (linear or RBF)",
}
KINDS = {"linear": "Linear", "rbf": "RBF (median bandwidth)"}
MINIBATCH_SIZES = (32, 64, 128, 256, 512)
MAX_IMAGES = 10_000


def _qp(name: str, options, default):
    value = st.query_params.get(name, default)
    return value if value in options else default


def _qp_int(name: str, default: int) -> int:
    try:
        return int(st.query_params.get(name, default))
    except (TypeError, ValueError):
        return default


st.title("CKA")
intro(
    "Centered kernel alignment (CKA) between every pair of layers: 1 means two layers represent the images "
    "identically up to rotation and scale, 0 means unrelated. The left panels compare each model with itself "
    "(how fast the representation changes with depth), the right one A with B (whether Tf-FD changed what a stage "
    "computes, read along the diagonal). Shallow stages becoming more similar to deep ones within B is what "
    "inter-layer Tf-FD aims at."
)
sel = selection()
split_size = len(cache.batch_split(sel.batch))
plan = {"large": False, "n": 512, "minibatch": 256, "note": ""}
if sel.batch.image_size:
    try:
        flat = {t: math.prod(i.shape) for t, i in cache.run("tffd_viz.models:tap_info", sel.a).items()}
    except TffdVizError:
        flat = {}
    plan = cache.run("tffd_viz.scale:cka_plan", sel.batch.image_size, flat, sel.batch.n)

c1, c2, c3 = st.columns(3)
with c1:
    n_max = min(MAX_IMAGES, split_size)
    n_min = min(16, n_max)
    n_images = int(st.number_input(
        "Images", min_value=n_min, max_value=n_max, value=min(max(_qp_int("cka_n", plan["n"]), n_min), n_max), step=64,
        key="cka-n",
        help=f"Drawn from the {sel.batch.split} split of {sel.batch.dataset} with the sidebar's seed "
             f"({split_size} images in that split); the first ones are the sidebar's sample batch."))
with c2:
    kind = st.radio("Kernel", list(KINDS), format_func=KINDS.get, horizontal=True, key="cka-kind",
                    index=list(KINDS).index(_qp("cka_kind", KINDS, "linear")))
    estimator = st.radio("Estimator", list(ESTIMATORS), format_func=ESTIMATORS.get, key="cka-estimator",
                         index=list(ESTIMATORS).index(_qp("cka_estimator", ESTIMATORS, "minibatch")))
with c3:
    debiased = st.toggle("Debiased (unbiased HSIC estimator)", key="cka-debiased",
                         value=st.query_params.get("cka_debiased", "0") == "1",
                         help="Song et al.'s unbiased HSIC_1: removes the upward bias of CKA at small n.")
    batch_size = st.select_slider("Minibatch size", MINIBATCH_SIZES, value=plan["minibatch"], key="cka-batch",
                                  help="Images per forward pass; for the minibatch estimator also the "
                                       "minibatch over which each HSIC_1 term is computed.")
st.query_params.update({"cka_n": str(n_images), "cka_kind": kind, "cka_estimator": estimator,
                        "cka_debiased": "1" if debiased else "0"})

if plan["large"]:
    st.info(plan["note"])
if kind == "rbf" and estimator == "minibatch":
    st.info("RBF CKA has no streaming form: using the full-batch estimator.")
    estimator = "full"
if estimator == "minibatch":
    st.caption("The minibatch estimator sums the unbiased HSIC_1 over minibatches (Nguyen et al. 2021), so it is "
               "always debiased and its memory does not grow with the number of images.")
    debiased = True
else:
    st.caption(f"The full-batch forms hold an n x n matrix per layer, so they use at most {FULL_BATCH_MAX_N} "
               "images.")
    if n_images > FULL_BATCH_MAX_N:
        st.warning(f"Full-batch CKA is capped at {FULL_BATCH_MAX_N} images: using {FULL_BATCH_MAX_N} of "
                   f"{n_images}.")
        n_images = FULL_BATCH_MAX_N


def _layers(ref: cache.ModelRef, key: str) -> list[str]:
    options = cache.run("tffd_viz.models:tap_names", ref)
    try:
        default = list(cache.run("tffd_viz.models:default_taps", ref))
    except TffdVizError:
        default = []
    return st.multiselect(f"Layers of {key}", options, default=default, key=f"cka-layers-{key}",
                          help="Default: the stages Tf-FD trains on, shallow to deep.")


with st.expander("Layers"):
    layer_cols = st.columns(2)
    layers = {}
    for col, (key, ref) in zip(layer_cols, sel.refs().items()):
        with col:
            layers[key] = _layers(ref, key)
if not layers["A"] or not layers["B"]:
    st.warning("Choose at least one layer of each model (under Layers).")
    st.stop()

images = dataclasses.replace(sel.batch, n=n_images).images
bar = st.progress(0.0, text="Computing CKA ...")


def _on_progress(done: int, total: int) -> None:
    bar.progress(min(1.0, done / max(total, 1)), text=f"Computing CKA: batch {done} of {total}")


try:
    result = cache.run("tffd_viz.similarity:layer_cka_matrices", sel.a, sel.b, images,
                       taps_a=tuple(layers["A"]), taps_b=tuple(layers["B"]), kind=kind, debiased=debiased,
                       batch_size=int(batch_size), estimator=estimator, _progress=_on_progress)
except TffdVizError as exc:
    bar.empty()
    show_error(exc, "CKA")
    st.stop()
bar.empty()

how = f"{KINDS[kind].split(' ')[0].lower()} CKA, {'debiased' if debiased else 'biased'}, {estimator} estimator"
st.subheader(f"CKA over {n_images} {sel.batch.split} images ({how})")
panels = {"A vs A": result["AvA"], "B vs B": result["BvB"], "A vs B": result["AvB"]}
show_figure(plots.cka_grid_figure(panels, title=f"CKA: within and across models ({how})"), key="cka-grid",
            name=f"cka_{kind}_{estimator}")
st.caption(f"A = {sel.label('A')}, B = {sel.label('B')}.")

with st.expander("Numbers"):
    for panel, (matrix, rows, cols) in panels.items():
        row_model, col_model = panel.split(" vs ")
        df = pd.DataFrame(matrix, columns=[f"{col_model} {c}" for c in cols])
        df.insert(0, f"{row_model} layer", rows)
        st.markdown(f"**{panel}**")
        show_table(df, key=f"cka-{panel.replace(' ', '')}", name=f"cka_{panel.replace(' ', '_')}")

st.subheader("A vs B against seed to seed")
seeds = {key: seed_refs(sel, key) for key in ("A", "B")}
if not any(seeds.values()):
    st.info("No other seed of A's or B's configuration is shipped, so there is no seed-to-seed reference: two "
            "seeds of one configuration never give CKA 1, and without one a lower A-vs-B CKA cannot be told "
            "from a change of seed.")
elif layers["A"] != layers["B"]:
    st.info("The seed-to-seed reference compares the same layers: pick the same layers for A and B.")
else:
    seed_values: dict[str, list[float]] = {}
    try:
        with st.spinner("Seed-to-seed CKA ..."):
            for key, refs in seeds.items():
                if refs:
                    found = cache.run("tffd_viz.verdicts:seed_cka", [sel.refs()[key], *refs], images,
                                      tuple(layers[key]), kind=kind, debiased=debiased, batch_size=int(batch_size),
                                      estimator=estimator)
                    for layer, values in found.items():
                        seed_values.setdefault(layer, []).extend(values)
    except TffdVizError as exc:
        show_error(exc, "Seed-to-seed CKA")
    ab, rows_ab, cols_ab = result["AvB"]
    diagonal = {rows_ab[i]: float(ab[i, i]) for i in range(min(len(rows_ab), len(cols_ab)))}
    show_figure(cka_reference_figure(diagonal, seed_values,
                                     title=f"Same layer of A and B against seed to seed ({how})"),
                key="cka-seeds", name=f"cka_seed_reference_{kind}_{estimator}")
    st.caption("Grey: the CKA between two shipped seeds of one configuration (A's and B's), same images and "
               f"estimator ({', '.join(f'{k}: {len(v) + 1} seeds' for k, v in seeds.items() if v)}). B's layer "
               "departs from A's beyond seed noise only where the A-vs-B CKA falls below the lowest of them.")
    show_table(pd.DataFrame(cka_rows(diagonal, seed_values)), key="cka-seed-verdicts", name="cka_seed_verdicts")
