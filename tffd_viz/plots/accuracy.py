"""Figures of where the models err: confusion matrices, per-class errors and accuracy over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    _cell_text,
    _color_axis,
    _grouped_layout,
    _heatmap,
    _heatmap_figure,
    _layout,
    _nonfinite_note,
    model_color,
)
from tffd_viz.plots._inputs import _array, _bad, _names, _np, _number, _percent
from tffd_viz.types import ArrayLike

__all__ = [
    "ERROR_BARS_ABOVE",
    "accuracy_breakdown_figure",
    "accuracy_seeds_figure",
    "class_error_figure",
    "confusion_figure",
    "confusion_pair_figure",
]

ERROR_BARS_ABOVE: float = 99.0
"""Accuracy (%) that every model must reach for :func:`accuracy_breakdown_figure` to draw per-class errors."""

_ANNOTATE_MAX = 20
"""Most classes whose confusion-matrix cells are annotated with their value."""


def confusion_figure(
    matrix: ArrayLike,
    class_names: Sequence[str] | None = None,
    title: str = "Confusion matrix",
    normalize: bool = False,
    annotate_max: int = _ANNOTATE_MAX,
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
        z = _percent(m, np.nansum(m, axis=1, keepdims=True))
        ztitle, zfmt, text = "% of true class", "%{z:.1f} %", _cell_text(z, ".0f")
    else:
        z = m
        ztitle, zfmt, text = "samples", "%{z:.0f}", _cell_text(m, ".6g")
    trace = _heatmap(
        z,
        names,
        names,
        f"true %{{y}}<br>predicted %{{x}}<br>{zfmt} (%{{customdata:.0f}} samples)<extra></extra>",
        text if k <= annotate_max else None,
        colorscale="Blues",
        colorbar={"title": ztitle},
        customdata=m,
    )
    height = max(360, min(900, 160 + 28 * k))
    fig = _heatmap_figure(trace, title, "predicted class", "true class", height, {"matrix": _bad(m)})
    fig.update_xaxes(type="category")
    fig.update_yaxes(type="category", scaleanchor="x", constrain="domain")
    return fig


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


def _confusions(confusions: Mapping[str, Any], figure: str) -> list[tuple[str, np.ndarray]]:
    """``(label, counts (K, K) as float)`` per model; raises on an empty dict or a non-square matrix."""
    out = []
    for label, m in confusions.items():
        a = np.asarray(_np(m), dtype=float)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise TffdVizError(
                f"{figure}: confusion matrix of {label!r} must be square (K, K), got {a.shape}"
            )
        out.append((str(label), a))
    if not out:
        raise TffdVizError(f"{figure}: confusions is empty; give e.g. {{'A': matrix_a, 'B': matrix_b}}")
    return out


def class_error_figure(
    confusions: Mapping[str, Any], class_names: Sequence[str], title: str | None = None
) -> go.Figure:
    """Per-class error (%) of each model, grouped bars: compact where accuracies are near 100 %.

    Parameters
    ----------
    confusions : dict label -> array (K, K)
        Counts, rows = true class.
    class_names : K str

    Returns
    -------
    go.Figure
        One bar trace per model, ``y[k] = 100 * (1 - m[k, k] / m[k].sum())`` (NaN for an absent class);
        ``customdata`` the wrong and total counts.
    """
    mats = _confusions(confusions, "class_error_figure")
    fig = go.Figure()
    for pos, (label, m) in enumerate(mats):
        total = m.sum(axis=1)
        wrong = total - np.diag(m)
        fig.add_bar(
            x=list(class_names),
            y=_percent(wrong, total),
            name=label,
            marker_color=model_color(label, pos),
            customdata=np.stack([wrong, total], axis=1),
            hovertemplate=f"{label}<br>class %{{x}}: %{{y:.1f}} % wrong "
            "(%{customdata[0]:.0f} of %{customdata[1]:.0f})<extra></extra>",
        )
    fig.update_xaxes(type="category", title_text="true class")
    fig.update_yaxes(title_text="error (% of the class)", rangemode="tozero")
    n_wrong = ", ".join(f"{label} {int(m.sum() - np.trace(m))}" for label, m in mats)
    return _grouped_layout(fig, title or f"Errors per class (images wrong: {n_wrong})", 320)


def confusion_pair_figure(
    confusions: Mapping[str, Any],
    class_names: Sequence[str],
    normalize: bool = True,
    title: str = "Confusion matrices (rows = true class)",
) -> go.Figure:
    """Confusion matrices of several models side by side in one figure, on one colour scale.

    Parameters
    ----------
    confusions : dict label -> array (K, K)
    class_names : K str
    normalize : bool
        Cells as % of the true class (else counts).

    Returns
    -------
    go.Figure
        One heatmap per model (``z`` the percentages or counts), one shared colour bar.
    """
    mats = _confusions(confusions, "confusion_pair_figure")
    fig = make_subplots(
        rows=1, cols=len(mats), subplot_titles=[label for label, _ in mats], horizontal_spacing=0.06
    )
    zs = [_percent(m, m.sum(axis=1, keepdims=True)) if normalize else m for _, m in mats]
    zmax = max(float(np.nanmax(z)) if np.isfinite(z).any() else 1.0 for z in zs)
    names = list(class_names)
    annotate = len(names) <= _ANNOTATE_MAX
    for col, ((label, m), z) in enumerate(zip(mats, zs), start=1):
        trace = _heatmap(
            z,
            names,
            names,
            (
                f"{label}<br>true %{{y}}, predicted %{{x}}: %{{z:.1f}} "
                "(%{customdata:.0f} images)<extra></extra>"
            ),
            _cell_text(z, ".0f", blank_zero=True) if annotate else None,
            coloraxis="coloraxis",
            customdata=m,
        )
        fig.add_trace(trace, row=1, col=col)
        fig.update_xaxes(type="category", title_text="predicted class", row=1, col=col)
        fig.update_yaxes(type="category", autorange="reversed", row=1, col=col)
    _color_axis(fig, "Blues", 0, zmax, "% of class" if normalize else "images")
    return _grouped_layout(fig, title, max(380, min(800, 140 + 26 * len(names))))


def accuracy_breakdown_figure(
    confusions: Mapping[str, Any],
    class_names: Sequence[str],
    normalize: bool = True,
    title: str | None = None,
    error_bars_above: float = ERROR_BARS_ABOVE,
) -> go.Figure:
    """Where the models err, in the figure that shows it: per-class errors when every model is near 100 %,
    else the confusion matrices side by side.

    Parameters
    ----------
    confusions : dict label -> array (K, K)
        Counts, rows = true class.
    class_names : K str
    normalize : bool
        Matrix cells as % of the true class (else counts); unused by the per-class errors.
    title : str, optional
        Figure title (default: that of the figure drawn).
    error_bars_above : float
        Accuracy (%), ``100 * trace(m) / m.sum()``, that every model must reach for
        :func:`class_error_figure`; below it for any model, :func:`confusion_pair_figure`.

    Returns
    -------
    go.Figure
        :func:`class_error_figure` or :func:`confusion_pair_figure` of ``confusions``.
    """
    mats = _confusions(confusions, "accuracy_breakdown_figure")
    accuracies = [100.0 * float(np.trace(m)) / float(m.sum()) if m.sum() > 0 else 0.0 for _, m in mats]
    if min(accuracies) >= error_bars_above:
        return class_error_figure(confusions, class_names, title=title)
    kw = {"title": title} if title is not None else {}
    return confusion_pair_figure(confusions, class_names, normalize=normalize, **kw)
