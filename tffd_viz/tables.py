"""Table rows of the app's pages: every table a page shows (and downloads as CSV), built from library results.

Each function takes results keyed by how the page names the model (e.g. ``"A · digits_resnet8_baseline_s0"``)
and returns rows as dicts, one key per column in column order, plain Python numbers and strings only (ready
for ``pandas.DataFrame(rows)`` and CSV). Nothing here computes anything a table does not show.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tffd_viz.errors import TffdVizError
from tffd_viz.types import ArrayLike

__all__ = [
    "alignment_rows",
    "cka_matrix_rows",
    "criterion_score_rows",
    "disagreement_rows",
    "labelled_rows",
    "paired_cosine_rows",
    "prediction_titles",
    "rank_change_rows",
    "rank_stability_rows",
    "ranking_rows",
    "seed_group_rows",
    "seed_runs",
    "term_curve_rows",
    "term_rows",
]

Rows = list[dict[str, Any]]


def _ints(values: ArrayLike) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def labelled_rows(rows_by_model: Mapping[str, Sequence[Mapping[str, Any]]]) -> Rows:
    """Every model's rows in one table, each led by a ``"model"`` column.

    Parameters
    ----------
    rows_by_model : mapping model label -> rows (dicts)

    Returns
    -------
    list of dict
        ``{"model": label, **row}`` for every row of every model, in order.
    """
    return [{"model": model, **row} for model, rows in rows_by_model.items() for row in rows]


def prediction_titles(
    positions: ArrayLike,
    labels: ArrayLike,
    preds: Mapping[str, ArrayLike],
    classes: Sequence[str],
    numbered: bool = False,
) -> list[str]:
    """One title per image: its true class and each model's prediction (``"true 3 · A 3 · B 5"``).

    Parameters
    ----------
    positions : int array (m,)
        Batch positions of the images.
    labels : int array (n,)
        True classes of the whole batch.
    preds : mapping model key -> int array (n,)
        Predicted classes of the whole batch.
    classes : sequence of str
        Class names.
    numbered : bool
        Start each title with the batch position (``"#4 · true 3 · ..."``).
    """
    labels_, preds_ = _ints(labels), {k: _ints(p) for k, p in preds.items()}
    return [
        " · ".join(
            ([f"#{i}"] if numbered else [])
            + [f"true {classes[labels_[i]]}"]
            + [f"{k} {classes[p[i]]}" for k, p in preds_.items()]
        )
        for i in _ints(positions)
    ]


def disagreement_rows(
    positions: ArrayLike,
    indices: ArrayLike,
    labels: ArrayLike,
    preds: Mapping[str, ArrayLike],
    classes: Sequence[str],
    split: str,
) -> Rows:
    """The images on which the models disagree: batch position, index in the split, true class, predictions.

    Parameters
    ----------
    positions : int array (m,)
        Batch positions (e.g. :func:`tffd_viz.summary.disagreements`).
    indices : int array (m,)
        Their indices in the dataset split.
    labels, preds : int arrays (n,) of the whole batch (``preds``: one per model key)
    classes : sequence of str
    split : str
        Split name, for the index column (``"test index"``).
    """
    labels_, preds_ = _ints(labels), {k: _ints(p) for k, p in preds.items()}
    return [
        {
            "batch position": i,
            f"{split} index": index,
            "true": classes[labels_[i]],
            **{k: classes[p[i]] for k, p in preds_.items()},
        }
        for i, index in zip(_ints(positions), _ints(indices), strict=True)
    ]


def seed_runs(groups: Sequence[Mapping[str, Any]]) -> Rows:
    """One row per seed of every group of :func:`tffd_viz.summary.seed_groups`:
    ``{"config", "seed", "acc"}``."""
    return [
        {"config": g["config"], "seed": s, "acc": a} for g in groups for s, a in zip(g["seeds"], g["accs"])
    ]


def seed_group_rows(groups: Sequence[Mapping[str, Any]]) -> Rows:
    """The groups of :func:`tffd_viz.summary.seed_groups`, their seeds and accuracies as text
    (``"0, 1, 2"``)."""
    return [
        {**g, "seeds": ", ".join(map(str, g["seeds"])), "accs": ", ".join(f"{a:.2f}" for a in g["accs"])}
        for g in groups
    ]


def ranking_rows(rankings: Mapping[str, Any]) -> Rows:
    """Every channel of every model's ranking (:meth:`tffd_viz.importance.Ranking.rows`), by model label."""
    return [row for model, ranking in rankings.items() for row in ranking.rows(model=model)]


def criterion_score_rows(scores: Mapping[str, Mapping[str, ArrayLike]]) -> Rows:
    """Every criterion's score of every channel: ``{"model", "criterion", "channel", "score"}``.

    Parameters
    ----------
    scores : mapping model label -> criterion name -> scores (C,)
    """
    return [
        {"model": model, "criterion": name, "channel": c, "score": float(v)}
        for model, by_name in scores.items()
        for name, values in by_name.items()
        for c, v in enumerate(np.asarray(values, dtype=float).reshape(-1))
    ]


