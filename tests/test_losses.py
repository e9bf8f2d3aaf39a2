"""Tests of tffd_viz.losses against a plain, independent re-statement of the Tf-FD formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.losses import (
    PAPER_LAMBDA_INTER,
    PAPER_LAMBDA_INTRA,
    PAPER_WARMUP,
    REDUCTIONS,
    TfFD,
    TfFDOutput,
    channel_saliency,
    inter_fd,
    intra_fd,
    salient_order,
    tffd_terms,
    warmup_weight,
    weighted_total,
)

RESNET20_SHAPES = [(8, 16, 32, 32), (8, 32, 16, 16), (8, 64, 8, 8)]
TAP_NAMES = ["layer1", "layer2", "layer3"]


# --------------------------------------------------------------------------------------------------
# independent re-statement of the reference formulas (plain loops, float64, no call into the module)
# --------------------------------------------------------------------------------------------------


def ref_saliency(f: torch.Tensor) -> list[float]:
    """Per channel: mean over batch and positions of the map divided by its L2 norm (eps 1e-12)."""
    f = f.detach().double()
    n, c, h, w = f.shape
    out = []
    for ch in range(c):
        total = 0.0
        for b in range(n):
            m = f[b, ch]
            norm = math.sqrt(float((m * m).sum()))
            total += float(m.sum()) / max(norm, 1e-12)
        out.append(total / (n * h * w))
    return out


def ref_order(saliency: list[float]) -> list[int]:
    """Descending by saliency; Python's sort is stable, so ties keep the lower index first."""
    return sorted(range(len(saliency)), key=lambda ch: -saliency[ch])


def ref_intra(f: torch.Tensor, order: list[int] | None = None) -> float:
    """Top C//2 channels vs bottom C//2 channels, i-th against i-th, mean of squared differences."""
    f = f.detach().double()
    n, c, h, w = f.shape
    if order is None:
        order = ref_order(ref_saliency(f))
    k = c // 2
    total = 0.0
    for i in range(k):
        d = f[:, order[i]] - f[:, order[c - k + i]]
        total += float((d * d).sum())
    return total / (n * k * h * w)


