"""Training cost of one step: baseline CE vs Tf-FD vs a teacher-based feature-distillation step.

The Tf-FD paper's own claim is that teacher-free distillation costs a fraction of teacher-based KD.
This measures one optimisation step (forward, loss, backward, SGD update) on a CIFAR-shaped batch
already in memory:

* ``baseline``: :func:`tffd_viz.train.train_step` with ``tffd=None`` (plain cross-entropy);
* ``baseline_logged``: ``train_step`` as :func:`tffd_viz.train.train` runs ``method="baseline"`` (the Tf-FD
  terms computed under ``no_grad`` for the log, not trained on);
* ``tffd``: ``train_step`` with the paper's :class:`~tffd_viz.losses.TfFD` (all stages and pairs), warm-up 1;
* ``teacher_fitnets``: a teacher (``resnet110``) forward under ``no_grad`` plus FitNets' hint as RepDistiller
  runs it (``--distill hint -a 0 -b 100``: ``loss = CE + beta * MSE(regressor(student hint), teacher hint)``,
  ``beta = 100``, hint stage ``layer2``, regressor ``ConvReg``: a 1x1 conv, BatchNorm and ReLU for maps of one
  size); the regressor is trained with the student.

The teacher is a trained network, so that its hint has a trained network's magnitude: the shipped CIFAR-100
``resnet20`` baseline (``teacher_weights``) transplanted into the first three blocks of each ``resnet110``
stage, the other 15 blocks of each stage made exact identities (the last BatchNorm of their residual branch
has weight and bias 0, so the block returns ``relu(0 + x) = x`` for the post-ReLU ``x``). The teacher
therefore computes the trained ``resnet20`` (a check compares its logits and hint with the checkpoint's) at
the cost of ``resnet110`` (the zero branches are computed like any other). A random-init ``resnet110`` in eval
mode (BatchNorm statistics never estimated) has a ``layer2`` mean square of about 3e11 on this batch, against
about 1.1 for the trained one: with beta = 100 that drove an early version of this benchmark to NaN weights.

Every variant starts from the same initial weights and sees the same batch; variants (and memory
formats) are timed alternately, ``repeats`` rounds after warm-up steps, and reported as medians with
IQR and as ratios to the baseline step of the same memory format. ``channels_last`` is what
:func:`tffd_viz.train.train` uses on the CPU (and under autocast); fp32 CUDA training uses contiguous.
"""

from __future__ import annotations

import copy
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.common import REPO_ROOT, Options, alternate, check, column, run_start, summary, table, target
from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.losses import TfFD
from tffd_viz.models import create_model, extract_taps, tap_info
from tffd_viz.train import train_step

NAME = "train_step"
TITLE = "Training step: baseline vs Tf-FD vs teacher-based FitNets"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "teacher": "resnet110",
    "teacher_weights": "checkpoints/cifar100_resnet20_baseline_s0.safetensors",
    "num_classes": 100,
    "batch_size": 128,
    "warmup": 5,
    "repeats": 30,
    "formats": ["channels_last", "contiguous"],
    "hint_student": "layer2",
    "hint_teacher": "layer2",
    "beta": 100.0,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "seed": 0,
}
QUICK: dict[str, Any] = {
    "arch": "resnet8",
    "teacher": "resnet32",
    "batch_size": 16,
    "warmup": 1,
    "repeats": 3,
}

VARIANTS: tuple[str, ...] = ("baseline", "baseline_logged", "tffd", "teacher_fitnets")
FORMATS: dict[str, torch.memory_format] = {
    "contiguous": torch.contiguous_format,
    "channels_last": torch.channels_last,
}
TARGET_RATIO = 1.05
STAGES: tuple[str, ...] = ("layer1", "layer2", "layer3")

Step = Callable[[], dict[str, float]]


def train_format(device: torch.device) -> str:
    """The memory format :func:`tffd_viz.train.train` uses in fp32 on ``device``."""
    return "channels_last" if device.type == "cpu" else "contiguous"


def _sgd(params: Any, s: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])


