"""AppTest: checkpoints of other CIFAR zoos in the app (issue 16).

akamaster's real ResNet-20 file is uploaded as model A: it is recognised, sees the batch with the ImageNet
statistics its card names, and its accuracy carries the caveat about the data copy. A card-less file (the
same weights as a bare state dict) gets the normalisation choice, a marked guess with the batch accuracy
beside each option. Skipped where the shipped CIFAR-10 pair, the CIFAR files or the akamaster file are absent.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from conftest import CIFAR_ROOT, cifar_pair

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import load_dataset, sample_batch
from tffd_viz.features import accuracy, predict_logits
from tffd_viz.normalisation import DATA_COPY_CAVEAT, IMAGENET_MEAN, IMAGENET_STD, NORMALISATIONS, renormalised

pytestmark = [pytest.mark.slow, pytest.mark.data]

AKAMASTER = Path(CIFAR_ROOT) / "external" / "akamaster_resnet20.th"
N = 32


def _accuracy(model, stats: tuple | None) -> float:
    """Accuracy on the app's batch (test split, seed 0), images normalised by ``stats`` (None: CIFAR's)."""
    images, labels = sample_batch("cifar10", "test", n=N, seed=0, root=CIFAR_ROOT)
    if stats is not None:
        bundle = load_dataset("cifar10", CIFAR_ROOT)
        images = renormalised(images, bundle.mean, bundle.std, *stats)
    return accuracy(predict_logits(model, images), labels)


def _metric(at, prefix: str) -> str:
    found = [m.value for m in at.metric if m.label.startswith(prefix)]
    assert found, f"no metric starting with {prefix!r}: {[m.label for m in at.metric]}"
    return found[0]


@pytest.fixture
def cifar_app(app_at):
    a, b = cifar_pair("cifar10")
    if not AKAMASTER.is_file():
        pytest.skip(f"{AKAMASTER} is absent")
    return app_at(a=a, b=b, n=N, root=CIFAR_ROOT, timeout=300)


def _upload(at, slot: str, name: str, data: bytes) -> None:
    from app_pages._sidebar import UPLOAD

    at.selectbox(key=f"model-{slot}").set_value(UPLOAD).run()
    at.file_uploader(key=f"upload-{slot}").upload(name, data).run()


def test_akamaster_file_as_model_a(cifar_app, assert_app_ok):
    at = cifar_app
    _upload(at, "A", AKAMASTER.name, AKAMASTER.read_bytes())
    assert_app_ok(at)
    assert at.sidebar.selectbox(key="dataset").value == "cifar10"  # from the card the layout implies
    captions = [c.value for c in at.sidebar.caption]
    assert any(
        "recognised as **option-A ResNet-20 (resnet20_a) of akamaster/pytorch_resnet_cifar10**" in c
        for c in captions
    ), captions
    assert any(
        c.startswith("Model A normalises its inputs from its card (mean 0.485, 0.456, 0.406")
        for c in captions
    )
    assert not [r for r in at.sidebar.radio if r.key == "norm-A"]  # the card says: no guess asked for
    model, _ = load_checkpoint(AKAMASTER)
    assert _metric(at, f"A: {AKAMASTER.name}") == f"{_accuracy(model, (IMAGENET_MEAN, IMAGENET_STD)):.2f} %"
    shown = [c.value for c in at.caption]
    assert any(c.startswith(DATA_COPY_CAVEAT) and "Its file reports 91.78 %" in c for c in shown), shown
    # the project's own model B is neither re-normalised nor given the caveat
    assert sum(c.startswith(DATA_COPY_CAVEAT) for c in shown) == 1
    at.switch_page("app_pages/losses.py").run()  # every Tf-FD term on the option-A model
    assert_app_ok(at)
    assert at.get("plotly_chart")


def test_cardless_file_gets_a_marked_guess_with_accuracies(cifar_app, assert_app_ok):
    at = cifar_app
    raw = torch.load(AKAMASTER, weights_only=True, map_location="cpu")["state_dict"]
    bare = {
        k.removeprefix("module.").replace("linear.", "fc."): v for k, v in raw.items()
    }  # zoo names, no card
    buf = io.BytesIO()
    torch.save(bare, buf)
    _upload(at, "B", "bare.pt", buf.getvalue())
    assert_app_ok(at)
    radio = at.sidebar.radio(key="norm-B")
    assert radio.label == "Input normalisation of model B (a guess)" and radio.value == "dataset"
    model, card = load_checkpoint(buf.getvalue())
    assert card["mean"] is None and card["arch"] == "resnet20_a"
    stats = {"dataset": None, "imagenet": (IMAGENET_MEAN, IMAGENET_STD), "none": ((0.0,) * 3, (1.0,) * 3)}
    accs = {c: _accuracy(model, s) for c, s in stats.items()}
    assert list(radio.options) == [f"{NORMALISATIONS[c]} · {accs[c]:.1f} % on the batch" for c in stats]
    assert any(
        "Model B: input normalisation is a guess (dataset statistics)" in w.value for w in at.sidebar.warning
    )
    assert _metric(at, "B: bare.pt") == f"{accs['dataset']:.2f} %"
    radio.set_value("imagenet").run()
    assert_app_ok(at)
    assert at.query_params["norm_b"] == "imagenet"
    assert _metric(at, "B: bare.pt") == f"{accs['imagenet']:.2f} %"
    assert any("is a guess (ImageNet statistics)" in w.value for w in at.sidebar.warning)
