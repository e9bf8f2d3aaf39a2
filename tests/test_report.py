"""Tests of tffd_viz.report: sections, numbers against direct library calls, the HTML file, the CLI."""

from __future__ import annotations

import argparse
import importlib
import math
import re
import statistics
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F
from plotly.offline import get_plotlyjs

from tffd_viz.checkpoints import load_checkpoint, save_checkpoint
from tffd_viz.cli import main
from tffd_viz.data import sample_batch
from tffd_viz.errors import DataError, TffdVizError
from tffd_viz.models import create_model, extract_taps
from tffd_viz.normalisation import DATA_COPY_CAVEAT
from tffd_viz.report import (
    SECTIONS,
    SUMMARY_COLUMNS,
    add_report_arguments,
    card_lambdas,
    identical_criteria,
    render_html,
    report_sections,
    run_report,
)
from tffd_viz.similarity import MinibatchCKA
from tffd_viz.terms import tffd_terms_on_batch
from tffd_viz.verdicts import NOISE_SIGMAS, WHAT_CHANGED_COLUMNS

REPO = Path(__file__).resolve().parents[1]
CKPT = REPO / "checkpoints"
N = 64
TAPS = ["layer1", "layer2", "layer3"]
SECTION_IDS = ["overview", "changed", "ranking", "losses", "similarity", "cka", "summary"]
PLOTLY_BANNER = "* plotly.js v"


def _shipped_pair() -> tuple[Path, Path]:
    a = CKPT / "digits_resnet8_baseline_s0.safetensors"
    candidates = [
        CKPT / "digits_resnet8_tffd_s0.safetensors",
        CKPT / "digits_resnet8_tffd-paper_s0.safetensors",
    ]
    b = next((p for p in candidates if p.is_file()), None)
    if not a.is_file() or b is None:
        pytest.skip("the shipped digits checkpoints are not in checkpoints/ yet")
    return a, b


@pytest.fixture(scope="module")
def pair() -> tuple[Path, Path]:
    return _shipped_pair()


@pytest.fixture(scope="module")
def sections(pair: tuple[Path, Path]) -> list:
    torch.manual_seed(0)
    return report_sections(pair[0], pair[1], n=N, seed=0, progress=False)


@pytest.fixture(scope="module")
def summary(sections: list) -> pd.DataFrame:
    frame = sections[-1].tables[0].frame
    return frame.set_index(["quantity", "layer / term"])


def _value(summary: pd.DataFrame, quantity: str, item: str, column: str) -> float:
    return float(summary.loc[(quantity, item), column])


# --------------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------------


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
    # overview: both models in one figure (per-class errors near 100 %, else both matrices), the training curves
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


# --------------------------------------------------------------------------------------------------
# summary numbers against direct library calls
# --------------------------------------------------------------------------------------------------


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
        assert _value(summary, "top-1 accuracy on the batch (%)", "", key) == pytest.approx(acc, abs=1e-9)
        rep = tffd_terms_on_batch(model, images, labels, TAPS)
        assert _value(summary, "cross-entropy on the batch", "", key) == pytest.approx(rep.ce, rel=1e-6)
        for tap, value in rep.intra.items():
            assert _value(summary, "intra-layer term (unweighted)", tap, key) == pytest.approx(
                value, rel=1e-6
            )
        for name, value in rep.inter.items():
            assert _value(summary, "inter-layer term (unweighted)", name, key) == pytest.approx(
                value, rel=1e-6
            )
        li, le, _ = card_lambdas(card)
        total = li * sum(rep.intra.values()) / 3 + le * sum(rep.inter.values()) / 3
        assert _value(summary, "λ-weighted Tf-FD total", "", key) == pytest.approx(total, rel=1e-6)
        for tap in TAPS:
            assert _value(summary, "mean paired cosine (salient vs redundant)", tap, key) == pytest.approx(
                _paired_cosine_mean(feats[key][tap]), abs=1e-5
            )
    assert _value(summary, "images where A and B disagree", "", "A vs B") == float(
        (preds["A"] != preds["B"]).sum()
    )
    cka = MinibatchCKA(len(TAPS), len(TAPS))
    cka.update(list(feats["A"].values()), list(feats["B"].values()))
    diag = cka.compute().diagonal()
    for i, tap in enumerate(TAPS):
        got = _value(summary, "linear CKA, A layer vs the same B layer", tap, "A vs B")
        assert got == pytest.approx(float(diag[i]), abs=1e-6)
        assert 0.0 < got <= 1.0 + 1e-9
    # per-model rows leave the comparison column empty and vice versa
    assert math.isnan(_value(summary, "top-1 accuracy on the batch (%)", "", "A vs B"))
    assert math.isnan(_value(summary, "linear CKA, A layer vs the same B layer", "layer1", "A"))


