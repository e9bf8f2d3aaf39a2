"""Training with and without Tf-FD: the seeded in-memory loop, resumable state, model cards.

A :class:`TrainConfig` holds every option (defaults: the ``paper`` recipe of :data:`RECIPES`), and
:func:`train` runs the loop:

* data stay in memory; each epoch draws, from one seeded ``torch.Generator``, a permutation of the
  training split and per-image crop offsets and flips (:func:`augment_batch`, whole-batch tensor ops,
  no DataLoader workers); normalisation uses the dataset's mean/std;
* one forward pass per step gives the logits and the stage taps (:func:`train_step`); the loss is
  ``CE + warmup_weight(epoch, warmup) * TfFD(taps).total`` for ``method="tffd"``, plain CE for
  ``"baseline"`` (whose Tf-FD terms are still computed, detached, and logged);
* after every epoch: test accuracy, a history row (lr, CE, every intra/inter term, weighted total,
  train/test accuracy, seconds, per-channel saliency of every tap on a fixed probe batch) and a
  resumable state ``<out>.resume.pt`` (torch.save, read back with ``weights_only=True``);
* at the end the weights and a model card go to ``<out>.safetensors`` + ``<out>.json``
  (:func:`tffd_viz.checkpoints.save_checkpoint`).

Multi-process data parallel training (``torchrun --nproc_per_node=N -m tffd_viz train ...``) is
detected from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``: each rank takes a disjoint shard of the epoch's
seeded permutation (DistributedSampler semantics), the model is wrapped in
``DistributedDataParallel``, only rank 0 evaluates and writes files, and at the end the ranks compare
the hash of their weights (the run fails when they differ; the card records ``ranks_agree``).

The parts live in :mod:`tffd_viz.recipes` (the recipes), :mod:`tffd_viz.training` (options, schedules,
augmentation, one step, resume state, ranks, divergence, teacher) and :mod:`tffd_viz.sweeps` (sweeps);
their public names are importable from here.

>>> from tffd_viz.train import config_from_recipe, train
>>> model, card = train(config_from_recipe("digits", method="tffd", epochs=1, limit_train=128, out=None,
...                                          quiet=True))
>>> card["method"], card["epochs"], len(card["history"]), card["completed"]
('tffd', 1, 1, True)
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from tffd_viz.data import SIZED_DATASETS, DatasetBundle, ImageDataset, load_dataset, sample_indices
from tffd_viz.devices import resolved_device
from tffd_viz.errors import CheckpointError, TffdVizError
from tffd_viz.losses import TfFD, warmup_weight
from tffd_viz.models import create_model, default_taps, input_size
from tffd_viz.recipes import RECIPES
from tffd_viz.sweeps import LAYER_PRESETS, SWEEP_KEYS, run_sweep, sweep_prefix
from tffd_viz.training.augment import (
    AUGMENTATIONS,
    PADDING_MODES,
    augment_batch,
    epoch_draws,
    shard_positions,
)
from tffd_viz.training.config import (
    METHODS,
    OPTION_RULES,
    PRECISIONS,
    TrainConfig,
    config_dict,
    config_from_recipe,
    parse_pairs,
    parse_stages,
    resolved_stages,
)
from tffd_viz.training.distributed import (
    DistContext,
    agreed_state_sha256,
    averaged_saliency,
    joined,
    launched_context,
    out_of_time,
)
from tffd_viz.training.divergence import diverged, nonfinite_terms, nonfinite_weights
from tffd_viz.training.schedules import SCHEDULES
from tffd_viz.training.state import (
    checked_resume_state,
    checkpoint_stem,
    resume_path,
    save_resume_state,
    state_sha256,
)
from tffd_viz.training.step import evaluate_accuracy, probe_saliency, train_step
from tffd_viz.training.teacher import Teacher, loaded_teacher

__all__ = [
    "AUGMENTATIONS",
    "LAYER_PRESETS",
    "METHODS",
    "OPTION_RULES",
    "PADDING_MODES",
    "PRECISIONS",
    "RECIPES",
    "SCHEDULES",
    "SWEEP_KEYS",
    "TrainConfig",
    "augment_batch",
    "checkpoint_stem",
    "config_from_recipe",
    "epoch_draws",
    "evaluate_accuracy",
    "parse_pairs",
    "parse_stages",
    "probe_saliency",
    "resolved_stages",
    "resume_path",
    "run_sweep",
    "state_sha256",
    "sweep_prefix",
    "train",
    "train_step",
]


# --------------------------------------------------------------------------------------------------
# before any work
# --------------------------------------------------------------------------------------------------


def _checked_before_work(cfg: TrainConfig) -> None:
    """The checks :meth:`TrainConfig.check` cannot make alone, before any data is loaded: the architecture and
    its stages / pairs (on a shape-only ``meta`` model), and an output folder that can be created and
    written."""
    try:
        with torch.device("meta"):
            taps = list(default_taps(create_model(cfg.arch, num_classes=2, in_chans=3)))
    except TffdVizError as exc:
        raise TffdVizError(f"option arch = {cfg.arch!r}: {exc}") from None
    only_one: tuple[tuple[str, dict[str, Any]], ...] = (("stages", {"pairs": []}), ("pairs", {"stages": []}))
    for name, only in only_one:
        try:
            resolved_stages(dataclasses.replace(cfg, **only), taps)
        except TffdVizError as exc:
            raise TffdVizError(
                f"option {name} = {getattr(cfg, name)!r} does not fit {cfg.arch}: {exc}"
            ) from None
    if cfg.out is None:
        return
    folder = checkpoint_stem(cfg.out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TffdVizError(
            f"option out = {cfg.out!r}: cannot create the folder {str(folder)!r} ({exc.strerror or exc})"
        ) from None
    if not os.access(folder, os.W_OK):
        raise TffdVizError(f"option out = {cfg.out!r}: the folder {str(folder)!r} is not writable")


def train(
    config: TrainConfig, progress: Callable[[dict[str, Any]], None] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Train a zoo model with or without Tf-FD and return it with its model card.

    Parameters
    ----------
    config : TrainConfig
    progress : callable, optional
        Called on rank 0 with each epoch's history row as it completes.

    Returns
    -------
    model : nn.Module
        The trained (inner, unwrapped) model, in eval mode, on the training device.
    card : dict
        Every key of :data:`tffd_viz.checkpoints.CARD_KEYS` plus ``hparams``, ``stages``, ``world_size``,
        ``precision``, ``completed`` (False when stopped early by ``stop_after``); under torchrun also
        ``ranks_agree`` (True) and ``state_sha256`` (the hash every rank's weights share).

    Raises
    ------
    TffdVizError
        Bad options or an unavailable device (before any data is loaded or file written), or ranks that end
        with different weights (no checkpoint is written); :class:`CheckpointError` for an unusable resume
        state; :class:`TrainingDiverged` when a step's loss or term, or the weights after an epoch, go
        non-finite (naming the epoch, step and term; nothing is written from the non-finite weights, the last
        good resume state is kept).
    """
    cfg = config.check()
    launched = launched_context()
    device = resolved_device(cfg.device, unavailable="raise", local_rank=launched.local_rank).device
    _checked_before_work(cfg)
    ctx = joined(launched, device)
    try:
        return _train(cfg, ctx, device, progress)
    finally:
        if ctx.owns_group and dist.is_initialized():
            dist.destroy_process_group()


