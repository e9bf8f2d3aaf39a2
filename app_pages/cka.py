"""CKA: layer x layer similarity of representations within and across the two models."""

from __future__ import annotations

import streamlit as st

from app_pages import _cache as cache
from app_pages._cka import cka_images, cka_matrices, cka_settings
from app_pages._noise import seed_refs
from app_pages._sidebar import selection
from app_pages._ui import intro, show_error, show_figure, show_table
from tffd_viz import plots
from tffd_viz.errors import TffdVizError
from tffd_viz.tables import cka_matrix_rows
from tffd_viz.verdicts import cka_rows, seed_cka

st.title("CKA")
intro(
    "Centered kernel alignment (CKA) between every pair of layers: 1 means two layers represent the images "
    "identically up to rotation and scale, 0 means unrelated. The left panels compare each model with itself "
    "(how fast the representation changes with depth), the right one A with B (whether Tf-FD changed what a "
    "stage computes, read along the diagonal). Shallow stages becoming more similar to deep ones within B is "
    "what inter-layer Tf-FD aims at."
)
sel = selection()
settings = cka_settings(sel, "cka")
result = cka_matrices(sel, settings)

st.subheader(f"CKA over {settings.n_images} {sel.batch.split} images ({settings.how})")
panels = {"A vs A": result["AvA"], "B vs B": result["BvB"], "A vs B": result["AvB"]}
fig = cache.figure(plots.cka_grid_figure, panels, title=f"CKA: within and across models ({settings.how})")
show_figure(fig, key="cka-grid", name=f"cka_{settings.kind}_{settings.estimator}")
st.caption(f"A = {sel.label('A')}, B = {sel.label('B')}.")

with st.expander("Numbers"):
    for panel, (matrix, rows, cols) in panels.items():
        row_model, col_model = panel.split(" vs ")
        st.markdown(f"**{panel}**")
        show_table(
            cka_matrix_rows(matrix, rows, cols, row_model, col_model),
            key=f"cka-{panel.replace(' ', '')}",
            name=f"cka_{panel.replace(' ', '_')}",
        )

# ------------------------------------------------------------------------------------------------
st.subheader("A vs B against seed to seed")
seeds = {key: seed_refs(sel, key) for key in ("A", "B")}
if not any(seeds.values()):
    st.info(
        "No other seed of A's or B's configuration is shipped, so there is no seed-to-seed reference: two "
        "seeds of one configuration never give CKA 1, and without one a lower A-vs-B CKA cannot be told "
        "from a change of seed."
    )
    st.stop()
if settings.layers["A"] != settings.layers["B"]:
    st.info("The seed-to-seed reference compares the same layers: pick the same layers for A and B.")
    st.stop()
seed_values: dict[str, list[float]] = {}
try:
    with st.spinner("Seed-to-seed CKA ..."):
        for key, refs in seeds.items():
            if refs:
                found = cache.run(
                    seed_cka,
                    [sel.refs()[key], *refs],
                    cka_images(sel, settings),
                    settings.layers[key],
                    **settings.options(),
                )
                for layer, values in found.items():
                    seed_values.setdefault(layer, []).extend(values)
except TffdVizError as exc:
    show_error(exc, "Seed-to-seed CKA")
ab, rows_ab, cols_ab = result["AvB"]
diagonal = {rows_ab[i]: float(ab[i, i]) for i in range(min(len(rows_ab), len(cols_ab)))}
fig = cache.figure(
    plots.cka_reference_figure,
    diagonal,
    seed_values,
    title=f"Same layer of A and B against seed to seed ({settings.how})",
)
show_figure(fig, key="cka-seeds", name=f"cka_seed_reference_{settings.kind}_{settings.estimator}")
st.caption(
    "Grey: the CKA between two shipped seeds of one configuration (A's and B's), same images and "
    f"estimator ({', '.join(f'{k}: {len(v) + 1} seeds' for k, v in seeds.items() if v)}). B's layer "
    "departs from A's beyond seed noise only where the A-vs-B CKA falls below the lowest of them."
)
show_table(cka_rows(diagonal, seed_values), key="cka-seed-verdicts", name="cka_seed_verdicts")
