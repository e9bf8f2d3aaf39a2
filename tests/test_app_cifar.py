"""Every page of the app on the shipped CIFAR pairs (resnet20 baseline vs Tf-FD), where the data is at hand.

The digits pair is what the page tests use; this is the README's promise for the CIFAR pairs: pick them in the
sidebar, point the data root at the CIFAR files, and every page draws its charts (the Sweep page, where no
sweep table of the dataset is shipped, the command that makes one). Skipped where ``../shared/data`` (or
``$TFFD_DATA``) has no CIFAR files.
"""

from __future__ import annotations

import pytest
from conftest import CHECKPOINTS, CIFAR_ROOT, cifar_pair, declared_pages

pytestmark = [pytest.mark.slow, pytest.mark.data]


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_every_page_on_the_shipped_cifar_pair(app_at, assert_app_ok, dataset: str) -> None:
    a, b = cifar_pair(dataset)
    at = app_at(a=a, b=b, n=64, root=CIFAR_ROOT, cka_n=64, timeout=300)
    assert_app_ok(at)
    # the dataset comes from model A's card, the sample batch from the CIFAR test split
    assert at.sidebar.selectbox(key="dataset").value == dataset
    for page in declared_pages():
        at.switch_page(page).run()
        assert_app_ok(at)
        if page == "app_pages/sweep.py" and not (CHECKPOINTS / f"{dataset}_sweep.json").is_file():
            assert any(f"checkpoints/{dataset}_sweep" in i.value for i in at.info), page
            continue
        assert at.get("plotly_chart"), f"{page} drew no chart on the {dataset} pair"
