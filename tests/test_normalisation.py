"""Tests of tffd_viz.normalisation: re-normalising, the input adapter, card vs guess, accuracy per choice."""

from __future__ import annotations

import pytest
import torch

from tffd_viz.errors import DataError
from tffd_viz.models import create_model, extract_taps
from tffd_viz.normalisation import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    accuracy_by_normalisation,
    adapter_stats,
    attach_input_normalisation,
    model_normalisation,
    normalisation_stats,
    renormalised,
    trained_elsewhere,
)

pytestmark = pytest.mark.usefixtures("single_thread")


def _x(n: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_renormalised_is_the_plain_formula_and_the_adapter_uses_it():
    dm, ds = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    x = _x(3, seed=5).double()
    column = {
        name: torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1)
        for name, v in (("dm", dm), ("ds", ds), ("m", IMAGENET_MEAN), ("s", IMAGENET_STD))
    }
    want = (x * column["ds"] + column["dm"] - column["m"]) / column["s"]
    torch.testing.assert_close(renormalised(x, dm, ds, IMAGENET_MEAN, IMAGENET_STD), want)
    torch.manual_seed(0)
    model = create_model("resnet20_a", num_classes=10).double().eval()
    with torch.no_grad():
        plain_logits, plain_taps = extract_taps(model, want, return_logits=True)
        assert attach_input_normalisation(model, dm, ds, IMAGENET_MEAN, IMAGENET_STD) is not None
        logits, taps = extract_taps(model, x, return_logits=True)
    torch.testing.assert_close(logits, plain_logits)
    torch.testing.assert_close(taps["layer3"], plain_taps["layer3"])
    # same statistics: nothing attached, and the earlier adapter is gone
    assert attach_input_normalisation(model, dm, ds, dm, ds) is None
    with torch.no_grad():
        torch.testing.assert_close(model(want), plain_logits)


def test_model_normalisation_card_or_marked_guess_and_accuracy_per_choice():
    dm, ds = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    known = model_normalisation(
        {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, dm, ds, guess="none"
    )
    assert not known.guessed and known.mean == IMAGENET_MEAN and "from its card" in known.describe()
    guess = model_normalisation({}, dm, ds, guess="imagenet")
    assert guess.guessed and guess.std == IMAGENET_STD and guess.describe().startswith("a guess")
    assert model_normalisation({}, dm, ds, guess="none").mean == (0.0, 0.0, 0.0)
    with pytest.raises(DataError, match="3-channel"):
        model_normalisation({}, (0.3,), (0.3,), guess="imagenet")
    torch.manual_seed(0)
    model = create_model("resnet20_a", num_classes=10).eval()
    x, labels = _x(8, seed=6), torch.arange(8) % 10
    accs = accuracy_by_normalisation(model, x, labels, dm, ds)
    assert list(accs) == ["dataset", "imagenet", "none"]
    with torch.no_grad():
        for choice, mean, std in (
            ("dataset", dm, ds),
            ("imagenet", IMAGENET_MEAN, IMAGENET_STD),
            ("none", (0.0,) * 3, (1.0,) * 3),
        ):
            pred = model(renormalised(x, dm, ds, mean, std)).argmax(1)
            assert accs[choice] == pytest.approx(100.0 * float((pred == labels).float().mean()))


def test_adapter_stats_only_when_the_statistics_differ():
    dm, ds = (0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616)
    same = model_normalisation({"mean": list(dm), "std": list(ds)}, dm, ds)
    assert adapter_stats(same, dm, ds) is None
    other = model_normalisation({}, dm, ds, guess="imagenet")
    assert adapter_stats(other, dm, ds) == (dm, ds, IMAGENET_MEAN, IMAGENET_STD)


def test_choices_that_do_not_apply_are_left_out_and_errors_name_options():
    model = create_model("resnet8", num_classes=10, in_chans=1).eval()
    x, labels = torch.randn(4, 1, 32, 32), torch.arange(4)
    assert list(accuracy_by_normalisation(model, x, labels, (0.3,), (0.3,))) == ["dataset", "none"]
    with pytest.raises(
        DataError, match=r"unknown normalisation 'cifar'; choose one of \['dataset', 'imagenet', 'none'\]"
    ):
        normalisation_stats("cifar", (0.3,), (0.3,))
    with pytest.raises(DataError, match="standard deviations must be positive"):
        renormalised(x, (0.3,), (0.0,), (0.3,), (0.3,))
    with pytest.raises(DataError, match=r"the card's mean/std have 3 channel\(s\), the data 1"):
        model_normalisation({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}, (0.3,), (0.3,))


def test_trained_elsewhere_reads_the_source_format():
    assert trained_elsewhere({"source_format": "torch-legacy"})
    assert not trained_elsewhere({"source_format": "tffd-viz/1"}) and not trained_elsewhere({})
