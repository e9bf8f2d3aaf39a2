"""Tests of tffd_viz.report.ranking: saliency bars, criteria that rank identically, the agreement table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from report_fixtures import SECTION_IDS, N

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.models import extract_taps
from tffd_viz.report import identical_criteria

pytest_plugins = ("report_fixtures",)


def test_saliency_bars_are_sorted_saliency_of_each_model(sections: list, pair: tuple[Path, Path]) -> None:
    images, _ = sample_batch("digits", n=N, seed=0)
    fig = sections[SECTION_IDS.index("ranking")].figures[2]  # layer3
    for trace, path in zip(fig.data, pair):
        model, _ = load_checkpoint(path)
        with torch.no_grad():
            f = extract_taps(model, images, ["layer3"])["layer3"]
        sal = F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3))
        assert torch.allclose(
            torch.as_tensor(trace.y, dtype=torch.float32),
            sal.sort(descending=True).values,
            rtol=1e-5,
            atol=1e-7,
        )


def test_identical_criteria_share_a_column() -> None:
    rho = np.array([[1.0, 0.7, 0.7, 0.2], [0.7, 1.0, 1.0, 0.1], [0.7, 1.0, 1.0, 0.1], [0.2, 0.1, 0.1, 1.0]])
    assert identical_criteria(["tffd", "l1", "mean", "taylor"], rho) == {
        "tffd": ["tffd"],
        "l1": ["l1", "mean"],
        "taylor": ["taylor"],
    }


def test_ranking_table_merges_l1_and_mean_after_relu(sections: list) -> None:
    table = sections[SECTION_IDS.index("ranking")].tables[0].frame
    assert "ρ(tffd, l1 = mean)" in table.columns and "ρ(tffd, mean)" not in table.columns
