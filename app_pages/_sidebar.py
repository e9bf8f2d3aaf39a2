"""The sidebar shared by every page, the current selection, and the pickers that read the selected models.

The sidebar collects the two models, the device, the dataset and the sample batch, mirrors them in
``st.query_params`` (so a URL reproduces a view; these parameters are the app's, not a page's, and carry no
page prefix) and leaves a :class:`Selection` in session state. Pages call :func:`selection` and then only call
``tffd_viz`` through :mod:`app_pages._cache` and draw with :mod:`app_pages._ui`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import torch

from app_pages import _cache as cache
from app_pages._ui import clamped, names_in, option_index, query_param, show_error
from tffd_viz import normalisation as tnorm
from tffd_viz.data import card_image_size, load_dataset
from tffd_viz.devices import DEVICE_CHOICES, resolved_device
from tffd_viz.errors import TffdVizError
from tffd_viz.models import MODELS, default_taps, tap_names
from tffd_viz.normalisation import accuracy_by_normalisation
from tffd_viz.pairs import SHIPPED_PAIRS, available_pairs, pair_title
from tffd_viz.plots import format_lambda
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA

DATASET_NAMES = ("digits", "cifar10", "cifar100", "imagefolder")
DEFAULT_A = "digits_resnet8_baseline_s0"
DEFAULT_B = "digits_resnet8_tffd_s0"
UPLOAD = "Upload a file ..."
OWN_PAIR = "(the models below)"
MAX_UPLOAD_MB = (
    200  # = server.maxUploadSize of .streamlit/config.toml (tests/test_app_robustness.py checks it)
)
DEFAULT_IMAGES_LARGE = 64  # sample batch of 224-pixel images (ImageNet models)
MAX_IMAGES_LARGE = 256
PAPER_LAMBDAS = {"lambda_intra": PAPER_LAMBDA_INTRA, "lambda_inter": PAPER_LAMBDA_INTER}
LAMBDA_GRID: tuple[float, ...] = (
    0.0,
    1e-4,
    2e-4,
    5e-4,
    8e-4,
    1e-3,
    2e-3,
    5e-3,
    1e-2,
    2e-2,
    5e-2,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)
"""The lambdas the loss pickers offer (with the defaults and the URL's value added)."""


@dataclass(frozen=True)
class Selection:
    """What the sidebar chose: two models, the device and a sample batch."""

    a: cache.ModelRef
    b: cache.ModelRef
    batch: cache.BatchRef
    device: str
    classes: tuple[str, ...] = ()
    names: dict = field(default_factory=dict, hash=False, compare=False)

    def refs(self) -> dict[str, cache.ModelRef]:
        """``{"A": ref_a, "B": ref_b}``."""
        return {"A": self.a, "B": self.b}

    def label(self, key: str) -> str:
        """The checkpoint name of model ``key`` (``"A"`` or ``"B"``)."""
        return self.names.get(key, key)

    @property
    def labels(self) -> dict[str, str]:
        """``{"A": "A · <name of A>", "B": "B · <name of B>"}``: how figures and tables name the models."""
        return {key: f"{key} · {self.label(key)}" for key in self.refs()}


def each_model(
    sel: Selection, what: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
) -> dict[str, Any]:
    """``cache.run(fn, ref, *args, **kwargs)`` for model A and model B: the results by key (``"A"``, ``"B"``).

    A model the library refuses (:class:`~tffd_viz.errors.TffdVizError`) is left out, after the message
    ``"<what> of model <key> (<name>): <error>"``; the page goes on with the other.
    """
    results = {}
    for key, ref in sel.refs().items():
        try:
            results[key] = cache.run(fn, ref, *args, **kwargs)
        except TffdVizError as exc:
            show_error(exc, f"{what} of model {key} ({sel.label(key)})")
    return results


def layer_picker(sel: Selection, page: str, label: str = "Layer") -> str:
    """Pick a layer of model A (widget ``<page>-layer``, query parameter ``<page>_layer``): the default taps
    first (the last one preselected), then every other module of the model."""
    taps = stages_of(sel.a)
    options = taps + [n for n in cache.run(tap_names, sel.a) if n not in taps]
    param = f"{page}_layer"
    index = option_index(options, query_param(param, ""), default=len(taps) - 1 if taps else 0)
    choice = st.selectbox(
        label,
        options,
        index=index,
        key=f"{page}-layer",
        help="The stage outputs Tf-FD trains on come first; any other module can be picked too.",
    )
    st.query_params[param] = choice
    return choice


def stages_of(ref: cache.ModelRef) -> list[str]:
    """The stages Tf-FD trains on (the default taps), shallow to deep; none for a model without zoo taps."""
    try:
        return list(cache.run(default_taps, ref))
    except TffdVizError:
        return []


def default_lambdas(sel: Selection) -> dict[str, float]:
    """``{"lambda_intra": ..., "lambda_inter": ...}``: model B's if it is a Tf-FD model, else the paper's."""
    card = cache.model_card(sel.b)
    tffd = card.get("method") == "tffd"
    return {
        name: float(card[name]) if tffd and card.get(name) is not None else paper
        for name, paper in PAPER_LAMBDAS.items()
    }


@dataclass(frozen=True)
class LossChoice:
    """The weighted loss picked on a page: both lambdas and the stages and pairs (``"a->b"``) in the loss."""

    lambda_intra: float
    lambda_inter: float
    stages: tuple[str, ...]
    pairs: tuple[str, ...]

    def of(self, intra: Collection[str], inter: Collection[str]) -> tuple[list[str], list[str]]:
        """The chosen stages and pairs one model has (its ``intra`` and ``inter`` terms)."""
        return [s for s in self.stages if s in intra], [p for p in self.pairs if p in inter]


def loss_picker(sel: Selection, page: str, stages: Sequence[str], pairs: Sequence[str]) -> LossChoice:
    """Pick the lambdas (sliders over :data:`LAMBDA_GRID`) and the stages and pairs in the loss (check boxes).

    Widgets ``<page>-lambda-intra``, ``<page>-lambda-inter``, ``<page>-stage-<stage>``,
    ``<page>-pair-<a->b>``; query parameters ``<page>_lambda_intra``, ``<page>_lambda_inter`` and
    ``<page>_stages``, ``<page>_pairs`` (``a,b``: absent = all, empty = none). The lambdas default to
    :func:`default_lambdas`.
    """
    lambdas: dict[str, float] = {}
    for col, (name, default) in zip(st.columns(2), default_lambdas(sel).items()):
        wanted, paper = query_param(f"{page}_{name}", default, float), PAPER_LAMBDAS[name]
        lambdas[name] = float(
            col.select_slider(
                name.replace("lambda_", "λ "),
                sorted({*LAMBDA_GRID, default, wanted, paper}),
                value=wanted,
                format_func=format_lambda,
                key=f"{page}-{name.replace('_', '-')}",
                help=f"Default: model B's card ({format_lambda(default)}) for a Tf-FD model, else the "
                f"paper's {format_lambda(paper)}.",
            )
        )
        st.query_params[f"{page}_{name}"] = repr(lambdas[name])
    chosen: dict[str, tuple[str, ...]] = {}
    for col, (kind, options, title) in zip(
        st.columns(2), (("stage", stages, "Stages (intra terms)"), ("pair", pairs, "Pairs (inter terms)"))
    ):
        wanted = query_param(f"{page}_{kind}s", list(options), names_in(options))
        col.markdown(f"**{title}**")
        chosen[kind] = tuple(
            o for o in options if col.checkbox(o, value=o in wanted, key=f"{page}-{kind}-{o}")
        )
        st.query_params[f"{page}_{kind}s"] = ",".join(chosen[kind])
    return LossChoice(lambdas["lambda_intra"], lambdas["lambda_inter"], chosen["stage"], chosen["pair"])


# ------------------------------------------------------------------------------------------------
# sidebar
# ------------------------------------------------------------------------------------------------


def checkpoint_folders() -> list[str]:
    """The shipped ``checkpoints/`` folder, then the folders of ``$TFFD_CHECKPOINTS``
    (``os.pathsep``-separated, e.g. ``runs`` with your own ImageNet checkpoints), whose ``*.safetensors`` the
    model pickers list."""
    extra = [f for f in os.environ.get("TFFD_CHECKPOINTS", "").split(os.pathsep) if f and os.path.isdir(f)]
    return [str(cache.CHECKPOINT_DIR), *extra]


def resolve_device(choice: str) -> str:
    """The device for the sidebar's ``choice`` (:func:`tffd_viz.devices.resolved_device`); an accelerator this
    machine lacks falls back to the CPU, its note shown as a sidebar warning."""
    device, note = resolved_device(choice, unavailable="cpu")
    if note:
        st.sidebar.warning(f"{note[:1].upper()}{note[1:]}.")
    return str(device)


def upload_limit_caption() -> str:
    """The line under each checkpoint uploader: the limit (``MAX_UPLOAD_MB``, as ``server.maxUploadSize``)."""
    return (
        f"Upload limit: {MAX_UPLOAD_MB} MB per file (server.maxUploadSize in .streamlit/config.toml); "
        f"larger checkpoints go into {cache.CHECKPOINT_DIR.name}/."
    )


def _checkpoint_name(path: str) -> str:
    """How the pickers name a shipped checkpoint: its file name without ``.safetensors``."""
    return os.path.basename(path).removesuffix(".safetensors")


def _apply_pair(pairs: dict[str, tuple[str, str]]) -> None:
    """``on_change`` of the pair picker: point the URL at the chosen pair and its dataset, and forget the
    model and dataset widgets' values so that they start from it."""
    key = st.session_state["pair"]
    if key not in pairs:
        return
    a, b = pairs[key]
    st.query_params.update({"a": a, "b": b, "dataset": SHIPPED_PAIRS[key].dataset})
    for widget in ("model-A", "model-B", "dataset"):
        if widget in st.session_state:
            del st.session_state[widget]


def _pair_picker(shipped: list[tuple[str, dict, str]]) -> None:
    """Offer the shipped baseline / Tf-FD pairs (:func:`tffd_viz.pairs.available_pairs`); picking one sets
    models A and B and the dataset. It shows the pair A and B are now, or :data:`OWN_PAIR`."""
    cards = {_checkpoint_name(p): card for p, card, _ in shipped}
    pairs = available_pairs(cards)
    if not pairs:
        return
    now = (
        st.session_state.get("model-A", query_param("a", DEFAULT_A)),
        st.session_state.get("model-B", query_param("b", DEFAULT_B)),
    )
    st.session_state["pair"] = next((key for key, ab in pairs.items() if ab == now), OWN_PAIR)
    st.sidebar.selectbox(
        "Shipped pair",
        [*pairs, OWN_PAIR],
        key="pair",
        format_func=lambda key: key if key == OWN_PAIR else pair_title(key, cards[pairs[key][0]]),
        on_change=_apply_pair,
        args=(pairs,),
        help="A baseline and a Tf-FD model trained with the same recipe and seed (checkpoints/README.md); "
        "picking one sets models A and B and the dataset.",
    )


def _model_picker(
    slot: str, shipped: list[tuple[str, dict, str]], default: str, device: str
) -> cache.ModelRef | None:
    names = [_checkpoint_name(p) for p, _, _ in shipped]
    options = [*names, UPLOAD]
    if default not in names:
        # e.g. the chosen-lambda Tf-FD checkpoint is not trained yet: prefer one of the same method
        method = "tffd" if "tffd" in default else "baseline"
        default = next(
            (n for n, (_, card, _) in zip(names, shipped) if card.get("method") == method), default
        )
    index = option_index(options, query_param(slot.lower(), default, options=options))
    choice = st.sidebar.selectbox(f"Model {slot}", options, index=index, key=f"model-{slot}")
    if choice != UPLOAD:
        path, _, sha = shipped[names.index(choice)]
        st.query_params[slot.lower()] = choice
        return cache.ModelRef(sha=sha, device=device, path=path, label=choice)
    up = st.sidebar.file_uploader(
        f"Checkpoint for model {slot} (.safetensors, .pt, .pth, .pth.tar)",
        key=f"upload-{slot}",
        help=f"At most {MAX_UPLOAD_MB} MB per file.",
    )
    st.sidebar.caption(upload_limit_caption())
    if up is None:
        st.sidebar.info(f"Upload a checkpoint for model {slot}.")
        return None
    data = up.getvalue()
    if len(data) > MAX_UPLOAD_MB * 2**20:
        st.sidebar.error(
            f"{up.name} is {len(data) / 2**20:.0f} MB, over the {MAX_UPLOAD_MB} MB upload limit. Copy "
            f"it into {cache.CHECKPOINT_DIR.name}/ beside the app instead (listed with the shipped "
            "checkpoints, no size limit)."
        )
        return None
    sha = cache.remember_upload(data)
    with st.sidebar.expander(f"Architecture of {up.name} (if it has no card)"):
        arch = st.selectbox("Architecture", ["infer from weights", *sorted(MODELS)], key=f"arch-{slot}")
        ncls = st.number_input(
            "Classes (0 = infer)", min_value=0, max_value=10000, value=0, key=f"ncls-{slot}"
        )
    return cache.ModelRef(
        sha=sha,
        device=device,
        path=None,
        label=up.name,
        arch=None if arch == "infer from weights" else arch,
        num_classes=int(ncls) or None,
    )


def _loaded_card(ref: cache.ModelRef, slot: str) -> dict | None:
    try:
        return cache.model_card(ref)
    except TffdVizError as exc:
        message = str(exc).replace(
            "pass allow_nonfinite=True to load it anyway",
            "fix the file, or load it in Python with allow_nonfinite=True",
        )
        st.sidebar.error(f"Model {slot} ({ref.label}) does not load: {message}")
        return None


def _dataset_ui(card_a: dict) -> tuple[str, str | None, int | None] | None:
    wanted = query_param("dataset", card_a.get("dataset") or "digits")
    name = st.sidebar.selectbox(
        "Dataset",
        DATASET_NAMES,
        index=option_index(DATASET_NAMES, wanted),
        key="dataset",
        help="Taken from model A's card; change it for uploads without a card.",
    )
    root = None
    if name != "digits":
        root = (
            st.sidebar.text_input(
                "Data root",
                value=query_param("root", os.environ.get("TFFD_DATA", "data")),
                key="root",
                help="A folder with the dataset (see README: Data)",
            )
            or None
        )
        if root:
            st.query_params["root"] = root
    image_size = card_image_size(card_a, name)
    if (card_a.get("input_size") or 32) > 32 and image_size is None:
        st.sidebar.warning(
            f"Model A was made for {card_a['input_size']}-pixel inputs, but {name} loads at 32x32 "
            f"only; image folders load at {card_a['input_size']} pixels."
        )
    try:
        cache.dataset(name, root, image_size)
    except TffdVizError as exc:
        st.error(f"Dataset {name!r} is not available: {exc}")
        if name in ("cifar10", "cifar100"):
            st.info(
                "Get it with the button below (needs network; torchvision downloads about 170 MB into the "
                "data root), or set the data root to a folder holding an image-folder tree or zip of it."
            )
            if st.button(f"Download {name} through torchvision into {root}", key="download-data"):
                with st.spinner(f"Downloading {name} ..."):
                    try:
                        load_dataset(name, root, download=True)
                        cache.dataset.clear()
                        st.rerun()
                    except TffdVizError as exc2:
                        st.error(f"Download failed: {exc2}")
        return None
    st.query_params["dataset"] = name
    return name, root, image_size


def _normalisation_ui(
    slot: str, ref: cache.ModelRef, card: dict, bundle, batch: cache.BatchRef
) -> cache.ModelRef:
    """Say how model ``slot`` normalises its inputs; for card-less files ask (a guess, batch accuracy beside
    each choice). Returns ``ref`` with the input adapter its statistics need (unchanged when they are the
    data's)."""
    if card.get("recognised_as"):
        st.sidebar.caption(f"Model {slot} recognised as **{card['recognised_as']}**.")
    if tnorm.card_normalisation(card) is None:
        accs = cache.run(
            accuracy_by_normalisation, ref, batch.images, batch.labels, tuple(bundle.mean), tuple(bundle.std)
        )
        options = list(accs)
        choice = st.sidebar.radio(
            f"Input normalisation of model {slot} (a guess)",
            options,
            index=option_index(options, query_param(f"norm_{slot.lower()}", "dataset")),
            key=f"norm-{slot}",
            format_func=lambda c: f"{tnorm.NORMALISATIONS[c]} · {accs[c]:.1f} % on the batch",
            help="Its file does not say how its inputs were normalised. The accuracy on the sample batch "
            "under each choice is beside it: a wrong one usually shows as a much lower accuracy.",
        )
        st.query_params[f"norm_{slot.lower()}"] = choice
        st.sidebar.warning(f"Model {slot}: input normalisation is a guess ({tnorm.NORMALISATIONS[choice]}).")
        norm = tnorm.model_normalisation(card, bundle.mean, bundle.std, guess=choice)
    else:
        norm = tnorm.model_normalisation(card, bundle.mean, bundle.std)
    stats = tnorm.adapter_stats(norm, bundle.mean, bundle.std)
    if stats is None:
        return ref
    if not norm.guessed:
        st.sidebar.caption(
            f"Model {slot} normalises its inputs {norm.describe()}, not with the dataset's: "
            "it sees the batch re-normalised."
        )
    return dataclasses.replace(ref, input_norm=stats)


def sidebar() -> Selection | None:
    """Draw the shared sidebar and return the current selection (``None`` when incomplete)."""
    st.session_state["selection"] = None
    st.sidebar.header("tffd-viz")
    dev_choice = st.sidebar.selectbox(
        "Device",
        DEVICE_CHOICES,
        key="device",
        index=option_index(DEVICE_CHOICES, query_param("device", "auto")),
    )
    st.query_params["device"] = dev_choice
    device = resolve_device(dev_choice)
    st.sidebar.caption(
        f"Running on **{device}**"
        + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else "")
    )

    shipped = [entry for folder in checkpoint_folders() for entry in cache.shipped_checkpoints(folder)]
    _pair_picker(shipped)
    ref_a = _model_picker("A", shipped, DEFAULT_A, device)
    ref_b = _model_picker("B", shipped, DEFAULT_B, device)
    if ref_a is None or ref_b is None:
        return None
    card_a, card_b = _loaded_card(ref_a, "A"), _loaded_card(ref_b, "B")
    if card_a is None or card_b is None:
        return None

    picked = _dataset_ui(card_a)
    if picked is None:
        return None
    name, root, image_size = picked
    bundle = cache.dataset(name, root, image_size)
    if (card_b.get("input_size") or 32) != (card_a.get("input_size") or 32):
        st.sidebar.warning(
            f"Model B was made for {card_b.get('input_size') or 32}-pixel inputs, model A for "
            f"{card_a.get('input_size') or 32}: both see model A's."
        )
    for slot, card in (("A", card_a), ("B", card_b)):
        if card.get("in_chans") not in (None, bundle.in_chans) or card.get("num_classes") not in (
            None,
            len(bundle.classes),
        ):
            st.error(
                f"Model {slot} expects {card.get('in_chans')} input channel(s) "
                f"and {card.get('num_classes')} classes, but {name} has "
                f"{bundle.in_chans} and {len(bundle.classes)}: pick a matching dataset."
            )
            return None

    st.sidebar.subheader("Sample batch")
    splits = ("test", "train")
    split = st.sidebar.radio(
        "Split",
        splits,
        index=option_index(splits, query_param("split", "test")),
        horizontal=True,
        key="split",
    )
    size = len(bundle.split(split))
    large = image_size is not None  # 224-pixel images: ~50x the memory and compute of 32-pixel ones
    n_max = min(MAX_IMAGES_LARGE if large else 2048, size)
    n_param = (
        f"n{image_size}" if large else "n"
    )  # each input size keeps its own batch size (n224: 64 by default)
    n = st.sidebar.slider(
        "Images",
        min_value=4,
        max_value=n_max,
        value=query_param(n_param, DEFAULT_IMAGES_LARGE if large else 256, clamped(int, 4, n_max)),
        step=4,
        key="n",
        help=f"{image_size}x{image_size} images are decoded on demand; at most {n_max}." if large else None,
    )
    seed = st.sidebar.number_input(
        "Seed",
        min_value=0,
        max_value=2**31 - 1,
        key="seed",
        value=query_param("seed", 0, clamped(int, 0, 2**31 - 1)),
    )
    st.query_params.update({"split": split, n_param: str(n), "seed": str(int(seed))})
    batch_ref = cache.BatchRef(name, split, int(n), int(seed), root, image_size)
    try:
        ref_a, ref_b = (
            _normalisation_ui(slot, ref, card, bundle, batch_ref)
            for slot, ref, card in (("A", ref_a, card_a), ("B", ref_b, card_b))
        )
    except TffdVizError as exc:
        st.error(f"Cannot normalise the inputs: {exc}")
        return None
    sel = Selection(
        a=ref_a,
        b=ref_b,
        batch=batch_ref,
        device=device,
        classes=tuple(bundle.classes),
        names={"A": ref_a.label, "B": ref_b.label},
    )
    st.session_state["selection"] = sel
    return sel


def selection() -> Selection:
    """The current selection for a page; stops the page with a message when there is none."""
    sel = st.session_state.get("selection")
    if sel is None:
        st.info("Choose two models and a dataset in the sidebar.")
        st.stop()
    return sel
