"""The held-out comparison of the arms, the answer in words and numbers, and the train command.

Part of :mod:`tffd_viz.whatif`.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from tffd_viz.whatif.config import ARMS

#: Families of the comparison: (result key, label, scale).
_FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("intra", "intra", "raw"),
    ("inter", "inter", "raw"),
    ("intra_rel", "intra", "relative"),
    ("inter_rel", "inter", "relative"),
)


def _mean(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept and len(kept) == len(values) else None


def _change(control: float | None, other: float | None, relative: bool) -> float | None:
    if control is None or other is None:
        return None
    if not relative:
        return other - control
    return 100.0 * (other - control) / abs(control) if control != 0 else None


def compare_arms(start: Mapping[str, Any], end: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per held-out quantity: its value per arm, the Tf-FD arm's change and the noise floor.

    Parameters
    ----------
    start : dict
        :func:`tffd_viz.heldout.heldout_terms` of the starting model.
    end : dict
        Arm (:data:`ARMS`) -> :func:`tffd_viz.heldout.heldout_terms` after the fine-tune.

    Returns
    -------
    list of dict
        Rows for ``accuracy``, every intra term (``intra <tap>``), their mean over stages (``intra mean``),
        every inter term and their mean, then the same for the relative terms (``scale = "relative"``). Keys:
        ``quantity``, ``family`` (``accuracy``/``intra``/``inter``), ``term`` (tap, pair or ``mean``),
        ``scale``, ``start``, ``control``, ``tffd``, ``control2``, ``control_std`` and ``tffd_std``
        (batch-to-batch spread; None for means and accuracy), ``change`` (``tffd - control``: percentage
        points for accuracy, else percent of ``control``), ``noise`` (``|control2 - control|`` in the same
        unit) and ``beyond_noise`` (``|change| > noise``).
    """
    rows: list[dict[str, Any]] = []

    def add(
        family: str,
        term: str,
        scale: str,
        values: dict[str, float | None],
        stds: dict[str, float | None],
        relative: bool,
    ) -> None:
        change = _change(values["control"], values["tffd"], relative)
        noise = _change(values["control"], values["control2"], relative)
        noise = None if noise is None else abs(noise)
        quantity = (
            "accuracy"
            if family == "accuracy"
            else f"{family} {term}" + (" (relative)" if scale == "relative" else "")
        )
        rows.append(
            {
                "quantity": quantity,
                "family": family,
                "term": term,
                "scale": scale,
                **values,
                "control_std": stds.get("control"),
                "tffd_std": stds.get("tffd"),
                "change": change,
                "noise": noise,
                "beyond_noise": None if change is None or noise is None else abs(change) > noise,
            }
        )

    acc = {"start": start["accuracy"], **{a: end[a]["accuracy"] for a in ARMS}}
    add("accuracy", "top-1 %", "raw", acc, {}, relative=False)
    for key, family, scale in _FAMILIES:
        terms = list(start[key])
        for term in terms:
            values = {"start": start[key][term], **{a: end[a][key][term] for a in ARMS}}
            add(
                family,
                term,
                scale,
                values,
                {a: end[a][f"{key}_std"][term] for a in ("control", "tffd")},
                True,
            )
        if len(terms) > 1:
            means = {
                "start": _mean([start[key][t] for t in terms]),
                **{a: _mean([end[a][key][t] for t in terms]) for a in ARMS},
            }
            add(family, "mean", scale, means, {}, True)
    return rows


def _fmt(v: float | None, digits: int = 3) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.{digits}g}"


def _signed(v: float | None, unit: str) -> str:
    return "n/a" if v is None else f"{v:+.{1 if abs(v) < 10 else 0}f}{unit}".replace("-", "−")


def _pm(std: float | None) -> str:
    return "" if std is None or not math.isfinite(std) else f" ± {std:.2g}"


def _verdict(row: Mapping[str, Any]) -> str:
    if row["beyond_noise"] is None:
        return ""
    return " (beyond the noise floor)" if row["beyond_noise"] else " (within the noise floor)"


