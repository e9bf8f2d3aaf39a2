"""CKA on flattened stage maps (what the CKA page computes): tffd_viz vs pytorch-cka vs ckatorch.

The ``cka`` benchmark compares implementations on globally average-pooled taps (d = 16/32/64), where
:func:`tffd_viz.similarity.linear_cka` takes its feature-space form (``d_x + d_y < n``): an algorithmic win
that says nothing about the maps a user of the CKA page compares. This one runs the page's case: the
flattened outputs of ``resnet20``'s three stages, d = 16,384 (``layer1``, 16 x 32 x 32), 8,192 (``layer2``)
and 4,096 (``layer3``), layer x layer A vs B (3 x 3), for two models (the shipped CIFAR-10 ``resnet20``
baseline and Tf-FD checkpoints when CIFAR-10 and the checkpoints are present, else two random-init models):

``minibatch``     unbiased HSIC_1 per minibatch of ``minibatch`` consecutive images, summed, over all
                  ``n_minibatch`` (10,000) CIFAR-10 test images;
``full_biased``   biased HSIC on the first ``n_full`` (5,000, the page's cap) images;
``full_unbiased`` unbiased HSIC_1 on the same ``n_full`` images.

Every implementation is run in two modes:

* **end to end**: from the images (extraction included) to the heatmap. tffd_viz: the app's own call,
  :func:`tffd_viz.similarity.layer_cka_matrices` (which also fills A vs A and B vs B; its A vs B block is
  compared); pytorch-cka's minibatch: its model-level ``compute_cka`` (its own hooks, float32 accumulation);
  every other peer has no usable model-level path (ckatorch's ``CKA`` class keeps only the last batch), so
  its end-to-end time is tffd_viz's extraction (:func:`tffd_viz.features.extract_pair`, ``pool="flatten"``,
  float32, stored for all images) plus its own function on those features, in one timed call;
* **shared features**: the same float64 features (extracted once, not timed) handed to every implementation.

Each call is timed and its peak memory measured on the same call (kernel peak RSS, no sampling; see
:mod:`bench.common`); ``repeats`` calls per row. Targets: per estimator group and mode, tffd_viz's time over
the fastest competitor whose heatmap equals tffd_viz's (shared-features) heatmap within ``tolerance``. These
runs take long on a CPU (tens of minutes): ``python -m bench cka_flat``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bench.cka import (
    OURS,
    _available_bytes,
    _ckatorch_full,
    _ckatorch_minibatch,
    _import_error,
    _ours_minibatch,
    _pytorch_cka_full,
    _pytorch_cka_minibatch,
    package_versions,
)
from bench.common import (
    REPO_ROOT,
    Options,
    check,
    column,
    default_data_root,
    measured_call,
    run_start,
    summary,
    table,
    target,
)
from bench.inputs import benchmark_images, model_pair
from tffd_viz.features import extract_pair
from tffd_viz.similarity import cka_from_grams, gram_linear, layer_cka_matrices

NAME = "cka_flat"
TITLE = "CKA on flattened stage maps: tffd_viz vs pytorch-cka vs ckatorch"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "models": "auto",
    "model_a": "checkpoints/cifar10_resnet20_baseline_s0.safetensors",
    "model_b": "checkpoints/cifar10_resnet20_tffd_s0.safetensors",
    "images": "auto",
    "data_root": None,
    "n_minibatch": 10000,
    "n_full": 5000,
    "minibatch": 250,
    "batch_size": 250,
    "repeats": 1,
    "tolerance": 1e-4,
    "groups": ["minibatch", "full_biased", "full_unbiased"],
}
QUICK: dict[str, Any] = {
    "arch": "resnet8",
    "models": "random",
    "images": "digits",
    "n_minibatch": 128,
    "n_full": 96,
    "minibatch": 32,
    "batch_size": 32,
}

GROUPS: dict[str, str] = {
    "minibatch": "unbiased HSIC_1 per minibatch, summed over minibatches (Nguyen et al. 2021)",
    "full_biased": "biased HSIC on all n samples (Kornblith et al. 2019)",
    "full_unbiased": "unbiased HSIC_1 on all n samples (Song et al. 2012)",
}
MODES: dict[str, str] = {
    "end_to_end": "end to end (extraction included)",
    "shared": "shared float64 features",
}

Feats = list[Tensor]


@dataclass
class Inputs:
    """What the calls run on: two models, the images, their taps and (shared mode) float64 features."""

    model_a: nn.Module
    model_b: nn.Module
    images: Tensor
    taps: list[str]
    batch_size: int
    minibatch: int
    to_cpu: bool
    feats_a: Feats | None = None
    feats_b: Feats | None = None


@dataclass
class Method:
    """One row: estimator group, package, mode, how it is called, ``fn(inputs) -> (3, 3) heatmap``, and the
    number of ``n x n`` float64 matrices it holds at once (for the memory guard; 0: none)."""

    group: str
    package: str
    mode: str
    call: str
    fn: Callable[[Inputs], Tensor]
    gram_matrices: int


# --------------------------------------------------------------------------------------------------
# end-to-end calls
# --------------------------------------------------------------------------------------------------


def _extracted(inp: Inputs) -> tuple[Feats, Feats]:
    """tffd_viz's extraction of both models' flattened taps (float32, all images stored)."""
    fa, fb = extract_pair(
        inp.model_a,
        inp.model_b,
        inp.images,
        taps_a=inp.taps,
        taps_b=inp.taps,
        batch_size=inp.batch_size,
        pool="flatten",
        to_cpu=inp.to_cpu,
    )
    return list(fa.values()), list(fb.values())


def _app_path(estimator: str, debiased: bool) -> Callable[[Inputs], Tensor]:
    def fn(inp: Inputs) -> Tensor:
        out = layer_cka_matrices(
            inp.model_a,
            inp.model_b,
            inp.images,
            taps_a=inp.taps,
            taps_b=inp.taps,
            debiased=debiased,
            batch_size=inp.minibatch if estimator == "minibatch" else inp.batch_size,
            estimator=estimator,
        )
        return torch.as_tensor(out["AvB"][0], dtype=torch.float64)

    return fn


def _pytorch_cka_model_level(inp: Inputs) -> Tensor:
    from cka import compute_cka
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(inp.images), batch_size=inp.minibatch, shuffle=False)
    device = next(inp.model_a.parameters()).device
    return compute_cka(
        inp.model_a,
        inp.model_b,
        loader,
        layers=inp.taps,
        model2_layers=inp.taps,
        device=device,
        progress=False,
    )[0]


def _after_extraction(fn: Callable[[Feats, Feats, int], Tensor]) -> Callable[[Inputs], Tensor]:
    def call(inp: Inputs) -> Tensor:
        a, b = _extracted(inp)
        return fn(a, b, inp.minibatch)

    return call


# --------------------------------------------------------------------------------------------------
# shared-feature calls
# --------------------------------------------------------------------------------------------------


def _shared(fn: Callable[[Feats, Feats, int], Tensor]) -> Callable[[Inputs], Tensor]:
    def call(inp: Inputs) -> Tensor:
        assert inp.feats_a is not None and inp.feats_b is not None
        return fn(inp.feats_a, inp.feats_b, inp.minibatch)

    return call


def _ours_grams(debiased: bool) -> Callable[[Feats, Feats, int], Tensor]:
    """tffd_viz on features: one ``gram_linear`` per layer, ``cka_from_grams`` per pair (6 grams, not 18)."""

    def heatmap(a: Feats, b: Feats, m: int) -> Tensor:
        ga, gb = [gram_linear(x) for x in a], [gram_linear(y) for y in b]
        return torch.tensor(
            [[cka_from_grams(x, y, debiased=debiased) for y in gb] for x in ga], dtype=torch.float64
        )

    return heatmap


METHODS: dict[str, Method] = {
    # minibatch, n = n_minibatch
    "tffd_viz layer_cka_matrices (app)": Method(
        "minibatch",
        OURS,
        "end_to_end",
        "layer_cka_matrices(a, b, images, estimator='minibatch', batch_size=m)",
        _app_path("minibatch", True),
        0,
    ),
    "pytorch-cka compute_cka": Method(
        "minibatch",
        "pytorch-cka",
        "end_to_end",
        "cka.compute_cka(a, b, DataLoader(images, batch_size=m), layers=taps) (its hooks, float32)",
        _pytorch_cka_model_level,
        0,
    ),
    "ckatorch cka_batch after extraction": Method(
        "minibatch",
        "ckatorch",
        "end_to_end",
        "tffd_viz extract_pair (float32, stored) + ckatorch.cka_batch((B, m, d), ...) per pair",
        _after_extraction(_ckatorch_minibatch),
        0,
    ),
    "tffd_viz MinibatchCKA": Method(
        "minibatch",
        OURS,
        "shared",
        "MinibatchCKA(3, 3).update(...) per minibatch; .compute()",
        _shared(_ours_minibatch),
        0,
    ),
    "pytorch-cka hsic per minibatch": Method(
        "minibatch",
        "pytorch-cka",
        "shared",
        "cka.hsic.hsic(grams_a, grams_b) per minibatch; CKA._compute_cka_matrix",
        _shared(_pytorch_cka_minibatch),
        0,
    ),
    "ckatorch cka_batch": Method(
        "minibatch",
        "ckatorch",
        "shared",
        "ckatorch.cka_batch(x (B, m, d), y) per pair",
        _shared(_ckatorch_minibatch),
        0,
    ),
    # full batch, biased, n = n_full
    "tffd_viz layer_cka_matrices full (app)": Method(
        "full_biased",
        OURS,
        "end_to_end",
        "layer_cka_matrices(a, b, images, estimator='full')",
        _app_path("full", False),
        12,
    ),
    "ckatorch cka_base after extraction": Method(
        "full_biased",
        "ckatorch",
        "end_to_end",
        "tffd_viz extract_pair (float32) + ckatorch.cka_base per pair",
        _after_extraction(_ckatorch_full(False)),
        6,
    ),
    "tffd_viz gram_linear + cka_from_grams": Method(
        "full_biased",
        OURS,
        "shared",
        "gram_linear per layer; cka_from_grams per pair",
        _shared(_ours_grams(False)),
        10,
    ),
    "ckatorch cka_base": Method(
        "full_biased",
        "ckatorch",
        "shared",
        "ckatorch.cka_base(x, y, unbiased=False) per pair",
        _shared(_ckatorch_full(False)),
        6,
    ),
    # full batch, unbiased, n = n_full
    "tffd_viz layer_cka_matrices full debiased (app)": Method(
        "full_unbiased",
        OURS,
        "end_to_end",
        "layer_cka_matrices(a, b, images, estimator='full', debiased=True)",
        _app_path("full", True),
        12,
    ),
    "pytorch-cka cka_from_features after extraction": Method(
        "full_unbiased",
        "pytorch-cka",
        "end_to_end",
        "tffd_viz extract_pair (float32) + cka.cka_from_features (float32 grams)",
        _after_extraction(_pytorch_cka_full),
        8,
    ),
    "ckatorch cka_base unbiased after extraction": Method(
        "full_unbiased",
        "ckatorch",
        "end_to_end",
        "tffd_viz extract_pair (float32) + ckatorch.cka_base(unbiased=True)",
        _after_extraction(_ckatorch_full(True)),
        6,
    ),
    "tffd_viz gram_linear + cka_from_grams debiased": Method(
        "full_unbiased",
        OURS,
        "shared",
        "gram_linear per layer; cka_from_grams(debiased=True) per pair",
        _shared(_ours_grams(True)),
        10,
    ),
    "pytorch-cka cka_from_features": Method(
        "full_unbiased",
        "pytorch-cka",
        "shared",
        "cka.cka_from_features([a1, a2, a3], [b1, b2, b3])",
        _shared(_pytorch_cka_full),
        8,
    ),
    "ckatorch cka_base unbiased": Method(
        "full_unbiased",
        "ckatorch",
        "shared",
        "ckatorch.cka_base(x, y, unbiased=True) per pair",
        _shared(_ckatorch_full(True)),
        6,
    ),
}


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


def benchmark_models(
    s: dict[str, Any], images_source: str, num_classes: int, in_chans: int, device: torch.device
) -> tuple[nn.Module, nn.Module, str]:
    """The two models (eval mode, on ``device``) and what they are.

    ``models``: ``"shipped"`` loads ``model_a`` and ``model_b`` (trained CIFAR-10 checkpoints); ``"random"``
    two seeded random-init ``arch``; ``"auto"`` the shipped ones when the images are CIFAR-10 and both files
    exist, else random.
    """
    from tffd_viz.checkpoints import load_checkpoint

    paths = [Path(p) if Path(p).is_absolute() else REPO_ROOT / p for p in (s["model_a"], s["model_b"])]
    shipped = s["models"] == "shipped" or (
        s["models"] == "auto" and images_source.startswith("CIFAR-10") and all(p.is_file() for p in paths)
    )
    if s["models"] not in ("auto", "shipped", "random"):
        raise ValueError(f"models must be one of auto, shipped, random; got {s['models']!r}")
    if shipped:
        a, card_a = load_checkpoint(paths[0], device=device)
        b, _ = load_checkpoint(paths[1], device=device)
        return (
            a.eval(),
            b.eval(),
            (f"shipped {card_a.get('arch')} checkpoints {s['model_a']} (A) and {s['model_b']} (B)"),
        )
    a, b = model_pair(s["arch"], num_classes, in_chans, device)
    return a, b, f"two random-init {s['arch']} (seeds 0 and 1, eval mode)"


def shared_features(inp: Inputs, n: int) -> tuple[Feats, Feats, float]:
    """Both models' flattened taps of the first ``n`` images as float64 ``(n, d)``, and the seconds taken."""
    t0 = time.perf_counter()
    fa, fb = extract_pair(
        inp.model_a,
        inp.model_b,
        inp.images[:n],
        taps_a=inp.taps,
        taps_b=inp.taps,
        batch_size=inp.batch_size,
        pool="flatten",
        to_cpu=inp.to_cpu,
    )
    feats_a = [f.to(torch.float64) for f in fa.values()]
    feats_b = [f.to(torch.float64) for f in fb.values()]
    return feats_a, feats_b, time.perf_counter() - t0