def ref_adaptive_pool(x: torch.Tensor, oh: int, ow: int) -> torch.Tensor:
    """Adaptive average pooling by its bin definition: rows floor(i*H/oh) .. ceil((i+1)*H/oh)."""
    n, c, h, w = x.shape
    out = torch.zeros(n, c, oh, ow, dtype=x.dtype)
    for i in range(oh):
        h0, h1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        for j in range(ow):
            w0, w1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(dim=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return out


def ref_inter(shallow: torch.Tensor, deep: torch.Tensor) -> float:
    """Pool the larger map to the smaller (H, W), MSE over the first min(C_s, C_d) channels."""
    s, d = shallow.detach().double(), deep.detach().double()
    oh, ow = min(s.shape[2], d.shape[2]), min(s.shape[3], d.shape[3])
    if tuple(s.shape[2:]) != (oh, ow):
        s = ref_adaptive_pool(s, oh, ow)
    if tuple(d.shape[2:]) != (oh, ow):
        d = ref_adaptive_pool(d, oh, ow)
    m = min(s.shape[1], d.shape[1])
    total = 0.0
    for ch in range(m):
        diff = s[:, ch] - d[:, ch]
        total += float((diff * diff).sum())
    return total / (s.shape[0] * m * oh * ow)


def post_relu(*shape: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(*shape, generator=g))


@pytest.fixture(scope="module")
def resnet20_feats() -> list[torch.Tensor]:
    return [post_relu(*shape, seed=i) for i, shape in enumerate(RESNET20_SHAPES)]


@pytest.fixture(scope="module")
def ref_terms(resnet20_feats: list[torch.Tensor]) -> tuple[list[float], dict[tuple[int, int], float]]:
    intra = [ref_intra(f) for f in resnet20_feats]
    inter = {
        (i, j): ref_inter(resnet20_feats[i], resnet20_feats[j]) for i in range(3) for j in range(i + 1, 3)
    }
    return intra, inter


def close(a: torch.Tensor | float, b: float, rel: float = 1e-5) -> bool:
    value = a.detach().item() if isinstance(a, torch.Tensor) else float(a)
    return math.isclose(value, b, rel_tol=rel, abs_tol=1e-12)


# --------------------------------------------------------------------------------------------------
# full loss vs the restated reference
# --------------------------------------------------------------------------------------------------


def test_constants_are_the_published_values() -> None:
    assert (PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER, PAPER_WARMUP) == (8e-4, 5e-4, 20)
    assert set(REDUCTIONS) == {"mean", "sum"}


def test_saliency_and_order_match_restatement(resnet20_feats: list[torch.Tensor]) -> None:
    for f in resnet20_feats:
        ref = ref_saliency(f)
        got = channel_saliency(f)
        assert got.shape == (f.shape[1],)
        assert torch.allclose(got.double(), torch.tensor(ref, dtype=torch.float64), rtol=1e-5, atol=0)
        order = salient_order(f)
        assert order.dtype == torch.long
        assert order.tolist() == ref_order(ref)


def test_tffd_paper_total_and_every_term_match_restatement(resnet20_feats, ref_terms) -> None:
    ref_intra_terms, ref_inter_terms = ref_terms
    out = TfFD(PAPER_LAMBDA_INTRA, PAPER_LAMBDA_INTER)(resnet20_feats)
    assert isinstance(out, TfFDOutput)
    assert list(out.intra) == ["0", "1", "2"]
    assert list(out.inter) == ["0->1", "0->2", "1->2"]
    for i in range(3):
        assert out.intra[str(i)].shape == ()
        assert close(out.intra[str(i)], ref_intra_terms[i])
    for (i, j), value in ref_inter_terms.items():
        assert close(out.inter[f"{i}->{j}"], value)
    expected = (
        PAPER_LAMBDA_INTER * sum(ref_inter_terms.values()) / 3 + PAPER_LAMBDA_INTRA * sum(ref_intra_terms) / 3
    )
    assert out.total.shape == ()
    assert close(out.total, expected)
    # defaults of TfFD are the paper lambdas
    assert close(TfFD()(resnet20_feats).total, expected)


def test_reduction_sum_reproduces_summed_variant(resnet20_feats, ref_terms) -> None:
    ref_intra_terms, ref_inter_terms = ref_terms
    out = TfFD(reduction="sum")(resnet20_feats)
    expected = PAPER_LAMBDA_INTER * sum(ref_inter_terms.values()) + PAPER_LAMBDA_INTRA * sum(ref_intra_terms)
    assert close(out.total, expected)


def test_dict_and_list_inputs_give_same_numbers_with_proper_keys(resnet20_feats) -> None:
    as_list = TfFD()(resnet20_feats)
    as_tuple = TfFD()(tuple(resnet20_feats))
    as_dict = TfFD()(dict(zip(TAP_NAMES, resnet20_feats)))
    assert list(as_dict.intra) == TAP_NAMES
    assert list(as_dict.inter) == ["layer1->layer2", "layer1->layer3", "layer2->layer3"]
    assert torch.equal(as_list.total, as_dict.total) and torch.equal(as_list.total, as_tuple.total)
    for idx, name in enumerate(TAP_NAMES):
        assert torch.equal(as_list.intra[str(idx)], as_dict.intra[name])
    assert [float(v) for v in as_list.inter.values()] == [float(v) for v in as_dict.inter.values()]


def test_pair_selection_by_index_and_name(resnet20_feats, ref_terms) -> None:
    ref_intra_terms, ref_inter_terms = ref_terms
    out = TfFD(pairs=[(0, 2)])(resnet20_feats)
    assert list(out.inter) == ["0->2"]
    assert close(out.inter["0->2"], ref_inter_terms[(0, 2)])
    expected = PAPER_LAMBDA_INTER * ref_inter_terms[(0, 2)] + PAPER_LAMBDA_INTRA * sum(ref_intra_terms) / 3
    assert close(out.total, expected)

    named = TfFD(pairs=[("layer2", "layer3"), ("layer1", "layer2")])(dict(zip(TAP_NAMES, resnet20_feats)))
    assert list(named.inter) == ["layer2->layer3", "layer1->layer2"]
    expected = (
        PAPER_LAMBDA_INTER * (ref_inter_terms[(1, 2)] + ref_inter_terms[(0, 1)]) / 2
        + PAPER_LAMBDA_INTRA * sum(ref_intra_terms) / 3
    )
    assert close(named.total, expected)


def test_stage_selection_by_index_and_name(resnet20_feats, ref_terms) -> None:
    ref_intra_terms, ref_inter_terms = ref_terms
    out = TfFD(stages=[2, 0])(resnet20_feats)
    assert set(out.intra) == {"0", "2"}
    expected = (
        PAPER_LAMBDA_INTRA * (ref_intra_terms[0] + ref_intra_terms[2]) / 2
        + PAPER_LAMBDA_INTER * sum(ref_inter_terms.values()) / 3
    )
    assert close(out.total, expected)

    named = TfFD(stages=["layer2"])(dict(zip(TAP_NAMES, resnet20_feats)))
    assert list(named.intra) == ["layer2"]
    assert close(named.intra["layer2"], ref_intra_terms[1])


def test_empty_families_contribute_zero_on_right_dtype(resnet20_feats, ref_terms) -> None:
    ref_intra_terms, ref_inter_terms = ref_terms
    no_intra = TfFD(stages=[])(resnet20_feats)
    assert no_intra.intra == {}
    assert close(no_intra.total, PAPER_LAMBDA_INTER * sum(ref_inter_terms.values()) / 3)
    no_inter = TfFD(pairs=[])(resnet20_feats)
    assert no_inter.inter == {}
    assert close(no_inter.total, PAPER_LAMBDA_INTRA * sum(ref_intra_terms) / 3)

    feats64 = [f[:2].double() for f in resnet20_feats]
    nothing = TfFD(stages=[], pairs=[])(feats64)
    assert nothing.total.dtype == torch.float64 and float(nothing.total) == 0.0
    single = TfFD()([feats64[0]])  # one stage: no pairs by default
    assert single.inter == {} and single.total.dtype == torch.float64
    assert close(single.total, PAPER_LAMBDA_INTRA * ref_intra(feats64[0]))


def test_tffd_terms_and_weighted_total_compose_to_module(resnet20_feats) -> None:
    intra, inter = tffd_terms(resnet20_feats, pairs=[(1, 2)])
    by_module = TfFD(0.3, 0.7, pairs=[(1, 2)])(resnet20_feats).total
    assert torch.allclose(weighted_total(intra, inter, 0.3, 0.7), by_module)
    assert close(
        weighted_total(intra, inter, 0.3, 0.7, "sum"),
        0.3 * sum(float(v) for v in intra.values()) + 0.7 * float(inter["1->2"]),
    )
    assert float(weighted_total({}, {}, 1.0, 1.0)) == 0.0


def test_total_backpropagates_to_all_stages(resnet20_feats) -> None:
    feats = [f[:2].clone().requires_grad_(True) for f in resnet20_feats]
    TfFD()(feats).total.backward()
    assert all(f.grad is not None and float(f.grad.abs().sum()) > 0 for f in feats)


# --------------------------------------------------------------------------------------------------
# inter-layer term
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shallow_shape", "deep_shape"),
    [
        ((2, 4, 12, 20), (2, 8, 6, 10)),  # non-square, shallow larger, shallow narrower
        ((2, 6, 4, 4), (2, 3, 8, 8)),  # shallow smaller spatially, shallow wider
        ((2, 5, 7, 9), (2, 5, 5, 4)),  # non-divisible sizes
        ((2, 3, 12, 4), (2, 6, 6, 8)),  # each larger along one axis: both pooled to (6, 4)
        ((2, 3, 5, 5), (2, 4, 5, 5)),  # same size, no pooling
    ],
)
def test_inter_matches_restatement_and_detaches_deep(shallow_shape, deep_shape) -> None:
    shallow = post_relu(*shallow_shape, seed=1).requires_grad_(True)
    deep = post_relu(*deep_shape, seed=2).requires_grad_(True)
    loss = inter_fd(shallow, deep)
    assert loss.shape == ()
    assert close(loss, ref_inter(shallow, deep))
    loss.backward()
    assert deep.grad is None
    assert shallow.grad is not None
    m = min(shallow_shape[1], deep_shape[1])
    assert float(shallow.grad[:, :m].abs().sum()) > 0
    assert float(shallow.grad[:, m:].abs().sum()) == 0.0  # channels beyond min(C) take no part


