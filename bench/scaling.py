"""Time and peak memory of feature extraction and of streaming CKA as the number of images grows.

For each size ``n`` (default 1k, 2k, 5k, 10k images; CIFAR-10 test images where present, else
augmented digits) and two ``resnet20`` models:

* ``extract (stored)``: :func:`tffd_viz.features.extract_pair` keeping every tap of both models for all
  ``n`` images (full maps by default, float32, on the CPU): memory grows with ``n``;
* ``CKA streaming``: both models' taps batch by batch (:func:`tffd_viz.features.iter_tap_batches`) fed
  straight into :class:`tffd_viz.similarity.MinibatchCKA` (minibatch = batch): nothing is stored, so the peak
  memory must stay flat in ``n``.

Time and peak memory are measured on the same calls (the memory probe reads the kernel's peak RSS, no
sampling, so it does not slow the call); after one untimed warm-up at the smallest size, each size is run
``repeats`` times. Target: the streaming CKA's peak memory at the largest size is at most 1.25 x its peak at
the smallest size. A check verifies that the streaming heatmap equals MinibatchCKA on the stored features.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.common import (
    Options,
    check,
    column,
    configure_threads,
    default_data_root,
    measured_call,
    new_result,
    resolve_device,
    settings_for,
    summary,
    table,
    target,
)
from bench.inputs import benchmark_images, model_pair
from tffd_viz.features import POOLS, extract_pair, iter_tap_batches
from tffd_viz.similarity import MinibatchCKA

NAME = "scaling"
TITLE = "Scaling with the number of images: extraction and streaming CKA"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "sizes": [1000, 2000, 5000, 10000],
    "batch_size": 256,
    "pool": "none",
    "images": "auto",
    "data_root": None,
    "repeats": 3,
}
QUICK: dict[str, Any] = {
    "arch": "resnet8",
    "sizes": [64, 128],
    "batch_size": 32,
    "images": "digits",
    "repeats": 1,
}
POOL_NAMES: dict[str, str | None] = {"none": None, "flatten": "flatten", "avg": "avg", "max": "max"}
FLAT_RATIO = 1.25


def streaming_cka(
    model_a: torch.nn.Module,
    model_b: torch.nn.Module,
    images: torch.Tensor,
    batch_size: int,
    pool: str | None,
) -> torch.Tensor:
    """CKA heatmap of the default taps, streamed: each batch's taps go into MinibatchCKA and are dropped."""
    reduce = POOLS[pool]
    mb: MinibatchCKA | None = None
    for (_, fa), (_, fb) in zip(
        iter_tap_batches(model_a, images, batch_size=batch_size),
        iter_tap_batches(model_b, images, batch_size=batch_size),
        strict=True,
    ):
        if mb is None:
            mb = MinibatchCKA(len(fa), len(fb))
        mb.update({k: reduce(v) for k, v in fa.items()}, {k: reduce(v) for k, v in fb.items()})
    assert mb is not None
    return mb.compute()


def stored_cka(
    feats_a: dict[str, torch.Tensor], feats_b: dict[str, torch.Tensor], batch_size: int
) -> torch.Tensor:
    """MinibatchCKA over stored features with the same consecutive minibatches as :func:`streaming_cka`."""
    mb = MinibatchCKA(len(feats_a), len(feats_b))
    n = next(iter(feats_a.values())).shape[0]
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        mb.update({k: v[sl] for k, v in feats_a.items()}, {k: v[sl] for k, v in feats_b.items()})
    return mb.compute()


