"""Figures of the Losses page: the Tf-FD terms, their weight against cross-entropy, gradients and lambda
sweeps."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    _NICE_NAMES,
    CLASS_COLORS,
    _category_sort_key,
    _cell_text,
    _color_axis,
    _fmt,
    _heatmap,
    _heatmap_figure,
    _layout,
    _log_bars_axis,
    _nonfinite_note,
    _paper_note,
    format_lambda,
)
from tffd_viz.plots._inputs import _array, _bad, _models, _names, _number, _percent, _series, _union_keys
from tffd_viz.types import ArrayLike

__all__ = [
    "COLOR_RANGES",
    "grad_share_figure",
    "sweep_heatmap_figure",
    "terms_bar_figure",
    "weighted_contributions_figure",
]


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
    """One bar trace per model over the union of the (flattened) keys; the non-finite count per model."""
    models = _models(rows_by_model, figure, name)
    flat = [(label, _flat_terms(row), color) for label, row, color in models]
    keys = _union_keys([row for _, row, _ in flat])
    fig = go.Figure()
    counts: dict[str, int] = {}
    for label, row, color in flat:
        y, counts[label] = _series([row.get(k) for k in keys])
        x = [_NICE_NAMES.get(k, k) if nice else k for k in keys]
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
            y, counts[key] = _series([row for _, row, _ in models], key)
            fig.add_trace(
                go.Bar(
                    x=labels,
                    y=y,
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
        z = _percent(n, np.nansum(n, axis=0, keepdims=True))
        text = _cell_text(z, ".1f")
        colorbar, zfmt = "share of group's gradient (%)", "%{z:.1f} %"
        zkw: dict[str, Any] = {"zmin": 0, "zmax": 100}
    elif log_color:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(n > 0, np.log10(n), np.nan)
        text = _cell_text(n, ".3g")
        colorbar, zfmt, zkw = "gradient norm (log10)", "%{customdata:.3g}", {}
    else:
        z = n
        text = _cell_text(n, ".3g")
        colorbar, zfmt, zkw = "gradient norm", "%{z:.3g}", {}
    trace = _heatmap(
        z,
        col_names,
        row_names,
        f"term %{{y}}<br>group %{{x}}<br>{zfmt}<br>norm %{{customdata:.3g}}<extra></extra>",
        text,
        colorscale="Blues",
        colorbar={"title": colorbar},
        customdata=n,
        **zkw,
    )
    height = max(300, 140 + 40 * len(row_names))
    fig = _heatmap_figure(trace, title, "parameter group", "loss term", height, {"norms": bad})
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
        raise TffdVizError(
            f"{figure}: color_range must be one of {sorted(COLOR_RANGES)}, got {color_range!r}"
        )
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
                vals = cells.get((fac, yv, xv)) or []
                n = len(vals)
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
    span = f"{_fmt(lo, '.4g')}–{_fmt(hi, '.4g')}"
    for fi, (z, custom) in enumerate(grids):
        for yi, xi in zip(*np.nonzero(np.isfinite(z) & ((z < lo) | (z > hi)))):
            side = "below" if z[yi, xi] < lo else "above"
            custom[yi, xi, 2] = f"<br>(outlier: {side} the colour range {span})"
        trace = _heatmap(
            z,
            xs,
            ys,
            f"{nice_y} = %{{y}}<br>{nice_x} = %{{x}}<br>mean {value} = %{{z:.3f}}"
            "<br>std over seeds = %{customdata[0]}<br>runs = %{customdata[1]}%{customdata[2]}<extra></extra>",
            _cell_text(z),
            customdata=custom,
            coloraxis="coloraxis",
        )
        if len(facets) > 1:
            fig.add_trace(trace, row=1, col=fi + 1)
        else:
            fig.add_trace(trace)
    bar_title = nice_v
    if outside:
        cells_word = "cell" if outside == 1 else "cells"
        bar_title += (
            f"<br><span style='font-size:11px'>colour clipped to {span};"
            f"<br>{outside} outlier {cells_word} at the ends</span>"
        )
    _color_axis(fig, "Viridis", lo, hi, bar_title)
    fig.update_xaxes(type="category", title_text=nice_x)
    fig.update_yaxes(type="category", title_text=nice_y)
    _layout(fig, title or f"Sweep: mean {value} over seeds", height=max(320, 160 + 40 * len(ys)))
    return _nonfinite_note(fig, {value: faults})
