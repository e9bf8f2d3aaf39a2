"""Figures that put A-vs-B differences next to their noise and their scale (plotly, no streamlit).

Companions of :mod:`tffd_viz.verdicts` for the app, the notebooks and the report:

* :func:`heldout_terms_figure`: held-out Tf-FD terms of A and B with their batch-to-batch spread, raw next to
  scale-free (term / energy), and the activation energy per stage;
* :func:`cosine_reference_figure`: the salient/redundant paired cosine next to the cosine of random channel
  pairs of the same layer;
* :func:`cka_reference_figure`: the A-vs-B CKA of each layer against the seed-to-seed CKA;
* :func:`noise_ratio_figure`: every row of the what-changed table as its difference over its noise;
* :func:`saliency_gap_figure`: sorted saliency bars on an axis that shows the salient/redundant gap.

Per-class errors against the models' accuracy are in :mod:`tffd_viz.plots.accuracy`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import _TALL_MARGIN, _grouped_layout, _paper_note, model_color
from tffd_viz.plots._inputs import _float, _np
from tffd_viz.plots.ranking import saliency_bars_figure
from tffd_viz.types import ArrayLike

__all__ = [
    "cka_reference_figure",
    "cosine_reference_figure",
    "heldout_terms_figure",
    "noise_ratio_figure",
    "saliency_gap_figure",
]

_PANELS: dict[str, tuple[tuple[str, str], ...]] = {
    "intra": (
        ("intra", "intra term (raw)"),
        ("intra_rel", "intra term / energy"),
        ("energy", "activation energy mean(F²)"),
    ),
    "inter": (("inter", "inter term (raw)"), ("inter_rel", "inter term / energy of the deep side")),
}
"""Family -> panels (heldout key, title) of :func:`heldout_terms_figure`."""


def heldout_terms_figure(
    heldouts: Mapping[str, Mapping[str, Any]], family: str = "intra", title: str | None = None
) -> go.Figure:
    """Held-out Tf-FD terms of several models, mean ± batch-to-batch std, raw next to scale-free.

    Parameters
    ----------
    heldouts : dict label -> heldout_terms entry
        :func:`tffd_viz.heldout.heldout_terms` results (or a card's ``heldout_terms``), e.g.
        ``{"A": ..., "B": ...}``.
    family : {"intra", "inter"}
        ``intra``: panels raw term, term / energy and the energy per stage; ``inter``: raw and term / energy.
    title : str, optional

    Returns
    -------
    go.Figure
        One panel per key of :data:`_PANELS`; one bar trace per model and panel (``y`` the means, ``error_y``
        the std over batches).
    """
    if family not in _PANELS:
        raise TffdVizError(f"heldout_terms_figure: family must be one of {sorted(_PANELS)}, got {family!r}")
    if not heldouts:
        raise TffdVizError("heldout_terms_figure: heldouts is empty; give e.g. {'A': entry_a, 'B': entry_b}")
    panels = _PANELS[family]
    fig = make_subplots(
        rows=1, cols=len(panels), subplot_titles=[t for _, t in panels], horizontal_spacing=0.07
    )
    for pos, (label, entry) in enumerate(heldouts.items()):
        for col, (key, _) in enumerate(panels, start=1):
            values = entry.get(key) or {}
            std = entry.get(f"{key}_std") or {}
            items = list(values)
            fig.add_bar(
                x=items,
                y=[_float(values[k]) for k in items],
                name=str(label),
                legendgroup=str(label),
                showlegend=col == 1,
                marker_color=model_color(str(label), pos),
                error_y={"type": "data", "array": [_float(std.get(k)) for k in items], "visible": True},
                hovertemplate=f"{label}<br>%{{x}}: %{{y:.4g}} ± %{{error_y.array:.2g}}<extra></extra>",
                row=1,
                col=col,
            )
    n = next(iter(heldouts.values())).get("n")
    batches = next(iter(heldouts.values())).get("batches")
    title = title or (f"Held-out {family} terms, mean ± std over {batches} batches ({n} images, eval mode)")
    return _grouped_layout(fig, title, 380)


def cosine_reference_figure(stats: Mapping[str, Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Salient/redundant paired cosine per stage next to the random-pair cosine of the same layer.

    Parameters
    ----------
    stats : dict label -> dict
        Per model ``{"paired": {stage: v}, "random": {stage: v}}`` and optionally ``paired_std`` /
        ``random_std`` (:func:`tffd_viz.verdicts.channel_cosine_stats`).

    Returns
    -------
    go.Figure
        Per model two bar traces, ``"<label>: salient/redundant pairs"`` (solid) and
        ``"<label>: random pairs"`` (hatched); a paired bar above its random bar means partners more alike
        than any two channels.
    """
    if not stats:
        raise TffdVizError("cosine_reference_figure: stats is empty; give e.g. {'A': stats_a, 'B': stats_b}")
    fig = go.Figure()
    for pos, (label, s) in enumerate(stats.items()):
        color = model_color(str(label), pos)
        for key, name, pattern in (
            ("paired", "salient/redundant pairs", ""),
            ("random", "random pairs", "/"),
        ):
            values = s.get(key) or {}
            std = s.get(f"{key}_std") or {}
            items = list(values)
            err = [_float(std.get(k)) for k in items]
            fig.add_bar(
                x=items,
                y=[_float(values[k]) for k in items],
                name=f"{label}: {name}",
                marker={
                    "color": color,
                    "pattern": {"shape": pattern},
                    "opacity": 1.0 if not pattern else 0.55,
                },
                error_y={"type": "data", "array": err, "visible": any(math.isfinite(e) for e in err)},
                hovertemplate=f"{label}, {name}<br>%{{x}}: %{{y:.3f}}<extra></extra>",
            )
    fig.update_yaxes(title_text="mean cosine")
    return _grouped_layout(
        fig, title or "Paired cosine vs the cosine of random channel pairs of the same layer", 380
    )


def cka_reference_figure(
    cka_ab: Mapping[str, float],
    seed_values: Mapping[str, Sequence[float]],
    label: str = "A vs B",
    title: str | None = None,
) -> go.Figure:
    """A-vs-B CKA of each layer against the seed-to-seed CKA (two seeds of one configuration).

    Parameters
    ----------
    cka_ab : dict layer -> CKA of A's layer with B's
    seed_values : dict layer -> seed-to-seed CKAs
    label : str

    Returns
    -------
    go.Figure
        Trace ``"seed to seed"`` (grey dots, one per seed pair), trace ``"lowest seed-to-seed"`` (the
        reference line a change of method must fall below) and trace ``label`` (the A-vs-B values).
    """
    layers = list(cka_ab)
    fig = go.Figure()
    xs = [layer for layer in layers for _ in seed_values.get(layer, ())]
    ys = [float(v) for layer in layers for v in seed_values.get(layer, ())]
    if ys:
        fig.add_scatter(
            x=xs,
            y=ys,
            mode="markers",
            name="seed to seed",
            marker={"color": "#9a9a9a", "size": 8},
            hovertemplate="%{x}: seed-to-seed CKA %{y:.3f}<extra></extra>",
        )
        ref = [min(seed_values[layer]) if seed_values.get(layer) else None for layer in layers]
        fig.add_scatter(
            x=layers,
            y=ref,
            mode="lines+markers",
            name="lowest seed-to-seed",
            line={"color": "#555", "dash": "dash"},
            marker={"symbol": "line-ew-open", "size": 14},
            hovertemplate="%{x}: lowest seed-to-seed CKA %{y:.3f}<extra></extra>",
        )
    fig.add_scatter(
        x=layers,
        y=[float(cka_ab[k]) for k in layers],
        mode="markers+lines",
        name=label,
        marker={"color": model_color("B"), "size": 11, "symbol": "diamond"},
        hovertemplate=f"%{{x}}: {label} CKA %{{y:.3f}}<extra></extra>",
    )
    fig.update_yaxes(title_text="linear CKA, same layer")
    note = "" if ys else " (no second seed shipped: no reference)"
    return _grouped_layout(fig, title or f"CKA of the same layer: {label} against seed to seed{note}", 360)


def noise_ratio_figure(rows: Sequence[Mapping[str, Any]], title: str | None = None) -> go.Figure:
    """Every what-changed row as ``(B − A) / noise``: bars beyond ±1 are the differences written up.

    Parameters
    ----------
    rows : list of dict
        :func:`tffd_viz.verdicts.what_changed` rows; rows without a noise reference or a difference are left
        out.

    Returns
    -------
    go.Figure
        One horizontal bar trace (``x`` the ratio, ``y`` "quantity · item"), beyond-noise bars in B's colour,
        dotted lines at ±1.
    """
    kept = [r for r in rows if r.get("noise ±") and r.get("B − A") is not None and math.isfinite(r["B − A"])]
    labels = [f"{r['quantity']} · {r['item']}" if r["item"] else r["quantity"] for r in kept]
    ratio = [float(r["B − A"]) / float(r["noise ±"]) for r in kept]
    colors = [model_color("B") if abs(v) > 1 else "#b0b0b0" for v in ratio]
    fig = go.Figure(
        go.Bar(
            x=ratio,
            y=labels,
            orientation="h",
            marker_color=colors,
            customdata=[[r["verdict"], r["noise source"]] for r in kept],
            hovertemplate="%{y}<br>(B − A) / noise = %{x:.2f} (%{customdata[1]})<br>"
            "%{customdata[0]}<extra></extra>",
        )
    )
    for x in (-1, 1):
        fig.add_vline(x=x, line={"dash": "dot", "color": "#555"})
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="(B − A) / noise reference (beyond ±1: written up)")
    return _grouped_layout(
        fig, title or "A vs B: each difference over its noise", max(300, 80 + 18 * len(kept))
    )


