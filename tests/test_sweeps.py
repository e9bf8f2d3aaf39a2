"""Tests of tffd_viz.sweeps: layer presets, the grid check, training a grid,
and the one table reader/writer."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import pytest

from tffd_viz import terms, train
from tffd_viz.errors import TffdVizError
from tffd_viz.sweeps import (
    LAYER_PRESETS,
    SWEEP_KEYS,
    run_sweep,
    sweep_prefix,
    sweep_table,
    sweep_value_columns,
)
from tffd_viz.train import TrainConfig, config_from_recipe


def tiny(**overrides) -> TrainConfig:
    """A digits run of about a second: resnet8, 128 training images per epoch, one thread."""
    return config_from_recipe(
        "digits",
        **{"epochs": 1, "limit_train": 128, "probe_size": 32, "quiet": True, "threads": 1, **overrides},
    )


def test_public_names_stay_importable_from_train_and_terms() -> None:
    assert (
        train.run_sweep is run_sweep
        and train.LAYER_PRESETS is LAYER_PRESETS
        and train.SWEEP_KEYS is SWEEP_KEYS
    )
    assert train.sweep_prefix is sweep_prefix
    assert terms.sweep_table is sweep_table and terms.sweep_value_columns is sweep_value_columns


def test_layer_presets_of_four_stages() -> None:
    assert {name: preset(4) for name, preset in LAYER_PRESETS.items()} == {
        "all": (None, None),
        "intra-only": (None, []),
        "inter-only": ([], None),
        "last2": ([2, 3], [(2, 3)]),
        "adjacent": (None, [(0, 1), (1, 2), (2, 3)]),
    }


def test_sweep_prefix_drops_a_table_suffix() -> None:
    assert (
        sweep_prefix("runs/s.csv") == sweep_prefix("runs/s.json") == sweep_prefix("runs/s") == Path("runs/s")
    )
    assert sweep_prefix("runs/s.v2") == Path("runs/s.v2")


def test_sweep_table_json_csv_and_value_columns(tmp_path):
    rows = [
        {
            "method": "baseline",
            "layers": "all",
            "lambda_intra": 0.0,
            "lambda_inter": 0.0,
            "seed": 0,
            "limit_train": None,
            "final_acc": 97.5,
            "ce": 0.1,
            "tffd_total": 0.0,
            "intra_layer1": 0.9,
            "inter_layer1->layer2": 0.8,
        },
        {
            "method": "tffd",
            "layers": "all",
            "lambda_intra": 8e-4,
            "lambda_inter": 5e-4,
            "seed": 1,
            "limit_train": None,
            "final_acc": 98.25,
            "ce": 0.2,
            "tffd_total": 0.001,
            "intra_layer1": 0.7,
            "inter_layer1->layer2": 0.6,
        },
    ]
    (tmp_path / "s.json").write_text(json.dumps(rows))
    with (tmp_path / "c.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    assert sweep_table(tmp_path / "s") == rows
    assert sweep_table(tmp_path / "s.json") == rows
    from_csv = sweep_table(tmp_path / "c")
    assert from_csv == rows
    assert isinstance(from_csv[1]["seed"], int) and from_csv[1]["lambda_intra"] == 8e-4
    assert sweep_value_columns(rows) == [
        "final_acc",
        "ce",
        "tffd_total",
        "intra_layer1",
        "inter_layer1->layer2",
    ]
    assert sweep_value_columns([{"final_acc": None, "intra_x": "n/a", "ce": 1}]) == ["ce"]
    with pytest.raises(TffdVizError, match="tffd-viz sweep"):
        sweep_table(tmp_path / "absent")
    (tmp_path / "bad.json").write_text('{"not": "a list"}')
    with pytest.raises(TffdVizError, match="not a list of row objects"):
        sweep_table(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(TffdVizError, match="cannot read the sweep table"):
        sweep_table(tmp_path / "broken")


def test_a_sweep_continues_a_json_table_and_refuses_a_broken_one(tmp_path, monkeypatch) -> None:
    # the rows already in <prefix>.json are not trained again (train is never called here)
    base = tiny(limit_train=64)
    done = {k: getattr(base, k) for k in SWEEP_KEYS if k not in ("layers", "method")}
    old = [
        {
            **done,
            "layers": "all",
            "method": "baseline",
            "lambda_intra": 0.0,
            "lambda_inter": 0.0,
            "final_acc": 50.0,
        }
    ]
    (tmp_path / "sw.json").write_text(json.dumps(old))
    monkeypatch.setattr(train, "train", lambda cfg: pytest.fail(f"retrained {cfg}"))
    rows = run_sweep(base, {"lambda_intra": [0.0], "lambda_inter": [0.0]}, tmp_path / "sw.csv")
    assert rows == old
    (tmp_path / "sw.json").write_text('{"rows": 1}')
    with pytest.raises(TffdVizError, match="not a list of row objects"):
        run_sweep(base, {"lambda_intra": [0.0], "lambda_inter": [0.0]}, tmp_path / "sw")


@pytest.mark.slow
def test_sweep_writes_csv_json_and_skips_existing_rows(tmp_path: Path) -> None:
    base = tiny(limit_train=64)
    prefix = tmp_path / "sweep"
    grid = {"lambda_intra": [0.0, 1.0], "lambda_inter": [0.0], "layers": ["all"], "seeds": [0]}
    rows = run_sweep(base, grid, prefix)
    assert len(rows) == 2 and [r["method"] for r in rows] == ["baseline", "tffd"]
    assert {"final_acc", "ce", "intra_layer1", "inter_layer2->layer3", "train_seconds"} <= set(rows[0])
    with (tmp_path / "sweep.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert json.loads((tmp_path / "sweep.json").read_text()) == rows
    assert [float(r["final_acc"]) for r in table] == [r["final_acc"] for r in rows]
    assert [float(r["lambda_intra"]) for r in table] == [0.0, 1.0]
    # rerun with one more setting: old rows kept as they were (not retrained), one new row
    grid2 = dict(grid, layers=["all", "intra-only"], lambda_intra=[1.0])
    rows2 = run_sweep(base, grid2, prefix)
    assert rows2[:2] == rows and len(rows2) == 3 and rows2[2]["layers"] == "intra-only"
    assert "inter_layer1->layer2" not in rows2[2] and "intra_layer3" in rows2[2]


def test_sweep_checks_its_whole_grid_before_the_first_row(tmp_path, monkeypatch) -> None:
    prefix = tmp_path / "sw"
    base = tiny(limit_train=64)
    with pytest.raises(TffdVizError) as info:
        run_sweep(base, {"lambda_intra": [0.0, -5.0], "lambda_inter": [0.0]}, prefix)
    assert (
        "sweep row 2 of 2 (seed=0, layers=all, lambda_intra=-5.0, lambda_inter=0.0): option lambda_intra = "
        "-5.0 is not allowed: a finite number >= 0" in str(info.value)
    )
    with pytest.raises(TffdVizError, match=r"sweep row 3 of 4 \(seed=-1, .*option seed = -1"):
        run_sweep(base, {"seeds": [0, -1], "lambda_intra": [0.0, 1.0], "lambda_inter": [0.0]}, prefix)
    with pytest.raises(TffdVizError, match=r"sweep grid \['lambda_inter'\] is empty"):
        run_sweep(base, {"lambda_inter": []}, prefix)
    with pytest.raises(TffdVizError, match="unknown layer preset"):
        run_sweep(base, {"layers": ["all", "bogus"]}, prefix)
    # a preset that asks for a stage the architecture lacks (resnet8 has 3 stage taps) fails up front too
    monkeypatch.setitem(LAYER_PRESETS, "fourth-stage", lambda n: ([n], []))
    with pytest.raises(
        TffdVizError,
        match=r"sweep row 2 of 2 \(seed=0, layers=fourth-stage.*stage index 3 out of "
        r"range for taps \['layer1', 'layer2', 'layer3'\]",
    ):
        run_sweep(base, {"layers": ["all", "fourth-stage"]}, prefix)
    assert list(tmp_path.iterdir()) == []  # no row was trained, no table written


@pytest.mark.slow
def test_sweep_records_a_diverged_row_and_goes_on(tmp_path) -> None:
    prefix = tmp_path / "sw"
    base = tiny(limit_train=256, probe_size=16)  # lambda_intra = 1e7 diverges in epoch 1 (measured)
    rows = run_sweep(base, {"lambda_intra": [1e7, 0.0], "lambda_inter": [0.0]}, prefix)
    assert [r["lambda_intra"] for r in rows] == [1e7, 0.0]
    bad, good = rows
    assert bad["diverged"] is True and re.fullmatch(r"epoch 1 step [1-4] term \S+", bad["diverged_at"]), bad
    assert "final_acc" not in bad and bad["method"] == "tffd"
    assert good["diverged"] is False and good["diverged_at"] is None and math.isfinite(good["final_acc"])
    with (tmp_path / "sw.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert [r["diverged"] for r in table] == ["True", "False"] and table[0]["diverged_at"] == bad[
        "diverged_at"
    ]
    assert table[0]["final_acc"] == "" and float(table[1]["final_acc"]) == good["final_acc"]
    assert json.loads((tmp_path / "sw.json").read_text()) == rows
    # a rerun does not retrain the diverged row
    assert run_sweep(base, {"lambda_intra": [1e7, 0.0], "lambda_inter": [0.0]}, prefix) == rows
