"""Tests of tffd_viz.recipes: the recipes are the reference's settings,
and the one source of the paper's numbers."""

from __future__ import annotations

import dataclasses

import pytest

from tffd_viz import losses, terms, train
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA, PAPER_WARMUP, RECIPES
from tffd_viz.train import TrainConfig, config_from_recipe


def test_paper_recipe_is_the_reference_setting() -> None:
    # The Tf-FD authors' train_kd.py (Teacher-free-Distillation, newest version), line by line:
    r = RECIPES["paper"]
    assert r["nesterov"] is True  # SGD(..., nesterov=True), lines 191/197
    assert (r["crop_padding"], r["padding_mode"], r["flip"]) == (
        4,
        "reflect",
        True,
    )  # Pad(4, 'reflect'), line 212
    assert (r["lr"], r["momentum"], r["weight_decay"], r["batch_size"]) == (
        0.1,
        0.9,
        5e-4,
        128,
    )  # argparse defaults
    assert (r["schedule"], tuple(r["milestones"]), r["gamma"], r["epochs"]) == (
        "multistep",
        (150, 180, 210),
        0.1,
        240,
    )
    assert r["warmup"] == 20  # --kd-warm-up 20, line 73
    assert (r["lambda_intra"], r["lambda_inter"]) == (8e-4, 5e-4)  # the reference README's command
    assert r["kd_temperature"] == 4.0  # --T 4 (Tf-FD+ logit KD)
    # the shipped cpu30 / digits checkpoints were trained with plain momentum and zero padding
    for name in ("cpu30", "digits"):
        assert (RECIPES[name]["nesterov"], RECIPES[name]["padding_mode"]) == (False, "zeros"), name
    assert RECIPES["digits"]["flip"] is False and RECIPES["digits"]["arch"] == "resnet8"
    assert set(RECIPES) >= {"paper", "cpu30", "digits"}
    assert all(set(r) == set(RECIPES["paper"]) for r in RECIPES.values())


@pytest.mark.parametrize(
    ("name", "differs"),
    [
        (
            "cpu30",
            {
                "epochs": 30,
                "lr": 0.15,
                "schedule": "onecycle",
                "milestones": (),
                "pct_start": 0.2,
                "warmup": 3.0,
                "nesterov": False,
                "padding_mode": "zeros",
            },
        ),
        (
            "digits",
            {
                "arch": "resnet8",
                "dataset": "digits",
                "epochs": 30,
                "batch_size": 64,
                "schedule": "onecycle",
                "milestones": (),
                "crop_padding": 2,
                "flip": False,
                "warmup": 3.0,
                "nesterov": False,
                "padding_mode": "zeros",
            },
        ),
        (
            "imagenet",
            {
                "arch": "resnet18",
                "dataset": "imagefolder",
                "epochs": 90,
                "batch_size": 256,
                "milestones": (30, 60),
                "nesterov": False,
                "weight_decay": 1e-4,
                "crop_padding": 0,
                "padding_mode": "zeros",
                "augment": "random_resized_crop",
            },
        ),
    ],
)
def test_other_recipes_are_the_paper_recipe_with_their_differences(name: str, differs: dict) -> None:
    # the shipped checkpoints of these recipes were trained with exactly these values
    assert RECIPES[name] == {**RECIPES["paper"], **differs}


def test_train_config_defaults_are_the_paper_recipe() -> None:
    defaults = TrainConfig()
    assert {k: getattr(defaults, k) for k in RECIPES["paper"]} == RECIPES["paper"]
    assert defaults.method == "tffd"
    # a config from the recipe differs from the defaults only in the recorded recipe name and hyper-parameters
    from_recipe = config_from_recipe("paper")
    assert dataclasses.replace(from_recipe, recipe=None, hparams={}) == defaults
    assert from_recipe.hparams == {**RECIPES["paper"], "milestones": [150, 180, 210]}


def test_paper_numbers_have_one_source_the_others_import() -> None:
    assert (PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, PAPER_WARMUP) == (8e-4, 5e-4, 20)
    paper = RECIPES["paper"]
    assert (paper["lambda_intra"], paper["lambda_inter"], paper["warmup"]) == (
        PAPER_LAMBDA_INTRA,
        PAPER_LAMBDA_INTER,
        PAPER_WARMUP,
    )
    assert (losses.PAPER_LAMBDA_INTRA, losses.PAPER_LAMBDA_INTER, losses.PAPER_WARMUP) == (
        PAPER_LAMBDA_INTRA,
        PAPER_LAMBDA_INTER,
        PAPER_WARMUP,
    )
    tffd = losses.TfFD()
    assert (tffd.lambda_intra, tffd.lambda_inter) == (PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER)
    assert train.RECIPES is RECIPES
    rows = terms.TermsReport(taps=["a"], ce=1.0, intra={"a": 2.0}).rows()
    assert rows[1]["weighted"] == pytest.approx(
        PAPER_LAMBDA_INTRA * 2.0
    )  # the default lambdas are the paper's
