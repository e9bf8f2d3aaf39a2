"""Every figure of the app, the notebooks and the HTML report, as plotly figures.

Each ``*_figure`` function takes plain data (numpy arrays, torch tensors, lists, dicts of them) and
RETURNS a :class:`plotly.graph_objects.Figure`; nothing is shown, written or cached here, and no
streamlit is imported. All figures share one look: ``template="plotly_white"``, a title, axis titles
(with units where there are any) and a compact margin (:func:`_layout`); model A is drawn in
:data:`COLOR_A`, model B in :data:`COLOR_B` (:func:`model_color`), the salient half of a layer's
channels in :data:`SALIENT_COLOR`, the redundant half in :data:`REDUNDANT_COLOR` and the middle
channel of an odd channel count (which intra-Tf-FD leaves out) in :data:`LEFT_OUT_COLOR`.

Conventions
-----------
* "Model" dictionaries map a legend label to the model's data, e.g. ``{"A": ..., "B": ...}`` or
  ``{"A · baseline": ..., "B · Tf-FD": ...}``; the dict order is the drawing order. A label that
  starts with the word ``A`` or ``B`` gets that model's colour, any other label a colour by position.
* Ranks are 0-based as in :mod:`tffd_viz.importance` and :mod:`tffd_viz.dynamics`: rank 0 is the
  most salient channel and, with ``k = C // 2``, ranks ``0..k-1`` are the salient half, ranks
  ``C-k..C-1`` the redundant half (odd ``C``: rank ``k`` is the middle channel intra-Tf-FD leaves
  out). Ranks passed in as data are drawn as given.
* Figures stay light: image grids are limited to a number of tiles and larger maps are block-averaged
  down to at most ``max_side`` pixels a side.

Non-finite values (policy)
--------------------------
A NaN or infinity in an input never gives a silently broken plot and never raises: every figure
counts the non-finite values of its numeric inputs, leaves them out of the drawing (a gap in a
heatmap or line, no bar, a black pixel in an image, left out of a mean) and adds an annotation
(``name="nonfinite"``) reading ``"<N> values are not finite (<input>: <count>, ...); they are not
drawn"``. Missing values (``None`` or an absent key in a history or table) are not numerical faults:
they are simply not drawn, without that annotation. Inputs of the wrong shape or type raise
:class:`~tffd_viz.errors.TffdVizError` naming the figure, the input and the shapes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError

__all__ = [
    "CLASS_COLORS",
    "COLOR_A",
    "COLOR_B",
    "COLOR_RANGES",
    "FIGURE_FUNCTIONS",
    "LEFT_OUT_COLOR",
    "MODEL_COLORS",
    "REDUNDANT_COLOR",
    "SALIENT_COLOR",
    "TEMPLATE",
    "accuracy_seeds_figure",
    "alignment_figure",
    "attribution_figure",
    "cka_grid_figure",
    "cka_heatmap_figure",
    "confusion_figure",
    "cosine_matrix_figure",
    "crossings_figure",
    "disagreement_gallery_figure",
    "embedding_figure",
    "feature_maps_figure",
    "format_lambda",
    "grad_share_figure",
    "model_color",
    "model_key",
    "paired_maps_figure",
    "paired_similarity_figure",
    "probe_accuracy_figure",
    "rank_agreement_figure",
    "rank_band_figure",
    "rank_evolution_figure",
    "saliency_bars_figure",
    "split_stability_figure",
    "sweep_heatmap_figure",
    "terms_bar_figure",
    "training_curves_figure",
    "weighted_contributions_figure",
]

ArrayLike = Any
"""A numpy array, a torch tensor or a (nested) list of numbers."""

COLOR_A: str = "#636EFA"
"""Colour of model A (the baseline)."""

COLOR_B: str = "#EF553B"
"""Colour of model B (the Tf-FD-trained model)."""

MODEL_COLORS: tuple[str, ...] = (COLOR_A, COLOR_B, "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692")
"""Colours of models by position (A, B, then others)."""

SALIENT_COLOR: str = "#2CA02C"
"""Colour of the salient (top) half of a layer's channels."""

REDUNDANT_COLOR: str = "#7F7F7F"
"""Colour of the redundant (bottom) half of a layer's channels."""

LEFT_OUT_COLOR: str = "#FFA15A"
"""Colour of the middle channel of an odd channel count, which intra-Tf-FD leaves out."""

TEMPLATE: str = "plotly_white"
"""Plotly template of every figure."""

CLASS_COLORS: tuple[str, ...] = (
    "#636EFA",
    "#EF553B",
    "#00CC96",
    "#AB63FA",
    "#FFA15A",
    "#19D3F3",
    "#FF6692",
    "#B6E880",
    "#FF97FF",
    "#FECB52",
    "#1F77B4",
    "#8C564B",
    "#E377C2",
    "#7F7F7F",
    "#BCBD22",
    "#17BECF",
    "#393B79",
    "#637939",
    "#8C6D31",
    "#843C39",
)
"""Discrete class colours (cycled beyond 20 classes)."""

