"""Figures of the Tf-FD what-if (:mod:`tffd_viz.whatif`).

* :func:`whatif_curves_figure`: the per-step training curves, one panel per quantity (CE, every intra and
  inter term in the loss, the lambda-weighted Tf-FD total), the arms as lines;
* :func:`whatif_heldout_figure`: the held-out terms (raw and relative to the maps' energy) and accuracy at the
  start and at the end of every arm, with the batch-to-batch spread as error bars.

The non-finite policy of :mod:`tffd_viz.plots` holds: NaN or infinite values are not drawn and an annotation
counts them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import _MARGIN, COLOR_A, COLOR_B, _empty_figure, _layout, _nonfinite_note
from tffd_viz.plots._inputs import _drawn, _series
from tffd_viz.whatif import ARM_LABELS, ARMS

__all__ = ["ARM_COLORS", "curve_quantities", "whatif_curves_figure", "whatif_heldout_figure"]

ARM_COLORS: dict[str, str] = {"start": "#7F7F7F", "control": COLOR_A, "tffd": COLOR_B, "control2": "#00CC96"}
"""Colour of each arm (and of the starting model's held-out figures)."""

_COLS = 3
"""Panels per row of :func:`whatif_curves_figure`."""


def curve_quantities(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-step quantities of what-if rows, in panel order: ``ce``, ``intra_*``, ``inter_*``,
    ``tffd_total``."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k.startswith(("intra_", "inter_")) and k not in keys]
    return [
        "ce",
        *[k for k in keys if k.startswith("intra_")],
        *[k for k in keys if k.startswith("inter_")],
        "tffd_total",
    ]


def _title(key: str) -> str:
    """Panel title of a per-step quantity: ``"cross-entropy"``, ``"intra <tap>"``,
    ``"λ-weighted Tf-FD total"``."""
    if key == "ce":
        return "cross-entropy"
    if key == "tffd_total":
        return "λ-weighted Tf-FD total"
    family, _, term = key.partition("_")
    return f"{family} {term}"


def whatif_curves_figure(
    rows: Sequence[Mapping[str, Any]], title: str = "What-if: training curves", total_steps: int | None = None
) -> go.Figure:
    """Training curves of a what-if: one panel per quantity, one line per arm.

    Parameters
    ----------
    rows : list of dict
        :meth:`tffd_viz.whatif.WhatIf.run` rows (``arm``, ``step``, ``ce``, ``intra_<tap>``,
        ``inter_<a>-><b>``, ``tffd_total``); rows of another ``phase`` than ``"train"`` are ignored.
    title : str
    total_steps : int, optional
        Fixes the step axis to ``[1, total_steps]`` (live drawing: the axis does not move as steps come in).

    Returns
    -------
    go.Figure
        ``len(curve_quantities(rows))`` panels in rows of three (subplot titles ``"cross-entropy"``,
        ``"intra <tap>"``, ``"inter <a>-><b>"``, ``"λ-weighted Tf-FD total"``); traces named by
        :data:`tffd_viz.whatif.ARM_LABELS`, one legend entry per arm. A figure with a message when there are
        no rows.
    """
    if not isinstance(rows, Sequence) or not all(isinstance(r, Mapping) for r in rows):
        raise TffdVizError(f"whatif_curves_figure: rows must be a list of dicts, got {type(rows).__name__}")
    train = [r for r in rows if r.get("phase", "train") == "train"]
    if not train:
        return _empty_figure(title, "no steps yet")
    quantities = curve_quantities(train)
    n_rows = math.ceil(len(quantities) / _COLS)
    fig = make_subplots(
        rows=n_rows,
        cols=_COLS,
        subplot_titles=[_title(q) for q in quantities],
        vertical_spacing=min(0.12, 0.5 / n_rows),
        horizontal_spacing=0.07,
    )
    counts: dict[str, int] = {}
    for arm in ARMS:
        arm_rows = [r for r in train if r.get("arm") == arm]
        if not arm_rows:
            continue
        steps = [r.get("step") for r in arm_rows]
        for i, q in enumerate(quantities):
            ys, counts[f"{arm} {q}"] = _series(arm_rows, q)
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=ys,
                    mode="lines",
                    name=ARM_LABELS[arm],
                    legendgroup=arm,
                    showlegend=i == 0,
                    line={
                        "color": ARM_COLORS[arm],
                        "width": 2 if arm == "tffd" else 1.5,
                        "dash": "dot" if arm == "control2" else "solid",
                    },
                    hovertemplate=(
                        f"<b>{ARM_LABELS[arm]}</b><br>step %{{x}}<br>{_title(q)} %{{y:.4g}}<extra></extra>"
                    ),
                ),
                row=i // _COLS + 1,
                col=i % _COLS + 1,
            )
    if total_steps:
        fig.update_xaxes(range=[0.5, total_steps + 0.5])
    fig.update_xaxes(title_text="step", row=n_rows)
    height = 260 * n_rows + 80
    _layout(fig, title, height=height)
    # the legend 60 px below the last row's axis, clear of its "step" title whatever the number of rows
    fig.update_layout(
        legend={
            "orientation": "h",
            "x": 0,
            "y": -60 / (height - _MARGIN["t"] - _MARGIN["b"]),
            "xanchor": "left",
            "yanchor": "top",
        }
    )
    return _nonfinite_note(fig, counts)