def _measured(fn: Callable[[], Tensor], device: torch.device) -> tuple[Tensor, float, int]:
    """One call: value (float64, CPU), seconds, peak bytes above the memory in use before it (same call)."""
    value, seconds, memory = measured_call(fn, device)
    return value.detach().to("cpu", torch.float64), seconds, int(memory["peak_bytes"])


def _needed_bytes(method: Method, n: int) -> int:
    return method.gram_matrices * n * n * 8


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def run(opts: Options) -> dict[str, Any]:
    """Time every available implementation in both modes at the page's sizes; compare their heatmaps."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    unknown = [g for g in s["groups"] if g not in GROUPS]
    if unknown:
        raise ValueError(f"unknown group(s) {unknown}; choose from {list(GROUPS)}")
    if s["n_minibatch"] % s["minibatch"] != 0:
        raise ValueError(
            f"n_minibatch ({s['n_minibatch']}) must be a multiple of minibatch ({s['minibatch']}): "
            "every implementation must see the same whole minibatches"
        )
    n_of = {"minibatch": s["n_minibatch"], "full_biased": s["n_full"], "full_unbiased": s["n_full"]}
    imgs = benchmark_images(
        s["images"], max(n_of[g] for g in s["groups"]), s["data_root"] or default_data_root()
    )
    model_a, model_b, models_text = benchmark_models(
        s, imgs.source, imgs.num_classes, imgs.images.shape[1], device
    )
    taps = ["layer1", "layer2", "layer3"]
    probe = extract_pair(model_a, model_b, imgs.images[:4], taps_a=taps, taps_b=taps, pool="flatten")[0]
    dims = [int(f.shape[1]) for f in probe.values()]
    d_text = "/".join(str(d) for d in dims)
    result.update(
        {
            "images": imgs.source,
            "models": models_text,
            "taps": taps,
            "feature_dims": dims,
            "packages": package_versions(),
        }
    )

    available = _available_bytes(device)
    import_errors = {pkg: _import_error(pkg) for pkg in ("pytorch-cka", "ckatorch")}
    values: dict[str, Tensor] = {}
    rows: list[dict[str, Any]] = []
    shared_seconds: dict[int, float] = {}
    cached: dict[
        int, tuple[Feats, Feats]
    ] = {}  # shared features by n (the two full-batch groups share theirs)
    for group in s["groups"]:
        n = n_of[group]
        for other in [k for k in cached if k != n]:
            del cached[other]  # free them before this group's calls
        inp = Inputs(
            model_a, model_b, imgs.images[:n], taps, s["batch_size"], s["minibatch"], device.type == "cpu"
        )
        names = [k for k, m in METHODS.items() if m.group == group]
        for mode in MODES:
            if mode == "shared":
                if n not in cached:
                    *pair, shared_seconds[n] = shared_features(inp, n)
                    cached[n] = (pair[0], pair[1])
                inp.feats_a, inp.feats_b = cached[n]
            for name in [k for k in names if METHODS[k].mode == mode]:
                meth = METHODS[name]
                row: dict[str, Any] = {
                    "group": group,
                    "mode": MODES[mode],
                    "implementation": name,
                    "package": meth.package,
                    "call": meth.call,
                    "n": n,
                    "d": d_text,
                    "m": s["minibatch"] if group == "minibatch" else None,
                }
                error = None if meth.package == OURS else import_errors[meth.package]
                need = _needed_bytes(meth, n)
                if error is not None:
                    row["status"] = f"unavailable ({error}); pip install -r bench/requirements.txt"
                elif available is not None and need > 0.8 * available:
                    row["status"] = (
                        f"skipped: needs about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB available"
                    )
                else:
                    calls = [
                        _measured(lambda meth=meth, inp=inp: meth.fn(inp), device)
                        for _ in range(s["repeats"])
                    ]
                    st = summary([c[1] for c in calls])
                    values[name] = calls[0][0]
                    row.update(
                        {
                            "status": "ok",
                            "median": st["median"],
                            "iqr": st["iqr"],
                            "stats": st,
                            "peak_mib": max(c[2] for c in calls) / 2**20,
                            "heatmap": values[name].tolist(),
                        }
                    )
                rows.append(row)
            inp.feats_a = inp.feats_b = None
    cached.clear()
    _compare(rows, values, s, result, d_text)
    result["shared_extraction_seconds"] = {str(n): sec for n, sec in shared_seconds.items()}
    result["notes"] += [
        f"images: {imgs.source}; models: {models_text}; taps {taps} flattened, d = {d_text}; minibatch "
        f"estimator over n = {s['n_minibatch']} images in minibatches of m = {s['minibatch']}, full-batch "
        f"estimators over the first n = {s['n_full']}; extraction batches of {s['batch_size']}.",
        "End to end: from the images to the heatmap, extraction included. tffd_viz runs the app's call "
        "(layer_cka_matrices, which also fills A vs A and B vs B); pytorch-cka's minibatch row its own "
        "compute_cka (its hooks, float32 accumulation); the other peers have no usable model-level path "
        "(ckatorch's CKA class keeps only the last batch), so theirs is tffd_viz's extract_pair (float32, "
        "stored) plus their function, in the same timed call.",
        "Shared features: the same float64 features for all, extracted once (untimed: "
        + ", ".join(f"{sec:.1f} s at n = {n}" for n, sec in shared_seconds.items())
        + ").",
        f"Time and peak memory from the same calls ({s['repeats']} per row; "
        "median); peak memory is the rise of the kernel's peak RSS over the "
        "call (bench/common.py), the shared features and models already held.",
    ]
    return result


def _compare(
    rows: list[dict[str, Any]],
    values: dict[str, Tensor],
    s: dict[str, Any],
    result: dict[str, Any],
    d_text: str,
) -> None:
    """Fill each row's difference from tffd_viz's shared-features heatmap, the checks and the targets."""
    tol = s["tolerance"]
    for group in s["groups"]:
        reference = next(
            (k for k, m in METHODS.items() if m.group == group and m.package == OURS and m.mode == "shared"),
            None,
        )
        ref = values.get(reference) if reference else None
        n = next(r["n"] for r in rows if r["group"] == group)
        for mode, label in MODES.items():
            group_rows = [r for r in rows if r["group"] == group and r["mode"] == label]
            ours = next((r for r in group_rows if r["package"] == OURS and r["status"] == "ok"), None)
            fastest: tuple[str, float] | None = None
            for row in group_rows:
                if row["status"] != "ok" or ref is None:
                    continue
                diff = float((values[row["implementation"]] - ref).abs().max())
                row.update({"max_abs_diff": diff, "equal": diff <= tol})
                if ours is not None:
                    row["vs_ours"] = row["median"] / ours["median"]
                if mode == "shared" or row["package"] == OURS:
                    result["checks"].append(
                        check(
                            f"{row['implementation']} ({group}, {label}, n = {n}) "
                            f"equals tffd_viz's shared-features heatmap within {tol:g}",
                            diff <= tol,
                            diff,
                        )
                    )
                if row["package"] != OURS and diff <= tol and (fastest is None or row["median"] < fastest[1]):
                    fastest = (row["implementation"], row["median"])
            where = f"{group}, flattened d = {d_text}, n = {n}, {label}"
            if ours is None or fastest is None:
                result["targets"].append(
                    target(
                        f"tffd_viz ({where}) faster than the fastest equal competitor",
                        None,
                        "<",
                        1.0,
                        note="no competitor available or equal",
                    )
                )
            else:
                result["targets"].append(
                    target(
                        f"{ours['implementation']} ({where}) time / fastest equal competitor ({fastest[0]})",
                        ours["median"] / fastest[1],
                        "<",
                        1.0,
                    )
                )
    finite = all(math.isfinite(float(v.sum())) for v in values.values())
    result["checks"].append(check("every heatmap is finite", finite))
    result["tables"].append(
        table(
            f"Layer x layer CKA on flattened maps (A vs B, 3 x 3), d = {d_text}",
            [
                column("group", "estimator", "str"),
                column("n", "n", "int"),
                column("m", "minibatch", "int"),
                column("mode", "mode", "str"),
                column("implementation", "implementation", "str"),
                column("median", "median", "s"),
                column("iqr", "IQR", "s"),
                column("vs_ours", "/ tffd_viz", "ratio"),
                column("peak_mib", "peak MiB", "mib"),
                column("max_abs_diff", "max |diff|", "e"),
                column("equal", f"<= {tol:g}", "bool"),
                column("status", "status", "str"),
            ],
            rows,
            note="; ".join(f"{g}: {e}" for g, e in GROUPS.items() if g in s["groups"])
            + ". max |diff| is against tffd_viz's heatmap on the shared float64 features.",
        )
    )
