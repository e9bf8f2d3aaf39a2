"""A headless, self-contained HTML report comparing two checkpoints (A, usually the baseline, and B).

``tffd-viz report --a A.safetensors --b B.safetensors --out report.html`` (or :func:`write_report`)
loads both models, draws one deterministic sample batch (:func:`tffd_viz.data.sample_batch`) and
writes one HTML file with these sections, computed by the library and drawn with the very figures
of the app (:mod:`tffd_viz.plots`):

==============  ===================================================================================
``overview``    the model cards side by side, accuracy on the batch, per-class errors (or both
                confusion matrices), the training curves stored in the cards
``changed``     A vs B, what changed: every quantity measured on the whole held-out split (held-out
                Tf-FD terms raw and scale-free, activation energy, paired and random-pair cosines,
                CKA) with its difference, its noise reference (seed spread, else batch spread) and a
                verdict written only beyond the noise (:mod:`tffd_viz.verdicts`)
``ranking``     Tf-FD channel saliency per layer (sorted, salient/redundant halves) and how well
                other importance criteria agree with it
``losses``      the held-out terms of A and B with their spread, raw next to scale-free, and the
                activation energy per stage; every unweighted term on the batch and the
                cross-entropy against the lambda-weighted terms (the card's lambdas, else the paper's)
``similarity``  paired cosine against random channel pairs, salient-vs-paired-redundant similarity,
                inter-layer alignment, the channel cosine matrices of the deepest layer
``cka``         layer x layer linear CKA, A vs B and within each model (minibatch HSIC_1 estimator),
                the A-vs-B diagonal against the seed-to-seed CKA
``summary``     one table of the numbers: accuracies, every term, mean paired cosine, CKA diagonal
==============  ===================================================================================

plotly.js is embedded once, inline, in the page head, so the file works offline. The sections are
built by the functions in :data:`SECTIONS` (one progress-bar tick each); :func:`report_sections`
returns them as :class:`ReportSection` objects (title, intro, figures, tables) for tests and
notebooks, :func:`build_report` renders them to HTML.

The report needs the app extras (plotly, pandas); they are imported when a report is built, so
this module (and the command line that registers :func:`add_report_arguments`) imports without them.
"""

from __future__ import annotations

import argparse
import html
import importlib
import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from tffd_viz import __version__
from tffd_viz.checkpoints import list_checkpoints, load_checkpoint
from tffd_viz.data import ImageDataset, card_image_size, load_dataset, sample_batch
from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.features import extract_features, prediction_summary
from tffd_viz.importance import channel_scores, get_criterion, rank_agreement
from tffd_viz.losses import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.models import resolve_taps
from tffd_viz.normalisation import (
    DATA_COPY_CAVEAT,
    NORMALISATIONS,
    ModelNormalisation,
    accuracy_by_normalisation,
    adapter_stats,
    attach_input_normalisation,
    model_normalisation,
    trained_elsewhere,
)
from tffd_viz.similarity import channel_similarity_views, inter_layer_alignments, layer_cka_matrices
from tffd_viz.terms import TermsReport, tffd_terms_on_batch
from tffd_viz.verdicts import (
    NOISE_SIGMAS,
    WHAT_CHANGED_COLUMNS,
    effect_summary,
    lambda_text,
    pair_comparison,
    random_pair_cosine,
    seed_siblings,
)

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

__all__ = [
    "CKA_BATCH",
    "REPORT_CRITERIA",
    "SECTIONS",
    "SUMMARY_COLUMNS",
    "ReportInputs",
    "ReportSection",
    "ReportTable",
    "add_report_arguments",
    "build_report",
    "card_lambdas",
    "identical_criteria",
    "load_report_inputs",
    "render_html",
    "report_sections",
    "run_report",
    "write_report",
]

REPORT_CRITERIA: tuple[str, ...] = ("tffd", "l1", "l2", "mean", "bn_gamma", "taylor")
"""Channel-importance criteria compared with the Tf-FD saliency (keys of ``importance.CRITERIA``)."""

CKA_BATCH: int = 256
"""Minibatch size of the minibatch CKA estimator (the app's default; a tail under 4 images is merged)."""

SUMMARY_COLUMNS: tuple[str, ...] = ("quantity", "layer / term", "A", "B", "A vs B")
"""Columns of the summary table: per-model values in ``A`` and ``B``, comparisons in ``A vs B``."""

_EXTRAS = ("pandas", "tffd_viz.plots", "tffd_viz.summary")

ERROR_BARS_ABOVE: float = 99.0
"""Batch accuracy (%) of both models above which the overview draws per-class errors instead of two matrices."""


def _extras() -> tuple[ModuleType, ModuleType, ModuleType]:
    """Return ``(pandas, tffd_viz.plots, tffd_viz.summary)``, imported on first use (the app extras)."""
    try:
        return tuple(importlib.import_module(name) for name in _EXTRAS)  # type: ignore[return-value]
    except ImportError as exc:
        raise TffdVizError(
            f"the HTML report needs plotly and pandas ({exc}); install them with pip install 'tffd-viz[app]'"
        ) from None


def _noise_plots() -> ModuleType:
    """:mod:`tffd_viz.noise_plots` (needs plotly: call after :func:`_extras`)."""
    return importlib.import_module("tffd_viz.noise_plots")


def _plain(line: str) -> str:
    """A markdown bullet of :func:`tffd_viz.verdicts.what_changed_text` as plain text (the report escapes HTML)."""
    return line.removeprefix("* ").replace("**", "")


# --------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class ReportTable:
    """A titled table of a section."""

    title: str
    frame: pd.DataFrame


@dataclass
class ReportSection:
    """One section of the report.

    Attributes
    ----------
    id : str
        HTML anchor and key of :data:`SECTIONS` (``"overview"``, ``"ranking"``, ...).
    title : str
        Heading.
    intro : str
        Two or three sentences, with measured numbers; paragraphs separated by blank lines.
    figures : list of plotly Figure
        In drawing order.
    tables : list of ReportTable
        Drawn before the figures.
    """

    id: str
    title: str
    intro: str
    figures: list[go.Figure] = field(default_factory=list)
    tables: list[ReportTable] = field(default_factory=list)


