"""AppTest of the Overview page: cards, recomputed accuracy, confusion, disagreements,
seeds, curves, uploads."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tffd_viz.checkpoints import list_checkpoints, load_checkpoint, read_card
from tffd_viz.data import sample_batch
from tffd_viz.features import accuracy, predict_logits
from tffd_viz.summary import seed_groups, seed_spread_note

CKPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "checkpoints")


def _accuracy_now(name: str, n: int, seed: int = 0) -> float:
    model, _ = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))
    images, labels = sample_batch("digits", "test", n=n, seed=seed)
    return accuracy(predict_logits(model, images), labels)


def _predictions(name: str, n: int) -> torch.Tensor:
    model, _ = load_checkpoint(os.path.join(CKPT, f"{name}.safetensors"))
    images, _ = sample_batch("digits", "test", n=n, seed=0)
    return predict_logits(model, images).argmax(1)


def _metric(at, prefix: str):
    found = [m for m in at.metric if m.label.startswith(prefix)]
    assert found, f"no metric starting with {prefix!r}: {[m.label for m in at.metric]}"
    return found[0]


def _assert_breakdown(figures, a: str, b: str, n: int) -> None:
    """One full-width figure for both models: per-class errors (one bar per class and model) when both are at
    or above ERROR_BARS_ABOVE on the batch, else both confusion matrices side by side,
    each summing to ``n``."""
    from tffd_viz.plots import ERROR_BARS_ABOVE

    _, labels = sample_batch("digits", "test", n=n, seed=0)
    found = [f for f in figures if f.layout.title.text.startswith(("Errors per class", "Confusion matrices"))]
    assert len(found) == 1, [f.layout.title.text for f in figures]
    fig = found[0]
    assert [t.name for t in fig.data] == [f"A · {a}", f"B · {b}"] or [
        ann.text for ann in fig.layout.annotations
    ] == [f"A · {a}", f"B · {b}"]  # bar names, or the matrices' subplot titles
    classes = list(range(10))  # digits
    if min(_accuracy_now(a, n), _accuracy_now(b, n)) >= ERROR_BARS_ABOVE:
        assert [t.type for t in fig.data] == ["bar", "bar"] and all(
            len(t.y) == len(classes) for t in fig.data
        )
        for trace, name in zip(fig.data, (a, b)):
            pred = _predictions(name, n)
            want = [
                100.0 * float((pred[labels == k] != k).sum()) / max(1, int((labels == k).sum()))
                for k in classes
            ]
            present = [int((labels == k).sum()) > 0 for k in classes]
            got = np.asarray(trace.y, dtype=float)
            assert np.allclose(got[present], np.asarray(want)[present])
    else:
        assert [t.type for t in fig.data] == ["heatmap", "heatmap"]
        assert {fig.data[0].xaxis, fig.data[1].xaxis} == {"x", "x2"}  # side by side in one figure
        assert all(int(np.asarray(t.customdata).sum()) == n for t in fig.data)  # counts of the whole batch
        assert fig.layout.height == max(380, min(800, 140 + 26 * len(classes)))


def test_overview_values_match_the_library(app_at, assert_app_ok, chart_figures):
    at = app_at(n=32)
    assert_app_ok(at)
    a, b = at.query_params["a"], at.query_params["b"]
    assert at.title[0].value == "Overview"
    # accuracy recomputed on the very batch the sidebar chose
    assert _metric(at, f"A: {a}").value == f"{_accuracy_now(a, 32):.2f} %"
    assert _metric(at, f"B: {b}").value == f"{_accuracy_now(b, 32):.2f} %"
    figures = chart_figures(at)
    titles = [f.layout.title.text for f in figures]
    assert any(t.startswith("Training curves") for t in titles)
    _assert_breakdown(figures, a, b, 32)
    # the disagreement count is the number of differing predictions
    differ = int((_predictions(a, 32) != _predictions(b, 32)).sum())
    assert any(h.value.startswith(f"Where A and B disagree ({differ} of 32") for h in at.subheader)
    cards = at.dataframe[0].value
    assert list(cards.columns) == ["", f"A: {a}", f"B: {b}"]
    # mean over seeds of every configuration shipped with several seeds, from the cards
    groups = seed_groups(list_checkpoints(CKPT))
    if groups:
        seeds = next(f for f in figures if f.layout.title.text.startswith("Test accuracy over seeds"))
        means = dict(zip(seeds.data[1].x, seeds.data[1].y))
        for g in groups:
            assert means[g["config"]] == pytest.approx(sum(g["accs"]) / len(g["accs"]))
        # the caption says how many seeds stand behind A's and B's configurations (digits: 3 each)
        caption = next(c.value for c in at.caption if "diamonds the mean" in c.value)
        assert caption.endswith(
            seed_spread_note(
                groups, {k: read_card(Path(CKPT) / f"{m}.safetensors") for k, m in (("A", a), ("B", b))}
            )
        )
        assert caption.count("(3 seeds shipped)") == 2, caption


def test_overview_reacts_to_batch_size_and_model_switch(app_at, assert_app_ok):
    at = app_at(n=32)
    at.slider(key="n").set_value(48).run()
    assert_app_ok(at)
    assert at.query_params["n"] == "48"
    assert _metric(at, "A: ").value == f"{_accuracy_now(at.query_params['a'], 48):.2f} %"
    other = "digits_resnet8_baseline_s1"
    at.selectbox(key="model-B").set_value(other).run()
    assert_app_ok(at)
    assert at.query_params["b"] == other
    assert _metric(at, f"B: {other}").value == f"{_accuracy_now(other, 48):.2f} %"
    at.toggle(key="overview-normalize").set_value(True).run()
    assert_app_ok(at)


def test_garbage_upload_shows_an_error_and_the_app_recovers(app_at, assert_app_ok):
    from app_pages._sidebar import UPLOAD

    at = app_at(n=16)
    shipped_a = at.query_params["a"]
    at.selectbox(key="model-A").set_value(UPLOAD).run()
    assert not at.exception
    at.file_uploader(key="upload-A").upload("junk.pt", os.urandom(4096)).run()
    assert not at.exception, [e.value for e in at.exception]
    errors = [e.value for e in at.error]
    assert any("does not load" in e and "junk.pt" in e for e in errors), errors
    assert not at.get("plotly_chart")  # the page waits for a loadable model
    at.selectbox(key="model-A").set_value(shipped_a).run()
    assert_app_ok(at)
    assert at.get("plotly_chart") and _metric(at, f"A: {shipped_a}")


def test_upload_size_limit_is_enforced_by_the_app(app_at, monkeypatch):
    from app_pages import _sidebar
    from app_pages._sidebar import UPLOAD

    monkeypatch.setattr(_sidebar, "MAX_UPLOAD_MB", 0.001)  # 1 KiB: the app's own limit, not streamlit's
    at = app_at(n=16)
    at.selectbox(key="model-A").set_value(UPLOAD).run()
    at.file_uploader(key="upload-A").upload("big.safetensors", b"\0" * 4096).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert any("upload limit" in e and "big.safetensors" in e for e in errors), errors
    assert not any("does not load" in e for e in errors)  # refused before any attempt to load it


def test_a_valid_upload_is_used_like_a_shipped_checkpoint(app_at, assert_app_ok):
    from app_pages._sidebar import UPLOAD

    at = app_at(n=16)
    name = at.query_params["a"]
    with open(os.path.join(CKPT, f"{name}.safetensors"), "rb") as fh:
        data = fh.read()
    at.selectbox(key="model-A").set_value(UPLOAD).run()
    at.file_uploader(key="upload-A").upload("mine.safetensors", data).run()
    assert_app_ok(at)
    assert _metric(at, "A: mine.safetensors").value == f"{_accuracy_now(name, 16):.2f} %"


def test_an_untrained_model_gets_both_confusion_matrices_side_by_side(
    app_at, assert_app_ok, chart_figures, tmp_path
):
    """Below ERROR_BARS_ABOVE the overview draws both matrices in one full-width figure (counts per cell)."""
    from app_pages._sidebar import UPLOAD
    from tffd_viz.checkpoints import save_checkpoint
    from tffd_viz.models import create_model

    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_chans=1).eval()
    data = save_checkpoint(model, {"dataset": "digits"}, tmp_path / "untrained").read_bytes()
    at = app_at(n=16)
    b = at.query_params["b"]
    at.selectbox(key="model-A").set_value(UPLOAD).run()
    at.file_uploader(key="upload-A").upload("untrained.safetensors", data).run()
    assert_app_ok(at)
    assert float(_metric(at, "A: untrained.safetensors").value.removesuffix(" %")) < 99.0
    fig = next(f for f in chart_figures(at) if f.layout.title.text.startswith("Confusion matrices"))
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"] and {t.xaxis for t in fig.data} == {"x", "x2"}
    assert [a.text for a in fig.layout.annotations][:2] == ["A · untrained.safetensors", f"B · {b}"]
    assert all(int(np.asarray(t.customdata).sum()) == 16 for t in fig.data)  # each counts the whole batch
    assert fig.layout.height == max(380, min(800, 140 + 26 * 10))
    at.toggle(key="overview-normalize").set_value(True).run()
    fig = next(f for f in chart_figures(at) if f.layout.title.text.startswith("Confusion matrices"))
    rows = np.nansum(np.asarray(fig.data[1].z, dtype=float), axis=1)
    assert np.allclose(rows[rows > 0], 100.0)  # % of each true class


def test_the_pair_picker_sets_both_models_and_the_dataset(app_at, assert_app_ok):
    from app_pages._sidebar import OWN_PAIR

    at = app_at(n=16, b="digits_resnet8_tffd-paper_s0")
    assert_app_ok(at)
    assert at.sidebar.selectbox(key="pair").value == OWN_PAIR  # not the shipped digits pair's model B
    at.sidebar.selectbox(key="pair").set_value("digits").run()
    assert_app_ok(at)
    assert at.selectbox(key="model-B").value == at.query_params["b"] == "digits_resnet8_tffd_s0"
    assert _metric(at, "B: digits_resnet8_tffd_s0")
    at.selectbox(key="model-B").set_value("digits_resnet8_tffd_s1").run()  # by hand: no shipped pair
    assert at.sidebar.selectbox(key="pair").value == OWN_PAIR
    at.sidebar.selectbox(key="pair").set_value("cifar10-cpu30").run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.selectbox(key="model-A").value == "cifar10_resnet20_baseline_s0"
    assert at.selectbox(key="model-B").value == "cifar10_resnet20_tffd_s0"
    assert at.selectbox(key="dataset").value == at.query_params["dataset"] == "cifar10"
    assert at.sidebar.selectbox(key="pair").value == "cifar10-cpu30"
