"""Tests of tffd_viz.report.render: one self-contained HTML page, plotly.js inline once."""

from __future__ import annotations

import re

import pandas as pd
from plotly.offline import get_plotlyjs
from report_fixtures import PLOTLY_BANNER, summary_value

from tffd_viz.report import render_html

pytest_plugins = ("report_fixtures",)


def test_html_is_self_contained_with_plotly_once_and_every_section(
    sections: list, summary: pd.DataFrame
) -> None:
    page = render_html(sections, title="t", meta={"model A": "a.safetensors"})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count(PLOTLY_BANNER) == 1
    outside_js = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]+src=", outside_js)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", outside_js)
    for s in sections:
        assert f'<section id="{s.id}">' in page and f"<h2>{s.title}</h2>" in page
        assert f'<a href="#{s.id}">' in page
    n_figures = sum(len(s.figures) for s in sections)
    assert page.count('class="plotly-graph-div"') == n_figures
    assert page.count("Plotly.newPlot(") == n_figures
    acc = summary_value(summary, "top-1 accuracy on the batch (%)", "", "B")
    assert f"<td>{acc:.4g}</td>" in page
    assert "<th>model A</th><td>a.safetensors</td>" in page
