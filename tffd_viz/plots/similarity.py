"""Figures of the Similarity and CKA pages: channel cosines, inter-layer alignment and layer-to-layer CKA."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    _cell_text,
    _color_axis,
    _empty_figure,
    _heatmap,
    _heatmap_figure,
    _layout,
    _nonfinite_note,
    _tap_suffix,
)
from tffd_viz.plots._inputs import _array, _bad, _models, _names, _permutation, _union_keys
from tffd_viz.types import ArrayLike

__all__ = [
    "alignment_figure",
    "cka_grid_figure",
    "cka_heatmap_figure",
    "cosine_matrix_figure",
    "paired_similarity_figure",
]


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
    o = np.arange(c) if order is None else _permutation(order, c, figure)
    z = z if order is None else z[o][:, o]
    trace = _heatmap(
        z,
        None,
        None,
        "channel %{customdata[0]} vs channel %{customdata[1]}<br>cosine %{z:.3f}<extra></extra>",
        zmin=-1,
        zmax=1,
        zmid=0,
        colorscale="RdBu_r",
        colorbar={"title": "cosine"},
        customdata=np.stack(np.meshgrid(o, o, indexing="ij"), axis=-1),
    )
    axis = (
        "channel position (sorted by saliency, most salient first)" if order is not None else "channel index"
    )
    fig = _heatmap_figure(trace, title, axis, axis, 520, {"matrix": _bad(z)}, square=True)
    if split_at is None and order is not None:
        split_at = c // 2
    if mark_split and split_at is not None and 0 < split_at < c:
        cuts = [split_at] + (
            [c - split_at] if c - split_at != split_at and order is not None and split_at == c // 2 else []
        )
        line = {"line_color": "#111111", "line_width": 1.5, "line_dash": "dash", "name": "split"}
        for cut in cuts:
            fig.add_hline(y=cut - 0.5, **line)
            fig.add_vline(x=cut - 0.5, **line)
    return fig


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
    z: np.ndarray, names_a: list[str], names_b: list[str], label_a: str, label_b: str, **color: Any
) -> go.Heatmap:
    """Annotated CKA heatmap, rows = ``label_a``'s layers, columns = ``label_b``'s; ``color``: its colour
    keys."""
    hover = f"{label_a} %{{y}} vs {label_b} %{{x}}<br>CKA %{{z:.3f}}<extra></extra>"
    return _heatmap(z, names_b, names_a, hover, _cell_text(z), **color)


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
    trace = _cka_trace(
        z, ya, xb, label_a, label_b, zmin=zmin, zmax=zmax, colorscale="Magma", colorbar={"title": "CKA"}
    )
    height = max(320, 160 + 45 * len(ya))
    return _heatmap_figure(
        trace, title, f"model {label_b} layer", f"model {label_a} layer", height, {"matrix": _bad(z)}
    )


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
        fig.add_trace(_cka_trace(z, ya, xb, la, lb, coloraxis="coloraxis"), row=1, col=j + 1)
        fig.update_xaxes(title_text=f"{lb} layer", row=1, col=j + 1)
        fig.update_yaxes(title_text=f"{la} layer", autorange="reversed", row=1, col=j + 1)
        height = max(height, 160 + 45 * len(ya))
    _color_axis(fig, "Magma", zmin, zmax, "CKA")
    _layout(fig, title, height=height)
    return _nonfinite_note(fig, counts)
