"""Layer x layer CKA heatmap of two models: this project vs ``pytorch-cka`` and ``ckatorch``.

Both models' default taps (``resnet20``: ``layer1..3``, so a 3 x 3 heatmap) are extracted once over
``n_images`` images (CIFAR-10 test images where the data is present, else augmented digits; the result
says which), reduced by ``pool`` (default: global average, so the ``n x n`` full-batch forms stay
affordable at 10,000 images) and converted to float64. Every implementation then gets these identical
features, and implementations are compared only with those computing the same estimator:

``minibatch``   unbiased HSIC_1 on each minibatch of ``minibatch`` consecutive samples, summed over
                minibatches, then normalised (Nguyen, Raghu and Kornblith 2021):
                :class:`tffd_viz.similarity.MinibatchCKA`; pytorch-cka's per-minibatch accumulation
                (``cka.hsic.hsic`` + ``CKA._compute_cka_matrix``, the inner loop of its ``CKA`` class,
                which itself runs the models and accumulates in float32); ckatorch's ``cka_batch`` on the
                minibatches stacked ``(batches, m, d)`` (its ``CKA`` class overwrites the value with each
                batch, so only the last batch of an epoch counts: not comparable, not run).
``full_biased``   biased HSIC on all ``n`` samples (Kornblith et al. 2019):
                  :func:`tffd_viz.similarity.linear_cka` vs ckatorch ``cka_base(unbiased=False)``;
                  pytorch-cka has no biased estimator.
``full_unbiased`` unbiased HSIC_1 on all ``n`` samples: ``linear_cka(debiased=True)`` vs pytorch-cka
                  ``cka_from_features`` (clamped to [0, 1]) and ckatorch ``cka_base(unbiased=True)``.

Reported per implementation: median time of the whole heatmap, IQR, peak memory of one (untimed) call,
largest absolute difference from this project's heatmap, and whether that is ``<= 1e-4``. The target:
in each estimator group, this project is faster than the fastest competitor whose results are equal.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bench.common import (
    Options,
    alternate,
    check,
    column,
    configure_threads,
    default_data_root,
    new_result,
    peak_memory,
    resolve_device,
    settings_for,
    summary,
    table,
    target,
    time_call,
)
from bench.inputs import benchmark_images, model_pair
from tffd_viz.features import extract_pair
from tffd_viz.similarity import MinibatchCKA, linear_cka

NAME = "cka"
TITLE = "CKA heatmap: tffd_viz vs pytorch-cka vs ckatorch"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "n_images": 10000,
    "minibatch": 250,
    "pool": "avg",
    "images": "auto",
    "data_root": None,
    "repeats": 3,
    "warmup": 1,
    "batch_size": 500,
    "tolerance": 1e-4,
}
QUICK: dict[str, Any] = {
    "arch": "resnet8",
    "n_images": 256,
    "minibatch": 64,
    "images": "digits",
    "repeats": 2,
    "batch_size": 128,
}

OURS = "tffd_viz"
PACKAGES: dict[str, str] = {"pytorch-cka": "cka", "ckatorch": "ckatorch"}  # PyPI name -> import name
GROUPS: dict[str, str] = {
    "minibatch": "unbiased HSIC_1 per minibatch, summed over minibatches (Nguyen et al. 2021)",
    "full_biased": "biased HSIC on all n samples (Kornblith et al. 2019)",
    "full_unbiased": "unbiased HSIC_1 on all n samples (Song et al. 2012)",
}
POOL_NAMES: dict[str, str | None] = {"avg": "avg", "max": "max", "flatten": None, "none": None}

Feats = list[Tensor]
Heatmap = Callable[[Feats, Feats, int], Tensor]


@dataclass
class Method:
    """One implementation of one estimator: group, package, how it is called, and its memory estimate."""

    group: str
    package: str
    call: str
    fn: Heatmap
    gram_matrices: int  # n x n float64 matrices alive at once (0: none), for the memory guard


# --------------------------------------------------------------------------------------------------
# this project
# --------------------------------------------------------------------------------------------------


def _ours_minibatch(a: Feats, b: Feats, m: int) -> Tensor:
    mb = MinibatchCKA(len(a), len(b))
    for start in range(0, a[0].shape[0], m):
        sl = slice(start, start + m)
        mb.update([f[sl] for f in a], [f[sl] for f in b])
    return mb.compute()


def _ours_full(debiased: bool) -> Heatmap:
    def heatmap(a: Feats, b: Feats, m: int) -> Tensor:
        return torch.tensor(
            [[linear_cka(x, y, debiased=debiased) for y in b] for x in a], dtype=torch.float64
        )

    return heatmap


# --------------------------------------------------------------------------------------------------
# pytorch-cka (import name "cka") and ckatorch, imported when called
# --------------------------------------------------------------------------------------------------


def _pytorch_cka_minibatch(a: Feats, b: Feats, m: int) -> Tensor:
    from cka.cka import CKA
    from cka.hsic import hsic

    xy = torch.zeros(len(a), len(b), dtype=torch.float64, device=a[0].device)
    xx = torch.zeros(len(a), dtype=torch.float64, device=a[0].device)
    yy = torch.zeros(len(b), dtype=torch.float64, device=a[0].device)
    for start in range(0, a[0].shape[0], m):
        sl = slice(start, start + m)
        ga = torch.stack([f[sl] @ f[sl].T for f in a])
        gb = torch.stack([f[sl] @ f[sl].T for f in b])
        cross, self_a, self_b = hsic(ga, gb)
        xy += cross
        xx += self_a
        yy += self_b
    return CKA._compute_cka_matrix(None, xy, xx, yy)  # type: ignore[arg-type]  # uses no instance state


def _pytorch_cka_full(a: Feats, b: Feats, m: int) -> Tensor:
    from cka import cka_from_features

    return cka_from_features(list(a), list(b))


def _ckatorch_minibatch(a: Feats, b: Feats, m: int) -> Tensor:
    from ckatorch import cka_batch

    n = a[0].shape[0]
    stacked_a = [f.reshape(n // m, m, -1) for f in a]
    stacked_b = [f.reshape(n // m, m, -1) for f in b]
    return torch.stack([torch.stack([cka_batch(x, y) for y in stacked_b]) for x in stacked_a])


def _ckatorch_full(unbiased: bool) -> Heatmap:
    def heatmap(a: Feats, b: Feats, m: int) -> Tensor:
        from ckatorch import cka_base

        return torch.stack([torch.stack([cka_base(x, y, unbiased=unbiased) for y in b]) for x in a])

    return heatmap


METHODS: dict[str, Method] = {
    "tffd_viz MinibatchCKA": Method(
        "minibatch", OURS, "MinibatchCKA(3, 3).update(...) per minibatch; .compute()", _ours_minibatch, 0
    ),
    "pytorch-cka hsic per minibatch": Method(
        "minibatch",
        "pytorch-cka",
        "cka.hsic.hsic(grams_a, grams_b) per minibatch, summed; CKA._compute_cka_matrix",
        _pytorch_cka_minibatch,
        0,
    ),
    "ckatorch cka_batch": Method(
        "minibatch", "ckatorch", "ckatorch.cka_batch(x (B, m, d), y) per layer pair", _ckatorch_minibatch, 0
    ),
    "tffd_viz linear_cka": Method(
        "full_biased", OURS, "linear_cka(x, y) per layer pair", _ours_full(False), 0
    ),
    "ckatorch cka_base": Method(
        "full_biased",
        "ckatorch",
        "ckatorch.cka_base(x, y, unbiased=False) per pair",
        _ckatorch_full(False),
        6,
    ),
    "tffd_viz linear_cka debiased": Method(
        "full_unbiased", OURS, "linear_cka(x, y, debiased=True) per layer pair", _ours_full(True), 0
    ),
    "pytorch-cka cka_from_features": Method(
        "full_unbiased",
        "pytorch-cka",
        "cka.cka_from_features([a1, a2, a3], [b1, b2, b3]) (one call)",
        _pytorch_cka_full,
        -1,
    ),
    "ckatorch cka_base unbiased": Method(
        "full_unbiased",
        "ckatorch",
        "ckatorch.cka_base(x, y, unbiased=True) per pair",
        _ckatorch_full(True),
        6,
    ),
}


def package_versions() -> dict[str, str | None]:
    """Installed version of each comparison package (None when absent)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for dist in PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return versions