def run(opts: Options) -> dict[str, Any]:
    """Run every size ``repeats`` times; return the result payload."""
    s = settings_for(DEFAULTS, QUICK, opts)
    device = resolve_device(opts.device)
    configure_threads(opts.threads)
    if s["pool"] not in POOL_NAMES:
        raise ValueError(f"pool must be one of {list(POOL_NAMES)}, got {s['pool']!r}")
    sizes = sorted(int(v) for v in s["sizes"])
    if sizes[0] < 4 or s["batch_size"] < 4:
        raise ValueError(f"sizes and batch_size must be >= 4 (HSIC_1), got {sizes} and {s['batch_size']}")
    result = new_result(NAME, TITLE, opts, device, s)
    imgs = benchmark_images(s["images"], sizes[-1], s["data_root"] or default_data_root())
    model_a, model_b = model_pair(s["arch"], imgs.num_classes, imgs.images.shape[1], device)
    pool, b = POOL_NAMES[s["pool"]], s["batch_size"]

    def extract(n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return extract_pair(model_a, model_b, imgs.images[:n], batch_size=b, pool=pool)

    def stream(n: int) -> torch.Tensor:
        return streaming_cka(model_a, model_b, imgs.images[:n], b, pool)

    # warm-up at the smallest size, and the check that streaming equals CKA of the stored features
    feats_a, feats_b = extract(sizes[0])
    streamed = stream(sizes[0])
    diff = float((streamed.cpu() - stored_cka(feats_a, feats_b, b).cpu()).abs().max())
    result["checks"].append(
        check(f"streaming CKA == MinibatchCKA of the stored features (n = {sizes[0]})", diff <= 1e-12, diff)
    )
    del feats_a, feats_b

    runs: dict[tuple[str, int], list[tuple[float, dict[str, Any]]]] = {}
    stored_bytes: dict[int, int] = {}
    for _ in range(s["repeats"]):
        for n in sizes:
            (fa, fb), seconds, mem = measured_call(lambda n=n: extract(n), device)
            stored_bytes[n] = sum(t.numel() * t.element_size() for t in [*fa.values(), *fb.values()])
            del fa, fb
            runs.setdefault(("extract (stored)", n), []).append((seconds, mem))
            _, seconds, mem = measured_call(lambda n=n: stream(n), device)
            runs.setdefault(("CKA streaming", n), []).append((seconds, mem))

    rows = []
    peaks: dict[str, dict[int, float]] = {}
    for (what, n), items in runs.items():
        st = summary([sec for sec, _ in items])
        peak = max(mem["peak_bytes"] for _, mem in items)
        peaks.setdefault(what, {})[n] = peak
        rows.append(
            {
                "what": what,
                "n": n,
                "median": st["median"],
                "iqr": st["iqr"],
                "stats": st,
                "images_per_s": n / st["median"],
                "peak_mib": peak / 2**20,
                "stored_mib": stored_bytes[n] / 2**20 if what.startswith("extract") else 0.0,
                "memory_method": items[0][1]["method"],
            }
        )
    rows.sort(key=lambda r: (r["what"] != "extract (stored)", r["n"]))
    stream_peaks = peaks["CKA streaming"]
    ratio = stream_peaks[sizes[-1]] / max(stream_peaks[sizes[0]], 1.0)
    result["targets"].append(
        target(
            f"CKA streaming peak memory at n={sizes[-1]} / at n={sizes[0]}",
            ratio,
            "<=",
            FLAT_RATIO,
            note="flat: independent of the number of images",
        )
    )
    result["images"] = imgs.source
    result["tables"].append(
        table(
            "Time and peak memory per size",
            [
                column("what", "what", "str"),
                column("n", "images", "int"),
                column("median", "median", "s"),
                column("iqr", "IQR", "s"),
                column("images_per_s", "images/s", "int"),
                column("peak_mib", "peak MiB", "mib"),
                column("stored_mib", "features stored MiB", "mib"),
            ],
            rows,
            note=(
                f"two {s['arch']} models (random init), images: {imgs.source}; pool {s['pool']}, batch = "
                f"minibatch {b}, on {device}; median of {s['repeats']} runs per size, peak = largest of the "
                f"runs ({rows[0]['memory_method']})."
            ),
        )
    )
    return result