def test_inter_on_resnet20_shapes_uses_exact_block_means(resnet20_feats) -> None:
    # 32x32 -> 8x8 adaptive pooling equals 4x4 block means
    s, d = resnet20_feats[0], resnet20_feats[2]
    blocks = s.double().reshape(8, 16, 8, 4, 8, 4).mean(dim=(3, 5))
    expected = float(((blocks - d.double()[:, :16]) ** 2).mean())
    assert close(inter_fd(s, d), expected)


# --------------------------------------------------------------------------------------------------
# intra-layer term
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [2, 3, 7, 9])
def test_intra_odd_and_even_channels_match_floor_half_formula(channels: int) -> None:
    f = post_relu(4, channels, 5, 6, seed=channels)
    assert close(intra_fd(f), ref_intra(f))
    if channels % 2:
        # the middle channel is left out: no gradient reaches it
        g = f.clone().requires_grad_(True)
        intra_fd(g).backward()
        middle = int(salient_order(f)[channels // 2])
        assert float(g.grad[:, middle].abs().sum()) == 0.0


def test_intra_invariant_to_channel_permutation(resnet20_feats) -> None:
    torch.manual_seed(0)
    for f in resnet20_feats:
        perm = torch.randperm(f.shape[1])
        permuted = f[:, perm]
        assert torch.allclose(intra_fd(permuted), intra_fd(f), rtol=1e-6)
        # the same channels come out in the same order, just under their permuted index
        assert torch.equal(perm[salient_order(permuted)], salient_order(f))


def test_ties_sort_by_channel_index_and_loss_is_repeatable() -> None:
    a, b, c = (post_relu(3, 1, 4, 4, seed=s) for s in (10, 11, 12))
    layout = [a, b, a, c, b, a, c]  # exact copies have exactly equal saliency
    f = torch.cat(layout, dim=1)
    sal = channel_saliency(f)
    assert sal[0] == sal[2] == sal[5] and sal[1] == sal[4] and sal[3] == sal[6]
    groups = {"a": [0, 2, 5], "b": [1, 4], "c": [3, 6]}
    value = {"a": float(sal[0]), "b": float(sal[1]), "c": float(sal[3])}
    assert len(set(value.values())) == 3
    expected = [i for key in sorted(groups, key=lambda k: -value[k]) for i in groups[key]]
    assert salient_order(f).tolist() == expected
    first = intra_fd(f)
    assert all(torch.equal(intra_fd(f), first) for _ in range(3))
    assert close(first, ref_intra(f, expected))

    constant = torch.ones(2, 6, 3, 3)  # all saliencies equal: index order
    assert salient_order(constant).tolist() == list(range(6))
    assert float(intra_fd(constant)) == 0.0


def test_ties_sort_by_channel_index_with_many_channels() -> None:
    # 64 channels (resnet20 layer3 width) drawn from 3 maps: an unstable sort scrambles the tie groups here
    bases = torch.cat([post_relu(2, 1, 4, 4, seed=s) for s in (20, 21, 22)], dim=1)
    pattern = [int(v) for v in torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(3))]
    f = bases[:, pattern]
    sal = channel_saliency(bases)
    expected = sorted(
        range(64), key=lambda ch: -float(sal[pattern[ch]])
    )  # stable: index order within a group
    assert salient_order(f).tolist() == expected
    assert close(intra_fd(f), ref_intra(f, expected))


def test_salient_half_gets_gradient_by_default_and_not_when_detached() -> None:
    f = post_relu(3, 8, 4, 4, seed=5)
    order = salient_order(f)
    salient, redundant = order[:4], order[4:]

    g = f.clone().requires_grad_(True)
    loss = intra_fd(g)
    loss.backward()
    assert all(float(g.grad[:, ch].abs().sum()) > 0 for ch in salient.tolist())
    assert all(float(g.grad[:, ch].abs().sum()) > 0 for ch in redundant.tolist())

    h = f.clone().requires_grad_(True)
    loss_detached = intra_fd(h, detach_salient=True)
    loss_detached.backward()
    assert torch.allclose(
        loss, loss_detached, rtol=1e-6
    )  # the same MSE, by the difference GEMM and by a gather
    assert float(h.grad[:, salient].abs().sum()) == 0.0
    assert torch.allclose(h.grad[:, redundant], g.grad[:, redundant], rtol=1e-5, atol=1e-9)

    m = f.clone().requires_grad_(True)
    TfFD(pairs=[], detach_salient=True)([m]).total.backward()
    assert float(m.grad[:, salient].abs().sum()) == 0.0


# --------------------------------------------------------------------------------------------------
# warm-up
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "warmup", "expected"),
    [(1, 20, 0.05), (10, 20, 0.5), (20, 20, 1.0), (25, 20, 1.0), (1, 0, 1.0), (3, -1, 1.0), (0, 20, 0.0)],
)
def test_warmup_weight_values(epoch: int, warmup: int, expected: float) -> None:
    got = warmup_weight(epoch, warmup)
    assert isinstance(got, float)
    assert math.isclose(got, expected, rel_tol=1e-12, abs_tol=1e-15)


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def _feats3() -> list[torch.Tensor]:
    return [post_relu(2, 4, 8, 8, seed=0), post_relu(2, 8, 4, 4, seed=1), post_relu(2, 8, 2, 2, seed=2)]


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (lambda: intra_fd(torch.ones(8, 16, 32)), ["(8, 16, 32)", "4-D"]),
        (lambda: channel_saliency(torch.ones(2, 3)), ["(2, 3)"]),
        (lambda: intra_fd(torch.ones(2, 1, 4, 4)), ["(2, 1, 4, 4)", "2 channels"]),
        (lambda: inter_fd(torch.ones(2, 3, 4, 4), torch.ones(3, 3, 2, 2)), ["(2, 3, 4, 4)", "(3, 3, 2, 2)"]),
        (lambda: inter_fd(torch.ones(2, 3, 4, 4, 1), torch.ones(2, 3, 2, 2)), ["(2, 3, 4, 4, 1)"]),
        (lambda: TfFD()([torch.ones(2, 4, 4, 4), torch.ones(2, 4, 2)]), ["(2, 4, 2)", "'1'"]),
        (lambda: TfFD()([torch.ones(2, 4, 4, 4), torch.ones(3, 4, 2, 2)]), ["(2, 4, 4, 4)", "(3, 4, 2, 2)"]),
        (lambda: TfFD(pairs=[(0, 3)])(_feats3()), ["3", "out of range"]),
        (lambda: TfFD(pairs=[(1, 1)]), ["(1, 1)"]),
        (lambda: TfFD(pairs=[(2, 1)]), ["(2, 1)"]),
        (lambda: tffd_terms(_feats3(), pairs=[(2, 0)]), ["(2, 0)"]),
        (lambda: tffd_terms(dict(zip(TAP_NAMES, _feats3())), pairs=[("layer3", "layer1")]), ["layer3"]),
        (lambda: tffd_terms(dict(zip(TAP_NAMES, _feats3())), stages=["layer9"]), ["layer9", "layer1"]),
        (lambda: tffd_terms(_feats3(), stages=[5]), ["5", "3 stages"]),
        (lambda: tffd_terms([]), ["empty"]),
        (lambda: TfFD(reduction="max"), ["'max'", "mean", "sum"]),
        (lambda: weighted_total({}, {}, 1.0, 1.0, "median"), ["'median'"]),
        (lambda: warmup_weight(-1, 20), ["-1"]),
    ],
)
def test_bad_input_raises_tffdviz_value_error_naming_shapes(call, fragments: list[str]) -> None:
    with pytest.raises(TffdVizError) as info:
        call()
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_shape_errors_are_tap_errors() -> None:
    with pytest.raises(TapError):
        intra_fd(torch.ones(4, 4))
    with pytest.raises(TapError):
        inter_fd(torch.ones(2, 3, 4, 4), torch.ones(1, 3, 4, 4))