@dataclass
class ReportInputs:
    """Everything the sections share: both models, the sample batch and their taps on it.

    Attributes
    ----------
    paths : dict[str, str]
        ``{"A": path_a, "B": path_b}``.
    names : dict[str, str]
        File name of each checkpoint without ``.safetensors``.
    labels : dict[str, str]
        Legend label per model, ``"A · <name>"``.
    models, cards : dict[str, ...]
        Loaded model (eval mode) and card per model key.
    dataset, split, n, seed, root : as requested
    classes : list of str
    images : Tensor (n, C, 32, 32)
        Normalised sample batch (CPU).
    targets : LongTensor (n,)
        Its labels.
    taps : dict[str, list of str]
        Stage taps per model (the card's, else the model's defaults).
    feats : dict[str, OrderedDict[str, Tensor (n, C_k, H_k, W_k)]]
        Tap outputs per model (CPU).
    predictions : dict[str, dict]
        :func:`tffd_viz.features.prediction_summary` per model (``pred``, ``accuracy``, ``confusion``).
    numbers : list of dict
        Rows of the summary table, appended by the sections (columns :data:`SUMMARY_COLUMNS`).
    heldout : ImageDataset or None
        The whole test split of the dataset, on which :meth:`comparison` measures both models (whatever
        split the sample batch comes from).
    normalisation : dict[str, ModelNormalisation]
        How each model's inputs are normalised (its card's statistics, else a marked guess); a model whose
        statistics differ from the dataset's sees the batch through an input adapter.
    guess_accuracy : dict[str, dict[str, float]]
        For guessed models only: batch accuracy (%) under each choice of ``NORMALISATIONS``.
    """

    paths: dict[str, str]
    names: dict[str, str]
    labels: dict[str, str]
    models: dict[str, nn.Module]
    cards: dict[str, dict]
    dataset: str
    split: str
    n: int
    seed: int
    root: str | None
    classes: list[str]
    images: Tensor
    targets: Tensor
    taps: dict[str, list[str]]
    feats: dict[str, OrderedDict[str, Tensor]]
    predictions: dict[str, dict[str, Any]]
    numbers: list[dict[str, Any]] = field(default_factory=list)
    heldout: ImageDataset | None = None
    normalisation: dict[str, ModelNormalisation] = field(default_factory=dict)
    guess_accuracy: dict[str, dict[str, float]] = field(default_factory=dict)
    _comparison: dict[str, Any] | None = field(default=None, repr=False)

    def comparison(self) -> dict[str, Any]:
        """:func:`tffd_viz.verdicts.pair_comparison` of A and B on the whole split, computed once.

        The other seeds of each model's configuration are the checkpoints beside it with the same
        configuration (:func:`tffd_viz.verdicts.seed_siblings`); cards' ``heldout_terms`` are used where they
        describe this split.
        """
        if self._comparison is None:
            if self.heldout is None:
                raise TffdVizError("the report inputs hold no held-out split to compare A and B on")
            seeds: dict[str, list[nn.Module]] = {}
            seed_held: dict[str, list[Any]] = {}
            for key in ("A", "B"):
                here = Path(self.paths[key]).resolve()
                shipped = list_checkpoints(here.parent) if here.parent.is_dir() else []
                others = [p for p in seed_siblings(self.cards[key], shipped) if p.resolve() != here]
                loaded = [load_checkpoint(p, device=str(_model_device(self.models[key]))) for p in others]
                seeds[key] = [m for m, _ in loaded]
                seed_held[key] = [c.get("heldout_terms") for _, c in loaded]
            self._comparison = pair_comparison(
                self.models, self.heldout, heldouts={k: self.cards[k].get("heldout_terms") for k in ("A", "B")},
                seeds=seeds, seed_heldouts=seed_held, split="test", cka_batch=CKA_BATCH,
            )
        return self._comparison

    def record(
        self,
        quantity: str,
        item: str = "",
        a: float | None = None,
        b: float | None = None,
        ab: float | None = None,
    ) -> None:
        """Append one row to the summary numbers (``a``/``b`` per model, ``ab`` a comparison)."""
        self.numbers.append(
            {"quantity": quantity, "layer / term": item, "A": _float(a), "B": _float(b), "A vs B": _float(ab)}
        )

    def tap_positions(self) -> list[tuple[str | None, str | None]]:
        """Pairs ``(tap of A, tap of B)`` by position (None where one model has fewer taps)."""
        ta, tb = self.taps["A"], self.taps["B"]
        return [
            (ta[i] if i < len(ta) else None, tb[i] if i < len(tb) else None)
            for i in range(max(len(ta), len(tb)))
        ]


def _float(v: float | None) -> float:
    return math.nan if v is None else float(v)


def _model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _position_name(ta: str | None, tb: str | None) -> str:
    return str(ta if ta == tb or tb is None else tb if ta is None else f"{ta} / {tb}")


def _check_fits(key: str, path: str, card: Mapping[str, Any], name: str, in_chans: int, classes: int) -> None:
    if card.get("in_chans") not in (None, in_chans) or card.get("num_classes") not in (None, classes):
        raise DataError(
            f"model {key} ({path}) expects {card.get('in_chans')} input channel(s) and "
            f"{card.get('num_classes')} classes, but dataset {name!r} has {in_chans} and {classes}; "
            "pick a matching dataset"
        )