def rank_stability_rows(stability: Mapping[str, Mapping[str, Any]]) -> Rows:
    """The bootstrap interval and split probabilities of every channel of every model.

    Parameters
    ----------
    stability : mapping model label -> :func:`tffd_viz.importance.tap_rank_stability` result (``rank``,
        ``lower``, ``upper`` (C,) ints, ``p_salient``, ``p_redundant``, ``p_same_half`` (C,) floats)
    """
    return [
        {
            "model": model,
            "channel": c,
            "rank": int(s["rank"][c]),
            "lower": int(s["lower"][c]),
            "upper": int(s["upper"][c]),
            "p_salient": float(s["p_salient"][c]),
            "p_redundant": float(s["p_redundant"][c]),
            "p_same_half": float(s["p_same_half"][c]),
        }
        for model, s in stability.items()
        for c in range(len(s["rank"]))
    ]


def paired_cosine_rows(views: Mapping[str, Mapping[str, Any]]) -> Rows:
    """The cosine of each salient channel with its redundant partner (rank ``i`` with rank ``C - C//2 + i``).

    Parameters
    ----------
    views : mapping model label -> :func:`tffd_viz.similarity.channel_similarity_views` result (``order`` (C,)
        channels by saliency, ``paired`` (C//2,) cosines)
    """
    rows: Rows = []
    for model, view in views.items():
        order = _ints(view["order"])
        c, half = len(order), len(order) // 2
        rows += [
            {
                "model": model,
                "pair": i,
                "salient channel": order[i],
                "redundant channel": order[c - half + i],
                "cosine": float(value),
            }
            for i, value in enumerate(np.asarray(view["paired"]).reshape(-1))
        ]
    return rows


def alignment_rows(alignments: Mapping[str, Mapping[str, ArrayLike]]) -> Rows:
    """Channel ``c`` of a shallow stage against channel ``c`` of a deep one: ``{"model", "pair", "channel",
    "cosine"}``.

    Parameters
    ----------
    alignments : mapping model label -> ``"a->b"`` -> cosines (C,)
        (:func:`tffd_viz.similarity.inter_layer_alignments`).
    """
    return [
        {"model": model, "pair": pair, "channel": c, "cosine": float(value)}
        for model, pairs in alignments.items()
        for pair, values in pairs.items()
        for c, value in enumerate(np.asarray(values, dtype=float).reshape(-1))
    ]


def rank_change_rows(changes: Mapping[str, Sequence[Mapping[str, Any]]]) -> Rows:
    """The rows of :func:`tffd_viz.dynamics.rank_change_stats` of every model, the channels that entered and
    left the salient half written as text (``"3 7 12"``)."""
    return labelled_rows(
        {
            model: [
                {
                    **row,
                    "entered": " ".join(map(str, row["entered"])),
                    "left": " ".join(map(str, row["left"])),
                }
                for row in rows
            ]
            for model, rows in changes.items()
        }
    )


def term_curve_rows(curves: Mapping[str, Mapping[str, ArrayLike]]) -> Rows:
    """One row per model and epoch of :func:`tffd_viz.dynamics.term_curves` (every curve a column).

    Parameters
    ----------
    curves : mapping model label -> curve name -> values (E,) (one of them ``"epoch"``)
    """
    rows: Rows = []
    for model, named in curves.items():
        arrays = {name: np.asarray(values, dtype=float).reshape(-1) for name, values in named.items()}
        rows += [
            {"model": model, **{name: float(values[i]) for name, values in arrays.items()}}
            for i in range(len(arrays["epoch"]))
        ]
    return rows


def term_rows(
    reports: Mapping[str, Any],
    lambda_intra: float,
    lambda_inter: float,
    picked: Mapping[str, tuple[Sequence[str], Sequence[str]]],
) -> Rows:
    """Every Tf-FD term of every model, whether the chosen stages and pairs put it in the loss, and its
    weight.

    Parameters
    ----------
    reports : mapping model label -> :class:`tffd_viz.terms.TermsReport`
    lambda_intra, lambda_inter : float
    picked : mapping model label -> (stages, pairs) in the loss (each a subset of that report's terms)

    Returns
    -------
    list of dict
        ``{"model", "term", "kind", "value", "in loss", "weighted"}``; ``weighted`` is None for a term left
        out.
    """
    rows: Rows = []
    for model, report in reports.items():
        stages, pairs = picked[model]
        used = {
            row["term"]: row["weighted"]
            for row in report.rows(lambda_intra, lambda_inter, stages=stages, pairs=pairs)
        }
        rows += [
            {
                "model": model,
                "term": row["term"],
                "kind": row["kind"],
                "value": row["value"],
                "in loss": row["term"] in used,
                "weighted": used.get(row["term"]),
            }
            for row in report.rows(lambda_intra, lambda_inter)
        ]
    return rows


def cka_matrix_rows(
    matrix: ArrayLike, rows: Sequence[str], cols: Sequence[str], row_model: str, col_model: str
) -> Rows:
    """A layer x layer CKA matrix as rows: ``{"<row_model> layer": name, "<col_model> <col>": value, ...}``.

    Parameters
    ----------
    matrix : array (R, K)
    rows, cols : layer names of the R rows and K columns
    row_model, col_model : str
        The models the rows and columns come from (``"A"``, ``"B"``).

    Raises
    ------
    TffdVizError
        When the matrix is not ``(len(rows), len(cols))``.
    """
    values = np.asarray(matrix, dtype=float)
    if values.shape != (len(rows), len(cols)):
        raise TffdVizError(
            f"a CKA matrix of shape {values.shape} for {len(rows)} row and {len(cols)} column layers"
        )
    return [
        {
            f"{row_model} layer": name,
            **{f"{col_model} {c}": float(v) for c, v in zip(cols, line, strict=True)},
        }
        for name, line in zip(rows, values, strict=True)
    ]
