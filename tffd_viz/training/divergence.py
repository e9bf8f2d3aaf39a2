"""A run that goes non-finite: which quantity went first, and the error that names it with the usual remedy.

Every step's loss and terms (Python floats, no device sync) and, after each epoch, the weights are checked;
a run that diverges stops with :class:`~tffd_viz.errors.TrainingDiverged` before anything is written from the
non-finite weights (the last good resume state is kept).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from tffd_viz.errors import TrainingDiverged
from tffd_viz.training.config import TrainConfig

__all__ = ["diverged", "nonfinite_terms", "nonfinite_weights"]

#: Order in which :func:`nonfinite_terms` names the quantities of one step (prefixes; tap names keep their
#: order).
_TERM_ORDER: tuple[str, ...] = ("ce", "intra/", "inter/", "kd", "tffd_total", "loss")


def _lr_or_lambdas(c: TrainConfig) -> str:
    return f"lower lr (now {c.lr:g})" + (
        ""
        if c.method == "baseline"
        else f" or the lambdas (intra {c.lambda_intra:g}, inter {c.lambda_inter:g})"
    )


#: First non-finite quantity (prefix) -> the usual remedy, in words, with the run's current values.
_DIVERGENCE_REMEDIES: dict[str, Callable[[TrainConfig], str]] = {
    "ce": lambda c: f"lower lr (now {c.lr:g})",
    "intra/": lambda c: f"lower lambda_intra (now {c.lambda_intra:g}) or lr (now {c.lr:g})",
    "inter/": lambda c: f"lower lambda_inter (now {c.lambda_inter:g}) or lr (now {c.lr:g})",
    "kd": lambda c: f"lower lambda_kd (now {c.lambda_kd:g}) or lr (now {c.lr:g})",
    "tffd_total": lambda c: (
        f"lower lambda_intra / lambda_inter (now {c.lambda_intra:g} / {c.lambda_inter:g}) "
        f"or lr (now {c.lr:g})"
    ),
    "loss": _lr_or_lambdas,
    "weights": _lr_or_lambdas,
}


def nonfinite_terms(stats: dict[str, float], trained_on_tffd: bool) -> list[str]:
    """Names of the non-finite quantities of one :func:`~tffd_viz.training.step.train_step` (Python floats).

    Checked: ``loss``, ``ce``, ``kd`` and, when the Tf-FD terms are trained on, ``tffd_total``, ``intra/*``
    and ``inter/*`` (a baseline's detached terms are only logged). Ordered as :data:`_TERM_ORDER`.
    """
    checked = [
        k
        for k in stats
        if k in ("loss", "ce", "kd")
        or (trained_on_tffd and (k == "tffd_total" or k.startswith(("intra/", "inter/"))))
    ]
    bad = [k for k in checked if not math.isfinite(stats[k])]
    return sorted(bad, key=lambda k: next(i for i, p in enumerate(_TERM_ORDER) if k == p or k.startswith(p)))


def nonfinite_weights(model: nn.Module) -> list[str]:
    """Names of the floating parameters / buffers of ``model`` holding a NaN or inf (one device sync)."""
    tensors = [(k, t) for k, t in model.state_dict().items() if t.is_floating_point()]
    if not tensors or bool(torch.stack([torch.isfinite(t).all() for _, t in tensors]).all()):
        return []
    return [k for k, t in tensors if not bool(torch.isfinite(t).all())]


def diverged(
    cfg: TrainConfig,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    bad: list[str],
    stats: dict[str, float],
    previous: dict[str, float] | None,
    good: tuple[Path, int] | None,
    weights: Sequence[str] = (),
) -> TrainingDiverged:
    """The :class:`TrainingDiverged` of a run whose ``bad`` quantities went non-finite at ``epoch``/``step``.

    ``bad`` lists step quantities (:func:`nonfinite_terms`) or is ``["weights"]``, with the names of the
    non-finite tensors in ``weights``; ``previous`` is the last finite step's stats (shown for context);
    ``good`` is ``(path, epoch)`` of the last resume state this run wrote or resumed from.
    """
    term = bad[0]
    cause = term
    if (
        previous is not None
        and not term.startswith(("intra/", "inter/", "kd"))
        and previous["loss"] - previous["ce"] > abs(previous["ce"])
    ):
        cause = "tffd_total"  # the step before was dominated by the (weighted) Tf-FD / KD part of the loss
    remedy = next(f for p, f in _DIVERGENCE_REMEDIES.items() if cause == p or cause.startswith(p))(cfg)
    if term == "weights":
        names = ", ".join(list(weights)[:3]) + (f" and {len(weights) - 3} more" if len(weights) > 3 else "")
        what = f"non-finite weights after the epoch's last step ({names})"
    else:
        what = f"{term} = {stats[term]} (non-finite: {', '.join(bad)})"
    before = ""
    if previous is not None:
        terms = {k: v for k, v in previous.items() if k.startswith(("intra/", "inter/")) and math.isfinite(v)}
        largest = max(terms, key=lambda k: abs(terms[k]), default=None)
        before = (
            "; the last finite step"
            + ("" if term == "weights" else " (the one before)")
            + f" had loss={previous['loss']:.4g}, ce={previous['ce']:.4g}"
            + ("" if largest is None else f", largest Tf-FD term {largest}={terms[largest]:.4g}")
            + (f", kd={previous['kd']:.4g}" if "kd" in previous else "")
        )
    kept = (
        f"; the last good resume state {str(good[0])!r} (after epoch {good[1]}) is kept"
        if good is not None
        else "; this run had written no resume state yet"
    )
    return TrainingDiverged(
        f"training diverged at epoch {epoch} step {step}/{steps_per_epoch}: {what}{before}. Nothing was "
        f"saved from the non-finite weights{kept}. Usual remedy: {remedy}.",
        epoch=epoch,
        step=step,
        term=term,
    )
