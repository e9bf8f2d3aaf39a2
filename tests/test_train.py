"""Tests of tffd_viz.train and its parts (tffd_viz.training): options, augmentation, schedules, one step, the
loop, resume, torchrun, divergence. Recipes: test_recipes.py; sweeps: test_sweeps.py."""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import math
import os
import pickle
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
    augment_batch,
    config_from_recipe,
    epoch_draws,
    evaluate_accuracy,
    parse_pairs,
    parse_stages,
    resume_path,
    state_sha256,
    train,
    train_step,
)
from tffd_viz.training.augment import shard_positions

ROOT = Path(__file__).resolve().parents[1]


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
        padded[:, pad : pad + 9, pad : pad + 7] = x[i]
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        crop = padded[:, dy : dy + 9, dx : dx + 7]
        if flips[i]:
            crop = crop[:, :, torch.arange(6, -1, -1)]
        assert torch.equal(out[i], crop), i
    # offset (pad, pad) and no flip is the identity; (0, 0) shifts the image down-right by pad
    centre = augment_batch(x, torch.full((6, 2), pad), None, pad)
    assert torch.equal(centre, x)
    corner = augment_batch(x, torch.zeros(6, 2, dtype=torch.long), None, pad)
    assert (
        torch.equal(corner[:, :, pad:, pad:], x[:, :, :-pad, :-pad]) and corner[:, :, :pad].abs().sum() == 0
    )


def test_epoch_draws_are_seeded_in_documented_order() -> None:
    cfg = tiny()
    perm, offsets, flips = epoch_draws(50, cfg, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    assert torch.equal(perm, torch.randperm(50, generator=g))
    assert torch.equal(offsets, torch.randint(0, 2 * cfg.crop_padding + 1, (50, 2), generator=g))
    assert flips is None  # digits: no flip
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * cfg.crop_padding


@pytest.mark.parametrize(("n", "world"), [(10, 2), (11, 2), (7, 3)])
def test_shards_are_disjoint_strides_covering_the_epoch(n: int, world: int) -> None:
    shards = [shard_positions(n, world, r).tolist() for r in range(world)]
    size = math.ceil(n / world)
    assert all(len(s) == size for s in shards)
    padded = list(range(n)) + list(range(size * world - n))
    for r, s in enumerate(shards):
        assert s == padded[r::world]
    seen = list(itertools.chain.from_iterable(shards))
    assert sorted(set(seen)) == list(range(n))  # every image of the epoch is seen
    assert len(seen) - n == size * world - n < world  # only the wrap-around padding repeats


def test_schedules_values() -> None:
    cfg = config_from_recipe("paper")
    f = SCHEDULES["multistep"](cfg, 10)
    assert [f(s) for s in (0, 1499, 1500, 1799, 1800, 2100, 2399)] == pytest.approx(
        [1, 1, 0.1, 0.1, 0.01, 0.001, 0.001]
    )
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
    # independent re-statement on the copy: the terms from their formulas (no call into tffd_viz.losses),
    # autograd through them, a fresh optimiser
    opt_ref = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    logits, feats = extract_taps(ref, x, return_logits=True)
    maps = list(feats.values())
    intra = []
    for f in maps:  # saliency = mean over n, h, w of F / ||F[n, c]||_2; top C//2 vs bottom C//2, in order
        norms = f.detach().flatten(2).norm(dim=2).clamp_min(1e-12)[:, :, None, None]
        order = torch.sort((f.detach() / norms).mean(dim=(0, 2, 3)), descending=True, stable=True).indices
        k = f.shape[1] // 2
        intra.append(F.mse_loss(f[:, order[f.shape[1] - k :]], f[:, order[:k]]))
    inter = []
    for i in range(len(maps)):  # avgpool(F_i) to F_j's size, first m = min(C_i, C_j) channels, F_j detached
        for j in range(i + 1, len(maps)):
            m = min(maps[i].shape[1], maps[j].shape[1])
            pooled = F.adaptive_avg_pool2d(maps[i], tuple(maps[j].shape[2:]))
            inter.append(F.mse_loss(pooled[:, :m], maps[j].detach()[:, :m]))
    ce = F.cross_entropy(logits, y)
    total = 1e-1 * torch.stack(intra).mean() + 2e-1 * torch.stack(inter).mean()
    (ce + warm * total).backward()
    opt_ref.step()
    ce, total = ce.detach(), total.detach()
    got, want = model.state_dict(), ref.state_dict()
    assert got.keys() == want.keys()
    for key in got:  # float rounding only: the library's fused backward vs autograd of the formulas
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=key)
    assert stats["ce"] == pytest.approx(float(ce)) and stats["tffd_total"] == pytest.approx(
        float(total), rel=1e-5
    )
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
    assert (card["arch"], card["num_classes"], card["in_chans"], card["dataset"]) == (
        "resnet8",
        10,
        1,
        "digits",
    )
    assert card["taps"] == ["layer1", "layer2", "layer3"]
    assert card["pairs"] == [["layer1", "layer2"], ["layer1", "layer3"], ["layer2", "layer3"]]
    assert (
        card["method"] == "tffd"
        and card["recipe"] == "digits"
        and card["hparams"]["lr"] == RECIPES["digits"]["lr"]
    )
    assert set(card["versions"]) == {"torch", "torchvision", "tffd_viz", "python"}
    hist = card["history"]
    assert len(hist) == card["epochs"] == 2 and [h["epoch"] for h in hist] == [1, 2]
    widths = {"layer1": 16, "layer2": 32, "layer3": 64}
    for h in hist:
        assert set(h) >= {
            "epoch",
            "lr",
            "ce",
            "intra",
            "inter",
            "tffd_total",
            "train_acc",
            "test_acc",
            "seconds",
            "saliency",
        }
        assert set(h["intra"]) == set(widths) and set(h["inter"]) == {
            "layer1->layer2",
            "layer1->layer3",
            "layer2->layer3",
        }
        assert {k: len(v) for k, v in h["saliency"].items()} == widths
        assert all(float(f"{v:.4g}") == v for vals in h["saliency"].values() for v in vals)
        values = [
            h["lr"],
            h["ce"],
            h["tffd_total"],
            h["train_acc"],
            h["test_acc"],
            *h["intra"].values(),
            *h["inter"].values(),
        ]
        assert all(math.isfinite(v) for v in values)
        assert 0 <= h["train_acc"] <= 100 and 0 <= h["test_acc"] <= 100
    assert card["final_acc"] == hist[-1]["test_acc"] and card["best_acc"] == max(h["test_acc"] for h in hist)
    # the probe saliency restated: train split, first probe_size of randperm(seed 0), test transform, eval
    bundle = load_dataset("digits")
    idx = torch.randperm(len(bundle.train), generator=torch.Generator().manual_seed(0))[: cfg.probe_size]
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