def whatif_answer(result: Mapping[str, Any]) -> str:
    """The answer of a what-if in words and numbers, one line per quantity, then the train command.

    Lines: the setting; every term in the loss with a lambda > 0 (and the mean of its family), raw held-out
    value of ``control`` and the Tf-FD arm with the change in percent and the noise floor, then the same
    relative to the energy of the compared maps; held-out accuracy in points; the ``tffd-viz train`` command
    line.

    Parameters
    ----------
    result : dict
        :meth:`WhatIf.result`.

    Returns
    -------
    str
    """
    s, rows = result["settings"], result["comparison"]
    by = {(r["family"], r["term"], r["scale"]): r for r in rows}
    lines = [
        f"After {result['step']} steps per arm (lr {s['lr']:g}, batch {s['batch_size']}, momentum "
        f"{s['momentum']:g}, weight decay {s['weight_decay']:g}), λ_intra {s['lambda_intra']:g} on "
        f"{', '.join(s['stages']) or 'no stage'}, λ_inter {s['lambda_inter']:g} on "
        f"{', '.join(s['pairs']) or 'no pair'}; held-out: {result['start']['n']} test images, eval mode, ± = "
        f"standard deviation over its {result['start']['batches']} batches."
    ]
    shown: list[tuple[str, str]] = []
    for family, terms in (("intra", s["stages"]), ("inter", s["pairs"])):
        if s[f"lambda_{family}"] > 0 and terms:
            shown += [(family, t) for t in terms]
            if (family, "mean", "raw") in by:
                shown.append((family, "mean"))
    if not shown:
        shown = [(f, "mean") for f in ("intra", "inter") if (f, "mean", "raw") in by]
    for family, term in shown:
        raw, rel = by[(family, term, "raw")], by.get((family, term, "relative"))
        name = (
            f"{term} {family} term"
            if term != "mean"
            else f"{family} terms, mean over {(family == 'intra' and 'stages') or 'pairs'}"
        )
        line = (
            f"{name} (held-out): control {_fmt(raw['control'])}{_pm(raw['control_std'])}, Tf-FD arm "
            f"{_fmt(raw['tffd'])}{_pm(raw['tffd_std'])} "
            f"({_signed(raw['change'], ' %')}), noise floor ±{_fmt(raw['noise'], 2)} %{_verdict(raw)}"
        )
        if rel is not None:
            line += (
                f"; relative to the maps' mean square: {_fmt(rel['control'])} vs {_fmt(rel['tffd'])} "
                f"({_signed(rel['change'], ' %')}, noise ±{_fmt(rel['noise'], 2)} %){_verdict(rel)}"
            )
        lines.append(line)
    acc = by[("accuracy", "top-1 %", "raw")]
    lines.append(
        f"accuracy (held-out): control {_fmt(acc['control'], 4)} %, Tf-FD arm {_fmt(acc['tffd'], 4)} % "
        f"({_signed(acc['change'], ' pt')}), noise floor ±{_fmt(acc['noise'], 2)} pt{_verdict(acc)}; "
        f"start {_fmt(acc['start'], 4)} %"
    )
    lines.append(f"Train with these settings for real: {result['command']}")
    return "\n".join(lines)


def train_command(settings: Mapping[str, Any], out: str | None = None, data_root: str | None = None) -> str:
    """The ``tffd-viz train`` command line that trains from scratch with the what-if's lambdas and layers.

    Parameters
    ----------
    settings : dict
        :func:`whatif_settings` (its ``train_config``; else its recipe, arch, dataset, lambdas, stages,
        pairs).
    out : str, optional
        ``--out`` (default ``runs/<dataset>_<arch>_<method>_li<λ>_le<λ>_s<seed>.safetensors``).
    data_root : str, optional
        ``--data-root``.

    Returns
    -------
    str
        A shell-quoted command line.
    """
    cfg = settings.get("train_config")
    stages = settings["stages"] if cfg is None else cfg.stages
    pairs = [tuple(p.split("->")) for p in settings["pairs"]] if cfg is None else cfg.pairs
    li, le = settings["lambda_intra"], settings["lambda_inter"]
    method = "tffd" if li > 0 or le > 0 else "baseline"
    seed = 0 if cfg is None else cfg.seed
    words = [
        "tffd-viz",
        "train",
        "--recipe",
        settings["recipe"],
        "--arch",
        str(settings["arch"]),
        "--dataset",
        settings["dataset"],
        "--method",
        method,
        "--lambda-intra",
        f"{li:g}",
        "--lambda-inter",
        f"{le:g}",
    ]
    if stages is not None:
        words += ["--stages", ",".join(map(str, stages)) or "none"]
    if pairs is not None:
        words += ["--pairs", ",".join(f"{a}-{b}" for a, b in pairs) or "none"]
    if data_root:
        words += ["--data-root", str(data_root)]
    words += [
        "--seed",
        str(seed),
        "--out",
        out
        or f"runs/{settings['dataset']}_{settings['arch']}_{method}_li{li:g}_le{le:g}_s{seed}.safetensors",
    ]
    return shlex.join(words)
