"""Tests of tffd_viz.terms: term values, the lambda what-if and per-stage gradient norms."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.losses import inter_fd, intra_fd
from tffd_viz.models import create_model, extract_taps
from tffd_viz.terms import (
    TermsReport,
    gradient_norm_share,
    stage_parameter_groups,
    term_weights,
    tffd_terms_on_batch,
)

TAPS = ["layer1", "layer2", "layer3"]
PAIRS = ["layer1->layer2", "layer1->layer3", "layer2->layer3"]


def _randomised_bn(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every BatchNorm non-trivial running statistics and affine params (so eval mode matters)."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model


@pytest.fixture
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = _randomised_bn(create_model("resnet8", num_classes=5, in_chans=1), seed=1)
    return m.train()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(6, 1, 16, 16, generator=gen), torch.randint(0, 5, (6,), generator=gen)


def _snapshot(model: torch.nn.Module) -> dict[str, object]:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
    }


def _assert_untouched(model: torch.nn.Module, before: dict[str, object]) -> None:
    state = model.state_dict()
    assert state.keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(state[k], v), f"{k} changed"
    assert {n: m.training for n, m in model.named_modules()} == before["modes"]
    assert {n: p.requires_grad for n, p in model.named_parameters()} == before["requires_grad"]
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# term values
# --------------------------------------------------------------------------------------------------


def test_terms_equal_direct_loss_calls(model, batch):
    x, y = batch
    report = tffd_terms_on_batch(model, x, y)
    ref_model = copy.deepcopy(model).eval()
    with torch.no_grad():
        logits, feats = extract_taps(ref_model, x, TAPS, return_logits=True)
        ce = F.cross_entropy(logits, y)
        acc = 100.0 * (logits.argmax(1) == y).double().mean()
    assert isinstance(report, TermsReport)
    assert report.taps == TAPS and report.n == 6
    assert report.ce == pytest.approx(float(ce), rel=1e-6)
    assert report.accuracy == pytest.approx(float(acc))
    assert list(report.intra) == TAPS and list(report.inter) == PAIRS
    for t in TAPS:
        assert report.intra[t] == pytest.approx(float(intra_fd(feats[t])), rel=1e-6)
    for key in PAIRS:
        a, b = key.split("->")
        assert report.inter[key] == pytest.approx(float(inter_fd(feats[a], feats[b])), rel=1e-6)


def test_terms_run_in_eval_mode_and_restore_modes(model, batch):
    x, y = batch
    model.layer2.eval()  # mixed modes must come back exactly as they were
    before = _snapshot(model)
    report = tffd_terms_on_batch(model, x, y)
    _assert_untouched(model, before)
    train_model = copy.deepcopy(model).train()
    with torch.no_grad():
        train_ce = float(F.cross_entropy(train_model(x), y))
    assert abs(report.ce - train_ce) > 1e-4  # the train-mode (batch statistics) value would differ


def test_stage_and_pair_subsets(model, batch):
    x, y = batch
    full = tffd_terms_on_batch(model, x, y)
    sub = tffd_terms_on_batch(model, x, y, stages=["layer2"], pairs=[(0, 2)])
    assert list(sub.intra) == ["layer2"] and list(sub.inter) == ["layer1->layer3"]
    assert sub.intra["layer2"] == pytest.approx(full.intra["layer2"], rel=1e-6)
    assert sub.inter["layer1->layer3"] == pytest.approx(full.inter["layer1->layer3"], rel=1e-6)
    assert sub.ce == pytest.approx(full.ce, rel=1e-6)


def test_custom_taps(model, batch):
    x, y = batch
    taps = ["layer1.0", "layer3"]
    report = tffd_terms_on_batch(model, x, y, taps=taps)
    with torch.no_grad():
        feats = extract_taps(copy.deepcopy(model).eval(), x, taps)
    assert list(report.inter) == ["layer1.0->layer3"]
    assert report.intra["layer1.0"] == pytest.approx(float(intra_fd(feats["layer1.0"])), rel=1e-6)


# --------------------------------------------------------------------------------------------------
# weighted what-if
# --------------------------------------------------------------------------------------------------


def _report() -> TermsReport:
    return TermsReport(
        taps=TAPS,
        ce=2.5,
        intra={"layer1": 0.3, "layer2": 1.7, "layer3": 4.0},
        inter={"layer1->layer2": 0.2, "layer1->layer3": 0.9, "layer2->layer3": 2.2},
        n=10,
        accuracy=50.0,
    )


@pytest.mark.parametrize("lambdas", [(8e-4, 5e-4), (1.0, 0.0), (0.0, 3.0), (0.25, 2.0)])
@pytest.mark.parametrize(
    ("stages", "pairs", "intra_keys", "inter_keys"),
    [
        (None, None, TAPS, PAIRS),
        (["layer3", 0], ["layer2->layer3"], ["layer3", "layer1"], ["layer2->layer3"]),
        ([1], [("layer1", "layer3"), (0, 1)], ["layer2"], ["layer1->layer3", "layer1->layer2"]),
        ([], [], [], []),
    ],
)
def test_weighted_equals_restatement(lambdas, stages, pairs, intra_keys, inter_keys):
    rep = _report()
    li, le = lambdas
    intra_vals = [rep.intra[k] for k in intra_keys]
    inter_vals = [rep.inter[k] for k in inter_keys]
    for reduction, warm in [("mean", 1.0), ("sum", 1.0), ("mean", 0.35)]:
        agg = (lambda v: sum(v) / len(v)) if reduction == "mean" else sum
        exp_i = warm * li * agg(intra_vals) if intra_vals else 0.0
        exp_e = warm * le * agg(inter_vals) if inter_vals else 0.0
        out = rep.weighted(li, le, stages=stages, pairs=pairs, reduction=reduction, warm=warm)
        assert out["intra"] == pytest.approx(exp_i, rel=1e-12, abs=1e-15)
        assert out["inter"] == pytest.approx(exp_e, rel=1e-12, abs=1e-15)
        assert out["tffd"] == pytest.approx(exp_i + exp_e, rel=1e-12, abs=1e-15)
        assert out["ce"] == 2.5
        assert out["ce+tffd"] == pytest.approx(2.5 + exp_i + exp_e, rel=1e-12)


def test_weighted_selection_errors():
    rep = _report()
    with pytest.raises(TffdVizError, match="layer4"):
        rep.weighted(1.0, 1.0, stages=["layer4"])
    with pytest.raises(TffdVizError, match="layer3->layer1"):
        rep.weighted(1.0, 1.0, pairs=["layer3->layer1"])
    with pytest.raises(TffdVizError, match="out of range"):
        rep.weighted(1.0, 1.0, stages=[3])
    with pytest.raises(TffdVizError, match="reduction"):
        rep.weighted(1.0, 1.0, reduction="max")


def test_rows_sum_to_weighted_total():
    rep = _report()
    for li, le, stages in [(8e-4, 5e-4, None), (2.0, 0.5, ["layer2", "layer3"])]:
        rows = rep.rows(li, le, stages=stages)
        assert rows[0] == {"term": "ce", "kind": "ce", "value": 2.5, "weighted": 2.5}
        kinds = [r["kind"] for r in rows]
        n_intra = 3 if stages is None else len(stages)
        assert kinds == ["ce"] + ["intra"] * n_intra + ["inter"] * 3
        for r in rows[1:]:
            lam, n = (li, n_intra) if r["kind"] == "intra" else (le, 3)
            assert r["weighted"] == pytest.approx(lam / n * r["value"], rel=1e-12)
        tffd = sum(r["weighted"] for r in rows if r["kind"] != "ce")
        assert tffd == pytest.approx(rep.weighted(li, le, stages=stages)["tffd"], rel=1e-12)


def test_term_weights():
    assert term_weights(["a", "b", "c", "d"], 2.0, "mean", warm=0.5) == pytest.approx(
        {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    )
    assert term_weights(["a", "b"], 3.0, "sum") == {"a": 3.0, "b": 3.0}
    assert term_weights([], 3.0, "mean") == {}


# --------------------------------------------------------------------------------------------------
# gradient norms
# --------------------------------------------------------------------------------------------------

GROUP_PREFIXES = {
    "stem": ("conv1.", "bn1."),
    "layer1": ("layer1.",),
    "layer2": ("layer2.",),
    "layer3": ("layer3.",),
    "head": ("fc.",),
}


def _restated_norms(model, x, y, li, le, warm):
    """Per term: fresh deep copy in eval mode, weighted term .backward(), group norms of .grad."""
    rows = []
    for kind, key in [("ce", "ce")] + [("intra", t) for t in TAPS] + [("inter", p) for p in PAIRS]:
        m = copy.deepcopy(model).eval()
        logits, feats = extract_taps(m, x, TAPS, return_logits=True)
        if kind == "ce":
            term = F.cross_entropy(logits, y)
        elif kind == "intra":
            term = warm * li / 3 * intra_fd(feats[key])
        else:
            a, b = key.split("->")
            term = warm * le / 3 * inter_fd(feats[a], feats[b])
        term.backward()
        row = []
        for prefixes in GROUP_PREFIXES.values():
            sq = sum(
                float(p.grad.double().pow(2).sum())
                for n, p in m.named_parameters()
                if n.startswith(prefixes) and p.grad is not None
            )
            row.append(math.sqrt(sq))
        rows.append(row)
    return np.array(rows)


def test_parameter_groups_partition_the_model(model, batch):
    groups = stage_parameter_groups(model, batch[0])
    assert list(groups) == list(GROUP_PREFIXES)
    all_names = [n for n, _ in model.named_parameters()]
    assert sorted(itertools.chain.from_iterable(groups.values())) == sorted(all_names)
    for g, names in groups.items():
        assert all(n.startswith(GROUP_PREFIXES[g]) for n in names)
    vgg = create_model("vgg8", num_classes=3, in_chans=1)
    vgg_groups = stage_parameter_groups(vgg, torch.zeros(2, 1, 32, 32))
    assert list(vgg_groups) == ["block0", "block1", "block2", "block3", "block4", "head"]
    assert vgg_groups["head"] == ["classifier.weight", "classifier.bias"]
    wrn = create_model("wrn_16_1", num_classes=3, in_chans=1)
    wrn_groups = stage_parameter_groups(wrn, torch.zeros(2, 1, 32, 32))
    assert wrn_groups["stem"] == ["conv1.weight"]
    assert wrn_groups["head"] == ["bn1.weight", "bn1.bias", "fc.weight", "fc.bias"]


def test_gradient_norms_equal_backward_restatement(model, batch):
    x, y = batch
    li, le, warm = 0.3, 0.7, 0.5
    out = gradient_norm_share(model, x, y, li, le, warm=warm)
    assert out["terms"] == ["ce", *TAPS, *PAIRS]
    assert out["kinds"] == ["ce"] + ["intra"] * 3 + ["inter"] * 3
    assert out["groups"] == list(GROUP_PREFIXES)
    expected = _restated_norms(model, x, y, li, le, warm)
    assert out["norms"].shape == (7, 5)
    np.testing.assert_allclose(out["norms"], expected, rtol=1e-5, atol=1e-12)
    rep = tffd_terms_on_batch(model, x, y)
    wvals = (
        [rep.ce]
        + [warm * li / 3 * rep.intra[t] for t in TAPS]
        + [warm * le / 3 * rep.inter[p] for p in PAIRS]
    )
    np.testing.assert_allclose(out["values"], wvals, rtol=1e-5)
    sizes = {
        g: sum(p.numel() for n, p in model.named_parameters() if n.startswith(pre))
        for g, pre in GROUP_PREFIXES.items()
    }
    assert out["group_sizes"] == list(sizes.values())


def test_lambda_scales_rows_linearly_and_share_sums_to_one(model, batch):
    x, y = batch
    a = gradient_norm_share(model, x, y, 1e-3, 2e-3)
    b = gradient_norm_share(model, x, y, 5e-3, 2e-3, warm=0.5)  # intra x 2.5, inter x 0.5
    np.testing.assert_allclose(b["norms"][1:4], 2.5 * a["norms"][1:4], rtol=1e-6)
    np.testing.assert_allclose(b["norms"][4:], 0.5 * a["norms"][4:], rtol=1e-6)
    np.testing.assert_allclose(b["norms"][0], a["norms"][0], rtol=1e-6)
    for out in (a, b):
        np.testing.assert_allclose(out["share"].sum(axis=0), np.ones(5), rtol=1e-12)
        np.testing.assert_allclose(out["share"], out["norms"] / out["norms"].sum(axis=0), rtol=1e-12)
    zero = gradient_norm_share(model, x, y, 0.0, 0.0)
    assert np.all(zero["norms"][1:] == 0.0)
    np.testing.assert_allclose(zero["share"][0], np.ones(5))


def test_gradient_flows_only_into_the_shallow_side(model, batch):
    x, y = batch
    out = gradient_norm_share(model, x, y, 1.0, 1.0)
    norms = dict(zip(out["terms"], out["norms"]))
    col = {g: j for j, g in enumerate(out["groups"])}
    # inter layer1->layer2: the deep side (layer2) is detached, so layer2, layer3, head get exactly 0
    n12 = norms["layer1->layer2"]
    assert n12[col["layer2"]] == 0.0 and n12[col["layer3"]] == 0.0 and n12[col["head"]] == 0.0
    assert n12[col["layer1"]] > 0 and n12[col["stem"]] > 0
    n23 = norms["layer2->layer3"]
    assert n23[col["layer3"]] == 0.0 and n23[col["layer2"]] > 0
    # intra terms reach their own stage and everything before it, nothing after
    assert norms["layer2"][col["layer3"]] == 0.0 and norms["layer2"][col["layer2"]] > 0
    assert np.all(out["norms"][1:, col["head"]] == 0.0)
    assert np.all(out["norms"][0] > 0)


def test_model_untouched_by_gradient_norms(model, batch):
    x, y = batch
    model.layer3.eval()
    before = _snapshot(model)
    gradient_norm_share(model, x, y, 8e-4, 5e-4)
    _assert_untouched(model, before)


def test_frozen_model_works_and_stays_frozen(model, batch):
    x, y = batch
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc.weight.requires_grad_(True)
    before = _snapshot(model)
    out = gradient_norm_share(model, x, y, 1.0, 1.0)
    _assert_untouched(model, before)
    assert np.all(out["norms"][0] > 0)  # gradients are taken w.r.t. aliases, whatever the flags say


def test_errors(model, batch):
    x, y = batch
    with pytest.raises(DataError, match=r"\(6,\)"):
        tffd_terms_on_batch(model, x, y[:4])
    with pytest.raises(DataError, match="N, C, H, W"):
        gradient_norm_share(model, x[0], y, 1.0, 1.0)
    with pytest.raises(TapError, match="layer9"):
        tffd_terms_on_batch(model, x, y, taps=["layer1", "layer9"])
    with pytest.raises(TffdVizError, match="reduction"):
        gradient_norm_share(model, x, y, 1.0, 1.0, reduction="median")
