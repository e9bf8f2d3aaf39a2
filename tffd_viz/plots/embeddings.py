"""Figures of the Embeddings page: 2-D embeddings of a layer's features and linear-probe accuracy per
layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import CLASS_COLORS, _layout, _nonfinite_note
from tffd_viz.plots._inputs import _array, _bad, _models, _np, _series, _union_keys
from tffd_viz.types import ArrayLike

__all__ = ["embedding_figure", "probe_accuracy_figure"]


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
        y, counts[label] = _series([row.get(t) for t in taps])
        fig.add_trace(
            go.Scatter(
                x=taps,
                y=y,
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
