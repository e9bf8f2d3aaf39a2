"""Learning-rate schedules: ``(config, steps_per_epoch) -> (step -> factor of the peak lr)``.

Each schedule is stepped once per optimiser step (``torch.optim.lr_scheduler.LambdaLR``); ``factor(0)`` is the
first step's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tffd_viz.training.config import TrainConfig

__all__ = ["SCHEDULES"]


def _multistep(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        epoch = step // steps_per_epoch  # 0-based epoch of this step
        return float(cfg.gamma ** sum(1 for m in cfg.milestones if epoch >= m))

    return factor


def _onecycle(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    start, end = 1.0 / 25.0, 1.0 / 1e4

    def factor(step: int) -> float:
        t = min(step, total) / total
        if t < cfg.pct_start:
            return start + (1 - start) * (1 - math.cos(math.pi * t / cfg.pct_start)) / 2
        return end + (1 - end) * (1 + math.cos(math.pi * (t - cfg.pct_start) / (1 - cfg.pct_start))) / 2

    return factor


def _cosine(cfg: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = round(cfg.lr_warmup * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(step - warm, total - warm) / max(1, total - warm)
        return (1 + math.cos(math.pi * t)) / 2

    return factor


#: Schedule name -> ``(config, steps_per_epoch) -> (step -> lr factor)``: ``multistep`` multiplies by
#: ``gamma`` after each milestone epoch; ``onecycle`` ramps (cosine) from ``1/25`` to 1 over the first
#: ``pct_start`` of the steps and anneals (cosine) to ``1e-4``; ``cosine`` warms up linearly for ``lr_warmup``
#: epochs, then a cosine to 0.
SCHEDULES: dict[str, Callable[[TrainConfig, int], Callable[[int], float]]] = {
    "multistep": _multistep,
    "onecycle": _onecycle,
    "cosine": _cosine,
}
