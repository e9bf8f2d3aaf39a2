"""Tests of tffd_viz.report.sections: every section in order, and the summary numbers against direct library
calls (the report on the shipped digits pair, computed once: ``report_fixtures``)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F
from report_fixtures import SECTION_IDS, TAPS, N, summary_value

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.models import extract_taps
from tffd_viz.report import SECTIONS, SUMMARY_COLUMNS, card_lambdas
from tffd_viz.similarity import MinibatchCKA
from tffd_viz.terms import tffd_terms_on_batch

pytest_plugins = ("report_fixtures",)


def test_sections_come_in_order_with_figures_and_tables(sections: list) -> None:
    assert [s.id for s in sections] == SECTION_IDS == list(SECTIONS)
    assert [s.title for s in sections] == [
        "Overview",
        "A vs B: what changed",
        "Channel ranking",
        "Losses",
        "Similarity",
        "CKA",
        "Summary",
    ]
    for s in sections[:-1]:
        assert s.figures and all(isinstance(f, go.Figure) for f in s.figures), s.id
        assert s.tables and all(isinstance(t.frame, pd.DataFrame) and len(t.frame) for t in s.tables), s.id
        assert len(s.intro) > 80
    fig_titles = {s.id: [f.layout.title.text for f in s.figures] for s in sections}
    # overview: both models in one figure (per-class errors near 100 %, else both matrices),
    # the training curves
    assert fig_titles["overview"][0].startswith(("Errors per class", "Confusion matrices"))
    assert len(sections[0].figures[0].data) == 2
    assert sum(len(f.data) for f in sections[0].figures[1:]) > 0
    # ranking: one saliency figure per layer with both models, one criteria heatmap (B's deepest layer)
    assert [t for t in fig_titles["ranking"][:3]] == [f"Channel saliency, sorted — {t}" for t in TAPS]
    assert sum("Rank agreement" in t for t in fig_titles["ranking"]) == 1
    assert fig_titles["losses"][0].startswith("Held-out intra terms") and len(fig_titles["losses"]) == 4
    assert sum("Channel cosine" in t for t in fig_titles["similarity"]) == 2
    assert fig_titles["similarity"][0].startswith("Paired cosine vs random channel pairs")
    assert len(fig_titles["cka"]) == 3 and "seed to seed" in fig_titles["cka"][1]
    cards = sections[0].tables[0].frame
    assert cards.iloc[:, 0].tolist()[0] == "architecture" and cards.shape[1] == 3
    assert sections[-1].tables[0].frame.columns.tolist() == list(SUMMARY_COLUMNS)


def _paired_cosine_mean(f: torch.Tensor) -> float:
    """Plain restatement: channels sorted by saliency, the i-th salient vs the i-th of the bottom half."""
    c = f.shape[1]
    k = c // 2
    sal = F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3))
    order = torch.sort(sal, descending=True, stable=True).indices
    vec = F.normalize(f.transpose(0, 1).reshape(c, -1).double(), dim=1)
    return float((vec[order[:k]] * vec[order[c - k :]]).sum(dim=1).mean())


def test_summary_numbers_equal_direct_library_calls(summary: pd.DataFrame, pair: tuple[Path, Path]) -> None:
    images, labels = sample_batch("digits", split="test", n=N, seed=0)
    feats = {}
    preds = {}
    for key, path in zip(("A", "B"), pair):
        model, card = load_checkpoint(path)
        with torch.no_grad():
            logits, feats[key] = extract_taps(model, images, TAPS, return_logits=True)
        preds[key] = logits.argmax(dim=1)
        acc = 100.0 * float((preds[key] == labels).double().mean())
        assert summary_value(summary, "top-1 accuracy on the batch (%)", "", key) == pytest.approx(
            acc, abs=1e-9
        )
        rep = tffd_terms_on_batch(model, images, labels, TAPS)
        assert summary_value(summary, "cross-entropy on the batch", "", key) == pytest.approx(
            rep.ce, rel=1e-6
        )
        for tap, value in rep.intra.items():
            assert summary_value(summary, "intra-layer term (unweighted)", tap, key) == pytest.approx(
                value, rel=1e-6
            )
        for name, value in rep.inter.items():
            assert summary_value(summary, "inter-layer term (unweighted)", name, key) == pytest.approx(
                value, rel=1e-6
            )
        li, le, _ = card_lambdas(card)
        total = li * sum(rep.intra.values()) / 3 + le * sum(rep.inter.values()) / 3
        assert summary_value(summary, "λ-weighted Tf-FD total", "", key) == pytest.approx(total, rel=1e-6)
        for tap in TAPS:
            assert summary_value(
                summary, "mean paired cosine (salient vs redundant)", tap, key
            ) == pytest.approx(_paired_cosine_mean(feats[key][tap]), abs=1e-5)
    assert summary_value(summary, "images where A and B disagree", "", "A vs B") == float(
        (preds["A"] != preds["B"]).sum()
    )
    cka = MinibatchCKA(len(TAPS), len(TAPS))
    cka.update(list(feats["A"].values()), list(feats["B"].values()))
    diag = cka.compute().diagonal()
    for i, tap in enumerate(TAPS):
        got = summary_value(summary, "linear CKA, A layer vs the same B layer", tap, "A vs B")
        assert got == pytest.approx(float(diag[i]), abs=1e-6)
        assert 0.0 < got <= 1.0 + 1e-9
    # per-model rows leave the comparison column empty and vice versa
    assert math.isnan(summary_value(summary, "top-1 accuracy on the batch (%)", "", "A vs B"))
    assert math.isnan(summary_value(summary, "linear CKA, A layer vs the same B layer", "layer1", "A"))
