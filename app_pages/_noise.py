"""Noise references for the pages: the other shipped seeds of a model's configuration, and the cached A-vs-B
comparison on the whole test split (:func:`tffd_viz.verdicts.pair_comparison_on`). Not a page."""

from __future__ import annotations

from typing import Any

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import Selection
from app_pages._ui import show_error
from tffd_viz.errors import TffdVizError
from tffd_viz.verdicts import pair_comparison_on, seed_siblings


def seed_refs(sel: Selection, key: str) -> list[cache.ModelRef]:
    """Every shipped seed of model ``key``'s configuration other than the model itself (empty for uploads)."""
    ref = sel.refs()[key]
    if ref.path is None:
        return []
    shipped = cache.shipped_checkpoints()
    by_path = {p: (p, c, sha) for p, c, sha in shipped}
    here = next((item for item in shipped if item[0] == ref.path), None)
    if here is None:
        return []
    paths = [str(p) for p in seed_siblings(here[1], shipped)]
    return [
        cache.ModelRef(sha=by_path[p][2], device=ref.device, path=p, label=p.rsplit("/", 1)[-1])
        for p in paths
        if p != ref.path and p in by_path
    ]


COMPARE_MAX_IMAGES = 2000
"""Images of the test split the pages measure cosines and CKA on (the whole digits split; the first 2,000 of
CIFAR's 10,000, about a minute on a CPU instead of several); cards' held-out terms cover the whole split."""


def comparison(sel: Selection) -> dict[str, Any]:
    """:func:`tffd_viz.verdicts.pair_comparison_on` of A and B on the test split, cached; cards' held-out
    terms are used where present, the other shipped seeds give the noise where they exist."""
    seeds = {key: seed_refs(sel, key) for key in ("A", "B")}
    return cache.run(
        pair_comparison_on,
        {"A": sel.a, "B": sel.b},
        sel.batch.dataset,
        sel.batch.root,
        image_size=sel.batch.image_size,
        max_images=COMPARE_MAX_IMAGES,
        heldouts={key: cache.CardField(ref, "heldout_terms") for key, ref in sel.refs().items()},
        seeds=seeds,
        seed_heldouts={
            key: [cache.CardField(r, "heldout_terms") for r in refs] for key, refs in seeds.items()
        },
    )


def requested_comparison(sel: Selection, key: str, spinner: str, what: str) -> dict[str, Any] | None:
    """:func:`comparison`, shown with a spinner; None (after an error message) when it fails.

    For 224-pixel models (ImageNet) the whole split is up to 50,000 images, hours on a CPU: a toggle (widget
    ``key``) asks for it first, and until it is on the page says so and returns None.
    """
    if sel.batch.image_size and not st.toggle(
        f"Measure on the whole {sel.batch.split} split ({len(cache.batch_split(sel.batch))} images of "
        f"{sel.batch.image_size}x{sel.batch.image_size}; slow on a CPU)",
        value=False,
        key=key,
    ):
        st.caption("Not measured yet: switch it on above.")
        return None
    try:
        with st.spinner(spinner):
            return comparison(sel)
    except TffdVizError as exc:
        show_error(exc, what)
        return None
