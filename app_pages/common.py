"""The sidebar shared by every page, the current selection, and small drawing helpers.

The sidebar collects the two models, the device, the dataset and the sample batch, mirrors them in
``st.query_params`` (so a URL reproduces a view) and leaves a :class:`Selection` in session state.
Pages call :func:`selection` and then only call ``tffd_viz`` through :mod:`app_pages.cache` and draw.
"""

from __future__ import annotations

import dataclasses
import io
import os
from dataclasses import dataclass, field

import pandas as pd
import streamlit as st
import torch

from app_pages import cache
from tffd_viz import normalisation as tnorm
from tffd_viz.data import card_image_size
from tffd_viz.errors import TffdVizError
from tffd_viz.models import MODELS

DATASET_NAMES = ("digits", "cifar10", "cifar100", "imagefolder")
DEFAULT_A = "digits_resnet8_baseline_s0"
DEFAULT_B = "digits_resnet8_tffd_s0"
UPLOAD = "Upload a file ..."
MAX_UPLOAD_MB = 200  # = server.maxUploadSize of .streamlit/config.toml (tests/test_app_robustness.py checks it)
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_IMAGES_LARGE = 64  # sample batch of 224-pixel images (ImageNet models)
MAX_IMAGES_LARGE = 256


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
        return self.names.get(key, key)


# ------------------------------------------------------------------------------------------------
# small drawing helpers
# ------------------------------------------------------------------------------------------------

def intro(text: str) -> None:
    """The two or three sentences that open every page."""
    st.markdown(text)


def show_error(exc: BaseException, what: str = "") -> None:
    """Show a library error as a message (never a traceback)."""
    prefix = f"{what}: " if what else ""
    st.error(f"{prefix}{exc}")


def show_figure(fig, key: str, name: str | None = None) -> None:
    """Draw a plotly figure with an HTML download (the modebar's camera button gives a PNG)."""
    st.plotly_chart(fig, key=f"fig-{key}", config={"displaylogo": False, "toImageButtonOptions": {
        "format": "png", "filename": name or key, "scale": 2}})
    # the HTML is built only when the button is clicked (building it on every rerun costs ~50 ms a figure)
    st.download_button("Download figure (HTML)", lambda: fig.to_html(include_plotlyjs="cdn", full_html=True),
                       file_name=f"{name or key}.html", mime="text/html", key=f"dl-{key}", on_click="ignore")


def show_table(df: pd.DataFrame, key: str, name: str | None = None) -> None:
    """Draw a table with a CSV download."""
    st.dataframe(df, key=f"tbl-{key}", hide_index=True)
    st.download_button("Download table (CSV)", lambda: df.to_csv(index=False), file_name=f"{name or key}.csv",
                       mime="text/csv", key=f"dlt-{key}", on_click="ignore")


def layer_picker(sel: Selection, key: str, label: str = "Layer", default_index: int = -1) -> str:
    """Pick a layer: the default taps of model A, or any other module of the model."""
    taps = list(cache.run("tffd_viz.models:default_taps", sel.a)) if _has_default_taps(sel.a) else []
    everything = cache.run("tffd_viz.models:tap_names", sel.a)
    options = taps + [n for n in everything if n not in taps]
    qp = st.query_params.get(f"layer_{key}") or st.query_params.get("layer")
    index = options.index(qp) if qp in options else (default_index % len(taps) if taps else 0)
    choice = st.selectbox(label, options, index=index, key=f"layer-{key}",
                          help="The stage outputs Tf-FD trains on come first; any other module can be picked too.")
    st.query_params["layer"] = choice
    return choice


def _has_default_taps(ref: cache.ModelRef) -> bool:
    try:
        cache.run("tffd_viz.models:default_taps", ref)
    except TffdVizError:
        return False
    return True


# ------------------------------------------------------------------------------------------------
# sidebar
# ------------------------------------------------------------------------------------------------

