"""Render ``BENCHMARKS.md`` from the result files (``python -m bench report``).

Only numbers found in the result JSON files are shown; each section names the machine, the versions,
the thread count and the exact command that produced it. Quick (smoke) results are marked as such.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import BENCHMARKS

__all__ = ["FORMATS", "format_value", "load_results", "render_report", "write_report"]


def _seconds(v: float) -> str:
    return f"{v:.3f} s" if abs(v) < 10 else f"{v:.1f} s"


FORMATS: dict[str, Callable[[Any], str]] = {
    "ms": lambda v: f"{v * 1e3:.2f} ms",
    "s": _seconds,
    "mib": lambda v: f"{v:.1f}",
    "ratio": lambda v: f"{v:.3f}x",
    "e": lambda v: f"{v:.1e}",
    "int": lambda v: f"{v:,.0f}",
    "bool": lambda v: "yes" if v else "no",
    "g": lambda v: f"{v:g}",
    "str": str,
}
"""Column format name -> formatter (``None`` values render as an en dash)."""


def format_value(value: Any, fmt: str) -> str:
    """Format one table cell; unknown formats fall back to ``str``."""
    if value is None:
        return "–"
    try:
        return FORMATS.get(fmt, str)(value)
    except (TypeError, ValueError):
        return str(value)


def _order(result: dict[str, Any]) -> tuple[int, str, str]:
    names = list(BENCHMARKS)
    name = result.get("benchmark", "")
    return (names.index(name) if name in names else len(names), result["machine"].get("device", ""), name)


def _shown_path(path: Path) -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def load_results(folder: Path) -> list[dict[str, Any]]:
    """Every ``*.json`` result in ``folder`` (sorted by benchmark order, then device)."""
    results = []
    for path in sorted(Path(folder).glob("*.json")):
        data = json.loads(path.read_text())
        if isinstance(data, dict) and "benchmark" in data and "machine" in data:
            data["_file"] = _shown_path(path)
            results.append(data)
    return sorted(results, key=_order)


def _verdict(passed: bool | None) -> str:
    return "**PASS**" if passed else ("**MISS**" if passed is False else "n/a")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(tab: dict[str, Any]) -> list[str]:
    cols = tab["columns"]
    lines = [
        f"**{tab['title']}**",
        "",
        "| " + " | ".join(_md_cell(c["label"]) for c in cols) + " |",
        "|" + "|".join("---" if c["fmt"] == "str" else "---:" for c in cols) + "|",
    ]
    for row in tab["rows"]:
        lines.append(
            "| " + " | ".join(_md_cell(format_value(row.get(c["key"]), c["fmt"])) for c in cols) + " |"
        )
    if tab.get("note"):
        lines += ["", _md_cell(tab["note"])]
    return [*lines, ""]


def _load_text(m: dict[str, Any], load: dict[str, Any]) -> str:
    text = f"1-min load avg {m.get('load_avg_1m')} at start"
    if load.get("end_1m") is not None:
        text += f", {load['end_1m']} when written"
    if load.get("busy"):
        text += f" (**busy**, written with --allow-busy: {load['busy']})"
    return text


def _git_text(m: dict[str, Any]) -> str:
    if m.get("git_commit") is None:
        return f"git {m.get('git')}"
    return f"git {m['git_commit'][:10]} ({'dirty tree' if m.get('git_dirty') else 'clean tree'})"


def _machine_line(m: dict[str, Any], r: dict[str, Any]) -> str:
    cores = f"{m.get('cpu_usable')} usable of {m.get('cpu_count')} cores"
    parts = [
        f"{m.get('device_name')}",
        f"CPU {m.get('cpu')} ({cores})",
        f"{m.get('memory_gib')} GiB RAM",
        f"torch {m.get('torch')}",
        f"numpy {m.get('numpy')}",
        f"{m.get('torch_threads')} torch threads",
        f"Python {m.get('python')}",
        _load_text(m, r.get("load") or {}),
        _git_text(m),
    ]
    if m.get("cuda"):
        parts.insert(1, f"CUDA {m['cuda']}")
    return ", ".join(parts)


def _section(r: dict[str, Any]) -> list[str]:
    m = r["machine"]
    lines = [f"## {r['title']} — {m.get('device_name')}", ""]
    if r.get("quick"):
        lines += ["> **Quick smoke run** (tiny sizes): not a measurement.", ""]
    if r.get("status", "ok") != "ok":
        lines += [f"> Status: {_md_cell(str(r['status']))}", ""]
    lines += [
        f"- Command: `{r.get('command')}` ({r.get('created')}, file `{r['_file']}`)",
        f"- Machine: {_machine_line(m, r)}",
        "",
    ]
    if r.get("targets"):
        lines += ["| target | value | threshold | result |", "|---|---:|---:|---|"]
        for t in r["targets"]:
            fmt = t.get("fmt", "g")
            value, threshold = format_value(t["value"], fmt), format_value(t["threshold"], fmt)
            note = f" ({t['note']})" if t.get("note") else ""
            lines.append(
                f"| {_md_cell(t['name'])}{_md_cell(note)} | {value} | {t['op']} {threshold} | "
                f"{_verdict(t['passed'])} |"
            )
        lines.append("")
    for tab in r.get("tables", []):
        lines += _table(tab)
    if r.get("checks"):
        lines += ["Checks:", ""]
        for c in r["checks"]:
            value = "" if c.get("value") in (None, [], "") else f" ({_md_cell(str(c['value']))[:200]})"
            lines.append(f"- {'ok' if c['ok'] else '**FAILED**'}: {_md_cell(c['name'])}{value}")
        lines.append("")
    if r.get("notes"):
        lines += ["Notes:", ""] + [f"- {_md_cell(str(n))}" for n in r["notes"]] + [""]
    return lines


def render_report(results: list[dict[str, Any]]) -> str:
    """The Markdown of ``BENCHMARKS.md`` for the given results."""
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m bench report` from `bench/results/*.json` ({now}); do not edit by hand. "
        "How to rerun: `bench/README.md`. Times are medians over repeated runs (IQR beside them); ratios are "
        "side by side against the reference named in each column.",
        "",
    ]
    if not results:
        return "\n".join([*lines, "No results yet: run `python -m bench`.", ""])
    lines += [
        "## Summary",
        "",
        "| benchmark | device | target | value | threshold | result |",
        "|---|---|---|---:|---:|---|",
    ]
    for r in results:
        dev = r["machine"].get("device_name", "")
        tag = (
            " (quick)" if r.get("quick") else (" (busy machine)" if (r.get("load") or {}).get("busy") else "")
        )
        if not r.get("targets"):
            lines.append(
                f"| {r['benchmark']}{tag} | {_md_cell(dev)} | – | – | – | {_md_cell(str(r.get('status')))} |"
            )
        for t in r.get("targets", []):
            fmt = t.get("fmt", "g")
            lines.append(
                f"| {r['benchmark']}{tag} | {_md_cell(dev)} | {_md_cell(t['name'])} | "
                f"{format_value(t['value'], fmt)} | {t['op']} {format_value(t['threshold'], fmt)} | "
                f"{_verdict(t['passed'])} |"
            )
    lines.append("")
    for r in results:
        lines += _section(r)
    return "\n".join(lines).rstrip() + "\n"


ANALYSIS = Path(__file__).with_name("analysis.md")


def write_report(results_dir: Path, output: Path, analysis: Path = ANALYSIS) -> Path:
    """Render the results in ``results_dir`` into ``output``; return ``output``.

    ``bench/analysis.md`` (written by people: what was profiled where a target was missed) is appended.
    """
    output = Path(output)
    text = render_report(load_results(results_dir))
    if analysis.is_file():
        text = text.rstrip("\n") + "\n\n" + analysis.read_text()
    output.write_text(text)
    return output
