"""Feature-extraction throughput: ``extract_taps`` on the default taps vs the bare forward pass.

One batch of ``batch_size`` CIFAR-shaped images already on the device; the model in eval mode under
``no_grad``. Variants, timed alternately after warm-up calls:

* ``forward``: ``model(x)``;
* ``extract_taps``: :func:`tffd_viz.models.extract_taps` with the default taps (hooks on ``layer1..3``);
* ``extract_taps+logits``: the same with ``return_logits=True`` (what training and the app use);
* ``extract_features`` (informational): :func:`tffd_viz.features.extract_features` over
  ``stream_batches`` batches, storing the full maps on the CPU, vs the same number of bare forward passes.

Target: ``extract_taps`` throughput >= 0.9 x the bare forward pass.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.common import Options, alternate, check, column, run_start, summary, table, target
from tffd_viz.features import extract_features
from tffd_viz.models import create_model, default_taps, extract_taps

NAME = "extract"
TITLE = "Feature extraction: extract_taps vs bare forward"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "num_classes": 100,
    "batch_size": 256,
    "warmup": 5,
    "repeats": 30,
    "stream_batches": 4,
    "seed": 0,
}
QUICK: dict[str, Any] = {"arch": "resnet8", "batch_size": 16, "warmup": 1, "repeats": 3, "stream_batches": 2}
TARGET = 0.9


def run(opts: Options) -> dict[str, Any]:
    """Time the variants; return the result payload."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    torch.manual_seed(s["seed"])
    model = create_model(s["arch"], num_classes=s["num_classes"]).to(device).eval()
    gen = torch.Generator().manual_seed(s["seed"])
    x = torch.randn(s["batch_size"], 3, 32, 32, generator=gen).to(device)
    many = torch.randn(s["batch_size"] * s["stream_batches"], 3, 32, 32, generator=gen)  # stays on the CPU
    taps = list(default_taps(model))

    def forward() -> torch.Tensor:
        with torch.no_grad():
            return model(x)

    def taps_only() -> Any:
        with torch.no_grad():
            return extract_taps(model, x)

    def taps_logits() -> Any:
        with torch.no_grad():
            return extract_taps(model, x, return_logits=True)

    def forward_stream() -> None:
        with torch.no_grad():
            for start in range(0, many.shape[0], s["batch_size"]):
                model(many[start : start + s["batch_size"]].to(device)).cpu()

    def features_stream() -> Any:
        return extract_features(model, many, batch_size=s["batch_size"])

    with torch.no_grad():
        bare = model(x)
        logits, feats = extract_taps(model, x, return_logits=True)
        direct = extract_taps(model, many[: s["batch_size"]].to(device))[taps[-1]].cpu()
    stored = features_stream()[taps[-1]][: s["batch_size"]]
    exact = device.type == "cpu"  # on a GPU, two launches may pick different (TF32) kernels
    same_rows = torch.equal(stored, direct) if exact else torch.allclose(stored, direct, rtol=1e-3, atol=1e-4)
    same_logits = torch.equal(bare, logits) if exact else torch.allclose(bare, logits, rtol=1e-3, atol=1e-4)
    result["checks"] += [
        check(
            "extract_taps(return_logits=True) logits == model(x)" + (" exactly" if exact else ""),
            bool(same_logits),
        ),
        check(f"taps are the default taps {taps}", list(feats) == taps, list(feats)),
        check(f"extract_features rows == extract_taps on the same batch ({taps[-1]})", bool(same_rows)),
    ]
    fns = {
        "forward": forward,
        "extract_taps": taps_only,
        "extract_taps+logits": taps_logits,
        "forward (stream)": forward_stream,
        "extract_features (stream)": features_stream,
    }
    samples = alternate(fns, device, s["warmup"], s["repeats"])
    stats = {k: summary(v) for k, v in samples.items()}
    rows = []
    for name, images, ref in (
        ("forward", s["batch_size"], "forward"),
        ("extract_taps", s["batch_size"], "forward"),
        ("extract_taps+logits", s["batch_size"], "forward"),
        ("forward (stream)", many.shape[0], "forward (stream)"),
        ("extract_features (stream)", many.shape[0], "forward (stream)"),
    ):
        med = stats[name]["median"]
        rows.append(
            {
                "variant": name,
                "images": images,
                "median": med,
                "iqr": stats[name]["iqr"],
                "images_per_s": images / med,
                "throughput_ratio": stats[ref]["median"] / med,
                "stats": stats[name],
            }
        )
    ratio = stats["forward"]["median"] / stats["extract_taps"]["median"]
    result["targets"].append(target("extract_taps throughput / bare forward throughput", ratio, ">=", TARGET))
    result["tables"].append(
        table(
            "Throughput (eval, no_grad)",
            [
                column("variant", "variant", "str"),
                column("images", "images", "int"),
                column("median", "median", "ms"),
                column("iqr", "IQR", "ms"),
                column("images_per_s", "images/s", "int"),
                column("throughput_ratio", "throughput / bare forward", "ratio"),
            ],
            rows,
            note=(
                f"{s['arch']} ({s['num_classes']} classes), batch {s['batch_size']}x3x32x32 on {device}, "
                f"taps {taps}; median of {s['repeats']} alternating calls after {s['warmup']} warm-ups. The "
                f"(stream) rows run {s['stream_batches']} batches from CPU memory, extract_features storing "
                "every full tap map on the CPU."
            ),
        )
    )
    return result