def load_report_inputs(
    path_a: str | Path,
    path_b: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    n: int = 256,
    seed: int = 0,
    split: str = "test",
    device: str = "cpu",
    normalisation: str | Mapping[str, str] = "dataset",
) -> ReportInputs:
    """Load both checkpoints and the sample batch, with both models' taps and predictions on it.

    Parameters
    ----------
    path_a, path_b : path
        Checkpoints (any format :func:`tffd_viz.checkpoints.load_checkpoint` reads).
    dataset : str, optional
        Default: model A's card.
    root, n, seed, split
        As in :func:`tffd_viz.data.sample_batch`.
    device : str
        Where the models run (``"cpu"``, ``"cuda"``, ``"auto"``).
    normalisation : str or mapping model key -> str
        The guess (a key of ``tffd_viz.normalisation.NORMALISATIONS``) for a model whose card has no
        ``mean``/``std``; one for both or ``{"A": ..., "B": ...}``. Cards that say are followed.

    Raises
    ------
    DataError
        No dataset given or named by A's card, or a model that does not fit the dataset.
    CheckpointError
        Unreadable checkpoints.
    """
    paths = {"A": str(path_a), "B": str(path_b)}
    loaded = {k: load_checkpoint(p, device=device) for k, p in paths.items()}
    models = {k: m for k, (m, _) in loaded.items()}
    cards = {k: c for k, (_, c) in loaded.items()}
    name = dataset or cards["A"].get("dataset")
    if not name:
        raise DataError(f"model A's card ({paths['A']}) names no dataset; pass dataset= (--dataset)")
    image_size = card_image_size(cards["A"], name)  # 224 for torchvision's archs: the lazily decoded image folder
    bundle = load_dataset(name, root, image_size=image_size)
    for key in ("A", "B"):
        _check_fits(key, paths[key], cards[key], name, bundle.in_chans, len(bundle.classes))
    images, targets = sample_batch(name, split=split, n=n, seed=seed, root=root, image_size=image_size)
    norms, guess_accuracy = _input_normalisations(models, cards, bundle, images, targets, normalisation)
    taps = {k: resolve_taps(models[k], cards[k].get("taps") or None) for k in models}
    feats = {k: extract_features(models[k], images, taps[k]) for k in models}
    predictions = {k: prediction_summary(models[k], images, targets, len(bundle.classes)) for k in models}
    names = {k: Path(p).name.removesuffix(".safetensors") for k, p in paths.items()}
    return ReportInputs(
        paths=paths,
        names=names,
        labels={k: f"{k} · {v}" for k, v in names.items()},
        models=models,
        cards=cards,
        dataset=name,
        split=split,
        n=n,
        seed=seed,
        root=root,
        classes=list(bundle.classes),
        images=images,
        targets=targets,
        taps=taps,
        feats=feats,
        predictions=predictions,
        heldout=bundle.test,
        normalisation=norms,
        guess_accuracy=guess_accuracy,
    )


def _input_normalisations(
    models: dict[str, nn.Module], cards: dict[str, dict], bundle: Any, images: Tensor, targets: Tensor,
    guess: str | Mapping[str, str],
) -> tuple[dict[str, ModelNormalisation], dict[str, dict[str, float]]]:
    """Each model's normalisation (card, else the guess), the batch accuracy per choice of the guessed ones,
    and an input adapter attached where a model's statistics differ from the dataset's."""
    guesses = {k: guess for k in models} if isinstance(guess, str) else dict(guess)
    norms: dict[str, ModelNormalisation] = {}
    accs: dict[str, dict[str, float]] = {}
    for key, model in models.items():
        norms[key] = model_normalisation(cards[key], bundle.mean, bundle.std, guess=guesses.get(key, "dataset"))
        if norms[key].guessed:
            accs[key] = accuracy_by_normalisation(model, images, targets, bundle.mean, bundle.std)
        stats = adapter_stats(norms[key], bundle.mean, bundle.std)
        if stats is not None:
            attach_input_normalisation(model, *stats)
    return norms, accs


def _normalisation_text(ctx: ReportInputs) -> str:
    """A paragraph on how each model sees the batch, guesses marked, and the caveat for models trained elsewhere."""
    parts = []
    for key in ("A", "B"):
        card, norm = ctx.cards[key], ctx.normalisation.get(key)
        known = f" It was recognised as {card['recognised_as']}." if card.get("recognised_as") else ""
        if norm is not None:
            text = f"Input normalisation of {key}: {norm.describe()}."
            if norm.guessed:
                choices = ", ".join(f"{NORMALISATIONS[c]} {a:.2f} %" for c, a in ctx.guess_accuracy.get(key, {}).items())
                text = (f"Input normalisation of {key} is a guess: its file does not say, so {NORMALISATIONS[str(norm.choice)]} "
                        f"were used (batch accuracy with each choice: {choices}).")
            parts.append(text + known)
        if trained_elsewhere(card):
            best = card.get("best_acc")
            parts.append(f"{key}: {DATA_COPY_CAVEAT}" + (f" Its file reports {best:.2f} %." if best is not None else ""))
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------


def _overview_section(ctx: ReportInputs) -> ReportSection:
    pd, plots, summary = _extras()
    preds = {k: p["pred"] for k, p in ctx.predictions.items()}
    accs = {k: float(p["accuracy"]) for k, p in ctx.predictions.items()}
    differ = summary.disagreements(preds["A"], preds["B"], ctx.targets)
    ctx.record("top-1 accuracy on the batch (%)", a=accs["A"], b=accs["B"])
    ctx.record("images where A and B disagree", ab=float(len(differ)))
    rows = [
        {
            "model": ctx.labels[k],
            "batch top-1 (%)": accs[k],
            "correct": int((preds[k] == ctx.targets).sum()),
            "images": ctx.n,
            "card final top-1 (%)": _float(ctx.cards[k].get("final_acc")),
        }
        for k in ("A", "B")
    ]
    confusions = {ctx.labels[k]: ctx.predictions[k]["confusion"] for k in ("A", "B")}
    nplots = _noise_plots()
    if min(accs.values()) >= ERROR_BARS_ABOVE:
        figures = [nplots.class_error_figure(confusions, ctx.classes,
                                             title=f"Errors per class on the batch ({ctx.n} images)")]
        matrices = f"per-class errors (both models are above {ERROR_BARS_ABOVE:g} % on the batch)"
    else:
        figures = [nplots.confusion_pair_figure(confusions, ctx.classes,
                                                title=f"Confusion matrices on the batch ({ctx.n} images)")]
        matrices = "confusion matrices (true class in rows, % of the class)"
    figures.append(
        plots.training_curves_figure({ctx.labels[k]: ctx.cards[k].get("history") or [] for k in ("A", "B")})
    )
    intro = (
        f"Model A ({ctx.paths['A']}) and model B ({ctx.paths['B']}) on {ctx.n} {ctx.split} images of "
        f"{ctx.dataset} (sample seed {ctx.seed}). A classifies {accs['A']:.2f} % of them correctly, B "
        f"{accs['B']:.2f} %; the two disagree on {len(differ)} image(s).\n\n"
        f"B: {lambda_text(ctx.cards['B'])}. The cards record how each model was trained; the figures show the "
        f"{matrices} on the batch, and the curves are the per-epoch history stored in each card."
    )
    if _normalisation_text(ctx):
        intro += "\n\n" + _normalisation_text(ctx)
    tables = [
        ReportTable("Model cards", summary.card_table(ctx.cards, names=ctx.names)),
        ReportTable("Accuracy on the sample batch", pd.DataFrame(rows)),
    ]
    return ReportSection("overview", "Overview", intro, figures, tables)


