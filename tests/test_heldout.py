"""Held-out Tf-FD terms: the scale-free definitions, the spread over batches, the card rewrite."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tffd_viz.checkpoints import load_checkpoint, read_card
from tffd_viz.cli import main
from tffd_viz.data import ImageDataset
from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.heldout import (
    HELDOUT_KEYS,
    card_normalised_split,
    heldout_terms,
    scale_free_terms,
    stage_energy,
    write_heldout_terms,
)
from tffd_viz.models import create_model, extract_taps

ROOT = Path(__file__).resolve().parents[1]
DIGITS_BASELINE = ROOT / "checkpoints" / "digits_resnet8_baseline_s0.safetensors"


def _plain_intra(f: torch.Tensor) -> float:
    """The intra term re-stated from the formula: saliency of the L2-normalised maps, sort,
    top k vs bottom k."""
    n, c = f.shape[:2]
    flat = f.reshape(n, c, -1).double()
    sal = (flat / flat.norm(dim=2, keepdim=True).clamp_min(1e-12)).mean(dim=(0, 2))
    order = torch.argsort(sal, descending=True)
    k = c // 2
    return float(((flat[:, order[:k]] - flat[:, order[c - k :]]) ** 2).mean())


def _plain_inter(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """The inter term and the energy of its deep side: pool a to b's size, first m channels."""
    m = min(a.shape[1], b.shape[1])
    pooled = F.adaptive_avg_pool2d(a.double(), b.shape[2:])[:, :m]
    deep = b.double()[:, :m]
    return float(((pooled - deep) ** 2).mean()), float((deep**2).mean())


def _features(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "s1": torch.rand(6, 8, 8, 8, generator=g),
        "s2": torch.rand(6, 12, 4, 4, generator=g) * 3,
        "s3": torch.rand(6, 5, 2, 2, generator=g),
    }


def test_stage_energy_is_the_mean_square() -> None:
    f = torch.randn(3, 4, 5, 5)
    assert float(stage_energy(f)) == pytest.approx(float((f.double() ** 2).mean()), rel=1e-6)
    assert stage_energy(f.bfloat16()).dtype == torch.float32


def test_scale_free_terms_restate_the_formulas() -> None:
    feats = _features()
    out = scale_free_terms(feats)
    for name, f in feats.items():
        energy = float((f.double() ** 2).mean())
        assert out["energy"][name] == pytest.approx(energy, rel=1e-5)
        assert out["intra"][name] == pytest.approx(_plain_intra(f), rel=1e-5)
        assert out["intra_rel"][name] == pytest.approx(_plain_intra(f) / energy, rel=1e-5)
    for a, b in (("s1", "s2"), ("s1", "s3"), ("s2", "s3")):
        term, deep_energy = _plain_inter(feats[a], feats[b])
        assert out["inter"][f"{a}->{b}"] == pytest.approx(term, rel=1e-5)
        assert out["inter_rel"][f"{a}->{b}"] == pytest.approx(term / deep_energy, rel=1e-5)


@pytest.mark.parametrize("scale", [0.1, 7.0])
def test_relative_terms_do_not_change_when_every_map_is_scaled(scale: float) -> None:
    feats = _features(1)
    base = scale_free_terms(feats)
    scaled = scale_free_terms({k: v * scale for k, v in feats.items()})
    for family in ("intra", "inter"):
        for key, value in base[family].items():
            assert scaled[family][key] == pytest.approx(value * scale**2, rel=1e-4)  # raw MSE scales with s^2
            assert scaled[f"{family}_rel"][key] == pytest.approx(base[f"{family}_rel"][key], rel=1e-4)


def test_zero_energy_gives_nan_not_an_error() -> None:
    feats = {"a": torch.zeros(2, 4, 4, 4), "b": torch.zeros(2, 4, 2, 2)}
    out = scale_free_terms(feats)
    assert (
        out["intra"]["a"] == 0.0
        and math.isnan(out["intra_rel"]["a"])
        and math.isnan(out["inter_rel"]["a->b"])
    )


