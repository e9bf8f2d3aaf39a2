"""AppTest of the What changed page: A vs B on the whole test split, the held-out terms from the cards, the
finding and every difference against its seed or batch noise."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from conftest import CHECKPOINTS, figure_titled

from tffd_viz.checkpoints import list_checkpoints, load_checkpoint
from tffd_viz.verdicts import NOISE_SIGMAS, effect_summary, seed_siblings


def _cards(at) -> dict[str, dict]:
    """The shipped cards of models A and B (they hold their held-out terms)."""
    cards = {
        slot: load_checkpoint(CHECKPOINTS / f"{at.query_params[slot.lower()]}.safetensors")[1]
        for slot in ("A", "B")
    }
    assert all("heldout_terms" in c for c in cards.values()), "the shipped digits cards hold heldout_terms"
    return cards


def test_the_table_restates_the_heldout_terms_and_the_finding(app_at, assert_app_ok):
    at = app_at("what_changed", n=16)
    assert_app_ok(at)
    assert at.title[0].value == "What changed"
    table = next(d.value for d in at.dataframe if "verdict" in d.value.columns)
    rows = table.set_index(["quantity", "item"])
    cards = _cards(at)
    shipped = list_checkpoints(CHECKPOINTS)
    seeds = {
        slot: [load_checkpoint(p)[1]["heldout_terms"] for p in seed_siblings(c, shipped)]
        for slot, c in cards.items()
    }
    for tap in ("layer1", "layer2", "layer3"):
        row = rows.loc[("intra term / energy", tap)]
        assert row["A"] == pytest.approx(cards["A"]["heldout_terms"]["intra_rel"][tap])
        assert row["B"] == pytest.approx(cards["B"]["heldout_terms"]["intra_rel"][tap])
        if len(seeds["A"]) >= 2 and len(seeds["B"]) >= 2:
            var = [statistics.variance([h["intra_rel"][tap] for h in seeds[s]]) for s in ("A", "B")]
            assert row["noise ±"] == pytest.approx(NOISE_SIGMAS * math.sqrt(sum(var)))
    finding = next(m.value for m in at.markdown if m.value.startswith("**Finding.**"))
    records = table.astype(object).where(table.notna(), None).to_dict("records")
    assert finding == f"**Finding.** {effect_summary(records)}"


def test_heldout_terms_come_from_the_cards_with_their_batch_noise(app_at, assert_app_ok, chart_figures):
    at = app_at("what_changed", n=16)
    assert_app_ok(at)
    held = {slot: c["heldout_terms"] for slot, c in _cards(at).items()}
    fig = figure_titled(chart_figures(at), "Held-out intra terms")
    bars = {(t.name[0], t.xaxis): t for t in fig.data}
    for slot in ("A", "B"):
        np.testing.assert_allclose(bars[slot, "x"].y, [held[slot]["intra"][t] for t in bars[slot, "x"].x])
        np.testing.assert_allclose(
            bars[slot, "x2"].error_y.array, [held[slot]["intra_rel_std"][t] for t in bars[slot, "x2"].x]
        )
    figure_titled(chart_figures(at), "Held-out inter terms")
    table = next(d.value for d in at.dataframe if "verdict (batches)" in d.value.columns)
    row = table.set_index(["quantity", "item"]).loc[("intra term / energy", "layer1")]
    sa, sb = held["A"]["intra_rel_std"]["layer1"], held["B"]["intra_rel_std"]["layer1"]
    assert row["batch noise ±"] == pytest.approx(NOISE_SIGMAS * math.hypot(sa, sb))
    assert row["verdict (batches)"].startswith(("within", "B higher", "B lower"))