def _qp_int(name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    """An int query parameter (``default`` when absent or not an int), clamped to ``[lo, hi]``."""
    try:
        value = int(st.query_params.get(name, default))
    except (TypeError, ValueError):
        value = default
    value = value if lo is None else max(lo, value)
    return value if hi is None else min(hi, value)


def checkpoint_folders() -> list[str]:
    """The shipped ``checkpoints/`` folder, then the folders of ``$TFFD_CHECKPOINTS`` (``os.pathsep``-separated,
    e.g. ``runs`` with your own ImageNet checkpoints), whose ``*.safetensors`` the model pickers list."""
    extra = [f for f in os.environ.get("TFFD_CHECKPOINTS", "").split(os.pathsep) if f and os.path.isdir(f)]
    return [str(cache.CHECKPOINT_DIR), *extra]


def resolve_device(choice: str) -> str:
    """``auto`` -> cuda when present; a cuda request without CUDA -> cpu with a warning."""
    has_cuda = torch.cuda.is_available()
    if choice == "auto":
        return "cuda" if has_cuda else "cpu"
    if choice == "cuda" and not has_cuda:
        st.sidebar.warning("CUDA is not available on this machine: running on the CPU.")
        return "cpu"
    return choice


def upload_limit_caption() -> str:
    """The line shown under each checkpoint uploader: the limit (``MAX_UPLOAD_MB``, as ``server.maxUploadSize``)."""
    return (f"Upload limit: {MAX_UPLOAD_MB} MB per file (server.maxUploadSize in .streamlit/config.toml); "
            f"larger checkpoints go into {cache.CHECKPOINT_DIR.name}/.")


def _model_picker(slot: str, shipped: list[tuple[str, dict, str]], default: str, device: str) -> cache.ModelRef | None:
    names = [os.path.basename(p).removesuffix(".safetensors") for p, _, _ in shipped]
    options = names + [UPLOAD]
    if default not in names:
        # e.g. the chosen-lambda Tf-FD checkpoint is not trained yet: prefer one of the same method
        method = "tffd" if "tffd" in default else "baseline"
        default = next((n for n, (_, card, _) in zip(names, shipped) if card.get("method") == method), default)
    wanted = st.query_params.get(slot.lower(), default)
    index = options.index(wanted) if wanted in options else (options.index(default) if default in options else 0)
    choice = st.sidebar.selectbox(f"Model {slot}", options, index=index, key=f"model-{slot}")
    if choice != UPLOAD:
        path, card, sha = shipped[names.index(choice)]
        st.query_params[slot.lower()] = choice
        return cache.ModelRef(sha=sha, device=device, path=path, label=choice)
    up = st.sidebar.file_uploader(f"Checkpoint for model {slot} (.safetensors, .pt, .pth, .pth.tar)",
                                  key=f"upload-{slot}", help=f"At most {MAX_UPLOAD_MB} MB per file.")
    st.sidebar.caption(upload_limit_caption())
    if up is None:
        st.sidebar.info(f"Upload a checkpoint for model {slot}.")
        return None
    data = up.getvalue()
    if len(data) > MAX_UPLOAD_MB * 2**20:
        st.sidebar.error(f"{up.name} is {len(data) / 2**20:.0f} MB, over the {MAX_UPLOAD_MB} MB upload limit. Copy "
                         f"it into {cache.CHECKPOINT_DIR.name}/ beside the app instead (listed with the shipped "
                         "checkpoints, no size limit).")
        return None
    sha = cache.remember_upload(data)
    with st.sidebar.expander(f"Architecture of {up.name} (if it has no card)"):
        arch = st.selectbox("Architecture", ["infer from weights", *sorted(MODELS)], key=f"arch-{slot}")
        ncls = st.number_input("Classes (0 = infer)", min_value=0, max_value=10000, value=0, key=f"ncls-{slot}")
    return cache.ModelRef(sha=sha, device=device, path=None, label=up.name,
                          arch=None if arch == "infer from weights" else arch, num_classes=int(ncls) or None)


def _loaded_card(ref: cache.ModelRef, slot: str) -> dict | None:
    try:
        return cache.model_card(ref)
    except TffdVizError as exc:
        message = str(exc).replace("pass allow_nonfinite=True to load it anyway", "fix the file, or load it in Python with allow_nonfinite=True")
        st.sidebar.error(f"Model {slot} ({ref.label}) does not load: {message}")
        return None


def dataset_image_size(card: dict, name: str) -> int | None:
    """The image size to load ``name`` at for a model with ``card``: its ``input_size`` where the dataset has
    sized forms (the lazy image folder at 224 for the torchvision architectures), else None (32x32 in memory)."""
    return card_image_size(card, name)


def _dataset_ui(card_a: dict) -> tuple[str, str | None, int | None] | None:
    ds_default = card_a.get("dataset") or "digits"
    ds_default = st.query_params.get("dataset", ds_default)
    index = DATASET_NAMES.index(ds_default) if ds_default in DATASET_NAMES else 0
    name = st.sidebar.selectbox("Dataset", DATASET_NAMES, index=index, key="dataset",
                                help="Taken from model A's card; change it for uploads without a card.")
    root = None
    if name != "digits":
        root = st.sidebar.text_input("Data root", value=st.query_params.get("root", os.environ.get("TFFD_DATA", "data")),
                                     key="root", help="A folder with the dataset (see README: Data)") or None
        if root:
            st.query_params["root"] = root
    image_size = dataset_image_size(card_a, name)
    if (card_a.get("input_size") or 32) > 32 and image_size is None:
        st.sidebar.warning(f"Model A was made for {card_a['input_size']}-pixel inputs, but {name} loads at 32x32 "
                           f"only; image folders load at {card_a['input_size']} pixels.")
    try:
        cache.dataset(name, root, image_size)
    except TffdVizError as exc:
        st.error(f"Dataset {name!r} is not available: {exc}")
        if name in ("cifar10", "cifar100"):
            st.info("Get it with the button below (needs network; torchvision downloads about 170 MB into the data "
                    "root), or set the data root to a folder holding an image-folder tree or zip of it.")
            if st.button(f"Download {name} through torchvision into {root}", key="download-data"):
                with st.spinner(f"Downloading {name} ..."):
                    try:
                        from tffd_viz.data import load_dataset
                        load_dataset(name, root, download=True)
                        cache.dataset.clear()
                        st.rerun()
                    except TffdVizError as exc2:
                        st.error(f"Download failed: {exc2}")
        return None
    st.query_params["dataset"] = name
    return name, root, image_size


def _normalisation_ui(slot: str, ref: cache.ModelRef, card: dict, bundle, batch: cache.BatchRef) -> cache.ModelRef:
    """Say how model ``slot`` normalises its inputs; for card-less files ask (a guess, batch accuracy beside each
    choice). Returns ``ref`` with the input adapter its statistics need (unchanged when they are the data's)."""
    if card.get("recognised_as"):
        st.sidebar.caption(f"Model {slot} recognised as **{card['recognised_as']}**.")
    if tnorm.card_normalisation(card) is None:
        accs = cache.run("tffd_viz.normalisation:accuracy_by_normalisation", ref, batch.images, batch.labels,
                         tuple(bundle.mean), tuple(bundle.std))
        options = list(accs)
        wanted = st.query_params.get(f"norm_{slot.lower()}", "dataset")
        choice = st.sidebar.radio(
            f"Input normalisation of model {slot} (a guess)", options,
            index=options.index(wanted) if wanted in options else 0, key=f"norm-{slot}",
            format_func=lambda c: f"{tnorm.NORMALISATIONS[c]} · {accs[c]:.1f} % on the batch",
            help="Its file does not say how its inputs were normalised. The accuracy on the sample batch under "
                 "each choice is beside it: a wrong one usually shows as a much lower accuracy.")
        st.query_params[f"norm_{slot.lower()}"] = choice
        st.sidebar.warning(f"Model {slot}: input normalisation is a guess ({tnorm.NORMALISATIONS[choice]}).")
        norm = tnorm.model_normalisation(card, bundle.mean, bundle.std, guess=choice)
    else:
        norm = tnorm.model_normalisation(card, bundle.mean, bundle.std)
    stats = tnorm.adapter_stats(norm, bundle.mean, bundle.std)
    if stats is None:
        return ref
    if not norm.guessed:
        st.sidebar.caption(f"Model {slot} normalises its inputs {norm.describe()}, not with the dataset's: "
                           "it sees the batch re-normalised.")
    return dataclasses.replace(ref, input_norm=stats)


def sidebar() -> Selection | None:
    """Draw the shared sidebar and return the current selection (``None`` when incomplete)."""
    st.session_state["selection"] = None
    st.sidebar.header("tffd-viz")
    dev_q = st.query_params.get("device", "auto")
    dev_choice = st.sidebar.selectbox("Device", DEVICES, index=DEVICES.index(dev_q) if dev_q in DEVICES else 0,
                                      key="device")
    st.query_params["device"] = dev_choice
    device = resolve_device(dev_choice)
    st.sidebar.caption(f"Running on **{device}**" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else ""))

    shipped = [entry for folder in checkpoint_folders() for entry in cache.shipped_checkpoints(folder)]
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
        st.sidebar.warning(f"Model B was made for {card_b.get('input_size') or 32}-pixel inputs, model A for "
                           f"{card_a.get('input_size') or 32}: both see model A's.")
    for slot, card in (("A", card_a), ("B", card_b)):
        if card.get("in_chans") not in (None, bundle.in_chans) or card.get("num_classes") not in (None, len(bundle.classes)):
            st.error(f"Model {slot} expects {card.get('in_chans')} input channel(s) and {card.get('num_classes')} "
                     f"classes, but {name} has {bundle.in_chans} and {len(bundle.classes)}: pick a matching dataset.")
            return None

    st.sidebar.subheader("Sample batch")
    split = st.sidebar.radio("Split", ("test", "train"), index=1 if st.query_params.get("split") == "train" else 0,
                             horizontal=True, key="split")
    size = len(bundle.split(split))
    large = image_size is not None  # 224-pixel images: ~50x the memory and compute of 32-pixel ones
    n_max = min(MAX_IMAGES_LARGE if large else 2048, size)
    n_param = f"n{image_size}" if large else "n"  # each input size keeps its own batch size (n224: 64 by default)
    n = st.sidebar.slider("Images", min_value=4, max_value=n_max,
                          value=_qp_int(n_param, DEFAULT_IMAGES_LARGE if large else 256, 4, n_max), step=4, key="n",
                          help=f"{image_size}x{image_size} images are decoded on demand; at most {n_max}."
                          if large else None)
    seed = st.sidebar.number_input("Seed", min_value=0, max_value=2**31 - 1, value=_qp_int("seed", 0, 0, 2**31 - 1), key="seed")
    st.query_params.update({"split": split, n_param: str(n), "seed": str(int(seed))})
    batch_ref = cache.BatchRef(name, split, int(n), int(seed), root, image_size)
    try:
        ref_a, ref_b = (_normalisation_ui(slot, ref, card, bundle, batch_ref)
                        for slot, ref, card in (("A", ref_a, card_a), ("B", ref_b, card_b)))
    except TffdVizError as exc:
        st.error(f"Cannot normalise the inputs: {exc}")
        return None
    sel = Selection(a=ref_a, b=ref_b, batch=batch_ref,
                    device=device,
                    classes=tuple(bundle.classes), names={"A": ref_a.label, "B": ref_b.label})
    st.session_state["selection"] = sel
    return sel


def selection() -> Selection:
    """The current selection for a page; stops the page with a message when there is none."""
    sel = st.session_state.get("selection")
    if sel is None:
        st.info("Choose two models and a dataset in the sidebar.")
        st.stop()
    return sel


def image_bytes_to_png(arr) -> bytes:
    """PNG bytes of a ``(H, W)`` or ``(H, W, 3)`` uint8 array (for image downloads)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()