def _import_error(package: str) -> str | None:
    import importlib

    try:
        importlib.import_module(PACKAGES[package])
    except Exception as exc:  # an absent package or one of its imports (matplotlib, seaborn, yaml) failing
        return f"{type(exc).__name__}: {exc}"
    return None


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _needed_bytes(method: Method, n: int, n_layers: int) -> int:
    grams = (
        3 * n_layers if method.gram_matrices < 0 else method.gram_matrices
    )  # -1: a stack of grams per side
    return grams * n * n * 8


# --------------------------------------------------------------------------------------------------
# features and checks
# --------------------------------------------------------------------------------------------------


def heatmap_features(s: dict[str, Any], device: torch.device) -> tuple[Feats, Feats, list[str], str, float]:
    """Extract both models' taps over the benchmark images; return float64 ``(n, d)`` features on ``device``.

    Returns
    -------
    feats_a, feats_b : list of Tensor (n, d_i), float64
    taps : list of str
    source : str
        Where the images came from.
    seconds : float
        Time of the extraction (both models).
    """
    if s["pool"] not in POOL_NAMES:
        raise ValueError(f"pool must be one of {list(POOL_NAMES)}, got {s['pool']!r}")
    imgs = benchmark_images(s["images"], s["n_images"], s["data_root"] or default_data_root())
    model_a, model_b = model_pair(s["arch"], imgs.num_classes, imgs.images.shape[1], device)
    out: dict[str, Any] = {}

    def extract() -> None:
        out["pair"] = extract_pair(
            model_a,
            model_b,
            imgs.images,
            batch_size=s["batch_size"],
            pool=POOL_NAMES[s["pool"]],
            to_cpu=device.type == "cpu",
        )

    seconds = time_call(extract, device)
    fa, fb = out["pair"]
    feats_a = [f.to(device=device, dtype=torch.float64).reshape(f.shape[0], -1) for f in fa.values()]
    feats_b = [f.to(device=device, dtype=torch.float64).reshape(f.shape[0], -1) for f in fb.values()]
    return feats_a, feats_b, list(fa), imgs.source, seconds


