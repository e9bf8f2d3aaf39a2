"""Tests of tffd_viz.pairs: which shipped pair is compared by default."""

from __future__ import annotations

import pytest
from conftest import CHECKPOINTS

from tffd_viz.checkpoints import list_checkpoints
from tffd_viz.errors import CheckpointError
from tffd_viz.pairs import DEFAULT_PAIRS, SHIPPED_PAIRS, available_pairs, default_pair, pair_title

PAPER_A, PAPER_B = "cifar100_resnet20_baseline_paper240_s0", "cifar100_resnet20_tffd_paper240_s0"
CPU_A, CPU_B = "cifar100_resnet20_baseline_s0", "cifar100_resnet20_tffd_s0"


def test_the_paper_pair_is_the_cifar100_default_once_both_runs_finished() -> None:
    cards: dict[str, dict] = {CPU_A: {}, CPU_B: {"completed": True}}
    assert default_pair("cifar100", cards) == ("cifar100-cpu30", CPU_A, CPU_B)
    cards[PAPER_A] = {"completed": True}
    assert default_pair("cifar100", cards)[0] == "cifar100-cpu30"  # model B still missing
    cards[PAPER_B] = {"completed": False}  # written at a time limit: still in training
    assert default_pair("cifar100", cards)[0] == "cifar100-cpu30"
    cards[PAPER_B] = {"completed": True}
    assert default_pair("cifar100", cards) == ("cifar100-paper240", PAPER_A, PAPER_B)
    assert list(available_pairs(cards)) == ["cifar100-paper240", "cifar100-cpu30"]


def test_model_b_is_the_first_finished_candidate() -> None:
    a, (b1, b2) = SHIPPED_PAIRS["digits"].baseline, SHIPPED_PAIRS["digits"].tffd
    assert available_pairs({a: {}, b2: {}}) == {"digits": (a, b2)}
    assert available_pairs({a: {}, b1: {}, b2: {}}) == {"digits": (a, b1)}
    assert available_pairs({a: {}, b1: {"completed": False}, b2: {}}) == {"digits": (a, b2)}
    assert available_pairs({b1: {}, b2: {}}) == {}


def test_no_pair_names_the_missing_and_unfinished_files() -> None:
    with pytest.raises(CheckpointError, match=r"missing \['cifar100_resnet20_baseline_paper240_s0'") as err:
        default_pair("cifar100", {PAPER_B: {"completed": False}, CPU_A: {}})
    assert f"unfinished (completed: false) ['{PAPER_B}']" in str(err.value)
    with pytest.raises(CheckpointError, match="no shipped pair for dataset 'imagefolder'"):
        default_pair("imagefolder", {})


def test_pair_title_reads_the_baseline_card() -> None:
    card = {"arch": "resnet20", "recipe": "paper", "epochs": 240}
    assert pair_title("cifar100-paper240", card) == "cifar100 · resnet20 · paper recipe, 240 epochs"
    assert pair_title("cifar10-cpu30", {"arch": "resnet20"}) == "cifar10 · resnet20"


def test_every_dataset_has_a_shipped_pair_and_every_pair_a_dataset_default() -> None:
    cards = {p.stem: card for p, card in list_checkpoints(CHECKPOINTS)}
    for dataset in DEFAULT_PAIRS:
        key, a, b = default_pair(dataset, cards)
        assert cards[a]["method"] == "baseline" and cards[b]["method"] == "tffd", key
        assert cards[a]["dataset"] == cards[b]["dataset"] == dataset == SHIPPED_PAIRS[key].dataset
        for same in ("recipe", "seed", "arch"):
            assert cards[a].get(same) == cards[b].get(same), (key, same)
    assert {key for keys in DEFAULT_PAIRS.values() for key in keys} == set(SHIPPED_PAIRS)


def test_a_finished_run_ships_no_resume_state() -> None:
    """A ``.resume.pt`` is shipped only while its run is in training (the next session continues it); once its
    checkpoint is written as completed, the state is dead weight and must go."""
    cards = {p.stem: card for p, card in list_checkpoints(CHECKPOINTS)}
    for state in sorted(CHECKPOINTS.glob("*.resume.pt")):
        stem = state.name.removesuffix(".resume.pt")
        finished = stem in cards and cards[stem].get("completed") is not False
        assert not finished, f"{state.name}: {stem} has finished; remove its resume state"


def test_the_paper_pair_ships_the_full_reference_run() -> None:
    """Issue 15's pair: both runs trained the whole 240 epochs of ``RECIPES["paper"]`` (one history row per
    epoch), completed, at one precision, with held-out terms; it is the CIFAR-100 default."""
    from tffd_viz.recipes import RECIPES

    cards = {p.stem: card for p, card in list_checkpoints(CHECKPOINTS)}
    assert default_pair("cifar100", cards) == ("cifar100-paper240", PAPER_A, PAPER_B)
    reference = {k: list(v) if isinstance(v, tuple) else v for k, v in RECIPES["paper"].items()}
    for stem, method in ((PAPER_A, "baseline"), (PAPER_B, "tffd")):
        card = cards[stem]
        assert card["method"] == method and card["recipe"] == "paper" and card["completed"] is True, stem
        assert card["epochs"] == 240, stem
        assert [row["epoch"] for row in card["history"]] == list(range(1, 241)), stem
        assert card["hparams"] == reference, stem
        assert card["history"][-1]["test_acc"] == card["final_acc"], stem
        assert card["best_acc"] == max(row["test_acc"] for row in card["history"]), stem
        assert card["heldout_terms"]["n"] == 10_000 and card["heldout_terms"]["batch_size"] == 500, stem
    assert cards[PAPER_A]["precision"] == cards[PAPER_B]["precision"]
