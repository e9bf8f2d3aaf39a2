"""Streamlit app latency under ``streamlit.testing.v1.AppTest``: first chart, widget change, cached redraw.

Each repetition is a fresh Python process (cold imports, empty Streamlit caches) that runs ``app.py`` with
the default models and a 256-image sample batch (query parameter ``n``), then:

1. ``start to first chart``: from launching the process to the end of the first ``AppTest.run()`` that
   shows a chart (AppTest has no partial renders, so this is the whole first page of the app; with
   ``--page`` the first run is followed by a switch to that page, counted in);
2. ``widget change``: the sidebar's ``Seed`` number input set to 1 (a new 256-image batch: new predictions
   and figures), ``run()``;
3. ``cached redraw``: ``run()`` again with nothing changed (every cached result is reused).

Targets on the CPU: 10 s, 1 s and 0.2 s. The app's ``Device`` is set from ``--device`` (``auto`` leaves it).
Imports streamlit only in the child process.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.common import REPO_ROOT, Options, check, column, launched_child, run_start, summary, table, target

NAME = "app_latency"
TITLE = "App latency (AppTest): first chart, widget change, cached redraw"

DEFAULTS: dict[str, Any] = {"repeats": 5, "n": 256, "page": None, "timeout": 300.0, "seed_widget": "seed"}
QUICK: dict[str, Any] = {"repeats": 1}
TARGETS: dict[str, float] = {"start_to_first_chart": 10.0, "widget_change": 1.0, "cached_redraw": 0.2}
LABELS: dict[str, str] = {
    "start_to_first_chart": "start to first chart",
    "widget_change": "widget change (seed)",
    "cached_redraw": "cached redraw",
}
APP = REPO_ROOT / "app.py"


def _messages(elements: Any) -> list[str]:
    return [str(getattr(e, "message", None) or getattr(e, "value", e))[:500] for e in elements]


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the three steps in this (fresh) process; return timings and what the app showed."""
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    from streamlit.testing.v1 import AppTest

    out: dict[str, Any] = {"errors": []}
    at = AppTest.from_file(str(APP), default_timeout=float(spec["timeout"]))
    at.query_params["n"] = str(spec["n"])
    if spec.get("device") and spec["device"] != "auto":
        at.query_params["device"] = spec["device"]
    t0 = time.perf_counter()
    at.run()
    if spec.get("page"):
        at.switch_page(spec["page"])
        at.run()
    out["first_run_s"] = time.perf_counter() - t0
    out["first_chart_wall"] = time.time()
    out["charts"] = len(at.get("plotly_chart"))

    def problems(step: str) -> list[str]:
        found = [f"{step}: exception: {m}" for m in _messages(at.exception)]
        found += [f"{step}: st.error: {m}" for m in _messages(at.error)]
        return found

    out["errors"] += problems("first run")
    if out["errors"]:
        return out
    try:
        widget = at.sidebar.number_input(key=spec["seed_widget"])
    except KeyError:
        out["errors"].append(f"no sidebar number_input with key {spec['seed_widget']!r}")
        return out
    t0 = time.perf_counter()
    widget.set_value(int(widget.value) + 1).run()
    out["widget_change"] = time.perf_counter() - t0
    out["errors"] += problems("widget change")
    t0 = time.perf_counter()
    at.run()
    out["cached_redraw"] = time.perf_counter() - t0
    out["errors"] += problems("cached redraw")
    out["charts_after"] = len(at.get("plotly_chart"))
    return out


def _launch(spec: dict[str, Any]) -> dict[str, Any]:
    return launched_child("bench.app_latency", spec, spec["timeout"] * 3 + 60)


def run(opts: Options) -> dict[str, Any]:
    """Launch ``repeats`` fresh processes; return the result payload."""
    s, device, threads, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    try:
        import streamlit  # noqa: F401 - only whether it imports
    except ImportError as exc:
        result["status"] = f"unavailable: {exc} (the app needs requirements.txt)"
        result["targets"] = [
            target(f"{LABELS[k]} (median)", None, "<=", v, fmt="s") for k, v in TARGETS.items()
        ]
        return result
    spec = {
        "n": s["n"],
        "page": s["page"],
        "timeout": s["timeout"],
        "seed_widget": s["seed_widget"],
        "device": device.type if opts.device != "auto" else "auto",
        "threads": threads,
    }
    runs = [_launch(spec) for _ in range(s["repeats"])]
    errors = sorted({e for r in runs for e in r.get("errors", [])})
    result["runs"] = runs
    ok = [r for r in runs if not r.get("errors")]
    result["checks"].append(
        check("the app ran without exceptions or st.error in every repetition", not errors, errors[:5])
    )
    if ok:
        result["checks"].append(
            check(
                "the first page shows at least one chart",
                all(r["charts"] > 0 for r in ok),
                [r["charts"] for r in ok],
            )
        )
    if errors or not ok:
        result["status"] = "error: " + "; ".join(errors[:3])
        result["targets"] = [
            target(f"{LABELS[k]} (median)", None, "<=", v, note="app not runnable", fmt="s")
            for k, v in TARGETS.items()
        ]
        return result
    rows = []
    for key, limit in TARGETS.items():
        st = summary([r[key] for r in ok])
        rows.append(
            {
                "step": LABELS[key],
                "median": st["median"],
                "iqr": st["iqr"],
                "target": limit,
                "ratio": st["median"] / limit,
                "stats": st,
            }
        )
        result["targets"].append(target(f"{LABELS[key]} (median)", st["median"], "<=", limit, fmt="s"))
    page = s["page"] or "the start page (Overview)"
    result["tables"].append(
        table(
            "App latency",
            [
                column("step", "step", "str"),
                column("median", "median", "s"),
                column("iqr", "IQR", "s"),
                column("target", "target", "s"),
                column("ratio", "/ target", "ratio"),
            ],
            rows,
            note=(
                f"AppTest of app.py, {page}, default models, n = {s['n']} images, device {spec['device']}, "
                f"torch threads {threads}; {s['repeats']} fresh processes. 'start' = process launch (cold "
                "imports and caches)."
            ),
        )
    )
    return result


def main(argv: list[str]) -> int:
    """``python -m bench.app_latency --child '<json spec>'`` (used by :func:`run`)."""
    if len(argv) != 2 or argv[0] != "--child":
        print(
            "usage: python -m bench.app_latency --child '<json spec>' (use python -m bench app_latency)",
            file=sys.stderr,
        )
        return 2
    try:
        out = child(json.loads(argv[1]))
    except Exception as exc:  # report, do not hide: the parent records it
        out = {"errors": [f"{type(exc).__name__}: {exc}"]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