def numpy_biased_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Plain restatement of biased linear CKA (feature-space form, Kornblith et al. 2019) in numpy float64."""
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    cross = np.linalg.norm(yc.T @ xc) ** 2
    return float(cross / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def run(opts: Options) -> dict[str, Any]:
    """Extract the features once, time every available implementation, compare their heatmaps."""
    s = settings_for(DEFAULTS, QUICK, opts)
    device = resolve_device(opts.device)
    configure_threads(opts.threads)
    if s["n_images"] % s["minibatch"] != 0:
        raise ValueError(
            f"n_images ({s['n_images']}) must be a multiple of minibatch ({s['minibatch']}): "
            "every implementation must see the same whole minibatches"
        )
    result = new_result(NAME, TITLE, opts, device, s)
    feats_a, feats_b, taps, source, extract_s = heatmap_features(s, device)
    n, m = feats_a[0].shape[0], s["minibatch"]
    result.update(
        {
            "images": source,
            "taps": taps,
            "feature_dims": [f.shape[1] for f in feats_a],
            "extract_seconds": extract_s,
            "packages": package_versions(),
        }
    )

    runnable: dict[str, Callable[[], Tensor]] = {}
    status: dict[str, str] = {}
    available = _available_bytes(device)
    for name, method in METHODS.items():
        error = None if method.package == OURS else _import_error(method.package)
        if error is not None:
            status[name] = f"unavailable ({error}); pip install -r bench/requirements.txt"
            continue
        need = _needed_bytes(method, n, len(taps))
        if available is not None and need > 0.8 * available:
            status[name] = (
                f"skipped: needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
            )
            continue
        runnable[name] = lambda fn=method.fn: fn(feats_a, feats_b, m)
        status[name] = "ok"

    values: dict[str, Tensor] = {}
    memory: dict[str, dict[str, Any]] = {}
    for name, fn in runnable.items():  # the memory call is the first warm-up call
        value, memory[name] = peak_memory(fn, device)
        values[name] = value.detach().to("cpu", torch.float64)
    samples = alternate(runnable, device, max(0, s["warmup"] - 1), s["repeats"])

    rows: list[dict[str, Any]] = []
    pooled = {"avg": "global-average-pooled", "max": "global-max-pooled"}.get(s["pool"], "flattened")
    where = f"{pooled} taps, d = {'/'.join(str(f.shape[1]) for f in feats_a)}, n = {n}"
    for group, estimator in GROUPS.items():
        names = [k for k, meth in METHODS.items() if meth.group == group]
        ours = next(k for k in names if METHODS[k].package == OURS)
        ours_t = summary(samples[ours])["median"]
        fastest_equal: tuple[str, float] | None = None
        for name in names:
            meth = METHODS[name]
            row: dict[str, Any] = {
                "group": group,
                "estimator": estimator,
                "implementation": name,
                "package": meth.package,
                "call": meth.call,
                "status": status[name],
            }
            if name in values:
                st = summary(samples[name])
                diff = float((values[name] - values[ours]).abs().max())
                equal = diff <= s["tolerance"]
                row.update(
                    {
                        "median": st["median"],
                        "iqr": st["iqr"],
                        "stats": st,
                        "peak_mib": memory[name]["peak_bytes"] / 2**20,
                        "memory_method": memory[name]["method"],
                        "max_abs_diff": diff,
                        "equal": equal,
                        "vs_ours": st["median"] / ours_t,
                        "heatmap": values[name].tolist(),
                    }
                )
                if meth.package != OURS:
                    result["checks"].append(
                        check(f"{name} equals {ours} within {s['tolerance']:g} ({group})", equal, diff)
                    )
                    if equal and (fastest_equal is None or st["median"] < fastest_equal[1]):
                        fastest_equal = (name, st["median"])
            rows.append(row)
        if fastest_equal is None:
            result["targets"].append(
                target(
                    f"{ours} ({group}, {where}) faster than the fastest equal competitor",
                    None,
                    "<",
                    1.0,
                    note="no competitor available or equal",
                )
            )
        else:
            result["targets"].append(
                target(
                    f"{ours} ({group}, {where}) time / fastest equal competitor ({fastest_equal[0]})",
                    ours_t / fastest_equal[1],
                    "<",
                    1.0,
                )
            )

    # independent restatement of one value, and the two estimators of this project side by side
    x, y = feats_a[-1].cpu().numpy(), feats_b[-1].cpu().numpy()
    plain = numpy_biased_cka(x, y)
    ours_full = float(values["tffd_viz linear_cka"][-1, -1])
    result["checks"].append(
        check(
            f"linear_cka({taps[-1]}, {taps[-1]}) = numpy restatement",
            abs(plain - ours_full) <= 1e-10,
            abs(plain - ours_full),
        )
    )
    mb_vs_full = float((values["tffd_viz MinibatchCKA"] - values["tffd_viz linear_cka debiased"]).abs().max())
    result["minibatch_vs_full_unbiased_max_abs_diff"] = mb_vs_full
    result["notes"] += [
        f"images: {source}; features: {s['pool']} of taps {taps} of two {s['arch']} models (random init, "
        f"seeds 0 and 1), dims {[f.shape[1] for f in feats_a]}, float64, n = {n}, minibatch m = {m}; "
        f"extraction {extract_s:.1f} s (not part of the comparison)",
        "ckatorch's CKA class (model-level) assigns cka_batch of each batch to the heatmap, so only the last "
        "batch of an epoch counts; it is not compared. pytorch-cka's CKA class accumulates HSIC in float32 "
        "from float32 model outputs; its accumulation is run here on the shared float64 features.",
        "pytorch-cka clamps CKA to [0, 1]; the minibatch and full-batch unbiased estimators differ by "
        f"{mb_vs_full:.2e} here (different estimators, not compared with each other).",
        f"peak memory: {next(iter(memory.values()))['method'] if memory else 'n/a'}",
    ]
    result["tables"].append(
        table(
            f"Layer x layer CKA ({len(taps)} x {len(taps)}), n = {n}",
            [
                column("group", "estimator", "str"),
                column("implementation", "implementation", "str"),
                column("median", "median", "s"),
                column("iqr", "IQR", "s"),
                column("vs_ours", "/ tffd_viz", "ratio"),
                column("peak_mib", "peak MiB", "mib"),
                column("max_abs_diff", "max |diff|", "e"),
                column("equal", f"<= {s['tolerance']:g}", "bool"),
                column("status", "status", "str"),
            ],
            rows,
            note="; ".join(f"{g}: {e}" for g, e in GROUPS.items()),
        )
    )
    if not math.isfinite(float(values["tffd_viz MinibatchCKA"].sum())):
        result["status"] = "error: non-finite CKA"
    return result
