"""The conventions every page of the app keeps (read from the source), and the one query-parameter reader.

Each page ``app.py`` declares is at most ``MAX_PAGE_LINES`` lines; its widget keys start with ``<page>-`` and
its query parameters with ``<page>_`` (the sidebar's are the app's and have no prefix); no library function is
named by a string (the cache takes the function itself). ``query_param`` falls back to the default for an
absent parameter, a word where a number belongs and a value not among the options.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from conftest import APP, declared_pages

pytest.importorskip("streamlit")

MAX_PAGE_LINES = 120
PAGE_HELPERS = {"layer_picker": 1, "loss_picker": 1, "cka_settings": 1}
"""Helpers that take the page's name (at this argument position) and build its keys and parameters from it."""


def _pages() -> list[Path]:
    return [APP.parent / p for p in declared_pages()]


def _head(node: ast.expr) -> str | None:
    """A string constant, or the constant start of an f-string (``f"ranking-band-{key}"`` ->
    ``"ranking-band-"``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        return str(node.values[0].value)
    return None


def _names(tree: ast.AST) -> tuple[list[str], list[str], list[str]]:
    """The widget keys, query parameters and page-name arguments of a page (constants or f-string heads)."""
    keys, params, pages = [], [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            keys += [h for k in node.keywords if k.arg == "key" and (h := _head(k.value)) is not None]
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name == "query_param" and node.args:
                params.append(_head(node.args[0]) or "?")
            if name in PAGE_HELPERS and len(node.args) > PAGE_HELPERS[name]:
                pages.append(_head(node.args[PAGE_HELPERS[name]]) or "?")
            if name == "update" and "query_params" in ast.unparse(node.func) and node.args:
                params += [_head(k) or "?" for k in getattr(node.args[0], "keys", [])]
        if isinstance(node, ast.Subscript) and ast.unparse(node.value) == "st.query_params":
            params.append(_head(node.slice) or "?")
    return keys, params, pages


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.stem)
def test_a_page_is_short(page: Path):
    lines = len(page.read_text().splitlines())
    assert lines <= MAX_PAGE_LINES, f"{page.name}: {lines} lines; a page that needs more becomes two pages"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.stem)
def test_keys_and_query_parameters_carry_the_page_name(page: Path):
    keys, params, pages = _names(ast.parse(page.read_text()))
    assert keys, f"{page.name} has no widget key"
    assert [k for k in keys if not k.startswith(f"{page.stem}-")] == []
    assert [p for p in params if not p.startswith(f"{page.stem}_")] == []
    assert [p for p in pages if p != page.stem] == []


def test_no_library_function_is_named_by_a_string():
    spelled = re.compile(r"[\"']tffd_viz(\.\w+)+:\w+[\"']")
    sources = [APP, *sorted((APP.parent / "app_pages").glob("*.py"))]
    assert [f"{p.name}: {m.group(0)}" for p in sources for m in spelled.finditer(p.read_text())] == []


def _read_params() -> None:
    import streamlit as st

    from app_pages._ui import clamped, names_in, option_index, query_param

    st.session_state["read"] = {
        "absent": query_param("missing", 7, int),
        "int": query_param("n", 256, clamped(int, 4, 360)),
        "low": query_param("low", 0, clamped(int, 0)),
        "word": query_param("word", 3, int),
        "float": query_param("lam", 0.5, clamped(float, 0.0)),
        "option": query_param("view", "grid", options=("grid", "paired")),
        "not an option": query_param("kind", "linear", options=("linear", "rbf")),
        "names": query_param("stages", ["layer1", "layer2"], names_in(["layer1", "layer2"])),
        "no names": query_param("pairs", ["a->b"], names_in(["a->b"])),
        "unknown names": query_param("taps", ["layer1"], names_in(["layer1"])),
        "index": option_index(["a", "b"], "b"),
        "index default": option_index(["a", "b"], "z", default=1),
    }


def test_query_param_reads_casts_clamps_and_falls_back():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_read_params)
    query = {
        "n": "999999",
        "low": "-3",
        "word": "many",
        "lam": "-1",
        "view": "paired",
        "kind": "cubic",
        "stages": "layer2,nope",
        "pairs": "",
        "taps": "fc,head",
    }
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    assert not at.exception
    assert at.session_state["read"] == {
        "absent": 7,
        "int": 360,
        "low": 0,
        "word": 3,
        "float": 0.0,
        "option": "paired",
        "not an option": "linear",
        "names": ["layer2"],
        "no names": [],
        "unknown names": ["layer1"],
        "index": 1,
        "index default": 1,
    }
