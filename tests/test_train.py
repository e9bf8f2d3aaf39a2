"""Tests of tffd_viz.train: recipes, augmentation, schedules, one step, the loop, resume, sweep, torchrun."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tffd_viz.checkpoints import CARD_KEYS, load_checkpoint
from tffd_viz.data import load_dataset
from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.losses import TfFD
from tffd_viz.models import create_model, extract_taps
from tffd_viz.train import (
    RECIPES,
    SCHEDULES,
    TrainConfig,
    _epoch_draws,
    _shard_positions,
    augment_batch,
    config_from_recipe,
    evaluate_accuracy,
    parse_pairs,
    parse_stages,
    resume_path,
    run_sweep,
    state_sha256,
    train,
    train_step,
)

REPO = Path(__file__).resolve().parents[1]


def tiny(**overrides) -> TrainConfig:
    """A digits run of about a second: resnet8, 128 training images per epoch, one thread."""
    values = {"epochs": 1, "limit_train": 128, "probe_size": 32, "quiet": True, "threads": 1}
    values.update(overrides)
    return config_from_recipe("digits", **values)


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --------------------------------------------------------------------------------------------------
# recipes and options
# --------------------------------------------------------------------------------------------------


def test_paper_recipe_is_the_reference_setting() -> None:
    # The Tf-FD authors' train_kd.py (Teacher-free-Distillation, newest version), line by line:
    r = RECIPES["paper"]
    assert r["nesterov"] is True  # SGD(..., nesterov=True), lines 191/197
    assert (r["crop_padding"], r["padding_mode"], r["flip"]) == (4, "reflect", True)  # Pad(4, 'reflect'), line 212
    assert (r["lr"], r["momentum"], r["weight_decay"], r["batch_size"]) == (0.1, 0.9, 5e-4, 128)  # argparse defaults
    assert (r["schedule"], tuple(r["milestones"]), r["gamma"], r["epochs"]) == ("multistep", (150, 180, 210), 0.1, 240)
    assert r["warmup"] == 20  # --kd-warm-up 20, line 73
    assert (r["lambda_intra"], r["lambda_inter"]) == (8e-4, 5e-4)  # the reference README's command
    assert r["kd_temperature"] == 4.0  # --T 4 (Tf-FD+ logit KD)
    # the shipped cpu30 / digits checkpoints were trained with plain momentum and zero padding
    for name in ("cpu30", "digits"):
        assert (RECIPES[name]["nesterov"], RECIPES[name]["padding_mode"]) == (False, "zeros"), name
    assert RECIPES["digits"]["flip"] is False and RECIPES["digits"]["arch"] == "resnet8"
    assert set(RECIPES) >= {"paper", "cpu30", "digits"}
    assert all(set(r) == set(RECIPES["paper"]) for r in RECIPES.values())


def test_explicit_option_overrides_recipe_and_none_keeps_it() -> None:
    cfg = config_from_recipe("digits", lr=0.3, epochs=None, seed=7)
    assert cfg.lr == 0.3 and cfg.seed == 7 and cfg.recipe == "digits"
    assert cfg.epochs == RECIPES["digits"]["epochs"] and cfg.batch_size == RECIPES["digits"]["batch_size"]
    assert cfg.hparams["lr"] == 0.3 and cfg.hparams["batch_size"] == RECIPES["digits"]["batch_size"]
    with pytest.raises(TffdVizError, match="unknown recipe 'nope'"):
        config_from_recipe("nope")
    with pytest.raises(TffdVizError, match="learning_rate"):
        config_from_recipe("digits", learning_rate=1.0)
    with pytest.raises(TffdVizError, match="method"):
        config_from_recipe("digits", method="kd")


def test_parse_stages_and_pairs() -> None:
    assert parse_stages("layer1, 2") == ["layer1", 2]
    assert parse_stages("all") is None and parse_stages("none") == []
    assert parse_pairs("0-1,0-2,1-2") == [(0, 1), (0, 2), (1, 2)]
    assert parse_pairs("layer1->layer3") == [("layer1", "layer3")]
    assert parse_pairs("none") == [] and parse_pairs(None) is None
    with pytest.raises(TffdVizError, match="'0-1-2'"):
        parse_pairs("0-1-2")


# --------------------------------------------------------------------------------------------------
# augmentation, sharding, schedules
# --------------------------------------------------------------------------------------------------


def test_augmentation_is_padded_crop_then_flip_per_image() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(6, 2, 9, 7, generator=g)
    pad = 3
    offsets = torch.randint(0, 2 * pad + 1, (6, 2), generator=g)
    flips = torch.tensor([True, False, True, False, False, True])
    out = augment_batch(x, offsets, flips, pad)
    for i in range(6):
        padded = torch.zeros(2, 9 + 2 * pad, 7 + 2 * pad)
        padded[:, pad:pad + 9, pad:pad + 7] = x[i]
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[:, dy:dy + 9, dx:dx + 7]
        if flips[i]:
            crop = crop[:, :, torch.arange(6, -1, -1)]
        assert torch.equal(out[i], crop), i
    # offset (pad, pad) and no flip is the identity; (0, 0) shifts the image down-right by pad
    centre = augment_batch(x, torch.full((6, 2), pad), None, pad)
    assert torch.equal(centre, x)
    corner = augment_batch(x, torch.zeros(6, 2, dtype=torch.long), None, pad)
    assert torch.equal(corner[:, :, pad:, pad:], x[:, :, :-pad, :-pad]) and corner[:, :, :pad].abs().sum() == 0


def test_epoch_draws_are_seeded_in_documented_order() -> None:
    cfg = tiny()
    perm, offsets, flips = _epoch_draws(50, cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(perm, torch.randperm(50, generator=g))
    assert torch.equal(offsets, torch.randint(0, 2 * cfg.crop_padding + 1, (50, 2), generator=g))
    assert flips is None  # digits: no flip
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * cfg.crop_padding


@pytest.mark.parametrize("n,world", [(10, 2), (11, 2), (7, 3)])
def test_shards_are_disjoint_strides_covering_the_epoch(n: int, world: int) -> None:
    shards = [_shard_positions(n, world, r).tolist() for r in range(world)]
    size = math.ceil(n / world)
    assert all(len(s) == size for s in shards)
    padded = list(range(n)) + list(range(size * world - n))
    for r, s in enumerate(shards):
        assert s == padded[r::world]
    assert sorted(set(sum(shards, []))) == list(range(n))  # every image of the epoch is seen
    assert len(sum(shards, [])) - n == size * world - n < world  # only the wrap-around padding repeats


def test_schedules_values() -> None:
    cfg = config_from_recipe("paper")
    f = SCHEDULES["multistep"](cfg, 10)
    assert [f(s) for s in (0, 1499, 1500, 1799, 1800, 2100, 2399)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])
    cyc = config_from_recipe("digits", epochs=10, pct_start=0.25)
    g = SCHEDULES["onecycle"](cyc, 4)  # 40 steps, peak at step 10
    assert g(0) == pytest.approx(1 / 25) and g(10) == pytest.approx(1.0) and g(40) == pytest.approx(1e-4)
    values = [g(s) for s in range(41)]
    assert values[:11] == sorted(values[:11]) and values[10:] == sorted(values[10:], reverse=True)
    cos = config_from_recipe("digits", epochs=10, lr_warmup=1, schedule="cosine")
    h = SCHEDULES["cosine"](cos, 4)
    assert [h(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert h(4 + 18) == pytest.approx(0.5) and h(40) == pytest.approx(0.0)


# --------------------------------------------------------------------------------------------------
# one step, evaluation
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("warm", [0.05, 1.0])
def test_train_step_is_ce_plus_warm_times_tffd(warm: float) -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1)
    ref = copy.deepcopy(model)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    tffd = TfFD(1e-1, 2e-1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    stats = train_step(model, x, y, tffd, warm, opt)
    # independent re-statement with a fresh optimiser on the copy
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    logits, feats = extract_taps(ref, x, return_logits=True)
    intra = list(TfFD(1, 0)(feats).intra.values())
    inter = list(TfFD(0, 1)(feats).inter.values())
    ce = F.cross_entropy(logits, y)
    total = 1e-1 * torch.stack(intra).mean() + 2e-1 * torch.stack(inter).mean()
    (ce + warm * total).backward()
    opt_ref.step()
    ce, total = ce.detach(), total.detach()
    assert states_equal(model, ref)
    assert stats["ce"] == pytest.approx(float(ce)) and stats["tffd_total"] == pytest.approx(float(total), rel=1e-5)
    assert stats["loss"] == pytest.approx(float(ce + warm * total), rel=1e-6)
    assert stats["intra/layer1"] == pytest.approx(float(intra[0].detach()), rel=1e-6)
    assert stats["inter/layer1->layer3"] == pytest.approx(float(inter[1].detach()), rel=1e-6)
    assert stats["correct"] == float((logits.argmax(1) == y).sum()) and stats["n"] == 8.0


def test_train_step_baseline_logs_terms_but_trains_on_ce_only() -> None:
    torch.manual_seed(1)
    a = create_model("resnet8", num_classes=10, in_chans=1)
    b = copy.deepcopy(a)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    opt_a = torch.optim.SGD(a.parameters(), lr=0.1, momentum=0.9)
    opt_b = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9)
    stats = train_step(a, x, y, TfFD(10.0, 10.0), 1.0, opt_a, apply_tffd=False)
    plain = train_step(b, x, y, None, 1.0, opt_b)
    assert states_equal(a, b)
    assert math.isfinite(stats["tffd_total"]) and stats["tffd_total"] > 0 and math.isnan(plain["tffd_total"])
    assert stats["loss"] == stats["ce"] == pytest.approx(plain["ce"])


def test_evaluate_accuracy_matches_restatement_and_keeps_mode() -> None:
    bundle = load_dataset("digits")
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1)
    model.train()
    acc = evaluate_accuracy(model, bundle.test, batch_size=100)
    assert model.training
    model.eval()
    with torch.no_grad():
        pred = model(bundle.test.normalized()).argmax(1)
    assert acc == pytest.approx(100.0 * float((pred == bundle.test.labels).float().mean()))


# --------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tffd_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits_tffd.safetensors"
    cfg = tiny(epochs=2, method="tffd", warmup=4.0, out=str(out))
    model, card = train(cfg)
    return cfg, model, card, out


def test_card_has_every_key_history_and_saliency_shapes(tffd_run) -> None:
    cfg, model, card, out = tffd_run
    assert set(CARD_KEYS) <= set(card) and all(card[k] is not None for k in CARD_KEYS)
    assert not model.training
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == ("resnet8", 10, 1, "digits")
    assert card["taps"] == ["layer1", "layer2", "layer3"]
    assert card["pairs"] == [["layer1", "layer2"], ["layer1", "layer3"], ["layer2", "layer3"]]
    assert card["method"] == "tffd" and card["recipe"] == "digits" and card["hparams"]["lr"] == RECIPES["digits"]["lr"]
    assert set(card["versions"]) == {"torch", "torchvision", "tffd_viz", "python"}
    hist = card["history"]
    assert len(hist) == card["epochs"] == 2 and [h["epoch"] for h in hist] == [1, 2]
    widths = {"layer1": 16, "layer2": 32, "layer3": 64}
    for h in hist:
        assert set(h) >= {"epoch", "lr", "ce", "intra", "inter", "tffd_total", "train_acc", "test_acc", "seconds",
                          "saliency"}
        assert set(h["intra"]) == set(widths) and set(h["inter"]) == {"layer1->layer2", "layer1->layer3",
                                                                     "layer2->layer3"}
        assert {k: len(v) for k, v in h["saliency"].items()} == widths
        assert all(float(f"{v:.4g}") == v for vals in h["saliency"].values() for v in vals)
        values = [h["lr"], h["ce"], h["tffd_total"], h["train_acc"], h["test_acc"], *h["intra"].values(),
                  *h["inter"].values()]
        assert all(math.isfinite(v) for v in values)
        assert 0 <= h["train_acc"] <= 100 and 0 <= h["test_acc"] <= 100
    assert card["final_acc"] == hist[-1]["test_acc"] and card["best_acc"] == max(h["test_acc"] for h in hist)
    # the probe saliency restated: train split, first probe_size of randperm(seed 0), test transform, eval
    bundle = load_dataset("digits")
    idx = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))[:cfg.probe_size]
    with torch.no_grad():
        f = extract_taps(model, bundle.train.normalized(idx))["layer2"]
    sal = F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3))
    assert hist[-1]["saliency"]["layer2"] == pytest.approx(sal.tolist(), rel=1e-3)
    # files: safetensors + json with the same card, loading gives the same weights; resume state written
    assert out.is_file() and out.with_suffix(".json").is_file() and resume_path(out).is_file()
    loaded, loaded_card = load_checkpoint(out)
    assert states_equal(loaded, model.cpu())
    assert loaded_card["history"][-1]["saliency"] == hist[-1]["saliency"]
    assert json.loads(out.with_suffix(".json").read_text())["final_acc"] == card["final_acc"]
    assert evaluate_accuracy(loaded, bundle.test) == pytest.approx(card["final_acc"])


def test_warmup_weight_of_epoch_one_applied(tffd_run) -> None:
    _, _, card, _ = tffd_run
    assert [h["tffd_weight"] for h in card["history"]] == [0.25, 0.5]


def test_same_command_gives_same_weights_and_baseline_differs() -> None:
    model_a, a = train(tiny(method="tffd", lambda_intra=1.0, lambda_inter=1.0))
    model_b, card_b = train(tiny(method="baseline", lambda_intra=1.0, lambda_inter=1.0))
    model_a2, card_a2 = train(tiny(method="tffd", lambda_intra=1.0, lambda_inter=1.0))
    assert state_sha256(model_a) == state_sha256(model_a2)
    assert a["history"][0]["ce"] == card_a2["history"][0]["ce"]
    assert not states_equal(model_a, model_b)
    # the baseline still logs its (untrained-on) terms
    h = card_b["history"][0]
    assert h["tffd_weight"] == 0.0 and all(math.isfinite(v) and v > 0 for v in h["intra"].values())


def test_resume_gives_the_same_final_weights(tmp_path: Path) -> None:
    straight, card_s = train(tiny(epochs=3, out=str(tmp_path / "a.safetensors")))
    out = tmp_path / "b.safetensors"
    _, stopped = train(tiny(epochs=3, out=str(out), stop_after=2))
    assert len(stopped["history"]) == 2 and not stopped["completed"] and not out.exists()
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == 2
    resumed, card_r = train(tiny(epochs=3, out=str(out), resume="auto"))
    assert states_equal(straight, resumed)
    assert [h["ce"] for h in card_r["history"]] == [h["ce"] for h in card_s["history"]]
    assert out.is_file() and card_r["completed"]
    with pytest.raises(CheckpointError, match="lr"):
        train(tiny(epochs=3, out=str(out), resume="auto", lr=0.5))
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny(out=str(tmp_path / "c"), resume=str(tmp_path / "missing.resume.pt")))


def test_stage_and_pair_selection_reach_the_loss() -> None:
    _, card = train(tiny(stages=["layer3"], pairs=[(0, 2)], limit_train=64))
    h = card["history"][0]
    assert list(h["intra"]) == ["layer3"] and list(h["inter"]) == ["layer1->layer3"]
    assert card["stages"] == ["layer3"] and card["pairs"] == [["layer1", "layer3"]]
    with pytest.raises(TffdVizError, match="layer9"):
        train(tiny(stages=["layer9"]))


def test_bf16_precision_runs_finite() -> None:
    model, card = train(tiny(precision="bf16", limit_train=64))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(card["history"][0]["ce"]) and card["precision"] == "bf16"


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", TFFD_DEBUG_RANK_HASH_DIR=str(tmp_path / "hashes"),
               PYTHONPATH=str(REPO))
    out = tmp_path / "ddp.safetensors"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "tffd_viz", "train", "--recipe", "digits", "--epochs", "2", "--limit-train", "128",
           "--batch-size", "16", "--method", "tffd", "--sync-saliency", "--lambda-intra", "1",
           "--lambda-inter", "1", "--device", "cpu", "--probe-size", "16", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    hashes = [(tmp_path / "hashes" / f"rank{r}.sha256").read_text().strip() for r in (0, 1)]
    assert hashes[0] == hashes[1]
    model, card = load_checkpoint(out)
    assert state_sha256(model) == hashes[0]
    assert card["world_size"] == 2 and len(card["history"]) == 2
    assert all(math.isfinite(v) for v in card["history"][-1]["intra"].values())
