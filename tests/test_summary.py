"""Tests of tffd_viz.summary: card tables, disagreements, seed groups, checkpoint rows."""

import statistics

import torch

from tffd_viz.checkpoints import empty_card
from tffd_viz.summary import (
    CARD_ROWS,
    card_table,
    checkpoint_rows,
    config_name,
    disagreements,
    markdown_table,
    seed_groups,
    seed_spread_note,
)


def _card(**kw):
    card = empty_card()
    card.update(kw)
    return card


def test_card_table_side_by_side():
    a = _card(arch="resnet8", method="baseline", final_acc=97.5, pairs=[["layer1", "layer2"]])
    b = _card(arch="resnet8", method="tffd", lambda_intra=8e-4, final_acc=98.0)
    df = card_table({"A": a, "B": b}, names={"A": "base", "B": "tffd"})
    assert list(df.columns) == ["", "A: base", "B: tffd"]
    assert len(df) == len(CARD_ROWS)
    row = dict(zip(df[""], df["B: tffd"]))
    assert row["method"] == "tffd" and row["λ intra"] == "0.0008" and row["final test top-1 (%)"] == "98"
    assert dict(zip(df[""], df["A: base"]))["pairs (inter)"] == "layer1->layer2"
    assert dict(zip(df[""], df["A: base"]))["λ intra"] == "—"
    logged = card_table({"A": _card(method="baseline", lambda_intra=8e-4)})
    assert dict(zip(logged[""], logged["A"]))["λ intra"] == "0.0008 (logged only)"


def test_disagreements_orders_one_right_first():
    labels = torch.tensor([0, 1, 2, 3, 4])
    pa = torch.tensor([0, 9, 2, 7, 4])
    pb = torch.tensor([0, 1, 8, 6, 4])
    # position 1: B right; 2: A right; 3: both wrong and different
    assert disagreements(pa, pb, labels).tolist() == [1, 2, 3]
    assert disagreements(pa, pa, labels).numel() == 0


def test_seed_groups_mean_and_spread():
    cards = [
        _card(dataset="digits", arch="resnet8", method="baseline", seed=s, final_acc=acc, recipe="digits")
        for s, acc in ((0, 97.0), (1, 98.0), (2, 96.0))
    ]
    cards.append(
        _card(
            dataset="digits",
            arch="resnet8",
            method="tffd",
            lambda_intra=1.0,
            lambda_inter=0.1,
            seed=0,
            final_acc=99.0,
            recipe="digits",
        )
    )
    rows = seed_groups([(f"f{i}", c) for i, c in enumerate(cards)])
    assert len(rows) == 1  # the single-seed tffd config is left out
    r = rows[0]
    assert r["n"] == 3 and r["seeds"] == [0, 1, 2]
    assert abs(r["mean_acc"] - 97.0) < 1e-12
    assert abs(r["std_acc"] - statistics.stdev([97.0, 98.0, 96.0])) < 1e-12
    assert "λ" in config_name(cards[-1]) and "λ" not in config_name(cards[0])


def test_seed_spread_note_counts_the_seeds_behind_each_compared_model():
    base = {"dataset": "digits", "arch": "resnet8", "recipe": "digits"}
    cards = [_card(**base, method="baseline", seed=s, final_acc=97.0 + s) for s in (0, 1, 2)]
    single = _card(**base, method="tffd", lambda_intra=1.0, lambda_inter=0.1, seed=0, final_acc=99.0)
    groups = seed_groups([(f"f{i}", c) for i, c in enumerate([*cards, single])])
    note = seed_spread_note(groups, {"A": cards[1], "B": single})
    assert note == (
        f"A: {config_name(cards[1])} (3 seeds shipped); B: {config_name(single)} (no other seed shipped)."
    )
    alone = seed_spread_note(groups, {"A": single, "B": single})
    assert alone.startswith(f"A: {config_name(single)} (no other seed shipped); B: ")
    assert "Their seed-to-seed spread is not measured" in alone and alone.endswith(
        "not for the models compared."
    )


def test_checkpoint_rows_and_markdown():
    hist = [
        {"intra": {"layer1": 0.5, "layer2": 0.3}, "inter": {"layer1->layer2": 0.2}},
        {"intra": {"layer1": 0.2, "layer2": 0.4}, "inter": {"layer1->layer2": 0.1}},
    ]
    rows = checkpoint_rows(
        [("checkpoints/x.safetensors", _card(arch="resnet8", history=hist, final_acc=90.0))]
    )
    assert rows[0]["file"] == "x.safetensors"
    assert abs(rows[0]["mean_intra"] - 0.3) < 1e-12 and abs(rows[0]["mean_inter"] - 0.1) < 1e-12
    base = checkpoint_rows(
        [("b.safetensors", _card(method="baseline", lambda_intra=8e-4, lambda_inter=5e-4))]
    )
    assert base[0]["lambda_intra"] is None and base[0]["lambda_inter"] is None
    md = markdown_table(rows, ["file", "arch", "final_acc", "mean_intra", "seed"])
    lines = md.strip().splitlines()
    assert lines[0] == "| file | arch | final_acc | mean_intra | seed |"
    assert lines[2] == "| x.safetensors | resnet8 | 90 | 0.3 | — |"


def test_config_name_of_a_card_without_lambdas_marks_them_unknown() -> None:
    """A Tf-FD card from elsewhere may lack the lambdas: the name says so instead of failing."""
    assert (
        config_name({"dataset": "cifar10", "arch": "resnet20", "method": "tffd"})
        == "cifar10 resnet20 tffd λ=?/?"
    )
    assert (
        config_name(
            {
                "dataset": "d",
                "arch": "a",
                "method": "tffd",
                "lambda_intra": 0.1,
                "lambda_inter": 5e-4,
                "recipe": "cpu30",
            }
        )
        == "d a tffd λ=0.1/0.0005 cpu30"
    )


def test_heldout_rows_and_columns_come_from_the_card() -> None:
    from tffd_viz.summary import checkpoint_rows, heldout_rows

    terms = {
        "intra": {"l1": 2.0, "l2": 4.0},
        "intra_std": {"l1": 0.1, "l2": None},
        "intra_rel": {"l1": 1.0, "l2": 0.5},
        "intra_rel_std": {"l1": 0.05, "l2": None},
        "inter": {"l1->l2": 3.0},
        "inter_std": {"l1->l2": 0.2},
        "inter_rel": {"l1->l2": 0.75},
        "inter_rel_std": {"l1->l2": 0.01},
        "energy": {"l1": 2.0, "l2": 8.0},
        "energy_std": {"l1": 0.3, "l2": 0.4},
        "accuracy": 91.5,
    }
    card = {"method": "tffd", "heldout_terms": terms, "history": []}
    rows = heldout_rows([("dir/x.safetensors", card), ("dir/y.safetensors", {"method": "baseline"})])
    assert [r["term"] for r in rows] == ["intra l1", "intra l2", "inter l1->l2"]
    assert rows[0] == {
        "file": "x.safetensors",
        "term": "intra l1",
        "raw": "2 ± 0.1",
        "relative": "1 ± 0.05",
        "energy": "2 ± 0.3",
    }
    assert rows[1]["raw"] == "4" and rows[2]["energy"] is None
    row = checkpoint_rows([("x.safetensors", card)])[0]
    assert (row["heldout_acc"], row["heldout_intra"], row["heldout_intra_rel"]) == (91.5, 3.0, 0.75)
    assert (row["heldout_inter"], row["heldout_inter_rel"]) == (3.0, 0.75)
    assert checkpoint_rows([("y", {"method": "baseline"})])[0]["heldout_intra"] is None