# --------------------------------------------------------------------------------------------------
# the run: set up, restore, epochs, finish
# --------------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Everything one training process holds: what it trains with, and how far it got."""

    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    amp: torch.dtype | None  # autocast dtype (None: fp32)
    fmt: torch.memory_format  # of the model and the batches
    bundle: DatasetBundle
    model: nn.Module  # the inner model
    net: nn.Module  # what steps: the model, or a DDP wrapper of it
    taps: list[str]
    stages: list[str]
    pairs: list[tuple[str, str]]
    tffd: TfFD
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    gen: torch.Generator  # the data generator: permutations, crops, flips
    n_train: int  # images per epoch (all ranks)
    steps_per_epoch: int
    positions: Tensor  # this rank's positions into an epoch's permutation
    train_images: Tensor | None  # on the device, or None for a lazy image folder
    train_labels: Tensor
    probe: Tensor  # the fixed saliency probe batch, normalised, on the device
    teacher: Teacher | None
    rpath: Path | None  # <out>.resume.pt
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_acc: float = float("-inf")
    epochs_done: int = 0
    seconds_done: float = 0.0
    good: tuple[Path, int] | None = None  # (path, epoch) of the last resume state written or resumed from

    @property
    def applies_tffd(self) -> bool:
        """Whether the loss trains on the Tf-FD terms (else they are only logged)."""
        return self.cfg.method in ("tffd", "tffd_kd")