def test_bf16_precision_runs_finite_and_the_card_says_how_accuracy_was_measured() -> None:
    from tffd_viz.data import load_dataset
    from tffd_viz.training.step import evaluate_accuracy

    model, card = train(tiny(precision="bf16", limit_train=64, eval_batch_size=50))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert math.isfinite(card["history"][0]["ce"]) and card["precision"] == "bf16"
    assert card["eval_batch_size"] == 50
    fresh = evaluate_accuracy(model, load_dataset("digits").test, 50, "cpu", torch.bfloat16)
    assert fresh == card["final_acc"] == card["history"][-1]["test_acc"]


# --------------------------------------------------------------------------------------------------
# torchrun
# --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torchrun_two_ranks_end_with_identical_weights(tmp_path: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "ddp.safetensors"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "tffd_viz",
        "train",
        "--recipe",
        "digits",
        "--epochs",
        "2",
        "--limit-train",
        "128",
        "--batch-size",
        "16",
        "--method",
        "tffd",
        "--sync-saliency",
        "--lambda-intra",
        "1",
        "--lambda-inter",
        "1",
        "--device",
        "cpu",
        "--probe-size",
        "16",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    model, card = load_checkpoint(out)
    # the ranks compared their weights' hashes at the end (the run fails when they differ)
    assert card["ranks_agree"] is True and card["state_sha256"] == state_sha256(model)
    assert card["world_size"] == 2 and len(card["history"]) == 2
    assert all(math.isfinite(v) for v in card["history"][-1]["intra"].values())


