"""Command line: ``tffd-viz <command> ...`` (also ``python -m tffd_viz <command> ...``).

Sub-commands live in :data:`COMMANDS` (name -> (add_arguments, run)), so a module adds one with
``COMMANDS["report"] = (add_report_arguments, run_report)``.

* ``train``: train one model (recipe + explicit overrides), writing ``<out>.safetensors``/``.json`` and
  the resumable ``<out>.resume.pt``; works under ``torchrun --nproc_per_node=N -m tffd_viz train``.
* ``sweep``: short trainings over a grid of lambdas, layer presets and seeds into one CSV/JSON table.
* ``report``: one self-contained HTML report comparing two checkpoints.
* ``checkpoints``: a folder of checkpoints as a markdown table (from their model cards).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from tffd_viz.errors import TffdVizError
from tffd_viz.report import add_report_arguments, run_report
from tffd_viz.whatif import add_whatif_arguments, run_whatif

__all__ = [
    "COMMANDS",
    "add_sweep_arguments",
    "add_train_arguments",
    "build_parser",
    "config_overrides",
    "main",
    "run_sweep_command",
    "run_train",
]

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


def _float_list(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _add_common_train_arguments(p: argparse.ArgumentParser, *, for_sweep: bool = False) -> None:
    """Options shared by ``train`` and ``sweep``; every default is None (= the recipe's value)."""
    from tffd_viz.train import METHODS, PRECISIONS, RECIPES, SCHEDULES

    p.add_argument(
        "--recipe",
        default=None,
        choices=sorted(RECIPES),
        help="hyper-parameter recipe (default: paper for train, imagenet for torchvision's resnet18/34/50 "
        "and mobilenet_v2, digits for sweep); explicit options "
        "override its values",
    )
    p.add_argument(
        "--arch",
        default=None,
        help="zoo model name, e.g. resnet8, resnet20, wrn_16_2, vgg8, resnet18 (torchvision, 224 px)",
    )
    p.add_argument("--dataset", default=None, help="digits, cifar10, cifar100 or imagefolder")
    p.add_argument(
        "--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)"
    )
    if not for_sweep:
        p.add_argument("--method", default=None, choices=list(METHODS), help="default: tffd")
        p.add_argument("--lambda-intra", type=float, default=None)
        p.add_argument("--lambda-inter", type=float, default=None)
        p.add_argument(
            "--stages",
            default=None,
            help="taps taking the intra term: names or indices, comma list ('all', 'none')",
        )
        p.add_argument(
            "--pairs", default=None, help="inter-term pairs shallow-deep, e.g. '0-1,0-2,1-2' ('all', 'none')"
        )
        p.add_argument(
            "--teacher",
            default=None,
            help="tffd_kd (Tf-FD+): teacher checkpoint for the logit KD term (any loadable format)",
        )
        p.add_argument(
            "--lambda-kd", type=float, default=None, help="tffd_kd: weight of the logit KD term (1)"
        )
        p.add_argument("--kd-temperature", type=float, default=None, help="tffd_kd: KD temperature T (4)")
    p.add_argument(
        "--warmup", type=float, default=None, help="Tf-FD warm-up epochs (weight min(1, epoch/warmup))"
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="per process under torchrun")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate")
    p.add_argument("--schedule", default=None, choices=sorted(SCHEDULES))
    p.add_argument("--milestones", type=_int_list, default=None, help="multistep epochs, e.g. 150,180,210")
    p.add_argument("--gamma", type=float, default=None, help="multistep factor")
    p.add_argument("--lr-warmup", type=float, default=None, help="cosine: linear lr warm-up epochs")
    p.add_argument("--pct-start", type=float, default=None, help="onecycle: fraction of steps ramping up")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--momentum", type=float, default=None)
    p.add_argument("--nesterov", default=None, action=argparse.BooleanOptionalAction)
    p.add_argument("--crop-padding", type=int, default=None, help="random crop padding in pixels (0 = none)")
    p.add_argument(
        "--padding-mode",
        default=None,
        choices=["zeros", "reflect"],
        help="how the random crop pads (paper: reflect, as the reference's Pad(4, 'reflect'))",
    )
    p.add_argument(
        "--flip", default=None, action=argparse.BooleanOptionalAction, help="random horizontal flip"
    )
    p.add_argument(
        "--augment",
        default=None,
        choices=["pad_crop_flip", "random_resized_crop"],
        help="crop: pad + random crop (CIFAR recipes) or RandomResizedCrop (imagenet recipe)",
    )
    if not for_sweep:
        p.add_argument("--seed", type=int, default=None, help="default 0")
    p.add_argument("--device", default=None, help="auto, cpu or cuda (default auto)")
    p.add_argument(
        "--precision",
        default=None,
        choices=sorted(PRECISIONS),
        help="bf16 = torch.autocast(bfloat16) forward; weights stay fp32",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for this process")
    p.add_argument("--probe-size", type=int, default=None, help="images of the saliency probe batch (256)")
    p.add_argument("--quiet", action="store_true", default=None)
    p.add_argument(
        "--sync-saliency",
        action="store_true",
        default=None,
        help="under torchrun: average the channel saliency over ranks before sorting channels",
    )
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--time-limit",
        type=float,
        default=None,
        help="stop (resumable) after the epoch past which another one would end after this many seconds",
    )


def default_recipe(arch: str | None) -> str:
    """The recipe ``train`` uses when none is named: ``imagenet`` for torchvision's architectures, else
    ``paper``."""
    from tffd_viz.models.imagenet import IMAGENET_ARCHS

    return "imagenet" if arch in IMAGENET_ARCHS else "paper"


def config_overrides(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Return the explicit (non-None) training options of ``args`` as TrainConfig keyword arguments."""
    import dataclasses

    from tffd_viz.train import TrainConfig, parse_pairs, parse_stages

    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"recipe", "hparams"} - set(skip)
    out = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    if "stages" in out:
        out["stages"] = parse_stages(out["stages"])
    if "pairs" in out:
        out["pairs"] = parse_pairs(out["pairs"])
    return out


# --------------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------------


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz train``."""
    _add_common_train_arguments(p)
    p.add_argument(
        "--out",
        default=None,
        help="output path x.safetensors (+ x.json, x.resume.pt); default "
        "runs/<dataset>_<arch>_<method>_s<seed>.safetensors",
    )
    p.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from <out>.resume.pt (if present) or from the given resume file",
    )


def run_train(args: argparse.Namespace) -> int:
    """Run ``tffd-viz train``; return the exit status."""
    from tffd_viz.train import config_from_recipe, train

    overrides = config_overrides(args)
    cfg = config_from_recipe(args.recipe or default_recipe(overrides.get("arch")), **overrides)
    if cfg.out is None:
        cfg.out = f"runs/{cfg.dataset}_{cfg.arch}_{cfg.method}_s{cfg.seed}.safetensors"
    _, card = train(cfg)
    if _is_rank0() and not cfg.quiet and card.get("completed"):
        print(
            f"final_acc={card['final_acc']:.2f} best_acc={card['best_acc']:.2f} "
            f"train_seconds={card['train_seconds']:.1f} out={cfg.out}"
        )
    return 0


def _is_rank0() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"


# --------------------------------------------------------------------------------------------------
# sweep
# --------------------------------------------------------------------------------------------------


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz sweep``."""
    from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
    from tffd_viz.train import LAYER_PRESETS

    _add_common_train_arguments(p, for_sweep=True)
    p.add_argument(
        "--lambda-intra",
        type=_float_list,
        default=[0.0, PAPER_LAMBDA_INTRA],
        help="comma list, e.g. 0,8e-4,1e-2",
    )
    p.add_argument(
        "--lambda-inter",
        type=_float_list,
        default=[0.0, PAPER_LAMBDA_INTER],
        help="comma list, e.g. 0,5e-4,1e-2",
    )
    p.add_argument(
        "--layers",
        type=_str_list,
        default=["all"],
        help=f"comma list of layer presets: {', '.join(LAYER_PRESETS)}",
    )
    p.add_argument("--seeds", type=_int_list, default=[0], help="comma list, e.g. 0,1,2")
    p.add_argument("--out", default="runs/sweep", help="table path prefix: writes <out>.csv and <out>.json")


def run_sweep_command(args: argparse.Namespace) -> int:
    """Run ``tffd-viz sweep``; return the exit status."""
    from tffd_viz.train import config_from_recipe, run_sweep

    overrides = config_overrides(args, skip=("out", "lambda_intra", "lambda_inter", "seed"))
    base = config_from_recipe(args.recipe or "digits", **overrides)
    grid = {
        "lambda_intra": args.lambda_intra,
        "lambda_inter": args.lambda_inter,
        "layers": args.layers,
        "seeds": args.seeds,
    }
    rows = run_sweep(base, grid, args.out)
    print(f"{len(rows)} rows in {args.out}.csv / {args.out}.json")
    return 0


#: Sub-command name -> (add_arguments, run).
CHECKPOINT_COLUMNS = (
    "file",
    "arch",
    "dataset",
    "method",
    "lambda_intra",
    "lambda_inter",
    "recipe",
    "epochs",
    "seed",
    "final_acc",
    "best_acc",
    "mean_intra",
    "mean_inter",
    "train_seconds",
    "heldout_acc",
    "heldout_intra",
    "heldout_intra_rel",
    "heldout_inter",
    "heldout_inter_rel",
)


def add_checkpoints_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", default="checkpoints", help="folder of .safetensors checkpoints")
    parser.add_argument(
        "--heldout",
        action="store_true",
        help="instead: one row per stage/pair of each card's held-out terms (mean ± sd over batches)",
    )


def run_checkpoints(args: argparse.Namespace) -> int:
    """Print the markdown table of the checkpoints in a folder (the table of ``checkpoints/README.md``)."""
    from tffd_viz.checkpoints import list_checkpoints
    from tffd_viz.summary import checkpoint_rows, heldout_rows, markdown_table

    shipped = list_checkpoints(args.folder)
    if args.heldout:
        print(markdown_table(heldout_rows(shipped)), end="")
    else:
        print(markdown_table(checkpoint_rows(shipped), CHECKPOINT_COLUMNS), end="")
    return 0


def add_heldout_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", help="tffd-viz .safetensors checkpoints whose cards get heldout_terms"
    )
    parser.add_argument(
        "--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=500, help="images per batch (each ranks its own channels)"
    )


def run_heldout(args: argparse.Namespace) -> int:
    """Recompute ``heldout_terms`` (eval mode, whole test split, mean and spread over batches) into each
    card."""
    from tffd_viz.heldout import write_heldout_terms

    for path in args.paths:
        terms = write_heldout_terms(path, args.data_root, args.batch_size)
        intra = " ".join(
            f"{k}={v:.4g}±{terms['intra_std'][k] or 0:.2g} (rel {terms['intra_rel'][k]:.3g})"
            for k, v in terms["intra"].items()
        )
        print(f"{path}: {terms['split']} n={terms['n']} acc={terms['accuracy']:.2f} intra[{intra}]")
    return 0


COMMANDS: dict[str, tuple[AddArguments, Run]] = {
    "train": (add_train_arguments, run_train),
    "sweep": (add_sweep_arguments, run_sweep_command),
    "report": (add_report_arguments, run_report),
    "checkpoints": (add_checkpoints_arguments, run_checkpoints),
    "heldout": (add_heldout_arguments, run_heldout),
    "whatif": (add_whatif_arguments, run_whatif),
}

_HELP = {
    "train": "train one model with or without Tf-FD",
    "sweep": "short trainings over a grid of lambdas, layers and seeds into one table",
    "report": "one self-contained HTML report comparing two checkpoints",
    "checkpoints": "list a folder of checkpoints as a markdown table (from their model cards)",
    "heldout": (
        "recompute the held-out Tf-FD terms (test split, eval mode, with spread) into checkpoint cards"
    ),
    "whatif": (
        "try lambdas before training: short fine-tunes (control, Tf-FD arm, second control) from one model"
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level parser with one sub-parser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="tffd-viz", description="Teacher-free Feature Distillation tools")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (add_arguments, run) in COMMANDS.items():
        p = sub.add_parser(name, help=_HELP.get(name, ""), description=_HELP.get(name))
        add_arguments(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the sub-command and return its exit status.

    Errors on bad input (:class:`TffdVizError`) print one line to stderr and return 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args))
    except TffdVizError as exc:
        print(f"tffd-viz {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