def _tiny_split(n: int = 40, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    return ImageDataset(images, torch.randint(0, 10, (n,), generator=g), [0.5], [0.25])


def test_heldout_terms_are_batch_means_with_their_spread() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1).train()
    split = _tiny_split(40)
    out = heldout_terms(model, split, batch_size=16, min_batches=1)
    assert tuple(out) == HELDOUT_KEYS
    assert model.training  # mode restored
    assert (out["n"], out["batch_size"], out["batches"]) == (40, 16, 3)
    model.eval()
    per_batch, sizes, correct = [], [], 0
    with torch.no_grad():
        for start in range(0, 40, 16):
            sl = slice(start, min(start + 16, 40))
            logits, feats = extract_taps(
                model, split.normalized(sl), ["layer1", "layer2", "layer3"], return_logits=True
            )
            correct += int((logits.argmax(1) == split.labels[sl]).sum())
            per_batch.append({k: _plain_intra(v) for k, v in feats.items()})
            sizes.append(sl.stop - sl.start)
    for tap in ("layer1", "layer2", "layer3"):
        values = np.array([b[tap] for b in per_batch])
        assert out["intra"][tap] == pytest.approx(np.average(values, weights=sizes), rel=1e-4)
        assert out["intra_std"][tap] == pytest.approx(values.std(ddof=1), rel=1e-3)
    assert out["accuracy"] == pytest.approx(100.0 * correct / 40, abs=1e-3)


def test_small_splits_get_several_batches_and_no_one_image_batch() -> None:
    model = create_model("resnet8", num_classes=10, in_chans=1)
    out = heldout_terms(model, _tiny_split(21), batch_size=500)  # min_batches=4 -> batches of 6: 6,6,6,3
    assert (out["batch_size"], out["batches"]) == (6, 4)
    out = heldout_terms(model, _tiny_split(13), batch_size=6, min_batches=1)  # 6, 6, 1 -> 6, 7
    assert out["batches"] == 2 and all(v is not None for v in out["intra_std"].values())
    with pytest.raises(TffdVizError, match="at least 2 images"):
        heldout_terms(model, _tiny_split(1), batch_size=8)


def test_card_normalisation_is_applied_only_when_it_differs() -> None:
    split = _tiny_split(4)
    assert card_normalised_split(split, {"mean": [0.5], "std": [0.25]}) is split
    assert card_normalised_split(split, {}) is split
    other = card_normalised_split(split, {"mean": [0.1], "std": [0.5]})
    assert torch.allclose(other.normalized(), (split.float01() - 0.1) / 0.5)


def test_write_heldout_terms_rewrites_both_cards_and_keeps_the_weights(tmp_path: Path) -> None:
    path = tmp_path / DIGITS_BASELINE.name
    shutil.copy(DIGITS_BASELINE, path)
    shutil.copy(DIGITS_BASELINE.with_suffix(".json"), path.with_suffix(".json"))
    before, card_before = load_checkpoint(path)
    terms = write_heldout_terms(path)
    after, card_after = load_checkpoint(path)
    for k, v in before.state_dict().items():
        assert torch.equal(v, after.state_dict()[k]), k
    assert card_after["heldout_terms"] == terms == read_card(path)["heldout_terms"]
    assert json.loads(path.with_suffix(".json").read_text())["heldout_terms"] == terms
    assert card_after["history"] == card_before["history"]
    assert terms["n"] == 360 and terms["accuracy"] == pytest.approx(card_before["final_acc"], abs=0.01)
    assert main(["heldout", str(path)]) == 0
    with pytest.raises(CheckpointError, match="safetensors"):
        write_heldout_terms(tmp_path / "x.pt")


def test_shipped_cards_carry_heldout_terms() -> None:
    for path in sorted((ROOT / "checkpoints").glob("*.json")):
        if path.name.startswith("digits_sweep"):
            continue
        card = json.loads(path.read_text())
        if not card.get("completed", True):
            continue
        terms = card.get("heldout_terms")
        assert terms is not None, f"{path.name} has no heldout_terms (run `tffd-viz heldout`)"
        assert set(terms) == set(HELDOUT_KEYS) and terms["split"] == "test"
        assert set(terms["intra"]) == set(card["taps"])
