"""Tests of tffd_viz.report.overview: the 'what changed' rows against the shipped seeds' cards and noise."""

from __future__ import annotations

import math
import statistics

import pytest
from report_fixtures import CKPT, SECTION_IDS, TAPS

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.normalisation import DATA_COPY_CAVEAT
from tffd_viz.verdicts import NOISE_SIGMAS, WHAT_CHANGED_COLUMNS

pytest_plugins = ("report_fixtures",)


def _seed_cards(stem: str) -> list[dict]:
    """Cards of every shipped seed of the configuration of checkpoint ``stem`` (``..._s0``)."""
    return [load_checkpoint(p)[1] for p in sorted(CKPT.glob(f"{stem[:-1]}[0-9].safetensors"))]


def test_what_changed_rows_restate_the_heldout_terms_and_the_seed_noise(sections: list, pair) -> None:
    changed = sections[SECTION_IDS.index("changed")]
    frame = changed.tables[0].frame
    assert frame.columns.tolist() == list(WHAT_CHANGED_COLUMNS)
    rows = frame.set_index(["quantity", "item"])
    cards = {key: _seed_cards(path.stem) for key, path in zip(("A", "B"), pair)}
    assert len(cards["A"]) >= 2, "the shipped digits seeds of A's configuration are missing"
    assert all("heldout_terms" in c for c in cards["A"] + cards["B"]), "a shipped card has no held-out terms"
    for family in ("intra", "intra_rel", "energy"):
        label = {
            "intra": "intra term (raw)",
            "intra_rel": "intra term / energy",
            "energy": "activation energy mean(F²)",
        }[family]
        for tap in TAPS:
            a, b = (cards[k][0]["heldout_terms"][family][tap] for k in ("A", "B"))
            row = rows.loc[(label, tap)]
            assert row["A"] == pytest.approx(a) and row["B"] == pytest.approx(b)
            var = [
                statistics.variance([c["heldout_terms"][family][tap] for c in cards[k]]) for k in ("A", "B")
            ]
            assert row["noise source"] == "seeds"
            assert row["noise ±"] == pytest.approx(NOISE_SIGMAS * math.sqrt(sum(var)))
    # a conclusion exactly where the difference exceeds the noise, and the intro carries only those
    for (quantity, item), row in rows.iterrows():
        beyond = abs(row["B − A"]) > row["noise ±"]
        assert row["verdict"].startswith(("B higher", "B lower", "B's layer departs")) == beyond, (
            quantity,
            item,
        )
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
        assert ("drop of activation energy" in raw["verdict"]) == (
            raw_beyond and rel_within and raw["B − A"] < 0
        )
