"""Noise references and the verdict rule: the size a difference must exceed, and what is written beyond it.

Part of :mod:`tffd_viz.verdicts` (its docstring describes the references).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA

NOISE_SIGMAS: float = 2.0
"""A difference is written up only when it exceeds this many standard deviations of the noise."""


@dataclass(frozen=True)
class Noise:
    """The size a difference must exceed to be written up, where it comes from, and how it was formed.

    Attributes
    ----------
    size : float or None
        ``NOISE_SIGMAS`` standard deviations of the difference; None where no reference exists.
    source : str
        ``"seeds"``, ``"batches"``, ``"test-split sampling"`` or ``"none"``.
    detail : str
        One line on how ``size`` was formed (for tables and hovers).
    """

    size: float | None
    source: str
    detail: str


NO_NOISE = Noise(None, "none", "no seeds and no batch spread to compare with")


def _var(values: Sequence[float]) -> float | None:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return statistics.variance(finite) if len(finite) >= 2 else None


def _both_sides(a: float | None, b: float | None) -> tuple[float, float] | None:
    """Return ``(a, b)`` with a missing side taking the other's value; None when both are missing."""
    if a is None:
        return None if b is None else (b, b)
    return (a, a) if b is None else (a, b)


def seed_noise(values_a: Sequence[float], values_b: Sequence[float], of_means: bool = False) -> Noise:
    """Noise of a difference between one run of A's and one run of B's configuration, from the seeds.

    ``size = NOISE_SIGMAS * sqrt(var_A + var_B)``, each variance over the seeds of one configuration (ddof 1);
    a configuration with fewer than two seeds takes the other's variance. With ``of_means`` the difference is
    one of the means over the seeds: ``NOISE_SIGMAS * sqrt(var_A / n_A + var_B / n_B)``
    (source ``"seed-mean"``).

    Parameters
    ----------
    values_a, values_b : sequence of float
        The quantity measured on every shipped seed of A's and of B's configuration.
    of_means : bool

    Returns
    -------
    Noise
        ``NO_NOISE`` when neither configuration has two seeds.
    """
    variances = _both_sides(_var(values_a), _var(values_b))
    if variances is None:
        return NO_NOISE
    va, vb = variances
    if of_means:
        na, nb = max(1, len(values_a)), max(1, len(values_b))
        return Noise(
            NOISE_SIGMAS * math.sqrt(va / na + vb / nb),
            "seed-mean",
            f"{NOISE_SIGMAS:g}·√(var_A/{na} + var_B/{nb}) over the seeds",
        )
    size = NOISE_SIGMAS * math.sqrt(va + vb)
    return Noise(
        size, "seeds", f"{NOISE_SIGMAS:g}·√(var_A + var_B) over {len(values_a)} + {len(values_b)} seeds"
    )


def batch_noise(std_a: float | None, std_b: float | None, batches: int | None = None) -> Noise:
    """Noise of a difference from the batch-to-batch standard deviations of the two models.

    ``size = NOISE_SIGMAS * sqrt(std_a ** 2 + std_b ** 2)``; a missing side takes the other's.
    """
    sa = None if std_a is None or not math.isfinite(std_a) else float(std_a)
    sb = None if std_b is None or not math.isfinite(std_b) else float(std_b)
    stds = _both_sides(sa, sb)
    if stds is None:
        return NO_NOISE
    over = f" over {batches} batches" if batches else ""
    return Noise(
        NOISE_SIGMAS * math.hypot(*stds), "batches", f"{NOISE_SIGMAS:g}·√(s_A² + s_B²), s the std{over}"
    )


def sampling_noise(acc_a: float, acc_b: float, n: int) -> Noise:
    """Noise of an accuracy difference (percent) from sampling ``n`` test images: binomial, per model."""
    if n < 1:
        raise TffdVizError(f"sampling_noise needs n >= 1 test images, got {n}")
    sa, sb = (100.0 * math.sqrt(p / 100 * (1 - p / 100) / n) for p in (acc_a, acc_b))
    return Noise(
        NOISE_SIGMAS * math.hypot(sa, sb),
        "test-split sampling",
        f"{NOISE_SIGMAS:g}·√(s_A² + s_B²), s = 100·√(p(1−p)/{n})",
    )


