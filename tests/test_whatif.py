"""Tests of tffd_viz.whatif: the 100-step digits result, lambda 0 = control, determinism,
validation, the CLI."""

from __future__ import annotations

import csv
import math
import shlex

import pytest
import torch
from conftest import CHECKPOINTS

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.cli import build_parser, config_overrides, main
from tffd_viz.data import load_dataset
from tffd_viz.errors import TffdVizError
from tffd_viz.models import create_model
from tffd_viz.train import config_from_recipe
from tffd_viz.whatif import (
    ARMS,
    WhatIf,
    WhatIfConfig,
    compare_arms,
    heldout_rows,
    heldout_subset,
    train_command,
    whatif_answer,
)

pytestmark = pytest.mark.usefixtures("single_thread")
BASELINE = "digits_resnet8_baseline_s0"
STAGES = ("layer1", "layer2", "layer3")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def baseline():
    return load_checkpoint(str(CHECKPOINTS / f"{BASELINE}.safetensors"))  # shipped: a missing file fails


def small(**kw) -> WhatIfConfig:
    return WhatIfConfig(**{"lambda_intra": 1.0, "lambda_inter": 0.5, "steps": 3, "heldout_n": 48, **kw})


def whatif_rows(model, bundle, config, card):
    """Every row of a what-if: one per arm and step, then its held-out rows (what the CLI writes)."""
    w = WhatIf(model, bundle, config, card)
    return [*w.run(), *heldout_rows(w.result())]


def without_arm(rows, arm):
    return [{k: v for k, v in r.items() if k != "arm"} for r in rows if r["arm"] == arm]


# ------------------------------------------------------------------------------------------------
# the criterion: 100 steps, lambda_intra = 1 on every stage, lambda_inter = 0, default lr


@pytest.fixture(scope="module")
def hundred_steps(baseline, digits):
    model, card = baseline
    w = WhatIf(model, digits, WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0, steps=100), card=card)
    rows = list(w.run())
    return w, rows, w.result()


@pytest.mark.slow  # 300 optimisation steps (about 50 s on an idle 2-core CPU)
def test_tffd_arm_lowers_the_heldout_intra_term_beyond_the_noise_floor(hundred_steps):
    _, rows, result = hundred_steps
    s = result["settings"]
    # the card's digits recipe: lr 0.1 peak -> 0.01, batch 64, momentum 0.9, weight decay 5e-4
    assert (s["lr"], s["batch_size"], s["momentum"], s["weight_decay"]) == (0.01, 64, 0.9, 5e-4)
    assert s["stages"] == list(STAGES) and result["step"] == 100 and len(rows) == 300
    assert result["start"]["n"] == len(load_dataset("digits").test)  # the whole digits test split
    mean = {arm: sum(result["end"][arm]["intra"][t] for t in STAGES) / len(STAGES) for arm in ARMS}
    drop = (mean["control"] - mean["tffd"]) / mean["control"]
    noise = abs(mean["control2"] - mean["control"]) / mean["control"]
    assert drop >= 0.30, (mean, drop)
    assert drop > noise, (mean, drop, noise)
    row = next(r for r in result["comparison"] if r["quantity"] == "intra mean")
    assert row["change"] == pytest.approx(-100 * drop) and row["noise"] == pytest.approx(100 * noise)
    assert row["beyond_noise"] is True
    answer = whatif_answer(result)
    assert f"{row['control']:.3g}" in answer and f"{row['tffd']:.3g}" in answer and "noise floor" in answer


