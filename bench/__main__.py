"""Command line: ``python -m bench [NAME ...] [options]``; ``python -m bench report``.

Examples
--------
``python -m bench``                          every benchmark, then ``BENCHMARKS.md``
``python -m bench train_step cka``           two of them
``python -m bench --quick --out /tmp/b``     smoke run of all (tiny sizes, not a measurement)
``python -m bench cka --device cuda``        on a GPU (result ``bench/results/cka-cuda.json``)
``python -m bench report``                   render ``BENCHMARKS.md`` from ``bench/results/*.json``
``python -m bench cka_flat``                 the long flattened-map CKA comparison alone

A measurement is written only when the machine was quiet (1-minute load average <= ``--max-load``, 1.0, when
the benchmark started; see :func:`bench.common.busy_reason`); before each benchmark the command waits up to
``--settle`` seconds for the load to fall below the limit, and skips the benchmark if it does not.
``--allow-busy`` writes such results anyway, marked busy. Quick runs are exempt (not measurements).
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

from bench import BENCHMARKS, load_benchmark
from bench.common import (
    MAX_LOAD,
    RESULTS_DIR,
    BusyMachineError,
    Options,
    command_line,
    load_average_1m,
    write_result,
)

REPORT = "report"


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (common options, then settings that override a benchmark's defaults)."""
    p = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"benchmarks to run ({', '.join(BENCHMARKS)}) or '{REPORT}'; none: all, then the report",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run, not a measurement")
    p.add_argument("--device", default="auto", help="auto (cuda where available), cpu, cuda or cuda:N")
    p.add_argument(
        "--threads", type=int, default=2, help="torch.set_num_threads (default 2; 0: torch's default)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"folder for the result JSON files (default {RESULTS_DIR.relative_to(RESULTS_DIR.parents[1])})",
    )
    p.add_argument(
        "--results", type=Path, default=None, help="report: folder of result files (default --out)"
    )
    p.add_argument("--output", type=Path, default=None, help="report: Markdown file (default BENCHMARKS.md)")
    p.add_argument("--no-report", action="store_true", help="do not render BENCHMARKS.md after running all")
    p.add_argument(
        "--max-load",
        type=float,
        default=MAX_LOAD,
        help=f"highest 1-minute load average at which a measurement counts (default {MAX_LOAD:g})",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=180.0,
        help="seconds to wait before each benchmark for the load to fall to --max-load (default 180)",
    )
    p.add_argument(
        "--allow-busy",
        action="store_true",
        help="write results measured on a busy machine (marked busy in the result)",
    )
    g = p.add_argument_group("settings (each overrides the default of the benchmarks that have it)")
    g.add_argument("--repeats", type=int, help="timed repetitions")
    g.add_argument("--warmup", type=int, help="untimed warm-up calls")
    g.add_argument("--batch-size", type=int, help="batch size (train_step, extract, scaling)")
    g.add_argument("--n-images", type=int, help="images (cka)")
    g.add_argument(
        "--n-minibatch", type=int, help="images of the minibatch estimator (cka_flat; default 10000)"
    )
    g.add_argument("--n-full", type=int, help="images of the full-batch estimators (cka_flat; default 5000)")
    g.add_argument(
        "--minibatch", type=int, help="minibatch size of the streaming CKA (cka, cka_flat, scaling)"
    )
    g.add_argument("--sizes", type=_int_list, help="image counts, e.g. 1000,2000,5000,10000 (scaling)")
    g.add_argument(
        "--pool", choices=("avg", "max", "flatten", "none"), help="feature reduction (cka, scaling)"
    )
    g.add_argument("--images", choices=("auto", "cifar10", "digits"), help="image source (cka, scaling)")
    g.add_argument("--data-root", help="CIFAR data root (default $TFFD_DATA, else ../shared/data)")
    g.add_argument("--arch", help="model architecture (default resnet20)")
    g.add_argument("--teacher", help="teacher architecture (train_step; default resnet110)")
    g.add_argument(
        "--formats", type=_str_list, help="memory formats, e.g. channels_last,contiguous (train_step)"
    )
    g.add_argument(
        "--page", help="app page file to time, e.g. app_pages/cka.py (app_latency; default: start page)"
    )
    return p


