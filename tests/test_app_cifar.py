"""Every page of the app on the shipped CIFAR pairs (resnet20 baseline vs Tf-FD), where the data is at hand.

The digits pair is what the page tests use; this is the README's promise for the CIFAR pairs: pick them in the
sidebar, point the data root at the CIFAR files, and every page draws its charts. Skipped where a pair is not
shipped or ``../shared/data`` (or ``$TFFD_DATA``) has no CIFAR files.
"""

from __future__ import annotations

import os

import pytest
from conftest import ROOT, declared_pages, shipped

DATA_ROOT = os.environ.get("TFFD_DATA") or str(ROOT.parent / "shared" / "data")
PAIRS = {name: (f"{name}_resnet20_baseline_s0", f"{name}_resnet20_tffd_s0") for name in ("cifar10", "cifar100")}
FILES = {"cifar10": ("cifar10.zip", "cifar10"), "cifar100": ("cifar100.zip", "cifar100-jpeg.npz", "cifar100")}

pytestmark = [pytest.mark.slow, pytest.mark.data]


def _available(dataset: str) -> bool:
    return any(os.path.exists(os.path.join(DATA_ROOT, f)) for f in FILES[dataset])


@pytest.mark.parametrize("dataset", sorted(PAIRS))
def test_every_page_on_the_shipped_cifar_pair(app_at, assert_app_ok, dataset: str) -> None:
    a, b = PAIRS[dataset]
    if not (shipped(a) and shipped(b)):
        pytest.skip(f"the {dataset} pair ({a}, {b}) is not shipped yet")
    if not _available(dataset):
        pytest.skip(f"no {dataset} files in {DATA_ROOT}")
    at = app_at(a=a, b=b, n=64, root=DATA_ROOT, cka_n=64, timeout=300)
    assert_app_ok(at)
    # the dataset comes from model A's card, the sample batch from the CIFAR test split
    assert at.sidebar.selectbox(key="dataset").value == dataset
    for page in declared_pages():
        at.switch_page(page).run()
        assert_app_ok(at)
        assert at.get("plotly_chart"), f"{page} drew no chart on the {dataset} pair"
