"""Tests of tffd_viz.plots: every figure carries the values it was given, in the documented order."""

from __future__ import annotations

import json
import math

import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from tffd_viz import plots as P
from tffd_viz.errors import TffdVizError
from tffd_viz.losses import channel_saliency, salient_order
from tffd_viz.similarity import channel_cosine_matrix, paired_channel_cosine

RNG_SEED = 0


def _rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def _nonfinite_texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations if a.name == "nonfinite"]


def _history(n: int = 4) -> list[dict]:
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "ce": 2.0 / e,
            "intra": {"layer1": 0.3 / e, "layer2": 0.2 / e},
            "inter": {"layer1->layer2": 0.05 / e},
            "train_acc": 40.0 + 5 * e,
            "test_acc": 38.0 + 4 * e,
        }
        for e in range(1, n + 1)
    ]


def _sweep_rows() -> list[dict]:
    rng = _rng()
    return [
        {"lambda_intra": li, "lambda_inter": le, "seed": s, "final_acc": float(80 + 10 * rng.random())}
        for li in (0.0, 8e-4)
        for le in (0.0, 5e-4, 1e-3)
        for s in range(3)
    ]


# one small call per registered figure: checks the registry and that every figure renders to HTML
def _cases() -> dict[str, go.Figure]:
    rng = _rng()
    maps = rng.random((6, 8, 8))
    order = np.argsort(-maps.mean(axis=(1, 2)), kind="stable")
    taps = ["layer1", "layer2", "layer3"]
    return {
        "saliency_bars": P.saliency_bars_figure({"A": rng.random(6), "B": torch.rand(6)}, tap="layer1"),
        "rank_agreement": P.rank_agreement_figure(np.eye(3), ["tffd", "l1", "taylor"]),
        "rank_band": P.rank_band_figure(np.arange(1, 7), np.arange(1, 7) - 1, np.arange(1, 7) + 1),
        "split_stability": P.split_stability_figure({"A": {"rank": np.arange(6), "p_salient": np.linspace(1, 0, 6)}}),
        "terms_bar": P.terms_bar_figure({"A": {"intra": {"layer1": 0.1}}, "B": {"intra": {"layer1": 0.05}}}),
        "weighted_contributions": P.weighted_contributions_figure({"A": {"ce": 1.0, "intra": 1e-4}}),
        "grad_share": P.grad_share_figure(rng.random((3, 2)), ["ce", "intra", "inter"], ["stage1", "stage2"]),
        "sweep_heatmap": P.sweep_heatmap_figure(_sweep_rows()),
        "feature_maps": P.feature_maps_figure(maps, order),
        "paired_maps": P.paired_maps_figure(maps, order),
        "cosine_matrix": P.cosine_matrix_figure(rng.random((6, 6)), order=order),
        "paired_similarity": P.paired_similarity_figure({"A": rng.random(3), "B": rng.random(3)}),
        "alignment": P.alignment_figure({"A": {"layer1->layer2": rng.random(4)}}),
        "cka_heatmap": P.cka_heatmap_figure(rng.random((3, 3)), taps, taps),
        "cka_grid": P.cka_grid_figure({"A vs B": (rng.random((3, 3)), taps, taps)}),
        "attribution": P.attribution_figure(rng.random((2, 1, 8, 8)), {"A": rng.random((2, 8, 8))}),
        "embedding": P.embedding_figure(rng.random((20, 2)), rng.integers(0, 3, 20), ["a", "b", "c"]),
        "probe_accuracy": P.probe_accuracy_figure({"A": {"layer1": 40.0, "layer2": 60.0}}),
        "training_curves": P.training_curves_figure({"A": _history(), "B": _history(2)}),
        "rank_evolution": P.rank_evolution_figure(np.stack([rng.permutation(6) for _ in range(3)])),
        "crossings": P.crossings_figure({"A": [{"epoch": 1, "crossings": 2, "spearman": 0.5}]}),
        "confusion": P.confusion_figure(rng.integers(0, 9, (3, 3))),
        "disagreement_gallery": P.disagreement_gallery_figure(rng.random((3, 3, 8, 8)), ["x", "y", "z"]),
        "accuracy_seeds": P.accuracy_seeds_figure([{"config": "A", "seed": 0, "acc": 90.0}]),
    }