_SETTING_KEYS = (
    "repeats",
    "warmup",
    "batch_size",
    "n_images",
    "n_minibatch",
    "n_full",
    "minibatch",
    "sizes",
    "pool",
    "images",
    "data_root",
    "arch",
    "teacher",
    "formats",
    "page",
)


def render_report(results: Path, output: Path) -> Path:
    """Render ``output`` from the result files in ``results`` (imported lazily)."""
    from bench.report import write_report

    return write_report(results, output)


def settled_load(max_load: float, wait_s: float, poll_s: float = 5.0) -> float | None:
    """Wait up to ``wait_s`` seconds for the 1-minute load average to fall to ``max_load``; return the last
    reading (None where the platform has no load average)."""
    deadline = time.monotonic() + max(0.0, wait_s)
    load = load_average_1m()
    announced = False
    while load is not None and load > max_load and time.monotonic() < deadline:
        if not announced:
            print(
                f"[bench] waiting up to {wait_s:.0f} s for the "
                f"1-minute load ({load:.2f}) to fall to {max_load:g}",
                file=sys.stderr,
                flush=True,
            )
            announced = True
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        load = load_average_1m()
    return load


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks named in ``argv``; return the exit status (1 if any failed)."""
    args = build_parser().parse_args(argv)
    names = list(args.names)
    unknown = [n for n in names if n != REPORT and n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s) {unknown}; choose from {list(BENCHMARKS)} or '{REPORT}'", file=sys.stderr
        )
        return 2
    run_all = not names
    to_run = list(BENCHMARKS) if run_all else [n for n in names if n != REPORT]
    out = args.out or RESULTS_DIR
    overrides = {k: getattr(args, k) for k in _SETTING_KEYS if getattr(args, k) is not None}
    opts = Options(
        quick=args.quick,
        device=args.device,
        threads=args.threads or None,
        out=out,
        overrides=overrides,
        command=command_line() if argv is None else "python -m bench " + " ".join(argv),
        max_load=args.max_load,
        allow_busy=args.allow_busy,
    )
    failed: list[str] = []
    for name in to_run:
        if not (args.quick or args.allow_busy):
            load = settled_load(args.max_load, args.settle)
            if load is not None and load > args.max_load:
                print(
                    f"[bench] {name}: not started, the 1-minute load average "
                    f"is {load:.2f} (> {args.max_load:g}) after waiting "
                    f"{args.settle:.0f} s; pause the other work or pass --allow-busy",
                    file=sys.stderr,
                    flush=True,
                )
                failed.append(name)
                continue
        t0 = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        try:
            result = load_benchmark(name).run(opts)
        except Exception:  # one broken benchmark must not stop the others
            traceback.print_exc()
            failed.append(name)
            continue
        try:
            path = write_result(result, out, max_load=args.max_load, allow_busy=args.allow_busy)
        except BusyMachineError as exc:
            print(f"[bench] {exc}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        status = result.get("status", "ok")
        targets = ", ".join(
            f"{t['name']}: {'PASS' if t['passed'] else 'MISS' if t['passed'] is False else 'n/a'}"
            for t in result["targets"]
        )
        bad = [c["name"] for c in result["checks"] if not c["ok"]]
        print(
            f"[bench] {name}: {status}, {time.perf_counter() - t0:.1f} s -> {path}"
            + (f"\n        targets: {targets}" if targets else "")
            + (f"\n        FAILED CHECKS: {bad}" if bad else ""),
            file=sys.stderr,
            flush=True,
        )
        if bad:
            failed.append(name)
    if REPORT in names or (run_all and not args.no_report and not args.quick):
        path = render_report(
            args.results or out, args.output or Path(RESULTS_DIR.parents[1] / "BENCHMARKS.md")
        )
        print(f"[bench] report -> {path}", file=sys.stderr)
    if failed:
        print(f"[bench] failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
