"""Profile the baseline and Tf-FD training steps with ``torch.profiler`` and print the top ops.

For when the ``train_step`` target is missed: the same setup as :mod:`bench.train_step` (same models,
batch, memory format and :func:`tffd_viz.train.train_step`), a few warm-up steps, then ``--steps``
profiled steps per variant. Prints each variant's top ops by self time and the ops whose self time
grows most from the baseline to Tf-FD (where the extra cost goes).

    python -m bench.profile_step                      # cpu, channels_last, 2 threads
    python -m bench.profile_step --device cuda --format contiguous --trace /tmp/traces
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from bench.common import configure_threads, device_label, resolve_device, sync
from bench.train_step import DEFAULTS, FORMATS, VARIANTS, build_steps, transplanted_teacher


def _self_times(prof: Any, device: torch.device) -> dict[str, float]:
    """Op name -> self time per profiled run in microseconds (device time on a GPU, CPU time otherwise)."""
    attr = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return {evt.key: float(getattr(evt, attr, 0.0)) for evt in prof.key_averages()}


def profile_variant(
    step: Any, device: torch.device, steps: int, warmup: int, trace: Path | None, name: str
) -> tuple[Any, float]:
    """Warm up, then profile ``steps`` calls of ``step``; return the profiler and the wall time per step."""
    import time

    for _ in range(warmup):
        step()
    sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, record_shapes=False) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        per_step = (time.perf_counter() - t0) / steps
    if trace is not None:
        trace.mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace / f"{name}.json"))
    return prof, per_step


def main(argv: list[str] | None = None) -> int:
    """Parse the options, profile, print."""
    p = argparse.ArgumentParser(
        prog="python -m bench.profile_step",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--format", choices=list(FORMATS), default="channels_last")
    p.add_argument("--variants", default="baseline,tffd", help=f"comma-separated, from {list(VARIANTS)}")
    p.add_argument("--arch", default=DEFAULTS["arch"])
    p.add_argument("--teacher", default=DEFAULTS["teacher"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--row-limit", type=int, default=20)
    p.add_argument("--trace", type=Path, default=None, help="folder for chrome traces (<variant>.json)")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    device = resolve_device(args.device)
    threads = configure_threads(args.threads if device.type == "cpu" else None)
    s = dict(DEFAULTS, arch=args.arch, teacher=args.teacher, batch_size=args.batch_size)
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["batch_size"], 3, 32, 32, generator=gen).to(device)
    labels = torch.randint(0, s["num_classes"], (s["batch_size"],), generator=gen).to(device)
    teacher, _ = transplanted_teacher(s["teacher"], s["teacher_weights"], s["num_classes"])
    steps, _ = build_steps(s, device, args.format, x, labels, teacher)
    print(
        f"{device_label(device)}, torch {torch.__version__}, {threads} threads, {args.arch} batch "
        f"{args.batch_size}, {args.format}; {args.steps} profiled steps after {args.warmup} warm-ups"
    )

    sort_by = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    times: dict[str, dict[str, float]] = {}
    wall: dict[str, float] = {}
    for v in variants:
        prof, wall[v] = profile_variant(steps[v], device, args.steps, args.warmup, args.trace, v)
        times[v] = _self_times(prof, device)
        print(f"\n=== {v}: {wall[v] * 1e3:.2f} ms per step (wall, under the profiler) ===")
        print(prof.key_averages().table(sort_by=sort_by, row_limit=args.row_limit))
    if len(variants) >= 2:
        ref, other = variants[0], variants[-1]
        keys = set(times[ref]) | set(times[other])
        deltas = sorted(((times[other].get(k, 0.0) - times[ref].get(k, 0.0), k) for k in keys), reverse=True)
        print(f"\n=== ops whose self time grows most from {ref} to {other} (us over {args.steps} steps) ===")
        for delta, key in deltas[: args.row_limit]:
            print(
                f"{delta:12.0f}  {key}  ({times[ref].get(key, 0.0):.0f} -> {times[other].get(key, 0.0):.0f})"
            )
        print(f"\nwall per step: {other} / {ref} = {wall[other] / wall[ref]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