def whatif_heldout_figure(
    result: Mapping[str, Any], title: str = "What-if: held-out terms and accuracy"
) -> go.Figure:
    """Held-out figures of a what-if: the starting model and every arm after its fine-tune.

    Parameters
    ----------
    result : dict
        :meth:`tffd_viz.whatif.WhatIf.result` (``start``, ``end``, ``step``).
    title : str

    Returns
    -------
    go.Figure
        Three panels: the raw terms (``intra <tap>``, ``inter <a>-><b>``), the terms over the maps' mean
        square, and the accuracy (%); one bar group per term with a bar for ``start`` and each arm (traces
        named ``"start"`` and :data:`tffd_viz.whatif.ARM_LABELS`), error bars = batch-to-batch standard
        deviation.
    """
    for key in ("start", "end", "step"):
        if key not in result:
            raise TffdVizError(f"whatif_heldout_figure: result has no {key!r}; pass WhatIf.result()")
    sources = {"start": result["start"], **{a: result["end"][a] for a in ARMS}}
    names = {"start": "start", **{a: f"{ARM_LABELS[a]}, step {result['step']}" for a in ARMS}}
    fig = make_subplots(
        rows=1,
        cols=3,
        column_widths=[0.42, 0.42, 0.16],
        horizontal_spacing=0.06,
        subplot_titles=["terms (raw MSE)", "terms / mean square of the maps", "accuracy (%)"],
    )
    counts: dict[str, int] = {}
    for who, h in sources.items():
        for col, (fam_intra, fam_inter) in ((1, ("intra", "inter")), (2, ("intra_rel", "inter_rel"))):
            x = [f"intra {t}" for t in h[fam_intra]] + [f"inter {t}" for t in h[fam_inter]]
            raw = [*h[fam_intra].values(), *h[fam_inter].values()]
            std = [*h[f"{fam_intra}_std"].values(), *h[f"{fam_inter}_std"].values()]
            y, counts[f"{who} {fam_intra}/{fam_inter}"] = _series(raw)
            fig.add_trace(
                go.Bar(
                    x=x,
                    y=y,
                    name=names[who],
                    legendgroup=who,
                    showlegend=col == 1,
                    marker_color=ARM_COLORS[who],
                    error_y={"type": "data", "array": [_drawn(s) or 0 for s in std]},
                    hovertemplate=(
                        f"<b>{names[who]}</b><br>%{{x}}<br>%{{y:.4g}} ± %{{error_y.array:.2g}}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
        fig.add_trace(
            go.Bar(
                x=["accuracy"],
                y=[_drawn(h["accuracy"])],
                name=names[who],
                legendgroup=who,
                showlegend=False,
                marker_color=ARM_COLORS[who],
                hovertemplate=f"<b>{names[who]}</b><br>%{{y:.4g}} %<extra></extra>",
            ),
            row=1,
            col=3,
        )
    accs = [v for v in (_drawn(h["accuracy"]) for h in sources.values()) if v is not None]
    if accs:
        fig.update_yaxes(range=[max(0.0, min(accs) - 5.0), min(100.0, max(accs) + 1.0)], row=1, col=3)
    fig.update_layout(barmode="group")
    _layout(fig, title, height=440)
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": -0.25, "xanchor": "left", "yanchor": "top"})
    return _nonfinite_note(fig, counts)
