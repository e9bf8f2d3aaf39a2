"""ImageNet-size models in the app: a torchvision ResNet-18 pair on 64 224x224 images, first chart and memory.

No ImageNet here: the benchmark writes an image-folder tree of generated JPEGs at ImageNet-like sizes
(``val/``: 10 classes x ``per_class`` images, 300-500 pixels a side, so the 256/224 evaluation transform does
real resizing and cropping) and two random-init ResNet-18 checkpoints (10 classes) into a temporary folder
that the sidebar lists through ``$TFFD_CHECKPOINTS``. Then, each in a fresh process (AppTest of ``app.py``):

1. ``choose the pair``: the app is first run on its default (digits) models; then the sidebar's models A and B
   and dataset (``imagefolder``; the data root is ``$TFFD_DATA``) are set and the app is run once (its
   224-pixel batch size, query parameter ``n224``, is ``n`` = 64): the time of that run is the time from
   choosing the pair to its first page (Overview) with its charts drawn;
2. ``start to first chart``: from launching a process to the end of its first run straight on the pair (cold
   imports and caches);
3. one process per page, straight on the pair: the wall time of the page's first run and the peak resident
   memory of the process (``ru_maxrss``: Python, torch, streamlit and all the page computed and cached).

Targets on the CPU: the pair's first chart within 15 s of choosing it, and no page above 2 GiB (2048 MiB).
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, Options, check, column, launched_child, run_start, table, target

NAME = "imagenet"
TITLE = "ImageNet-size models in the app: ResNet-18 pair, 64 images of 224x224"

PAGES: tuple[str, ...] = (
    "overview",
    "ranking",
    "losses",
    "feature_maps",
    "similarity",
    "cka",
    "attribution",
    "embeddings",
    "evolution",
)
DEFAULTS: dict[str, Any] = {"n": 64, "per_class": 8, "classes": 10, "pages": list(PAGES), "timeout": 900.0}
QUICK: dict[str, Any] = {"n": 8, "per_class": 1, "pages": ["overview"]}
TARGETS: dict[str, float] = {"choose_to_first_chart": 15.0, "peak_rss_mib": 2048.0}
APP = REPO_ROOT / "app.py"
PAIR = ("bench_resnet18_a", "bench_resnet18_b")


def write_fixture(folder: Path, classes: int, per_class: int) -> tuple[Path, Path]:
    """Write the image tree (``train/``: one image a class; ``val/``: ``per_class``) and the model pair."""
    import numpy as np
    import torch
    from PIL import Image

    from tffd_viz.checkpoints import save_checkpoint
    from tffd_viz.models import create_model

    rng = np.random.default_rng(0)
    root = folder / "tree"
    for split, k in (("train", 1), ("val", per_class)):
        for c in range(classes):
            d = root / split / f"class{c:02d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                w, h = (int(v) for v in rng.integers(300, 500, 2))
                small = (rng.random((h // 16, w // 16, 3)) * 255).astype(np.uint8)
                Image.fromarray(small).resize((w, h), Image.BILINEAR).save(d / f"{i}.jpg", quality=90)
    ck = folder / "checkpoints"
    for seed, name in enumerate(PAIR):
        torch.manual_seed(seed)
        save_checkpoint(
            create_model("resnet18", num_classes=classes), {"dataset": "imagefolder", "seed": seed}, ck / name
        )
    return root, ck


def _problems(at: Any, step: str) -> list[str]:
    found = [f"{step}: exception: {str(e.value)[:300]}" for e in at.exception]
    return found + [f"{step}: st.error: {str(e.value)[:300]}" for e in at.error]


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: ``mode`` ``choose`` (digits, then the pair) or a page name (straight on it)."""
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    from streamlit.testing.v1 import AppTest

    out: dict[str, Any] = {"errors": []}
    at = AppTest.from_file(str(APP), default_timeout=float(spec["timeout"]))
    pair = {"dataset": "imagefolder", "root": spec["root"], "n224": str(spec["n"])}
    if spec["mode"] == "choose":
        at.run()
        out["errors"] += _problems(at, "default models")
        at.sidebar.selectbox(key="model-A").set_value(PAIR[0])
        at.sidebar.selectbox(key="model-B").set_value(PAIR[1])
        at.sidebar.selectbox(key="dataset").set_value("imagefolder")  # the data root defaults to $TFFD_DATA
        at.query_params["n224"] = str(spec["n"])  # the 224-pixel batch size (the app's default is 64)
        t0 = time.perf_counter()
        at.run()
        out["seconds"] = time.perf_counter() - t0
    else:
        for key, value in {"a": PAIR[0], "b": PAIR[1], **pair}.items():
            at.query_params[key] = value
        at.switch_page(f"app_pages/{spec['mode']}.py")
        at.run()
    out["first_chart_wall"] = time.time()
    out["charts"] = len(at.get("plotly_chart"))
    out["n"] = at.sidebar.slider(key="n").value if not at.exception else None
    out["errors"] += _problems(at, spec["mode"])
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    return out