def test_saliency_fn_replaces_the_ordering_everywhere(resnet20_feats) -> None:
    # An external saliency (e.g. averaged over data-parallel ranks) decides the channel order.
    f = resnet20_feats[1]
    other = post_relu(4, 32, 16, 16, seed=11)  # "another rank's batch"
    pooled = lambda t: (channel_saliency(t) + channel_saliency(other)) / 2  # noqa: E731
    order = ref_order([(a + b) / 2 for a, b in zip(ref_saliency(f), ref_saliency(other))])
    assert order != ref_order(ref_saliency(f))  # the test is only meaningful if the orders differ
    assert salient_order(f, pooled).tolist() == order
    assert close(intra_fd(f, saliency_fn=pooled), ref_intra(f, order))
    intra, _ = tffd_terms(resnet20_feats, stages=[1], pairs=[], saliency_fn=pooled)
    assert close(intra["1"], ref_intra(f, order))
    out = TfFD(1.0, 0.0, stages=[1], pairs=[], saliency_fn=pooled)(resnet20_feats)
    assert close(out.total, ref_intra(f, order))
    # default (None) is the local saliency
    assert close(TfFD(1.0, 0.0, stages=[1], pairs=[])(resnet20_feats).total, ref_intra(f))
    with pytest.raises(TapError, match=r"shape \(32,\)"):
        intra_fd(f, saliency_fn=lambda t: channel_saliency(t)[:5])


