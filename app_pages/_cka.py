"""The settings of the CKA page (images, kernel, estimator, layers) and its cached CKA matrices. Not a page.

Widgets ``<page>-n``, ``<page>-kind``, ``<page>-estimator``, ``<page>-debiased``, ``<page>-batch`` and
``<page>-layers-A`` / ``-B``; query parameters ``<page>_n``, ``<page>_kind``, ``<page>_estimator``,
``<page>_debiased``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import Selection, stages_of
from app_pages._ui import clamped, option_index, query_param, show_error
from tffd_viz.errors import TffdVizError
from tffd_viz.models import tap_info, tap_names
from tffd_viz.scale import cka_plan
from tffd_viz.similarity import FULL_BATCH_MAX_N, layer_cka_matrices

ESTIMATORS = {
    "minibatch": "Minibatch (streaming, linear only, always debiased)",
    "full": "Full batch (linear or RBF)",
}
KINDS = {"linear": "Linear", "rbf": "RBF (median bandwidth)"}
MINIBATCH_SIZES = (32, 64, 128, 256, 512)
MAX_IMAGES = 10_000
SMALL_PLAN = {"large": False, "n": 512, "minibatch": 256, "note": ""}
"""Images and minibatch size for 32-pixel models; 224-pixel ones get :func:`tffd_viz.scale.cka_plan`'s."""


@dataclass(frozen=True)
class CkaSettings:
    """What a CKA page computes: on the first ``n_images`` images, which kernel, estimator and layers."""

    n_images: int
    kind: str
    estimator: str
    debiased: bool
    batch_size: int
    layers: dict[str, tuple[str, ...]]

    @property
    def how(self) -> str:
        """``"linear CKA, debiased, minibatch estimator"``."""
        return (
            f"{KINDS[self.kind].split(' ')[0].lower()} CKA, {'debiased' if self.debiased else 'biased'}, "
            f"{self.estimator} estimator"
        )

    def options(self) -> dict[str, Any]:
        """The keyword arguments of :func:`tffd_viz.similarity.layer_cka_matrices` and ``seed_cka``."""
        return {
            "kind": self.kind,
            "debiased": self.debiased,
            "batch_size": self.batch_size,
            "estimator": self.estimator,
        }


def _plan(sel: Selection) -> dict[str, Any]:
    if not sel.batch.image_size:
        return SMALL_PLAN
    try:
        flat = {t: math.prod(i.shape) for t, i in cache.run(tap_info, sel.a).items()}
    except TffdVizError:
        flat = {}
    return cache.run(cka_plan, sel.batch.image_size, flat, sel.batch.n)


def _layers(ref: cache.ModelRef, key: str, page: str) -> tuple[str, ...]:
    return tuple(
        st.multiselect(
            f"Layers of {key}",
            cache.run(tap_names, ref),
            default=stages_of(ref),
            key=f"{page}-layers-{key}",
            help="Default: the stages Tf-FD trains on, shallow to deep.",
        )
    )


def cka_settings(sel: Selection, page: str) -> CkaSettings:
    """Draw the CKA settings of ``page`` and return them; stops the page when a model has no layer chosen."""
    split_size = len(cache.batch_split(sel.batch))
    plan = _plan(sel)
    c1, c2, c3 = st.columns(3)
    n_max = min(MAX_IMAGES, split_size)
    n_min = min(16, n_max)
    n_images = int(
        c1.number_input(
            "Images",
            min_value=n_min,
            max_value=n_max,
            step=64,
            key=f"{page}-n",
            value=query_param(f"{page}_n", min(max(plan["n"], n_min), n_max), clamped(int, n_min, n_max)),
            help=f"Drawn from the {sel.batch.split} split of {sel.batch.dataset} with the sidebar's seed "
            f"({split_size} images in that split); the first ones are the sidebar's sample batch.",
        )
    )
    kind = c2.radio(
        "Kernel",
        list(KINDS),
        format_func=KINDS.get,
        horizontal=True,
        key=f"{page}-kind",
        index=option_index(list(KINDS), query_param(f"{page}_kind", "linear")),
    )
    estimator = c2.radio(
        "Estimator",
        list(ESTIMATORS),
        format_func=ESTIMATORS.get,
        key=f"{page}-estimator",
        index=option_index(list(ESTIMATORS), query_param(f"{page}_estimator", "minibatch")),
    )
    debiased = c3.toggle(
        "Debiased (unbiased HSIC estimator)",
        key=f"{page}-debiased",
        value=query_param(f"{page}_debiased", "0") == "1",
        help="Song et al.'s unbiased HSIC_1: removes the upward bias of CKA at small n.",
    )
    batch_size = c3.select_slider(
        "Minibatch size",
        MINIBATCH_SIZES,
        value=plan["minibatch"],
        key=f"{page}-batch",
        help="Images per forward pass; for the minibatch estimator also the minibatch over "
        "which each HSIC_1 term is computed.",
    )
    st.query_params.update(
        {
            f"{page}_n": str(n_images),
            f"{page}_kind": kind,
            f"{page}_estimator": estimator,
            f"{page}_debiased": "1" if debiased else "0",
        }
    )
    if plan["large"]:
        st.info(plan["note"])
    if kind == "rbf" and estimator == "minibatch":
        st.info("RBF CKA has no streaming form: using the full-batch estimator.")
        estimator = "full"
    if estimator == "minibatch":
        st.caption(
            "The minibatch estimator sums the unbiased HSIC_1 over minibatches (Nguyen et al. 2021), so it "
            "is always debiased and its memory does not grow with the number of images."
        )
        debiased = True
    else:
        st.caption(
            f"The full-batch forms hold an n x n matrix per layer, so they use at most {FULL_BATCH_MAX_N} "
            "images."
        )
        if n_images > FULL_BATCH_MAX_N:
            st.warning(
                f"Full-batch CKA is capped at {FULL_BATCH_MAX_N} images: using {FULL_BATCH_MAX_N} of "
                f"{n_images}."
            )
            n_images = FULL_BATCH_MAX_N
    layers = {}
    with st.expander("Layers"):
        for col, (key, ref) in zip(st.columns(2), sel.refs().items()):
            with col:
                layers[key] = _layers(ref, key, page)
    if not all(layers.values()):
        st.warning("Choose at least one layer of each model (under Layers).")
        st.stop()
    return CkaSettings(n_images, kind, estimator, bool(debiased), int(batch_size), layers)


def cka_images(sel: Selection, settings: CkaSettings) -> cache.BatchField:
    """The images CKA runs on: the first ``n_images`` of the sidebar's split and seed."""
    return dataclasses.replace(sel.batch, n=settings.n_images).images


def cka_matrices(sel: Selection, settings: CkaSettings) -> dict[str, Any]:
    """:func:`tffd_viz.similarity.layer_cka_matrices` of A and B (cached), with a progress bar while it runs;
    stops the page with a message when it fails."""
    bar = st.progress(0.0, text="Computing CKA ...")

    def on_progress(done: int, total: int) -> None:
        bar.progress(min(1.0, done / max(total, 1)), text=f"Computing CKA: batch {done} of {total}")

    try:
        return cache.run(
            layer_cka_matrices,
            sel.a,
            sel.b,
            cka_images(sel, settings),
            taps_a=settings.layers["A"],
            taps_b=settings.layers["B"],
            **settings.options(),
            _progress=on_progress,
        )
    except TffdVizError as exc:
        show_error(exc, "CKA")
        st.stop()
    finally:
        bar.empty()