def _changed_section(ctx: ReportInputs) -> ReportSection:
    pd, _, _ = _extras()
    comp = ctx.comparison()
    rows = comp["rows"]
    seeds = comp["seeds"]
    batches = comp["measures"]["A"]["heldout"].get("batches")
    if max(seeds.values()) >= 2:
        source = (f"the spread over the shipped seeds ({seeds['A']} of A's configuration, {seeds['B']} of B's; "
                  "CKA: the lowest seed-to-seed CKA)")
    else:
        source = (f"the spread over the {batches} batches of the split (no second seed is shipped; accuracy: the "
                  "binomial sampling noise of the split; CKA: no reference)")
    intro = (
        f"Each quantity is measured on the whole {comp['split']} split ({comp['n']} images, eval mode, in "
        f"{batches} batches that each rank their own channels as the loss does); A: "
        f"{lambda_text(ctx.cards['A'])}; B: {lambda_text(ctx.cards['B'])}. A difference is written up only when "
        f"it exceeds its noise reference, {NOISE_SIGMAS:g} standard deviations of the difference of two single "
        f"runs, from {source}; otherwise the verdict reads 'within ... noise'.\n\n"
        "Every Tf-FD term comes raw and divided by the activation energy (mean square) of the maps it compares: "
        "an MSE falls when the maps shrink as a whole, so a raw term that falls while its scale-free version "
        "stays within noise is a drop of activation energy, not mimicry. The paired cosine of each "
        "salient/redundant pair is set against the cosine of random channel pairs of the same layer.\n\n"
        + f"Finding: {effect_summary(rows)}\n\n"
        + "\n\n".join(_plain(line) for line in comp["text"])
    )
    frame = pd.DataFrame(rows, columns=list(WHAT_CHANGED_COLUMNS))
    figures = [_noise_plots().noise_ratio_figure(rows)]
    tables = [ReportTable("A vs B: difference, noise reference and verdict per quantity", frame)]
    if comp["mean_rows"]:
        intro += (f"\n\nOver all shipped seeds (the mean of A's {seeds['A']} seeds against the mean of B's "
                  f"{seeds['B']}, against the noise of a mean): {effect_summary(comp['mean_rows'])}")
        tables.append(ReportTable("Over all seeds: mean of A's configuration vs mean of B's",
                                  pd.DataFrame(comp["mean_rows"], columns=list(WHAT_CHANGED_COLUMNS))))
    elsewhere = [k for k in ("A", "B") if trained_elsewhere(ctx.cards[k])]
    if elsewhere:  # held-out accuracy of a model trained on another copy of the data
        intro += f"\n\n{' and '.join(elsewhere)}: {DATA_COPY_CAVEAT}"
    return ReportSection("changed", "A vs B: what changed", intro, figures, tables)


