"""The report's entry points: :func:`build_report` (the HTML text), :func:`write_report` (the file) and the
command line ``tffd-viz report`` (:func:`add_report_arguments`, :func:`run_report`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tffd_viz.normalisation import NORMALISATIONS
from tffd_viz.report.inputs import ReportInputs
from tffd_viz.report.render import render_html
from tffd_viz.report.sections import inputs_and_sections

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tffd_viz.report.inputs import ReportOptions

__all__ = ["add_report_arguments", "build_report", "run_report", "write_report"]


def _meta(ctx: ReportInputs) -> dict[str, Any]:
    """Rows of the page's header table."""
    return {
        "model A": ctx.paths["A"],
        "model B": ctx.paths["B"],
        "dataset": ctx.dataset,
        "sample batch": f"{ctx.n} {ctx.split} images, seed {ctx.seed}",
        "device": ctx.device,
        "taps A": ", ".join(ctx.taps["A"]),
        "taps B": ", ".join(ctx.taps["B"]),
    }


def build_report(
    path_a: str | Path, path_b: str | Path, *, progress: bool = True, **options: Unpack[ReportOptions]
) -> str:
    """Return the whole report as one self-contained HTML document (arguments as
    :func:`~tffd_viz.report.sections.report_sections`)."""
    ctx, sections = inputs_and_sections(path_a, path_b, progress=progress, **options)
    title = f"Tf-FD report: {Path(ctx.paths['A']).name} vs {Path(ctx.paths['B']).name}"
    return render_html(sections, title=title, meta=_meta(ctx))


def write_report(
    path_a: str | Path,
    path_b: str | Path,
    *,
    out: str | Path,
    progress: bool = True,
    **options: Unpack[ReportOptions],
) -> Path:
    """Build the report (see :func:`build_report`) and write it to ``out`` (parent folders created).

    Returns
    -------
    Path
        ``out``.
    """
    text = build_report(path_a, path_b, progress=progress, **options)
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz report``."""
    p.add_argument("--a", required=True, metavar="CKPT", help="checkpoint of model A (usually the baseline)")
    p.add_argument(
        "--b", required=True, metavar="CKPT", help="checkpoint of model B (usually the Tf-FD model)"
    )
    p.add_argument(
        "--dataset", default=None, help="digits, cifar10, cifar100 or imagefolder (default: A's card)"
    )
    p.add_argument(
        "--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)"
    )
    p.add_argument("--n", type=int, default=256, help="images in the sample batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample batch (default 0)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", default="report.html", help="output HTML file (default report.html)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for key in ("a", "b"):
        p.add_argument(
            f"--norm-{key}",
            default="dataset",
            choices=tuple(NORMALISATIONS),
            help=f"input normalisation of model {key.upper()} when its checkpoint does not say (no mean/std "
            "in its card): a guess, marked in the report (default: dataset statistics)",
        )


def run_report(args: argparse.Namespace) -> int:
    """Run ``tffd-viz report``: write the HTML file, print its path, return 0."""
    path = write_report(
        args.a,
        args.b,
        dataset=args.dataset,
        root=args.data_root,
        n=args.n,
        seed=args.seed,
        split=args.split,
        device=args.device,
        progress=not args.quiet,
        out=args.out,
        normalisation={"A": args.norm_a, "B": args.norm_b},
    )
    print(path)
    return 0
