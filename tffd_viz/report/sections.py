"""The report's sections in order (:data:`SECTIONS`, one builder each), the closing ``summary`` section, and
:func:`report_sections`, which computes them all."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from tffd_viz.report._base import extras
from tffd_viz.report.inputs import SUMMARY_COLUMNS, ReportInputs, load_report_inputs
from tffd_viz.report.losses import losses_section
from tffd_viz.report.overview import changed_section, overview_section
from tffd_viz.report.ranking import ranking_section
from tffd_viz.report.render import ReportSection, ReportTable
from tffd_viz.report.similarity import cka_section, similarity_section

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from tffd_viz.report.inputs import ReportOptions

__all__ = ["SECTIONS", "inputs_and_sections", "report_sections", "summary_section"]


def summary_section(ctx: ReportInputs) -> ReportSection:
    """The ``summary`` section: the numbers every earlier section recorded (columns ``SUMMARY_COLUMNS``)."""
    pd, _, _ = extras()
    frame = pd.DataFrame(ctx.numbers, columns=list(SUMMARY_COLUMNS))
    intro = (
        f"The numbers behind the sections above, all measured on the same {ctx.n} {ctx.split} images of "
        f"{ctx.dataset}: per-model values in columns A and B, comparisons of the two models in 'A vs B'."
    )
    return ReportSection(
        "summary", "Summary", intro, [], [ReportTable("Summary of the measured numbers", frame)]
    )


SECTIONS: dict[str, Callable[[ReportInputs], ReportSection]] = {
    "overview": overview_section,
    "changed": changed_section,
    "ranking": ranking_section,
    "losses": losses_section,
    "similarity": similarity_section,
    "cka": cka_section,
    "summary": summary_section,
}
"""Section id -> builder, in report order; ``summary`` must come last (it reads what the others recorded)."""


def report_sections(
    path_a: str | Path, path_b: str | Path, *, progress: bool = True, **options: Unpack[ReportOptions]
) -> list[ReportSection]:
    """Compute every section of the report, in order (one progress-bar tick per section).

    Parameters
    ----------
    path_a, path_b : path
        Checkpoints of model A (usually the baseline) and model B.
    progress : bool
        Show a tqdm progress bar on stderr.
    **options
        ``dataset``, ``root``, ``n``, ``seed``, ``split``, ``device``, ``normalisation``: as in
        :func:`~tffd_viz.report.inputs.load_report_inputs`.

    Returns
    -------
    list of ReportSection
        One per entry of :data:`SECTIONS`, in that order.
    """
    return inputs_and_sections(path_a, path_b, progress=progress, **options)[1]


def inputs_and_sections(
    path_a: str | Path, path_b: str | Path, *, progress: bool = True, **options: Unpack[ReportOptions]
) -> tuple[ReportInputs, list[ReportSection]]:
    """Return the report's inputs (:func:`~tffd_viz.report.inputs.load_report_inputs`) and every section
    computed on them (arguments as :func:`report_sections`)."""
    extras()
    with tqdm(total=len(SECTIONS), desc="tffd-viz report", unit="section", disable=not progress) as bar:
        bar.set_postfix_str("loading models and batch")
        ctx = load_report_inputs(path_a, path_b, **options)
        sections = []
        for name, build in SECTIONS.items():
            bar.set_postfix_str(name)
            sections.append(build(ctx))
            bar.update(1)
    return ctx, sections