def test_cka_table_is_the_full_a_vs_b_matrix(sections: list, summary: pd.DataFrame) -> None:
    table = sections[SECTION_IDS.index("cka")].tables[0].frame
    assert table["A layer"].tolist() == TAPS and table.columns.tolist()[1:] == [f"B {t}" for t in TAPS]
    for i, tap in enumerate(TAPS):
        assert table.iloc[i, i + 1] == _value(
            summary, "linear CKA, A layer vs the same B layer", tap, "A vs B"
        )
    heat = sections[SECTION_IDS.index("cka")].figures[0].data[0]
    np.testing.assert_allclose(np.asarray(heat.z, dtype=float), table.iloc[:, 1:].to_numpy(dtype=float))


def _seed_cards(stem: str) -> list[dict]:
    """Cards of every shipped seed of the configuration of checkpoint ``stem`` (``..._s0``)."""
    return [load_checkpoint(p)[1] for p in sorted(CKPT.glob(f"{stem[:-1]}[0-9].safetensors"))]


def test_what_changed_rows_restate_the_heldout_terms_and_the_seed_noise(sections: list, pair) -> None:
    changed = sections[SECTION_IDS.index("changed")]
    frame = changed.tables[0].frame
    assert frame.columns.tolist() == list(WHAT_CHANGED_COLUMNS)
    rows = frame.set_index(["quantity", "item"])
    cards = {key: _seed_cards(path.stem) for key, path in zip(("A", "B"), pair)}
    if len(cards["A"]) < 2 or any("heldout_terms" not in c for c in cards["A"] + cards["B"]):
        pytest.skip("needs the shipped digits seeds with held-out terms in their cards")
    for family in ("intra", "intra_rel", "energy"):
        label = {"intra": "intra term (raw)", "intra_rel": "intra term / energy",
                 "energy": "activation energy mean(F²)"}[family]
        for tap in TAPS:
            a, b = (cards[k][0]["heldout_terms"][family][tap] for k in ("A", "B"))
            row = rows.loc[(label, tap)]
            assert row["A"] == pytest.approx(a) and row["B"] == pytest.approx(b)
            var = [statistics.variance([c["heldout_terms"][family][tap] for c in cards[k]]) for k in ("A", "B")]
            assert row["noise source"] == "seeds"
            assert row["noise ±"] == pytest.approx(NOISE_SIGMAS * math.sqrt(sum(var)))
    # a conclusion exactly where the difference exceeds the noise, and the intro carries only those
    for (quantity, item), row in rows.iterrows():
        beyond = abs(row["B − A"]) > row["noise ±"]
        assert row["verdict"].startswith(("B higher", "B lower", "B's layer departs")) == beyond, (quantity, item)
        if not beyond:
            assert f"{quantity}, {item}:" not in changed.intro
    assert "λ_intra" in changed.intro and "the paper's" in changed.intro
    # both shipped models were trained by tffd-viz: no data-copy caveat (it is for models trained elsewhere)
    assert DATA_COPY_CAVEAT not in changed.intro


def test_a_raw_term_that_falls_with_the_energy_reads_as_a_drop_of_energy(sections: list) -> None:
    rows = sections[SECTION_IDS.index("changed")].tables[0].frame.set_index(["quantity", "item"])
    for tap in TAPS:
        raw, rel = rows.loc[("intra term (raw)", tap)], rows.loc[("intra term / energy", tap)]
        raw_beyond = abs(raw["B − A"]) > raw["noise ±"]
        rel_within = abs(rel["B − A"]) <= rel["noise ±"]
        assert ("drop of activation energy" in raw["verdict"]) == (raw_beyond and rel_within and raw["B − A"] < 0)


def test_identical_criteria_share_a_column() -> None:
    rho = np.array([[1.0, 0.7, 0.7, 0.2], [0.7, 1.0, 1.0, 0.1], [0.7, 1.0, 1.0, 0.1], [0.2, 0.1, 0.1, 1.0]])
    assert identical_criteria(["tffd", "l1", "mean", "taylor"], rho) == {
        "tffd": ["tffd"], "l1": ["l1", "mean"], "taylor": ["taylor"]}


def test_ranking_table_merges_l1_and_mean_after_relu(sections: list) -> None:
    table = sections[SECTION_IDS.index("ranking")].tables[0].frame
    assert "ρ(tffd, l1 = mean)" in table.columns and "ρ(tffd, mean)" not in table.columns


