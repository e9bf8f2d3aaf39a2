"""Tests of the packaging: pyproject's dependencies agree with requirements.txt,
and the wheel ships ``py.typed``."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _by_name(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    by_name = {canonicalize_name(r.name): r for r in reqs}
    assert len(by_name) == len(reqs), f"a package is listed twice in {lines}"
    return by_name


def _requirements_txt() -> dict[str, Requirement]:
    """The packages of requirements.txt (comments, blank lines and pip options such as ``-e .`` left out)."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    return _by_name([line for line in lines if line and not line.startswith("-")])


def _lowest_allowed(req: Requirement) -> Version | None:
    """The version a requirements.txt line pins (``==``) or starts from (``>=``); None for a bare name."""
    bounds = [Version(s.version) for s in req.specifier if s.operator in ("==", ">=")]
    return max(bounds) if bounds else None


def test_requirements_txt_names_the_dependencies_and_the_app_extra() -> None:
    project = _pyproject()["project"]
    declared = _by_name(project["dependencies"]) | _by_name(project["optional-dependencies"]["app"])
    assert sorted(_requirements_txt()) == sorted(declared)
    for name in ("pillow", "pandas"):  # imported by the library (image folders, summary tables)
        assert name in _by_name(project["dependencies"])
    for name in ("streamlit", "plotly", "captum"):  # the app only: the core imports none of them
        assert name in _by_name(project["optional-dependencies"]["app"])
        assert name not in _by_name(project["dependencies"])


def test_requirements_txt_versions_satisfy_pyproject() -> None:
    project = _pyproject()["project"]
    declared = _by_name(project["dependencies"]) | _by_name(project["optional-dependencies"]["app"])
    for name, req in _requirements_txt().items():
        version = _lowest_allowed(req)
        assert version is not None, f"requirements.txt should pin or bound {name}"
        assert declared[name].specifier.contains(version, prereleases=True), (
            f"requirements.txt's {req} allows {version}, which pyproject's {declared[name]} excludes"
        )


def test_py_typed_is_package_data() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert (ROOT / "tffd_viz" / "py.typed").is_file()
    assert "py.typed" in setuptools["package-data"]["tffd_viz"]
    assert setuptools["packages"]["find"]["include"] == ["tffd_viz*"]  # a new subpackage cannot be left out


def test_packages_find_takes_every_subpackage() -> None:
    setuptools = pytest.importorskip("setuptools")
    found = set(setuptools.find_packages(where=str(ROOT), include=["tffd_viz*"]))
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "tffd_viz").rglob("__init__.py")}
    assert (
        found == on_disk and {"tffd_viz", "tffd_viz.models", "tffd_viz.verdicts", "tffd_viz.whatif"} <= found
    )