_MARGIN = {"l": 60, "r": 20, "t": 60, "b": 50}
_TERM_DASHES = ("solid", "dash", "dot", "dashdot", "longdash", "longdashdot")
_NICE_NAMES = {
    "lambda_intra": "λ_intra",
    "lambda_inter": "λ_inter",
    "final_acc": "final top-1 accuracy (%)",
    "best_acc": "best top-1 accuracy (%)",
    "acc": "top-1 accuracy (%)",
    "ce": "CE",
    "intra": "λ_intra · intra",
    "inter": "λ_inter · inter",
    "weighted_intra": "λ_intra · intra",
    "weighted_inter": "λ_inter · inter",
    "total": "total",
    "tffd": "λ-weighted Tf-FD",
    "ce+tffd": "CE + Tf-FD",
}


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def _np(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array (torch tensors are detached and moved to the CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _array(x: ArrayLike, figure: str, name: str, ndim: int | tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as a float64 array with infinities turned into NaN; checks the number of dimensions."""
    try:
        a = np.asarray(_np(x), dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TffdVizError(f"{figure}: {name} must be numeric, got {type(x).__name__} ({exc})") from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if a.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise TffdVizError(f"{figure}: {name} must be {want}, got shape {a.shape}")
    a = a.copy()
    a[np.isinf(a)] = np.nan
    return a


def _bad(a: np.ndarray) -> int:
    """Number of non-finite entries of a float array."""
    return int(np.count_nonzero(~np.isfinite(a)))


def _paper_note(
    fig: go.Figure, name: str, text: str, x: float, y: float, font: Mapping[str, Any], **place: Any
) -> None:
    """Add a text annotation (no arrow) named ``name`` at ``(x, y)`` in paper coordinates.

    ``place`` holds further annotation properties (``xanchor``, ``yanchor``, ``yshift``, ``bgcolor``, ...).
    """
    fig.add_annotation(
        name=name, text=text, xref="paper", yref="paper", x=x, y=y, showarrow=False, font=dict(font), **place
    )


def _nonfinite_note(fig: go.Figure, counts: Mapping[str, int]) -> go.Figure:
    """Add the annotation of the non-finite policy (see the module docstring) when a count is positive."""
    bad = {k: int(v) for k, v in counts.items() if v}
    if not bad:
        return fig
    n = sum(bad.values())
    where = ", ".join(f"{k}: {v}" for k, v in bad.items())
    verb = "value is" if n == 1 else "values are"
    _paper_note(
        fig,
        "nonfinite",
        f"⚠ {n} {verb} not finite ({where}); they are not drawn",
        x=1.0,
        y=1.0,
        font={"color": "#B22222", "size": 12},
        xanchor="right",
        yanchor="bottom",
        yshift=26,
        bgcolor="#FFF5E5",
        bordercolor="#B22222",
    )
    fig.update_layout(margin={"t": max(int(fig.layout.margin.t or 0), 95)})
    return fig


def _layout(
    fig: go.Figure,
    title: str,
    x_title: str | None = None,
    y_title: str | None = None,
    height: int | None = None,
    width: int | None = None,
    showlegend: bool | None = None,
    legend_title: str | None = None,
) -> go.Figure:
    """Apply the common look: template, title, axis titles and a compact margin.

    ``x_title``/``y_title`` go on the first axes; figures with subplots title their other axes
    themselves.
    """
    fig.update_layout(
        template=TEMPLATE,
        title={"text": title, "x": 0.01, "xanchor": "left"},
        margin=_MARGIN,
        hoverlabel={"namelength": -1},
    )
    given = {
        "xaxis_title": x_title,
        "yaxis_title": y_title,
        "height": height,
        "width": width,
        "showlegend": showlegend,
        "legend_title_text": legend_title,
    }
    for key, value in given.items():
        if value is not None:
            fig.update_layout(**{key: value})
    return fig


_AB = re.compile(r"^\s*([AB])\b")


def model_color(label: str, position: int = 0) -> str:
    """Colour of a model: :data:`COLOR_A`/:data:`COLOR_B` for labels starting with the word A/B.

    Parameters
    ----------
    label : str
        Legend label, e.g. ``"A"``, ``"B · Tf-FD"``.
    position : int
        Position of the model among those drawn; picks the colour of any other label.
    """
    m = _AB.match(str(label))
    if m:
        return COLOR_A if m.group(1) == "A" else COLOR_B
    return MODEL_COLORS[position % len(MODEL_COLORS)]


def _models(by_model: Mapping[str, Any], figure: str, name: str) -> list[tuple[str, Any, str]]:
    """``(label, data, colour)`` per model; raises on an empty or non-dict input."""
    if not isinstance(by_model, Mapping):
        raise TffdVizError(
            f"{figure}: {name} must be a dict label -> data (e.g. {{'A': ..., 'B': ...}}), got "
            f"{type(by_model).__name__}"
        )
    if not by_model:
        raise TffdVizError(f"{figure}: {name} is empty; give at least one model, e.g. {{'A': ...}}")
    return [(str(k), v, model_color(str(k), i)) for i, (k, v) in enumerate(by_model.items())]


def _union_keys(dicts: Sequence[Mapping[str, Any]]) -> list[str]:
    """Keys of several dicts in order of first appearance."""
    keys: list[str] = []
    for d in dicts:
        for k in d:
            if str(k) not in keys:
                keys.append(str(k))
    return keys


def _number(v: Any) -> tuple[float, bool]:
    """A scalar as float: ``(value, is_fault)``; ``None`` is missing (NaN, not a fault)."""
    if v is None:
        return math.nan, False
    try:
        f = float(_np(v)) if isinstance(v, torch.Tensor | np.ndarray) else float(v)
    except (TypeError, ValueError):
        return math.nan, False
    return (f, False) if math.isfinite(f) else (math.nan, True)


def _fmt(v: float, digits: int = 3) -> str:
    """Cell text of a heatmap: empty for NaN."""
    return "" if not math.isfinite(v) else f"{v:.{digits}g}"


def _cell_text(z: np.ndarray, fmt: str = ".2f") -> list[list[str]]:
    return [["" if not math.isfinite(v) else format(v, fmt) for v in row] for row in z]


def format_lambda(v: Any) -> str:
    """Category label of a lambda value: ``0 -> "0"``, ``8e-4 -> "8e-4"``, ``0.5 -> "0.5"``.

    Numeric strings (as read from a CSV) are formatted like numbers; other strings are returned
    unchanged.
    """
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if f == 0:
        return "0"
    if not math.isfinite(f):
        return str(f)
    if 1e-2 <= abs(f) < 1e4:
        return f"{f:g}"
    mant, exp = f"{f:.3e}".split("e")
    mant = mant.rstrip("0").rstrip(".")
    return f"{mant}e{int(exp)}"


def _category_sort_key(v: Any) -> tuple[int, float, str]:
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def _downsample(maps: np.ndarray, max_side: int) -> np.ndarray:
    """Block-average the last two axes so that neither exceeds ``max_side`` (NaN-aware)."""
    h, w = maps.shape[-2:]
    s = max(1, math.ceil(max(h, w) / max(1, max_side)))
    if s == 1:
        return maps
    hh, ww = (h // s) * s, (w // s) * s
    blocks = maps[..., :hh, :ww].reshape(*maps.shape[:-2], hh // s, s, ww // s, s)
    with np.errstate(invalid="ignore"):
        count = np.isfinite(blocks).sum(axis=(-3, -1))
        total = np.where(np.isfinite(blocks), blocks, 0.0).sum(axis=(-3, -1))
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _axis_ref(name: str, kind: str) -> str:
    """``"x2"`` -> layout key ``"xaxis2"``."""
    return f"{kind}axis{name[1:]}"


def _image_tiles(fig: go.Figure) -> None:
    """Square, tick-less, top-down axes for every subplot holding an image-like trace."""
    for tr in fig.data:
        xa, ya = tr.xaxis or "x", tr.yaxis or "y"
        fig.layout[_axis_ref(xa, "x")].update(
            showticklabels=False, showgrid=False, zeroline=False, constrain="domain"
        )
        fig.layout[_axis_ref(ya, "y")].update(
            showticklabels=False,
            showgrid=False,
            zeroline=False,
            scaleanchor=xa,
            constrain="domain",
            autorange="reversed",
        )


def _empty_figure(title: str, message: str, height: int = 300) -> go.Figure:
    """A figure holding only a centred message (e.g. no data)."""
    fig = go.Figure()
    _paper_note(fig, "empty", message, x=0.5, y=0.5, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=height)


def _names(names: Sequence[Any] | None, n: int, figure: str, what: str, prefix: str = "") -> list[str]:
    if names is None:
        return [f"{prefix}{i}" for i in range(n)]
    out = [str(v) for v in names]
    if len(out) != n:
        raise TffdVizError(f"{figure}: {what} has {len(out)} names but the matrix has {n} along that axis")
    return out


def _tap_suffix(tap: str) -> str:
    return f" — {tap}" if tap else ""


def model_key(label: str) -> str:
    """Short key of a model label: ``"A"``/``"B"`` for labels starting with the word A/B, else the label.

    ``"A · digits_resnet8_baseline_s0"`` -> ``"A"``; ``"resnet18 · Tf-FD"`` -> ``"resnet18 · Tf-FD"``.
    """
    m = _AB.match(str(label))
    return m.group(1) if m else str(label)


def _models_caption(labels: Sequence[str]) -> str:
    """``"A: digits_resnet8_baseline_s0 · B: ..."`` for the labels longer than their key ("" if none)."""
    parts = []
    for label in labels:
        key = model_key(label)
        if key != label:
            rest = str(label)[len(key) :].lstrip(" ·:-—")
            parts.append(f"{key}: {rest}" if rest else key)
    return " · ".join(parts)


def _caption(fig: go.Figure, text: str, name: str = "caption", yshift: int = -8) -> None:
    """A one-line caption under the plot area (left-aligned; ``yshift`` px below its bottom edge)."""
    if not text:
        return
    _paper_note(
        fig, name, text, x=0, y=0, font={"size": 12, "color": "#444444"},
        xanchor="left", yanchor="top", yshift=yshift,
    )


_LEGEND_CHAR_PX = 6.6
"""Approximate width of one legend character at plotly's default 12 px font."""
_LEGEND_WIDTH_PX = 430
"""Width a legend below the plot is assumed to have (a half-width app column) when it is laid out."""


def _legend_below(
    fig: go.Figure, names: Sequence[str], title: str | None = None, width: int = _LEGEND_WIDTH_PX
) -> go.Figure:
    """Move the legend into a horizontal band at the bottom of the figure and grow the figure to fit it.

    The band holds ``title`` (if any) on its own line, then the entries, wrapped as plotly wraps them
    in a figure ``width`` px wide (default: a half-width app column); the bottom margin and the height
    grow by the band's height, so neither the x axis title nor the plot area shrinks.
    """
    widths = [40 + _LEGEND_CHAR_PX * len(str(n)) for n in names]
    lines, used = (1, 0.0) if widths else (0, 0.0)
    for w in widths:
        if used and used + w > width:
            lines, used = lines + 1, 0.0
        used += w
    lines += 1 if title else 0
    band = 12 + 21 * lines
    legend: dict[str, Any] = {
        "orientation": "h",
        "xref": "container",
        "x": 0.01,
        "xanchor": "left",
        "yref": "container",
        "y": 0.005,
        "yanchor": "bottom",
        "title": {"text": title or "", "side": "top"},
    }
    fig.update_layout(
        legend=legend,
        margin={"b": int(fig.layout.margin.b or _MARGIN["b"]) + band},
        height=int(fig.layout.height or 450) + band,
    )
    return fig


def _log_tick_values(values: Sequence[Any]) -> list[float]:
    """Tick positions for a log axis over ``values``: the decades when they span one or more, else 1-2-5.

    Non-positive, non-finite and ``None`` values are ignored; ``[]`` when nothing is left. The ticks
    run from the decade at or below the smallest value to the one at or above the largest, so that
    a padded axis range still has its ends labelled.
    """
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size == 0:
        return []
    lo, hi = math.floor(math.log10(float(v.min()))), math.ceil(math.log10(float(v.max())))
    hi = max(hi, lo + 1)
    span = math.log10(float(v.max()) / float(v.min()))
    steps = (1.0,) if span >= 1.0 else (1.0, 2.0, 5.0)
    return [float(f"{m * 10.0**e:.12g}") for e in range(lo, hi + 1) for m in steps if m == 1.0 or e < hi]


def _log_ticks(fig: go.Figure, values: Sequence[Any], **where: Any) -> None:
    """Label a log y axis only at :func:`_log_tick_values` (never every digit of every decade).

    ``values`` are the numbers drawn on that axis; ``where`` selects the axis (``row=``/``col=`` of a
    subplot figure). Labels read like lambdas (:func:`format_lambda`: ``0.02``, ``1e-3``).
    """
    ticks = _log_tick_values(values)
    if ticks:
        fig.update_yaxes(tickmode="array", tickvals=ticks, ticktext=[format_lambda(t) for t in ticks], **where)


def _log_bars_axis(fig: go.Figure, title_text: str) -> None:
    """Make the y axis of a bar figure logarithmic, titled ``title_text``, ticks from every trace's y values."""
    fig.update_yaxes(type="log", title_text=title_text)
    _log_ticks(fig, [v for tr in fig.data for v in tr.y])


# ----------------------------------------------------------------------------------------------------------
# 1-3: channel ranking
# ----------------------------------------------------------------------------------------------------------


def _descending(scores: np.ndarray) -> np.ndarray:
    """Stable descending order with NaN last (ties: lower channel index first)."""
    key = np.where(np.isfinite(scores), -scores, np.inf)
    return np.argsort(key, kind="stable")


def saliency_bars_figure(
    scores_by_model: Mapping[str, ArrayLike],
    tap: str = "",
    split_marked: bool = True,
    overlay: bool = False,
    title: str | None = None,
) -> go.Figure:
    """Tf-FD saliency per channel, sorted descending, one panel (or bar group) per model.

    Bar ``r`` (x = rank ``r``, 0-based) is the channel of rank ``r`` (0 = most salient); hover shows
    its channel index. With ``k = C // 2`` the salient half (ranks ``0..k-1``) and the redundant half
    (ranks ``C-k..C-1``) are shaded and a dashed line (shape ``name="boundary"``) is drawn at
    ``x = k - 0.5``, just before rank ``floor(C / 2)``; for odd ``C`` the middle channel (rank ``k``),
    which intra-Tf-FD leaves out, is drawn in :data:`LEFT_OUT_COLOR` and named in an annotation.

    Parameters
    ----------
    scores_by_model : dict[str, array (C,)]
        Label -> per-channel saliency (e.g. :func:`tffd_viz.losses.channel_saliency`).
    tap : str
        Layer name, shown in the title.
    split_marked : bool
        Draw the salient/redundant boundary and shading.
    overlay : bool
        One axes with grouped bars instead of one panel per model.
    title : str, optional
        Figure title (default ``"Channel saliency, sorted — <tap>"``).

    Returns
    -------
    go.Figure
        One bar trace per model: ``x`` ranks, ``y`` sorted saliency, ``customdata`` channel indices.
    """
    figure = "saliency_bars_figure"
    models = _models(scores_by_model, figure, "scores_by_model")
    arrays = [(label, _array(s, figure, f"scores {label!r}", ndim=1), color) for label, s, color in models]
    n = len(arrays)
    subplots = n > 1 and not overlay
    if not subplots:
        fig = go.Figure()
        cells = [(1, 1)] * n
    else:
        fig = make_subplots(
            rows=1,
            cols=n,
            shared_yaxes=True,
            horizontal_spacing=0.04,
            subplot_titles=[label for label, _, _ in arrays],
        )
        cells = [(1, i + 1) for i in range(n)]
    marked: set[tuple[int, int, int]] = set()
    counts: dict[str, int] = {}
    for (label, s, color), (row, col) in zip(arrays, cells):
        c = s.shape[0]
        counts[f"scores {label}"] = _bad(s)
        order = _descending(s)
        k = c // 2
        ranks = np.arange(c)
        colors = [color] * c
        group = ["salient"] * k + (["left out (odd C)"] if c % 2 else []) + ["redundant"] * k
        if c % 2:
            colors[k] = LEFT_OUT_COLOR
        trace = go.Bar(
            x=ranks,
            y=s[order],
            customdata=np.stack([order, np.array(group, dtype=object)], axis=1),
            name=label,
            marker_color=colors,
            legendgroup=label,
            hovertemplate=f"<b>{label}</b><br>channel %{{customdata[0]}}<br>rank %{{x}} of {c}"
            "<br>saliency %{y:.4g}<br>%{customdata[1]}<extra></extra>",
        )
        if subplots:
            fig.add_trace(trace, row=row, col=col)
        else:
            fig.add_trace(trace)
        if not split_marked or c < 2 or (row, col, c) in marked:
            continue
        marked.add((row, col, c))
        where: dict[str, int] = {"row": row, "col": col} if subplots else {}
        halves = (
            ("salient", -0.5, k - 0.5, SALIENT_COLOR, 0.13),
            ("redundant", c - k - 0.5, c - 0.5, REDUNDANT_COLOR, 0.10),
        )
        for half, x0, x1, fill, opacity in halves:
            fig.add_vrect(
                x0=x0, x1=x1, fillcolor=fill, opacity=opacity, line_width=0, layer="below", name=half, **where
            )
        fig.add_vline(
            x=k - 0.5,
            line_dash="dash",
            line_color="#333333",
            line_width=1.5,
            name="boundary",
            annotation_text=f"salient | redundant (k = {k})",
            annotation_position="top right",
            annotation_font_size=10,
            **where,
        )
        if c % 2:
            fig.add_annotation(
                name="left_out",
                text=f"ch {int(order[k])} left out (odd C)",
                x=k,
                y=float(np.nan_to_num(s[order[k]])),
                showarrow=True,
                arrowhead=2,
                ax=30,
                ay=-30,
                font={"size": 10, "color": LEFT_OUT_COLOR},
                **({"xref": fig.data[-1].xaxis, "yref": fig.data[-1].yaxis} if where else {}),
            )
    if overlay:
        fig.update_layout(barmode="group")
    _layout(
        fig,
        title or f"Channel saliency, sorted{_tap_suffix(tap)}",
        y_title="saliency (mean of L2-normalised map)",
        legend_title="model",
        height=380,
    )
    fig.update_xaxes(title_text="rank (0 = most salient)")
    return _nonfinite_note(fig, counts)


def rank_agreement_figure(
    matrix: ArrayLike,
    names: Sequence[str],
    title: str = "Rank agreement between criteria",
    metric: str = "Spearman ρ",
) -> go.Figure:
    """Annotated heatmap of a rank correlation between channel-importance criteria.

    Parameters
    ----------
    matrix : array (k, k)
        Correlation (Spearman or Kendall) between the rankings of ``k`` criteria, in ``[-1, 1]``.
    names : sequence of k str
        Criterion names (rows and columns).
    title : str
    metric : str
        Name of the correlation, shown in the colourbar and hover.

    Returns
    -------
    go.Figure
        One heatmap, ``z`` = ``matrix``, diverging colour scale centred on 0, first criterion on top.
    """
    figure = "rank_agreement_figure"
    z = _array(matrix, figure, "matrix", ndim=2)
    if z.shape[0] != z.shape[1]:
        raise TffdVizError(f"{figure}: matrix must be square (k, k), got shape {z.shape}")
    labels = _names(names, z.shape[0], figure, "names")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=labels,
            y=labels,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu",
            colorbar={"title": metric},
            text=_cell_text(z),
            texttemplate="%{text}",
            hovertemplate=f"%{{y}} vs %{{x}}<br>{metric} = %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    size = 140 + 45 * len(labels)
    _layout(fig, title, x_title="criterion", y_title="criterion", height=max(320, size))
    return _nonfinite_note(fig, {"matrix": _bad(z)})


def rank_band_figure(
    rank: ArrayLike,
    lower: ArrayLike,
    upper: ArrayLike,
    tap: str = "",
    label: str = "A",
    ci: float = 0.9,
) -> go.Figure:
    """Bootstrap confidence interval of each channel's saliency rank.

    Channels are sorted by ``rank`` (ascending; x = position 0..C-1, a dashed line before position
    ``C // 2`` marks the salient/redundant split); each has a marker at its rank and a vertical
    segment from ``lower`` to ``upper`` (drawn as segments rather than error bars so that a point
    outside its percentile interval is shown truthfully).

    Parameters
    ----------
    rank, lower, upper : array (C,)
        Point rank of each channel and the interval bounds (0 = most salient, e.g.
        :func:`tffd_viz.importance.bootstrap_rank_band`).
    tap, label : str
        Layer name and model label. The title and the legend entries use the label's short key
        (:func:`model_key`: ``"A · resnet8_s0"`` -> ``"A"``, so the title fits a half-width column);
        a longer label heads the legend, which sits below the plot.
    ci : float
        Central coverage of the interval, for the legend (default that of
        :func:`tffd_viz.importance.bootstrap_rank_band`).

    Returns
    -------
    go.Figure
        Trace 0: interval segments (``x`` positions, ``y`` ``[lower, upper, None, ...]``), named
        ``"<key> · <ci>% bootstrap interval"``; trace 1: point ranks (``x`` = 0..C-1, ``y`` = sorted
        ranks, ``customdata`` channel indices), named ``"<key> · rank"``.
    """
    figure = "rank_band_figure"
    level = f"{100 * float(ci):g}%"
    r = _array(rank, figure, "rank", ndim=1)
    lo = _array(lower, figure, "lower", ndim=1)
    hi = _array(upper, figure, "upper", ndim=1)
    if not (r.shape == lo.shape == hi.shape):
        raise TffdVizError(
            f"{figure}: rank {r.shape}, lower {lo.shape}, upper {hi.shape} must have the same shape"
        )
    order = np.argsort(np.where(np.isfinite(r), r, np.inf), kind="stable")
    c = r.shape[0]
    pos = np.arange(c)
    color = model_color(label)
    key = model_key(label)
    seg_x: list[float | None] = []
    seg_y: list[float | None] = []
    for p, ch in zip(pos, order):
        seg_x += [float(p), float(p), None]
        seg_y += [float(lo[ch]), float(hi[ch]), None]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=seg_x,
            y=seg_y,
            mode="lines",
            line={"color": color, "width": 2},
            opacity=0.45,
            name=f"{key} · {level} bootstrap interval",
            hoverinfo="skip",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=pos,
            y=r[order],
            mode="markers",
            marker={"color": color, "size": 6},
            name=f"{key} · rank",
            customdata=np.stack([order, lo[order], hi[order]], axis=1),
            hovertemplate="channel %{customdata[0]}<br>rank %{y:.3g}"
            f"<br>{level} interval [%{{customdata[1]:.3g}}, %{{customdata[2]:.3g}}]<extra>{label}</extra>",
        )
    )
    if c >= 2:
        k = c // 2
        fig.add_vline(x=k - 0.5, line_dash="dash", line_color="#333333", line_width=1, name="boundary")
    _layout(
        fig,
        f"Bootstrap rank bands{_tap_suffix(tap)} ({key})",
        x_title="channels sorted by rank",
        y_title="saliency rank (0 = most salient)",
        height=380,
    )
    _legend_below(fig, [tr.name for tr in fig.data], title=str(label) if key != str(label) else None)
    return _nonfinite_note(fig, {"rank": _bad(r), "lower": _bad(lo), "upper": _bad(hi)})


def split_stability_figure(
    stability_by_model: Mapping[str, Mapping[str, ArrayLike]],
    tap: str = "",
    title: str | None = None,
) -> go.Figure:
    """Probability that each channel lands in Tf-FD's salient half over bootstrap resamples.

    One bar per channel, channels sorted by their full-batch rank (x = position 0..C-1, so the bars
    left of the dashed line before position ``C // 2`` are the salient half); a stable split shows
    bars at 1 left of the line and at 0 right of it. A dotted line marks ``p = 0.5``.

    Parameters
    ----------
    stability_by_model : dict[str, dict]
        Label -> ``{"rank": (C,), "p_salient": (C,)}``: full-batch rank of each channel (0 = most
        salient) and the fraction of resamples that put it in the salient half (e.g.
        :func:`tffd_viz.importance.tap_rank_stability`).
    tap : str
        Layer name, shown in the title.
    title : str, optional

    Returns
    -------
    go.Figure
        One bar trace per model (grouped): ``x`` positions, ``y`` = ``p_salient`` in rank order,
        ``customdata`` = channel indices.
    """
    figure = "split_stability_figure"
    models = _models(stability_by_model, figure, "stability_by_model")
    fig = go.Figure()
    counts: dict[str, int] = {}
    channels: set[int] = set()
    for label, data, color in models:
        if not isinstance(data, Mapping) or "rank" not in data or "p_salient" not in data:
            raise TffdVizError(f"{figure}: {label!r} must map to a dict with 'rank' and 'p_salient'")
        r = _array(data["rank"], figure, f"rank {label!r}", ndim=1)
        p = _array(data["p_salient"], figure, f"p_salient {label!r}", ndim=1)
        if r.shape != p.shape:
            raise TffdVizError(f"{figure}: rank {r.shape} and p_salient {p.shape} of {label!r} differ in shape")
        counts[f"p_salient {label}"] = _bad(p)
        order = np.argsort(np.where(np.isfinite(r), r, np.inf), kind="stable")
        channels.add(r.shape[0])
        fig.add_trace(
            go.Bar(
                x=np.arange(r.shape[0]),
                y=[None if not math.isfinite(v) else float(v) for v in p[order]],
                customdata=order,
                name=label,
                marker_color=color,
                hovertemplate=f"<b>{label}</b><br>channel %{{customdata}}<br>rank %{{x}}"
                "<br>P(salient half) %{y:.2f}<extra></extra>",
            )
        )
    for c in sorted(channels):
        if c >= 2:
            fig.add_vline(x=c // 2 - 0.5, line_dash="dash", line_color="#333333", line_width=1.5, name="boundary")
    fig.add_hline(y=0.5, line_dash="dot", line_color="#999999", line_width=1, name="half")
    fig.update_layout(barmode="group")
    fig.update_yaxes(range=[0, 1.02])
    _layout(
        fig,
        title or f"Stability of the salient/redundant split{_tap_suffix(tap)}",
        x_title="channels sorted by full-batch rank",
        y_title="P(in salient half) over resamples",
        legend_title="model",
        height=360,
    )
    return _nonfinite_note(fig, counts)


# ----------------------------------------------------------------------------------------------------------
# 4-7: losses and lambdas
# ----------------------------------------------------------------------------------------------------------


def _flat_terms(terms: Mapping[str, Any]) -> dict[str, Any]:
    """``{"intra": {tap: v}, "inter": {pair: v}}`` -> ``{"intra · tap": v, ...}``; flat dicts unchanged."""
    out: dict[str, Any] = {}
    for key, value in terms.items():
        if isinstance(value, Mapping):
            for sub, v in value.items():
                out[f"{key} · {sub}"] = v
        else:
            out[str(key)] = value
    return out


def _grouped_bars(
    rows_by_model: Mapping[str, Mapping[str, Any]], figure: str, name: str, nice: bool
) -> tuple[go.Figure, dict[str, int]]:
    models = _models(rows_by_model, figure, name)
    flat = [(label, _flat_terms(row), color) for label, row, color in models]
    keys = _union_keys([row for _, row, _ in flat])
    fig = go.Figure()
    counts: dict[str, int] = {}
    for label, row, color in flat:
        vals = [_number(row.get(k)) for k in keys]
        counts[label] = sum(bad for _, bad in vals)
        x = [_NICE_NAMES.get(k, k) if nice else k for k in keys]
        y = [None if not math.isfinite(v) else v for v, _ in vals]
        fig.add_trace(
            go.Bar(
                x=x,
                y=y,
                name=label,
                marker_color=color,
                customdata=keys,
                hovertemplate=f"<b>{label}</b><br>%{{customdata}}<br>%{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_layout(barmode="group")
    return fig, counts


def terms_bar_figure(
    terms_by_model: Mapping[str, Mapping[str, Any]],
    log_y: bool = False,
    title: str = "Tf-FD terms (unweighted)",
) -> go.Figure:
    """Every intra-/inter-layer Tf-FD term for each model, as grouped bars.

    Parameters
    ----------
    terms_by_model : dict[str, dict[str, float]]
        Label -> term name -> value. A model's dict may be flat (``{"intra · layer1": v, ...}``) or
        nested (``{"intra": {"layer1": v}, "inter": {"layer1->layer2": v}}``, flattened to
        ``"intra · layer1"``). Scalars may be floats or 0-d tensors; a term a model lacks is not drawn.
    log_y : bool
        Logarithmic y axis (terms span orders of magnitude); only decades are labelled when the values
        span one or more, else 1-2-5.
    title : str

    Returns
    -------
    go.Figure
        One bar trace per model; ``x`` term names (union, first-appearance order), ``y`` values.
    """
    fig, counts = _grouped_bars(terms_by_model, "terms_bar_figure", "terms_by_model", nice=False)
    _layout(
        fig,
        title,
        x_title="term (intra: layer, inter: shallow->deep)",
        y_title="term value (MSE)",
        legend_title="model",
        height=380,
    )
    if log_y:
        _log_bars_axis(fig, "term value (MSE, log scale)")
    return _nonfinite_note(fig, counts)


def weighted_contributions_figure(
    rows_by_model: Mapping[str, Mapping[str, Any]],
    log_y: bool = False,
    stacked: bool = False,
    title: str = "Loss contributions: CE vs weighted Tf-FD terms",
) -> go.Figure:
    """Cross-entropy against the lambda-weighted intra and inter terms, per model.

    Parameters
    ----------
    rows_by_model : dict[str, dict[str, float]]
        Label -> component -> value, e.g. ``{"ce": 0.9, "intra": 8e-4 * t_intra, "inter": ...}``
        (keys ``ce``, ``intra``/``weighted_intra``, ``inter``/``weighted_inter``, ``total`` get
        readable names; other keys are shown as given).
    log_y : bool
        Logarithmic y axis (the weighted terms are often orders of magnitude below CE); only decades
        are labelled when the values span one or more, else 1-2-5.
    stacked : bool
        One stacked bar per model (x = model, one trace per component) instead of grouped bars
        (x = component, one trace per model).
    title : str

    Returns
    -------
    go.Figure
    """
    figure = "weighted_contributions_figure"
    if not stacked:
        fig, counts = _grouped_bars(rows_by_model, figure, "rows_by_model", nice=True)
        x_title = "loss component"
    else:
        models = _models(rows_by_model, figure, "rows_by_model")
        keys = _union_keys([dict(row) for _, row, _ in models])
        labels = [label for label, _, _ in models]
        fig = go.Figure()
        counts = {}
        for i, key in enumerate(keys):
            vals = [_number(row.get(key)) for _, row, _ in models]
            counts[key] = sum(bad for _, bad in vals)
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=[None if not math.isfinite(v) else v for v, _ in vals],
                    name=_NICE_NAMES.get(key, key),
                    marker_color=CLASS_COLORS[(i + 2) % len(CLASS_COLORS)],
                    hovertemplate=f"%{{x}}<br>{_NICE_NAMES.get(key, key)} = %{{y:.4g}}<extra></extra>",
                )
            )
        fig.update_layout(barmode="stack")
        x_title = "model"
    _layout(
        fig,
        title,
        x_title=x_title,
        y_title="loss contribution",
        legend_title="model" if not stacked else "component",
        height=380,
    )
    if log_y:
        _log_bars_axis(fig, "loss contribution (log scale)")
    return _nonfinite_note(fig, counts)


def grad_share_figure(
    norms: ArrayLike,
    terms: Sequence[str],
    groups: Sequence[str],
    title: str = "Gradient norm per loss term and parameter group",
    share: bool = True,
    log_color: bool = False,
) -> go.Figure:
    """Annotated heatmap of gradient norms, as shares per parameter group or raw.

    Parameters
    ----------
    norms : array (T, G)
        Norm of the gradient of loss term ``t`` (CE, each Tf-FD term, ...) w.r.t. parameter group ``g``.
    terms : sequence of T str
        Row names.
    groups : sequence of G str
        Column names (e.g. stages).
    title : str
    share : bool
        Show ``norms[t, g] / sum_t norms[t, g]`` in % (each column sums to 100 %; a group with zero
        total gradient is left blank). Otherwise raw norms.
    log_color : bool
        With raw norms, colour by ``log10(norm)`` (hover and cell text keep the raw norm).

    Returns
    -------
    go.Figure
        One heatmap; ``z`` = share in % (``share=True``), raw norms, or their log10.
    """
    figure = "grad_share_figure"
    n = _array(norms, figure, "norms", ndim=2)
    row_names = _names(terms, n.shape[0], figure, "terms")
    col_names = _names(groups, n.shape[1], figure, "groups")
    bad = _bad(n)
    if np.any(n[np.isfinite(n)] < 0):
        raise TffdVizError(f"{figure}: norms must be >= 0, got a minimum of {np.nanmin(n)}")
    if share:
        total = np.nansum(n, axis=0, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(total > 0, 100.0 * n / total, np.nan)
        text = _cell_text(z, ".1f")
        colorbar, zfmt = "share of group's gradient (%)", "%{z:.1f} %"
        zkw: dict[str, Any] = {"zmin": 0, "zmax": 100}
    elif log_color:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(n > 0, np.log10(n), np.nan)
        text = [[_fmt(v) for v in row] for row in n]
        colorbar, zfmt, zkw = "gradient norm (log10)", "%{customdata:.3g}", {}
    else:
        z = n
        text = [[_fmt(v) for v in row] for row in n]
        colorbar, zfmt, zkw = "gradient norm", "%{z:.3g}", {}
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=col_names,
            y=row_names,
            colorscale="Blues",
            colorbar={"title": colorbar},
            customdata=n,
            text=text,
            texttemplate="%{text}",
            hovertemplate=f"term %{{y}}<br>group %{{x}}<br>{zfmt}<br>norm %{{customdata:.3g}}<extra></extra>",
            **zkw,
        )
    )
    fig.update_yaxes(autorange="reversed")
    _layout(
        fig, title, x_title="parameter group", y_title="loss term", height=max(300, 140 + 40 * len(row_names))
    )
    fig = _nonfinite_note(fig, {"norms": bad})
    if share:
        dead = [col_names[j] for j in range(n.shape[1]) if not np.nansum(n[:, j]) > 0]
        if dead:
            _paper_note(
                fig,
                "no_gradient",
                f"no gradient reaches: {', '.join(dead)}",
                x=0,
                y=1.0,
                font={"size": 11, "color": "#555555"},
                xanchor="left",
                yanchor="bottom",
            )
    return fig


def _full_range(values: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of the finite values."""
    return float(values.min()), float(values.max())


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    """Tukey's fences clipped to the data: ``[max(min, Q1 - 1.5 IQR), min(max, Q3 + 1.5 IQR)]``.

    Values outside the fences (e.g. one diverged run among accurate ones) no longer stretch the colour
    scale; with no such outlier this is ``(min, max)``.
    """
    q1, q3 = (float(q) for q in np.percentile(values, [25, 75]))
    iqr = q3 - q1
    return max(float(values.min()), q1 - 1.5 * iqr), min(float(values.max()), q3 + 1.5 * iqr)


COLOR_RANGES: dict[str, Callable[[np.ndarray], tuple[float, float]]] = {
    "full": _full_range,
    "robust": _robust_range,
}
"""How a heatmap's colour range is chosen from its finite cell values: ``"full"`` (min to max) or
``"robust"`` (Tukey's fences, so that outlier cells saturate the scale's end instead of flattening the
others; their value text is unchanged)."""


def sweep_heatmap_figure(
    rows: Sequence[Mapping[str, Any]],
    value: str = "final_acc",
    x: str = "lambda_inter",
    y: str = "lambda_intra",
    facet: str | None = None,
    title: str | None = None,
    color_range: str = "robust",
) -> go.Figure:
    """The lambda sweep as a heatmap: mean of ``value`` over seeds in each (y, x) cell.

    Parameters
    ----------
    rows : list of dict
        One row per run, e.g. ``{"lambda_intra": 8e-4, "lambda_inter": 5e-4, "seed": 0, "final_acc": 91.2}``.
    value : str
        Column averaged in each cell.
    x, y : str
        Columns on the axes; their values become categories (``format_lambda``: ``"0"``, ``"8e-4"``),
        sorted numerically.
    facet : str, optional
        Column splitting the table into side-by-side panels (e.g. ``"arch"``), with a shared colour scale.
    title : str, optional
    color_range : str
        A key of :data:`COLOR_RANGES`: ``"robust"`` (default) lets outlier cells (beyond Tukey's fences
        of all cell means) saturate the colour scale, so one diverged setting does not flatten the
        rest; the colour bar's title gives the clipped range and the hover marks those cells.
        ``"full"``: minimum to maximum.

    Returns
    -------
    go.Figure
        One heatmap per facet; ``z[i][j]`` = mean over the finite ``value`` of the runs with
        ``y == y_cats[i]`` and ``x == x_cats[j]`` (blank when none); ``customdata`` = (std, count,
        note), the note saying when the cell lies outside the colour range. The shared colour axis
        has ``cmin``/``cmax`` set to the chosen range.

    Raises
    ------
    TffdVizError
        No rows, a row lacking ``x``, ``y`` (or ``facet``), or an unknown ``color_range``.
    """
    figure = "sweep_heatmap_figure"
    if not rows:
        raise TffdVizError(f"{figure}: rows is empty; give one dict per run with {x!r}, {y!r} and {value!r}")
    if color_range not in COLOR_RANGES:
        raise TffdVizError(f"{figure}: color_range must be one of {sorted(COLOR_RANGES)}, got {color_range!r}")
    cells: dict[tuple[str, str, str], list[float]] = {}
    faults = 0
    for i, row in enumerate(rows):
        for key in (x, y) + ((facet,) if facet else ()):
            if key not in row:
                raise TffdVizError(f"{figure}: row {i} has no column {key!r}; its columns are {sorted(row)}")
        v, bad = _number(row.get(value))
        faults += bad
        key3 = (str(row[facet]) if facet else "", format_lambda(row[y]), format_lambda(row[x]))
        cells.setdefault(key3, [])
        if math.isfinite(v):
            cells[key3].append(v)
    xs = sorted({k[2] for k in cells}, key=_category_sort_key)
    ys = sorted({k[1] for k in cells}, key=_category_sort_key)
    facets = sorted({k[0] for k in cells}, key=_category_sort_key)
    nice_v, nice_x, nice_y = (_NICE_NAMES.get(k, k) for k in (value, x, y))
    fig = (
        make_subplots(
            rows=1,
            cols=len(facets),
            subplot_titles=[f"{facet} = {f}" for f in facets] if facet else None,
            horizontal_spacing=0.08,
        )
        if len(facets) > 1
        else go.Figure()
    )
    grids: list[tuple[np.ndarray, np.ndarray]] = []
    for fac in facets:
        z = np.full((len(ys), len(xs)), np.nan)
        custom = np.empty((len(ys), len(xs), 3), dtype=object)
        for yi, yv in enumerate(ys):
            for xi, xv in enumerate(xs):
                vals = cells.get((fac, yv, xv))
                n = len(vals) if vals else 0
                if n:
                    z[yi, xi] = float(np.mean(vals))
                std = f"{np.std(vals, ddof=1):.3g}" if n >= 2 else "–"
                custom[yi, xi] = (std, n, "")
        grids.append((z, custom))
    means = np.concatenate([z.ravel() for z, _ in grids])
    means = means[np.isfinite(means)]
    lo, hi = COLOR_RANGES[color_range](means) if means.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    outside = int(np.count_nonzero((means < lo) | (means > hi)))
    for fi, (z, custom) in enumerate(grids):
        for yi, xi in zip(*np.nonzero(np.isfinite(z) & ((z < lo) | (z > hi)))):
            side = "below" if z[yi, xi] < lo else "above"
            custom[yi, xi, 2] = f"<br>(outlier: {side} the colour range {_fmt(lo, 4)}–{_fmt(hi, 4)})"
        trace = go.Heatmap(
            z=z,
            x=xs,
            y=ys,
            customdata=custom,
            coloraxis="coloraxis",
            text=_cell_text(z),
            texttemplate="%{text}",
            hovertemplate=f"{nice_y} = %{{y}}<br>{nice_x} = %{{x}}<br>mean {value} = %{{z:.3f}}"
            "<br>std over seeds = %{customdata[0]}<br>runs = %{customdata[1]}%{customdata[2]}<extra></extra>",
        )
        if len(facets) > 1:
            fig.add_trace(trace, row=1, col=fi + 1)
        else:
            fig.add_trace(trace)
    bar_title = nice_v
    if outside:
        cells_word = "cell" if outside == 1 else "cells"
        bar_title += (f"<br><span style='font-size:11px'>colour clipped to {_fmt(lo, 4)}–{_fmt(hi, 4)};"
                      f"<br>{outside} outlier {cells_word} at the ends</span>")
    fig.update_layout(
        coloraxis={"colorscale": "Viridis", "cmin": lo, "cmax": hi, "colorbar": {"title": bar_title}}
    )
    fig.update_xaxes(type="category", title_text=nice_x)
    fig.update_yaxes(type="category", title_text=nice_y)
    _layout(fig, title or f"Sweep: mean {value} over seeds", height=max(320, 160 + 40 * len(ys)))
    return _nonfinite_note(fig, {value: faults})


# ----------------------------------------------------------------------------------------------------------
# 8: feature maps
# ----------------------------------------------------------------------------------------------------------


def _maps_and_order(maps: ArrayLike, order: ArrayLike, figure: str) -> tuple[np.ndarray, np.ndarray]:
    m = _array(maps, figure, "maps", ndim=3)
    o = _np(order)
    c = m.shape[0]
    if o.ndim != 1 or o.shape[0] != c:
        raise TffdVizError(
            f"{figure}: order must be 1-D of length C = {c} (maps {m.shape}), got shape {o.shape}"
        )
    if not np.issubdtype(o.dtype, np.integer) or not np.array_equal(np.sort(o), np.arange(c)):
        raise TffdVizError(f"{figure}: order must be a permutation of the channel indices 0..{c - 1}")
    return m, o.astype(np.int64)


def _tile_heatmap(tile: np.ndarray, channel: int, rank: int, half: str) -> go.Heatmap:
    return go.Heatmap(
        z=tile,
        coloraxis="coloraxis",
        name=f"ch {channel}",
        hovertemplate=f"channel {channel} (rank {rank}, {half})<br>row %{{y}}, col %{{x}}"
        "<br>activation %{z:.3g}<extra></extra>",
    )


def _tile_title_colors(fig: go.Figure, colors: Sequence[str]) -> None:
    """Colour the subplot titles (the first ``len(colors)`` annotations) by channel half."""
    for ann, color in zip(fig.layout.annotations, colors):
        ann.font = {"size": 10, "color": color}


def _shared_color_range(fig: go.Figure, tiles: Sequence[np.ndarray], title: str) -> None:
    stacked = np.concatenate([t.ravel() for t in tiles]) if tiles else np.zeros(1)
    finite = stacked[np.isfinite(stacked)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    fig.update_layout(
        coloraxis={"colorscale": "Viridis", "cmin": lo, "cmax": hi, "colorbar": {"title": title}}
    )


def feature_maps_figure(
    maps: ArrayLike,
    order: ArrayLike,
    title: str = "Feature maps, most salient first",
    max_channels: int = 64,
    cols: int = 8,
    max_side: int = 32,
) -> go.Figure:
    """Grid of channel maps ordered by saliency: the salient half, then the redundant half.

    With ``k = C // 2``, tiles show ``order[:k]`` (salient, titles in :data:`SALIENT_COLOR`), then for
    odd ``C`` the left-out middle channel ``order[k]``, then ``order[C-k:]`` (redundant, titles in
    :data:`REDUNDANT_COLOR`). When ``C > max_channels`` only the first ``max_channels // 2`` of each
    half are shown (the most salient channels and their intra-Tf-FD partners). Each tile is titled
    ``"ch <index> · #<rank>"`` (rank 0-based, 0 = most salient); all tiles share one colour scale; a
    caption under the grid (annotation ``name="caption"``) gives the title colours' key.

    Parameters
    ----------
    maps : array (C, H, W)
        One sample's (or a batch-mean) feature map of one layer.
    order : int array (C,)
        Channel indices, most salient first (:func:`tffd_viz.losses.salient_order`).
    title : str
    max_channels : int
        Most tiles drawn.
    cols : int
        Tiles per row.
    max_side : int
        Maps larger than this are block-averaged down.

    Returns
    -------
    go.Figure
        One heatmap per tile in drawing order (``fig.data[0].z`` is the most salient channel's map).
    """
    figure = "feature_maps_figure"
    m, o = _maps_and_order(maps, order, figure)
    c = m.shape[0]
    bad = _bad(m)
    k = c // 2
    if c <= max_channels:
        picked = [(r, "salient") for r in range(k)] + ([(k, "left out")] if c % 2 else [])
        picked += [(r, "redundant") for r in range(c - k, c)]
    else:
        half = max(1, max_channels // 2)
        picked = [(r, "salient") for r in range(half)] + [
            (r, "redundant") for r in range(c - k, c - k + half)
        ]
    cols = max(1, min(cols, len(picked)))
    rows = math.ceil(len(picked) / cols)
    small = _downsample(m, max_side)
    half_color = {"salient": SALIENT_COLOR, "redundant": REDUNDANT_COLOR, "left out": LEFT_OUT_COLOR}
    titles = [f"ch {int(o[r])} · #{r}" for r, _ in picked]
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.02,
        vertical_spacing=min(0.3 / max(rows, 1), 0.08),
    )
    tiles = []
    for i, (r, half_name) in enumerate(picked):
        tile = small[o[r]]
        tiles.append(tile)
        fig.add_trace(_tile_heatmap(tile, int(o[r]), r, half_name), row=i // cols + 1, col=i % cols + 1)
    _tile_title_colors(fig, [half_color[h] for _, h in picked])
    _image_tiles(fig)
    _shared_color_range(fig, tiles, "activation")
    shown = f"{len(picked)} of {c} channels" if len(picked) < c else f"{c} channels"
    _layout(fig, f"{title} ({shown})", height=min(2400, 110 + 105 * rows), showlegend=False)
    fig.update_layout(margin={"b": 40})
    _caption(fig, "green titles: salient half · grey: redundant half · #rank", yshift=-6)
    return _nonfinite_note(fig, {"maps": bad})


def paired_maps_figure(
    maps: ArrayLike,
    order: ArrayLike,
    title: str = "Intra-Tf-FD pairs: salient channel above its redundant partner",
    max_pairs: int = 12,
    max_side: int = 32,
    cols: int = 6,
) -> go.Figure:
    """Salient channels above the redundant channels intra-Tf-FD pairs them with, ``cols`` pairs a row.

    Pair ``i`` is ``order[i]`` (rank ``i``) against ``order[C - k + i]`` with ``k = C // 2`` (for odd
    ``C`` the middle channel is left out), exactly as :func:`tffd_viz.losses.intra_fd` pairs them. At
    most ``max_pairs`` pairs are drawn, ``cols`` to a block of two tile rows (salient row above, in
    :data:`SALIENT_COLOR` titles ``"ch <index> · #<rank>"``; redundant row below, grey titles), the
    blocks one under the other; the figure's height grows with the number of blocks so that tiles keep
    a readable size in a half-width column.

    Parameters
    ----------
    maps : array (C, H, W)
    order : int array (C,)
        Channel indices, most salient first.
    title : str
    max_pairs : int
    max_side : int
        Maps larger than this are block-averaged down.
    cols : int
        Pairs per block (tiles per row).

    Returns
    -------
    go.Figure
        ``2 * n_pairs`` heatmaps: first the salient tiles of pairs 0..n-1, then the redundant ones.
    """
    figure = "paired_maps_figure"
    m, o = _maps_and_order(maps, order, figure)
    c = m.shape[0]
    k = c // 2
    if k < 1:
        raise TffdVizError(f"{figure}: need at least 2 channels to pair, got maps of shape {m.shape}")
    n = min(k, max(1, max_pairs))
    cols = max(1, min(cols, n))
    blocks = math.ceil(n / cols)
    small = _downsample(m, max_side)
    top = [(i, int(o[i])) for i in range(n)]
    bottom = [(c - k + i, int(o[c - k + i])) for i in range(n)]
    titles: list[str] = []
    title_colors: list[str] = []
    for b in range(blocks):
        for items, color in ((top, SALIENT_COLOR), (bottom, REDUNDANT_COLOR)):
            row = items[b * cols : (b + 1) * cols]
            titles += [f"ch {ch} · #{r}" for r, ch in row] + [""] * (cols - len(row))
            title_colors += [color] * len(row)
    tile_px, gap_px, margins = 68, 24, 115
    height = margins + 2 * blocks * (tile_px + gap_px)
    fig = make_subplots(
        rows=2 * blocks,
        cols=cols,
        subplot_titles=titles,
        horizontal_spacing=0.03,
        vertical_spacing=gap_px / (height - margins),
        row_titles=["salient", "redundant"] * blocks,
    )
    tiles = []
    for half_row, (items, half) in enumerate(((top, "salient"), (bottom, "redundant"))):
        for i, (r, ch) in enumerate(items):
            tiles.append(small[ch])
            fig.add_trace(
                _tile_heatmap(small[ch], ch, r, f"{half}, pair {i}"),
                row=2 * (i // cols) + half_row + 1,
                col=i % cols + 1,
            )
    _tile_title_colors(fig, title_colors)
    for ann in fig.layout.annotations[len(title_colors) :]:  # the row titles
        ann.font = {"size": 10, "color": "#777777"}
    _image_tiles(fig)
    _shared_color_range(fig, tiles, "activation")
    _layout(fig, f"{title} ({n} of {k} pairs)", height=height, showlegend=False)
    return _nonfinite_note(fig, {"maps": _bad(m)})


# ----------------------------------------------------------------------------------------------------------
# 9-12: similarity
# ----------------------------------------------------------------------------------------------------------


def cosine_matrix_figure(
    matrix: ArrayLike,
    order: ArrayLike | None = None,
    title: str = "Channel cosine similarity",
    split_at: int | None = None,
    mark_split: bool = True,
) -> go.Figure:
    """Heatmap of the channel x channel cosine matrix with the salient/redundant split lines.

    Parameters
    ----------
    matrix : array (C, C)
        Cosine between channels, in channel-index order (e.g.
        :func:`tffd_viz.similarity.channel_cosine_matrix` without ``order``).
    order : int array (C,), optional
        Channel indices, most salient first; row/column ``i`` of the figure is channel ``order[i]``.
    title : str
    split_at : int, optional
        Position of the split; default ``C // 2`` when ``order`` is given (for odd ``C`` a second
        line also isolates the left-out middle channel), none otherwise.
    mark_split : bool
        Draw the split lines (shapes named ``"split"``).

    Returns
    -------
    go.Figure
        One heatmap, ``z = matrix[order][:, order]``; ``customdata[i, j]`` = (channel of row i,
        channel of column j).
    """
    figure = "cosine_matrix_figure"
    z = _array(matrix, figure, "matrix", ndim=2)
    c = z.shape[0]
    if z.shape != (c, c):
        raise TffdVizError(f"{figure}: matrix must be square (C, C), got shape {z.shape}")
    if order is not None:
        _, o = _maps_and_order(np.zeros((c, 1, 1)), order, figure)
        z = z[o][:, o]
    else:
        o = np.arange(c)
    ids = np.stack(np.meshgrid(o, o, indexing="ij"), axis=-1)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            zmin=-1,
            zmax=1,
            zmid=0,
            colorscale="RdBu_r",
            colorbar={"title": "cosine"},
            customdata=ids,
            hovertemplate="channel %{customdata[0]} vs channel %{customdata[1]}"
            "<br>cosine %{z:.3f}<extra></extra>",
        )
    )
    if split_at is None and order is not None:
        split_at = c // 2
    if mark_split and split_at is not None and 0 < split_at < c:
        cuts = [split_at] + (
            [c - split_at] if c - split_at != split_at and order is not None and split_at == c // 2 else []
        )
        for cut in cuts:
            for kind in ("h", "v"):
                line = {"line_color": "#111111", "line_width": 1.5, "line_dash": "dash", "name": "split"}
                (fig.add_hline(y=cut - 0.5, **line) if kind == "h" else fig.add_vline(x=cut - 0.5, **line))
    fig.update_yaxes(autorange="reversed", scaleanchor="x", constrain="domain")
    fig.update_xaxes(constrain="domain")
    axis = (
        "channel position (sorted by saliency, most salient first)" if order is not None else "channel index"
    )
    _layout(fig, title, x_title=axis, y_title=axis, height=520)
    return _nonfinite_note(fig, {"matrix": _bad(z)})


def paired_similarity_figure(
    values_by_model: Mapping[str, ArrayLike],
    tap: str = "",
    title: str | None = None,
) -> go.Figure:
    """Cosine between each salient channel and its paired redundant channel, per model.

    Parameters
    ----------
    values_by_model : dict[str, array (C//2,)]
        Label -> :func:`tffd_viz.similarity.paired_channel_cosine` (pair ``i`` = the channel of rank
        ``i`` against the channel of rank ``C - k + i``).
    tap : str
    title : str, optional

    Returns
    -------
    go.Figure
        One lines+markers trace per model; ``x`` = pair 0..k-1, ``y`` = cosine; the legend gives the mean.
    """
    figure = "paired_similarity_figure"
    fig = go.Figure()
    counts = {}
    for label, v, color in _models(values_by_model, figure, "values_by_model"):
        a = _array(v, figure, f"values {label!r}", ndim=1)
        counts[label] = _bad(a)
        mean = float(np.nanmean(a)) if np.isfinite(a).any() else math.nan
        fig.add_trace(
            go.Scatter(
                x=np.arange(a.shape[0]),
                y=a,
                mode="lines+markers",
                name=f"{label} (mean {mean:.3f})",
                line={"color": color},
                marker={"size": 5},
                hovertemplate=f"<b>{label}</b><br>pair %{{x}}: salient rank %{{x}} vs its redundant partner"
                "<br>cosine %{y:.3f}<extra></extra>",
            )
        )
    _layout(
        fig,
        title or f"Salient vs paired redundant channel similarity{_tap_suffix(tap)}",
        x_title="pair (rank of the salient channel, 0 = most salient)",
        y_title="cosine similarity",
        legend_title="model",
        height=360,
    )
    return _nonfinite_note(fig, counts)


def alignment_figure(
    values_by_model: Mapping[str, Mapping[str, ArrayLike]],
    title: str = "Inter-layer alignment per channel",
) -> go.Figure:
    """Per-channel cosine between a shallow and a deep layer (inter-Tf-FD pairing), one panel per pair.

    Parameters
    ----------
    values_by_model : dict[str, dict[str, array (min(Cs, Cd),)]]
        Label -> pair name (``"layer1->layer2"``) -> :func:`tffd_viz.similarity.inter_layer_alignment`.
    title : str

    Returns
    -------
    go.Figure
        One panel per pair (union over models); one trace per (model, pair), ``x`` channel index.
    """
    figure = "alignment_figure"
    models = _models(values_by_model, figure, "values_by_model")
    for label, pairs, _ in models:
        if not isinstance(pairs, Mapping):
            raise TffdVizError(
                f"{figure}: values of model {label!r} must be a dict pair name -> array, got "
                f"{type(pairs).__name__}"
            )
    pair_names = _union_keys([pairs for _, pairs, _ in models])
    if not pair_names:
        return _empty_figure(title, "no inter-layer pairs to show")
    fig = make_subplots(
        rows=1, cols=len(pair_names), subplot_titles=pair_names, shared_yaxes=True, horizontal_spacing=0.04
    )
    counts: dict[str, int] = {}
    for label, pairs, color in models:
        in_legend = False
        for j, pair in enumerate(pair_names):
            if pair not in pairs:
                continue
            a = _array(pairs[pair], figure, f"values {label!r} {pair!r}", ndim=1)
            counts[f"{label} {pair}"] = _bad(a)
            fig.add_trace(
                go.Scatter(
                    x=np.arange(a.shape[0]),
                    y=a,
                    mode="lines+markers",
                    name=label,
                    legendgroup=label,
                    showlegend=not in_legend,
                    line={"color": color, "width": 1.5},
                    marker={"size": 4},
                    hovertemplate=f"<b>{label}</b> {pair}<br>channel %{{x}}"
                    "<br>cosine %{y:.3f}<extra></extra>",
                ),
                row=1,
                col=j + 1,
            )
            in_legend = True
    fig.update_xaxes(title_text="channel index")
    fig.update_yaxes(title_text="cosine (shallow pooled vs deep)", row=1, col=1)
    _layout(fig, title, legend_title="model", height=360)
    return _nonfinite_note(fig, counts)


def _cka_trace(
    z: np.ndarray,
    names_a: list[str],
    names_b: list[str],
    zmin: float,
    zmax: float,
    label_a: str,
    label_b: str,
    coloraxis: str | None,
) -> go.Heatmap:
    kw: dict[str, Any] = (
        {"coloraxis": coloraxis}
        if coloraxis
        else {"zmin": zmin, "zmax": zmax, "colorscale": "Magma", "colorbar": {"title": "CKA"}}
    )
    return go.Heatmap(
        z=z,
        x=names_b,
        y=names_a,
        text=_cell_text(z),
        texttemplate="%{text}",
        hovertemplate=f"{label_a} %{{y}} vs {label_b} %{{x}}<br>CKA %{{z:.3f}}<extra></extra>",
        **kw,
    )


def cka_heatmap_figure(
    matrix: ArrayLike,
    names_a: Sequence[str] | None = None,
    names_b: Sequence[str] | None = None,
    title: str = "CKA between layers",
    zmin: float = 0.0,
    zmax: float = 1.0,
    label_a: str = "A",
    label_b: str = "B",
) -> go.Figure:
    """Annotated layer x layer CKA heatmap.

    Parameters
    ----------
    matrix : array (n_a, n_b)
        CKA between layer ``i`` of model A (rows) and layer ``j`` of model B (columns).
    names_a, names_b : sequence of str, optional
        Layer names (default ``"0"``, ``"1"``, ...).
    title : str
    zmin, zmax : float
        Colour range.
    label_a, label_b : str
        Model labels for axis titles and hover.

    Returns
    -------
    go.Figure
        One heatmap with ``z = matrix``, first layer on top.
    """
    figure = "cka_heatmap_figure"
    z = _array(matrix, figure, "matrix", ndim=2)
    ya = _names(names_a, z.shape[0], figure, "names_a")
    xb = _names(names_b, z.shape[1], figure, "names_b")
    fig = go.Figure(_cka_trace(z, ya, xb, zmin, zmax, label_a, label_b, None))
    fig.update_yaxes(autorange="reversed")
    _layout(
        fig,
        title,
        x_title=f"model {label_b} layer",
        y_title=f"model {label_a} layer",
        height=max(320, 160 + 45 * len(ya)),
    )
    return _nonfinite_note(fig, {"matrix": _bad(z)})


def cka_grid_figure(
    matrices: Mapping[str, tuple[Any, ...]],
    title: str = "CKA: within and across models",
    zmin: float = 0.0,
    zmax: float = 1.0,
) -> go.Figure:
    """Several CKA heatmaps side by side with one colour scale (e.g. A vs A, B vs B, A vs B).

    Parameters
    ----------
    matrices : dict[str, tuple]
        Panel title -> ``(matrix (n_a, n_b), names_a, names_b)`` or
        ``(matrix, names_a, names_b, label_rows, label_cols)``. With three items the axis labels
        come from a title of the form ``"X vs Y"`` (rows X, columns Y).
    title : str
    zmin, zmax : float

    Returns
    -------
    go.Figure
        One heatmap per panel, in dict order, ``z`` = the given matrix.
    """
    figure = "cka_grid_figure"
    if not isinstance(matrices, Mapping) or not matrices:
        raise TffdVizError(f"{figure}: matrices must be a non-empty dict title -> (matrix, names_a, names_b)")
    fig = make_subplots(rows=1, cols=len(matrices), subplot_titles=list(matrices), horizontal_spacing=0.12)
    counts: dict[str, int] = {}
    height = 320
    for j, (panel, spec) in enumerate(matrices.items()):
        if not isinstance(spec, Sequence) or len(spec) not in (3, 5):
            raise TffdVizError(
                f"{figure}: panel {panel!r} must be (matrix, names_a, names_b[, label_a, label_b])"
            )
        z = _array(spec[0], figure, f"matrix {panel!r}", ndim=2)
        ya = _names(spec[1], z.shape[0], figure, f"names_a of {panel!r}")
        xb = _names(spec[2], z.shape[1], figure, f"names_b of {panel!r}")
        if len(spec) == 5:
            la, lb = str(spec[3]), str(spec[4])
        else:
            parts = re.split(r"\s+vs\.?\s+", str(panel), maxsplit=1)
            la, lb = (parts[0], parts[1]) if len(parts) == 2 else ("rows", "columns")
        counts[panel] = _bad(z)
        fig.add_trace(_cka_trace(z, ya, xb, zmin, zmax, la, lb, "coloraxis"), row=1, col=j + 1)
        fig.update_xaxes(title_text=f"{lb} layer", row=1, col=j + 1)
        fig.update_yaxes(title_text=f"{la} layer", autorange="reversed", row=1, col=j + 1)
        height = max(height, 160 + 45 * len(ya))
    fig.update_layout(
        coloraxis={"colorscale": "Magma", "cmin": zmin, "cmax": zmax, "colorbar": {"title": "CKA"}}
    )
    _layout(fig, title, height=height)
    return _nonfinite_note(fig, counts)


# ----------------------------------------------------------------------------------------------------------
# 13, 17: images
# ----------------------------------------------------------------------------------------------------------


def _images01(images: ArrayLike, figure: str, max_side: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """``(n, C, H, W)`` or ``(n, H, W)`` in [0, 1] -> uint8 RGB ``(n, H', W', 3)``, non-finite count, ``(H, W)``."""
    a = _array(images, figure, "images", ndim=(3, 4))
    if a.ndim == 3:
        a = a[:, None]
    if a.shape[1] not in (1, 3):
        raise TffdVizError(f"{figure}: images must have 1 or 3 channels (n, C, H, W), got shape {a.shape}")
    bad = _bad(a)
    hw = (int(a.shape[-2]), int(a.shape[-1]))
    a = _downsample(a, max_side)
    a = np.nan_to_num(a, nan=0.0)
    rgb = np.repeat(a, 3, axis=1) if a.shape[1] == 1 else a
    return (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8).transpose(0, 2, 3, 1), bad, hw


def attribution_figure(
    images: ArrayLike,
    maps_by_model: Mapping[str, ArrayLike],
    titles: Sequence[str] | None = None,
    title: str = "Attribution maps",
    max_images: int = 6,
    max_side: int = 64,
    opacity: float = 0.6,
) -> go.Figure:
    """Rows = images; columns = the input, then each model's attribution map over the grayscale image.

    Parameters
    ----------
    images : array (n, C, H, W) or (n, H, W), values in [0, 1]
    maps_by_model : dict[str, array (n, H, W)]
        Label -> attribution map per image (same ``H, W`` as the images).
    titles : sequence of n str, optional
        Row titles (e.g. ``"true 3 · A 3 · B 5"``), shown over the input image.
    title : str
    max_images : int
        Rows drawn at most.
    max_side : int
        Images/maps larger than this are block-averaged down.
    opacity : float
        Opacity of the attribution overlay.

    Returns
    -------
    go.Figure
        Per row: one ``go.Image`` (input), then per model a grayscale background heatmap and an
        attribution heatmap (``z`` = the map, shared colour axis; diverging around 0 when any map is
        negative). The row titles sit over the input images (annotations in row order, first); the
        columns are headed once, at the top, ``"input"`` and each model's short key
        (:func:`model_key`: ``"A · resnet8_s0"`` -> ``"A"``; annotations ``name="column"``), and a
        caption under the grid (``name="models"``) spells out the keys' full labels.
    """
    figure = "attribution_figure"
    rgb, bad_img, (raw_h, raw_w) = _images01(images, figure, max_side)
    n = rgb.shape[0]
    models = _models(maps_by_model, figure, "maps_by_model")
    maps = []
    counts = {"images": bad_img}
    for label, mp, _ in models:
        a = _array(mp, figure, f"maps {label!r}", ndim=3)
        if a.shape != (n, raw_h, raw_w):
            raise TffdVizError(
                f"{figure}: maps of model {label!r} must have shape (n, H, W) = {(n, raw_h, raw_w)}, "
                f"got {a.shape}"
            )
        counts[f"maps {label}"] = _bad(a)
        maps.append((label, _downsample(a, max_side)))
    if titles is not None and len(titles) != n:
        raise TffdVizError(f"{figure}: titles has {len(titles)} entries for {n} images")
    rows = min(n, max(1, max_images))
    if rows == 0:
        return _empty_figure(title, "no images to show")
    ncols = 1 + len(maps)
    gray = rgb[:rows].astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0
    subtitles: list[str] = []
    for i in range(rows):
        subtitles.append(str(titles[i]) if titles is not None else f"image {i}")
        subtitles += [""] * len(maps)  # the model columns are headed once, at the top
    tile_px, gap_px = 170, 28
    height = min(2400, 150 + (tile_px + gap_px) * rows)
    fig = make_subplots(
        rows=rows,
        cols=ncols,
        subplot_titles=subtitles,
        horizontal_spacing=0.03,
        vertical_spacing=min(0.3 / rows, gap_px / max(1, height - 150)) if rows > 1 else 0.0,
    )
    shown = np.concatenate([m[:rows].ravel() for _, m in maps])
    finite = shown[np.isfinite(shown)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    diverging = lo < 0
    for i in range(rows):
        fig.add_trace(
            go.Image(z=rgb[i], name=f"image {i}", hovertemplate="x %{x}, y %{y}<br>RGB %{z}<extra></extra>"),
            row=i + 1,
            col=1,
        )
        for j, (label, m) in enumerate(maps):
            fig.add_trace(
                go.Heatmap(
                    z=gray[i],
                    colorscale="gray",
                    zmin=0,
                    zmax=1,
                    showscale=False,
                    hoverinfo="skip",
                    name="input (grayscale)",
                ),
                row=i + 1,
                col=j + 2,
            )
            fig.add_trace(
                go.Heatmap(
                    z=m[i],
                    coloraxis="coloraxis",
                    opacity=opacity,
                    name=f"{label} attribution",
                    hovertemplate=f"<b>{label}</b> image {i}<br>x %{{x}}, y %{{y}}"
                    "<br>attribution %{z:.3g}<extra></extra>",
                ),
                row=i + 1,
                col=j + 2,
            )
    if diverging:
        bound = max(abs(lo), abs(hi)) or 1.0
        axis = {"colorscale": "RdBu_r", "cmin": -bound, "cmax": bound, "cmid": 0}
    else:
        axis = {"colorscale": "Hot", "cmin": lo, "cmax": hi if hi > lo else lo + 1.0}
    fig.update_layout(coloraxis={**axis, "colorbar": {"title": "attribution"}})
    _image_tiles(fig)
    _layout(
        fig,
        title + (f" (first {rows} of {n})" if rows < n else ""),
        height=height,
        width=max(420, 80 + 200 * ncols),
        showlegend=False,
    )
    for j, head in enumerate(["input"] + [model_key(label) for label, _ in maps]):
        xd = fig.layout[_axis_ref("x" if j == 0 else f"x{j + 1}", "x")].domain
        _paper_note(
            fig,
            "column",
            f"<b>{head}</b>",
            x=(xd[0] + xd[1]) / 2,
            y=1.0,
            font={"size": 13, "color": "#333333"},
            xanchor="center",
            yanchor="bottom",
            yshift=22,
        )
    fig.update_layout(margin={"t": 100, "b": 40})
    _caption(fig, _models_caption([label for label, _ in maps]), name="models")
    return _nonfinite_note(fig, counts)


def disagreement_gallery_figure(
    images: ArrayLike,
    titles: Sequence[str] | None = None,
    cols: int = 6,
    title: str = "Test images on which the models disagree",
    max_images: int = 32,
    max_side: int = 32,
) -> go.Figure:
    """A grid of small images with titles such as ``"true 3 · A 3 · B 5"``.

    Parameters
    ----------
    images : array (n, C, H, W) or (n, H, W), values in [0, 1]
    titles : sequence of n str, optional
    cols : int
        Images per row. The grid always has ``cols`` columns (fewer images leave the rest of the row
        empty) and the height grows with the number of rows, so a tile keeps its size whether one
        image or many are shown.
    title : str
    max_images : int
        Tiles drawn at most.
    max_side : int
        Larger images are block-averaged down.

    Returns
    -------
    go.Figure
        One ``go.Image`` per tile (uint8 RGB ``z``); an annotated empty figure when ``n == 0``.
    """
    figure = "disagreement_gallery_figure"
    rgb, bad, _ = _images01(images, figure, max_side)
    n = rgb.shape[0]
    if titles is not None and len(titles) != n:
        raise TffdVizError(f"{figure}: titles has {len(titles)} entries for {n} images")
    if n == 0:
        return _empty_figure(title, "no images: the models agree on every sample shown")
    shown = min(n, max(1, max_images))
    cols = max(1, cols)
    rows = math.ceil(shown / cols)
    subtitles = [str(titles[i]) if titles is not None else f"#{i}" for i in range(shown)]
    row_px, gap_px, margins = 130, 26, 85
    height = min(2400, margins + rows * (row_px + gap_px))
    fig = make_subplots(
        rows=rows,
        cols=cols,
        specs=[[{} if r * cols + c < shown else None for c in range(cols)] for r in range(rows)],
        subplot_titles=subtitles,
        horizontal_spacing=0.015,
        vertical_spacing=min(0.3 / rows, gap_px / (height - margins)) if rows > 1 else 0.0,
    )
    for i in range(shown):
        fig.add_trace(
            go.Image(
                z=rgb[i],
                name=subtitles[i],
                hovertemplate=f"{subtitles[i]}<br>x %{{x}}, y %{{y}}<extra></extra>",
            ),
            row=i // cols + 1,
            col=i % cols + 1,
        )
    for ann in fig.layout.annotations:
        ann.font = {"size": 11}
    _image_tiles(fig)
    _layout(
        fig,
        title + (f" (first {shown} of {n})" if shown < n else f" ({n})"),
        height=height,
        showlegend=False,
    )
    fig.update_layout(margin={"b": 25})
    return _nonfinite_note(fig, {"images": bad})


# ----------------------------------------------------------------------------------------------------------
# 14: embeddings
# ----------------------------------------------------------------------------------------------------------


def embedding_figure(
    coords: ArrayLike,
    labels: ArrayLike,
    class_names: Sequence[str] | None = None,
    title: str = "Embedding",
    indices: ArrayLike | None = None,
    axis_names: tuple[str, str] = ("component 1", "component 2"),
) -> go.Figure:
    """2-D scatter of an embedding (t-SNE/UMAP/PCA), coloured by class.

    Parameters
    ----------
    coords : array (N, 2)
    labels : int array (N,)
        Class index of each point.
    class_names : sequence of str, optional
        Name of each class index (default the index).
    title : str
    indices : int array (N,), optional
        Dataset index of each point, for the hover (default 0..N-1).
    axis_names : (str, str)
        Axis titles (e.g. ``("PC 1", "PC 2")``).

    Returns
    -------
    go.Figure
        One scatter trace per class present (ascending class index), discrete colours.
    """
    figure = "embedding_figure"
    xy = _array(coords, figure, "coords", ndim=2)
    if xy.shape[1] != 2:
        raise TffdVizError(f"{figure}: coords must have shape (N, 2), got {xy.shape}")
    lab = _np(labels).reshape(-1)
    if lab.shape[0] != xy.shape[0]:
        raise TffdVizError(f"{figure}: labels has {lab.shape[0]} entries for {xy.shape[0]} points")
    idx = np.arange(xy.shape[0]) if indices is None else _np(indices).reshape(-1)
    if idx.shape[0] != xy.shape[0]:
        raise TffdVizError(f"{figure}: indices has {idx.shape[0]} entries for {xy.shape[0]} points")
    fig = go.Figure()
    for ci, cls in enumerate(sorted(set(lab.tolist()))):
        mask = lab == cls
        name = (
            str(class_names[int(cls)])
            if class_names is not None and 0 <= int(cls) < len(class_names)
            else str(cls)
        )
        fig.add_trace(
            go.Scatter(
                x=xy[mask, 0],
                y=xy[mask, 1],
                mode="markers",
                name=name,
                customdata=idx[mask],
                marker={"size": 5, "color": CLASS_COLORS[ci % len(CLASS_COLORS)], "opacity": 0.8},
                hovertemplate=f"class {name} (label {cls})<br>sample %{{customdata}}<extra></extra>",
            )
        )
    _layout(fig, title, x_title=axis_names[0], y_title=axis_names[1], legend_title="class", height=480)
    return _nonfinite_note(fig, {"coords": _bad(xy)})


def _probe_row(row: Any, figure: str, label: str) -> Mapping[str, Any]:
    """A tap -> accuracy dict from either such a dict or a list of probe-table rows."""
    if isinstance(row, Mapping):
        return row
    if isinstance(row, Sequence) and all(isinstance(r, Mapping) and "tap" in r for r in row):
        return {str(r["tap"]): r.get("test_acc") for r in row}
    raise TffdVizError(
        f"{figure}: model {label!r} must map tap -> accuracy or be a list of probe-table rows "
        f"with 'tap' and 'test_acc', got {type(row).__name__}"
    )


def probe_accuracy_figure(
    rows_by_model: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]],
    title: str = "Linear-probe accuracy per layer",
    unit: str = "%",
) -> go.Figure:
    """Linear-probe test accuracy on each layer's features, one line per model.

    Parameters
    ----------
    rows_by_model : dict[str, dict[str, float] or list of dict]
        Label -> tap name -> accuracy, or label -> :func:`tffd_viz.embeddings.probe_table` rows
        (``{"tap": ..., "test_acc": ...}``; their ``test_acc`` is drawn).
    title : str
    unit : str
        Unit of the accuracies (``"%"``, or ``""`` for fractions).

    Returns
    -------
    go.Figure
        One lines+markers trace per model; ``x`` tap names (union, first-appearance order).
    """
    figure = "probe_accuracy_figure"
    models = [
        (label, _probe_row(row, figure, label), color)
        for label, row, color in _models(rows_by_model, figure, "rows_by_model")
    ]
    taps = _union_keys([row for _, row, _ in models])
    fig = go.Figure()
    counts = {}
    for label, row, color in models:
        vals = [_number(row.get(t)) for t in taps]
        counts[label] = sum(b for _, b in vals)
        fig.add_trace(
            go.Scatter(
                x=taps,
                y=[None if not math.isfinite(v) else v for v, _ in vals],
                mode="lines+markers",
                name=label,
                line={"color": color},
                marker={"size": 8},
                hovertemplate=f"<b>{label}</b><br>layer %{{x}}<br>accuracy %{{y:.2f}}{unit}<extra></extra>",
            )
        )
    y_title = f"linear-probe test accuracy ({unit})" if unit else "linear-probe test accuracy"
    _layout(fig, title, x_title="layer (tap)", y_title=y_title, legend_title="model", height=360)
    fig.update_xaxes(type="category")
    return _nonfinite_note(fig, counts)


# ----------------------------------------------------------------------------------------------------------
# 15-16: training history and evolution
# ----------------------------------------------------------------------------------------------------------


def _series(
    history: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], Any]
) -> tuple[list, int]:
    """Values of one quantity over a history (None where missing) and the count of non-finite ones."""
    out: list[float | None] = []
    faults = 0
    for h in history:
        try:
            raw = get(h)
        except (KeyError, TypeError, AttributeError):
            raw = None
        v, bad = _number(raw)
        faults += bad
        out.append(None if not math.isfinite(v) else v)
    return out, faults


def training_curves_figure(
    history_by_model: Mapping[str, Sequence[Mapping[str, Any]] | None],
    title: str = "Training curves",
) -> go.Figure:
    """Per-epoch curves from checkpoint-card histories: CE, Tf-FD terms (log y), accuracy.

    Parameters
    ----------
    history_by_model : dict[str, list of dict]
        Label -> card ``history``: one dict per epoch with (any of) ``epoch``, ``ce``,
        ``intra: {tap: value}``, ``inter: {"a->b": value}``, ``train_acc``, ``test_acc`` (%).
        Missing keys, ``None`` values and ``None``/empty histories are skipped.
    title : str

    Returns
    -------
    go.Figure
        Three panels stacked over a shared epoch axis (cross-entropy, Tf-FD terms with log y,
        accuracy: axes ``x``/``x2``/``x3``), each with its own legend beside it (``legend``,
        ``legend2``, ``legend3``); traces are named ``"<label> · <quantity>"`` (``x`` = ``epoch``, or
        1, 2, ... when absent). A figure with the annotation "no training history in this checkpoint"
        when nothing can be drawn.
    """
    figure = "training_curves_figure"
    models = _models(history_by_model, figure, "history_by_model")
    fig = make_subplots(
        rows=3,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.06,
        row_heights=[0.28, 0.42, 0.30],
        subplot_titles=["cross-entropy", "Tf-FD terms (unweighted, log scale)", "accuracy"],
    )
    legends = {1: "legend", 2: "legend2", 3: "legend3"}
    term_values: list[float | None] = []
    counts: dict[str, int] = {}
    empty: list[str] = []
    drawn = 0
    for label, history, color in models:
        history = list(history or [])
        if history and not all(isinstance(h, Mapping) for h in history):
            raise TffdVizError(f"{figure}: history of {label!r} must be a list of dicts (one per epoch)")
        epochs, _ = _series(history, lambda h: h["epoch"])
        x = [e if e is not None else i + 1 for i, e in enumerate(epochs)]
        series: list[tuple[int, str, list, str, str]] = []
        ce, counts[f"{label} ce"] = _series(history, lambda h: h["ce"])
        series.append((1, "CE", ce, "solid", "CE"))
        for family in ("intra", "inter"):
            names = _union_keys([h.get(family) or {} for h in history if isinstance(h.get(family), Mapping)])
            for t, name in enumerate(names):
                vals, counts[f"{label} {family} {name}"] = _series(
                    history, lambda h, f=family, n=name: (h.get(f) or {}).get(n)
                )
                dash = _TERM_DASHES[t % len(_TERM_DASHES)] if family == "intra" else _TERM_DASHES[(t + 3) % 6]
                series.append((2, f"{family} {name}", vals, dash, "term value"))
        for key, dash in (("train_acc", "dash"), ("test_acc", "solid")):
            vals, counts[f"{label} {key}"] = _series(history, lambda h, k=key: h[k])
            series.append((3, key.replace("_", " "), vals, dash, "accuracy (%)"))
        n_model = 0
        for panel, name, vals, dash, what in series:
            if all(v is None for v in vals):
                continue
            n_model += 1
            if panel == 2:
                term_values += vals
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=vals,
                    mode="lines+markers",
                    name=f"{label} · {name}",
                    legend=legends[panel],
                    legendgroup=f"{label} {panel}",
                    line={"color": color, "dash": dash, "width": 1.8},
                    marker={"size": 4},
                    hovertemplate=f"<b>{label}</b> {name}<br>epoch %{{x}}"
                    f"<br>{what} %{{y:.4g}}<extra></extra>",
                ),
                row=panel,
                col=1,
            )
        drawn += n_model
        if n_model == 0:
            empty.append(label)
    if drawn == 0:
        return _empty_figure(title, "no training history in this checkpoint")
    fig.update_xaxes(title_text="epoch", row=3, col=1)
    fig.update_yaxes(title_text="CE (nats)", row=1, col=1)
    fig.update_yaxes(title_text="MSE (log)", type="log", row=2, col=1)
    fig.update_yaxes(title_text="top-1 (%)", row=3, col=1)
    _log_ticks(fig, term_values, row=2, col=1)
    _layout(fig, title, height=820)
    # one legend beside each panel, top-aligned with it (plotly stacks rows top-down: row 1 = yaxis)
    for panel, name in legends.items():
        top = fig.layout[_axis_ref("y" if panel == 1 else f"y{panel}", "y")].domain[1]
        fig.update_layout({name: {"x": 1.01, "xanchor": "left", "y": top, "yanchor": "top",
                                  "font": {"size": 11, "color": "#333333"}, "tracegroupgap": 6,
                                  "groupclick": "toggleitem"}})
    if empty:
        _paper_note(
            fig,
            "empty",
            f"no training history for: {', '.join(empty)}",
            x=0,
            y=1.0,
            font={"size": 11},
            xanchor="left",
            yanchor="bottom",
            yshift=22,
        )
    return _nonfinite_note(fig, counts)


def rank_evolution_figure(
    ranks: ArrayLike,
    title: str = "Saliency rank over training",
    epochs: Sequence[Any] | None = None,
) -> go.Figure:
    """Heatmap of each channel's saliency rank per epoch, channels sorted by their final rank.

    Parameters
    ----------
    ranks : array (E, C)
        ``ranks[e, c]`` = rank of channel ``c`` at the ``e``-th recorded epoch (any convention,
        low = salient).
    title : str
    epochs : sequence of E values, optional
        Epoch numbers (default 1..E).

    Returns
    -------
    go.Figure
        One heatmap with ``z[i, e] = ranks[e, channel_i]`` where ``channel_i`` is the channel with the
        ``i``-th lowest final rank (``customdata`` holds the channel index).
    """
    figure = "rank_evolution_figure"
    r = _array(ranks, figure, "ranks", ndim=2)
    e, c = r.shape
    ep = list(range(1, e + 1)) if epochs is None else list(epochs)
    if len(ep) != e:
        raise TffdVizError(f"{figure}: epochs has {len(ep)} entries for ranks of shape {r.shape}")
    final = r[-1] if e else np.zeros(c)
    order = np.argsort(np.where(np.isfinite(final), final, np.inf), kind="stable")
    z = r[:, order].T
    custom = np.repeat(order[:, None], e, axis=1)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=ep,
            y=np.arange(c),
            customdata=custom,
            colorscale="Viridis_r",
            colorbar={"title": "rank (0 = most salient)"},
            hovertemplate="channel %{customdata}<br>epoch %{x}<br>rank %{z}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed")
    if c >= 2:
        fig.add_hline(y=c // 2 - 0.5, line_dash="dash", line_color="#FFFFFF", line_width=1, name="boundary")
    _layout(
        fig,
        title,
        x_title="epoch",
        y_title="channel (sorted by final rank)",
        height=max(320, min(900, 120 + 6 * c)),
    )
    return _nonfinite_note(fig, {"ranks": _bad(r)})


def crossings_figure(
    rows_by_model: Mapping[str, Sequence[Mapping[str, Any]]],
    title: str = "Ranking stability over training",
) -> go.Figure:
    """Boundary crossings and rank correlation per epoch, one line per model.

    Parameters
    ----------
    rows_by_model : dict[str, list of dict]
        Label -> one dict per epoch ``{"epoch", "crossings", "spearman"}``: number of channels that
        crossed the salient/redundant boundary, and the Spearman correlation of the ranking (with the
        previous or final epoch, as computed by the caller).
    title : str

    Returns
    -------
    go.Figure
        Two panels (crossings | Spearman); traces ``"<label> · crossings"``, ``"<label> · spearman"``;
        the legend is a band below the panels.
    """
    figure = "crossings_figure"
    models = _models(rows_by_model, figure, "rows_by_model")
    fig = make_subplots(
        rows=1,
        cols=2,
        horizontal_spacing=0.1,
        subplot_titles=["channels crossing the salient/redundant boundary", "rank correlation"],
    )
    counts: dict[str, int] = {}
    drawn = 0
    for label, rows, color in models:
        rows = list(rows or [])
        epochs, _ = _series(rows, lambda h: h["epoch"])
        x = [v if v is not None else i + 1 for i, v in enumerate(epochs)]
        for col, key in ((1, "crossings"), (2, "spearman")):
            vals, counts[f"{label} {key}"] = _series(rows, lambda h, k=key: h[k])
            if all(v is None for v in vals):
                continue
            drawn += 1
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=vals,
                    mode="lines+markers",
                    name=f"{label} · {key}",
                    legendgroup=label,
                    line={"color": color, "dash": "solid" if col == 1 else "dot"},
                    hovertemplate=f"<b>{label}</b><br>epoch %{{x}}<br>{key} %{{y:.3g}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    if drawn == 0:
        return _empty_figure(title, "no per-epoch saliency in these checkpoints")
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="crossings (channels)", row=1, col=1)
    fig.update_yaxes(title_text="Spearman ρ", row=1, col=2)
    _layout(fig, title, height=360)
    _legend_below(fig, [tr.name for tr in fig.data], width=800)
    return _nonfinite_note(fig, counts)


# ----------------------------------------------------------------------------------------------------------
# 17-18: predictions and accuracy
# ----------------------------------------------------------------------------------------------------------


def confusion_figure(
    matrix: ArrayLike,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix",
    normalize: bool = False,
    annotate_max: int = 20,
) -> go.Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted class).

    Parameters
    ----------
    matrix : array (K, K)
        Counts; ``matrix[i, j]`` = samples of class ``i`` predicted as ``j``.
    class_names : sequence of K str, optional
    title : str
    normalize : bool
        Show each row as % of the class's samples instead of counts.
    annotate_max : int
        Cells are annotated when ``K <= annotate_max``.

    Returns
    -------
    go.Figure
        One heatmap, ``z`` = ``matrix`` (or its row percentages), ``customdata`` = counts.
    """
    figure = "confusion_figure"
    m = _array(matrix, figure, "matrix", ndim=2)
    k = m.shape[0]
    if m.shape != (k, k):
        raise TffdVizError(f"{figure}: matrix must be square (K, K), got shape {m.shape}")
    names = _names(class_names, k, figure, "class_names")
    if normalize:
        total = np.nansum(m, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            z = np.where(total > 0, 100.0 * m / total, np.nan)
        ztitle, zfmt, text = "% of true class", "%{z:.1f} %", _cell_text(z, ".0f")
    else:
        z = m
        ztitle, zfmt, text = "samples", "%{z:.0f}", [[_fmt(v, 6) for v in row] for row in m]
    kw: dict[str, Any] = {"text": text, "texttemplate": "%{text}"} if k <= annotate_max else {}
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            colorscale="Blues",
            colorbar={"title": ztitle},
            customdata=m,
            hovertemplate=f"true %{{y}}<br>predicted %{{x}}<br>{zfmt}"
            " (%{customdata:.0f} samples)<extra></extra>",
            **kw,
        )
    )
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", autorange="reversed", scaleanchor="x", constrain="domain")
    _layout(
        fig, title, x_title="predicted class", y_title="true class", height=max(360, min(900, 160 + 28 * k))
    )
    return _nonfinite_note(fig, {"matrix": _bad(m)})


def accuracy_seeds_figure(
    rows: Sequence[Mapping[str, Any]],
    value: str = "acc",
    config: str = "config",
    title: str = "Accuracy over seeds",
    unit: str = "%",
) -> go.Figure:
    """Per configuration: each seed's accuracy and the mean ± sample standard deviation.

    Parameters
    ----------
    rows : list of dict
        One row per run: ``{"config": "tffd", "seed": 0, "acc": 91.3}``.
    value, config : str
        Column names of the accuracy and the configuration.
    title : str
    unit : str

    Returns
    -------
    go.Figure
        Trace 0 ``"seeds"``: one marker per finite run; trace 1 ``"mean ± std"``: per configuration
        (first-appearance order) the mean with error bar = sample std (ddof 1; 0 for a single seed).
    """
    figure = "accuracy_seeds_figure"
    if not rows:
        raise TffdVizError(
            f"{figure}: rows is empty; give one dict per run with {config!r}, 'seed', {value!r}"
        )
    groups: dict[str, list[tuple[Any, float]]] = {}
    faults = 0
    for i, row in enumerate(rows):
        if config not in row:
            raise TffdVizError(f"{figure}: row {i} has no column {config!r}; its columns are {sorted(row)}")
        v, bad = _number(row.get(value))
        faults += bad
        groups.setdefault(str(row[config]), [])
        if math.isfinite(v):
            groups[str(row[config])].append((row.get("seed"), v))
    names = list(groups)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[n for n in names for _ in groups[n]],
            y=[v for n in names for _, v in groups[n]],
            customdata=[str(s) for n in names for s, _ in groups[n]],
            mode="markers",
            name="seeds",
            marker={"size": 8, "color": "#999999", "opacity": 0.7},
            hovertemplate=f"%{{x}}<br>seed %{{customdata}}<br>{value} %{{y:.2f}}{unit}<extra></extra>",
        )
    )
    means = [float(np.mean([v for _, v in groups[n]])) if groups[n] else None for n in names]
    stds = [float(np.std([v for _, v in groups[n]], ddof=1)) if len(groups[n]) >= 2 else 0.0 for n in names]
    counts_n = [len(groups[n]) for n in names]
    colors = [model_color(n, i) for i, n in enumerate(names)]
    fig.add_trace(
        go.Scatter(
            x=names,
            y=means,
            mode="markers",
            name="mean ± std",
            error_y={"type": "data", "array": stds, "visible": True},
            marker={"size": 13, "symbol": "diamond", "color": colors},
            customdata=np.stack([stds, counts_n], axis=1),
            hovertemplate=f"%{{x}}<br>mean %{{y:.2f}}{unit} ± %{{customdata[0]:.2f}}"
            "<br>seeds %{customdata[1]}"
            "<extra></extra>",
        )
    )
    fig.update_xaxes(type="category")
    y_title = f"top-1 accuracy ({unit})" if unit else "top-1 accuracy"
    _layout(fig, title, x_title="configuration", y_title=y_title, height=380)
    return _nonfinite_note(fig, {value: faults})