@pytest.mark.parametrize("c", [2, 7, 16])
def test_intra_channels_last_matches_contiguous(c):
    """The channels_last path (pairing-matrix GEMM) gives the same value and gradient as the gather path."""
    torch.manual_seed(c)
    base = torch.relu(torch.randn(4, c, 6, 5, dtype=torch.float64))
    f1 = base.clone().requires_grad_(True)
    f2 = base.clone().contiguous(memory_format=torch.channels_last).requires_grad_(True)
    assert f2.permute(0, 2, 3, 1).is_contiguous()
    l1, l2 = intra_fd(f1), intra_fd(f2)
    torch.testing.assert_close(l1, l2, rtol=1e-12, atol=1e-14)
    (g1,) = torch.autograd.grad(l1, f1)
    (g2,) = torch.autograd.grad(l2, f2)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)


def test_saliency_equals_normalize_formula_including_zero_maps():
    torch.manual_seed(0)
    f = torch.relu(torch.randn(3, 5, 4, 4, dtype=torch.float64))
    f[:, 2] = 0.0
    f[1, 4] = 0.0
    expected = F.normalize(f, p=2, dim=(2, 3)).mean(dim=(0, 2, 3))
    torch.testing.assert_close(channel_saliency(f), expected, rtol=1e-12, atol=1e-15)
    assert float(channel_saliency(f)[2]) == 0.0


