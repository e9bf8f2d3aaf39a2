"""Tests of tffd_viz.plots as a whole: the figure registry, the re-exports and the non-finite policy."""

from __future__ import annotations

import importlib
import json

import numpy as np
import plotly.graph_objects as go
import pytest
import torch
from plots_helpers import epoch_history, nonfinite_texts, seeded_rng, sweep_rows

from tffd_viz import plots as P
from tffd_viz.whatif import ARMS


# one small call per registered figure: checks the registry and that every figure renders to HTML
def _cases() -> dict[str, go.Figure]:
    rng = seeded_rng()
    maps = rng.random((6, 8, 8))
    order = np.argsort(-maps.mean(axis=(1, 2)), kind="stable")
    taps = ["layer1", "layer2", "layer3"]
    confusion = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
    terms = {"layer1": 0.5, "layer2": 0.25}
    held = {
        "n": 8,
        "batches": 2,
        "accuracy": 90.0,
        "energy": terms,
        "intra": terms,
        "intra_rel": terms,
        "inter": {"layer1->layer2": 0.1},
        "inter_rel": {"layer1->layer2": 0.2},
    }
    held |= {f"{k}_std": dict.fromkeys(v, 0.01) for k, v in list(held.items()) if isinstance(v, dict)}
    steps = [{"arm": arm, "step": 1, "ce": 1.0, "intra_layer1": 0.5, "tffd_total": 0.1} for arm in ARMS]
    return {
        "saliency_bars": P.saliency_bars_figure({"A": rng.random(6), "B": torch.rand(6)}, tap="layer1"),
        "rank_agreement": P.rank_agreement_figure(np.eye(3), ["tffd", "l1", "taylor"]),
        "rank_band": P.rank_band_figure(np.arange(1, 7), np.arange(1, 7) - 1, np.arange(1, 7) + 1),
        "split_stability": P.split_stability_figure(
            {"A": {"rank": np.arange(6), "p_salient": np.linspace(1, 0, 6)}}
        ),
        "terms_bar": P.terms_bar_figure({"A": {"intra": {"layer1": 0.1}}, "B": {"intra": {"layer1": 0.05}}}),
        "weighted_contributions": P.weighted_contributions_figure({"A": {"ce": 1.0, "intra": 1e-4}}),
        "grad_share": P.grad_share_figure(rng.random((3, 2)), ["ce", "intra", "inter"], ["stage1", "stage2"]),
        "sweep_heatmap": P.sweep_heatmap_figure(sweep_rows()),
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
        "training_curves": P.training_curves_figure({"A": epoch_history(), "B": epoch_history(2)}),
        "rank_evolution": P.rank_evolution_figure(np.stack([rng.permutation(6) for _ in range(3)])),
        "crossings": P.crossings_figure({"A": [{"epoch": 1, "crossings": 2, "spearman": 0.5}]}),
        "confusion": P.confusion_figure(rng.integers(0, 9, (3, 3))),
        "disagreement_gallery": P.disagreement_gallery_figure(rng.random((3, 3, 8, 8)), ["x", "y", "z"]),
        "accuracy_seeds": P.accuracy_seeds_figure([{"config": "A", "seed": 0, "acc": 90.0}]),
        "class_error": P.class_error_figure({"A": confusion}, ["a", "b", "c"]),
        "confusion_pair": P.confusion_pair_figure({"A": confusion, "B": confusion.T}, ["a", "b", "c"]),
        "accuracy_breakdown": P.accuracy_breakdown_figure({"A": confusion}, ["a", "b", "c"]),
        "heldout_terms": P.heldout_terms_figure({"A": held, "B": held}),
        "cosine_reference": P.cosine_reference_figure(
            {"A": {"paired": {"layer1": 0.4}, "random": {"layer1": 0.3}}}
        ),
        "cka_reference": P.cka_reference_figure({"layer1": 0.9}, {"layer1": [0.95, 0.97]}),
        "noise_ratio": P.noise_ratio_figure(
            [
                {
                    "quantity": "q",
                    "item": "",
                    "B − A": 0.2,
                    "noise ±": 0.1,
                    "noise source": "seeds",
                    "verdict": "beyond noise",
                }
            ]
        ),
        "saliency_gap": P.saliency_gap_figure({"A": rng.random(6), "B": rng.random(6)}, tap="layer1"),
        "whatif_curves": P.whatif_curves_figure(steps),
        "whatif_heldout": P.whatif_heldout_figure(
            {"step": 1, "start": held, "end": dict.fromkeys(ARMS, held)}
        ),
    }


@pytest.mark.parametrize(
    "module",
    ["accuracy", "embeddings", "losses", "maps", "noise", "ranking", "similarity", "training", "whatif"],
)
def test_every_public_name_of_a_module_is_re_exported_by_the_package(module):
    sub = importlib.import_module(f"tffd_viz.plots.{module}")
    assert sub.__all__ and set(sub.__all__) <= set(P.__all__)
    for name in sub.__all__:
        assert getattr(P, name) is getattr(sub, name), name
    assert {n for n in P.__all__ if not hasattr(P, n)} == set()


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


def _strict_json(fig: go.Figure) -> None:
    def refuse(token: str) -> None:
        raise AssertionError(f"figure JSON contains {token}")

    json.loads(fig.to_json(), parse_constant=refuse)


def test_nonfinite_values_are_counted_annotated_and_not_drawn():
    m = np.eye(3)
    m[0, 1], m[2, 2] = np.nan, np.inf
    cka = P.cka_heatmap_figure(m)
    assert nonfinite_texts(cka) == ["⚠ 2 values are not finite (matrix: 2); they are not drawn"]
    assert np.isnan(cka.data[0].z[2][2])  # infinity becomes a gap, not a saturated cell
    assert cka.data[0].text[0][1] == ""
    _strict_json(cka)

    s = np.array([0.3, np.nan, 0.1, 0.2])
    bars = P.saliency_bars_figure({"A": s, "B": np.array([0.1, 0.2, 0.3, 0.4])})
    assert nonfinite_texts(bars) == ["⚠ 1 value is not finite (scores A: 1); they are not drawn"]
    assert int(bars.data[0].customdata[-1, 0]) == 1  # the NaN channel is ranked last
    _strict_json(bars)

    rows = sweep_rows()
    rows[0]["final_acc"] = float("nan")
    sweep = P.sweep_heatmap_figure(rows)
    good = [r["final_acc"] for r in rows[1:3]]
    assert sweep.data[0].z[0][0] == pytest.approx(sum(good) / 2)  # left out of the mean
    assert sweep.data[0].customdata[0][0][1] == 2
    assert "1 value is not finite (final_acc: 1)" in nonfinite_texts(sweep)[0]

    hist = epoch_history(3)
    hist[1]["ce"] = float("nan")
    curves = P.training_curves_figure({"A": hist})
    assert "1 value is not finite (A ce: 1)" in nonfinite_texts(curves)[0]
    assert {d.name: d for d in curves.data}["A · CE"].y[1] is None
    _strict_json(curves)

    maps = np.ones((4, 4, 4))
    maps[0, 0, :2] = np.nan
    fm = P.feature_maps_figure(maps, np.arange(4))
    assert "2 values are not finite (maps: 2)" in nonfinite_texts(fm)[0]
    _strict_json(fm)

    clean = P.cka_heatmap_figure(np.eye(3))
    assert not nonfinite_texts(clean)