def _prepared_run(cfg: TrainConfig, ctx: DistContext, device: torch.device) -> _Run:
    """Load the data, build the model, loss, optimiser, schedule and generator of a fresh run (epoch 0)."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    amp = PRECISIONS[cfg.precision]
    bundle = load_dataset(
        cfg.dataset,
        cfg.data_root,
        image_size=(input_size(cfg.arch) if cfg.dataset in SIZED_DATASETS else None),
    )  # 224 for torchvision's archs
    train_set = bundle.train

    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if device.type == "cpu" or amp is not None else torch.contiguous_format
    model = create_model(cfg.arch, num_classes=len(bundle.classes), in_chans=bundle.in_chans)
    model = model.to(device=device).to(memory_format=fmt)
    taps = list(default_taps(model))
    stages, pairs = resolved_stages(cfg, taps)
    saliency_fn = averaged_saliency if (cfg.sync_saliency and ctx.active) else None
    tffd = TfFD(cfg.lambda_intra, cfg.lambda_inter, stages=stages, pairs=pairs, saliency_fn=saliency_fn)

    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
    )
    n_train = len(train_set) if cfg.limit_train is None else min(cfg.limit_train, len(train_set))
    steps_per_epoch = math.ceil(math.ceil(n_train / ctx.world) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, SCHEDULES[cfg.schedule](cfg, steps_per_epoch))
    probe_idx = sample_indices(len(train_set), min(cfg.probe_size, len(train_set)), seed=0)
    return _Run(
        cfg=cfg,
        ctx=ctx,
        device=device,
        amp=amp,
        fmt=fmt,
        bundle=bundle,
        model=model,
        net=model,
        taps=taps,
        stages=stages,
        pairs=pairs,
        tffd=tffd,
        optimizer=optimizer,
        scheduler=scheduler,
        gen=torch.Generator().manual_seed(cfg.seed),
        n_train=n_train,
        steps_per_epoch=steps_per_epoch,
        positions=shard_positions(n_train, ctx.world, ctx.rank),
        train_images=train_set.images.to(device)
        if isinstance(train_set, ImageDataset)
        else None,  # else: lazy
        train_labels=train_set.labels.to(device),
        probe=train_set.normalized(probe_idx).to(device),
        teacher=None,
        rpath=resume_path(cfg.out) if cfg.out is not None else None,
    )


def _restore(run: _Run) -> None:
    """Continue ``run`` from its resume state (``cfg.resume``): weights, optimiser, schedule, generators,
    history.

    ``resume="auto"`` without a state file starts afresh; a named file that does not exist is an error.
    """
    cfg = run.cfg
    if cfg.resume is None:
        return
    source = run.rpath if cfg.resume == "auto" else Path(cfg.resume)
    if source is None:
        raise TffdVizError("resume='auto' needs out=... (the resume state is <out>.resume.pt)")
    if not source.is_file():
        if cfg.resume != "auto":
            raise CheckpointError(f"resume state {str(source)!r} does not exist")
        return
    state = checked_resume_state(source, cfg)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if run.device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], run.device)
    run.history, run.best_acc = list(state["history"]), float(state["best_acc"])
    run.epochs_done, run.seconds_done = int(state["epoch"]), float(state["train_seconds"])
    run.good = (source, run.epochs_done)
    _log(run, f"resumed from {source} after epoch {run.epochs_done}")


def _train(
    cfg: TrainConfig,
    ctx: DistContext,
    device: torch.device,
    progress: Callable[[dict[str, Any]], None] | None,
) -> tuple[nn.Module, dict[str, Any]]:
    run = _prepared_run(cfg, ctx, device)
    _restore(run)
    if ctx.active:
        run.net = DistributedDataParallel(
            run.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if cfg.method == "tffd_kd":
        run.teacher = loaded_teacher(str(cfg.teacher), run.bundle, device)
    last_epoch = cfg.epochs if cfg.stop_after is None else min(cfg.epochs, cfg.stop_after)
    _log(
        run,
        f"training {cfg.arch} on {cfg.dataset} ({run.n_train} images, {run.steps_per_epoch} steps/epoch, "
        f"world {ctx.world}) method={cfg.method} stages={run.stages} pairs={run.pairs} device={device}",
    )
    t_begin = time.perf_counter()
    for epoch in range(run.epochs_done + 1, last_epoch + 1):
        t0 = time.perf_counter()
        lr = float(run.optimizer.param_groups[0]["lr"])
        sums, previous = _run_epoch(run, epoch)
        seconds = time.perf_counter() - t0
        run.seconds_done += seconds
        broken = nonfinite_weights(
            run.model
        )  # finite losses can still step into inf weights; never save those
        if broken:
            raise diverged(
                cfg,
                epoch,
                run.steps_per_epoch,
                run.steps_per_epoch,
                ["weights"],
                {},
                previous,
                run.good,
                weights=broken,
            )
        if ctx.main:
            row = _epoch_row(run, epoch, sums, lr, seconds)
            _record_epoch(run, row)
            if progress is not None:
                progress(row)
        if cfg.time_limit is not None and out_of_time(cfg.time_limit, t_begin, seconds, ctx, device):
            _log(run, f"time limit {cfg.time_limit:g} s: stopping after epoch {epoch} (resume state kept)")
            last_epoch = epoch
            break
    return _finished(run, completed=last_epoch == cfg.epochs)


def _run_epoch(run: _Run, epoch: int) -> tuple[dict[str, float], dict[str, float] | None]:
    """Train one epoch; return the step stats summed over the epoch (and all ranks) and the last step's stats.

    Sums: ``n``, ``correct`` as counts; every loss and term weighted by its batch size (divide by ``n`` for
    the epoch mean). Under torchrun, BatchNorm running statistics are then rank 0's on every rank.

    Raises
    ------
    TrainingDiverged
        At the first step whose loss or trained term is non-finite.
    """
    cfg, train_set = run.cfg, run.bundle.train
    perm, offsets, flips = epoch_draws(len(train_set), cfg, run.gen)
    perm = perm[: run.n_train]
    warm = warmup_weight(epoch, cfg.warmup)
    sums: dict[str, float] = {}
    previous: dict[str, float] | None = None
    run.net.train()
    bar = _progress_bar(run, epoch)
    try:
        for step in range(run.steps_per_epoch):
            pos = run.positions[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            idx = perm[pos].to(run.device)
            x01 = AUGMENTATIONS[cfg.augment].batch(
                train_set,
                run.train_images,
                idx,
                None if offsets is None else offsets[pos],
                None if flips is None else flips[pos],
                cfg,
            )
            x = train_set.normalize(x01).contiguous(memory_format=run.fmt)
            t_logits = None if run.teacher is None else run.teacher.logits(x01, run.amp)
            stats = train_step(
                run.net,
                x,
                run.train_labels[idx],
                run.tffd,
                warm,
                run.optimizer,
                taps=run.taps,
                apply_tffd=run.applies_tffd,
                autocast_dtype=run.amp,
                scheduler=run.scheduler,
                teacher_logits=t_logits,
                lambda_kd=cfg.lambda_kd,
                kd_temperature=cfg.kd_temperature,
            )
            bad = nonfinite_terms(stats, run.applies_tffd)
            if bad:
                raise diverged(cfg, epoch, step + 1, run.steps_per_epoch, bad, stats, previous, run.good)
            previous = stats
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + (v if k in ("n", "correct", "lr") else v * stats["n"])
            if bar is not None:
                bar.update(1)
                bar.set_postfix(ce=f"{stats['ce']:.3f}", tffd=f"{stats['tffd_total']:.3g}")
    finally:
        if bar is not None:
            bar.close()
    return _summed_over_ranks(run, sums), previous


def _summed_over_ranks(run: _Run, sums: dict[str, float]) -> dict[str, float]:
    """``sums`` added up over all ranks (float64); under torchrun also give every rank rank 0's BN
    statistics."""
    keys = sorted(sums)
    totals = torch.tensor([sums[k] for k in keys], dtype=torch.float64)
    if run.ctx.active:
        totals = totals.to(run.device)
        dist.all_reduce(totals, op=dist.ReduceOp.SUM)
        for buf in run.model.buffers():  # BN running statistics: rank 0's, so every rank ends identical
            dist.broadcast(buf, src=0)
    return dict(zip(keys, totals.cpu().tolist(), strict=True))


def _epoch_row(run: _Run, epoch: int, sums: dict[str, float], lr: float, seconds: float) -> dict[str, Any]:
    """The history row of an epoch (rank 0): means of the summed step stats, test accuracy, probe saliency.

    Keys: ``epoch``, ``lr`` (of the epoch's first step), ``ce``, ``intra`` (tap -> term), ``inter`` (pair ->
    term), ``tffd_total``, ``tffd_weight`` (the warm-up factor, 0 for a baseline), ``kd`` (Tf-FD+ only),
    ``loss``, ``train_acc``, ``test_acc`` (percent), ``seconds``, ``saliency`` (tap -> per-channel values).
    """
    cfg, count = run.cfg, sums["n"]
    test_acc = evaluate_accuracy(run.model, run.bundle.test, cfg.eval_batch_size, run.device, run.amp)
    return {
        "epoch": epoch,
        "lr": lr,
        "ce": sums["ce"] / count,
        "intra": {k[6:]: v / count for k, v in sorted(sums.items()) if k.startswith("intra/")},
        "inter": {k[6:]: v / count for k, v in sorted(sums.items()) if k.startswith("inter/")},
        "tffd_total": sums["tffd_total"] / count,
        "tffd_weight": warmup_weight(epoch, cfg.warmup) if run.applies_tffd else 0.0,
        **({"kd": sums["kd"] / count} if "kd" in sums else {}),
        "loss": sums["loss"] / count,
        "train_acc": 100.0 * sums["correct"] / count,
        "test_acc": test_acc,
        "seconds": seconds,
        "saliency": probe_saliency(run.model, run.probe, run.taps),
    }


def _record_epoch(run: _Run, row: dict[str, Any]) -> None:
    """Append ``row`` to the history, log it, and write the resume state (when the run has an output)."""
    run.history.append(row)
    run.best_acc = max(run.best_acc, row["test_acc"])
    run.epochs_done = row["epoch"]
    _log(run, _format_row(row, run.cfg.epochs))
    if run.rpath is None:
        return
    save_resume_state(
        run.rpath,
        {
            "config": config_dict(run.cfg),
            "epoch": run.epochs_done,
            "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "generator": run.gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            "history": run.history,
            "best_acc": run.best_acc,
            "train_seconds": run.seconds_done,
        },
    )
    run.good = (run.rpath, run.epochs_done)


def _finished(run: _Run, completed: bool) -> tuple[nn.Module, dict[str, Any]]:
    """The trained model (eval mode) and its card; a completed run gets held-out terms and is saved
    (rank 0)."""
    cfg, model = run.cfg, run.model
    model.eval()
    card = _card(run, completed)
    if run.ctx.active:  # every rank must hold the same weights (raises on every rank, before any file)
        card["ranks_agree"], card["state_sha256"] = True, agreed_state_sha256(model, run.ctx)
    if run.teacher is not None:
        card["lambda_kd"], card["kd_temperature"] = cfg.lambda_kd, cfg.kd_temperature
        card["teacher"] = run.teacher.description
    if run.ctx.main and completed:
        from tffd_viz.heldout import heldout_terms

        card["heldout_terms"] = heldout_terms(model, run.bundle.test, taps=run.taps)
    if run.ctx.main and cfg.out is not None and completed:
        from tffd_viz.checkpoints import save_checkpoint

        path = save_checkpoint(model, card, checkpoint_stem(cfg.out).with_suffix(".safetensors"))
        _log(run, f"saved {path}")
    return model, card


# --------------------------------------------------------------------------------------------------
# card and log lines
# --------------------------------------------------------------------------------------------------


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict[str, str]:
    import torchvision

    from tffd_viz import __version__

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "tffd_viz": __version__,
        "python": platform.python_version(),
    }


def _card(run: _Run, completed: bool) -> dict[str, Any]:
    """The model card of ``run`` (see :func:`train`), without the held-out terms and teacher entries."""
    cfg, bundle, history = run.cfg, run.bundle, run.history
    return {
        "arch": cfg.arch,
        "num_classes": len(bundle.classes),
        "in_chans": bundle.in_chans,
        "dataset": cfg.dataset,
        "mean": list(bundle.mean),
        "std": list(bundle.std),
        "method": cfg.method,
        "lambda_intra": cfg.lambda_intra,
        "lambda_inter": cfg.lambda_inter,
        "taps": list(run.taps),
        "pairs": [list(p) for p in run.pairs],
        "epochs": cfg.epochs,
        "warmup": cfg.warmup,
        "seed": cfg.seed,
        "recipe": cfg.recipe,
        "final_acc": history[-1]["test_acc"] if history else None,
        "best_acc": run.best_acc if history else None,
        "train_seconds": run.seconds_done,
        "device": _device_name(run.device),
        "versions": _versions(),
        "history": history,
        "hparams": dict(cfg.hparams)
        if cfg.hparams
        else {k: v for k, v in config_dict(cfg).items() if k in RECIPES["paper"]},
        "stages": list(run.stages),
        "world_size": run.ctx.world,
        "precision": cfg.precision,
        "eval_batch_size": cfg.eval_batch_size,  # with precision: how final_acc / best_acc were measured
        "completed": completed,
        "classes": list(bundle.classes),
        **(
            {"input_size": bundle.extra.get("image_size", 32), "transform": bundle.extra.get("transform")}
            if "image_size" in bundle.extra or input_size(cfg.arch) != 32
            else {}
        ),  # e.g. resnet18 on CIFAR: 32
    }


def _log(run: _Run, text: str) -> None:
    """One line on stderr, from rank 0, unless the run is quiet."""
    if run.ctx.main and not run.cfg.quiet:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _format_row(row: dict[str, Any], epochs: int) -> str:
    terms = " ".join(f"{k}={v:.4g}" for k, v in row["intra"].items())
    inter = " ".join(f"{k}={v:.4g}" for k, v in row["inter"].items())
    return (
        f"epoch {row['epoch']}/{epochs} lr={row['lr']:.4g} ce={row['ce']:.4f} tffd={row['tffd_total']:.4g} "
        f"w={row['tffd_weight']:.3g} intra[{terms}] inter[{inter}] train_acc={row['train_acc']:.2f} "
        f"test_acc={row['test_acc']:.2f} {row['seconds']:.1f}s"
    )


def _progress_bar(run: _Run, epoch: int) -> Any:
    """A tqdm bar over the epoch's steps on an interactive rank-0 terminal, else None."""
    if not run.ctx.main or run.cfg.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(
        total=run.steps_per_epoch, desc=f"epoch {epoch}/{run.cfg.epochs}", leave=False, file=sys.stderr
    )