@pytest.mark.slow  # 300 optimisation steps (about 50 s on an idle 2-core CPU)
def test_the_train_command_trains_with_the_whatif_settings(hundred_steps):
    w, _, result = hundred_steps
    words = shlex.split(result["command"])
    assert words[:2] == ["tffd-viz", "train"]
    args = build_parser().parse_args(words[1:])
    cfg = config_from_recipe(args.recipe, **config_overrides(args))
    assert (cfg.lambda_intra, cfg.lambda_inter, cfg.method, cfg.arch, cfg.dataset) == (
        1.0,
        0.0,
        "tffd",
        "resnet8",
        "digits",
    )
    assert (cfg.batch_size, cfg.momentum, cfg.weight_decay) == (64, 0.9, 5e-4)
    assert cfg.lr == pytest.approx(10 * w.settings["lr"])


@pytest.mark.slow  # 300 optimisation steps (about 50 s on an idle 2-core CPU)
def test_rows_log_the_weighted_total_and_the_loss(hundred_steps):
    _, rows, _ = hundred_steps
    for row in rows[:30]:
        total = 1.0 * sum(row[f"intra_{t}"] for t in STAGES) / 3  # lambda_inter = 0
        assert row["tffd_total"] == pytest.approx(total, rel=1e-5)
        expected = row["ce"] + total if row["arm"] == "tffd" else row["ce"]
        assert row["loss"] == pytest.approx(expected, rel=1e-5)


# ------------------------------------------------------------------------------------------------


def test_lambda_zero_arm_equals_the_control_exactly(baseline, digits):
    model, card = baseline
    w = WhatIf(model, digits, small(lambda_intra=0.0, lambda_inter=0.0), card=card)
    rows = list(w.run())
    assert without_arm(rows, "tffd") == without_arm(rows, "control")
    for (k, a), b in zip(
        w.model("control").state_dict().items(), w.model("tffd").state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    # not vacuous: with a lambda the arms part after the first step, and the second control differs at once
    rows = list(WhatIf(model, digits, small(), card=card).run())
    control, tffd, control2 = (without_arm(rows, a) for a in ARMS)
    assert control[0]["ce"] == tffd[0]["ce"] and control[1]["ce"] != tffd[1]["ce"]
    assert control2[0]["ce"] != control[0]["ce"]


def test_same_inputs_give_identical_rows_and_the_start_model_is_untouched(baseline, digits):
    model, card = baseline
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    first = whatif_rows(model, digits, small(), card)
    second = whatif_rows(model, digits, small(), card)
    assert first == second
    assert whatif_rows(model, digits, small(seed=5), card) != first
    assert (
        len(first) == 3 * 3 + 6
        and [r["phase"] for r in first[-6:]] == ["heldout_start"] * 3 + ["heldout_end"] * 3
    )
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert [p.requires_grad for p in model.parameters()] == flags and all(
        p.grad is None for p in model.parameters()
    )


def test_a_run_stopped_early_and_continued_equals_an_uninterrupted_one(baseline, digits):
    model, card = baseline
    whole = list(WhatIf(model, digits, small(steps=4), card=card).run())
    w = WhatIf(model, digits, small(steps=4), card=card)
    for row in w.run():
        if row["step"] == 2 and row["arm"] == "tffd":
            break  # a consumer stopping mid-step (Cancel) still leaves the step's three rows recorded
    assert w.step == 2 and len(w.rows) == 6
    partial = w.result()
    assert partial["step"] == 2 and set(partial["end"]) == set(ARMS)
    list(w.run())
    assert w.rows == whole


def test_heldout_subset_is_fixed_and_whole_when_small(digits):
    assert heldout_subset(digits.test, 10_000) is digits.test
    a, b = heldout_subset(digits.test, 50), heldout_subset(digits.test, 50)
    assert len(a) == 50 and torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_compare_arms_restates_the_formulas():
    def h(acc, intra, rel):
        return {
            "n": 10,
            "accuracy": acc,
            "intra": {"s": intra},
            "intra_std": {"s": 0.1},
            "inter": {},
            "inter_std": {},
            "intra_rel": {"s": rel},
            "intra_rel_std": {"s": 0.01},
            "inter_rel": {},
            "inter_rel_std": {},
        }

    rows = compare_arms(
        h(90.0, 2.0, 1.0),
        {"control": h(91.0, 2.0, 1.0), "tffd": h(90.5, 1.0, 0.8), "control2": h(91.2, 2.1, 0.99)},
    )
    by = {r["quantity"]: r for r in rows}
    assert by["accuracy"]["change"] == pytest.approx(-0.5) and by["accuracy"]["noise"] == pytest.approx(0.2)
    assert by["intra s"]["change"] == pytest.approx(-50.0) and by["intra s"]["noise"] == pytest.approx(5.0)
    assert by["intra s"]["beyond_noise"] and by["intra s"]["control_std"] == 0.1
    rel = by["intra s (relative)"]
    assert rel["change"] == pytest.approx(-20.0) and rel["noise"] == pytest.approx(1.0)
    assert "intra mean" not in by  # one stage: no mean row


# ------------------------------------------------------------------------------------------------
# validation: a clear error and no run


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"lambda_intra": -1.0}, "lambda_intra"),
        ({"lambda_inter": math.nan}, "lambda_inter"),
        ({"lambda_intra": math.inf}, "finite"),
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"noise_seed": 0}, "noise_seed"),
        ({"stages": ("layer9",)}, "layer9"),
        ({"pairs": (("layer3", "layer1"),)}, "shallow"),
        ({"pairs": (("layer1", "fc"),)}, "fc"),
    ],
)
def test_bad_settings_raise_before_any_run(baseline, digits, changes, words):
    model, card = baseline
    with pytest.raises(TffdVizError, match=words):
        WhatIf(model, digits, small(**changes), card=card)


