"""AppTest of the Sweep page: the sweep table's heatmaps (cells = mean over seeds),
or the command that makes one."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CHECKPOINTS, CIFAR_ROOT, cifar_pair, figure_titled

from tffd_viz.sweeps import sweep_table


def test_sweep_heatmaps_equal_the_table(app_at, assert_app_ok, chart_figures):
    at = app_at("sweep", n=16)
    assert_app_ok(at)
    assert at.title[0].value == "Sweep"
    rows = sweep_table(CHECKPOINTS / "digits_sweep")  # shipped: checkpoints/digits_sweep.json/.csv
    figures = chart_figures(at)
    acc = figure_titled(figures, "Sweep: test accuracy")
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r.get("final_acc") is not None:
            key = (str(r.get("layers")), float(r["lambda_intra"]), float(r["lambda_inter"]))
            cells.setdefault(key, []).append(float(r["final_acc"]))
    drawn = np.concatenate([np.asarray(t.z, dtype=float).ravel() for t in acc.data])
    drawn = np.sort(drawn[np.isfinite(drawn)])
    np.testing.assert_allclose(drawn, np.sort([np.mean(v) for v in cells.values()]), rtol=1e-9)
    assert len(at.dataframe[0].value) == len(rows)
    value = at.selectbox(key="sweep-value")
    assert value.value.startswith("intra_")
    at.selectbox(key="sweep-value").set_value("ce").run()
    assert_app_ok(at)
    figure_titled(chart_figures(at), "Sweep: mean ce")


@pytest.mark.slow
@pytest.mark.data
def test_without_a_sweep_table_the_page_says_how_to_make_one(app_at, assert_app_ok):
    a, b = cifar_pair("cifar10")  # no cifar10 sweep table is shipped
    assert (
        not (CHECKPOINTS / "cifar10_sweep.json").exists() and not (CHECKPOINTS / "cifar10_sweep.csv").exists()
    )
    at = app_at("sweep", a=a, b=b, n=16, root=CIFAR_ROOT, timeout=300)
    assert_app_ok(at)
    assert not at.get("plotly_chart")
    assert any(
        "tffd-viz sweep --recipe digits" in i.value and "checkpoints/cifar10_sweep" in i.value
        for i in at.info
    )
