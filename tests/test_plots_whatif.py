"""Tests of tffd_viz.plots.whatif on hand-made what-if rows and results (no training)."""

from __future__ import annotations

import math

import pytest

from tffd_viz.errors import TffdVizError
from tffd_viz.plots.whatif import ARM_COLORS, curve_quantities, whatif_curves_figure, whatif_heldout_figure
from tffd_viz.whatif import ARM_LABELS, ARMS


def rows(steps: int = 4) -> list[dict]:
    out = []
    for step in range(1, steps + 1):
        for i, arm in enumerate(ARMS):
            out.append(
                {
                    "arm": arm,
                    "phase": "train",
                    "step": step,
                    "ce": 1.0 / step + i,
                    "loss": 0.0,
                    "tffd_total": 0.1 * step,
                    "intra_layer1": 2.0 + i + step,
                    "intra_layer2": 3.0,
                    "inter_layer1->layer2": 0.5 * step,
                    "batch_acc": 90.0,
                }
            )
    return out


def heldout(scale: float) -> dict:
    terms = {"layer1": 1.0 * scale, "layer2": 2.0 * scale}
    return {
        "n": 10,
        "accuracy": 90.0 + scale,
        "intra": terms,
        "intra_std": {k: 0.1 for k in terms},
        "inter": {"layer1->layer2": 3.0 * scale},
        "inter_std": {"layer1->layer2": 0.2},
        "intra_rel": {k: v / 10 for k, v in terms.items()},
        "intra_rel_std": {k: 0.01 for k in terms},
        "inter_rel": {"layer1->layer2": 0.3 * scale},
        "inter_rel_std": {"layer1->layer2": None},
    }


def test_one_panel_per_quantity_and_one_line_per_arm():
    data = rows()
    assert curve_quantities(data) == [
        "ce",
        "intra_layer1",
        "intra_layer2",
        "inter_layer1->layer2",
        "tffd_total",
    ]
    fig = whatif_curves_figure(data, total_steps=10)
    titles = [a.text for a in fig.layout.annotations]
    assert titles == [
        "cross-entropy",
        "intra layer1",
        "intra layer2",
        "inter layer1->layer2",
        "λ-weighted Tf-FD total",
    ]
    assert len(fig.data) == 3 * 5
    by_panel = {}
    for t in fig.data:
        by_panel.setdefault(t.xaxis, {})[t.name] = t
    for axis, key in zip(("x", "x2", "x3", "x4", "x5"), curve_quantities(data), strict=True):
        for arm in ARMS:
            trace = by_panel[axis][ARM_LABELS[arm]]
            assert list(trace.y) == [r[key] for r in data if r["arm"] == arm]
            assert list(trace.x) == [1, 2, 3, 4] and trace.line.color == ARM_COLORS[arm]
    assert sum(t.showlegend for t in fig.data) == 3  # one legend entry per arm
    assert list(fig.layout.xaxis.range) == [0.5, 10.5]


def test_curves_leave_out_non_finite_values_and_say_so():
    data = rows(2)
    data[1]["ce"] = math.nan
    fig = whatif_curves_figure(data)
    tffd_ce = next(t for t in fig.data if t.name == ARM_LABELS["tffd"] and t.xaxis == "x")
    assert tffd_ce.y[0] is None and tffd_ce.y[1] == data[4]["ce"]
    note = next(a for a in fig.layout.annotations if a.name == "nonfinite")
    assert "1 value is not finite" in note.text


def test_curves_without_rows_and_with_bad_rows():
    empty = whatif_curves_figure([])
    assert any(a.name == "empty" for a in empty.layout.annotations)
    with pytest.raises(TffdVizError, match="list of dicts"):
        whatif_curves_figure([1, 2])


def test_heldout_bars_hold_the_values_and_their_spread():
    result = {
        "step": 7,
        "start": heldout(1.0),
        "end": {"control": heldout(1.1), "tffd": heldout(0.5), "control2": heldout(1.05)},
    }
    fig = whatif_heldout_figure(result)
    raw = {t.name: t for t in fig.data if t.xaxis == "x"}
    rel = {t.name: t for t in fig.data if t.xaxis == "x2"}
    acc = {t.legendgroup: t for t in fig.data if t.xaxis == "x3"}
    tffd = f"{ARM_LABELS['tffd']}, step 7"
    assert list(raw[tffd].x) == ["intra layer1", "intra layer2", "inter layer1->layer2"]
    assert list(raw[tffd].y) == [0.5, 1.0, 1.5] and list(raw[tffd].error_y.array) == [0.1, 0.1, 0.2]
    assert (
        list(rel["start"].y) == [0.1, 0.2, pytest.approx(0.3)] and list(rel["start"].error_y.array)[-1] == 0
    )
    assert acc["tffd"].y[0] == 90.5 and acc["start"].y[0] == 91.0
    with pytest.raises(TffdVizError, match="start"):
        whatif_heldout_figure({"end": {}, "step": 1})
