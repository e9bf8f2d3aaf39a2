"""The app's cache (app_pages/_cache.py): library functions passed as objects, keyed by module and name, their
model, batch and card references resolved, tensors hashed by value, every figure through one path."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("streamlit")

from app_pages import _cache as cache
from tffd_viz import plots
from tffd_viz.features import prediction_summary
from tffd_viz.importance import tap_rankings
from tffd_viz.models import default_taps
from tffd_viz.tables import seed_runs

DIGITS = "digits_resnet8_baseline_s0"


def _ref() -> cache.ModelRef:
    path = cache.CHECKPOINT_DIR / f"{DIGITS}.safetensors"
    sha = next(s for p, _, s in cache.shipped_checkpoints() if p == str(path))
    return cache.ModelRef(sha=sha, device="cpu", path=str(path), label=DIGITS)


def test_the_key_names_the_function_by_module_and_qualified_name():
    assert cache.function_key(tap_rankings) == f"{tap_rankings.__module__}.tap_rankings"
    assert cache.function_key(tap_rankings).startswith("tffd_viz.importance")
    assert cache.function_key(plots.training_curves_figure).startswith("tffd_viz.plots")


@pytest.mark.parametrize("fn", [print, lambda x: x, torch.zeros, cache.function_key])
def test_only_library_functions_run_through_the_cache(fn):
    with pytest.raises(ValueError, match="only tffd_viz functions run through the cache"):
        cache.function_key(fn)
    with pytest.raises(ValueError, match="only tffd_viz functions"):
        cache.run(fn, 1)


def test_run_resolves_the_references_and_caches_by_value():
    ref = _ref()
    batch = cache.BatchRef("digits", "test", 16, 0)
    assert list(cache.run(default_taps, ref)) == ["layer1", "layer2", "layer3"]
    summary = cache.run(prediction_summary, ref, batch.images, batch.labels, 10)
    assert summary["pred"].shape == (16,) and summary["confusion"].sum() == 16
    assert (
        cache.run(prediction_summary, ref, batch.images, batch.labels, 10)["accuracy"] == summary["accuracy"]
    )
    # a tensor argument is hashed by its values: equal tensors hit one entry, different ones another
    images = cache.batch(batch)["images"]
    by_tensor = cache.run(tap_rankings, ref, "tffd", images=images.clone(), taps=["layer1"])["layer1"]
    again = cache.run(tap_rankings, ref, "tffd", images=images.clone(), taps=["layer1"])["layer1"]
    assert again is not by_tensor and list(again.order) == list(by_tensor.order)  # cache_data: a copy
    other = cache.run(tap_rankings, ref, "tffd", images=images[:8].clone(), taps=["layer1"])["layer1"]
    assert other.scores.shape == by_tensor.scores.shape and not torch.equal(
        torch.as_tensor(other.scores), torch.as_tensor(by_tensor.scores)
    )


def test_a_figure_is_built_once_and_shared():
    groups = [{"config": "digits resnet8 tffd", "seeds": [0, 1], "accs": [98.0, 97.5]}]
    fig = cache.figure(plots.accuracy_seeds_figure, seed_runs(groups), title="Test accuracy over seeds")
    assert fig is cache.figure(
        plots.accuracy_seeds_figure, seed_runs(groups), title="Test accuracy over seeds"
    )
    assert fig.layout.title.text.startswith("Test accuracy over seeds")


def test_card_fields_resolve_inside_the_cache():
    ref = _ref()
    history = cache.model_card(ref)["history"]
    fig = cache.figure(plots.training_curves_figure, {"A": cache.CardField(ref, "history")})
    assert len(history) > 1 and fig.data and max(max(t.x) for t in fig.data) == history[-1]["epoch"]
