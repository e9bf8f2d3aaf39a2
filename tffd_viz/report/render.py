"""The report as a document: sections of tables and figures, rendered to one self-contained HTML page.

:class:`ReportSection` (title, intro, tables, figures) is what every section builder returns and what
:func:`render_html` draws; plotly.js is embedded once, inline, in the page head, so the file works offline.
The what-if command (:mod:`tffd_viz.whatif`) renders its own sections with the same function.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tffd_viz import __version__
from tffd_viz.report._base import extras

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = ["ReportSection", "ReportTable", "render_html"]


@dataclass
class ReportTable:
    """A titled table of a section."""

    title: str
    frame: pd.DataFrame


@dataclass
class ReportSection:
    """One section of the report.

    Attributes
    ----------
    id : str
        HTML anchor and key of :data:`tffd_viz.report.SECTIONS` (``"overview"``, ``"ranking"``, ...).
    title : str
        Heading.
    intro : str
        Two or three sentences, with measured numbers; paragraphs separated by blank lines.
    figures : list of plotly Figure
        In drawing order.
    tables : list of ReportTable
        Drawn before the figures.
    """

    id: str
    title: str
    intro: str
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-bottom: 0.3rem; font-size: 1rem; }
table.tbl, table.meta { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 1.2rem 0; }
table.tbl th, table.tbl td, table.meta th, table.meta td { border: 1px solid #ddd; padding: 0.2rem 0.5rem;
       text-align: left; vertical-align: top; }
table.tbl th { background: #f4f4f4; } table.meta th { background: #fafafa; font-weight: 600; }
.figure { margin: 0.8rem 0 1.6rem 0; } nav ol { columns: 2; } .intro { max-width: 60rem; }
footer { margin-top: 3rem; color: #777; font-size: 0.8rem; }
"""


def _number_format(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.4g}"


def _table_html(table: ReportTable) -> str:
    body = table.frame.to_html(
        index=False, border=0, classes="tbl", na_rep="—", float_format=_number_format, escape=True
    )
    return f"<h3>{html.escape(table.title)}</h3>\n{body}"


def _paragraphs(text: str) -> str:
    return "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def render_html(
    sections: Sequence[ReportSection], title: str = "Tf-FD report", meta: Mapping[str, Any] | None = None
) -> str:
    """Render sections to one self-contained HTML page (plotly.js inline, once, in the head).

    Parameters
    ----------
    sections : list of ReportSection
    title : str
    meta : mapping, optional
        Rows of the header table (e.g. files, dataset, batch).

    Returns
    -------
    str
        The HTML document; every figure is a ``<div class="plotly-graph-div">`` with id
        ``"<section id>-fig<i>"``.
    """
    extras()  # a TffdVizError naming the missing extras rather than an ImportError
    from plotly.offline import get_plotlyjs

    nav = "\n".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    meta_rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in (meta or {}).items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="meta">{meta_rows}</table>',
        f"<nav><ol>{nav}</ol></nav>",
        "</header>",
    ]
    config = {"displaylogo": False, "responsive": True}
    for s in sections:
        parts += [
            f'<section id="{html.escape(s.id)}">',
            f"<h2>{html.escape(s.title)}</h2>",
            f'<div class="intro">{_paragraphs(s.intro)}</div>',
        ]
        parts += [_table_html(t) for t in s.tables]
        for i, fig in enumerate(s.figures):
            div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{s.id}-fig{i}", config=config)
            parts.append(f'<div class="figure">{div}</div>')
        parts.append("</section>")
    parts += [
        f"<footer>tffd-viz {html.escape(__version__)} · "
        "Teacher-free Feature Distillation (Li, ECCV 2022)</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts)