def _criteria_scores(ctx: ReportInputs, key: str, tap: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Scores of every :data:`REPORT_CRITERIA` entry that runs on this model and tap, and why others fail."""
    scores: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for name in REPORT_CRITERIA:
        crit = get_criterion(name)
        try:
            if crit.needs == "features":
                scores[name] = channel_scores(crit, features=ctx.feats[key][tap])
            else:
                scores[name] = channel_scores(
                    crit, model=ctx.models[key], images=ctx.images, labels=ctx.targets, tap=tap
                )
        except TffdVizError as exc:
            skipped[name] = str(exc)
    return scores, skipped


def _salient_share(scores: Tensor) -> float:
    """Percentage of the total saliency held by the top ``C // 2`` channels."""
    ordered = torch.sort(scores.double(), descending=True).values
    total = float(ordered.sum())
    return 100.0 * float(ordered[: ordered.numel() // 2].sum()) / total if total > 0 else math.nan


def identical_criteria(names: Sequence[str], spearman: np.ndarray, tol: float = 1e-9) -> dict[str, list[str]]:
    """Group criteria that rank the channels identically (Spearman ρ = 1 with an earlier one).

    After a ReLU, for instance, ``l1`` (mean |F|) and ``mean`` (mean F) are the same numbers, so their ρ with any
    third criterion is the same too: the report shows one column for both.

    Returns
    -------
    dict
        First name of each group -> the names of the group, in ``names`` order.
    """
    groups: dict[str, list[str]] = {}
    for j, name in enumerate(names):
        head = next((h for h in groups if spearman[names.index(h), j] >= 1.0 - tol), None)
        groups.setdefault(head or name, []).append(name)
    return groups


def _ranking_section(ctx: ReportInputs) -> ReportSection:
    pd, plots, _ = _extras()
    nplots = _noise_plots()
    figures: list[go.Figure] = []
    for ta, tb in ctx.tap_positions():
        scores = {
            ctx.labels[k]: channel_scores("tffd", features=ctx.feats[k][t])
            for k, t in (("A", ta), ("B", tb))
            if t is not None
        }
        figures.append(nplots.saliency_gap_figure(scores, tap=_position_name(ta, tb)))
    agreement_rows: list[dict[str, Any]] = []
    skipped_all: dict[str, str] = {}
    merged: set[str] = set()
    heatmap = None
    for key in ("A", "B"):
        for tap in ctx.taps[key]:
            scores, skipped = _criteria_scores(ctx, key, tap)
            skipped_all.update(skipped)
            if len(scores) < 2:
                continue
            agree = rank_agreement(scores)
            names = list(agree["names"])
            groups = identical_criteria(names, agree["spearman"])
            merged.update(" = ".join(g) for g in groups.values() if len(g) > 1)
            heatmap = (agree, key, tap)  # the last one: B's deepest layer
            row: dict[str, Any] = {
                "model": ctx.labels[key],
                "layer": tap,
                "channels": int(scores["tffd"].numel()),
            }
            row.update(
                {
                    f"ρ(tffd, {' = '.join(group)})": float(agree["spearman"][0, names.index(head)])
                    for head, group in groups.items()
                    if head != "tffd"
                }
            )
            agreement_rows.append(row)
    if heatmap is not None:
        agree, key, tap = heatmap
        fig = plots.rank_agreement_figure(
            agree["spearman"], agree["names"], title=f"Rank agreement between criteria — {ctx.labels[key]} · {tap}"
        )
        figures.append(fig.update_layout(height=340, width=420))
    share = {
        k: _salient_share(channel_scores("tffd", features=ctx.feats[k][ctx.taps[k][-1]])) for k in ("A", "B")
    }
    intro = (
        "Intra-layer Tf-FD sorts the channels of a layer by their saliency (the mean of each channel's "
        "spatially L2-normalised map) and pulls the redundant bottom half towards the salient top half, "
        f"pair by pair. In the deepest layer the salient half holds {share['A']:.1f} % of the total saliency "
        f"for A ({ctx.taps['A'][-1]}) and {share['B']:.1f} % for B ({ctx.taps['B'][-1]}).\n\n"
        "The bars show the sorted saliency on this batch, on an axis that does not start at 0 (the annotation "
        "gives the mean saliency of the salient half over that of the redundant half); the table and the "
        "heatmap (B's deepest layer) show how well other channel importance criteria rank the channels the "
        "same way (Spearman ρ)."
        + (f" Criteria that rank every layer identically share a column: {'; '.join(sorted(merged))}."
           if merged else "")
    )
    if skipped_all:
        intro += "\n\nCriteria that did not run here: " + "; ".join(
            f"{k} ({v})" for k, v in skipped_all.items()
        )
    tables = [
        ReportTable(
            "Spearman ρ between the Tf-FD saliency and each other criterion", pd.DataFrame(agreement_rows)
        )
    ]
    return ReportSection("ranking", "Channel ranking", intro, figures, tables)


def card_lambdas(card: Mapping[str, Any]) -> tuple[float, float, str]:
    """Return ``(lambda_intra, lambda_inter, source)``: the card's values, else the paper's."""
    li, le = card.get("lambda_intra"), card.get("lambda_inter")
    if li is None or le is None:
        return PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, "paper"
    return float(li), float(le), "card"


def _trained_terms(card: Mapping[str, Any], rep: TermsReport) -> tuple[list[str] | None, list | None]:
    """The stages and pairs the card says Tf-FD trained on, when computed here (else None = all terms)."""
    stages, pairs = card.get("stages"), card.get("pairs")
    try:
        rep.selected(stages, pairs)
    except TffdVizError:
        return None, None
    return stages, pairs


def _union(keys: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for ks in keys:
        out += [k for k in ks if k not in out]
    return out


def _losses_section(ctx: ReportInputs) -> ReportSection:
    pd, plots, _ = _extras()
    reps = {k: tffd_terms_on_batch(ctx.models[k], ctx.images, ctx.targets, ctx.taps[k]) for k in ("A", "B")}
    ctx.record("cross-entropy on the batch", a=reps["A"].ce, b=reps["B"].ce)
    for family in ("intra", "inter"):
        for name in _union([list(getattr(reps[k], family)) for k in ("A", "B")]):
            ctx.record(
                f"{family}-layer term (unweighted)",
                name,
                a=getattr(reps["A"], family).get(name),
                b=getattr(reps["B"], family).get(name),
            )
    weighted: dict[str, dict[str, float]] = {}
    term_rows: list[dict[str, Any]] = []
    lambda_text = []
    for key in ("A", "B"):
        li, le, source = card_lambdas(ctx.cards[key])
        stages, pairs = _trained_terms(ctx.cards[key], reps[key])
        weighted[ctx.labels[key]] = reps[key].weighted(li, le, stages, pairs)
        term_rows += [{"model": ctx.labels[key], **row} for row in reps[key].rows(li, le, stages, pairs)]
        lambda_text.append(f"{key}: λ_intra = {li:g}, λ_inter = {le:g} ({source})")
    ctx.record(
        "λ-weighted Tf-FD total", a=weighted[ctx.labels["A"]]["tffd"], b=weighted[ctx.labels["B"]]["tffd"]
    )
    comp = ctx.comparison()
    held = {ctx.labels[k]: comp["measures"][k]["heldout"] for k in ("A", "B")}
    nplots = _noise_plots()
    figures = [
        nplots.heldout_terms_figure(held, "intra"),
        nplots.heldout_terms_figure(held, "inter"),
        plots.terms_bar_figure(
            {ctx.labels[k]: {"intra": reps[k].intra, "inter": reps[k].inter} for k in ("A", "B")}, log_y=True,
            title=f"Tf-FD terms on the sample batch ({ctx.n} images, unweighted)",
        ),
        plots.weighted_contributions_figure(
            {label: {c: w[c] for c in ("ce", "intra", "inter")} for label, w in weighted.items()}, log_y=True
        ),
    ]
    mean_intra = {
        k: float(np.mean(list(reps[k].intra.values()))) if reps[k].intra else math.nan for k in ("A", "B")
    }
    term_lines = [
        _plain(f"* {r['quantity']}, {r['item']}: A {r['A']:.4g}, B {r['B']:.4g}: {r['verdict']}.")
        for r in comp["rows"]
        if r["quantity"] in ("intra term (raw)", "inter term (raw)") and r["A"] is not None and r["B"] is not None
    ]
    held_rows = [
        {"model": label, "family": family, "term": item, "mean": h[family][item],
         "std over batches": (h.get(f"{family}_std") or {}).get(item),
         "term / energy": (h.get(f"{family}_rel") or {}).get(item),
         "std (term / energy)": (h.get(f"{family}_rel_std") or {}).get(item),
         "energy of the stage": (h.get("energy") or {}).get(item) if family == "intra" else None}
        for label, h in held.items() for family in ("intra", "inter") for item in h.get(family) or {}
    ]
    batches = comp["measures"]["A"]["heldout"].get("batches")
    intro = (
        f"Held-out terms first: eval mode, the whole {comp['split']} split ({comp['n']} images) in {batches} "
        "batches, mean ± std over batches, raw next to the term divided by the activation energy of the maps "
        "it compares (a smaller activation scale alone lowers an MSE), and the energy per stage:\n\n"
        + "\n\n".join(term_lines)
        + "\n\nEach intra-layer term is the mean squared difference between a layer's salient half and its "
        "paired redundant half; each inter-layer term the mean squared difference between a shallow layer "
        f"and a deeper one pooled to the same size. On the sample batch the mean intra term is "
        f"{mean_intra['A']:.4g} for A and {mean_intra['B']:.4g} for B.\n\n"
        f"Weighted contributions use {'; '.join(lambda_text)}, over the stages and pairs each card trained "
        "on (mean over the terms of a family, no warm-up), against the batch cross-entropy."
    )
    tables = [
        ReportTable("Held-out terms, raw and scale-free, with their spread over batches", pd.DataFrame(held_rows)),
        ReportTable(
            "Weighted contributions", pd.DataFrame([{"model": label, **w} for label, w in weighted.items()])
        ),
        ReportTable("Every term: unweighted value and weighted contribution", pd.DataFrame(term_rows)),
    ]
    return ReportSection("losses", "Losses", intro, figures, tables)


def _similarity_section(ctx: ReportInputs) -> ReportSection:
    pd, plots, _ = _extras()
    figures: list[go.Figure] = []
    views = {
        k: {t: channel_similarity_views(ctx.models[k], ctx.images, t) for t in ctx.taps[k]}
        for k in ("A", "B")
    }
    paired = {k: {t: v["paired"] for t, v in views[k].items()} for k in ("A", "B")}
    comp = ctx.comparison()
    cosine = {ctx.labels[k]: comp["measures"][k]["cosine"] for k in ("A", "B")}
    figures.append(_noise_plots().cosine_reference_figure(
        cosine, title=f"Paired cosine vs random channel pairs, whole {comp['split']} split ({comp['n']} images), "
                      "mean ± std over batches"))
    rows: list[dict[str, Any]] = []
    for key in ("A", "B"):
        for tap, view in views[key].items():
            cos = view["cosine"]
            rows.append(
                {
                    "model": ctx.labels[key],
                    "layer": tap,
                    "channels": cos.shape[0],
                    "mean paired cosine": float(view["paired"].mean()),
                    "random-pair cosine": random_pair_cosine(cos) if cos.shape[0] > 1 else math.nan,
                }
            )
        tap = ctx.taps[key][-1]  # one matrix per model: the deepest layer
        figures.append(
            plots.cosine_matrix_figure(
                views[key][tap]["cosine"],
                order=views[key][tap]["order"],
                title=f"Channel cosine similarity, sorted by saliency — {ctx.labels[key]} · {tap}",
            ).update_layout(height=360)
        )
    for ta, tb in ctx.tap_positions():
        values = {ctx.labels[k]: paired[k][t] for k, t in (("A", ta), ("B", tb)) if t is not None}
        figures.append(plots.paired_similarity_figure(values, tap=_position_name(ta, tb)))
        ctx.record(
            "mean paired cosine (salient vs redundant)",
            _position_name(ta, tb),
            a=float(paired["A"][ta].mean()) if ta else None,
            b=float(paired["B"][tb].mean()) if tb else None,
        )
    alignment = {
        ctx.labels[k]: inter_layer_alignments(ctx.models[k], ctx.images, ctx.taps[k])
        for k in ("A", "B")
        if len(ctx.taps[k]) > 1
    }
    for pair in _union([list(v) for v in alignment.values()]):
        a, b = (alignment.get(ctx.labels[k], {}).get(pair) for k in ("A", "B"))
        ctx.record(
            "mean inter-layer alignment (cosine)",
            pair,
            a=None if a is None else float(a.mean()),
            b=None if b is None else float(b.mean()),
        )
    if alignment:
        figures.append(plots.alignment_figure(alignment))
    last = {k: ctx.taps[k][-1] for k in ("A", "B")}
    lines = [
        _plain(f"* {r['quantity']}, {r['item']}: A {r['A']:.3f}, B {r['B']:.3f}: {r['verdict']}.")
        for r in comp["rows"]
        if r["quantity"].startswith(("paired − random", "inter-layer alignment"))
        and r["A"] is not None and r["B"] is not None
    ]
    intro = (
        "Cosine similarity between channels, each flattened over images and positions. The intra-layer loss "
        "pulls each redundant channel towards its salient partner, but an MSE also falls when the maps shrink; "
        "the paired cosine (scale-free) says whether the partners became more alike, and only against the "
        "cosine of random channel pairs of the same layer (a paired cosine at the random-pair level means no "
        f"pair structure). Whole {comp['split']} split, B − A against the noise:\n\n"
        + "\n\n".join(lines)
        + "\n\nOn the sample batch the deepest layer's mean paired cosine is "
        f"{float(paired['A'][last['A']].mean()):.3f} for A and {float(paired['B'][last['B']].mean()):.3f} "
        "for B. The alignment panels compare channel c of a shallow layer (pooled to the deep layer's size) "
        "with channel c of the deep layer, the pairing inter-layer Tf-FD trains (an arbitrary pairing of "
        "channel indices)."
    )
    return ReportSection(
        "similarity",
        "Similarity",
        intro,
        figures,
        [ReportTable("Channel similarity per layer", pd.DataFrame(rows))],
    )


def _cka_section(ctx: ReportInputs) -> ReportSection:
    pd, plots, _ = _extras()
    cka = layer_cka_matrices(
        ctx.models["A"], ctx.models["B"], ctx.images, ctx.taps["A"], ctx.taps["B"], batch_size=CKA_BATCH
    )
    ab, ta, tb = cka["AvB"]
    for i in range(min(len(ta), len(tb))):
        ctx.record(
            "linear CKA, A layer vs the same B layer", _position_name(ta[i], tb[i]), ab=float(ab[i, i])
        )
    figures = [
        plots.cka_heatmap_figure(
            ab,
            ta,
            tb,
            title="Linear CKA between the layers of A and B",
            label_a=ctx.labels["A"],
            label_b=ctx.labels["B"],
        ),
        plots.cka_grid_figure(
            {"A vs A": (*cka["AvA"], "A", "A"), "B vs B": (*cka["BvB"], "B", "B")},
            title="Linear CKA within each model",
        ),
    ]
    comp = ctx.comparison()
    figures.insert(1, _noise_plots().cka_reference_figure(
        comp["cka_ab"], comp["cka_seeds"],
        title=f"Same layer of A and B against seed to seed, whole {comp['split']} split ({comp['n']} images)"))
    cka_lines = [_plain(f"* {r['item']}: {r['verdict']}.") for r in comp["rows"]
                 if r["quantity"].startswith("1 − linear CKA")]
    table = pd.DataFrame(ab, columns=[f"B {t}" for t in tb])
    table.insert(0, "A layer", list(ta))
    full, tail = divmod(ctx.n, CKA_BATCH)
    # a tail under 4 images joins the last minibatch
    minibatches = full + (1 if tail >= 4 or full == 0 else 0)
    diag = ", ".join(f"{_position_name(ta[i], tb[i])} {ab[i, i]:.3f}" for i in range(min(len(ta), len(tb))))
    intro = (
        "Centered kernel alignment (linear kernel) compares what two layers represent, independent of "
        "rotations and scale of their features: 1 = the same representation up to those, 0 = unrelated. "
        f"It is estimated with the unbiased HSIC_1 summed over {minibatches} minibatch(es) of about "
        f"{min(CKA_BATCH, ctx.n)} images (the app's minibatch estimator).\n\n"
        f"Same layer in A and B: {diag}.\n\n"
        "Two seeds of one configuration never give CKA 1; the reference is the seed-to-seed CKA over the "
        f"whole {comp['split']} split (grey):\n\n" + "\n\n".join(cka_lines)
    )
    return ReportSection(
        "cka", "CKA", intro, figures, [ReportTable("Linear CKA, A (rows) vs B (columns)", table)]
    )


def _summary_section(ctx: ReportInputs) -> ReportSection:
    pd, _, _ = _extras()
    frame = pd.DataFrame(ctx.numbers, columns=list(SUMMARY_COLUMNS))
    intro = (
        f"The numbers behind the sections above, all measured on the same {ctx.n} {ctx.split} images of "
        f"{ctx.dataset}: per-model values in columns A and B, comparisons of the two models in 'A vs B'."
    )
    return ReportSection(
        "summary", "Summary", intro, [], [ReportTable("Summary of the measured numbers", frame)]
    )


SECTIONS: dict[str, Callable[[ReportInputs], ReportSection]] = {
    "overview": _overview_section,
    "changed": _changed_section,
    "ranking": _ranking_section,
    "losses": _losses_section,
    "similarity": _similarity_section,
    "cka": _cka_section,
    "summary": _summary_section,
}
"""Section id -> builder, in report order; ``summary`` must come last (it reads what the others recorded)."""


def report_sections(
    path_a: str | Path,
    path_b: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    n: int = 256,
    seed: int = 0,
    split: str = "test",
    device: str = "cpu",
    progress: bool = True,
    normalisation: str | Mapping[str, str] = "dataset",
) -> list[ReportSection]:
    """Compute every section of the report, in order (one progress-bar tick per section).

    Parameters
    ----------
    path_a, path_b, dataset, root, n, seed, split, device, normalisation
        As in :func:`load_report_inputs`.
    progress : bool
        Show a tqdm progress bar on stderr.

    Returns
    -------
    list of ReportSection
        One per entry of :data:`SECTIONS`, in that order.
    """
    args = (path_a, path_b, dataset, root, n, seed, split, device, normalisation)
    return _sections(load_report_inputs, args, progress)[1]


def _sections(
    load: Callable[..., ReportInputs], args: tuple, progress: bool
) -> tuple[ReportInputs, list[ReportSection]]:
    _extras()
    with tqdm(total=len(SECTIONS), desc="tffd-viz report", unit="section", disable=not progress) as bar:
        bar.set_postfix_str("loading models and batch")
        ctx = load(*args)
        sections = []
        for name, build in SECTIONS.items():
            bar.set_postfix_str(name)
            sections.append(build(ctx))
            bar.update(1)
    return ctx, sections


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2rem; margin-top: 2.5rem; }
h3 { margin-bottom: 0.3rem; font-size: 1rem; }
table.tbl, table.meta { border-collapse: collapse; font-size: 0.85rem; margin: 0.4rem 0 1.2rem 0; }
table.tbl th, table.tbl td, table.meta th, table.meta td { border: 1px solid #ddd; padding: 0.2rem 0.5rem;
       text-align: left; vertical-align: top; }
table.tbl th { background: #f4f4f4; } table.meta th { background: #fafafa; font-weight: 600; }
.figure { margin: 0.8rem 0 1.6rem 0; } nav ol { columns: 2; } .intro { max-width: 60rem; }
footer { margin-top: 3rem; color: #777; font-size: 0.8rem; }
"""


def _number_format(v: float) -> str:
    return "—" if not math.isfinite(v) else f"{v:.4g}"


def _table_html(table: ReportTable) -> str:
    body = table.frame.to_html(
        index=False, border=0, classes="tbl", na_rep="—", float_format=_number_format, escape=True
    )
    return f"<h3>{html.escape(table.title)}</h3>\n{body}"


def _paragraphs(text: str) -> str:
    return "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in text.split("\n\n") if p.strip())


def render_html(
    sections: Sequence[ReportSection], title: str = "Tf-FD report", meta: Mapping[str, Any] | None = None
) -> str:
    """Render sections to one self-contained HTML page (plotly.js inline, once, in the head).

    Parameters
    ----------
    sections : list of ReportSection
    title : str
    meta : mapping, optional
        Rows of the header table (e.g. files, dataset, batch).

    Returns
    -------
    str
        The HTML document; every figure is a ``<div class="plotly-graph-div">`` with id
        ``"<section id>-fig<i>"``.
    """
    from plotly.offline import get_plotlyjs

    _extras()
    nav = "\n".join(f'<li><a href="#{s.id}">{html.escape(s.title)}</a></li>' for s in sections)
    meta_rows = "\n".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in (meta or {}).items()
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style>",
        f'<script type="text/javascript">{get_plotlyjs()}</script>',
        "</head>",
        "<body>",
        "<header>",
        f"<h1>{html.escape(title)}</h1>",
        f'<table class="meta">{meta_rows}</table>',
        f"<nav><ol>{nav}</ol></nav>",
        "</header>",
    ]
    config = {"displaylogo": False, "responsive": True}
    for s in sections:
        parts += [
            f'<section id="{html.escape(s.id)}">',
            f"<h2>{html.escape(s.title)}</h2>",
            f'<div class="intro">{_paragraphs(s.intro)}</div>',
        ]
        parts += [_table_html(t) for t in s.tables]
        for i, fig in enumerate(s.figures):
            div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"{s.id}-fig{i}", config=config)
            parts.append(f'<div class="figure">{div}</div>')
        parts.append("</section>")
    parts += [
        f"<footer>tffd-viz {html.escape(__version__)} · "
        "Teacher-free Feature Distillation (Li, ECCV 2022)</footer>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts)


def _meta(ctx: ReportInputs, device: str) -> dict[str, Any]:
    return {
        "model A": ctx.paths["A"],
        "model B": ctx.paths["B"],
        "dataset": ctx.dataset,
        "sample batch": f"{ctx.n} {ctx.split} images, seed {ctx.seed}",
        "device": device,
        "taps A": ", ".join(ctx.taps["A"]),
        "taps B": ", ".join(ctx.taps["B"]),
    }


def build_report(
    path_a: str | Path,
    path_b: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    n: int = 256,
    seed: int = 0,
    split: str = "test",
    device: str = "cpu",
    progress: bool = True,
    normalisation: str | Mapping[str, str] = "dataset",
) -> str:
    """Return the whole report as one self-contained HTML document (arguments as :func:`report_sections`)."""
    ctx, sections = _sections(
        load_report_inputs, (path_a, path_b, dataset, root, n, seed, split, device, normalisation), progress
    )
    title = f"Tf-FD report: {Path(ctx.paths['A']).name} vs {Path(ctx.paths['B']).name}"
    return render_html(sections, title=title, meta=_meta(ctx, device))


def write_report(
    path_a: str | Path,
    path_b: str | Path,
    dataset: str | None = None,
    root: str | None = None,
    n: int = 256,
    seed: int = 0,
    split: str = "test",
    device: str = "cpu",
    progress: bool = True,
    *,
    out: str | Path,
    normalisation: str | Mapping[str, str] = "dataset",
) -> Path:
    """Build the report (see :func:`build_report`) and write it to ``out`` (parent folders created).

    Returns
    -------
    Path
        ``out``.
    """
    text = build_report(path_a, path_b, dataset, root, n, seed, split, device, progress, normalisation)
    path = Path(out).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------


def add_report_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``tffd-viz report``."""
    p.add_argument("--a", required=True, metavar="CKPT", help="checkpoint of model A (usually the baseline)")
    p.add_argument(
        "--b", required=True, metavar="CKPT", help="checkpoint of model B (usually the Tf-FD model)"
    )
    p.add_argument(
        "--dataset", default=None, help="digits, cifar10, cifar100 or imagefolder (default: A's card)"
    )
    p.add_argument(
        "--data-root", default=None, help="data root for CIFAR / image folders ($TFFD_DATA, ./data)"
    )
    p.add_argument("--n", type=int, default=256, help="images in the sample batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample batch (default 0)")
    p.add_argument("--split", default="test", choices=("test", "train"))
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--out", default="report.html", help="output HTML file (default report.html)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for key in ("a", "b"):
        p.add_argument(f"--norm-{key}", default="dataset", choices=tuple(NORMALISATIONS),
                       help=f"input normalisation of model {key.upper()} when its checkpoint does not say (no mean/std "
                            "in its card): a guess, marked in the report (default: dataset statistics)")


def run_report(args: argparse.Namespace) -> int:
    """Run ``tffd-viz report``: write the HTML file, print its path, return 0."""
    path = write_report(
        args.a,
        args.b,
        dataset=args.dataset,
        root=args.data_root,
        n=args.n,
        seed=args.seed,
        split=args.split,
        device=args.device,
        progress=not args.quiet,
        out=args.out,
        normalisation={"A": args.norm_a, "B": args.norm_b},
    )
    print(path)
    return 0
