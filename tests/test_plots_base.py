"""Tests of the shared parts of tffd_viz.plots (``_base``: layout, colours, model keys, lambda labels, heatmap
cell text; ``_inputs``: reading values)."""

from __future__ import annotations

import numpy as np

from tffd_viz import plots as P
from tffd_viz.plots._base import _cell_text
from tffd_viz.plots._inputs import _percent, _series


def test_common_layout_template_margin_and_axis_titles():
    fig = P.cka_heatmap_figure(np.eye(2), ["a", "b"], ["a", "b"], label_a="A · baseline", label_b="B · Tf-FD")
    assert fig.layout.margin.l == 60 and fig.layout.margin.t == 60
    assert fig.layout.xaxis.title.text == "model B · Tf-FD layer"
    assert fig.layout.yaxis.title.text == "model A · baseline layer"
    # the template was applied (plotly_white has a white plot background)
    assert fig.layout.template.layout.plot_bgcolor == "white"


def test_model_colors_and_lambda_format():
    assert P.model_color("A") == P.COLOR_A
    assert P.model_color("B · Tf-FD", position=0) == P.COLOR_B
    assert P.model_color("A (baseline)", position=1) == P.COLOR_A
    assert P.model_color("Alpha", position=1) == P.MODEL_COLORS[1]
    values = (0, 0.0, 8e-4, 5e-4, 1.5e-3, 0.5, 1, "0.0008", "8e-4", "paper")
    assert [P.format_lambda(v) for v in values] == [
        "0",
        "0",
        "8e-4",
        "5e-4",
        "1.5e-3",
        "0.5",
        "1",
        "8e-4",
        "8e-4",
        "paper",
    ]
    # CSV strings and floats land in the same sweep cell
    rows = [
        {"lambda_intra": "0.0008", "lambda_inter": 0, "final_acc": "90"},
        {"lambda_intra": 8e-4, "lambda_inter": "0", "final_acc": 92.0},
    ]
    fig = P.sweep_heatmap_figure(rows)
    assert np.asarray(fig.data[0].z).shape == (1, 1) and fig.data[0].z[0][0] == 91.0


def test_model_key_is_the_leading_a_or_b_word():
    assert P.model_key("A · digits_resnet8_baseline_s0") == "A"
    assert P.model_key("B") == "B" and P.model_key(" B: tffd") == "B"
    assert P.model_key("Alpha · x") == "Alpha · x"  # not the word A
    assert P.model_key("resnet18 · Tf-FD") == "resnet18 · Tf-FD"


def test_cell_text_blanks_nonfinite_cells_and_optionally_zeros():
    z = np.array([[1.234, np.nan], [0.0, 5.0]])
    assert _cell_text(z) == [["1.23", ""], ["0.00", "5.00"]]
    assert _cell_text(z, ".0f", blank_zero=True) == [["1", ""], ["", "5"]]


def test_series_reads_nested_keys_and_counts_only_nonfinite_numbers():
    rows = [{"a": {"b": 1.5}}, {"a": None}, {"a": {"b": float("nan")}}, {}, {"a": {"b": "text"}}]
    assert _series(rows, "a", "b") == ([1.5, None, None, None, None], 1)  # None, absent, text: missing
    assert _series([2, None, float("inf"), np.float32(0.5)]) == ([2.0, None, None, 0.5], 1)


def test_percent_of_a_total_is_blank_where_the_total_is_not_positive():
    m = np.array([[3.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(_percent(m, m.sum(axis=1, keepdims=True)), [[75.0, 25.0], [np.nan, np.nan]])
