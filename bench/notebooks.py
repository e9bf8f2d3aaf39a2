"""Wall-clock time of each teaching notebook run top to bottom in QUICK mode (``TFFD_QUICK=1``) on the CPU.

The figure ``tests/test_notebooks.py`` used to assert (90 s per notebook): the test now checks that each
notebook runs and what it prints; the time is measured here. Each notebook is executed with ``nbclient`` in a
fresh kernel of this interpreter (a kernelspec installed into a temporary prefix, as the test does), one
thread per kernel (``OMP_NUM_THREADS=1``); the time includes the kernel's start and its imports, what a reader
waits for. Notebooks are timed alternately (round robin), ``repeats`` runs each, reported as median and IQR.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Options, column, run_start, summary, table, target

NAME = "notebooks"
TITLE = "Teaching notebooks, top to bottom in QUICK mode"

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS: tuple[str, ...] = (
    "01_tffd_in_ten_minutes.ipynb",
    "02_baseline_vs_tffd.ipynb",
    "03_choosing_layers_and_lambdas.ipynb",
)
#: A reader trying a notebook in QUICK mode should see it finish within this many seconds on a 2-core CPU.
BUDGET_S = 90.0
KERNEL = "tffd-viz-bench-python3"

DEFAULTS: dict[str, Any] = {"notebooks": list(NOTEBOOKS), "repeats": 3}
QUICK: dict[str, Any] = {"notebooks": list(NOTEBOOKS[:1]), "repeats": 1}


@contextmanager
def _quick_kernel() -> Iterator[str]:
    """Install a kernelspec running this interpreter into a temporary prefix; yield its name while the
    environment finds it (``JUPYTER_PATH``) and sets QUICK mode and one thread; restore it after."""
    from ipykernel.kernelspec import install

    env = {"TFFD_QUICK": "1", "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="tffd-bench-jupyter-") as prefix:
        install(kernel_name=KERNEL, prefix=prefix, display_name="tffd-viz bench")
        spec = json.loads(
            (Path(prefix) / "share" / "jupyter" / "kernels" / KERNEL / "kernel.json").read_text()
        )
        if spec["argv"][0] != sys.executable:
            raise RuntimeError(
                f"the kernelspec runs {spec['argv'][0]}, not this interpreter {sys.executable}"
            )
        env["JUPYTER_PATH"] = str(Path(prefix) / "share" / "jupyter")
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            yield KERNEL
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _seconds_to_run(name: str, kernel: str) -> float:
    """Execute notebook ``name`` top to bottom in a fresh kernel; return the wall-clock seconds."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    client = NotebookClient(
        nb,
        kernel_name=kernel,
        timeout=600,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    return time.perf_counter() - start


def run(opts: Options) -> dict[str, Any]:
    """Measure; return the result payload (see :mod:`bench.common`)."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    if device.type != "cpu":
        result["notes"].append(f"the notebooks choose their own device; --device {device} is not used")
    samples: dict[str, list[float]] = {name: [] for name in s["notebooks"]}
    with _quick_kernel() as kernel:
        for _ in range(s["repeats"]):
            for name in s["notebooks"]:
                samples[name].append(_seconds_to_run(name, kernel))
    rows = []
    for name, values in samples.items():
        st = summary(values)
        rows.append({"notebook": name, "median": st["median"], "iqr": st["iqr"], "runs": len(values)})
        result["targets"].append(
            target(f"{name} in QUICK mode (median)", st["median"], "<=", BUDGET_S, fmt="s")
        )
    result["tables"].append(
        table(
            "Seconds per notebook, top to bottom",
            [
                column("notebook", "notebook", "str"),
                column("median", "median", "s"),
                column("iqr", "IQR", "s"),
                column("runs", "runs", "int"),
            ],
            rows,
            note=(
                f"nbclient in a fresh kernel of this interpreter per run (start and imports included), "
                f"TFFD_QUICK=1, OMP_NUM_THREADS=1; median of {s['repeats']} alternating runs per notebook."
            ),
        )
    )
    return result
