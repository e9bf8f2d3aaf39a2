"""The report's inputs: both checkpoints, the sample batch, and both models' taps and predictions on it.

:func:`load_report_inputs` returns a :class:`ReportInputs`, which every section builder reads (and into which
each records its numbers for the summary table); :meth:`ReportInputs.comparison` measures A against B on the
whole held-out split once, for the sections that compare them against the noise.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from torch import Tensor, nn

from tffd_viz.checkpoints import list_checkpoints, load_checkpoint
from tffd_viz.data import DatasetBundle, ImageDataset, card_image_size, load_dataset, sample_batch
from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.features import extract_features, model_device, prediction_summary
from tffd_viz.models import resolve_taps
from tffd_viz.normalisation import (
    ModelNormalisation,
    accuracy_by_normalisation,
    adapter_stats,
    attach_input_normalisation,
    model_normalisation,
)
from tffd_viz.report._base import as_float
from tffd_viz.verdicts import pair_comparison, seed_siblings

__all__ = ["CKA_BATCH", "SUMMARY_COLUMNS", "ReportInputs", "ReportOptions", "load_report_inputs"]

CKA_BATCH: int = 256
"""Minibatch size of the minibatch CKA estimator (the app's default; a tail under 4 images is merged)."""


SUMMARY_COLUMNS: tuple[str, ...] = ("quantity", "layer / term", "A", "B", "A vs B")
"""Columns of the summary table: per-model values in ``A`` and ``B``, comparisons in ``A vs B``."""


class ReportOptions(TypedDict, total=False):
    """What a report is computed on besides the two checkpoints: the keyword arguments of
    :func:`load_report_inputs`, which :func:`~tffd_viz.report.report_sections`,
    :func:`~tffd_viz.report.build_report` and :func:`~tffd_viz.report.write_report` pass on."""

    dataset: str | None
    root: str | None
    n: int
    seed: int
    split: str
    device: str
    normalisation: str | Mapping[str, str]


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
    dataset, split, n, seed, root, device : as requested
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
    device: str = "cpu"
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
                loaded = [load_checkpoint(p, device=str(model_device(self.models[key]))) for p in others]
                seeds[key] = [m for m, _ in loaded]
                seed_held[key] = [c.get("heldout_terms") for _, c in loaded]
            self._comparison = pair_comparison(
                self.models,
                self.heldout,
                heldouts={k: self.cards[k].get("heldout_terms") for k in ("A", "B")},
                seeds=seeds,
                seed_heldouts=seed_held,
                split="test",
                cka_batch=CKA_BATCH,
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
            dict(zip(SUMMARY_COLUMNS, (quantity, item, as_float(a), as_float(b), as_float(ab))))
        )

    def tap_positions(self) -> list[tuple[str | None, str | None]]:
        """Pairs ``(tap of A, tap of B)`` by position (None where one model has fewer taps)."""
        ta, tb = self.taps["A"], self.taps["B"]
        return [
            (ta[i] if i < len(ta) else None, tb[i] if i < len(tb) else None)
            for i in range(max(len(ta), len(tb)))
        ]


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
    image_size = card_image_size(
        cards["A"], name
    )  # 224 for torchvision's archs: the lazily decoded image folder
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
        device=device,
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
    models: dict[str, nn.Module],
    cards: dict[str, dict],
    bundle: DatasetBundle,
    images: Tensor,
    targets: Tensor,
    guess: str | Mapping[str, str],
) -> tuple[dict[str, ModelNormalisation], dict[str, dict[str, float]]]:
    """Each model's normalisation (card, else the guess), the batch accuracy per choice of the guessed ones,
    and an input adapter attached where a model's statistics differ from the dataset's."""
    guesses = {k: guess for k in models} if isinstance(guess, str) else dict(guess)
    norms: dict[str, ModelNormalisation] = {}
    accs: dict[str, dict[str, float]] = {}
    for key, model in models.items():
        norms[key] = model_normalisation(
            cards[key], bundle.mean, bundle.std, guess=guesses.get(key, "dataset")
        )
        if norms[key].guessed:
            accs[key] = accuracy_by_normalisation(model, images, targets, bundle.mean, bundle.std)
        stats = adapter_stats(norms[key], bundle.mean, bundle.std)
        if stats is not None:
            attach_input_normalisation(model, *stats)
    return norms, accs
