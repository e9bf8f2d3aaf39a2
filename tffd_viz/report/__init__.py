"""A headless, self-contained HTML report comparing two checkpoints (A, usually the baseline, and B).

``tffd-viz report --a A.safetensors --b B.safetensors --out report.html`` (or :func:`write_report`)
loads both models, draws one deterministic sample batch (:func:`tffd_viz.data.sample_batch`) and
writes one HTML file with these sections, computed by the library and drawn with the very figures
of the app (:mod:`tffd_viz.plots`):

==============  ===================================================================================
``overview``    the model cards side by side, accuracy on the batch, per-class errors (or both
                confusion matrices), the training curves stored in the cards
``changed``     A vs B, what changed: every quantity measured on the whole held-out split (held-out
                Tf-FD terms raw and scale-free, activation energy, paired and random-pair cosines,
                CKA) with its difference, its noise reference (seed spread, else batch spread) and a
                verdict written only beyond the noise (:mod:`tffd_viz.verdicts`)
``ranking``     Tf-FD channel saliency per layer (sorted, salient/redundant halves) and how well
                other importance criteria agree with it
``losses``      the held-out terms of A and B with their spread, raw next to scale-free, and the
                activation energy per stage; every unweighted term on the batch and the
                cross-entropy against the lambda-weighted terms (the card's lambdas, else the paper's)
``similarity``  paired cosine against random channel pairs, salient-vs-paired-redundant similarity,
                inter-layer alignment, the channel cosine matrices of the deepest layer
``cka``         layer x layer linear CKA, A vs B and within each model (minibatch HSIC_1 estimator),
                the A-vs-B diagonal against the seed-to-seed CKA
``summary``     one table of the numbers: accuracies, every term, mean paired cosine, CKA diagonal
==============  ===================================================================================

plotly.js is embedded once, inline, in the page head, so the file works offline. The sections are
built by the functions in :data:`SECTIONS` (one progress-bar tick each); :func:`report_sections`
returns them as :class:`ReportSection` objects (title, intro, figures, tables) for tests and
notebooks, :func:`build_report` renders them to HTML.

The report needs the app extras (plotly, pandas); they are imported when a report is built, so
this package (and the command line that registers :func:`add_report_arguments`) imports without them.

==================  =================================================================================
module              holds
==================  =================================================================================
``inputs``          :class:`ReportInputs`, :func:`load_report_inputs`: both models and the sample batch
``overview``        the ``overview`` and ``changed`` sections
``ranking``         the ``ranking`` section, :func:`identical_criteria`
``losses``          the ``losses`` section, :func:`card_lambdas`
``similarity``      the ``similarity`` and ``cka`` sections
``sections``        :data:`SECTIONS` in order, the ``summary`` section, :func:`report_sections`
``render``          :class:`ReportSection`, :class:`ReportTable`, :func:`render_html`
``cli``             :func:`build_report`, :func:`write_report`, ``tffd-viz report``
==================  =================================================================================
"""

from __future__ import annotations

from tffd_viz.report.cli import add_report_arguments, build_report, run_report, write_report
from tffd_viz.report.inputs import CKA_BATCH, SUMMARY_COLUMNS, ReportInputs, ReportOptions, load_report_inputs
from tffd_viz.report.losses import card_lambdas
from tffd_viz.report.overview import ERROR_BARS_ABOVE
from tffd_viz.report.ranking import REPORT_CRITERIA, identical_criteria
from tffd_viz.report.render import ReportSection, ReportTable, render_html
from tffd_viz.report.sections import SECTIONS, report_sections

__all__ = [
    "CKA_BATCH",
    "ERROR_BARS_ABOVE",
    "REPORT_CRITERIA",
    "SECTIONS",
    "SUMMARY_COLUMNS",
    "ReportInputs",
    "ReportOptions",
    "ReportSection",
    "ReportTable",
    "add_report_arguments",
    "build_report",
    "card_lambdas",
    "identical_criteria",
    "load_report_inputs",
    "render_html",
    "report_sections",
    "run_report",
    "write_report",
]
