"""Small helpers shared by the report's modules: the lazily imported app extras and value formatting."""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from types import ModuleType

from tffd_viz.errors import TffdVizError

__all__ = ["EXTRAS", "as_float", "extras", "plain", "position_name", "union"]

EXTRAS: tuple[str, ...] = ("plotly", "pandas", "tffd_viz.plots", "tffd_viz.summary")
"""What building a report imports on first use (the app extras); plotly is named first so that its absence is
reported even where :mod:`tffd_viz.plots` is already imported."""


def extras() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Return ``(pandas, tffd_viz.plots, tffd_viz.summary)``, imported on first use (the app extras).

    Raises
    ------
    TffdVizError
        plotly or pandas is not installed.
    """
    try:
        _, pd, plots, summary = (importlib.import_module(name) for name in EXTRAS)
    except ImportError as exc:
        raise TffdVizError(
            f"the HTML report needs plotly and pandas ({exc}); install them with pip install 'tffd-viz[app]'"
        ) from None
    return pd, plots, summary


def plain(line: str) -> str:
    """A markdown bullet of :func:`tffd_viz.verdicts.what_changed_text` as plain text (the report escapes
    HTML)."""
    return line.removeprefix("* ").replace("**", "")


def as_float(v: float | None) -> float:
    """``v`` as a float, NaN for None (an empty cell of the summary table)."""
    return math.nan if v is None else float(v)


def position_name(ta: str | None, tb: str | None) -> str:
    """Name of a tap position of A and B: the shared tap name, else ``"<A's> / <B's>"`` (or the one that
    exists)."""
    return str(ta if ta == tb or tb is None else tb if ta is None else f"{ta} / {tb}")


def union(keys: Sequence[Sequence[str]]) -> list[str]:
    """The keys of every sequence, each once, in order of first appearance."""
    out: list[str] = []
    for ks in keys:
        out += [k for k in ks if k not in out]
    return out
