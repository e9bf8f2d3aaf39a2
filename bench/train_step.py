"""Training cost of one step: baseline CE vs Tf-FD vs a teacher-based feature-distillation step.

The Tf-FD paper's own claim is that teacher-free distillation costs a fraction of teacher-based KD.
This measures one optimisation step (forward, loss, backward, SGD update) on a CIFAR-shaped batch
already in memory:

* ``baseline``: :func:`tffd_viz.train.train_step` with ``tffd=None`` (plain cross-entropy);
* ``baseline_logged``: ``train_step`` as :func:`tffd_viz.train.train` runs ``method="baseline"`` (the Tf-FD
  terms computed under ``no_grad`` for the log, not trained on);
* ``tffd``: ``train_step`` with the paper's :class:`~tffd_viz.losses.TfFD` (all stages and pairs), warm-up 1;
* ``teacher_fitnets``: a teacher (``resnet110``) forward under ``no_grad`` plus a FitNets-style hint: a 1x1
  conv regressor maps the student's hint stage to the teacher's, ``loss = CE + beta * MSE``
  (RepDistiller's FitNets setting, ``beta = 100``); the regressor is trained with the student.

Every variant starts from the same initial weights and sees the same batch; variants (and memory
formats) are timed alternately, ``repeats`` rounds after warm-up steps, and reported as medians with
IQR and as ratios to the baseline step of the same memory format. ``channels_last`` is what
:func:`tffd_viz.train.train` uses on the CPU (and under autocast); fp32 CUDA training uses contiguous.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench.common import Options, alternate, check, column, run_start, summary, table, target
from tffd_viz.losses import TfFD
from tffd_viz.models import create_model, extract_taps, tap_info
from tffd_viz.train import train_step

NAME = "train_step"
TITLE = "Training step: baseline vs Tf-FD vs teacher-based FitNets"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20", "teacher": "resnet110", "num_classes": 100, "batch_size": 128, "warmup": 5,
    "repeats": 30, "formats": ["channels_last", "contiguous"], "hint_student": "layer2", "hint_teacher": "layer2",
    "beta": 100.0, "lr": 0.1, "momentum": 0.9, "weight_decay": 5e-4, "seed": 0,
}
QUICK: dict[str, Any] = {"arch": "resnet8", "teacher": "resnet14", "batch_size": 16, "warmup": 1, "repeats": 3}

VARIANTS: tuple[str, ...] = ("baseline", "baseline_logged", "tffd", "teacher_fitnets")
FORMATS: dict[str, torch.memory_format] = {"contiguous": torch.contiguous_format,
                                           "channels_last": torch.channels_last}
TARGET_RATIO = 1.05

Step = Callable[[], dict[str, float]]


def train_format(device: torch.device) -> str:
    """The memory format :func:`tffd_viz.train.train` uses in fp32 on ``device``."""
    return "channels_last" if device.type == "cpu" else "contiguous"


def _sgd(params: Any, s: dict[str, Any]) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=s["lr"], momentum=s["momentum"], weight_decay=s["weight_decay"])


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

    def __init__(self, student: nn.Module, teacher: nn.Module, regressor: nn.Module,
                 optimizer: torch.optim.Optimizer, hint_student: str, hint_teacher: str, beta: float) -> None:
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


def build_steps(s: dict[str, Any], device: torch.device, fmt_name: str, x: Tensor, labels: Tensor
                ) -> tuple[dict[str, Step], nn.Module]:
    """Return ``variant -> zero-argument step`` for one memory format, and a copy of the initial student.

    Every variant gets its own copy of one seeded initial student (and its own optimiser).
    """
    fmt = FORMATS[fmt_name]
    torch.manual_seed(s["seed"])
    base = create_model(s["arch"], num_classes=s["num_classes"]).to(device=device, memory_format=fmt)
    base.train()
    torch.manual_seed(s["seed"] + 1)
    teacher = create_model(s["teacher"], num_classes=s["num_classes"]).to(device=device, memory_format=fmt)
    teacher.eval()
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
    regressor = nn.Conv2d(s_ch, t_ch, kernel_size=1).to(device=device, memory_format=fmt)
    fitnets = FitNetsStep(student, teacher, regressor, _sgd([*student.parameters(), *regressor.parameters()], s),
                          s["hint_student"], s["hint_teacher"], s["beta"])
    steps: dict[str, Step] = {
        "baseline": train_step_variant(None, False),
        "baseline_logged": train_step_variant(tffd, False),
        "tffd": train_step_variant(tffd, True),
        "teacher_fitnets": lambda: fitnets(xf, labels),
    }
    return steps, copy.deepcopy(base)


def _first_step_checks(fmt_name: str, first: dict[str, dict[str, float]], initial: nn.Module, x: Tensor,
                       labels: Tensor, beta: float, tol: float) -> list[dict[str, Any]]:
    """Checks on the first (untimed) step of every variant, from the same weights and batch (relative ``tol``)."""
    with torch.no_grad():
        ce_plain = float(F.cross_entropy(initial(x.contiguous(memory_format=FORMATS[fmt_name])), labels))
    ces = {v: first[v]["ce"] for v in VARIANTS}
    spread = max(ces.values()) - min(ces.values())
    tffd = first["tffd"]
    kd = first["teacher_fitnets"]
    return [
        check(f"[{fmt_name}] same CE in every variant at step 1 (same weights, same batch)", spread <= tol, spread),
        check(f"[{fmt_name}] step-1 CE = F.cross_entropy(model(x), y) of the initial weights",
              abs(ces["baseline"] - ce_plain) <= tol * max(1.0, abs(ce_plain)), abs(ces["baseline"] - ce_plain)),
        check(f"[{fmt_name}] baseline loss = CE", first["baseline"]["loss"] == first["baseline"]["ce"]),
        check(f"[{fmt_name}] baseline_logged loss = CE (terms logged, not trained)",
              first["baseline_logged"]["loss"] == first["baseline_logged"]["ce"]),
        check(f"[{fmt_name}] tffd loss = CE + Tf-FD total (warm-up 1)",
              abs(tffd["loss"] - (tffd["ce"] + tffd["tffd_total"])) <= tol * max(1.0, abs(tffd["loss"])),
              tffd["loss"] - (tffd["ce"] + tffd["tffd_total"])),
        check(f"[{fmt_name}] teacher_fitnets loss = CE + beta * hint",
              abs(kd["loss"] - (kd["ce"] + beta * kd["hint"])) <= tol * max(1.0, abs(kd["loss"])),
              kd["loss"] - (kd["ce"] + beta * kd["hint"])),
    ]


def run(opts: Options) -> dict[str, Any]:
    """Measure the steps; return the result payload (see :mod:`bench.common`)."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    unknown = [f for f in s["formats"] if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown memory format(s) {unknown}; choose from {list(FORMATS)}")
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["batch_size"], 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, s["num_classes"], (s["batch_size"],), generator=gen).to(device)

    fns: dict[str, Step] = {}
    first: dict[str, dict[str, dict[str, float]]] = {}
    # float rounding only on the CPU; CUDA convolutions may run in TF32 (10-bit mantissa) and pick other kernels
    tol, format_tol = (1e-5, 1e-4) if device.type == "cpu" else (1e-4, 1e-2)
    for fmt_name in s["formats"]:
        steps, initial = build_steps(s, device, fmt_name, x, labels)
        first[fmt_name] = {v: steps[v]() for v in VARIANTS}  # the checked first step (also a warm-up)
        result["checks"] += _first_step_checks(fmt_name, first[fmt_name], initial, x, labels, s["beta"], tol)
        fns.update({f"{fmt_name}/{v}": steps[v] for v in VARIANTS})
    if len(s["formats"]) > 1:
        ces = [first[f]["baseline"]["ce"] for f in s["formats"]]
        spread = max(ces) - min(ces)
        result["checks"].append(check("same step-1 CE in every memory format (up to float rounding)",
                                      spread <= format_tol * max(1.0, abs(ces[0])), spread))
    samples = alternate(fns, device, s["warmup"], s["repeats"])

    used = train_format(device)
    rows: list[dict[str, Any]] = []
    for fmt_name in s["formats"]:
        stats = {v: summary(samples[f"{fmt_name}/{v}"]) for v in VARIANTS}
        base = stats["baseline"]["median"]
        kd_extra = stats["teacher_fitnets"]["median"] - base
        for v in VARIANTS:
            med = stats[v]["median"]
            rows.append({
                "format": fmt_name + (" (train's)" if fmt_name == used else ""), "variant": v,
                "median": med, "iqr": stats[v]["iqr"], "ratio": med / base,
                "paired": statistics.median(a / b for a, b in zip(samples[f"{fmt_name}/{v}"],
                                                                  samples[f"{fmt_name}/baseline"], strict=True)),
                "vs_teacher": med / stats["teacher_fitnets"]["median"],
                "extra_vs_teacher": ((med - base) / kd_extra) if kd_extra > 0 else None,
                "images_per_s": s["batch_size"] / med, "stats": stats[v],
            })
        ratio = stats["tffd"]["median"] / base
        result["targets"].append(target(
            f"Tf-FD step / baseline step, {fmt_name}" + (" (the format train uses here)" if fmt_name == used else ""),
            ratio, "<=", TARGET_RATIO))
    result["tables"].append(table("Step time (forward + backward + SGD update)", [
        column("format", "format", "str"), column("variant", "variant", "str"), column("median", "median", "ms"),
        column("iqr", "IQR", "ms"), column("ratio", "/ baseline", "ratio"),
        column("paired", "paired / baseline", "ratio"),
        column("vs_teacher", "/ teacher_fitnets", "ratio"),
        column("extra_vs_teacher", "extra cost / teacher's extra", "ratio"),
        column("images_per_s", "images/s", "int"),
    ], rows, note=(f"{s['arch']} student, batch {s['batch_size']}x3x32x32 (random, in memory, on {device}), "
                   f"{s['num_classes']} classes, SGD lr {s['lr']} momentum {s['momentum']} wd {s['weight_decay']}; "
                   f"teacher {s['teacher']} (eval, no_grad), hint {s['hint_student']} -> {s['hint_teacher']} "
                   f"through a 1x1 conv, beta {s['beta']:g}; median of {s['repeats']} alternating steps after "
                   f"1 + {s['warmup']} warm-up steps. 'extra cost / teacher's extra' = (step - baseline) / "
                   "(teacher_fitnets - baseline): the paper's claim is about this kind of ratio. 'paired / baseline' = "
                   "median over rounds of (this step / the baseline step of the same round): less sensitive to "
                   "the machine's drift than the ratio of medians, which the target uses.")))
    result["first_step"] = first
    result["notes"].append(f"train's memory format on {device.type} in fp32: {used}")
    return result
