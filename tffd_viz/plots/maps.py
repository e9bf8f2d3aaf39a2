"""Figures of images and feature maps: saliency-ordered maps, intra-Tf-FD pairs, attribution maps,
galleries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tffd_viz.errors import TffdVizError
from tffd_viz.plots._base import (
    LEFT_OUT_COLOR,
    REDUNDANT_COLOR,
    SALIENT_COLOR,
    _axis_ref,
    _caption,
    _color_axis,
    _empty_figure,
    _finite_range,
    _layout,
    _models_caption,
    _nonfinite_note,
    _paper_note,
    model_key,
)
from tffd_viz.plots._inputs import _array, _bad, _models, _permutation
from tffd_viz.types import ArrayLike

__all__ = ["attribution_figure", "disagreement_gallery_figure", "feature_maps_figure", "paired_maps_figure"]


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


def _maps_and_order(maps: ArrayLike, order: ArrayLike, figure: str) -> tuple[np.ndarray, np.ndarray]:
    """``maps`` as a float array ``(C, H, W)`` and ``order`` as an int64 permutation of ``0..C-1``."""
    m = _array(maps, figure, "maps", ndim=3)
    return m, _permutation(order, m.shape[0], figure, f" (maps {m.shape})")


def _tile_heatmap(tile: np.ndarray, channel: int, rank: int, half: str) -> go.Heatmap:
    """One feature-map tile on the shared colour axis, its hover naming the channel, its rank and its half."""
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
    """One Viridis colour axis over the finite values of every tile."""
    lo, hi = _finite_range(np.concatenate([t.ravel() for t in tiles]) if tiles else np.zeros(1))
    _color_axis(fig, "Viridis", lo, hi if hi > lo else lo + 1.0, title)


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


def _images01(images: ArrayLike, figure: str, max_side: int) -> tuple[np.ndarray, int, tuple[int, int]]:
    """``(n, C, H, W)`` or ``(n, H, W)`` in [0, 1] -> uint8 RGB ``(n, H', W', 3)``, non-finite count,
    ``(H, W)``."""
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
    lo, hi = _finite_range(np.concatenate([m[:rows].ravel() for _, m in maps]))
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
    if lo < 0:  # diverging around 0
        bound = max(abs(lo), abs(hi)) or 1.0
        _color_axis(fig, "RdBu_r", -bound, bound, "attribution", cmid=0)
    else:
        _color_axis(fig, "Hot", lo, hi if hi > lo else lo + 1.0, "attribution")
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