def test_registry_covers_every_figure_function_and_each_renders():
    cases = _cases()
    assert set(P.FIGURE_FUNCTIONS) == set(cases)
    public = {n for n in P.__all__ if n.endswith("_figure")}
    assert {f.__name__ for f in P.FIGURE_FUNCTIONS.values()} == public
    for name, fig in cases.items():
        assert isinstance(fig, go.Figure), name
        assert fig.layout.title.text, f"{name} has no title"
        assert fig.layout.template.layout.plot_bgcolor == "white", f"{name} lacks the plotly_white template"
        assert fig.layout.margin.l == 60, f"{name} lacks the common margin"
        html = fig.to_html(include_plotlyjs=False, full_html=False)
        assert "Plotly.newPlot" in html, name


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


# ----------------------------------------------------------------------------------------------------------
# 1-3 ranking
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [8, 7])
def test_saliency_bars_sorted_values_order_and_boundary(c):
    torch.manual_seed(0)
    f_a, f_b = torch.rand(4, c, 5, 5), torch.rand(4, c, 5, 5) ** 2
    s_a, s_b = channel_saliency(f_a), channel_saliency(f_b)
    fig = P.saliency_bars_figure({"A": s_a, "B": s_b.numpy()}, tap="layer2")
    assert "layer2" in fig.layout.title.text
    bars = [d for d in fig.data if isinstance(d, go.Bar)]
    assert [b.name for b in bars] == ["A", "B"]
    for bar, s, f in zip(bars, (s_a, s_b), (f_a, f_b)):
        np.testing.assert_array_equal(bar.x, np.arange(c))
        np.testing.assert_allclose(bar.y, np.sort(s.numpy())[::-1], rtol=1e-6)
        # hover channel indices are the library's own salient order (same stable tie-break)
        np.testing.assert_array_equal(bar.customdata[:, 0].astype(int), salient_order(f).numpy())
    assert bars[0].marker.color[0] == P.COLOR_A and bars[1].marker.color[0] == P.COLOR_B
    boundaries = [s for s in fig.layout.shapes if s.name == "boundary"]
    assert len(boundaries) == 2
    # the line sits just before rank floor(C/2): ranks < C // 2 are salient (as in tffd_viz.dynamics)
    assert all(s.x0 == s.x1 == c // 2 - 0.5 for s in boundaries)
    salient = [s for s in fig.layout.shapes if s.name == "salient"]
    assert all((s.x0, s.x1) == (-0.5, c // 2 - 0.5) for s in salient)
    redundant = [s for s in fig.layout.shapes if s.name == "redundant"]
    assert all((s.x0, s.x1) == (c - c // 2 - 0.5, c - 0.5) for s in redundant)
    left_out = [a for a in fig.layout.annotations if a.name == "left_out"]
    if c % 2:
        assert len(left_out) == 2
        assert bars[0].marker.color[c // 2] == P.LEFT_OUT_COLOR
        middle = int(bars[0].customdata[c // 2, 0])
        assert f"ch {middle} left out" in left_out[0].text
    else:
        assert not left_out and P.LEFT_OUT_COLOR not in bars[0].marker.color


def test_saliency_bars_unmarked_and_overlay():
    s = {"A": np.array([0.1, 0.3, 0.2, 0.4]), "B": np.array([0.4, 0.3, 0.2, 0.1])}
    assert not P.saliency_bars_figure(s, split_marked=False).layout.shapes
    fig = P.saliency_bars_figure(s, overlay=True)
    assert fig.layout.barmode == "group"
    assert {d.xaxis or "x" for d in fig.data} == {"x"}
    assert len([sh for sh in fig.layout.shapes if sh.name == "boundary"]) == 1
    np.testing.assert_array_equal(fig.data[0].y, [0.4, 0.3, 0.2, 0.1])
    np.testing.assert_array_equal(fig.data[0].customdata[:, 0].astype(int), [3, 1, 2, 0])
    with pytest.raises(TffdVizError, match="saliency_bars_figure.*empty"):
        P.saliency_bars_figure({})
    with pytest.raises(TffdVizError, match="1-D"):
        P.saliency_bars_figure({"A": np.ones((2, 2))})


def test_rank_agreement_heatmap_values_and_names():
    m = np.array([[1.0, 0.5, -0.2], [0.5, 1.0, 0.1], [-0.2, 0.1, 1.0]])
    fig = P.rank_agreement_figure(torch.tensor(m), ["tffd", "l1", "taylor"], title="Spearman")
    np.testing.assert_allclose(fig.data[0].z, m)
    assert list(fig.data[0].x) == ["tffd", "l1", "taylor"]
    assert fig.data[0].text[0][1] == "0.50"
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-1, 1)
    with pytest.raises(TffdVizError, match="2 names but the matrix has 3"):
        P.rank_agreement_figure(m, ["a", "b"])


def test_rank_band_sorted_points_and_interval_segments():
    rank = np.array([3.0, 1.0, 4.0, 2.0])
    lower = np.array([2.0, 1.0, 2.5, 1.0])
    upper = np.array([4.0, 2.0, 4.0, 3.5])
    fig = P.rank_band_figure(rank, lower, upper, tap="layer1", label="B")
    seg, pts = fig.data
    order = [1, 3, 0, 2]
    np.testing.assert_array_equal(pts.y, rank[order])
    np.testing.assert_array_equal(pts.customdata[:, 0], order)
    np.testing.assert_array_equal(pts.x, [0, 1, 2, 3])
    expected = []
    for ch in order:
        expected += [lower[ch], upper[ch], None]
    assert list(seg.y) == expected
    assert pts.marker.color == P.COLOR_B and "B" in pts.name
    assert seg.name == "B · 90% bootstrap interval"
    with pytest.raises(TffdVizError, match="same shape"):
        P.rank_band_figure(rank, lower[:3], upper)


def test_model_key_is_the_leading_a_or_b_word():
    assert P.model_key("A · digits_resnet8_baseline_s0") == "A"
    assert P.model_key("B") == "B" and P.model_key(" B: tffd") == "B"
    assert P.model_key("Alpha · x") == "Alpha · x"  # not the word A
    assert P.model_key("resnet18 · Tf-FD") == "resnet18 · Tf-FD"


def test_rank_band_short_title_and_full_label_in_a_legend_below():
    label = "A · digits_resnet8_baseline_s0"
    fig = P.rank_band_figure(np.arange(6.0), np.arange(6.0) - 1, np.arange(6.0) + 1, tap="layer3", label=label)
    assert fig.layout.title.text == "Bootstrap rank bands — layer3 (A)"
    assert [t.name for t in fig.data] == ["A · 90% bootstrap interval", "A · rank"]
    assert fig.data[1].hovertemplate.endswith(f"<extra>{label}</extra>")  # the full name stays in the hover
    legend = fig.layout.legend
    assert legend.orientation == "h" and legend.yref == "container" and legend.yanchor == "bottom"
    assert legend.title.text == label
    # the band below is added to the figure: the plot area keeps its height (380 - 60 - 50 px)
    assert fig.layout.height - fig.layout.margin.t - fig.layout.margin.b == 380 - 60 - 50
    assert fig.layout.margin.b > 50 + 2 * 20  # the label line and one line of entries
    plain = P.rank_band_figure(np.arange(6.0), np.arange(6.0) - 1, np.arange(6.0) + 1, label="B")
    assert not plain.layout.legend.title.text  # no longer label to spell out


def test_split_stability_bars_in_rank_order():
    rank = np.array([2, 0, 3, 1])
    p = np.array([0.4, 1.0, 0.0, np.nan])
    fig = P.split_stability_figure({"A": {"rank": rank, "p_salient": p}, "B x": {"rank": rank, "p_salient": p}},
                                   tap="layer2")
    a, b = fig.data
    order = [1, 3, 0, 2]
    np.testing.assert_array_equal(a.customdata, order)
    assert list(a.y) == [1.0, None, 0.4, 0.0]
    np.testing.assert_array_equal(a.x, [0, 1, 2, 3])
    assert a.marker.color == P.COLOR_A and b.marker.color != P.COLOR_A
    assert [sh.x0 for sh in fig.layout.shapes if sh.name == "boundary"] == [1.5]
    assert "layer2" in fig.layout.title.text
    assert _nonfinite_texts(fig)
    with pytest.raises(TffdVizError, match="differ in shape"):
        P.split_stability_figure({"A": {"rank": rank, "p_salient": p[:3]}})
    with pytest.raises(TffdVizError, match="'rank' and 'p_salient'"):
        P.split_stability_figure({"A": {"rank": rank}})


# ----------------------------------------------------------------------------------------------------------
# 4-7 losses and lambdas
# ----------------------------------------------------------------------------------------------------------


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
    assert not _nonfinite_texts(fig)
    raw = P.grad_share_figure(norms, ["ce", "intra"], ["s1", "s2", "s3"], share=False, log_color=True)
    zr = np.asarray(raw.data[0].z, dtype=float)
    assert zr[0, 0] == pytest.approx(math.log10(3.0)) and np.isnan(zr[0, 1])
    np.testing.assert_array_equal(raw.data[0].customdata, norms)
    with pytest.raises(TffdVizError, match=">= 0"):
        P.grad_share_figure(-norms, ["ce", "intra"], ["s1", "s2", "s3"])


def test_sweep_heatmap_cells_are_means_over_seeds():
    rows = _sweep_rows()
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
    rows = [{"lambda_intra": li, "lambda_inter": le, "final_acc": acc + 0.1 * j}
            for li, acc in accs.items() for j, le in enumerate((0.0, 0.1))]
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
    assert (robust.cmin, robust.cmax) == (min(r["final_acc"] for r in calm), max(r["final_acc"] for r in calm))
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
    assert not _nonfinite_texts(fig)
    with pytest.raises(TffdVizError, match="row 0 has no column 'lambda_inter'"):
        P.sweep_heatmap_figure([{"lambda_intra": 0, "final_acc": 1.0}])
    with pytest.raises(TffdVizError, match="empty"):
        P.sweep_heatmap_figure([])


# ----------------------------------------------------------------------------------------------------------
# 8 feature maps
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [6, 5])
def test_feature_maps_tiles_follow_saliency_order(c):
    torch.manual_seed(1)
    f = torch.rand(1, c, 6, 6)
    order = salient_order(f)
    fig = P.feature_maps_figure(f[0], order, cols=4)
    o = order.numpy()
    k = c // 2
    expected = list(o[:k]) + ([o[k]] if c % 2 else []) + list(o[c - k :])
    assert len(fig.data) == c
    np.testing.assert_allclose(fig.data[0].z, f[0, o[0]].numpy(), rtol=1e-6)  # the most salient channel
    for tr, ch in zip(fig.data, expected):
        np.testing.assert_allclose(tr.z, f[0, ch].numpy(), rtol=1e-6)
    titles = [a.text for a in fig.layout.annotations][: len(expected)]
    assert titles[0] == f"ch {o[0]} · #0" and titles[-1] == f"ch {o[-1]} · #{c - 1}"
    colors = [a.font.color for a in fig.layout.annotations][: len(expected)]
    assert colors[:k] == [P.SALIENT_COLOR] * k and colors[-k:] == [P.REDUNDANT_COLOR] * k
    assert all(tr.coloraxis == "coloraxis" for tr in fig.data)
    assert fig.layout.coloraxis.cmin == pytest.approx(float(f.min()))
    assert fig.layout.coloraxis.cmax == pytest.approx(float(f.max()))


def test_feature_maps_limits_tiles_and_downsamples():
    rng = _rng()
    maps = rng.random((10, 8, 8))
    order = np.arange(10)[::-1].copy()
    fig = P.feature_maps_figure(maps, order, max_channels=4, max_side=4)
    assert len(fig.data) == 4
    shown = [9, 8, 4, 3]  # the 2 most salient, then the first 2 of the redundant half (their partners)
    for tr, ch in zip(fig.data, shown):
        block_mean = maps[ch].reshape(4, 2, 4, 2).mean(axis=(1, 3))
        np.testing.assert_allclose(tr.z, block_mean)
    with pytest.raises(TffdVizError, match="permutation"):
        P.feature_maps_figure(maps, np.zeros(10, dtype=int))
    with pytest.raises(TffdVizError, match="length C = 10"):
        P.feature_maps_figure(maps, np.arange(9))


@pytest.mark.parametrize("c", [8, 7])
def test_paired_maps_pair_as_intra_tffd(c):
    torch.manual_seed(2)
    f = torch.rand(1, c, 5, 5)
    order = salient_order(f)
    fig = P.paired_maps_figure(f[0], order)
    k = c // 2
    assert len(fig.data) == 2 * k
    top, bottom = fig.data[:k], fig.data[k:]
    # the cosine of each drawn (top, bottom) pair equals the library's paired cosine
    cos = [
        float(np.dot(np.ravel(t.z), np.ravel(b.z)) / (np.linalg.norm(t.z) * np.linalg.norm(b.z)))
        for t, b in zip(top, bottom)
    ]
    np.testing.assert_allclose(cos, paired_channel_cosine(f, order).numpy(), rtol=1e-5)
    np.testing.assert_allclose(bottom[0].z, f[0, order[c - k]].numpy(), rtol=1e-6)
    assert len(P.paired_maps_figure(f[0], order, max_pairs=2).data) == 4


def _domain(fig: go.Figure, trace: go.Heatmap, kind: str) -> tuple[float, float]:
    name = getattr(trace, f"{kind}axis") or kind
    return tuple(fig.layout[f"{kind}axis{name[1:]}"].domain)


def test_paired_maps_wrap_pairs_into_blocks_partner_below():
    rng = _rng()
    maps = rng.random((20, 4, 4))
    order = np.argsort(-maps.mean(axis=(1, 2)), kind="stable")
    fig = P.paired_maps_figure(maps, order, max_pairs=10, cols=4)
    n, k = 10, 10
    top, bottom = fig.data[:n], fig.data[n:]
    for i, (t, b) in enumerate(zip(top, bottom)):
        np.testing.assert_allclose(b.z, maps[order[20 - k + i]])
        assert _domain(fig, t, "x") == _domain(fig, b, "x")  # the partner sits in the same column ...
        assert _domain(fig, t, "y")[0] > _domain(fig, b, "y")[1]  # ... right below
        assert _domain(fig, t, "x") == _domain(fig, top[i % 4], "x")  # 4 pairs a row, wrapped
    assert len({_domain(fig, t, "y") for t in top}) == 3  # 10 pairs, 4 a row: 3 blocks
    colors = {a.text: a.font.color for a in fig.layout.annotations}
    assert colors[f"ch {order[0]} · #0"] == P.SALIENT_COLOR
    assert colors[f"ch {order[10]} · #10"] == P.REDUNDANT_COLOR
    assert fig.layout.title.text.endswith("(10 of 10 pairs)")
    # the figure grows with the blocks instead of shrinking the tiles
    one_block = P.paired_maps_figure(maps, order, max_pairs=4, cols=4)
    assert fig.layout.height - 115 == pytest.approx(3 * (one_block.layout.height - 115))


def test_feature_maps_colour_key_is_a_caption_not_the_title():
    rng = _rng()
    maps = rng.random((6, 4, 4))
    fig = P.feature_maps_figure(maps, np.arange(6), title="A: layer3, image 0")
    assert fig.layout.title.text == "A: layer3, image 0 (6 channels)"
    captions = [a.text for a in fig.layout.annotations if a.name == "caption"]
    assert captions and "green" in captions[0] and "grey" in captions[0]


# ----------------------------------------------------------------------------------------------------------
# 9-12 similarity
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", [6, 5])
def test_cosine_matrix_reorders_and_marks_split(c):
    torch.manual_seed(3)
    f = torch.rand(3, c, 4, 4)
    order = salient_order(f)
    fig = P.cosine_matrix_figure(channel_cosine_matrix(f), order=order)
    np.testing.assert_allclose(fig.data[0].z, channel_cosine_matrix(f, order=order).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fig.data[0].customdata[0, 1], [order[0], order[1]])
    k = c // 2
    cuts = sorted(
        {s.x0 for s in fig.layout.shapes if s.name == "split" and s.type == "line" and s.x0 == s.x1}
    )
    assert cuts == sorted({k - 0.5, c - k - 0.5})
    plain = P.cosine_matrix_figure(np.eye(c))
    assert not plain.layout.shapes and plain.layout.xaxis.title.text == "channel index"
    with pytest.raises(TffdVizError, match="square"):
        P.cosine_matrix_figure(np.ones((3, 4)))


def test_paired_similarity_and_alignment_values():
    a, b = np.array([0.9, 0.5, 0.1]), np.array([0.95, 0.8, 0.7])
    fig = P.paired_similarity_figure({"A": a, "B": torch.tensor(b)})
    np.testing.assert_array_equal(fig.data[0].x, [0, 1, 2])
    np.testing.assert_allclose(fig.data[1].y, b)
    assert fig.data[0].name == "A (mean 0.500)" and fig.data[1].line.color == P.COLOR_B
    vals = {
        "A": {"l1->l2": np.array([0.1, 0.2]), "l2->l3": np.array([0.3, 0.4, 0.5])},
        "B": {"l2->l3": np.array([0.6, 0.7, 0.8])},
    }
    al = P.alignment_figure(vals)
    assert [(d.name, d.xaxis) for d in al.data] == [("A", "x"), ("A", "x2"), ("B", "x2")]
    assert [d.showlegend for d in al.data] == [True, False, True]
    np.testing.assert_allclose(al.data[2].y, [0.6, 0.7, 0.8])
    np.testing.assert_array_equal(al.data[1].x, [0, 1, 2])


def test_cka_heatmap_and_grid_values():
    m = np.array([[1.0, 0.4], [0.3, 0.9], [0.2, 0.8]])
    fig = P.cka_heatmap_figure(m, ["a1", "a2", "a3"], ["b1", "b2"])
    np.testing.assert_array_equal(fig.data[0].z, m)
    assert list(fig.data[0].y) == ["a1", "a2", "a3"] and list(fig.data[0].x) == ["b1", "b2"]
    assert (fig.data[0].zmin, fig.data[0].zmax) == (0, 1)
    mats = {
        "A vs A": (np.eye(2), ["l1", "l2"], ["l1", "l2"]),
        "A vs B": (m, ["l1", "l2", "l3"], ["l1", "l2"]),
    }
    grid = P.cka_grid_figure(mats)
    np.testing.assert_array_equal(grid.data[0].z, np.eye(2))
    np.testing.assert_array_equal(grid.data[1].z, m)
    assert grid.layout.xaxis2.title.text == "B layer" and grid.layout.yaxis2.title.text == "A layer"
    assert (grid.layout.coloraxis.cmin, grid.layout.coloraxis.cmax) == (0, 1)
    with pytest.raises(TffdVizError, match="names_b"):
        P.cka_heatmap_figure(m, ["a1", "a2", "a3"], ["b1"])


# ----------------------------------------------------------------------------------------------------------
# 13, 17 images
# ----------------------------------------------------------------------------------------------------------


def test_attribution_rows_columns_and_values():
    rng = _rng()
    images = rng.random((3, 3, 8, 8))
    maps = {"A": rng.random((3, 8, 8)), "B": rng.random((3, 8, 8)) - 0.5}
    fig = P.attribution_figure(images, maps, titles=["t0", "t1", "t2"], max_images=2)
    # per row: input image, then (gray background, attribution) per model
    assert len(fig.data) == 2 * (1 + 2 * 2)
    img = fig.data[0]
    assert isinstance(img, go.Image)
    np.testing.assert_array_equal(img.z, np.round(images[0].transpose(1, 2, 0) * 255).astype(np.uint8))
    attr_a, attr_b = fig.data[2], fig.data[4]
    np.testing.assert_allclose(attr_a.z, maps["A"][0])
    np.testing.assert_allclose(attr_b.z, maps["B"][0])
    gray = fig.data[1].z
    np.testing.assert_allclose(gray, (img.z.astype(float) @ [0.299, 0.587, 0.114]) / 255)
    assert fig.layout.coloraxis.cmid == 0  # diverging: B has negative attributions
    assert "t1" in [a.text for a in fig.layout.annotations]
    gray_input = P.attribution_figure(images[:, 0], {"A": maps["A"]})
    assert gray_input.data[0].z.shape == (8, 8, 3)
    with pytest.raises(TffdVizError, match=r"must have shape \(n, H, W\)"):
        P.attribution_figure(images, {"A": rng.random((3, 4, 4))})


def test_attribution_heads_columns_once_with_short_keys():
    rng = _rng()
    images = rng.random((3, 1, 8, 8))
    labels = ["A · digits_resnet8_baseline_s0", "B · digits_resnet8_tffd_s0"]
    maps = {label: rng.random((3, 8, 8)) for label in labels}
    fig = P.attribution_figure(images, maps, titles=["r0", "r1", "r2"])
    heads = [a for a in fig.layout.annotations if a.name == "column"]
    assert [a.text for a in heads] == ["<b>input</b>", "<b>A</b>", "<b>B</b>"]
    for j, a in enumerate(heads):  # centred over columns 1, 2, 3 of the top row
        dom = fig.layout[f"xaxis{'' if j == 0 else j + 1}"].domain
        assert a.x == pytest.approx((dom[0] + dom[1]) / 2)
    titles = [a.text for a in fig.layout.annotations if a.name is None]
    assert titles == ["r0", "r1", "r2"]  # one title per row, over its input; none per model tile
    assert [a.text for a in fig.layout.annotations if a.name == "models"] == [
        "A: digits_resnet8_baseline_s0 · B: digits_resnet8_tffd_s0"
    ]
    assert fig.data[2].name == f"{labels[0]} attribution"  # traces keep the full label
    short = P.attribution_figure(images, {"A": maps[labels[0]]})
    assert not [a for a in short.layout.annotations if a.name == "models"]  # nothing to spell out


def test_disagreement_gallery_tiles_titles_and_empty():
    rng = _rng()
    images = rng.random((5, 1, 8, 8))
    titles = [f"true {i} · A {i} · B {i + 1}" for i in range(5)]
    fig = P.disagreement_gallery_figure(images, titles, cols=2, max_images=4)
    assert len(fig.data) == 4
    np.testing.assert_array_equal(fig.data[3].z[..., 0], np.round(images[3, 0] * 255).astype(np.uint8))
    assert [a.text for a in fig.layout.annotations][:4] == titles[:4]
    assert "first 4 of 5" in fig.layout.title.text
    empty = P.disagreement_gallery_figure(np.zeros((0, 1, 8, 8)), [])
    assert any(a.name == "empty" for a in empty.layout.annotations)


def test_disagreement_gallery_tile_size_does_not_depend_on_the_count():
    rng = _rng()
    one = P.disagreement_gallery_figure(rng.random((1, 1, 8, 8)), ["true 3 · A 3 · B 5"], cols=6)
    nine = P.disagreement_gallery_figure(rng.random((9, 1, 8, 8)), [f"t{i}" for i in range(9)], cols=6)
    width = [d[1] - d[0] for d in (one.layout.xaxis.domain, nine.layout.xaxis.domain)]
    assert width[0] == pytest.approx(width[1]) and width[0] < 1 / 6  # one image keeps a one-in-six tile
    plot_h = [f.layout.height - f.layout.margin.t - f.layout.margin.b for f in (one, nine)]
    assert plot_h[1] == pytest.approx(2 * plot_h[0], rel=0.05)  # two rows: twice the height
    assert one.layout.annotations[0].font.size >= 11


def test_confusion_matrix_counts_and_normalised():
    m = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    fig = P.confusion_figure(m, ["cat", "dog", "ship"])
    np.testing.assert_array_equal(fig.data[0].z, m)
    assert list(fig.data[0].x) == ["cat", "dog", "ship"]
    assert fig.layout.xaxis.title.text == "predicted class" and fig.layout.yaxis.title.text == "true class"
    norm = P.confusion_figure(m, normalize=True)
    np.testing.assert_allclose(np.asarray(norm.data[0].z).sum(axis=1), 100.0)
    assert norm.data[0].z[1][0] == pytest.approx(100 * 2 / 6)


# ----------------------------------------------------------------------------------------------------------
# 14 embeddings
# ----------------------------------------------------------------------------------------------------------


def test_embedding_one_trace_per_class_and_probe_accuracy():
    coords = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    labels = np.array([2, 0, 2, 1])
    fig = P.embedding_figure(coords, torch.tensor(labels), ["zero", "one", "two"], indices=[10, 11, 12, 13])
    assert [d.name for d in fig.data] == ["zero", "one", "two"]
    np.testing.assert_array_equal(fig.data[2].x, [0.0, 2.0])
    np.testing.assert_array_equal(fig.data[2].customdata, [10, 12])
    assert len({d.marker.color for d in fig.data}) == 3
    with pytest.raises(TffdVizError, match=r"\(N, 2\)"):
        P.embedding_figure(np.ones((4, 3)), labels)
    pr = P.probe_accuracy_figure(
        {"A": {"layer1": 40.0, "layer2": 55.0}, "B": {"layer2": 60.0, "layer3": 70.0}}
    )
    assert list(pr.data[0].x) == ["layer1", "layer2", "layer3"]
    assert list(pr.data[1].y) == [None, 60.0, 70.0]
    assert pr.layout.yaxis.title.text == "linear-probe test accuracy (%)"
    table = [{"tap": "layer1", "train_acc": 99.0, "test_acc": 41.0}, {"tap": "layer2", "test_acc": 52.0}]
    assert list(P.probe_accuracy_figure({"A": table}).data[0].y) == [41.0, 52.0]


# ----------------------------------------------------------------------------------------------------------
# 15-16 history and evolution
# ----------------------------------------------------------------------------------------------------------


def test_training_curves_carry_history_values():
    hist_a, hist_b = _history(4), _history(3)
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
    assert not _nonfinite_texts(fig)  # None is missing, not a numerical fault


def test_training_curves_panels_stacked_each_with_its_own_legend():
    fig = P.training_curves_figure({"A · a_long_model_name": _history(4), "B · another_name": _history(4)})
    panel = {"x": "legend", "x2": "legend2", "x3": "legend3"}
    for tr in fig.data:
        assert tr.legend == panel[tr.xaxis], tr.name
    assert {tr.name.split(" · ")[-1] for tr in fig.data if tr.legend == "legend3"} == {"train acc", "test acc"}
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
    partial = P.training_curves_figure({"A": _history(2), "B": []})
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


# ----------------------------------------------------------------------------------------------------------
# 18 accuracy over seeds
# ----------------------------------------------------------------------------------------------------------


def test_accuracy_seeds_mean_and_std():
    rows = [{"config": "A · baseline", "seed": s, "acc": v} for s, v in enumerate((90.0, 91.0, 93.0))]
    rows += [{"config": "B · Tf-FD", "seed": 0, "acc": 94.0}]
    fig = P.accuracy_seeds_figure(rows)
    seeds, summary = fig.data
    assert list(seeds.y) == [90.0, 91.0, 93.0, 94.0]
    assert list(summary.x) == ["A · baseline", "B · Tf-FD"]
    assert summary.y[0] == pytest.approx(274 / 3)
    m = 274 / 3
    assert summary.error_y.array[0] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in (90, 91, 93)) / 2))
    assert summary.error_y.array[1] == 0.0
    assert list(summary.marker.color) == [P.COLOR_A, P.COLOR_B]


# ----------------------------------------------------------------------------------------------------------
# non-finite policy
# ----------------------------------------------------------------------------------------------------------


def _strict_json(fig: go.Figure) -> None:
    def refuse(token: str) -> None:
        raise AssertionError(f"figure JSON contains {token}")

    json.loads(fig.to_json(), parse_constant=refuse)


def test_nonfinite_values_are_counted_annotated_and_not_drawn():
    m = np.eye(3)
    m[0, 1], m[2, 2] = np.nan, np.inf
    cka = P.cka_heatmap_figure(m)
    assert _nonfinite_texts(cka) == ["⚠ 2 values are not finite (matrix: 2); they are not drawn"]
    assert np.isnan(cka.data[0].z[2][2])  # infinity becomes a gap, not a saturated cell
    assert cka.data[0].text[0][1] == ""
    _strict_json(cka)

    s = np.array([0.3, np.nan, 0.1, 0.2])
    bars = P.saliency_bars_figure({"A": s, "B": np.array([0.1, 0.2, 0.3, 0.4])})
    assert _nonfinite_texts(bars) == ["⚠ 1 value is not finite (scores A: 1); they are not drawn"]
    assert int(bars.data[0].customdata[-1, 0]) == 1  # the NaN channel is ranked last
    _strict_json(bars)

    rows = _sweep_rows()
    rows[0]["final_acc"] = float("nan")
    sweep = P.sweep_heatmap_figure(rows)
    good = [r["final_acc"] for r in rows[1:3]]
    assert sweep.data[0].z[0][0] == pytest.approx(sum(good) / 2)  # left out of the mean
    assert sweep.data[0].customdata[0][0][1] == 2
    assert "1 value is not finite (final_acc: 1)" in _nonfinite_texts(sweep)[0]

    hist = _history(3)
    hist[1]["ce"] = float("nan")
    curves = P.training_curves_figure({"A": hist})
    assert "1 value is not finite (A ce: 1)" in _nonfinite_texts(curves)[0]
    assert {d.name: d for d in curves.data}["A · CE"].y[1] is None
    _strict_json(curves)

    maps = np.ones((4, 4, 4))
    maps[0, 0, :2] = np.nan
    fm = P.feature_maps_figure(maps, np.arange(4))
    assert "2 values are not finite (maps: 2)" in _nonfinite_texts(fm)[0]
    _strict_json(fm)

    clean = P.cka_heatmap_figure(np.eye(3))
    assert not _nonfinite_texts(clean)