def test_card_lambdas_fall_back_to_the_paper() -> None:
    assert card_lambdas({"lambda_intra": 1e-3, "lambda_inter": 2e-3}) == (1e-3, 2e-3, "card")
    assert card_lambdas({"lambda_intra": None, "lambda_inter": 2e-3}) == (8e-4, 5e-4, "paper")


# --------------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------------


def test_html_is_self_contained_with_plotly_once_and_every_section(
    sections: list, summary: pd.DataFrame
) -> None:
    page = render_html(sections, title="t", meta={"model A": "a.safetensors"})
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert page.count(PLOTLY_BANNER) == 1
    outside_js = page.replace(get_plotlyjs(), "")
    assert not re.search(r"<script[^>]+src=", outside_js)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", outside_js)
    for s in sections:
        assert f'<section id="{s.id}">' in page and f"<h2>{s.title}</h2>" in page
        assert f'<a href="#{s.id}">' in page
    n_figures = sum(len(s.figures) for s in sections)
    assert page.count('class="plotly-graph-div"') == n_figures
    assert page.count("Plotly.newPlot(") == n_figures
    acc = _value(summary, "top-1 accuracy on the batch (%)", "", "B")
    assert f"<td>{acc:.4g}</td>" in page
    assert "<th>model A</th><td>a.safetensors</td>" in page


def test_cli_writes_the_report_and_prints_its_path(pair: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    out = tmp_path / "sub" / "report.html"
    args = parser.parse_args(["--a", str(pair[0]), "--b", str(pair[1]), "--n", str(N), "--out", str(out)])
    assert run_report(args) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out)
    assert f"{len(SECTIONS)}/{len(SECTIONS)}" in captured.err  # the progress bar ticked once per section
    page = out.read_text(encoding="utf-8")
    assert page.count(PLOTLY_BANNER) == 1
    assert all(f'<section id="{i}">' in page for i in SECTION_IDS)
    assert f"<td>{pair[0]}</td>" in page and f"<td>{pair[1]}</td>" in page


def test_tffd_viz_report_command_reports_bad_input_in_one_line(
    pair: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    out = tmp_path / "never.html"
    code = main(
        ["report", "--a", str(pair[0]), "--b", str(pair[1]), "--n", "361", "--quiet", "--out", str(out)]
    )
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert err.startswith("tffd-viz report: error:") and "n=361" in err and "360" in err


def test_report_arguments_defaults() -> None:
    parser = argparse.ArgumentParser()
    add_report_arguments(parser)
    args = parser.parse_args(["--a", "x.safetensors", "--b", "y.safetensors"])
    assert (
        args.a,
        args.b,
        args.dataset,
        args.data_root,
        args.n,
        args.seed,
        args.split,
        args.device,
        args.out,
        args.quiet,
    ) == ("x.safetensors", "y.safetensors", None, None, 256, 0, "test", "cpu", "report.html", False)
    with pytest.raises(SystemExit):
        parser.parse_args(["--a", "x.safetensors"])


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def test_bad_inputs_raise_errors_that_name_them(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="360"):
        report_sections(pair[0], pair[1], n=361, progress=False)
    with pytest.raises(DataError, match="mnist"):
        report_sections(pair[0], pair[1], dataset="mnist", progress=False)
    torch.manual_seed(0)
    rgb = save_checkpoint(
        create_model("resnet8", num_classes=10, in_chans=3),
        {"dataset": "digits"},
        tmp_path / "rgb.safetensors",
    )
    with pytest.raises(DataError, match=r"model B .*rgb\.safetensors.* expects 3 input channel"):
        report_sections(pair[0], rgb, n=8, progress=False)
    cardless = save_checkpoint(create_model("resnet8", num_classes=10, in_chans=1), None, tmp_path / "bare")
    with pytest.raises(DataError, match="names no dataset"):
        report_sections(cardless, pair[1], n=8, progress=False)


def test_module_imports_without_plotly_and_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI registers this module's arguments, so it must import where plotly is not installed."""
    import tffd_viz

    for name in [
        m for m in sys.modules if m.split(".")[0] == "plotly" or m in ("tffd_viz.report", "tffd_viz.plots")
    ]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "plotly", None)  # "import plotly" now raises ImportError
    for attr in ("report", "plots"):
        monkeypatch.delattr(tffd_viz, attr, raising=False)
    fresh = importlib.import_module("tffd_viz.report")
    parser = argparse.ArgumentParser()
    fresh.add_report_arguments(parser)
    with pytest.raises(TffdVizError, match="the HTML report needs plotly and pandas"):
        fresh.build_report("a.safetensors", "b.safetensors", progress=False)
