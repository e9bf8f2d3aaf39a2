"""The ``>>>`` examples in the library's docstrings run and print what they show (doctest).

Run from the repository root (the examples open ``checkpoints/...`` by relative path, as a reader at the
root would); ``...`` in an expected output stands for any text.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import tffd_viz

ROOT = Path(__file__).resolve().parents[1]
MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(tffd_viz.__path__, prefix="tffd_viz.")
    if not m.name.endswith("__main__")
)


def _source(name: str) -> Path:
    path = ROOT / (name.replace(".", "/") + ".py")
    return path if path.is_file() else ROOT / name.replace(".", "/") / "__init__.py"


@pytest.mark.parametrize("name", [n for n in MODULES if ">>>" in _source(n).read_text(encoding="utf-8")])
def test_docstring_examples_run(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert result.attempted > 0, f"{name} shows >>> examples but doctest found none"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} fail (output above)"


def test_examples_are_found() -> None:
    """The scan above sees the modules known to carry examples (a broken scan would test nothing)."""
    shown = {n for n in MODULES if ">>>" in _source(n).read_text(encoding="utf-8")}
    assert {"tffd_viz.pairs", "tffd_viz.train", "tffd_viz.whatif", "tffd_viz.losses"} <= shown
