"""Tests of tffd_viz.plots.losses: Tf-FD terms, weighted contributions, gradient shares and sweeps."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from plots_helpers import nonfinite_texts, sweep_rows

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError


def test_terms_bar_flattens_nested_terms_and_keeps_values():
    terms = {
        "A": {"intra": {"layer1": torch.tensor(0.3), "layer2": 0.2}, "inter": {"layer1->layer2": 0.05}},
        "B": {"intra": {"layer1": 0.1}, "inter": {"layer1->layer2": 0.01}},
    }
    fig = P.terms_bar_figure(terms, log_y=True)
    a, b = fig.data
    assert list(a.x) == ["intra · layer1", "intra · layer2", "inter · layer1->layer2"]
    np.testing.assert_allclose(a.y, [0.3, 0.2, 0.05], rtol=1e-6)
    assert list(b.y) == [0.1, None, 0.01]
    assert fig.layout.barmode == "group" and fig.layout.yaxis.type == "log"
    assert (a.name, a.marker.color, b.marker.color) == ("A", P.COLOR_A, P.COLOR_B)


def test_weighted_contributions_grouped_and_stacked():
    rows = {"A": {"ce": 1.2, "intra": 8e-4 * 0.5}, "B": {"ce": 1.0, "intra": 8e-4 * 0.2, "inter": 5e-4 * 0.1}}
    fig = P.weighted_contributions_figure(rows, log_y=True)
    assert list(fig.data[0].x) == ["CE", "λ_intra · intra", "λ_inter · inter"]
    assert list(fig.data[0].y) == [1.2, 8e-4 * 0.5, None]
    assert fig.layout.yaxis.type == "log"
    st = P.weighted_contributions_figure(rows, stacked=True)
    assert st.layout.barmode == "stack"
    assert [d.name for d in st.data] == ["CE", "λ_intra · intra", "λ_inter · inter"]
    assert list(st.data[0].x) == ["A", "B"] and list(st.data[0].y) == [1.2, 1.0]
    assert list(st.data[2].y) == [None, 5e-4 * 0.1]


def test_log_axes_label_decades_or_1_2_5_only():
    wide = {"A": {"intra": {"l1": 0.06, "l2": 3.5}}, "B": {"intra": {"l1": 0.2, "l2": None}}}
    fig = P.terms_bar_figure(wide, log_y=True)
    ticks = list(fig.layout.yaxis.tickvals)
    assert ticks == pytest.approx([0.01, 0.1, 1.0, 10.0])  # 0.06..3.5 spans > 1 decade: decades only
    assert list(fig.layout.yaxis.ticktext) == ["0.01", "0.1", "1", "10"]
    narrow = {"A": {"ce": 0.0185, "intra": 0.118}, "B": {"ce": 0.0269, "intra": 0.05}}
    fig = P.weighted_contributions_figure(narrow, log_y=True)
    ticks = np.asarray(fig.layout.yaxis.tickvals, dtype=float)
    mantissa = ticks / 10.0 ** np.floor(np.log10(ticks) + 1e-9)
    assert set(np.round(mantissa, 6)) == {1.0, 2.0, 5.0}  # < 1 decade: only 1-2-5, never every digit
    assert ticks.min() <= 0.0185 and ticks.max() >= 0.118  # both ends of the data are labelled
    assert fig.layout.yaxis.type == "log"
    assert P.terms_bar_figure(wide).layout.yaxis.tickvals is None  # linear axis: plotly's own ticks


def test_grad_share_columns_are_shares_and_raw_log():
    norms = np.array([[3.0, 0.0, 1.0], [1.0, 0.0, 1.0]])
    fig = P.grad_share_figure(norms, ["ce", "intra"], ["s1", "s2", "s3"])
    z = np.asarray(fig.data[0].z, dtype=float)
    np.testing.assert_allclose(z[:, 0], [75.0, 25.0])
    np.testing.assert_allclose(z[:, 2], [50.0, 50.0])
    assert np.isnan(z[:, 1]).all()  # no gradient reaches s2: blank, and said so
    assert any(a.name == "no_gradient" and "s2" in a.text for a in fig.layout.annotations)
    assert not nonfinite_texts(fig)
    raw = P.grad_share_figure(norms, ["ce", "intra"], ["s1", "s2", "s3"], share=False, log_color=True)
    zr = np.asarray(raw.data[0].z, dtype=float)
    assert zr[0, 0] == pytest.approx(math.log10(3.0)) and np.isnan(zr[0, 1])
    np.testing.assert_array_equal(raw.data[0].customdata, norms)
    with pytest.raises(TffdVizError, match=">= 0"):
        P.grad_share_figure(-norms, ["ce", "intra"], ["s1", "s2", "s3"])


def test_sweep_heatmap_cells_are_means_over_seeds():
    rows = sweep_rows()
    fig = P.sweep_heatmap_figure(rows)
    tr = fig.data[0]
    assert list(tr.x) == ["0", "5e-4", "1e-3"] and list(tr.y) == ["0", "8e-4"]
    assert fig.layout.xaxis.type == "category" and fig.layout.xaxis.title.text == "λ_inter"
    for yi, li in enumerate((0.0, 8e-4)):
        for xi, le in enumerate((0.0, 5e-4, 1e-3)):
            vals = [r["final_acc"] for r in rows if r["lambda_intra"] == li and r["lambda_inter"] == le]
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
            assert tr.z[yi][xi] == pytest.approx(mean)
            assert tr.customdata[yi][xi][1] == 3
            assert float(tr.customdata[yi][xi][0]) == pytest.approx(std, rel=1e-2)


def test_sweep_heatmap_robust_colour_range_keeps_outlier_text():
    accs = {0.0: 99.2, 8e-4: 99.4, 1e-2: 98.6, 0.1: 99.7, 1.0: 98.9, 5.0: 49.2}
    rows = [
        {"lambda_intra": li, "lambda_inter": le, "final_acc": acc + 0.1 * j}
        for li, acc in accs.items()
        for j, le in enumerate((0.0, 0.1))
    ]
    means = np.array([r["final_acc"] for r in rows])
    q1, q3 = np.percentile(means, [25, 75])
    fig = P.sweep_heatmap_figure(rows)
    axis = fig.layout.coloraxis
    assert axis.cmin == pytest.approx(max(means.min(), q1 - 1.5 * (q3 - q1)))
    assert axis.cmax == pytest.approx(min(means.max(), q3 + 1.5 * (q3 - q1)))
    assert 49.3 < axis.cmin <= 98.6  # the diverged row no longer sets the bottom of the scale
    tr = fig.data[0]
    row5 = list(tr.y).index("5")
    assert tr.text[row5][0] == "49.20"  # the outlier keeps its value text ...
    assert "below the colour range" in tr.customdata[row5][0][2]  # ... and its hover says it is clipped
    assert tr.customdata[list(tr.y).index("0.1")][0][2] == ""
    assert "2 outlier cells" in axis.colorbar.title.text
    full = P.sweep_heatmap_figure(rows, color_range="full")
    assert (full.layout.coloraxis.cmin, full.layout.coloraxis.cmax) == (means.min(), means.max())
    assert "clipped" not in full.layout.coloraxis.colorbar.title.text
    # without outliers the robust range is the full range
    calm = [r for r in rows if r["lambda_intra"] != 5.0]
    robust = P.sweep_heatmap_figure(calm).layout.coloraxis
    assert (robust.cmin, robust.cmax) == (
        min(r["final_acc"] for r in calm),
        max(r["final_acc"] for r in calm),
    )
    with pytest.raises(TffdVizError, match="color_range must be one of"):
        P.sweep_heatmap_figure(rows, color_range="percentile")


def test_sweep_heatmap_facets_missing_cells_and_bad_rows():
    rows = [
        {"arch": "resnet8", "lambda_intra": 0, "lambda_inter": 0, "final_acc": 90.0},
        {"arch": "resnet8", "lambda_intra": 8e-4, "lambda_inter": 0, "final_acc": 92.0},
        {"arch": "wrn", "lambda_intra": 0, "lambda_inter": 0, "final_acc": 80.0},
    ]
    fig = P.sweep_heatmap_figure(rows, facet="arch")
    assert len(fig.data) == 2 and fig.data[1].xaxis == "x2"
    assert fig.data[0].z[1][0] == 92.0
    assert np.isnan(fig.data[1].z[1][0])  # no wrn run there: blank cell, not a fault
    assert not nonfinite_texts(fig)
    with pytest.raises(TffdVizError, match="row 0 has no column 'lambda_inter'"):
        P.sweep_heatmap_figure([{"lambda_intra": 0, "final_acc": 1.0}])
    with pytest.raises(TffdVizError, match="empty"):
        P.sweep_heatmap_figure([])
