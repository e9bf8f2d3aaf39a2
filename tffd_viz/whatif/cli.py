"""Rows for tables and notebooks, CSV and HTML output, and the ``tffd-viz whatif`` command line.

Part of :mod:`tffd_viz.whatif`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tffd_viz.errors import TffdVizError
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.whatif.answer import train_command, whatif_answer
from tffd_viz.whatif.config import ARMS, DEFAULT_HELDOUT_N, WhatIfConfig
from tffd_viz.whatif.run import WhatIf

# --------------------------------------------------------------------------------------------------
# rows for tables and notebooks
# --------------------------------------------------------------------------------------------------


def heldout_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The held-out figures of a result as table rows: one per arm at the start (``phase="heldout_start"``,
    step 0) and at the end (``"heldout_end"``).

    Columns: ``arm``, ``phase``, ``step``, ``accuracy``, ``intra_<tap>``, ``inter_<a>-><b>``, the same with
    ``_rel`` before the tap (``intra_rel_<tap>``), ``..._std`` after it (batch-to-batch spread) and
    ``energy_<tap>``, ``heldout_n``.
    """
    out = []
    for phase, step, per_arm in (
        ("heldout_start", 0, {a: result["start"] for a in ARMS}),
        ("heldout_end", result["step"], result["end"]),
    ):
        for arm in ARMS:
            h = per_arm[arm]
            row: dict[str, Any] = {"arm": arm, "phase": phase, "step": step, "accuracy": h["accuracy"]}
            for key in ("intra", "inter", "intra_rel", "inter_rel", "energy"):
                row.update({f"{key}_{t}": v for t, v in h[key].items()})
                row.update({f"{key}_{t}_std": v for t, v in h[f"{key}_std"].items()})
            row["heldout_n"] = h["n"]
            out.append(row)
    return out


# --------------------------------------------------------------------------------------------------
# command line: tffd-viz whatif
# --------------------------------------------------------------------------------------------------

_SHIPPED = Path(__file__).resolve().parents[2] / "checkpoints"


def checkpoint_file(name: str) -> Path:
    """A checkpoint path, or the name of a shipped one (``digits_resnet8_baseline_s0`` ->
    ``checkpoints/digits_resnet8_baseline_s0.safetensors``).

    Raises
    ------
    TffdVizError
        When neither exists (naming both places).
    """
    path = Path(name).expanduser()
    if path.is_file():
        return path
    shipped = _SHIPPED / f"{name.removesuffix('.safetensors')}.safetensors"
    if shipped.is_file():
        return shipped
    raise TffdVizError(
        f"no checkpoint {name!r}: not a file, and not a shipped name ({shipped} does not exist)"
    )


def write_rows_csv(rows: Sequence[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows (dicts, columns = union of their keys in first-appearance order) to a CSV file."""
    import csv

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    return path


def whatif_html(rows: Sequence[Mapping[str, Any]], result: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """One self-contained HTML page of a what-if: the answer, the comparison table, the curves and the
    held-out figure (:mod:`tffd_viz.plots.whatif`), rendered by :func:`tffd_viz.report.render_html`."""
    import pandas as pd

    from tffd_viz.plots import whatif_curves_figure, whatif_heldout_figure
    from tffd_viz.report import ReportSection, ReportTable, render_html

    comparison = pd.DataFrame(result["comparison"])
    settings = pd.DataFrame([{"setting": k, "value": str(v)} for k, v in result["settings"].items()])
    section = ReportSection(
        id="whatif",
        title="Try a lambda: short fine-tunes from one model",
        intro=whatif_answer(result).replace("\n", "\n\n"),
        figures=[
            whatif_curves_figure(list(rows), total_steps=result["settings"]["steps"]),
            whatif_heldout_figure(result),
        ],
        tables=[
            ReportTable("Held-out comparison (change and noise: % of control; accuracy: points)", comparison),
            ReportTable("Settings", settings),
        ],
    )
    return render_html([section], title="Tf-FD what-if", meta=meta)


def add_whatif_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz whatif``."""
    p.add_argument(
        "--a", required=True, metavar="CKPT", help="starting model: a checkpoint path or a shipped name"
    )
    p.add_argument("--lambda-intra", type=float, default=PAPER_LAMBDA_INTRA, help="λ_intra of the Tf-FD arm")
    p.add_argument("--lambda-inter", type=float, default=PAPER_LAMBDA_INTER, help="λ_inter of the Tf-FD arm")
    p.add_argument("--stages", default=None, help="taps taking the intra term, comma list ('all', 'none')")
    p.add_argument(
        "--pairs", default=None, help="inter-term pairs shallow-deep, e.g. '0-1,1-2' ('all', 'none')"
    )
    p.add_argument("--steps", type=int, default=None, help="steps per arm (default: 100 for digits, else 30)")
    p.add_argument(
        "--lr", type=float, default=None, help="constant lr (default: a tenth of the recipe's peak lr)"
    )
    p.add_argument("--seed", type=int, default=0, help="batch-order seed of the control and Tf-FD arms")
    p.add_argument(
        "--noise-seed", type=int, default=None, help="batch-order seed of the second control (seed + 1)"
    )
    p.add_argument("--heldout-n", type=int, default=DEFAULT_HELDOUT_N, help="held-out test images (2000)")
    p.add_argument("--dataset", default=None, help="default: the model card's dataset")
    p.add_argument(
        "--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", default="whatif.csv", help="CSV of the rows; the HTML figure goes beside it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run_whatif(args: argparse.Namespace) -> int:
    """Run ``tffd-viz whatif``: write ``<out>.csv`` and ``<out>.html``, print the answer, return 0."""
    import sys

    from tffd_viz.checkpoints import load_checkpoint
    from tffd_viz.data import load_dataset
    from tffd_viz.devices import resolved_device
    from tffd_viz.train import parse_pairs, parse_stages

    stages, pairs = parse_stages(args.stages), parse_pairs(args.pairs)
    config = WhatIfConfig(
        lambda_intra=args.lambda_intra,
        lambda_inter=args.lambda_inter,
        stages=None if stages is None else tuple(stages),
        pairs=None if pairs is None else tuple((a, b) for a, b in pairs),
        steps=args.steps,
        lr=args.lr,
        seed=args.seed,
        noise_seed=args.noise_seed,
        heldout_n=args.heldout_n,
    ).check()
    path = checkpoint_file(args.a)
    device = str(resolved_device(args.device, unavailable="raise").device)
    model, card = load_checkpoint(str(path), device=device)
    dataset = args.dataset or card.get("dataset") or "digits"
    w = WhatIf(model, load_dataset(dataset, args.data_root), config, card=card)
    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=w.total_steps, desc="what-if steps", file=sys.stderr)
    for row in w.run():
        if bar is not None and row["arm"] == ARMS[-1]:
            bar.update(1)
    if bar is not None:
        bar.close()
    result = w.result()
    result["command"] = train_command(w.settings, data_root=args.data_root)
    out = Path(args.out)
    csv_path = write_rows_csv([*w.rows, *heldout_rows(result)], out.with_suffix(".csv"))
    html_path = out.with_suffix(".html")
    html_path.write_text(
        whatif_html(w.rows, result, {"model": str(path), "dataset": dataset, "device": device}),
        encoding="utf-8",
    )
    print(whatif_answer(result))
    print(f"rows: {csv_path}\nfigure: {html_path}")
    return 0