def test_ranks_with_different_weights_fail_loudly(monkeypatch) -> None:
    from tffd_viz.training import distributed
    from tffd_viz.training.distributed import DistContext, agreed_state_sha256, checked_rank_hashes

    assert checked_rank_hashes(["ab" * 32] * 3) == "ab" * 32
    with pytest.raises(
        TffdVizError,
        match=r"the 3 ranks ended training with different weights \(rank 0: "
        r"abababababab, rank 1: abababababab, rank 2: cdcdcdcdcdcd\)",
    ):
        checked_rank_hashes(["ab" * 32, "ab" * 32, "cd" * 32])
    # the all-gather of rank 0 sees another hash from rank 1: rank 0 raises
    # (as rank 1 does with the same list)
    model = create_model("resnet8", num_classes=10, in_chans=1)
    monkeypatch.setattr(
        distributed.dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, "0" * 64])
    )
    with pytest.raises(TffdVizError, match="the checkpoint was not written"):
        agreed_state_sha256(model, DistContext(world=2, rank=0))
    assert agreed_state_sha256(model, DistContext()) == state_sha256(model)  # one process: no collective


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal where CUDA is absent")
def test_training_on_an_absent_cuda_fails_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "runs" / "x"
    with pytest.raises(TffdVizError, match=r"device 'cuda' was asked for but CUDA is not available here"):
        train(tiny(device="cuda", out=str(out)))
    assert not out.parent.exists()  # refused before the output folder was made


def test_time_limit_stops_resumably_and_resume_finishes_the_same_run(tmp_path: Path) -> None:
    base = dict(epochs=3, limit_train=64, batch_size=32, probe_size=8, quiet=True, threads=1)
    out = tmp_path / "t"
    _, card = train(config_from_recipe("digits", method="tffd", out=str(out), time_limit=1e-3, **base))
    assert card["completed"] is False and len(card["history"]) == 1  # stopped after the first epoch
    assert resume_path(out).is_file() and not out.with_suffix(".safetensors").exists()
    resumed, card = train(config_from_recipe("digits", method="tffd", out=str(out), resume="auto", **base))
    straight, _ = train(config_from_recipe("digits", method="tffd", out=None, **base))
    assert card["completed"] is True and [r["epoch"] for r in card["history"]] == [1, 2, 3]
    for k, v in straight.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k


def test_resume_state_without_a_later_option_resumes_only_at_its_old_meaning(tmp_path: Path) -> None:
    base = dict(epochs=2, limit_train=64, batch_size=32, probe_size=8, quiet=True, threads=1)
    out = tmp_path / "r"
    train(config_from_recipe("digits", method="baseline", out=str(out), stop_after=1, **base))
    state = torch.load(resume_path(out), weights_only=True)
    del state["config"]["padding_mode"]  # as written before the option existed (zero padding)
    torch.save(state, resume_path(out))
    _, card = train(config_from_recipe("digits", method="baseline", out=str(out), resume="auto", **base))
    assert card["completed"] is True
    torch.save(state, resume_path(out))
    with pytest.raises(CheckpointError, match="padding_mode"):
        train(
            config_from_recipe(
                "digits", method="baseline", out=str(out), resume="auto", padding_mode="reflect", **base
            )
        )


#: The resume states of the shipped runs in progress (a long run continued across sessions, e.g. issue 15's
#: paper240 pair); each is removed once its run has finished (``test_a_finished_run_ships_no_resume_state``).
RUNS_IN_PROGRESS = sorted((ROOT / "checkpoints").glob("*.resume.pt"))