def saliency_gap_figure(
    scores_by_model: Mapping[str, ArrayLike], tap: str = "", overlay: bool = False
) -> go.Figure:
    """:func:`tffd_viz.plots.saliency_bars_figure` on a y axis that spans the scores (not from 0).

    Saliencies of one layer often differ by a few percent; from 0 the salient/redundant gap is invisible.
    The axis spans ``[min - 10 % of the range, max + 10 %]`` and each panel's title gives the mean of the
    salient half over the mean of the redundant half.

    Parameters
    ----------
    scores_by_model : dict label -> array (C,)
        Per-channel saliency of one layer per model.
    tap : str
        Layer name, shown in the title.
    overlay : bool
        One axes with grouped bars instead of one panel per model (as
        :func:`tffd_viz.plots.saliency_bars_figure`).

    Returns
    -------
    go.Figure
        As :func:`tffd_viz.plots.saliency_bars_figure`, with a ``"zero"`` annotation saying where the axis
        starts.
    """
    fig = saliency_bars_figure(scores_by_model, tap=tap, overlay=overlay)
    values = [np.asarray(_np(v), dtype=float).ravel() for v in scores_by_model.values()]
    finite = np.concatenate([v[np.isfinite(v)] for v in values]) if values else np.array([])
    if finite.size == 0:
        return fig
    lo, hi = float(finite.min()), float(finite.max())
    pad = 0.1 * (hi - lo) if hi > lo else 0.05 * abs(hi) or 1.0
    fig.update_yaxes(range=[lo - pad, hi + pad])
    gaps = []
    for label, v in zip(scores_by_model, values):
        s = np.sort(v[np.isfinite(v)])[::-1]
        k = s.size // 2
        if k and s[s.size - k :].mean() > 0:
            gaps.append(f"{label}: salient/redundant mean {s[:k].mean() / s[s.size - k :].mean():.3f}×")
    text = f"y axis from {lo - pad:.3g}, not 0 · " + " · ".join(gaps)
    _paper_note(fig, "zero", text, x=0, y=1.06, font={"size": 11}, xanchor="left")
    fig.update_layout(margin=_TALL_MARGIN)
    return fig