# --------------------------------------------------------------------------------------------------
# the fast training path (difference-GEMM intra term, layout-keeping inter gradient) vs plain autograd
# --------------------------------------------------------------------------------------------------


def plain_intra(f: torch.Tensor) -> torch.Tensor:
    """Autograd of the textbook formula: gather the channels by saliency, MSE of the two halves."""
    c = f.shape[1]
    k = c // 2
    order = torch.tensor(ref_order(ref_saliency(f)))
    ordered = f.index_select(1, order)
    return F.mse_loss(ordered[:, c - k :], ordered[:, :k])


def plain_inter(shallow: torch.Tensor, deep: torch.Tensor) -> torch.Tensor:
    size = (min(shallow.shape[2], deep.shape[2]), min(shallow.shape[3], deep.shape[3]))
    m = min(shallow.shape[1], deep.shape[1])
    return F.mse_loss(
        F.adaptive_avg_pool2d(shallow, size)[:, :m], F.adaptive_avg_pool2d(deep.detach(), size)[:, :m]
    )


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("c", [2, 5, 16])
def test_intra_value_and_gradient_equal_autograd_of_plain_formula(layout, c) -> None:
    base = post_relu(3, c, 6, 4, seed=c).double().contiguous(memory_format=layout)
    f, g = base.clone().requires_grad_(True), base.clone().requires_grad_(True)
    loss, plain = intra_fd(f), plain_intra(g)
    torch.testing.assert_close(loss, plain, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(
        torch.autograd.grad(loss, f)[0], torch.autograd.grad(plain, g)[0], rtol=1e-10, atol=1e-15
    )
    assert torch.autograd.gradcheck(intra_fd, (base.clone().requires_grad_(True),))


def test_tffd_terms_gradients_equal_plain_formulas_and_keep_channels_last() -> None:
    """All six resnet20 terms: the shared poolings give each term's value and gradient,
    in the maps' layout."""
    feats = [
        post_relu(*shape, seed=i).double().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        for i, shape in enumerate(RESNET20_SHAPES)
    ]
    intra, inter = tffd_terms(feats)
    plain = {
        **{str(i): plain_intra(f) for i, f in enumerate(feats)},
        **{f"{i}->{j}": plain_inter(feats[i], feats[j]) for i in range(3) for j in range(i + 1, 3)},
    }
    for name, term in {**intra, **inter}.items():
        torch.testing.assert_close(term, plain[name], rtol=1e-12, atol=1e-15)
        got = torch.autograd.grad(term, feats, retain_graph=True, allow_unused=True)
        want = torch.autograd.grad(plain[name], feats, retain_graph=True, allow_unused=True)
        for stage, (a, b) in enumerate(zip(got, want, strict=True)):
            assert (a is None) == (b is None), (name, stage)
            if a is not None:
                torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-15)
                # a contiguous gradient here would make every step convert layouts when it is summed
                assert a.is_contiguous(memory_format=torch.channels_last), (name, stage, a.stride())


