"""Tests of tffd_viz.checkpoints.cards: the card keys, and cards written as strict JSON
(NaN / inf -> null)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from checkpoint_factories import (
    full_card,
    full_card_json,
    trained_model,
)
from safetensors import safe_open

from tffd_viz.checkpoints import (
    CARD_KEYS,
    CheckpointError,
    empty_card,
    load_checkpoint,
    save_checkpoint,
)
from tffd_viz.errors import CheckpointError as ErrorsCheckpointError

pytestmark = pytest.mark.usefixtures("single_thread")


def test_card_keys_and_empty_card():
    assert CARD_KEYS[:3] == ("arch", "num_classes", "in_chans")
    assert CARD_KEYS[-3:] == ("device", "versions", "history")
    assert len(CARD_KEYS) == 21 and len(set(CARD_KEYS)) == 21
    card = empty_card()
    assert list(card) == list(CARD_KEYS) and all(v is None for v in card.values())
    assert ErrorsCheckpointError is CheckpointError


def strict_json(text: str | bytes, where: str):
    """``json.loads`` that refuses the non-JSON constants NaN, Infinity and -Infinity."""

    def refuse(constant: str):
        raise AssertionError(f"{where} holds {constant}")

    return json.loads(text, parse_constant=refuse)


def test_nonfinite_card_figures_are_stored_as_null_with_a_note(tmp_path):
    card = full_card()
    card["history"] = [
        dict(card["history"][0]),
        dict(card["history"][0], epoch=2, ce=float("nan"), intra={"layer1": float("inf")}),
    ]
    card.update(final_acc=float("-inf"), lambda_inter=np.float32("nan"))
    path = save_checkpoint(trained_model(in_chans=1), card, tmp_path / "m")
    for where, text in (
        ("the .json card", path.with_suffix(".json").read_text()),
        ("the safetensors metadata", safe_open(str(path), "pt").metadata()["card"]),
    ):
        got = strict_json(text, where)
        assert got["history"][1]["ce"] is None and got["history"][1]["intra"] == {"layer1": None}, where
        assert got["final_acc"] is None and got["lambda_inter"] is None, where
        assert got["history"][0]["ce"] == 1.5 and got["history"][1]["lr"] == 0.1, where  # finite values kept
        assert got["notes"] == [
            "an extra key",
            "lambda_inter was NaN; stored as null",
            "final_acc was -inf; stored as null",
            "history[1].ce was NaN; stored as null",
            "history[1].intra.layer1 was inf; stored as null",
        ], where
    _, loaded = load_checkpoint(path)
    assert loaded["final_acc"] is None and loaded["history"][1]["ce"] is None


def test_a_finite_card_is_written_unchanged_without_notes(tmp_path):
    card = full_card()
    del card["notes"]
    path = save_checkpoint(trained_model(in_chans=1), card, tmp_path / "m")
    got = strict_json(path.with_suffix(".json").read_text(), "card")
    assert "notes" not in got and got["history"] == full_card_json()["history"]


def test_no_shipped_card_or_table_holds_nan_or_infinity():
    folder = Path(__file__).resolve().parents[1] / "checkpoints"
    texts = [(str(p), p.read_text()) for p in sorted(folder.glob("*.json"))]
    for p in sorted(folder.glob("*.safetensors")):
        with safe_open(str(p), "pt") as fh:
            texts.append((f"{p} metadata", (fh.metadata() or {}).get("card", "{}")))
    if not texts:
        pytest.skip(f"no checkpoints shipped in {folder}")
    for where, text in texts:
        strict_json(text, where)


def _shipped_finished() -> list[Path]:
    folder = Path(__file__).resolve().parents[1] / "checkpoints"
    return [
        p
        for p in sorted(folder.glob("*.safetensors"))
        if json.loads(p.with_suffix(".json").read_text()).get("completed", True) is not False
    ]


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.parametrize("path", _shipped_finished(), ids=lambda p: p.stem)
def test_card_accuracy_is_a_fresh_evaluation_at_the_card_precision(path: Path) -> None:
    """``final_acc`` is the model's top-1 on the whole test split, measured as training measures it (eval
    mode, autocast at the card's ``precision``, batches of its ``eval_batch_size``): re-measured here from the
    shipped weights. Cards written before the card recorded ``eval_batch_size`` (the ``cpu30`` pairs, made by
    an earlier version of the data and training code) may differ by one test image."""
    import torch
    from conftest import CIFAR_FILES, CIFAR_ROOT

    from tffd_viz.data import load_dataset
    from tffd_viz.training.step import evaluate_accuracy

    model, card = load_checkpoint(path)
    dataset = card["dataset"]
    if dataset in CIFAR_FILES and not any((Path(CIFAR_ROOT) / f).exists() for f in CIFAR_FILES[dataset]):
        pytest.skip(f"no {dataset} files in {CIFAR_ROOT}")
    test = load_dataset(dataset, CIFAR_ROOT if dataset in CIFAR_FILES else None).test
    amp = {"bf16": torch.bfloat16, "fp32": None}[card["precision"]]
    fresh = evaluate_accuracy(model, test, card.get("eval_batch_size") or 512, "cpu", amp)
    one_image = 100.0 / len(test)
    tolerance = 1e-9 if "eval_batch_size" in card else one_image + 1e-9
    assert abs(fresh - card["final_acc"]) <= tolerance, (path.name, fresh, card["final_acc"], len(test))
    assert card["final_acc"] <= card["best_acc"]