def _launch(spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    return launched_child("bench.imagenet", spec, spec["timeout"] * 2 + 60, env)


def run(opts: Options) -> dict[str, Any]:
    """Write the fixture, run the choice and every page in fresh processes; return the result payload."""
    s, device, threads, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    try:
        import streamlit  # noqa: F401 - only whether it imports
    except ImportError as exc:
        result["status"] = f"unavailable: {exc} (the app needs requirements.txt)"
        return result
    with tempfile.TemporaryDirectory(prefix="tffd-bench-imagenet-") as tmp:
        root, ck = write_fixture(Path(tmp), int(s["classes"]), int(s["per_class"]))
        env = dict(os.environ, TFFD_CHECKPOINTS=str(ck), TFFD_DATA=str(root), PYTHONPATH=str(REPO_ROOT))
        base = {"root": str(root), "n": int(s["n"]), "timeout": float(s["timeout"]), "threads": threads}
        chosen = _launch({**base, "mode": "choose"}, env)
        pages = {page: _launch({**base, "mode": page}, env) for page in s["pages"]}
    errors = sorted({e for r in [chosen, *pages.values()] for e in r.get("errors", [])})
    result["checks"].append(check("every run showed no exception and no st.error", not errors, errors[:5]))
    result["checks"].append(
        check(f"the sample batch holds {s['n']} images", chosen.get("n") == s["n"], chosen.get("n"))
    )
    rows = [
        {
            "page": "choose the pair (Overview)",
            "seconds": chosen.get("seconds"),
            "cold": chosen.get("start_to_first_chart"),
            "charts": chosen.get("charts"),
            "peak_rss_mib": chosen.get("peak_rss_mib"),
        }
    ]
    rows += [
        {
            "page": page,
            "seconds": None,
            "cold": r.get("start_to_first_chart"),
            "charts": r.get("charts"),
            "peak_rss_mib": r.get("peak_rss_mib"),
        }
        for page, r in pages.items()
    ]
    result["runs"] = {"choose": chosen, **pages}
    result["tables"].append(
        table(
            "ResNet-18 pair, 224x224 image folder, one fresh process per row",
            [
                column("page", "page", "str"),
                column("seconds", "choose -> first chart", "s"),
                column("cold", "process start -> page drawn", "s"),
                column("charts", "charts", "g"),
                column("peak_rss_mib", "peak RSS (MiB)", "mib"),
            ],
            rows,
            note=(
                f"AppTest of app.py; two random-init torchvision ResNet-18s (10 classes), n = {s['n']} "
                f"images of a generated val/ folder (JPEG, 300-500 px), device {device.type}, torch threads "
                f"{threads}. Peak RSS is the whole process (Python, torch, streamlit, the page's caches)."
            ),
        )
    )
    peak = max((r.get("peak_rss_mib") or 0.0 for r in [chosen, *pages.values()]), default=None)
    result["targets"].append(
        target(
            "ResNet-18 pair: choose -> first chart",
            chosen.get("seconds"),
            "<=",
            TARGETS["choose_to_first_chart"],
            fmt="s",
        )
    )
    result["targets"].append(
        target("peak memory of any page (MiB)", peak, "<=", TARGETS["peak_rss_mib"], fmt="mib")
    )
    if errors:
        result["status"] = "error: " + "; ".join(errors[:3])
    return result


def main(argv: list[str]) -> int:
    """``python -m bench.imagenet --child '<json spec>'`` (used by :func:`run`)."""
    if len(argv) != 2 or argv[0] != "--child":
        print(
            "usage: python -m bench.imagenet --child '<json spec>' (use python -m bench imagenet)",
            file=sys.stderr,
        )
        return 2
    try:
        out = child(json.loads(argv[1]))
    except Exception as exc:  # report, do not hide: the parent records it
        out = {"errors": [f"{type(exc).__name__}: {exc}"], "first_chart_wall": time.time()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
