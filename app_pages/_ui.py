"""Drawing helpers every page uses, and the one reader of query parameters.

Nothing here caches, runs a model or knows the sidebar: :mod:`app_pages._cache` does the first two,
:mod:`app_pages._sidebar` the last. Widget keys and query parameters of a page start with the page's name
(``ranking-layer``, ``ranking_layer``); the keys given to :func:`show_figure` and :func:`show_table` too.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, TypeVar

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

T = TypeVar("T")
Number = TypeVar("Number", int, float)


def intro(text: str) -> None:
    """The two or three sentences that open every page."""
    st.markdown(text)


def show_error(exc: BaseException, what: str = "") -> None:
    """Show a library error as a message (never a traceback)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}")


def show_figure(fig: go.Figure, key: str, name: str | None = None) -> None:
    """Draw a plotly figure with an HTML download (the modebar's camera button gives a PNG).

    ``key`` names the chart (``<key>-figure``) and its download button (``<key>-figure-download``); ``name``
    the downloaded file (default ``key``).
    """
    st.plotly_chart(
        fig,
        key=f"{key}-figure",
        config={
            "displaylogo": False,
            "toImageButtonOptions": {"format": "png", "filename": name or key, "scale": 2},
        },
    )
    # the HTML is built only when the button is clicked (building it on every rerun costs ~50 ms a figure)
    st.download_button(
        "Download figure (HTML)",
        lambda: fig.to_html(include_plotlyjs="cdn", full_html=True),
        file_name=f"{name or key}.html",
        mime="text/html",
        key=f"{key}-figure-download",
        on_click="ignore",
    )


def show_table(table: pd.DataFrame | Sequence[Mapping[str, Any]], key: str, name: str | None = None) -> None:
    """Draw a table (a data frame, or rows as dicts) with a CSV download (keys ``<key>-table[-download]``)."""
    df = table if isinstance(table, pd.DataFrame) else pd.DataFrame(list(table))
    st.dataframe(df, key=f"{key}-table", hide_index=True)
    st.download_button(
        "Download table (CSV)",
        lambda: df.to_csv(index=False),
        file_name=f"{name or key}.csv",
        mime="text/csv",
        key=f"{key}-table-download",
        on_click="ignore",
    )


def query_param(
    name: str, default: T, cast: Callable[[str], T] | None = None, options: Collection[Any] | None = None
) -> T:
    """The query parameter ``name`` read with ``cast`` (the string itself when None).

    ``default`` when the parameter is absent, when ``cast`` raises ``ValueError`` or ``TypeError`` (a word
    where a number belongs), or when the value is not one of ``options``. A hand-edited URL never breaks a
    page: it falls back to the default.
    """
    raw = st.query_params.get(name)
    if raw is None:
        return default
    try:
        value = cast(raw) if cast is not None else raw
    except (TypeError, ValueError):
        return default
    if options is not None and value not in options:
        return default
    return value  # type: ignore[return-value]  # without cast, T is str (the default's type)


def clamped(
    cast: Callable[[str], Number], lo: Number | None = None, hi: Number | None = None
) -> Callable[[str], Number]:
    """A ``cast`` for :func:`query_param`: the number clamped to ``[lo, hi]`` (an open end where None)."""

    def read(raw: str) -> Number:
        value = cast(raw)
        value = value if lo is None else max(lo, value)
        return value if hi is None else min(hi, value)

    return read


def names_in(options: Sequence[str]) -> Callable[[str], list[str]]:
    """A ``cast`` for :func:`query_param`: ``"a,b"`` -> the listed names that are ``options``.

    An empty parameter means none; one that lists only names not in ``options`` (another architecture's
    layers) is refused, so the default applies.
    """

    def read(raw: str) -> list[str]:
        listed = [v for v in raw.split(",") if v]
        kept = [v for v in listed if v in options]
        if listed and not kept:
            raise ValueError(f"none of {listed} is one of {list(options)}")
        return kept

    return read


def option_index(options: Sequence[Any], wanted: Any, default: int = 0) -> int:
    """The index of ``wanted`` in ``options`` (``default`` when it is not there): a widget's start value."""
    return options.index(wanted) if wanted in options else default


def carried_params(source: str, target: str) -> dict[str, str]:
    """The current query parameters with page ``source``'s renamed for page ``target`` (``losses_stages`` ->
    ``whatif_stages``): for a link that opens ``target`` with this page's choices."""
    prefix = f"{source}_"
    return {
        f"{target}_{k.removeprefix(prefix)}" if k.startswith(prefix) else k: v
        for k, v in st.query_params.to_dict().items()
    }