@pytest.mark.skipif(not RUNS_IN_PROGRESS, reason="no shipped run in progress (no .resume.pt in checkpoints/)")
def test_the_runs_in_progress_still_resume_with_this_code(tmp_path: Path) -> None:
    """The command that started each run, parsed by today's CLI, gives a config the saved state accepts
    (the check ``--resume`` makes); and the saved options are still options.
    Works on a copy: the states are never written."""
    import shutil

    from tffd_viz.cli import build_parser, config_overrides
    from tffd_viz.training.state import _RESUME_ABSENT_MEANS, checked_resume_state

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for shipped in RUNS_IN_PROGRESS:
        path = tmp_path / shipped.name
        shutil.copyfile(shipped, path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved = state["config"]
        argv = [
            "train",
            "--recipe",
            saved["recipe"],
            "--dataset",
            saved["dataset"],
            "--method",
            saved["method"],
            "--precision",
            saved["precision"],
            "--seed",
            str(saved["seed"]),
            "--threads",
            "1",
            "--resume",
            "--out",
            saved["out"],
        ]
        if saved["data_root"] is not None:
            argv += ["--data-root", saved["data_root"]]
        args = build_parser().parse_args(argv)
        cfg = config_from_recipe(args.recipe, **config_overrides(args))
        assert checked_resume_state(path, cfg)["epoch"] == state["epoch"] >= 1, shipped.name
        # every saved key is still an option; an option the state lacks must say what its absence meant
        assert set(saved) <= fields and fields - set(saved) <= set(_RESUME_ABSENT_MEANS), shipped.name
        as_saved = TrainConfig(**{**saved, "milestones": tuple(saved["milestones"])}).check()
        assert checked_resume_state(path, as_saved)["epoch"] == state["epoch"], shipped.name


def test_reflect_padding_mirrors_the_border_like_torchvision_pad() -> None:
    import torchvision.transforms.functional as TF

    g = torch.Generator().manual_seed(4)
    x = torch.rand(5, 3, 8, 6, generator=g)
    pad = 3
    offsets = torch.randint(0, 2 * pad + 1, (5, 2), generator=g)
    out = augment_batch(x, offsets, None, pad, padding_mode="reflect")
    for i in range(5):
        padded = TF.pad(x[i], [pad], padding_mode="reflect")  # torchvision's Pad(p, padding_mode='reflect')
        dy, dx = int(offsets[i, 0]), int(offsets[i, 1])
        assert torch.equal(out[i], padded[:, dy : dy + 8, dx : dx + 6]), i
    assert torch.equal(augment_batch(x, torch.full((5, 2), pad), None, pad, "reflect"), x)
    with pytest.raises(TffdVizError, match="reflect padding 9"):
        augment_batch(x, offsets, None, 9, padding_mode="reflect")


def test_tffd_kd_trains_with_a_teacher_and_records_it(tmp_path: Path) -> None:
    base = dict(epochs=2, limit_train=128, batch_size=32, probe_size=8, quiet=True, threads=1, warmup=0.0)
    teacher_out = tmp_path / "teacher"
    train(config_from_recipe("digits", method="baseline", out=str(teacher_out), **base))
    teacher_path = teacher_out.with_suffix(".safetensors")
    with pytest.raises(TffdVizError, match="teacher is required"):
        config_from_recipe("digits", method="tffd_kd", **base)
    _, card = train(
        config_from_recipe(
            "digits",
            method="tffd_kd",
            teacher=str(teacher_path),
            lambda_kd=2.0,
            out=str(tmp_path / "student"),
            **base,
        )
    )
    assert card["method"] == "tffd_kd" and card["lambda_kd"] == 2.0 and card["kd_temperature"] == 4.0
    assert card["teacher"]["sha256"] == load_checkpoint(teacher_path)[1]["sha256"]
    assert all(math.isfinite(r["kd"]) and r["kd"] >= 0 for r in card["history"])
    # lambda_kd = 0 trains exactly as plain Tf-FD (same draws, the KD term only logged)
    same_kd0, _ = train(
        config_from_recipe(
            "digits", method="tffd_kd", teacher=str(teacher_path), lambda_kd=0.0, out=None, **base
        )
    )
    plain, _ = train(config_from_recipe("digits", method="tffd", out=None, **base))
    for k, v in plain.state_dict().items():
        assert torch.equal(v, same_kd0.state_dict()[k]), k


def test_train_step_adds_the_weighted_logit_kd_term() -> None:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    t_logits = torch.randn(8, 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    stats = train_step(
        model, x, y, TfFD(0.1, 0.2), 0.5, opt, teacher_logits=t_logits, lambda_kd=3.0, kd_temperature=2.0
    )
    # restated: T^2 * sum_k p_t (log p_t - log p_s), batch mean
    with torch.no_grad():
        s_logits = model(x).double()
    p_t = torch.softmax(t_logits.double() / 2, 1)
    kd = float((p_t * (p_t.log() - torch.log_softmax(s_logits / 2, 1))).sum(1).mean() * 4)
    assert stats["kd"] == pytest.approx(kd, rel=1e-4)
    assert stats["loss"] == pytest.approx(stats["ce"] + 0.5 * (stats["tffd_total"] + 3.0 * kd), rel=1e-5)


def test_training_path_imports_only_the_core() -> None:
    # the GPU machine has no streamlit, plotly or captum: `python -m tffd_viz train` must not need them
    code = (
        "import sys; import tffd_viz.train, tffd_viz.cli, tffd_viz.heldout, tffd_viz.checkpoints; "
        "print(sorted(m for m in ('streamlit', 'plotly', 'captum') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_gpu_training_script_runs_both_arms_resumably_on_the_cpu(tmp_path: Path) -> None:
    from conftest import CIFAR_FILES, CIFAR_ROOT

    root = Path(CIFAR_ROOT)
    if not any((root / f).exists() for f in CIFAR_FILES["cifar100"]):
        pytest.skip(f"no cifar100 files in {root}")
    env = {
        **os.environ,
        "OUT": str(tmp_path),
        "TFFD_GPU_DATA": str(root),
        "TFFD_GPU_SMOKE": "1",
        "DEVICE": "cpu",
    }
    for _ in range(2):  # the second call continues from the first call's states
        done = subprocess.run(
            ["bash", str(ROOT / "bench" / "train_gpu.sh"), "4"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    for method in ("baseline", "tffd"):
        stem = f"cifar100_resnet20_{method}_paper240_s0"
        state = torch.load(tmp_path / f"{stem}.resume.pt", weights_only=True)
        assert state["config"]["recipe"] == "paper" and state["config"]["padding_mode"] == "reflect"
        assert state["config"]["nesterov"] is True and state["epoch"] >= 2
        assert "resumed from" in (tmp_path / f"{stem}.log").read_text()


# --------------------------------------------------------------------------------------------------
# bad hyper-parameters and divergence (issue 21)
# --------------------------------------------------------------------------------------------------

#: option -> (a bad value, a fragment of the allowed range the message must name);
#: one row per OPTION_RULES key.
BAD_OPTIONS: dict[str, tuple[object, str]] = {
    "method": ("kd", "['baseline', 'tffd', 'tffd_kd']"),
    "lambda_intra": (-1.0, "finite number >= 0"),
    "lambda_inter": (float("inf"), "finite number >= 0"),
    "lambda_kd": (-0.5, "finite number >= 0"),
    "kd_temperature": (0.0, "finite number > 0"),
    "warmup": (-3.0, "epochs >= 0"),
    "epochs": (0, "whole number >= 1"),
    "batch_size": (2.5, "whole number >= 1"),
    "lr": (1e6, "(0, 10]"),
    "schedule": ("linear", "multistep, onecycle or cosine"),
    "gamma": (1.5, "(0, 1]"),
    "lr_warmup": (-1.0, "epochs >= 0"),
    "pct_start": (1.0, "(0, 1)"),
    "momentum": (1.0, "[0, 1)"),
    "weight_decay": (float("nan"), "[0, 1)"),
    "crop_padding": (65, "[0, 64]"),
    "padding_mode": ("edge", "['zeros', 'reflect']"),
    "augment": ("mixup", "pad_crop_flip or random_resized_crop"),
    "seed": (-1, "whole number >= 0"),
    "precision": ("fp16", "['bf16', 'fp32']"),
    "threads": (0, "whole number >= 1"),
    "probe_size": (0, "whole number >= 1"),
    "eval_batch_size": (-8, "whole number >= 1"),
    "limit_train": (0, "whole number >= 1"),
    "stop_after": (0, "whole number >= 1"),
    "time_limit": (-1.0, "seconds > 0"),
}


def test_every_checked_option_has_a_bad_value_in_this_table() -> None:
    from tffd_viz.train import OPTION_RULES

    assert set(BAD_OPTIONS) == set(OPTION_RULES)


@pytest.mark.parametrize("name", sorted(BAD_OPTIONS))
def test_a_bad_option_names_the_option_the_value_and_the_range(name: str) -> None:
    value, allowed = BAD_OPTIONS[name]
    with pytest.raises(TffdVizError) as info:
        config_from_recipe("digits", **{name: value})
    text = str(info.value)
    assert f"option {name} = {value!r} is not allowed" in text and allowed in text, text
    # the same check guards train() for a config built by hand (notebooks)
    with pytest.raises(TffdVizError, match=f"option {name} = "):
        train(TrainConfig(**{name: value}))


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (
            {"schedule": "multistep", "milestones": (5, 3), "epochs": 10},
            ["milestones = [5, 3]", "increasing", "[1, 9]"],
        ),
        ({"schedule": "multistep", "milestones": (3, 10), "epochs": 10}, ["milestones = [3, 10]", "[1, 9]"]),
        ({"nesterov": True, "momentum": 0.0}, ["nesterov = True", "momentum > 0", "momentum = 0.0"]),
        ({"method": "tffd_kd"}, ["teacher", "tffd_kd"]),
        ({"device": "tpu"}, ["device = 'tpu'", "auto, cpu, cuda"]),
    ],
)
def test_options_that_tie_together_are_checked_with_their_values(
    overrides: dict, fragments: list[str]
) -> None:
    with pytest.raises(TffdVizError) as info:
        config_from_recipe("digits", **overrides)
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_nonfinite_terms_are_named_in_loss_order_and_baseline_checks_only_what_it_trains_on() -> None:
    from tffd_viz.training.divergence import nonfinite_terms as _nonfinite_terms

    nan, inf = float("nan"), float("inf")
    stats = {
        "loss": inf,
        "ce": 2.3,
        "correct": 3.0,
        "kd": 1.0,
        "tffd_total": inf,
        "intra/layer1": 0.5,
        "intra/layer3": inf,
        "inter/layer1->layer2": nan,
        "n": 64.0,
        "lr": 0.1,
    }
    assert _nonfinite_terms(stats, True) == ["intra/layer3", "inter/layer1->layer2", "tffd_total", "loss"]
    assert _nonfinite_terms(stats, False) == ["loss"]  # a baseline's detached terms are only logged
    assert (
        _nonfinite_terms(
            dict(stats, loss=1.0, tffd_total=1.0, **{"intra/layer3": 1.0, "inter/layer1->layer2": 1.0}), True
        )
        == []
    )
    assert _nonfinite_terms(dict(stats, ce=nan, kd=-inf), True)[:2] == ["ce", "intra/layer3"]
    assert _nonfinite_terms(dict(stats, ce=nan, kd=-inf), False) == ["ce", "kd", "loss"]


def test_a_diverging_run_stops_at_its_step_names_the_term_and_keeps_the_last_good_resume_state(
    tmp_path,
) -> None:
    """lambda_intra = 1e6 on digits (4 steps an epoch, warm-up 1/3 then 2/3)
    blows up in epoch 2 (measured)."""
    from tffd_viz.errors import TrainingDiverged

    out = tmp_path / "div.safetensors"
    rows: list[dict] = []
    with pytest.raises(TrainingDiverged) as info:
        train(
            tiny(epochs=3, limit_train=256, probe_size=16, lambda_intra=1e6, out=str(out)),
            progress=rows.append,
        )
    exc = info.value
    assert exc.epoch == 2 and 1 <= exc.step <= 4, str(exc)
    assert exc.where == f"epoch 2 step {exc.step} term {exc.term}"
    again = pickle.loads(pickle.dumps(exc))  # e.g. raised in a worker process
    assert (type(again), again.epoch, again.step, again.term, str(again)) == (
        type(exc),
        2,
        exc.step,
        exc.term,
        str(exc),
    )
    text = str(exc)
    assert f"training diverged at epoch 2 step {exc.step}/4: {exc.term} = " in text
    assert (
        "lower lambda_intra / lambda_inter (now 1e+06 / 0.0005) or lr (now 0.1)" in text
    )  # the usual remedy
    assert f"the last good resume state {str(resume_path(out))!r} (after epoch 1) is kept" in text
    # nothing from the non-finite weights: no checkpoint, no card; the resume state is epoch 1's, finite
    assert not out.exists() and not out.with_suffix(".json").exists()
    state = torch.load(resume_path(out), weights_only=True)
    assert state["epoch"] == 1 and [r["epoch"] for r in rows] == [1]
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values() if t.is_floating_point())
    assert math.isfinite(state["history"][0]["ce"]) and math.isfinite(state["history"][0]["tffd_total"])


def test_a_run_whose_last_step_leaves_non_finite_weights_is_stopped_before_any_file(tmp_path) -> None:
    """lambda_intra = 1e7, 4 steps: the losses stay finite to the end of epoch 1,
    the weights do not (measured)."""
    from tffd_viz.errors import TrainingDiverged

    out = tmp_path / "w"
    with pytest.raises(TrainingDiverged) as info:
        train(tiny(limit_train=256, probe_size=16, lambda_intra=1e7, out=str(out)))
    assert (info.value.epoch, info.value.step, info.value.term) == (1, 4, "weights"), str(info.value)
    assert "non-finite weights after the epoch's last step (layer1.0.bn1.running_var" in str(info.value)
    assert "this run had written no resume state yet" in str(info.value)
    assert list(tmp_path.iterdir()) == []