def transplanted_teacher(arch: str, weights: str | Path, num_classes: int) -> tuple[nn.Module, nn.Module]:
    """A deep CIFAR ResNet computing a shipped, trained shallower one: ``(teacher, source)``, in eval mode.

    The source checkpoint's stem, classifier and the blocks of each stage go into the first blocks of the
    same stage of ``arch``; every further block gets a residual branch whose last BatchNorm has weight and
    bias 0, so it returns ``relu(0 + x) = x`` (its input is post-ReLU): the same function, the cost of
    ``arch``.

    Raises
    ------
    ValueError
        When the checkpoint's widths or class count differ from ``arch``'s, or ``arch`` has fewer blocks per
        stage than the source.
    """
    path = Path(weights) if Path(weights).is_absolute() else REPO_ROOT / weights
    source, card = load_checkpoint(path, device="cpu")
    teacher = create_model(arch, num_classes=num_classes)
    if card.get("num_classes") != num_classes:
        raise ValueError(
            f"teacher_weights {path} has {card.get('num_classes')} classes, the benchmark {num_classes}"
        )
    src, dst = source.state_dict(), teacher.state_dict()
    blocks: dict[str, int] = {}
    for stage in STAGES:
        n_src, n_dst = len(getattr(source, stage)), len(getattr(teacher, stage))
        if n_dst < n_src:
            raise ValueError(
                f"teacher {arch} has {n_dst} blocks in {stage}, fewer than the {n_src} of "
                f"{card.get('arch')} ({path})"
            )
        blocks[stage] = n_src
    for key, value in src.items():
        if key not in dst or dst[key].shape != value.shape:
            raise ValueError(
                f"teacher_weights {path} ({card.get('arch')}) does not fit {arch}: parameter {key} "
                f"{tuple(value.shape)} vs {tuple(dst[key].shape) if key in dst else 'absent'}"
            )
        dst[key] = value.clone()
    teacher.load_state_dict(dst)
    with torch.no_grad():
        for stage, n_src in blocks.items():
            for block in list(getattr(teacher, stage))[n_src:]:
                block.bn2.weight.zero_()
                block.bn2.bias.zero_()
    return teacher.eval(), source.eval()


