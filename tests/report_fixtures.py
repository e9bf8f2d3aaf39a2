"""Shared fixtures of the report tests (``tests/test_report_*.py``): the shipped digits pair and the report
computed on it once per session (about a minute on two cores).

A test module loads them with ``pytest_plugins = ("report_fixtures",)``; the fixtures are session-scoped, so
the report is computed once however many of the modules run.

PYTEST_DONT_REWRITE: the test modules import this module's constants before ``pytest_plugins`` registers it as
a plugin, which pytest would otherwise warn about; it has no ``assert`` to rewrite.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from tffd_viz.report import ReportSection, report_sections

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "checkpoints"
N = 64
TAPS = ["layer1", "layer2", "layer3"]
SECTION_IDS = ["overview", "changed", "ranking", "losses", "similarity", "cka", "summary"]
PLOTLY_BANNER = "* plotly.js v"
SHIPPED_PAIR = ("digits_resnet8_baseline_s0", "digits_resnet8_tffd_s0")
"""Models A and B of the report under test (shipped in ``checkpoints/``; a missing one fails the tests)."""


@pytest.fixture(scope="session")
def pair() -> tuple[Path, Path]:
    a, b = (CKPT / f"{name}.safetensors" for name in SHIPPED_PAIR)
    missing = [str(p) for p in (a, b) if not p.is_file()]
    if missing:
        pytest.fail(f"shipped checkpoint(s) missing: {', '.join(missing)}")
    return a, b


@pytest.fixture(scope="session")
def sections(pair: tuple[Path, Path]) -> list[ReportSection]:
    torch.manual_seed(0)
    return report_sections(pair[0], pair[1], n=N, seed=0, progress=False)


@pytest.fixture(scope="session")
def summary(sections: list[ReportSection]) -> pd.DataFrame:
    frame = sections[-1].tables[0].frame
    return frame.set_index(["quantity", "layer / term"])


def summary_value(summary: pd.DataFrame, quantity: str, item: str, column: str) -> float:
    """One number of the summary table (indexed by quantity and layer / term)."""
    return float(summary.loc[(quantity, item), column])
