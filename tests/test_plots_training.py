"""Tests of tffd_viz.plots.training: training curves, rank evolution and boundary crossings."""

from __future__ import annotations

import numpy as np
import pytest
from plots_helpers import epoch_history, nonfinite_texts

from tffd_viz import plots as P


def test_training_curves_carry_history_values():
    hist_a, hist_b = epoch_history(4), epoch_history(3)
    hist_b[1]["test_acc"] = None
    del hist_b[2]["ce"]
    fig = P.training_curves_figure({"A": hist_a, "B": hist_b})
    by_name = {d.name: d for d in fig.data}
    np.testing.assert_allclose(by_name["A · CE"].y, [h["ce"] for h in hist_a])
    np.testing.assert_array_equal(by_name["A · CE"].x, [1, 2, 3, 4])
    np.testing.assert_allclose(by_name["A · intra layer2"].y, [h["intra"]["layer2"] for h in hist_a])
    np.testing.assert_allclose(
        by_name["A · inter layer1->layer2"].y, [h["inter"]["layer1->layer2"] for h in hist_a]
    )
    np.testing.assert_allclose(by_name["A · test acc"].y, [h["test_acc"] for h in hist_a])
    assert list(by_name["B · test acc"].y) == [hist_b[0]["test_acc"], None, hist_b[2]["test_acc"]]
    assert list(by_name["B · CE"].y) == [hist_b[0]["ce"], hist_b[1]["ce"], None]
    assert by_name["A · CE"].line.color == P.COLOR_A and by_name["B · CE"].line.color == P.COLOR_B
    assert by_name["A · intra layer1"].xaxis == "x2" and fig.layout.yaxis2.type == "log"
    assert by_name["A · test acc"].xaxis == "x3"
    assert not nonfinite_texts(fig)  # None is missing, not a numerical fault


def test_training_curves_panels_stacked_each_with_its_own_legend():
    fig = P.training_curves_figure(
        {"A · a_long_model_name": epoch_history(4), "B · another_name": epoch_history(4)}
    )
    panel = {"x": "legend", "x2": "legend2", "x3": "legend3"}
    for tr in fig.data:
        assert tr.legend == panel[tr.xaxis], tr.name
    assert {tr.name.split(" · ")[-1] for tr in fig.data if tr.legend == "legend3"} == {
        "train acc",
        "test acc",
    }
    doms = [tuple(fig.layout[f"yaxis{s}"].domain) for s in ("", "2", "3")]
    assert doms[0][0] > doms[1][1] and doms[1][0] > doms[2][1]  # top to bottom, no overlap
    assert {tuple(fig.layout[f"xaxis{s}"].domain) for s in ("", "2", "3")} == {(0.0, 1.0)}  # full width each
    for name, dom in zip(("legend", "legend2", "legend3"), doms):
        legend = fig.layout[name]
        assert legend.x > 1 and legend.y == pytest.approx(dom[1])  # beside its own panel, top-aligned
    ticks = np.asarray(fig.layout.yaxis2.tickvals, dtype=float)
    assert np.allclose(np.log10(ticks), np.round(np.log10(ticks)))  # terms span > 1 decade: decades only


def test_training_curves_empty_history_is_a_message_not_an_error():
    for histories in ({"A": []}, {"A": None, "B": []}, {"A": [{"epoch": 1, "lr": 0.1}]}):
        fig = P.training_curves_figure(histories)
        assert [a.text for a in fig.layout.annotations] == ["no training history in this checkpoint"]
        fig.to_html(include_plotlyjs=False)
    partial = P.training_curves_figure({"A": epoch_history(2), "B": []})
    assert any("no training history for: B" in a.text for a in partial.layout.annotations)


def test_rank_evolution_rows_sorted_by_final_rank_and_crossings():
    ranks = np.array([[1, 2, 3, 4], [2, 1, 4, 3], [4, 1, 2, 3]])  # (epochs, channels)
    fig = P.rank_evolution_figure(ranks, epochs=[5, 10, 15])
    order = [1, 2, 3, 0]  # channels by final rank
    np.testing.assert_array_equal(fig.data[0].z, ranks[:, order].T)
    np.testing.assert_array_equal(fig.data[0].customdata[:, 0], order)
    assert list(fig.data[0].x) == [5, 10, 15]
    rows = {
        "A": [{"epoch": 1, "crossings": 3, "spearman": 0.2}, {"epoch": 2, "crossings": 1, "spearman": 0.8}],
        "B": [{"epoch": 1, "crossings": 0, "spearman": 0.9}],
    }
    cr = P.crossings_figure(rows)
    by_name = {d.name: d for d in cr.data}
    assert list(by_name["A · crossings"].y) == [3, 1] and list(by_name["A · spearman"].y) == [0.2, 0.8]
    assert by_name["B · spearman"].xaxis == "x2"
    assert any(a.name == "empty" for a in P.crossings_figure({"A": []}).layout.annotations)