def _pct(a: float, b: float) -> str:
    return f"{100 * abs(b - a) / abs(a):.0f} %" if a else f"{abs(b - a):.3g}"


def difference_verdict(a: float | None, b: float | None, noise: Noise) -> str:
    """The verdict on ``b - a``: a conclusion beyond ``noise.size``, else "within <source> noise".

    Returns
    -------
    str
        ``"no difference"`` for equal values, ``"no noise reference"`` without a reference,
        ``"within seeds noise (...)"`` at or under it, else ``"B higher by 12 % (3.1× the seeds noise)"``.
    """
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return "not measured on both"
    d = b - a
    if d == 0:
        return "no difference"
    if noise.size is None:
        return "no noise reference"
    if abs(d) <= noise.size:
        return f"within {noise.source} noise (|Δ| {abs(d):.3g} ≤ {noise.size:.3g})"
    times = f"{abs(d) / noise.size:.1f}×" if noise.size > 0 else "any"
    return f"B {'higher' if d > 0 else 'lower'} by {_pct(a, b)} ({times} the {noise.source} noise)"


def _beyond(a: float | None, b: float | None, noise: Noise) -> bool:
    return (
        a is not None
        and b is not None
        and noise.size is not None
        and math.isfinite(a)
        and math.isfinite(b)
        and abs(b - a) > noise.size
    )


def term_verdict(
    raw: tuple[float, float, Noise], rel: tuple[float, float, Noise], energy_ratio: float | None
) -> str:
    """The verdict on a raw Tf-FD term that says whether its change is a change of scale.

    Parameters
    ----------
    raw : (a, b, Noise)
        The raw term of A and B and its noise.
    rel : (a, b, Noise)
        The term divided by the energy of the maps it compares, and its noise.
    energy_ratio : float or None
        Energy of B's compared maps over A's (``raw / rel`` of B over that of A).

    Returns
    -------
    str
        Beyond noise with the relative term within noise: "... a drop of activation energy (×0.1), not closer
        mimicry"; both beyond in the same direction: "... the compared maps also grew more alike relative to
        their size"; raw within noise: the :func:`difference_verdict` (plus the relative term's change when
        that one is beyond noise).
    """
    (ra, rb, rn), (la, lb, ln) = raw, rel
    energy = (
        f" (energy B/A ×{energy_ratio:.2g})"
        if energy_ratio is not None and math.isfinite(energy_ratio)
        else ""
    )
    if not _beyond(ra, rb, rn):
        text = difference_verdict(ra, rb, rn)
        if _beyond(la, lb, ln):
            text += f"; scale-free term {'higher' if lb > la else 'lower'} beyond noise ({la:.3g} → {lb:.3g})"
        return text
    head = difference_verdict(ra, rb, rn)
    word = "drop" if rb < ra else "rise"
    if not _beyond(la, lb, ln):
        return (
            f"{head}, but the term / energy is unchanged within {ln.source} noise ({la:.3g} → {lb:.3g}): "
            f"a {word} of activation energy{energy}, not {'closer' if rb < ra else 'looser'} mimicry"
        )
    if (lb < la) == (rb < ra):
        closer = "more" if lb < la else "less"
        return (
            f"{head}, and the term / energy too ({la:.3g} → {lb:.3g}): the compared maps became {closer} "
            f"alike relative to their size{energy}"
        )
    return (
        f"{head}, but the term / energy moved the other way ({la:.3g} → {lb:.3g}): a change of scale{energy} "
        "that hides the opposite change of likeness"
    )


def lambda_text(card: Mapping[str, Any]) -> str:
    """A model's lambdas with their ratio to the paper's, e.g. ``"λ_intra 0.1 (125× the paper's 0.0008),
    λ_inter 0.1 (200× the paper's 0.0005)"``; ``"no Tf-FD term (baseline)"`` for a model not trained on
    them."""
    if card.get("method") == "baseline":
        return "no Tf-FD term (baseline)"
    parts = []
    for key, name, paper in (
        ("lambda_intra", "λ_intra", PAPER_LAMBDA_INTRA),
        ("lambda_inter", "λ_inter", PAPER_LAMBDA_INTER),
    ):
        v = card.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            parts.append(f"{name} {v:g} ({v / paper:.3g}× the paper's {paper:g})")
        else:
            parts.append(f"{name} unknown")
    return ", ".join(parts)
