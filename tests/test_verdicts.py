"""Tests of tffd_viz.verdicts: noise references (re-stated formulas), verdict rules,
measures against direct calls."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from tffd_viz.data import ImageDataset
from tffd_viz.errors import TffdVizError
from tffd_viz.heldout import heldout_terms, scale_free_terms
from tffd_viz.losses import salient_order
from tffd_viz.models import create_model, extract_taps
from tffd_viz.similarity import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine
from tffd_viz.verdicts import (
    NOISE_SIGMAS,
    QUANTITIES,
    WHAT_CHANGED_COLUMNS,
    Noise,
    batch_noise,
    channel_cosine_stats,
    cka_diagonal,
    cka_rows,
    difference_verdict,
    effect_summary,
    heldout_slices,
    lambda_text,
    model_measures,
    noise_table,
    pair_comparison,
    random_pair_cosine,
    sampling_noise,
    seed_cka,
    seed_mean_measures,
    seed_noise,
    seed_siblings,
    term_verdict,
    what_changed,
    what_changed_text,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, ImageDataset]:
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, in_chans=1).eval()
    images = torch.randint(0, 256, (37, 1, 16, 16), dtype=torch.uint8)
    return model, ImageDataset(images, torch.randint(0, 3, (37,)), [0.5], [0.25])


# ----------------------------------------------------------------------------------------------------------
# noise references
# ----------------------------------------------------------------------------------------------------------


def test_seed_noise_is_two_sd_of_a_difference_of_single_runs() -> None:
    a, b = [1.0, 1.2, 0.9], [0.5, 0.55, 0.7]
    noise = seed_noise(a, b)
    assert noise.source == "seeds"
    assert noise.size == pytest.approx(
        NOISE_SIGMAS * math.sqrt(statistics.variance(a) + statistics.variance(b))
    )
    # a configuration with one seed borrows the other's variance
    assert seed_noise(a, [0.3]).size == pytest.approx(NOISE_SIGMAS * math.sqrt(2 * statistics.variance(a)))
    assert seed_noise([1.0], [2.0]).size is None


def test_batch_and_sampling_noise_formulas() -> None:
    assert batch_noise(0.3, 0.4).size == pytest.approx(NOISE_SIGMAS * 0.5)
    assert batch_noise(None, 0.4).size == pytest.approx(NOISE_SIGMAS * 0.4 * math.sqrt(2))
    assert batch_noise(None, None).size is None
    s = [100 * math.sqrt(p * (1 - p) / 400) for p in (0.9, 0.8)]
    assert sampling_noise(90.0, 80.0, 400).size == pytest.approx(NOISE_SIGMAS * math.hypot(*s))
    with pytest.raises(TffdVizError, match="n >= 1"):
        sampling_noise(90.0, 80.0, 0)


def test_difference_verdict_writes_a_conclusion_only_beyond_the_noise() -> None:
    noise = Noise(0.2, "seeds", "")
    assert difference_verdict(1.0, 1.1, noise).startswith("within seeds noise")
    assert difference_verdict(1.0, 1.2, noise).startswith("within seeds noise")  # at the reference: no claim
    text = difference_verdict(1.0, 0.5, noise)
    assert text.startswith("B lower by 50 %") and "2.5×" in text
    assert difference_verdict(1.0, 1.0, noise) == "no difference"
    assert difference_verdict(1.0, 2.0, Noise(None, "none", "")) == "no noise reference"
    assert difference_verdict(None, 2.0, noise) == "not measured on both"


def test_a_term_that_drops_with_the_scale_of_the_maps_is_called_a_drop_of_energy() -> None:
    torch.manual_seed(1)
    feats = {"s1": torch.rand(8, 6, 8, 8), "s2": torch.rand(8, 8, 4, 4)}
    small = {k: 0.1 * v for k, v in feats.items()}  # the same maps, 10x smaller: no change of likeness
    a, b = scale_free_terms(feats), scale_free_terms(small)
    # invariance: raw terms scale with the square of the scale, relative terms not at all
    assert b["intra"]["s1"] == pytest.approx(0.01 * a["intra"]["s1"], rel=1e-4)
    assert b["intra_rel"]["s1"] == pytest.approx(a["intra_rel"]["s1"], rel=1e-4)
    noise = Noise(0.01 * a["intra"]["s1"], "batches", "")
    ratio = b["energy"]["s1"] / a["energy"]["s1"]
    text = term_verdict(
        (a["intra"]["s1"], b["intra"]["s1"], noise),
        (a["intra_rel"]["s1"], b["intra_rel"]["s1"], Noise(0.01, "batches", "")),
        ratio,
    )
    assert text.startswith("B lower by 99 %")
    assert "unchanged within batches noise" in text and "drop of activation energy (energy B/A ×0.01)" in text
    # a drop of the relative term too reads as a change of likeness
    both = term_verdict((1.0, 0.5, Noise(0.1, "seeds", "")), (1.3, 0.9, Noise(0.1, "seeds", "")), 0.7)
    assert "more alike relative to their size" in both
    # raw within noise: no conclusion on the raw term, the relative one reported when beyond noise
    flat = term_verdict((1.0, 1.05, Noise(0.1, "seeds", "")), (1.3, 0.9, Noise(0.1, "seeds", "")), 1.4)
    assert flat.startswith("within seeds noise") and "scale-free term lower beyond noise" in flat


# ----------------------------------------------------------------------------------------------------------
# measures
# ----------------------------------------------------------------------------------------------------------


def test_heldout_slices_are_the_batches_of_heldout_terms(tiny) -> None:
    model, ds = tiny
    held = heldout_terms(model, ds, batch_size=500, min_batches=4)
    slices = heldout_slices(len(ds), 500, 4)
    assert len(slices) == held["batches"] and slices[0].stop - slices[0].start == held["batch_size"]
    assert slices[-1].stop == len(ds) and all(s.stop - s.start >= 2 for s in slices)
    assert [(s.start, s.stop) for s in heldout_slices(9, 4, 1)] == [(0, 4), (4, 9)]  # a 1-image tail joins
    assert len(heldout_slices(360, 500, 4)) == 4 and len(heldout_slices(10_000, 500, 4)) == 20


def test_random_pair_cosine_is_the_mean_over_distinct_pairs() -> None:
    torch.manual_seed(2)
    cos = channel_cosine_matrix(torch.rand(5, 6, 4, 4))
    pairs = [float(cos[i, j]) for i in range(6) for j in range(6) if i != j]
    assert random_pair_cosine(cos) == pytest.approx(sum(pairs) / len(pairs))
    with pytest.raises(TffdVizError, match="square"):
        random_pair_cosine(torch.ones(1, 1))


def test_channel_cosine_stats_over_one_batch_equal_the_direct_calls(tiny) -> None:
    model, ds = tiny
    stats = channel_cosine_stats(model, ds, batch_size=len(ds), min_batches=1)
    assert stats["batches"] == 1 and stats["paired_std"]["layer1"] is None
    feats = extract_taps(model, ds.normalized(), ["layer1", "layer2", "layer3"])
    f = feats["layer2"]
    paired = float(paired_channel_cosine(f, salient_order(f)).mean())
    rand = random_pair_cosine(channel_cosine_matrix(f))
    assert stats["paired"]["layer2"] == pytest.approx(paired, abs=1e-6)
    assert stats["random"]["layer2"] == pytest.approx(rand, abs=1e-6)
    assert stats["excess"]["layer2"] == pytest.approx(paired - rand, abs=1e-6)
    align = float(inter_layer_alignment(feats["layer1"], feats["layer3"]).mean())
    assert stats["alignment"]["layer1->layer3"] == pytest.approx(align, abs=1e-6)


def test_channel_cosine_stats_mean_and_std_over_batches(tiny) -> None:
    model, ds = tiny
    stats = channel_cosine_stats(model, ds, batch_size=500, min_batches=4)
    slices = heldout_slices(len(ds), 500, 4)
    values, sizes = [], []
    for sl in slices:
        f = extract_taps(model, ds.normalized(sl), ["layer3"])["layer3"]
        values.append(float(paired_channel_cosine(f, salient_order(f)).mean()))
        sizes.append(sl.stop - sl.start)
    assert stats["paired"]["layer3"] == pytest.approx(
        sum(v * w for v, w in zip(values, sizes)) / len(ds), abs=1e-6
    )
    assert stats["paired_std"]["layer3"] == pytest.approx(statistics.stdev(values), abs=1e-6)


def test_model_measures_read_the_card_entry_only_for_the_same_split(tiny) -> None:
    model, ds = tiny
    held = heldout_terms(model, ds)
    fake = {**held, "intra": {k: v + 1 for k, v in held["intra"].items()}}
    assert model_measures(model, ds, {"heldout_terms": fake})["heldout"]["intra"] == fake["intra"]
    other = model_measures(model, ds, {"heldout_terms": {**fake, "n": len(ds) + 1}})
    assert other["heldout_from"] == "computed" and other["heldout"]["intra"] == held["intra"]


def test_cka_of_a_model_with_itself_is_one_and_seed_pairs_are_all_pairs(tiny) -> None:
    model, ds = tiny
    images = ds.normalized()
    diag = cka_diagonal(model, model, images, batch_size=37)
    assert list(diag) == ["layer1", "layer2", "layer3"]
    assert all(v == pytest.approx(1.0, abs=1e-5) for v in diag.values())
    torch.manual_seed(3)
    other = create_model("resnet8", num_classes=3, in_chans=1).eval()
    seeds = seed_cka([model, other, model], images, batch_size=37)
    assert all(len(v) == 3 for v in seeds.values())
    assert seeds["layer1"][1] == pytest.approx(1.0, abs=1e-5)  # model vs model


def test_seed_siblings_are_every_seed_of_the_configuration() -> None:
    card = {
        "dataset": "digits",
        "arch": "resnet8",
        "method": "tffd",
        "lambda_intra": 0.1,
        "lambda_inter": 0.1,
        "recipe": "digits",
        "seed": 0,
    }
    shipped = [
        ("b_s2.safetensors", {**card, "seed": 2}),
        ("b_s0.safetensors", card),
        ("c_s1.safetensors", {**card, "lambda_intra": 8e-4, "seed": 1}),
        ("a_s1.safetensors", {**card, "method": "baseline", "seed": 1}),
    ]
    assert [p.name for p in seed_siblings(card, shipped)] == ["b_s0.safetensors", "b_s2.safetensors"]


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------


def _measures(intra: float, rel: float, energy: float, acc: float = 90.0, std: float = 0.01) -> dict:
    return {
        "heldout": {
            "n": 400,
            "batches": 4,
            "accuracy": acc,
            "energy": {"s": energy},
            "energy_std": {"s": std},
            "intra": {"s": intra},
            "intra_std": {"s": std},
            "intra_rel": {"s": rel},
            "intra_rel_std": {"s": std},
            "inter": {},
            "inter_rel": {},
        },
        "cosine": {
            "batches": 4,
            "paired": {"s": 0.5},
            "paired_std": {"s": std},
            "random": {"s": 0.4},
            "random_std": {"s": std},
            "excess": {"s": 0.1},
            "excess_std": {"s": std},
            "alignment": {},
        },
    }


def test_what_changed_uses_seed_noise_where_seeds_exist_else_batch_noise() -> None:
    a, b = _measures(1.0, 1.3, 0.77), _measures(0.1, 1.3, 0.077, acc=91.0)
    rows = what_changed(a, b)
    assert all(set(r) == set(WHAT_CHANGED_COLUMNS) for r in rows)
    by = {(r["quantity"], r["item"]): r for r in rows}
    intra = by[QUANTITIES["intra"][0], "s"]
    assert intra["noise source"] == "batches" and intra["noise ±"] == pytest.approx(
        NOISE_SIGMAS * math.hypot(0.01, 0.01)
    )
    assert intra["B − A"] == pytest.approx(-0.9)
    assert "drop of activation energy (energy B/A ×0.1)" in intra["verdict"]
    acc = by[QUANTITIES["accuracy"][0], ""]
    assert acc["noise source"] == "test-split sampling" and acc["verdict"].startswith("within")
    seeds_a = [_measures(x, 1.3, 0.77) for x in (1.0, 1.5, 0.5)]
    seeds_b = [_measures(x, 1.3, 0.077) for x in (0.1, 0.12, 0.08)]
    seeded = {(r["quantity"], r["item"]): r for r in what_changed(a, b, seeds_a, seeds_b)}
    row = seeded[QUANTITIES["intra"][0], "s"]
    assert row["noise source"] == "seeds"
    assert row["noise ±"] == pytest.approx(
        NOISE_SIGMAS
        * math.sqrt(statistics.variance([1.0, 1.5, 0.5]) + statistics.variance([0.1, 0.12, 0.08]))
    )
    assert row["verdict"].startswith("within seeds noise")  # 0.9 < 2 sd of the seeds


def test_cka_rows_compare_the_dissimilarity_with_the_seeds() -> None:
    rows = cka_rows({"l1": 0.984, "l3": 0.90, "l4": 0.95}, {"l1": [0.98, 0.976], "l3": [0.97, 0.975]})
    assert rows[0]["B − A"] == pytest.approx(0.016) and rows[0]["noise ±"] == pytest.approx(0.024)
    assert rows[0]["verdict"].startswith("within seeds noise")
    assert rows[1]["verdict"].startswith("B's layer departs")
    assert rows[2]["noise ±"] is None and rows[2]["verdict"].startswith("no seed reference")


def test_what_changed_text_concludes_only_where_the_verdict_does() -> None:
    rows = what_changed(_measures(1.0, 1.3, 0.77), _measures(0.1, 1.3, 0.077))
    text = what_changed_text(rows)
    beyond = [r for r in rows if r["verdict"].startswith("B ")]
    assert len(text) == len(beyond) + 1 and text[-1].startswith("* Within noise")
    assert any("intra term (raw), s" in line and "activation energy" in line for line in text)
    assert not any("paired cosine" in line for line in text[:-1])


def test_lambda_text_gives_the_ratio_to_the_paper() -> None:
    text = lambda_text({"method": "tffd", "lambda_intra": 0.1, "lambda_inter": 0.1})
    assert text == "λ_intra 0.1 (125× the paper's 0.0008), λ_inter 0.1 (200× the paper's 0.0005)"
    assert lambda_text({"method": "baseline", "lambda_intra": 0.1}) == "no Tf-FD term (baseline)"
    assert lambda_text({"method": "tffd"}) == "λ_intra unknown, λ_inter unknown"


def test_pair_comparison_and_noise_table_on_a_tiny_pair(tiny) -> None:
    model, ds = tiny
    torch.manual_seed(4)
    other = create_model("resnet8", num_classes=3, in_chans=1).eval()
    comp = pair_comparison({"A": model, "B": other}, ds, cka_batch=37)
    assert comp["seeds"] == {"A": 1, "B": 1} and comp["n"] == len(ds)
    direct = heldout_terms(model, ds)
    assert comp["measures"]["A"]["heldout"]["intra_rel"] == direct["intra_rel"]
    assert (
        comp["rows"][: len(comp["batch_rows"])] == comp["batch_rows"]
    )  # no seeds: the batch noise everywhere
    table = noise_table(comp, ("intra_rel",))
    assert [r["item"] for r in table] == ["layer1", "layer2", "layer3"] and "verdict (seeds)" not in table[0]
    row = table[0]
    sa, sb = direct["intra_rel_std"]["layer1"], comp["measures"]["B"]["heldout"]["intra_rel_std"]["layer1"]
    assert row["batch noise ±"] == pytest.approx(NOISE_SIGMAS * math.hypot(sa, sb))
    assert comp["cka_seeds"] == {} and all(
        r["verdict"].startswith("no seed reference")
        for r in comp["rows"]
        if r["quantity"].startswith("1 − linear CKA")
    )
    with pytest.raises(TffdVizError, match="'A'"):
        pair_comparison({"A": model}, ds)


def test_effect_summary_sorts_drops_into_energy_and_likeness() -> None:
    a = _measures(1.0, 1.3, 0.77)
    b = _measures(0.1, 1.3, 0.077)
    a["heldout"]["intra"]["t"], b["heldout"]["intra"]["t"] = 1.0, 0.4  # a second stage whose rel term falls
    for m, rel, e in ((a, 1.3, 0.77), (b, 0.8, 0.5)):
        m["heldout"]["intra_rel"]["t"], m["heldout"]["energy"]["t"] = rel, e
        for key in ("intra_std", "intra_rel_std", "energy_std"):
            m["heldout"][key]["t"] = 0.01
    text = effect_summary(what_changed(a, b))
    assert text.startswith("B's intra term is lower beyond noise in 2 of 2")
    assert "in s only with the activation energy" in text and "in t also scale-free" in text
    assert "no raw inter term is lower in B beyond noise" in text
    assert "intra term / energy: t lower" in text and "inter term / energy: within noise everywhere" in text
    assert "paired − random-pair cosine: within noise everywhere" in text
    assert "Accuracy: no difference." in text  # both 90 %


def test_effect_summary_names_a_scale_free_drop_whose_raw_term_stays_inside_noise() -> None:
    """The paper240 case: the raw term moves less than its noise, the term / energy more; the finding must say
    so instead of "nothing lower"."""
    a, b = _measures(1.0, 1.3, 0.77, std=0.05), _measures(0.95, 1.1, 0.86, std=0.05)  # raw Δ 0.05, rel Δ 0.2
    rows = {r["quantity"]: r for r in what_changed(a, b)}
    noise = NOISE_SIGMAS * math.hypot(0.05, 0.05)
    assert abs(rows["intra term (raw)"]["B − A"]) < noise < abs(rows["intra term / energy"]["B − A"])
    text = effect_summary(what_changed(a, b))
    assert text.startswith("No raw intra term is lower in B beyond noise")
    assert "intra term / energy: s lower" in text


def test_seed_means_are_compared_against_the_noise_of_a_mean() -> None:
    a = [_measures(x, 1.3, 0.77) for x in (1.0, 1.5, 0.5)]
    b = [_measures(x, 1.3, 0.077) for x in (0.1, 0.12, 0.08)]
    ma, mb = seed_mean_measures(a), seed_mean_measures(b)
    assert ma["heldout"]["intra"]["s"] == pytest.approx(1.0) and mb["heldout"]["intra"]["s"] == pytest.approx(
        0.1
    )
    assert ma["heldout"]["n"] == 400 and ma["cosine"]["paired"]["s"] == pytest.approx(0.5)
    row = next(r for r in what_changed(ma, mb, a, b, of_means=True) if r["quantity"] == "intra term (raw)")
    size = NOISE_SIGMAS * math.sqrt(
        statistics.variance([1.0, 1.5, 0.5]) / 3 + statistics.variance([0.1, 0.12, 0.08]) / 3
    )
    assert row["noise source"] == "seed-mean" and row["noise ±"] == pytest.approx(size)
    assert row["verdict"].startswith("B lower by 90 %")  # beyond the noise of a mean, not of a single run
    assert seed_noise([1.0, 1.5, 0.5], [0.1, 0.12, 0.08], of_means=True).size == pytest.approx(size)
    with pytest.raises(TffdVizError, match="at least one seed"):
        seed_mean_measures([])


def test_pair_comparison_keeps_the_cards_whole_split_terms_and_measures_the_rest_on_a_subset(tiny) -> None:
    model, ds = tiny
    held = heldout_terms(model, ds)
    comp = pair_comparison({"A": model, "B": model}, ds, heldouts={"A": held}, max_images=20, cka_batch=20)
    assert comp["n"] == len(ds) and comp["n_measured"] == 20
    assert comp["measures"]["A"]["heldout_from"] == "card" and comp["measures"]["A"]["heldout"]["n"] == len(
        ds
    )
    assert comp["measures"]["B"]["heldout_from"] == "computed" and comp["measures"]["B"]["heldout"]["n"] == 20
    sub = ImageDataset(ds.images[:20], ds.labels[:20], ds.mean, ds.std)
    direct = channel_cosine_stats(model, sub)
    assert comp["measures"]["A"]["cosine"]["paired"] == pytest.approx(direct["paired"])
