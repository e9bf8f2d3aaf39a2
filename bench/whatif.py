"""Cost of one what-if step (:class:`tffd_viz.whatif.WhatIf`) against the training step of ``train``.

One what-if step advances three arms by one optimisation step each (control: CE with the Tf-FD terms logged;
Tf-FD arm: CE + weighted terms; second control: CE on another batch order), each drawing and augmenting its
batch as :func:`tffd_viz.train.train` does. It is timed against the step ``train`` runs for ``method="tffd"``
(:func:`tffd_viz.train.train_step` with the terms trained on) and for ``method="baseline"`` (terms logged),
with the same model, memory format and batch size. The expected ratio is about 3 (three arms); a ratio well
above it would mean the what-if adds work of its own. The held-out evaluation (once at the start, once per arm
at the end) is timed separately, per arm.

The data are random uint8 images in memory (CIFAR-shaped, ``n_train`` of them), so no dataset is needed.
"""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch

from bench.common import Options, alternate, check, column, run_start, summary, table, target
from tffd_viz.data import DatasetBundle, ImageDataset
from tffd_viz.heldout import heldout_terms
from tffd_viz.losses import TfFD
from tffd_viz.models import create_model
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.train import RECIPES, train_step
from tffd_viz.whatif import WhatIf, WhatIfConfig

NAME = "whatif"
TITLE = "What-if step (three arms) vs the training step of train"

DEFAULTS: dict[str, Any] = {
    "arch": "resnet20",
    "num_classes": 100,
    "recipe": "cpu30",
    "batch_size": 128,
    "n_train": 1024,
    "heldout_n": 2000,
    "lambda_intra": PAPER_LAMBDA_INTRA,
    "lambda_inter": PAPER_LAMBDA_INTER,
    "warmup": 2,
    "repeats": 10,
    "seed": 0,
}
QUICK: dict[str, Any] = {
    "arch": "resnet8",
    "batch_size": 16,
    "n_train": 64,
    "heldout_n": 32,
    "warmup": 1,
    "repeats": 3,
}
#: A what-if step should cost about three training steps; this leaves room for batch drawing and logging.
TARGET_RATIO = 3.3


def _bundle(s: dict[str, Any]) -> DatasetBundle:
    gen = torch.Generator().manual_seed(s["seed"])
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)

    def split(n: int) -> ImageDataset:
        images = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
        return ImageDataset(images, torch.randint(0, s["num_classes"], (n,), generator=gen), mean, std)

    return DatasetBundle(
        name="cifar100",
        train=split(s["n_train"]),
        test=split(s["heldout_n"]),
        classes=[str(i) for i in range(s["num_classes"])],
        mean=mean,
        std=std,
        in_chans=3,
    )


def run(opts: Options) -> dict[str, Any]:
    """Measure; return the result payload (see :mod:`bench.common`)."""
    s, device, _, result = run_start(NAME, TITLE, DEFAULTS, QUICK, opts)
    torch.manual_seed(s["seed"])
    model = create_model(s["arch"], num_classes=s["num_classes"], in_chans=3).to(device)
    bundle = _bundle(s)
    hp = {**RECIPES[s["recipe"]], "batch_size": s["batch_size"]}
    card = {"recipe": s["recipe"], "arch": s["arch"], "hparams": hp}
    config = WhatIfConfig(
        lambda_intra=s["lambda_intra"],
        lambda_inter=s["lambda_inter"],
        steps=10**6,
        heldout_n=s["heldout_n"],
        device=str(device),
    )
    w = WhatIf(model, bundle, config, card=card)
    w.start_heldout()  # the one held-out pass before the first step, untimed here (timed below)

    # train's step on the same model (its own copy), memory format and batch size
    fmt = torch.channels_last if device.type == "cpu" else torch.contiguous_format
    x = bundle.train.normalized(slice(0, s["batch_size"])).to(device).contiguous(memory_format=fmt)
    y = bundle.train.labels[: s["batch_size"]].to(device)
    tffd = TfFD(s["lambda_intra"], s["lambda_inter"])
    steps = {}
    for method, apply in (("tffd", True), ("baseline", False)):
        net = copy.deepcopy(w.model("control")).train()
        opt = torch.optim.SGD(
            net.parameters(), lr=w.settings["lr"], momentum=hp["momentum"], weight_decay=hp["weight_decay"]
        )
        steps[f"train_step ({method})"] = lambda n=net, o=opt, a=apply: train_step(
            n, x, y, tffd, 1.0, o, apply_tffd=a
        )
    fns = {"whatif step (3 arms)": lambda: list(w.run(steps=1)), **steps}
    samples = alternate(fns, device, s["warmup"], s["repeats"])
    heldout = alternate(
        {"heldout": lambda: heldout_terms(w.model("tffd"), w.heldout_set, taps=w.taps)},
        device,
        0,
        max(1, s["repeats"] // 5),
    )["heldout"]

    stats = {name: summary(v) for name, v in samples.items()}
    ref = stats["train_step (tffd)"]["median"]
    rows = [
        {
            "variant": name,
            "median": st["median"],
            "iqr": st["iqr"],
            "ratio": st["median"] / ref,
            "paired": statistics.median(
                a / b for a, b in zip(samples[name], samples["train_step (tffd)"], strict=True)
            ),
        }
        for name, st in stats.items()
    ]
    held = summary(heldout)
    rows.append(
        {
            "variant": f"held-out evaluation of one arm ({len(w.heldout_set)} images)",
            "median": held["median"],
            "iqr": held["iqr"],
            "ratio": held["median"] / ref,
            "paired": None,
        }
    )
    ratio = stats["whatif step (3 arms)"]["median"] / ref
    result["targets"].append(
        target("what-if step / train's Tf-FD step (three arms)", ratio, "<=", TARGET_RATIO)
    )
    per_arm = [r for r in w.rows if r["step"] == 1]
    result["checks"].append(
        check(
            "control and Tf-FD arm see the same first batch (equal step-1 CE)",
            per_arm[0]["ce"] == per_arm[1]["ce"],
            per_arm[1]["ce"] - per_arm[0]["ce"],
        )
    )
    result["checks"].append(
        check(
            "every arm did every timed step",
            w.step == len(w.rows) // 3 and w.step == s["warmup"] + s["repeats"],
        )
    )
    result["tables"].append(
        table(
            "Seconds per step",
            [
                column("variant", "variant", "str"),
                column("median", "median", "ms"),
                column("iqr", "IQR", "ms"),
                column("ratio", "/ train's Tf-FD step", "ratio"),
                column("paired", "paired / train's Tf-FD step", "ratio"),
            ],
            rows,
            note=(
                f"{s['arch']}, {s['num_classes']} classes, batch {s['batch_size']} (random uint8 images, "
                f"{s['n_train']} in memory, {s['recipe']} recipe augmentation), on {device}, channels_last "
                f"on the CPU as train; lambdas {s['lambda_intra']:g} / {s['lambda_inter']:g} on every stage "
                f"and pair; median of {s['repeats']} alternating calls after {s['warmup']} warm-up calls. "
                "The what-if step includes drawing and augmenting the three arms' batches."
            ),
        )
    )
    return result
