"""Shared machinery of the benchmarks: options, machine description, timing, peak memory, result files.

Every benchmark module exposes ``NAME``, ``TITLE``, ``DEFAULTS`` and ``QUICK`` (setting dicts) and
``run(opts: Options) -> dict``; the dict it returns is the result payload (:func:`new_result` builds its
skeleton) and :func:`write_result` stores it as ``<out>/<name>.json`` (``<name>-cuda.json`` on a GPU).

Measurement rules used throughout:

* times are wall-clock ``time.perf_counter`` around one call, with ``torch.cuda.synchronize`` before and
  after on a GPU; variants are timed alternately (round robin) after warm-up calls, and reported as the
  median with the inter-quartile range (q1, q3 by linear interpolation) of the samples;
* peak memory is measured on a separate (untimed) call: on the CPU as the peak resident set size above
  the resident set size just before the call (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``;
  where that reset is refused, a 1 ms sampling thread reading ``/proc/self/statm``), after ``gc.collect``
  and glibc ``malloc_trim(0)`` so memory freed by earlier calls is not silently reused; on a GPU as
  ``torch.cuda.max_memory_allocated`` above the allocation before the call. ``tracemalloc`` is not used:
  it does not see torch's allocations.

Load guard: every result records the 1-minute load average (``os.getloadavg``) when its benchmark started and
when it was written, and the git commit with whether the tree was dirty. :func:`write_result` refuses a
measurement (not a quick smoke run) that started above a 1-minute load of :data:`MAX_LOAD` (1.0), or whose
load when written exceeds the benchmark's own share (its torch threads, at least the usable cores) plus
:data:`MAX_LOAD` (something else started during the run), unless told to (``allow_busy``; the result then says
so). ``python -m bench`` waits for the load to settle below the limit before each benchmark (the previous
one's own load decays with the 1-minute average's time constant) and does not start one while it stays above.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime as _dt
import gc
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from tffd_viz.devices import resolved_device
from tffd_viz.errors import TffdVizError

__all__ = [
    "MAX_LOAD",
    "REPO_ROOT",
    "RESULTS_DIR",
    "BusyMachineError",
    "MemoryProbe",
    "Options",
    "RunStart",
    "alternate",
    "busy_reason",
    "check",
    "column",
    "command_line",
    "configure_threads",
    "default_data_root",
    "git_state",
    "launched_child",
    "load_average_1m",
    "machine_info",
    "measured_call",
    "new_result",
    "peak_memory",
    "resolve_device",
    "result_path",
    "run_start",
    "settings_for",
    "summary",
    "sync",
    "table",
    "target",
    "time_call",
    "write_result",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "bench" / "results"
DEVICE_CHOICES = ("auto", "cpu", "cuda")
MAX_LOAD = 1.0
"""Highest 1-minute load average at which a measurement may start (``--max-load`` changes it)."""


class BusyMachineError(RuntimeError):
    """A measurement taken on a busy machine, refused by :func:`write_result`."""


# --------------------------------------------------------------------------------------------------
# options and settings
# --------------------------------------------------------------------------------------------------


@dataclass
class Options:
    """Options shared by every benchmark.

    Attributes
    ----------
    quick : bool
        Tiny sizes (smoke runs and tests); results are flagged ``"quick": true`` and are not measurements.
    device : {"auto", "cpu", "cuda"} or "cuda:N"
        ``auto``: cuda where available, else cpu.
    threads : int or None
        ``torch.set_num_threads`` for the run (None: leave torch's default).
    out : Path
        Folder the result JSON goes to.
    overrides : dict
        Settings given on the command line (only keys a benchmark's ``DEFAULTS`` has are used).
    command : str
        The command line recorded in the result.
    max_load : float
        Highest 1-minute load average at which a measurement counts (see :func:`busy_reason`).
    allow_busy : bool
        Write results measured above ``max_load`` (recorded as such in the result).
    """

    quick: bool = False
    device: str = "auto"
    threads: int | None = 2
    out: Path = RESULTS_DIR
    overrides: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    max_load: float = MAX_LOAD
    allow_busy: bool = False


def settings_for(
    defaults: Mapping[str, Any], quick_values: Mapping[str, Any], opts: Options
) -> dict[str, Any]:
    """Return the settings of one benchmark: ``defaults`` <- ``quick_values`` (in quick mode) <- overrides.

    Overrides whose key is not among ``defaults`` (options of other benchmarks) are ignored.
    """
    values = dict(defaults)
    if opts.quick:
        values.update(quick_values)
    for key, value in opts.overrides.items():
        if key in values and value is not None:
            values[key] = value
    return values


def resolve_device(spec: str) -> torch.device:
    """Return the device of ``--device`` (:func:`tffd_viz.devices.resolved_device`, ``unavailable="raise"``).

    ``auto`` is CUDA where available, else the CPU; an explicit CUDA request on a machine without CUDA is an
    error, not a silent CPU run. The benchmarks measure the CPU and CUDA only (:data:`DEVICE_CHOICES`).

    Raises
    ------
    TffdVizError
        (a ``ValueError``) An unknown or unavailable device, or one the benchmarks do not measure.
    """
    device = resolved_device(spec, unavailable="raise").device
    if device.type not in ("cpu", "cuda"):
        raise TffdVizError(f"--device must be one of {DEVICE_CHOICES} (or cuda:N), got {spec!r}")
    return device


def configure_threads(threads: int | None) -> int:
    """Set ``torch.set_num_threads`` (benchmarks only; never library code) and return the count in force."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def default_data_root() -> str | None:
    """``$TFFD_DATA``, else ``../shared/data`` beside the checkout when it exists, else None."""
    env = os.environ.get("TFFD_DATA")
    if env:
        return env
    shared = REPO_ROOT.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None


def command_line() -> str:
    """The command that started this process, as typed (``python -m bench cka --quick``)."""
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv[0] = "python"
    return shlex.join(argv)


# --------------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, flags=re.MULTILINE)
    return found.group(1).strip() if found else (platform.processor() or platform.machine())


def git_state() -> dict[str, Any]:
    """The checkout the numbers come from: ``commit`` (full hash), ``dirty`` (tracked files changed),
    ``changed`` (``git status --porcelain`` lines, untracked files included, at most 50) and ``label``
    (short hash, ``+dirty`` when dirty); all None outside a git checkout."""
    none: dict[str, Any] = {"commit": None, "dirty": None, "changed": None, "label": None}
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        status = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return none
    if head.returncode != 0:
        return none
    lines = [ln for ln in status.stdout.splitlines() if ln.strip()]
    dirty = any(not ln.startswith("??") for ln in lines)
    commit = head.stdout.strip()
    return {
        "commit": commit,
        "dirty": dirty,
        "changed": lines[:50],
        "label": commit[:7] + ("+dirty" if dirty else ""),
    }


def launched_child(
    module: str, spec: Mapping[str, Any], timeout: float, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Run ``python -m <module> --child <spec as JSON>`` in a fresh process and return its last JSON line.

    The child prints one JSON object per line; ``start_to_first_chart`` is added when the child reports
    ``first_chart_wall`` (wall-clock seconds from this launch, interpreter start included). A failed child
    gives ``{"errors": ["child exited <code>: <end of its stderr>"]}``.
    """
    cmd = [sys.executable, "-m", module, "--child", json.dumps(dict(spec))]
    launched = time.time()
    proc = subprocess.run(
        cmd,
        cwd=REPO_ROOT,
        env=None if env is None else dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"errors": [f"child exited {proc.returncode}: {proc.stderr.strip()[-1500:]}"]}
    out = json.loads(lines[-1])
    if "first_chart_wall" in out:
        out["start_to_first_chart"] = out["first_chart_wall"] - launched
    return out


def load_average_1m() -> float | None:
    """The machine's 1-minute load average (``os.getloadavg()[0]``), None where the platform has none."""
    try:
        return round(float(os.getloadavg()[0]), 2)
    except (AttributeError, OSError):
        return None


def _memory_total_gib() -> float | None:
    try:
        text = Path("/proc/meminfo").read_text()
    except OSError:
        return None
    found = re.search(r"^MemTotal:\s+(\d+) kB", text, flags=re.MULTILINE)
    return round(int(found.group(1)) / 2**20, 1) if found else None


def machine_info(device: torch.device) -> dict[str, Any]:
    """Describe where the numbers come from: CPU model and cores, memory, versions, threads, GPU name."""
    import numpy as np

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    git = git_state()
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": usable,
        "memory_gib": _memory_total_gib(),
        "load_avg_1m": load_average_1m(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "device_name": device_label(device),
        "git": git["label"],
        "git_commit": git["commit"],
        "git_dirty": git["dirty"],
        "git_changed": git["changed"],
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def device_label(device: torch.device) -> str:
    """``torch.cuda.get_device_name`` on a GPU, else ``cpu (<model>)``."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({_cpu_model()})"


# --------------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], Any], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, synchronised on a GPU."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def alternate(
    fns: Mapping[str, Callable[[], Any]], device: torch.device, warmup: int, repeats: int
) -> dict[str, list[float]]:
    """Time every variant ``repeats`` times, round robin, after ``warmup`` untimed calls of each.

    Returns
    -------
    dict[str, list[float]]
        Variant name -> ``repeats`` seconds, in call order.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(device)
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(time_call(fn, device))
    return samples


def _quantile(sorted_values: list[float], q: float) -> float:
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summary(samples: Iterable[float]) -> dict[str, Any]:
    """Median, q1, q3, IQR, min, max and count of timing samples (seconds), plus the samples themselves.

    Raises
    ------
    ValueError
        For an empty sample list.
    """
    values = [float(v) for v in samples]
    if not values:
        raise ValueError("summary() needs at least one sample")
    ordered = sorted(values)
    q1, q3 = _quantile(ordered, 0.25), _quantile(ordered, 0.75)
    return {
        "median": statistics.median(values),
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(values),
        "samples": [round(v, 6) for v in values],
    }


# --------------------------------------------------------------------------------------------------
# peak memory
# --------------------------------------------------------------------------------------------------


def _status_kib(field_name: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field_name}:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(found.group(1)) if found else None


def _rss_bytes() -> int | None:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class MemoryProbe:
    """Context manager measuring the peak memory of its body (see the module docstring for the method).

    After the ``with`` block, ``probe.result`` holds ``{"peak_bytes", "method", "baseline_bytes"}``
    (``peak_bytes`` is the rise above the memory in use at entry; None where nothing could be read).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.result: dict[str, Any] = {}
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled_peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            rss = _rss_bytes() or 0
            self._sampled_peak = max(self._sampled_peak, rss)
            time.sleep(0.001)

    def __enter__(self) -> MemoryProbe:
        _trim_heap()
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = _rss_bytes() or 0
        self._hwm = _reset_hwm() and _status_kib("VmHWM") is not None
        if not self._hwm:
            self._sampled_peak = self._base
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
            self.result = {
                "peak_bytes": int(peak),
                "baseline_bytes": int(self._base),
                "method": "torch.cuda.max_memory_allocated above the allocation before the call",
            }
            return
        if self._hwm:
            hwm = (_status_kib("VmHWM") or 0) * 1024
            self.result = {
                "peak_bytes": max(0, hwm - self._base),
                "baseline_bytes": self._base,
                "method": "peak RSS (VmHWM, reset via /proc/self/clear_refs) above RSS before the call",
            }
            return
        self._stop.set()
        assert self._sampler is not None
        self._sampler.join()
        self.result = {
            "peak_bytes": max(0, self._sampled_peak - self._base),
            "baseline_bytes": self._base,
            "method": "peak RSS sampled every 1 ms (/proc/self/statm) above RSS before the call",
        }


def peak_memory(fn: Callable[[], Any], device: torch.device) -> tuple[Any, dict[str, Any]]:
    """Call ``fn`` once under a :class:`MemoryProbe`; return ``(fn's value, probe result)``."""
    with MemoryProbe(device) as probe:
        value = fn()
    return value, probe.result


# --------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------


def column(key: str, label: str, fmt: str = "g") -> dict[str, str]:
    """A table column: row key, header, and format (see :mod:`bench.report`'s ``FORMATS``)."""
    return {"key": key, "label": label, "fmt": fmt}


def table(
    title: str, columns: list[dict[str, str]], rows: list[dict[str, Any]], note: str = ""
) -> dict[str, Any]:
    """A table of a result: rendered by ``python -m bench report`` as one Markdown table."""
    return {"title": title, "columns": columns, "rows": rows, "note": note}


def target(
    name: str, value: float | None, op: str, threshold: float, note: str = "", fmt: str = "ratio"
) -> dict[str, Any]:
    """A target, ``value op threshold`` (``op``: ``<=``, ``>=``, ``<``, ``>``); ``passed`` None if no value.

    ``fmt`` is how the report formats value and threshold (a key of :data:`bench.report.FORMATS`).
    """
    ops: dict[str, Callable[[float, float], bool]] = {
        "<=": lambda a, b: a <= b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        ">": lambda a, b: a > b,
    }
    if op not in ops:
        raise ValueError(f"target op must be one of {sorted(ops)}, got {op!r}")
    passed = None if value is None else bool(ops[op](float(value), float(threshold)))
    return {
        "name": name,
        "value": value,
        "op": op,
        "threshold": threshold,
        "passed": passed,
        "note": note,
        "fmt": fmt,
    }


def check(name: str, ok: bool, value: Any = None, note: str = "") -> dict[str, Any]:
    """An equality/sanity check recorded in a result (tests assert ``ok``)."""
    return {"name": name, "ok": bool(ok), "value": value, "note": note}


def new_result(
    name: str, title: str, opts: Options, device: torch.device, settings: Mapping[str, Any]
) -> dict[str, Any]:
    """The skeleton every benchmark fills: identity, machine, settings, and empty tables/targets/checks."""
    return {
        "benchmark": name,
        "title": title,
        "quick": bool(opts.quick),
        "status": "ok",
        "command": opts.command or command_line(),
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "machine": machine_info(device),
        "settings": dict(settings),
        "tables": [],
        "targets": [],
        "checks": [],
        "notes": [],
    }


class RunStart(NamedTuple):
    """What every benchmark's ``run`` starts from (see :func:`run_start`)."""

    settings: dict[str, Any]
    device: torch.device
    threads: int
    result: dict[str, Any]


def run_start(
    name: str, title: str, defaults: Mapping[str, Any], quick_values: Mapping[str, Any], opts: Options
) -> RunStart:
    """Return the settings, device, torch thread count and result skeleton of one benchmark run.

    In this order: :func:`settings_for`, :func:`resolve_device`, :func:`configure_threads` (sets the
    threads), then :func:`new_result` (so the machine description records the threads in force).
    """
    settings = settings_for(defaults, quick_values, opts)
    device = resolve_device(opts.device)
    threads = configure_threads(opts.threads)
    return RunStart(settings, device, threads, new_result(name, title, opts, device, settings))


def result_path(name: str, device: torch.device | str, out: Path) -> Path:
    """``<out>/<name>.json`` on the CPU, ``<out>/<name>-cuda.json`` on a GPU."""
    kind = torch.device(device).type
    return Path(out) / (f"{name}.json" if kind == "cpu" else f"{name}-{kind}.json")


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value


def busy_reason(
    result: Mapping[str, Any], max_load: float = MAX_LOAD, end_load: float | None = None
) -> str | None:
    """Why ``result`` counts as measured on a busy machine, or None.

    Busy: the 1-minute load average at the start (``machine.load_avg_1m``) was above ``max_load``, or the load
    when written (``end_load``) exceeds the benchmark's own share (its torch threads, at least the usable
    cores) plus ``max_load``. Quick (smoke) results are never busy: they are not measurements.
    """
    if result.get("quick"):
        return None
    machine = result["machine"]
    start = machine.get("load_avg_1m")
    if start is not None and start > max_load:
        return (
            f"the 1-minute load average was {start:.2f} when {result['benchmark']} started, above "
            f"{max_load:g}: other work was running"
        )
    own = max(int(machine.get("torch_threads") or 1), int(machine.get("cpu_usable") or 1))
    if end_load is not None and end_load > own + max_load:
        return (
            f"the 1-minute load average was {end_load:.2f} when {result['benchmark']} finished, above its "
            f"own share ({own}) + {max_load:g}: other work started during the run"
        )
    return None


def write_result(
    result: dict[str, Any],
    out: Path,
    max_load: float = MAX_LOAD,
    allow_busy: bool = False,
    end_load: float | None = None,
) -> Path:
    """Write ``result`` as indented JSON to :func:`result_path` and return the path.

    Records ``result["load"]``: the 1-minute load average at the start and now (``end_load``, default measured
    now), the limit, the verdict of :func:`busy_reason` and whether a busy result was allowed.

    Raises
    ------
    BusyMachineError
        When :func:`busy_reason` finds the measurement busy and ``allow_busy`` is False (nothing is written).
    """
    end = load_average_1m() if end_load is None else end_load
    reason = busy_reason(result, max_load, end)
    result["load"] = {
        "start_1m": result["machine"].get("load_avg_1m"),
        "end_1m": end,
        "max_1m": max_load,
        "busy": reason,
        "busy_allowed": bool(allow_busy and reason),
    }
    if reason and not allow_busy:
        raise BusyMachineError(
            f"not writing the {result['benchmark']} result: {reason}. Pause the other work "
            "(or pass --allow-busy to keep a result marked busy)"
        )
    path = result_path(result["benchmark"], result["machine"]["device"], out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_jsonable(result), indent=1) + "\n")
    tmp.replace(path)
    return path


def measured_call(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float, dict[str, Any]]:
    """One call of ``fn``: its value, its seconds (device synchronised before and after) and the
    :class:`MemoryProbe` result of the same call."""
    with MemoryProbe(device) as probe:
        sync(device)
        t0 = time.perf_counter()
        value = fn()
        sync(device)
        seconds = time.perf_counter() - t0
    return value, seconds, probe.result
