"""Lambda / layer sweeps: short trainings over a grid, and the one reader and writer of their results tables.

``tffd-viz sweep`` (:func:`run_sweep`) trains every combination of lambdas, layer presets
(:data:`LAYER_PRESETS`) and seeds and writes one table, ``<prefix>.json`` and ``<prefix>.csv`` (same rows),
after every run; a rerun skips the rows whose settings (:data:`SWEEP_KEYS`) are already in the table. The app
reads a table back with :func:`sweep_table` and picks its numeric result columns with
:func:`sweep_value_columns`.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import numbers
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tffd_viz.errors import TffdVizError, TrainingDiverged
from tffd_viz.models import create_model, default_taps
from tffd_viz.training.config import TrainConfig, resolved_stages

__all__ = [
    "LAYER_PRESETS",
    "SWEEP_KEYS",
    "SWEEP_RESULT_COLUMNS",
    "run_sweep",
    "sweep_prefix",
    "sweep_table",
    "sweep_value_columns",
]

#: Intra stages and inter pairs of a preset, as indices into the stage taps; None = all.
_Selection = tuple[list[int] | None, list[tuple[int, int]] | None]


def _preset_all(n: int) -> _Selection:
    return None, None


def _preset_intra_only(n: int) -> _Selection:
    return None, []


def _preset_inter_only(n: int) -> _Selection:
    return [], None


def _preset_last2(n: int) -> _Selection:
    return [n - 2, n - 1], [(n - 2, n - 1)]


def _preset_adjacent(n: int) -> _Selection:
    return None, [(i, i + 1) for i in range(n - 1)]


#: Layer preset -> (number of stage taps) -> (intra stages, inter pairs) as indices; None = all.
LAYER_PRESETS: dict[str, Callable[[int], _Selection]] = {
    "all": _preset_all,
    "intra-only": _preset_intra_only,
    "inter-only": _preset_inter_only,
    "last2": _preset_last2,
    "adjacent": _preset_adjacent,
}

#: Settings that identify a sweep row (with the seed); a rerun skips rows whose settings are in the table.
SWEEP_KEYS: tuple[str, ...] = (
    "recipe",
    "arch",
    "dataset",
    "epochs",
    "batch_size",
    "lr",
    "schedule",
    "warmup",
    "limit_train",
    "method",
    "layers",
    "lambda_intra",
    "lambda_inter",
    "seed",
)

SWEEP_RESULT_COLUMNS: tuple[str, ...] = ("final_acc", "best_acc", "train_acc", "ce", "tffd_total")
"""Result columns of a sweep table (besides ``intra_<tap>`` and ``inter_<a>-><b>``), in display order."""


# --------------------------------------------------------------------------------------------------
# the table files
# --------------------------------------------------------------------------------------------------


def sweep_prefix(out_prefix: str | os.PathLike[str]) -> Path:
    """Return the table prefix (``x.csv``/``x.json`` -> ``x``)."""
    path = Path(out_prefix)
    return path.with_suffix("") if path.suffix in (".csv", ".json") else path


def _table_file(prefix: Path, kind: str) -> Path:
    return prefix.with_name(f"{prefix.name}.{kind}")


def _csv_cell(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of one table file (JSON as written; CSV cells parsed as int / float / None where they are)."""
    try:
        if path.suffix == ".json":
            rows = json.loads(path.read_text())
        else:
            with path.open(newline="") as fh:
                rows = [{k: _csv_cell(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    except (OSError, ValueError) as exc:
        raise TffdVizError(f"cannot read the sweep table {str(path)!r}: {exc}") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise TffdVizError(f"the sweep table {str(path)!r} is not a list of row objects")
    return rows


def _write_table(rows: list[dict[str, Any]], prefix: Path) -> None:
    """Write ``rows`` to ``<prefix>.json`` and ``<prefix>.csv`` (every column seen, empty cells for None)."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    tmp = prefix.with_name(prefix.name + ".json.tmp")
    tmp.write_text(json.dumps(rows, indent=1) + "\n")
    tmp.replace(_table_file(prefix, "json"))
    tmp = prefix.with_name(prefix.name + ".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    tmp.replace(_table_file(prefix, "csv"))


def sweep_table(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read the results table of a lambda sweep (``tffd-viz sweep``, :func:`run_sweep`).

    Parameters
    ----------
    path : str or path
        ``<prefix>.json``, ``<prefix>.csv`` or the bare ``<prefix>``; for a prefix the JSON file is read
        when it exists, else the CSV file. CSV cells are converted to int or float where they parse as
        one, empty cells to ``None``.

    Returns
    -------
    list of dict
        One row per training run, e.g. ``{"lambda_intra": 8e-4, "lambda_inter": 5e-4, "layers": "all",
        "seed": 0, "final_acc": 98.6, "ce": 0.02, "intra_layer1": 0.9, "inter_layer1->layer2": 0.8, ...}``.

    Raises
    ------
    TffdVizError
        No such file, or a file that is not a list of row objects.
    """
    given = Path(path).expanduser()
    if given.suffix in (".json", ".csv"):
        candidates = [given]
    else:
        candidates = [_table_file(given, "json"), _table_file(given, "csv")]
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise TffdVizError(
            f"no sweep table at {' or '.join(repr(str(p)) for p in candidates)}; "
            "create one with `tffd-viz sweep`"
        )
    return _read_rows(found)


def sweep_value_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return the result columns of a sweep table that hold numbers, for heatmaps.

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`sweep_table`.

    Returns
    -------
    list of str
        :data:`SWEEP_RESULT_COLUMNS` present, then every ``intra_<tap>``, then every ``inter_<a>-><b>``
        column (first-seen order); only columns with at least one numeric value.
    """

    def numeric(key: str) -> bool:
        return any(isinstance(r.get(key), numbers.Real) and not isinstance(r.get(key), bool) for r in rows)

    seen: list[str] = []
    for row in rows:
        seen += [k for k in row if k not in seen]
    fixed = [k for k in SWEEP_RESULT_COLUMNS if k in seen]
    intra = [k for k in seen if k.startswith("intra_")]
    inter = [k for k in seen if k.startswith("inter_")]
    return [k for k in fixed + intra + inter if numeric(k)]


# --------------------------------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------------------------------


def _row_key(row: Mapping[str, Any]) -> tuple[str | None, ...]:
    return tuple(None if row.get(k) in ("", None) else str(row.get(k)) for k in SWEEP_KEYS)


def _settings_first(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with the :data:`SWEEP_KEYS` first, in that order."""
    return {k: row[k] for k in SWEEP_KEYS} | {k: v for k, v in row.items() if k not in SWEEP_KEYS}


def _settings(cfg: TrainConfig, layers: str) -> dict[str, Any]:
    """The :data:`SWEEP_KEYS` of one run."""
    return {k: getattr(cfg, k) for k in SWEEP_KEYS if k != "layers"} | {"layers": layers}


def _result_row(cfg: TrainConfig, layers: str, card: dict[str, Any]) -> dict[str, Any]:
    """The table row of a finished run: settings, accuracies, last-epoch terms, held-out terms, seconds."""
    last = card["history"][-1]
    row = _settings(cfg, layers)
    row.update(
        {
            "final_acc": card["final_acc"],
            "best_acc": card["best_acc"],
            "train_acc": last["train_acc"],
            "ce": last["ce"],
            "tffd_total": last["tffd_total"],
        }
    )
    row.update({f"intra_{k}": v for k, v in last["intra"].items()})
    row.update({f"inter_{k}": v for k, v in last["inter"].items()})
    held = card.get("heldout_terms") or {}
    if held:  # eval mode on the test split: raw, scale-free and the energy per stage
        row["heldout_acc"] = held["accuracy"]
        for family in ("intra", "intra_rel", "energy", "inter", "inter_rel"):
            row.update({f"heldout_{family}_{k}": v for k, v in held[family].items()})
    row["train_seconds"] = card["train_seconds"]
    row["diverged"], row["diverged_at"] = False, None
    return _settings_first(row)


def _sweep_plan(base_config: TrainConfig, grid: Mapping[str, Sequence[Any]]) -> list[tuple[TrainConfig, str]]:
    """Every row's ``(config, layer preset)`` of a sweep, each checked (:meth:`TrainConfig.check`, stages and
    pairs against the architecture's taps); raise :class:`TffdVizError` naming the first bad row and
    option."""
    axes: dict[str, list[Any]] = {
        "seeds": list(grid.get("seeds", [base_config.seed])),
        "layers": list(grid.get("layers", ["all"])),
        "lambda_intra": list(grid.get("lambda_intra", [base_config.lambda_intra])),
        "lambda_inter": list(grid.get("lambda_inter", [base_config.lambda_inter])),
    }
    unexpected = sorted(set(grid) - set(axes))
    if unexpected:
        raise TffdVizError(f"unknown sweep grid key(s) {unexpected}; valid: {list(axes)}")
    empty = [k for k, v in axes.items() if not v]
    if empty:
        raise TffdVizError(f"sweep grid {empty} is empty; give at least one value")
    unknown = [name for name in axes["layers"] if name not in LAYER_PRESETS]
    if unknown:
        raise TffdVizError(f"unknown layer preset(s) {unknown}; choose from {list(LAYER_PRESETS)}")
    base_config.check()
    taps = list(default_taps(create_model(base_config.arch, num_classes=2, in_chans=1)))
    combos = list(
        itertools.product(axes["seeds"], axes["layers"], axes["lambda_intra"], axes["lambda_inter"])
    )
    plan = []
    for i, (seed, layer, li, le) in enumerate(combos):
        where = (
            f"sweep row {i + 1} of {len(combos)} (seed={seed!r}, layers={layer}, lambda_intra={li!r}, "
            f"lambda_inter={le!r})"
        )
        try:
            stages, pairs = LAYER_PRESETS[layer](len(taps))
            whole = (
                not isinstance(seed, bool) and float(seed).is_integer()
            )  # "3", 3.0 -> 3; 1.5, True: refused
            values: dict[str, Any] = {
                "seed": int(float(seed)) if whole else seed,
                "lambda_intra": float(li),
                "lambda_inter": float(le),
            }
        except (TypeError, ValueError, OverflowError):
            raise TffdVizError(f"{where}: seeds must be whole numbers and lambdas numbers") from None
        method = "baseline" if values["lambda_intra"] == 0.0 and values["lambda_inter"] == 0.0 else "tffd"
        values.update(stages=stages, pairs=pairs, method=method, out=None, resume=None, stop_after=None)
        cfg = dataclasses.replace(base_config, **values)
        try:
            cfg.check()
            resolved_stages(cfg, taps)
        except TffdVizError as exc:
            raise TffdVizError(f"{where}: {exc}") from None
        plan.append((cfg, layer))
    return plan


def run_sweep(
    base_config: TrainConfig,
    grid: Mapping[str, Sequence[Any]],
    out_prefix: str | os.PathLike[str],
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every combination of a grid and write one results table, skipping rows already there.

    Parameters
    ----------
    base_config : TrainConfig
        Every other option (its ``out``/``resume`` are ignored: sweep runs write no checkpoints).
    grid : dict
        ``lambda_intra``, ``lambda_inter`` (lists of floats), ``layers`` (list of :data:`LAYER_PRESETS`
        names) and ``seeds`` (list of ints); missing keys take the base config's single value / ``["all"]``.
        A run with both lambdas 0 is trained as ``method="baseline"`` (its terms are still logged).
    out_prefix : path
        Writes ``<prefix>.csv`` and ``<prefix>.json`` (same rows) after every run; an existing
        ``<prefix>.json`` is continued.
    progress : callable, optional
        Called with each new row.

    Returns
    -------
    list of dict
        Every row of the table (old and new): the settings of :data:`SWEEP_KEYS`, ``final_acc``, ``best_acc``,
        ``train_acc``, ``ce``, ``tffd_total``, ``intra_<tap>``, ``inter_<a>-><b>`` (last epoch),
        ``train_seconds``, ``diverged`` and ``diverged_at``. A run that diverges (:class:`TrainingDiverged`)
        is a row with only its settings, ``train_seconds``, ``diverged=True`` and
        ``diverged_at="epoch E step S term T"``; the sweep goes on with the next row.

    Raises
    ------
    TffdVizError
        Before any training, naming the first row of the grid with a bad option (every row is checked).
    """
    from tffd_viz.train import train  # the loop imports this module (tffd_viz.train re-exports run_sweep)

    prefix = sweep_prefix(out_prefix)
    plan = _sweep_plan(base_config, grid)  # the whole grid is checked before the first row trains
    json_file = _table_file(prefix, "json")
    rows = _read_rows(json_file) if json_file.is_file() else []
    done = {_row_key(r) for r in rows}
    for cfg, layer in plan:
        settings = _settings(cfg, layer)
        if _row_key(settings) in done:
            continue
        t0 = time.perf_counter()
        try:
            _, card = train(cfg)
        except TrainingDiverged as exc:
            row = _settings_first(
                settings
                | {"diverged": True, "diverged_at": exc.where, "train_seconds": time.perf_counter() - t0}
            )
            result = f"diverged at {exc.where}"
        else:
            row = _result_row(cfg, layer, card)
            result = f"final_acc={row['final_acc']:.2f}"
        rows.append(row)
        done.add(_row_key(row))
        _write_table(rows, prefix)
        if progress is not None:
            progress(row)
        sys.stderr.write(
            f"sweep row {len(rows)}: layers={layer} lambda_intra={cfg.lambda_intra:g} "
            f"lambda_inter={cfg.lambda_inter:g} seed={cfg.seed} {result} "
            f"({row['train_seconds']:.0f}s)\n"
        )
        sys.stderr.flush()
    if not json_file.is_file():
        _write_table(rows, prefix)
    return rows
