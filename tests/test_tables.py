"""The table rows of the app's pages (tffd_viz.tables): column names and values from the library results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.importance import tap_rankings
from tffd_viz.summary import disagreements
from tffd_viz.tables import (
    alignment_rows,
    cka_matrix_rows,
    criterion_score_rows,
    disagreement_rows,
    labelled_rows,
    paired_cosine_rows,
    prediction_titles,
    rank_change_rows,
    rank_stability_rows,
    ranking_rows,
    seed_group_rows,
    seed_runs,
    term_curve_rows,
    term_rows,
)
from tffd_viz.terms import TermsReport

CLASSES = ("zero", "one", "two")


def test_predictions_give_titles_and_the_disagreement_table():
    labels = torch.tensor([0, 1, 2, 1])
    preds = {"A": torch.tensor([0, 1, 1, 2]), "B": torch.tensor([0, 2, 2, 0])}
    shown = disagreements(preds["A"], preds["B"], labels)  # positions 1, 2 (one right), then 3 (both wrong)
    assert shown.tolist() == [1, 2, 3]
    assert prediction_titles(shown, labels, preds, CLASSES) == [
        "true one · A one · B two",
        "true two · A one · B two",
        "true one · A two · B zero",
    ]
    assert prediction_titles(np.array([3]), labels, preds, CLASSES, numbered=True) == [
        "#3 · true one · A two · B zero"
    ]
    rows = disagreement_rows(shown, torch.tensor([10, 20, 30]), labels, preds, CLASSES, "test")
    assert rows[2] == {"batch position": 3, "test index": 30, "true": "one", "A": "two", "B": "zero"}
    assert [list(r) for r in rows] == [["batch position", "test index", "true", "A", "B"]] * 3


def test_seed_groups_as_runs_and_as_text():
    groups = [{"config": "digits resnet8 tffd", "seeds": [0, 1], "accs": [98.123, 97.5], "mean": 97.8115}]
    assert seed_runs(groups) == [
        {"config": "digits resnet8 tffd", "seed": 0, "acc": 98.123},
        {"config": "digits resnet8 tffd", "seed": 1, "acc": 97.5},
    ]
    assert seed_group_rows(groups) == [
        {"config": "digits resnet8 tffd", "seeds": "0, 1", "accs": "98.12, 97.50", "mean": 97.8115}
    ]


def test_ranking_and_criterion_rows():
    torch.manual_seed(0)
    feats = {"layer1": torch.rand(6, 4, 3, 3)}
    ranking = tap_rankings(feats, "tffd")["layer1"]
    rows = ranking_rows({"A: m": ranking})
    assert [r["channel"] for r in rows] == [0, 1, 2, 3] and {r["model"] for r in rows} == {"A: m"}
    assert [r["score"] for r in rows] == pytest.approx(np.asarray(ranking.scores, dtype=float).tolist())
    assert sorted(r["half"] for r in rows) == ["redundant", "redundant", "salient", "salient"]
    scores = criterion_score_rows({"A · m": {"l1": np.array([0.5, 2.0]), "tffd": torch.tensor([1.0, 3.0])}})
    assert scores == [
        {"model": "A · m", "criterion": "l1", "channel": 0, "score": 0.5},
        {"model": "A · m", "criterion": "l1", "channel": 1, "score": 2.0},
        {"model": "A · m", "criterion": "tffd", "channel": 0, "score": 1.0},
        {"model": "A · m", "criterion": "tffd", "channel": 1, "score": 3.0},
    ]


def test_rank_stability_rows_hold_every_channel():
    s = {
        "rank": np.array([1, 0]),
        "lower": np.array([0, 0]),
        "upper": np.array([1, 1]),
        "p_salient": np.array([0.25, 1.0]),
        "p_redundant": np.array([0.75, 0.0]),
        "p_same_half": np.array([0.75, 1.0]),
    }
    rows = rank_stability_rows({"B · m": s})
    assert rows[0] == {
        "model": "B · m",
        "channel": 0,
        "rank": 1,
        "lower": 0,
        "upper": 1,
        "p_salient": 0.25,
        "p_redundant": 0.75,
        "p_same_half": 0.75,
    }
    assert [r["channel"] for r in rows] == [0, 1] and all(type(r["rank"]) is int for r in rows)


def test_paired_cosines_name_both_channels_of_each_pair():
    view = {"order": torch.tensor([4, 0, 2, 1, 3]), "paired": torch.tensor([0.5, -0.25])}  # C=5, C//2=2
    rows = paired_cosine_rows({"A · m": view})
    # pair i: rank i against rank C - C//2 + i (the middle channel 2 is left out)
    assert rows == [
        {"model": "A · m", "pair": 0, "salient channel": 4, "redundant channel": 1, "cosine": 0.5},
        {"model": "A · m", "pair": 1, "salient channel": 0, "redundant channel": 3, "cosine": -0.25},
    ]


def test_alignment_rows_one_per_channel_and_pair():
    rows = alignment_rows(
        {"A · m": {"layer1->layer2": np.array([0.5, 0.25]), "layer1->layer3": torch.tensor([1.0])}}
    )
    assert rows == [
        {"model": "A · m", "pair": "layer1->layer2", "channel": 0, "cosine": 0.5},
        {"model": "A · m", "pair": "layer1->layer2", "channel": 1, "cosine": 0.25},
        {"model": "A · m", "pair": "layer1->layer3", "channel": 0, "cosine": 1.0},
    ]


def test_labelled_and_rank_change_rows():
    assert labelled_rows({"A": [{"stage": "layer1", "acc": 0.5}], "B": []}) == [
        {"model": "A", "stage": "layer1", "acc": 0.5}
    ]
    changes = {"A · m": [{"epoch": 2, "crossings": 2, "entered": [3, 7], "left": [1, 2]}]}
    assert rank_change_rows(changes) == [
        {"model": "A · m", "epoch": 2, "crossings": 2, "entered": "3 7", "left": "1 2"}
    ]


def test_term_curve_rows_one_per_epoch():
    curves = {
        "A · m": {
            "epoch": np.array([1, 2]),
            "ce": np.array([2.0, 1.0]),
            "intra layer1": torch.tensor([0.5, 0.25]),
        }
    }
    assert term_curve_rows(curves) == [
        {"model": "A · m", "epoch": 1.0, "ce": 2.0, "intra layer1": 0.5},
        {"model": "A · m", "epoch": 2.0, "ce": 1.0, "intra layer1": 0.25},
    ]


def test_term_rows_mark_the_terms_in_the_loss_and_weigh_them():
    report = TermsReport(
        taps=["layer1", "layer2"], ce=2.0, intra={"layer1": 4.0, "layer2": 8.0}, inter={"layer1->layer2": 6.0}
    )
    rows = term_rows({"A · m": report}, 0.5, 0.25, {"A · m": (["layer2"], [])})
    by_term = {r["term"]: r for r in rows}
    assert list(by_term) == ["ce", "layer1", "layer2", "layer1->layer2"]
    assert [r["in loss"] for r in rows] == [True, False, True, False]
    assert by_term["layer1"]["weighted"] is None and by_term["layer1"]["value"] == 4.0
    w = report.weighted(0.5, 0.25, stages=["layer2"], pairs=[])
    assert by_term["layer2"]["weighted"] == pytest.approx(w["intra"])
    assert by_term["ce"]["weighted"] == pytest.approx(2.0)


def test_cka_matrix_rows_name_rows_and_columns_by_model_and_layer():
    rows = cka_matrix_rows(np.array([[1.0, 0.5], [0.5, 1.0]]), ["layer1", "layer2"], ["l1", "l2"], "A", "B")
    assert rows == [
        {"A layer": "layer1", "B l1": 1.0, "B l2": 0.5},
        {"A layer": "layer2", "B l1": 0.5, "B l2": 1.0},
    ]
    with pytest.raises(TffdVizError, match=r"shape \(2, 2\) for 1 row and 2 column layers"):
        cka_matrix_rows(np.eye(2), ["layer1"], ["l1", "l2"], "A", "B")
