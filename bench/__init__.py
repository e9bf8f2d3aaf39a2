"""Benchmarks behind ``BENCHMARKS.md``.

``python -m bench`` runs every benchmark and renders ``BENCHMARKS.md``; ``python -m bench NAME ...`` runs
the named ones; ``python -m bench report`` renders ``BENCHMARKS.md`` from ``bench/results/*.json``.
See ``bench/README.md``.

Each benchmark is a module of this package (imported only when it runs, so the GPU ones never import
streamlit) with ``NAME``, ``TITLE``, ``DEFAULTS``, ``QUICK`` and ``run(opts) -> dict``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BENCHMARKS", "GPU_BENCHMARKS", "load_benchmark"]

#: Benchmark name -> module, in the order ``python -m bench`` runs them.
BENCHMARKS: dict[str, str] = {
    "train_step": "bench.train_step",
    "cka": "bench.cka",
    "cka_flat": "bench.cka_flat",
    "extract": "bench.extract",
    "scaling": "bench.scaling",
    "app_latency": "bench.app_latency",
    "whatif": "bench.whatif",
    "imagenet": "bench.imagenet",
    "notebooks": "bench.notebooks",
}

#: The benchmarks ``bench/gpu.sh`` runs on CUDA (they import only the library's core modules).
GPU_BENCHMARKS: tuple[str, ...] = ("train_step", "cka", "extract", "scaling")


def load_benchmark(name: str) -> ModuleType:
    """Import and return the module of benchmark ``name``.

    Raises
    ------
    KeyError
        For an unknown name, listing the known ones.
    """
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; choose from {list(BENCHMARKS)} (or 'report')")
    return importlib.import_module(BENCHMARKS[name])
