"""The settings of a what-if run (the Try lambdas page): starting model, lambdas, terms, steps, learning rate.

Widgets ``whatif-*`` and query parameters ``whatif_*`` (the Losses page links to the Try lambdas page with its
choices renamed so). Not a page.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from app_pages import _cache as cache
from app_pages._sidebar import Selection, default_lambdas
from app_pages._ui import clamped, names_in, option_index, query_param, show_error
from tffd_viz import whatif as wi
from tffd_viz.errors import TffdVizError
from tffd_viz.models import default_taps


def whatif_config(sel: Selection) -> tuple[cache.ModelRef, dict[str, Any], wi.WhatIfConfig]:
    """Draw the settings and return the starting model, its card and the run's configuration (the page stops,
    with a message, on settings the recipe cannot take). The settings are mirrored in the query parameters."""
    refs = sel.refs()
    key = st.radio(
        "Starting model",
        list(refs),
        format_func=sel.labels.get,
        horizontal=True,
        key="whatif-model",
        index=option_index(list(refs), query_param("whatif_model", "A")),
    )
    ref, card = refs[key], cache.model_card(refs[key])
    taps = list(cache.run(default_taps, ref))
    all_pairs = [f"{a}->{b}" for i, a in enumerate(taps) for b in taps[i + 1 :]]
    wanted = {
        name: query_param(f"whatif_{name}", value, clamped(float, 0.0))
        for name, value in default_lambdas(sel).items()
    }  # as on the Losses page
    c1, c2, c3, c4 = st.columns(4)
    li = c1.number_input(
        "λ intra",
        0.0,
        value=wanted["lambda_intra"],
        format="%g",
        key="whatif-li",
        help="Default: the Losses page's choice, else model B's card or the paper's.",
    )
    le = c2.number_input("λ inter", 0.0, value=wanted["lambda_inter"], format="%g", key="whatif-le")
    steps = c3.number_input(
        "Steps per arm",
        1,
        10000,
        key="whatif-steps",
        value=query_param("whatif_steps", wi.default_steps(sel.batch.dataset), clamped(int, 1, 10000)),
    )
    heldout_n = c4.number_input(
        "Held-out images",
        8,
        10000,
        key="whatif-heldout",
        value=query_param("whatif_heldout", wi.DEFAULT_HELDOUT_N, clamped(int, 8, 10000)),
        help="A fixed subset of the test split (all of it when smaller).",
    )
    c1, c2 = st.columns(2)
    stages = c1.multiselect(
        "Stages (intra terms)",
        taps,
        key="whatif-stages",
        default=query_param("whatif_stages", taps, names_in(taps)),
    )
    pairs = c2.multiselect(
        "Pairs (inter terms)",
        all_pairs,
        key="whatif-pairs",
        default=query_param("whatif_pairs", all_pairs, names_in(all_pairs)),
    )
    st.query_params.update(
        {
            "whatif_model": key,
            "whatif_lambda_intra": repr(float(li)),
            "whatif_lambda_inter": repr(float(le)),
            "whatif_stages": ",".join(stages),
            "whatif_pairs": ",".join(pairs),
            "whatif_steps": str(int(steps)),
            "whatif_heldout": str(int(heldout_n)),
        }
    )
    config = wi.WhatIfConfig(
        lambda_intra=float(li),
        lambda_inter=float(le),
        stages=tuple(stages),
        pairs=tuple(tuple(p.split("->")) for p in pairs),
        steps=int(steps),
        heldout_n=int(heldout_n),
    )
    try:
        s = wi.whatif_settings(card, sel.batch.dataset, config, taps)  # lr None: the default
        lr = st.number_input(
            "Learning rate (constant)",
            1e-6,
            10.0,
            value=s["lr"],
            format="%g",
            key="whatif-lr",
            help=f"Default: a tenth of the recipe's peak lr ({s['recipe_lr']:g}).",
        )
        config = dataclasses.replace(config, lr=float(lr))
        s = wi.whatif_settings(card, sel.batch.dataset, config, taps)
    except TffdVizError as exc:
        show_error(exc, "Settings")
        st.stop()
    st.caption(
        f"SGD, momentum {s['momentum']:g}{' (Nesterov)' if s['nesterov'] else ''}, weight decay "
        f"{s['weight_decay']:g}, batch {s['batch_size']} ({s['recipe']} recipe of the card), crop padding "
        f"{s['crop_padding']}, flip {s['flip']}, BatchNorm in train mode, no warm-up; batch-order seeds "
        f"{s['seed']} (control, Tf-FD arm) and {s['noise_seed']} (second control)."
    )
    return ref, card, config