@pytest.mark.parametrize(("num_classes", "in_chans", "words"), [(7, 1, "7"), (10, 3, "in_chans 1")])
def test_a_model_that_does_not_fit_the_dataset_is_refused(digits, num_classes, in_chans, words):
    model = create_model("resnet8", num_classes=num_classes, in_chans=in_chans)
    with pytest.raises(TffdVizError, match=words):
        WhatIf(model, digits, small())


def test_train_command_lists_the_chosen_layers(baseline, digits):
    model, card = baseline
    w = WhatIf(model, digits, small(stages=(2,), pairs=(), lambda_inter=0.0), card=card)
    command = train_command(w.settings)
    assert "--stages layer3 --pairs none" in command and "--lambda-inter 0 " in command


# ------------------------------------------------------------------------------------------------


def test_cli_writes_the_rows_csv_and_the_html_figure(baseline, tmp_path, capsys):
    out = tmp_path / "wi.csv"
    assert (
        main(
            [
                "whatif",
                "--a",
                BASELINE,
                "--lambda-intra",
                "1",
                "--lambda-inter",
                "0",
                "--stages",
                "layer2",
                "--steps",
                "2",
                "--heldout-n",
                "40",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    with out.open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["arm"] for r in rows[:3]] == list(ARMS) and len(rows) == 2 * 3 + 6
    assert {"arm", "step", "ce", "intra_layer2", "tffd_total", "accuracy", "intra_rel_layer2"} <= set(rows[0])
    model, card = baseline
    w = WhatIf(
        model,
        load_dataset("digits"),
        WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0, stages=("layer2",), steps=2, heldout_n=40),
        card=card,
    )
    expected = [*list(w.run()), *heldout_rows(w.result())]
    assert float(rows[4]["ce"]) == pytest.approx(expected[4]["ce"], rel=1e-5)
    assert float(rows[-1]["intra_layer2"]) == pytest.approx(expected[-1]["intra_layer2"], rel=1e-4)
    html = out.with_suffix(".html").read_text()
    assert "plotly-graph-div" in html and "Tf-FD arm" in html
    assert "layer2 intra term (held-out)" in capsys.readouterr().out
    assert main(["whatif", "--a", BASELINE, "--lambda-intra", "-1", "--out", str(out), "--quiet"]) == 2