FIGURE_FUNCTIONS: dict[str, Callable[..., go.Figure]] = {
    "saliency_bars": saliency_bars_figure,
    "rank_agreement": rank_agreement_figure,
    "rank_band": rank_band_figure,
    "split_stability": split_stability_figure,
    "terms_bar": terms_bar_figure,
    "weighted_contributions": weighted_contributions_figure,
    "grad_share": grad_share_figure,
    "sweep_heatmap": sweep_heatmap_figure,
    "feature_maps": feature_maps_figure,
    "paired_maps": paired_maps_figure,
    "cosine_matrix": cosine_matrix_figure,
    "paired_similarity": paired_similarity_figure,
    "alignment": alignment_figure,
    "cka_heatmap": cka_heatmap_figure,
    "cka_grid": cka_grid_figure,
    "attribution": attribution_figure,
    "embedding": embedding_figure,
    "probe_accuracy": probe_accuracy_figure,
    "training_curves": training_curves_figure,
    "rank_evolution": rank_evolution_figure,
    "crossings": crossings_figure,
    "confusion": confusion_figure,
    "disagreement_gallery": disagreement_gallery_figure,
    "accuracy_seeds": accuracy_seeds_figure,
}
"""Every figure function by short name (``"saliency_bars"`` -> :func:`saliency_bars_figure`)."""

# The noise-reference and what-if figures live in their own modules; every figure is reachable as tffd_viz.plots.<fn>.
from tffd_viz.noise_plots import *  # noqa: E402,F403
from tffd_viz.noise_plots import __all__ as _noise_all  # noqa: E402
from tffd_viz.plots_whatif import *  # noqa: E402,F403
from tffd_viz.plots_whatif import __all__ as _whatif_all  # noqa: E402

__all__ += [*_noise_all, *_whatif_all]