@pytest.mark.parametrize("eps", [1e-1, 1e-2, 1e-3])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_intra_of_nearly_equal_channel_pairs_is_accurate_in_float32(eps: float, layout) -> None:
    """Pairs within ``eps`` of each other (the term down to 1e-7 of the maps' mean square): no cancellation.

    (A trace form from the channel Gram matrix, G_aa + G_bb - 2 G_ab, is off by 1 % at eps = 1e-2 and 23 % at
    eps = 1e-3 in float32; the difference form stays at float rounding.)
    """
    g = torch.Generator().manual_seed(3)
    x = torch.rand(16, 1, 16, 16, generator=g) + 1.0
    f = torch.cat([x, x + eps * torch.rand(16, 1, 16, 16, generator=g)], dim=1).contiguous(
        memory_format=layout
    )
    assert close(intra_fd(f), ref_intra(f), rel=1e-4)


def test_terms_under_bf16_autocast_are_float32_and_backpropagate() -> None:
    """Against the float64 formulas on the same bf16 values: the terms hold to 1e-4 (relative).

    Measured over 5 seeds and both layouts: intra terms within 6e-6, inter terms within 4.9e-5 (the pooling
    runs in bf16 under autocast); 2e-2 would have hidden a bf16 loss (three significant digits).
    """
    feats = [
        post_relu(*shape, seed=i).contiguous(memory_format=torch.channels_last)
        for i, shape in enumerate(RESNET20_SHAPES)
    ]
    lowp = [f.bfloat16().requires_grad_(True) for f in feats]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = TfFD(1.0, 1.0)(lowp)
    assert out.total.dtype == torch.float32
    exact = [f.bfloat16().double() for f in feats]  # the values the bf16 terms see, in float64
    ref = {
        **{str(i): ref_intra(f) for i, f in enumerate(exact)},
        **{f"{i}->{j}": ref_inter(exact[i], exact[j]) for i in range(3) for j in range(i + 1, 3)},
    }
    for name, term in {**out.intra, **out.inter}.items():
        assert term.dtype == torch.float32
        assert close(term, ref[name], rel=1e-4), (name, float(term), ref[name])
    out.total.backward()
    assert all(
        f.grad is not None and f.grad.dtype == torch.bfloat16 and torch.isfinite(f.grad).all() for f in lowp
    )


@pytest.mark.parametrize("name", ["lambda_intra", "lambda_inter"])
@pytest.mark.parametrize("value", [-1.0, -1e-12, float("nan"), float("inf"), float("-inf")])
def test_tffd_refuses_negative_and_nonfinite_lambdas_naming_them(name: str, value: float) -> None:
    with pytest.raises(TffdVizError) as info:
        TfFD(**{name: value})
    assert f"{name} = {value!r} is not allowed: a finite number >= 0" in str(info.value)


def test_tffd_refuses_a_lambda_that_is_no_number_and_accepts_zero() -> None:
    with pytest.raises(TffdVizError, match="lambda_inter must be a number, got 'big'"):
        TfFD(lambda_inter="big")
    loss = TfFD(lambda_intra=0.0, lambda_inter=0)
    out = loss(_feats3())
    assert (
        loss.lambda_intra == 0.0 and float(out.total) == 0.0 and all(float(v) > 0 for v in out.intra.values())
    )
