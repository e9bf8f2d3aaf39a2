"""Tests of tffd_viz.report.cli: the HTML file, ``tffd-viz report``, and importing without plotly."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import pytest
from report_fixtures import PLOTLY_BANNER, SECTION_IDS, N

from tffd_viz.cli import main
from tffd_viz.errors import TffdVizError
from tffd_viz.report import SECTIONS, add_report_arguments, run_report

pytest_plugins = ("report_fixtures",)


def test_cli_writes_the_report_and_prints_its_path(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    out = tmp_path / "sub" / "report.html"
    args = parser.parse_args(["--a", str(pair[0]), "--b", str(pair[1]), "--n", str(N), "--out", str(out)])
    assert run_report(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert f"{len(SECTIONS)}/{len(SECTIONS)}" in captured.err  # the progress bar ticked once per section
    page = out.read_text(encoding="utf-8")
    assert page.count(PLOTLY_BANNER) == 1
    assert all(f'<section id="{i}">' in page for i in SECTION_IDS)
    assert f"<td>{pair[0]}</td>" in page and f"<td>{pair[1]}</td>" in page


def test_tffd_viz_report_command_reports_bad_input_in_one_line(
    pair: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "never.html"
    code = main(
        ["report", "--a", str(pair[0]), "--b", str(pair[1]), "--n", "361", "--quiet", "--out", str(out)]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("tffd-viz report: error:") and "n=361" in err and "360" in err


def test_report_arguments_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args(["--a", "x.safetensors", "--b", "y.safetensors"])
    assert (
        args.a,
        args.b,
        args.dataset,
        args.data_root,
        args.n,
        args.seed,
        args.split,
        args.device,
        args.out,
        args.quiet,
    ) == ("x.safetensors", "y.safetensors", None, None, 256, 0, "test", "cpu", "report.html", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--a", "x.safetensors"])


def test_module_imports_without_plotly_and_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI registers this module's arguments, so it must import where plotly is not installed."""
    import tffd_viz

    for name in [
        m for m in sys.modules if m.split(".")[0] == "plotly" or m in ("tffd_viz.report", "tffd_viz.plots")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # "import plotly" now raises ImportError
    for attr in ("report", "plots"):
        monkeypatch.delattr(tffd_viz, attr, raising=False)
    fresh = importlib.import_module("tffd_viz.report")
    parser = argparse.ArgumentParser()
    fresh.add_report_arguments(parser)
    with pytest.raises(TffdVizError, match="the HTML report needs plotly and pandas"):
        fresh.build_report("a.safetensors", "b.safetensors", progress=False)