class ConvReg(nn.Module):
    """FitNets' regressor for a student and a teacher hint of one spatial size: 1x1 conv, BatchNorm, ReLU.

    RepDistiller's ``models/util.py`` ``ConvReg`` for ``s_H == t_H`` (kernel ``1 + s_H - t_H = 1``).
    Maps ``(N, Cs, H, W) -> (N, Ct, H, W)``.
    """

    def __init__(self, s_channels: int, t_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(s_channels, t_channels, kernel_size=1)
        self.bn = nn.BatchNorm2d(t_channels)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


class FitNetsStep:
    """One teacher-based step: teacher taps under ``no_grad``, student forward, CE + beta * hint MSE, SGD.

    Parameters
    ----------
    student, teacher : nn.Module
        The student (train mode) and the frozen teacher (eval mode, no grad).
    regressor : nn.Module
        Maps the student's hint map ``(N, Cs, H, W)`` to the teacher's ``(N, Ct, H, W)``.
    optimizer : Optimizer
        Over the student's and the regressor's parameters.
    hint_student, hint_teacher : str
        Tap names of the hint stages.
    beta : float
        Weight of the hint loss.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        regressor: nn.Module,
        optimizer: torch.optim.Optimizer,
        hint_student: str,
        hint_teacher: str,
        beta: float,
    ) -> None:
        self.student, self.teacher, self.regressor = student, teacher, regressor
        self.optimizer = optimizer
        self.hint_student, self.hint_teacher, self.beta = hint_student, hint_teacher, float(beta)

    def __call__(self, x: Tensor, labels: Tensor) -> dict[str, float]:
        with torch.no_grad():
            t_feat = extract_taps(self.teacher, x, [self.hint_teacher])[self.hint_teacher]
        logits, feats = extract_taps(self.student, x, [self.hint_student], return_logits=True)
        ce = F.cross_entropy(logits.float(), labels)
        hint = F.mse_loss(self.regressor(feats[self.hint_student]), t_feat)
        loss = ce + self.beta * hint
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        values = torch.stack([loss.detach(), ce.detach(), hint.detach()]).tolist()  # one sync, as train_step
        return dict(zip(("loss", "ce", "hint"), values, strict=True))


class Recorded:
    """A step that keeps the loss of every call (``losses``), so every timed step can be checked finite."""

    def __init__(self, step: Step) -> None:
        self.step = step
        self.losses: list[float] = []

    def __call__(self) -> dict[str, float]:
        out = self.step()
        self.losses.append(out["loss"])
        return out


def build_steps(
    s: dict[str, Any], device: torch.device, fmt_name: str, x: Tensor, labels: Tensor, teacher: nn.Module
) -> tuple[dict[str, Step], nn.Module]:
    """Return ``variant -> zero-argument step`` for one memory format, and a copy of the initial student.

    Every variant gets its own copy of one seeded initial student (and its own optimiser); ``teacher`` (on
    the CPU, eval mode) is copied to ``device`` in the format.
    """
    fmt = FORMATS[fmt_name]
    torch.manual_seed(s["seed"])
    base = create_model(s["arch"], num_classes=s["num_classes"]).to(device=device, memory_format=fmt)
    base.train()
    teacher = copy.deepcopy(teacher).to(device=device, memory_format=fmt).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    xf = x.contiguous(memory_format=fmt)
    tffd = TfFD()

    def train_step_variant(tffd_loss: TfFD | None, apply: bool) -> Step:
        model = copy.deepcopy(base)
        opt = _sgd(model.parameters(), s)
        return lambda: train_step(model, xf, labels, tffd_loss, 1.0, opt, apply_tffd=apply)

    s_ch = tap_info(base, [s["hint_student"]])[s["hint_student"]].channels
    t_ch = tap_info(teacher, [s["hint_teacher"]])[s["hint_teacher"]].channels
    student = copy.deepcopy(base)
    torch.manual_seed(s["seed"] + 2)
    regressor = ConvReg(s_ch, t_ch).to(device=device, memory_format=fmt).train()
    fitnets = FitNetsStep(
        student,
        teacher,
        regressor,
        _sgd([*student.parameters(), *regressor.parameters()], s),
        s["hint_student"],
        s["hint_teacher"],
        s["beta"],
    )
    steps: dict[str, Step] = {
        "baseline": train_step_variant(None, False),
        "baseline_logged": train_step_variant(tffd, False),
        "tffd": train_step_variant(tffd, True),
        "teacher_fitnets": lambda: fitnets(xf, labels),
    }
    return {v: Recorded(step) for v, step in steps.items()}, copy.deepcopy(base)


def _first_step_checks(
    fmt_name: str,
    first: dict[str, dict[str, float]],
    initial: nn.Module,
    x: Tensor,
    labels: Tensor,
    beta: float,
    tol: float,
) -> list[dict[str, Any]]:
    """Checks on the first (untimed) step of each variant, from the same weights and batch (absolute ``tol``).

    The tolerances are absolute: a loss that blows up (or a NaN) fails them instead of widening them.
    """
    with torch.no_grad():
        ce_plain = float(F.cross_entropy(initial(x.contiguous(memory_format=FORMATS[fmt_name])), labels))
    ces = {v: first[v]["ce"] for v in VARIANTS}
    spread = max(ces.values()) - min(ces.values())
    tffd = first["tffd"]
    kd = first["teacher_fitnets"]
    tffd_gap = tffd["loss"] - (tffd["ce"] + tffd["tffd_total"])
    kd_gap = kd["loss"] - (kd["ce"] + beta * kd["hint"])
    return [
        check(
            f"[{fmt_name}] same CE in every variant at step 1 "
            f"(same weights, same batch), |spread| <= {tol:g}",
            spread <= tol,
            spread,
        ),
        check(
            f"[{fmt_name}] step-1 CE = F.cross_entropy(model(x), y) of the initial weights, within {tol:g}",
            abs(ces["baseline"] - ce_plain) <= tol,
            ces["baseline"] - ce_plain,
        ),
        check(f"[{fmt_name}] baseline loss = CE", first["baseline"]["loss"] == first["baseline"]["ce"]),
        check(
            f"[{fmt_name}] baseline_logged loss = CE (terms logged, not trained)",
            first["baseline_logged"]["loss"] == first["baseline_logged"]["ce"],
        ),
        check(
            f"[{fmt_name}] tffd loss = CE + Tf-FD total (warm-up 1), within {tol:g}",
            abs(tffd_gap) <= tol,
            tffd_gap,
        ),
        check(
            f"[{fmt_name}] teacher_fitnets loss = CE + beta * hint, within {10 * tol:g} (loss about 1e2)",
            abs(kd_gap) <= 10 * tol,
            kd_gap,
        ),
    ]


def _teacher_checks(
    teacher: nn.Module, source: nn.Module, x: Tensor, hint: str, tol: float
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The transplanted teacher computes the checkpoint: same logits and hint (absolute ``tol``) on CPU."""
    with torch.no_grad():
        t_logits, t_taps = extract_taps(teacher, x.cpu(), [hint], return_logits=True)
        s_logits, s_taps = extract_taps(source, x.cpu(), [hint], return_logits=True)
    logit_gap = float((t_logits - s_logits).abs().max())
    hint_gap = float((t_taps[hint] - s_taps[hint]).abs().max())
    stats = {
        "teacher_hint_mean_square": float(t_taps[hint].double().pow(2).mean()),
        "source_hint_mean_square": float(s_taps[hint].double().pow(2).mean()),
    }
    return [
        check(
            f"teacher logits = the checkpoint's logits on the batch, within {tol:g}",
            logit_gap <= tol,
            logit_gap,
        ),
        check(
            f"teacher {hint} = the checkpoint's {hint} on the batch, within {tol:g}",
            hint_gap <= tol,
            hint_gap,
        ),
    ], stats


def run(opts: Options) -> dict[str, Any]:
    """Measure the steps; return the result payload (see :mod:`bench.common`)."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    unknown = [f for f in s["formats"] if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown memory format(s) {unknown}; choose from {list(FORMATS)}")
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["batch_size"], 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, s["num_classes"], (s["batch_size"],), generator=gen).to(device)
    teacher, source = transplanted_teacher(s["teacher"], s["teacher_weights"], s["num_classes"])
    # float rounding only on CPU; CUDA convolutions may use TF32 (10-bit mantissa) and pick other kernels
    tol, format_tol = (1e-5, 1e-4) if device.type == "cpu" else (1e-4, 1e-2)
    teacher_checks, teacher_stats = _teacher_checks(teacher, source, x, s["hint_teacher"], 1e-4)
    result["checks"] += teacher_checks
    result["teacher"] = {"arch": s["teacher"], "weights": s["teacher_weights"], **teacher_stats}

    fns: dict[str, Recorded] = {}
    first: dict[str, dict[str, dict[str, float]]] = {}
    for fmt_name in s["formats"]:
        steps, initial = build_steps(s, device, fmt_name, x, labels, teacher)
        first[fmt_name] = {v: steps[v]() for v in VARIANTS}  # the checked first step (also a warm-up)
        result["checks"] += _first_step_checks(fmt_name, first[fmt_name], initial, x, labels, s["beta"], tol)
        fns.update({f"{fmt_name}/{v}": steps[v] for v in VARIANTS})
    if len(s["formats"]) > 1:
        ces = [first[f]["baseline"]["ce"] for f in s["formats"]]
        spread = max(ces) - min(ces)
        result["checks"].append(
            check(
                f"same step-1 CE in every memory format, within {format_tol:g}", spread <= format_tol, spread
            )
        )
    samples = alternate(fns, device, s["warmup"], s["repeats"])
    expected_calls = 1 + s["warmup"] + s["repeats"]
    bad = {k: sum(not math.isfinite(v) for v in f.losses) for k, f in fns.items()}
    counts = {k: len(f.losses) for k, f in fns.items()}
    result["checks"].append(
        check(
            f"every step's loss is finite (all {expected_calls} "
            "steps of every variant: first, warm-up, timed)",
            all(n == 0 for n in bad.values()) and all(c == expected_calls for c in counts.values()),
            {k: v for k, v in bad.items() if v} or "all finite",
        )
    )
    result["losses"] = {k: [round(v, 6) for v in f.losses] for k, f in fns.items()}

    used = train_format(device)
    rows: list[dict[str, Any]] = []
    for fmt_name in s["formats"]:
        stats = {v: summary(samples[f"{fmt_name}/{v}"]) for v in VARIANTS}
        base = stats["baseline"]["median"]
        kd_extra = stats["teacher_fitnets"]["median"] - base
        for v in VARIANTS:
            med = stats[v]["median"]
            timed_losses = fns[f"{fmt_name}/{v}"].losses[-s["repeats"] :]
            rows.append(
                {
                    "format": fmt_name + (" (train's)" if fmt_name == used else ""),
                    "variant": v,
                    "median": med,
                    "iqr": stats[v]["iqr"],
                    "ratio": med / base,
                    "paired": statistics.median(
                        a / b
                        for a, b in zip(
                            samples[f"{fmt_name}/{v}"], samples[f"{fmt_name}/baseline"], strict=True
                        )
                    ),
                    "vs_teacher": med / stats["teacher_fitnets"]["median"],
                    "extra_vs_teacher": ((med - base) / kd_extra) if kd_extra > 0 else None,
                    "images_per_s": s["batch_size"] / med,
                    "stats": stats[v],
                    "loss_first_timed": timed_losses[0],
                    "loss_last_timed": timed_losses[-1],
                }
            )
        ratio = stats["tffd"]["median"] / base
        result["targets"].append(
            target(
                f"Tf-FD step / baseline step, {fmt_name}"
                + (" (the format train uses here)" if fmt_name == used else ""),
                ratio,
                "<=",
                TARGET_RATIO,
            )
        )
    result["tables"].append(
        table(
            "Step time (forward + backward + SGD update)",
            [
                column("format", "format", "str"),
                column("variant", "variant", "str"),
                column("median", "median", "ms"),
                column("iqr", "IQR", "ms"),
                column("ratio", "/ baseline", "ratio"),
                column("paired", "paired / baseline", "ratio"),
                column("vs_teacher", "/ teacher_fitnets", "ratio"),
                column("extra_vs_teacher", "extra cost / teacher's extra", "ratio"),
                column("images_per_s", "images/s", "int"),
                column("loss_first_timed", "loss, first timed step", "g"),
                column("loss_last_timed", "loss, last timed step", "g"),
            ],
            rows,
            note=(
                f"{s['arch']} student, batch {s['batch_size']}x3x32x32 (random, in memory, on {device}), "
                f"{s['num_classes']} classes, SGD lr {s['lr']} momentum {s['momentum']} wd "
                f"{s['weight_decay']}; teacher {s['teacher']} (eval, no_grad) computing the trained "
                f"{s['teacher_weights']} (hint mean square {teacher_stats['teacher_hint_mean_square']:.3g}), "
                f"FitNets hint {s['hint_student']} -> {s['hint_teacher']} through ConvReg (1x1 conv, BN, "
                f"ReLU), beta {s['beta']:g} (RepDistiller); median of {s['repeats']} alternating steps after "
                f"1 + {s['warmup']} warm-up steps, every step's loss checked finite. 'extra cost / teacher's "
                "extra' = (step - baseline) / (teacher_fitnets - baseline): the paper's claim is about this "
                "kind of ratio. 'paired / baseline' = median over rounds of (this step / the baseline step "
                "of the same round): less sensitive to the machine's drift than the ratio of medians, which "
                "the target uses."
            ),
        )
    )
    result["first_step"] = first
    result["notes"].append(f"train's memory format on {device.type} in fp32: {used}")
    return result
