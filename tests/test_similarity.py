"""Tests for tffd_viz.similarity: CKA (full-batch and minibatch) and channel similarity.

The CKA values are checked against a plain numpy re-statement of the reference colab of
Kornblith et al. (2019) (``gram_linear``, ``gram_rbf``, ``center_gram``, ``cka``,
``feature_space_linear_cka``, ``_debiased_dot_product_similarity_helper``), against the
values the colab prints for its own example, against Song et al.'s HSIC_1 formula written
out, and against the known invariances of CKA.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from tffd_viz.errors import TapError, TffdVizError
from tffd_viz.similarity import (
    CKA_METHODS,
    FULL_BATCH_MAX_N,
    ConstantFeatureWarning,
    MinibatchCKA,
    center_gram,
    channel_cosine_matrix,
    cka,
    cka_from_grams,
    gram_linear,
    gram_rbf,
    inter_layer_alignment,
    linear_cka,
    paired_channel_cosine,
    rbf_cka,
    unbiased_hsic,
)

TOL = 1e-10

# --------------------------------------------------------------------------------------------------------------
# plain numpy re-statement of the reference colab (Kornblith et al. 2019, representation_similarity/Demo.ipynb)
# --------------------------------------------------------------------------------------------------------------


def ref_gram_linear(x: np.ndarray) -> np.ndarray:
    return x.dot(x.T)


def ref_gram_rbf(x: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    dot_products = x.dot(x.T)
    sq_norms = np.diag(dot_products)
    sq_distances = -2 * dot_products + sq_norms[:, None] + sq_norms[None, :]
    sq_median_distance = np.median(sq_distances)
    return np.exp(-sq_distances / (2 * threshold**2 * sq_median_distance))


def ref_center_gram(gram: np.ndarray, unbiased: bool = False) -> np.ndarray:
    gram = gram.copy()
    if unbiased:
        n = gram.shape[0]
        np.fill_diagonal(gram, 0)
        means = np.sum(gram, 0, dtype=np.float64) / (n - 2)
        means -= np.sum(means) / (2 * (n - 1))
        gram -= means[:, None]
        gram -= means[None, :]
        np.fill_diagonal(gram, 0)
    else:
        means = np.mean(gram, 0, dtype=np.float64)
        means -= np.mean(means) / 2
        gram -= means[:, None]
        gram -= means[None, :]
    return gram


def ref_cka(gram_x: np.ndarray, gram_y: np.ndarray, debiased: bool = False) -> float:
    gram_x = ref_center_gram(gram_x, unbiased=debiased)
    gram_y = ref_center_gram(gram_y, unbiased=debiased)
    scaled_hsic = gram_x.ravel().dot(gram_y.ravel())
    return float(scaled_hsic / (np.linalg.norm(gram_x) * np.linalg.norm(gram_y)))


def ref_debiased_helper(xty, sum_squared_rows_x, sum_squared_rows_y, squared_norm_x, squared_norm_y, n):
    return (
        xty
        - n / (n - 2.0) * sum_squared_rows_x.dot(sum_squared_rows_y)
        + squared_norm_x * squared_norm_y / ((n - 1) * (n - 2))
    )


def ref_feature_space_linear_cka(
    features_x: np.ndarray, features_y: np.ndarray, debiased: bool = False
) -> float:
    features_x = features_x - np.mean(features_x, 0, keepdims=True)
    features_y = features_y - np.mean(features_y, 0, keepdims=True)
    dot_product_similarity = np.linalg.norm(features_x.T.dot(features_y)) ** 2
    normalization_x = np.linalg.norm(features_x.T.dot(features_x))
    normalization_y = np.linalg.norm(features_y.T.dot(features_y))
    if debiased:
        n = features_x.shape[0]
        sum_squared_rows_x = np.einsum("ij,ij->i", features_x, features_x)
        sum_squared_rows_y = np.einsum("ij,ij->i", features_y, features_y)
        squared_norm_x = np.sum(sum_squared_rows_x)
        squared_norm_y = np.sum(sum_squared_rows_y)
        dot_product_similarity = ref_debiased_helper(
            dot_product_similarity, sum_squared_rows_x, sum_squared_rows_y, squared_norm_x, squared_norm_y, n
        )
        normalization_x = np.sqrt(
            ref_debiased_helper(
                normalization_x**2, sum_squared_rows_x, sum_squared_rows_x, squared_norm_x, squared_norm_x, n
            )
        )
        normalization_y = np.sqrt(
            ref_debiased_helper(
                normalization_y**2, sum_squared_rows_y, sum_squared_rows_y, squared_norm_y, squared_norm_y, n
            )
        )
    return float(dot_product_similarity / (normalization_x * normalization_y))


def song_hsic1(k: np.ndarray, ell: np.ndarray) -> float:
    """Song et al. (2012) unbiased HSIC_1, written out term by term."""
    n = k.shape[0]
    kt, lt = k.copy(), ell.copy()
    np.fill_diagonal(kt, 0)
    np.fill_diagonal(lt, 0)
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def nguyen_minibatch_cka(batches_a: list[list[np.ndarray]], batches_b: list[list[np.ndarray]]) -> np.ndarray:
    """Re-statement of the published MinibatchCKA (efficient_CKA.py, across_models=True) in numpy float64."""

    def gram(x: np.ndarray) -> np.ndarray:
        x = x.reshape(x.shape[0], -1)
        g = x @ x.T
        n = g.shape[0]
        np.fill_diagonal(g, 0)
        means = g.sum(0) / (n - 2)
        means -= means.sum() / (2 * (n - 1))
        g = g - means[:, None] - means[None, :]
        np.fill_diagonal(g, 0)
        return g.reshape(-1)

    acc = acc1 = acc2 = 0.0
    for fa, fb in zip(batches_a, batches_b):
        ga = np.stack([gram(x) for x in fa])
        gb = np.stack([gram(x) for x in fb])
        acc = acc + ga @ gb.T
        acc1 = acc1 + np.einsum("ij,ij->i", ga, ga)
        acc2 = acc2 + np.einsum("ij,ij->i", gb, gb)
    return acc / np.sqrt(acc1)[:, None] / np.sqrt(acc2)[None, :]


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------


def colab_example() -> tuple[np.ndarray, np.ndarray]:
    """The reference colab's example data (its printed outputs are checked below)."""
    rng = np.random.RandomState(1337)
    x = rng.randn(100, 10)
    y = rng.randn(100, 10) + x
    return x, y


def correlated_pair(n: int, dx: int, dy: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dx))
    y = np.tanh(x @ rng.standard_normal((dx, dy)) / math.sqrt(dx)) + 0.5 * rng.standard_normal((n, dy))
    return x, y


def model_layers(
    n: int, seed: int = 0, k: int = 8, eps: float = 0.3
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Layers of two 'models' that see one shared k-dim latent through linear/nonlinear maps plus noise."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    z = r(n, k)
    a = [z @ r(k, 32) + eps * r(n, 32), torch.tanh(z @ r(k, 48)) + eps * r(n, 48), torch.relu(z @ r(k, 24))]
    b = [z[:, : k // 2] @ r(k // 2, 16) + eps * r(n, 16), z @ r(k, 40) + 2 * eps * r(n, 40)]
    return a, b


def accumulate(
    mb: MinibatchCKA, a: list[torch.Tensor], b: list[torch.Tensor], batch: int, order: list[int] | None = None
) -> torch.Tensor:
    n = a[0].shape[0]
    starts = list(range(0, n, batch))
    for s in order if order is not None else range(len(starts)):
        sl = slice(starts[s], starts[s] + batch)
        mb.update([t[sl] for t in a], [t[sl] for t in b])
    return mb.compute()


def full_matrix(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor([[linear_cka(x, y, debiased=True) for y in b] for x in a], dtype=torch.float64)


# --------------------------------------------------------------------------------------------------------------
# full-batch CKA against the reference
# --------------------------------------------------------------------------------------------------------------


def test_published_colab_values() -> None:
    # The reference colab prints these (5 decimals) for its seed-1337 example.
    x, y = colab_example()
    for method in ("gram", "feature", "auto"):
        assert linear_cka(x, y, method=method) == pytest.approx(0.55761, abs=5e-6)
        assert linear_cka(x, y, debiased=True, method=method) == pytest.approx(0.51346, abs=5e-6)
    assert rbf_cka(x, y, threshold=0.5) == pytest.approx(0.65483, abs=5e-6)


@pytest.mark.parametrize(
    "n", [30, 31]
)  # even and odd n*n: np.median averages the two middle values when even
@pytest.mark.parametrize("debiased", [False, True])
def test_matches_reference_restatement(n: int, debiased: bool) -> None:
    x, y = correlated_pair(n, 50, 8, seed=n)
    assert linear_cka(x, y, debiased, method="gram") == pytest.approx(
        ref_cka(ref_gram_linear(x), ref_gram_linear(y), debiased), abs=TOL
    )
    assert linear_cka(x, y, debiased, method="feature") == pytest.approx(
        ref_feature_space_linear_cka(x, y, debiased), abs=TOL
    )
    assert linear_cka(x, y, debiased) == pytest.approx(ref_feature_space_linear_cka(x, y, debiased), abs=TOL)
    for threshold in (0.5, 1.0, 2.0):
        expected = ref_cka(ref_gram_rbf(x, threshold), ref_gram_rbf(y, threshold), debiased)
        assert rbf_cka(x, y, threshold=threshold, debiased=debiased) == pytest.approx(expected, abs=TOL)
        assert cka(x, y, kind="rbf", debiased=debiased, threshold=threshold) == pytest.approx(
            expected, abs=TOL
        )
    assert cka_from_grams(ref_gram_linear(x), ref_gram_linear(y), debiased) == pytest.approx(
        ref_cka(ref_gram_linear(x), ref_gram_linear(y), debiased), abs=TOL
    )


def test_helpers_match_reference_elementwise() -> None:
    x, _ = correlated_pair(31, 12, 3, seed=7)
    np.testing.assert_allclose(gram_linear(x).numpy(), ref_gram_linear(x), rtol=0, atol=1e-12)
    for threshold in (0.5, 1.0):
        np.testing.assert_allclose(
            gram_rbf(x, threshold).numpy(), ref_gram_rbf(x, threshold), rtol=0, atol=1e-12
        )
    k = ref_gram_linear(x)
    for unbiased in (False, True):
        got = center_gram(torch.from_numpy(k), unbiased=unbiased).numpy()
        np.testing.assert_allclose(got, ref_center_gram(k, unbiased), rtol=0, atol=1e-10)
    before = k.copy()
    center_gram(k, unbiased=True)
    np.testing.assert_array_equal(k, before)  # input not modified


def test_unbiased_hsic_is_song_formula() -> None:
    x, y = correlated_pair(17, 6, 5, seed=3)
    for kx, ky in ((ref_gram_linear(x), ref_gram_linear(y)), (ref_gram_rbf(x), ref_gram_rbf(y, 0.7))):
        assert unbiased_hsic(kx, ky) == pytest.approx(song_hsic1(kx, ky), rel=1e-10, abs=1e-12)


def test_registry_and_dispatch() -> None:
    assert {"linear": linear_cka, "rbf": rbf_cka} == CKA_METHODS
    x, y = correlated_pair(40, 5, 6)
    assert cka(x, y) == linear_cka(x, y)
    assert cka(x, y, kind="linear", debiased=True, method="gram") == linear_cka(x, y, True, method="gram")
    with pytest.raises(TffdVizError, match="unknown CKA kind 'cosine'"):
        cka(x, y, kind="cosine")
    with pytest.raises(TffdVizError, match="unknown method 'svd'"):
        linear_cka(x, y, method="svd")


# --------------------------------------------------------------------------------------------------------------
# invariances
# --------------------------------------------------------------------------------------------------------------


def random_orthogonal(d: int, seed: int) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))
    return q


@pytest.mark.parametrize("debiased", [False, True])
def test_linear_invariances(debiased: bool) -> None:
    x, y = correlated_pair(60, 12, 9, seed=1)
    q = random_orthogonal(12, seed=2)
    base = linear_cka(x, y, debiased)
    assert linear_cka(x, x @ q, debiased) == pytest.approx(1.0, abs=TOL)
    assert linear_cka(x, x, debiased) == pytest.approx(1.0, abs=TOL)
    assert linear_cka(x @ q, y, debiased) == pytest.approx(base, abs=TOL)
    assert linear_cka(3.7 * x, 0.01 * y, debiased) == pytest.approx(base, abs=TOL)
    assert linear_cka(x + 5.0, y - 2.0, debiased) == pytest.approx(base, abs=TOL)
    assert linear_cka(y, x, debiased) == pytest.approx(base, abs=TOL)
    # not invariant to a general (non-orthogonal) linear map: the checks above can fail
    a = np.random.default_rng(4).standard_normal((12, 12))
    assert abs(linear_cka(x @ a, y, debiased) - base) > 1e-3


@pytest.mark.parametrize("debiased", [False, True])
def test_rbf_invariances(debiased: bool) -> None:
    x, y = correlated_pair(60, 12, 9, seed=5)
    q = random_orthogonal(12, seed=6)
    base = rbf_cka(x, y, 0.8, debiased)
    assert rbf_cka(x, x, 0.8, debiased) == pytest.approx(1.0, abs=TOL)
    assert rbf_cka(x @ q, y, 0.8, debiased) == pytest.approx(base, abs=TOL)
    assert rbf_cka(3.7 * x, 0.01 * y, 0.8, debiased) == pytest.approx(base, abs=TOL)
    assert rbf_cka(x + 5.0, y - 2.0, 0.8, debiased) == pytest.approx(base, abs=TOL)
    assert rbf_cka(y, x, 0.8, debiased) == pytest.approx(base, abs=TOL)
    assert abs(rbf_cka(x, y, 0.3, debiased) - base) > 1e-3  # the bandwidth matters


@pytest.mark.parametrize("debiased", [False, True])
def test_gram_and_feature_forms_agree(debiased: bool) -> None:
    for n, dx, dy in ((20, 70, 40), (90, 6, 11)):  # n < d and n > d
        x, y = correlated_pair(n, dx, dy, seed=n)
        assert linear_cka(x, y, debiased, method="gram") == pytest.approx(
            linear_cka(x, y, debiased, method="feature"), abs=TOL
        )


def test_inputs_torch_numpy_and_shapes() -> None:
    x, y = correlated_pair(24, 12, 18, seed=9)
    xt = torch.from_numpy(x).reshape(24, 3, 2, 2).float()
    expected = linear_cka(xt.reshape(24, -1).double().numpy(), y)
    assert linear_cka(xt, torch.from_numpy(y)) == pytest.approx(expected, abs=TOL)
    assert isinstance(linear_cka(x, y), float)
    assert rbf_cka(xt, y) == pytest.approx(rbf_cka(xt.reshape(24, -1).double().numpy(), y), abs=TOL)


def test_float32_offset_is_harmless_full_batch() -> None:
    # values on a 2^-10 grid in [-8, 8]: x + 30 is exact in float32, so any difference is the computation's
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(200, 24, generator=g) * 1024).round().clamp(-8191, 8191) / 1024
    y = torch.tanh(x @ torch.randn(24, 16, generator=g)) + 0.3 * torch.randn(200, 16, generator=g)
    assert x.dtype == torch.float32 and torch.equal((x + 30) - 30, x)
    for debiased in (False, True):
        for method in ("gram", "feature"):
            assert linear_cka(x + 30, y, debiased, method=method) == pytest.approx(
                linear_cka(x, y, debiased, method=method), abs=1e-10
            )
        assert rbf_cka(x + 30, y, debiased=debiased) == pytest.approx(
            rbf_cka(x, y, debiased=debiased), abs=1e-10
        )


# --------------------------------------------------------------------------------------------------------------
# degenerate input and errors
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_constant_side_is_zero_with_warning(kind: str, debiased: bool) -> None:
    x, _ = correlated_pair(20, 5, 3)
    const = np.full((20, 4), 0.1)
    with pytest.warns(ConstantFeatureWarning, match="features y have zero variance"):
        assert cka(x, const, kind=kind, debiased=debiased) == 0.0
    with pytest.warns(ConstantFeatureWarning, match="features x and y"):
        assert cka(const, const, kind=kind, debiased=debiased) == 0.0


def test_errors_name_shapes() -> None:
    x, y = correlated_pair(20, 5, 3)
    with pytest.raises(TffdVizError, match=r"x has shape \(20, 5\) and y has shape \(19, 3\)"):
        linear_cka(x, y[:19])
    with pytest.raises(TffdVizError, match=r"at least 4 samples, got n = 3"):
        linear_cka(x[:3], y[:3])
    with pytest.raises(TffdVizError, match=r"at least 4 samples"):
        rbf_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(TffdVizError, match=r"n = 20 samples exceeds max_n = 10"):
        rbf_cka(x, y, max_n=10)
    with pytest.raises(TffdVizError, match=r"n = 20 samples exceeds max_n = 10"):
        linear_cka(x, y, max_n=10)
    assert linear_cka(x, y, max_n=FULL_BATCH_MAX_N) == linear_cka(x, y)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(TffdVizError, match="NaN or infinity"):
        linear_cka(bad, y)
    with pytest.raises(TffdVizError, match="threshold"):
        rbf_cka(x, y, threshold=0.0)
    with pytest.raises(TffdVizError, match="symmetric"):
        center_gram(np.arange(16.0).reshape(4, 4))
    with pytest.raises(TffdVizError, match=r"gram_x has shape \(20, 20\), gram_y has shape \(19, 19\)"):
        cka_from_grams(ref_gram_linear(x), ref_gram_linear(y[:19]))
    dup = np.vstack([np.repeat(x[:1], 16, axis=0), x[1:5]])  # 256 of 400 pairs coincide, but not constant
    with pytest.raises(TffdVizError, match="median squared distance"):
        gram_rbf(dup)


# --------------------------------------------------------------------------------------------------------------
# minibatch CKA
# --------------------------------------------------------------------------------------------------------------


def test_minibatch_single_batch_equals_full_debiased() -> None:
    a, b = model_layers(96, seed=1)
    got = accumulate(MinibatchCKA(3, 2), a, b, batch=96)
    torch.testing.assert_close(got, full_matrix(a, b), rtol=0, atol=TOL)


def test_minibatch_matches_published_implementation() -> None:
    a, b = model_layers(256, seed=2)
    mb = MinibatchCKA(3, 2)
    got = accumulate(mb, a, b, batch=32)
    batches_a = [[t[i : i + 32].numpy() for t in a] for i in range(0, 256, 32)]
    batches_b = [[t[i : i + 32].numpy() for t in b] for i in range(0, 256, 32)]
    np.testing.assert_allclose(got.numpy(), nguyen_minibatch_cka(batches_a, batches_b), rtol=0, atol=TOL)
    assert (mb.n_batches, mb.n_samples) == (8, 256)
    assert got.dtype == torch.float64 and got.shape == (3, 2)


@pytest.mark.parametrize("batch", [64, 128])
def test_minibatch_close_to_full_batch(batch: int) -> None:
    # The minibatch and full-batch estimators differ by sampling noise that shrinks with n and batch size.
    # Measured on this data model over seeds 0-19 (max |difference| over the 3x2 matrix):
    #   n=1024: median 0.0049 / max 0.0097 (batch 64), median 0.0034 / max 0.0075 (batch 128);
    #   n=4096: median 0.0026 / max 0.0046 (batch 64), median 0.0019 / max 0.0042 (batch 128).
    # So the 0.005 bound holds for every seed only at n=4096, which is used here (seed 0; the test stays fast).
    a, b = model_layers(4096, seed=0)
    got = accumulate(MinibatchCKA(3, 2), a, b, batch=batch)
    assert (got - full_matrix(a, b)).abs().max().item() < 0.005


def test_minibatch_does_not_depend_on_batch_order() -> None:
    a, b = model_layers(1024, seed=3)
    forward = accumulate(MinibatchCKA(3, 2), a, b, batch=64)
    shuffled = torch.randperm(16, generator=torch.Generator().manual_seed(0)).tolist()
    assert shuffled != list(range(16))
    torch.testing.assert_close(
        accumulate(MinibatchCKA(3, 2), a, b, 64, order=shuffled), forward, rtol=0, atol=TOL
    )


def test_minibatch_float32_offset() -> None:
    g = torch.Generator().manual_seed(1)
    x = (torch.randn(512, 32, generator=g) * 1024).round().clamp(
        -8191, 8191
    ) / 1024  # exact on a float32 grid
    y = torch.tanh(x @ torch.randn(32, 16, generator=g)) + 0.3 * torch.randn(512, 16, generator=g)
    plain = accumulate(MinibatchCKA(1, 1), [x], [y], batch=64)
    shifted = accumulate(MinibatchCKA(1, 1), [x + 30], [y], batch=64)
    assert x.dtype == torch.float32 and torch.equal((x + 30) - 30, x)
    torch.testing.assert_close(shifted, plain, rtol=0, atol=1e-10)
    # and one batch of it equals the full-batch value
    one = accumulate(MinibatchCKA(1, 1), [x + 30], [y], batch=512)
    assert one.item() == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-10)


def test_minibatch_model_against_itself() -> None:
    a, _ = model_layers(256, seed=4)
    mb = MinibatchCKA(3, 3)
    got = accumulate(mb, a, a, batch=64)
    torch.testing.assert_close(got, got.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.diagonal(got), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    # the aliased fast path (same list object) equals passing an equal but distinct list
    distinct = MinibatchCKA(3, 3)
    for i in range(0, 256, 64):
        batch = [t[i : i + 64] for t in a]
        distinct.update(batch, [t.clone() for t in batch])
    torch.testing.assert_close(distinct.compute(), got, rtol=0, atol=1e-12)
    assert abs(got[0, 1].item()) < 0.99  # different layers are not trivially 1


def test_minibatch_dict_input_reset_and_ids() -> None:
    a, b = model_layers(128, seed=5)
    listed = accumulate(MinibatchCKA(3, 2), a, b, batch=64)
    mb = MinibatchCKA(3, 2)
    for i in range(0, 128, 64):
        ids = torch.arange(i, i + 64)
        mb.update(
            {f"a{j}": t[i : i + 64] for j, t in enumerate(a)},
            {f"b{j}": t[i : i + 64] for j, t in enumerate(b)},
            ids_a=ids,
            ids_b=ids.numpy(),
        )
    torch.testing.assert_close(mb.compute(), listed, rtol=0, atol=0)
    assert mb.names_a == ["a0", "a1", "a2"] and mb.names_b == ["b0", "b1"]
    mb.reset()
    assert (mb.n_batches, mb.n_samples) == (0, 0)
    with pytest.raises(TffdVizError, match="no minibatch accumulated"):
        mb.compute()
    torch.testing.assert_close(accumulate(mb, a, b, batch=64), listed, rtol=0, atol=0)


def test_minibatch_errors() -> None:
    a, b = model_layers(64, seed=6)
    mb = MinibatchCKA(3, 2)
    with pytest.raises(TffdVizError, match="minibatch size 3 is below 4"):
        mb.update([t[:3] for t in a], [t[:3] for t in b])
    ids = torch.arange(8)
    other = ids.clone()
    other[5] = 99
    with pytest.raises(TffdVizError, match="different samples: position 5 has id 5 in ids_a but 99 in ids_b"):
        mb.update([t[:8] for t in a], [t[:8] for t in b], ids_a=ids, ids_b=other)
    with pytest.raises(TffdVizError, match="ids_b must be a 1-D integer array"):
        mb.update([t[:8] for t in a], [t[:8] for t in b], ids_a=ids, ids_b=torch.arange(7))
    with pytest.raises(TffdVizError, match="model A's minibatch has 8 samples but model B's has 9"):
        mb.update([t[:8] for t in a], [t[:9] for t in b])
    with pytest.raises(TffdVizError, match=r"feats_a\[1\] has 9 samples"):
        mb.update([a[0][:8], a[1][:9], a[2][:8]], [t[:8] for t in b])
    with pytest.raises(TffdVizError, match="feats_b has 3 layers, expected n_b = 2"):
        mb.update([t[:8] for t in a], [t[:8] for t in a])
    with pytest.raises(TffdVizError, match="n_a must be a positive int"):
        MinibatchCKA(0, 2)
    assert mb.n_batches == 0  # nothing was accumulated by the failed updates
    with pytest.raises(TffdVizError, match="no minibatch"):
        mb.compute()


def test_minibatch_constant_layer_is_zero_with_warning() -> None:
    a, b = model_layers(128, seed=7)
    a[1] = torch.full((128, 5), 2.5)
    mb = MinibatchCKA(3, 2)
    for i in range(0, 128, 32):
        mb.update({f"a{j}": t[i : i + 32] for j, t in enumerate(a)}, [t[i : i + 32] for t in b])
    with pytest.warns(ConstantFeatureWarning, match=r"a\[1\] \('a1'\)"):
        got = mb.compute()
    assert torch.isfinite(got).all()
    assert torch.equal(got[1], torch.zeros(2, dtype=torch.float64))
    assert (got[0] != 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        accumulate(MinibatchCKA(1, 1), [b[0]], [b[1]], batch=32)  # no warning on ordinary features


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_minibatch_and_full_on_cuda() -> None:
    a, b = model_layers(256, seed=8)
    cpu = accumulate(MinibatchCKA(3, 2), a, b, batch=64)
    mb = MinibatchCKA(3, 2)
    gpu = accumulate(mb, [t.cuda().float() for t in a], [t.cuda().float() for t in b], batch=64)
    assert gpu.device.type == "cuda" and mb.device is not None and mb.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-5)
    assert linear_cka(a[0].cuda(), b[0].cuda(), True) == pytest.approx(
        linear_cka(a[0], b[0], True), abs=1e-10
    )
    assert rbf_cka(a[0].cuda(), b[0].cuda()) == pytest.approx(rbf_cka(a[0], b[0]), abs=1e-10)


# --------------------------------------------------------------------------------------------------------------
# channel similarity
# --------------------------------------------------------------------------------------------------------------


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    nu, nv = float(u.norm()), float(v.norm())
    return 0.0 if nu == 0 or nv == 0 else float(u @ v) / (nu * nv)


def channel_vector(f: torch.Tensor, c: int) -> torch.Tensor:
    return torch.cat([f[i, c].reshape(-1) for i in range(f.shape[0])])


def feature_map(shape: tuple[int, int, int, int], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape[0], 1, shape[2], shape[3], generator=g, dtype=torch.float64)
    return base + torch.randn(*shape, generator=g, dtype=torch.float64)  # channels correlated through base


def test_channel_cosine_matrix_against_loop() -> None:
    f = feature_map((3, 5, 4, 6), seed=0)
    f[:, 2] = 0.0  # a dead channel
    got = channel_cosine_matrix(f)
    expected = [[cosine(channel_vector(f, i), channel_vector(f, j)) for j in range(5)] for i in range(5)]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(
        torch.diagonal(got)[[0, 1, 3, 4]], torch.ones(4, dtype=got.dtype), rtol=0, atol=1e-12
    )
    assert torch.equal(got[2], torch.zeros(5, dtype=got.dtype)) and torch.equal(
        got[:, 2], torch.zeros(5, dtype=got.dtype)
    )
    assert channel_cosine_matrix(f.float()).dtype == torch.float32


def test_channel_cosine_matrix_order_permutes() -> None:
    f = feature_map((2, 6, 3, 3), seed=1)
    order = torch.tensor([4, 0, 5, 2, 1, 3])
    plain = channel_cosine_matrix(f)
    ordered = channel_cosine_matrix(f, order)
    torch.testing.assert_close(ordered, plain[order][:, order], rtol=0, atol=0)
    torch.testing.assert_close(ordered, channel_cosine_matrix(f[:, order]), rtol=0, atol=1e-12)
    assert not torch.allclose(ordered, plain)
    with pytest.raises(TffdVizError, match=r"permutation of the 6 channels .* got shape \(5,\)"):
        channel_cosine_matrix(f, order[:5])
    with pytest.raises(TffdVizError, match="permutation of 0..5"):
        channel_cosine_matrix(f, torch.tensor([0, 0, 1, 2, 3, 4]))
    with pytest.raises(TapError, match=r"4-D feature map \(N, C, H, W\), got shape \(2, 6, 9\)"):
        channel_cosine_matrix(f.reshape(2, 6, 9))


@pytest.mark.parametrize("c", [6, 7])
def test_paired_channel_cosine(c: int) -> None:
    f = feature_map((3, c, 2, 5), seed=c)
    order = torch.randperm(c, generator=torch.Generator().manual_seed(c))
    got = paired_channel_cosine(f, order)
    h = c // 2
    assert got.shape == (h,)
    # the top floor(C/2) salient channels paired in order with the bottom floor(C/2) (middle one left out if odd)
    expected = [
        cosine(channel_vector(f, int(order[i])), channel_vector(f, int(order[c - h + i]))) for i in range(h)
    ]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-12)
    with pytest.raises(TffdVizError, match="permutation"):
        paired_channel_cosine(f, order[:-1])
    with pytest.raises(TapError, match="got shape"):
        paired_channel_cosine(f[0], order)


def adaptive_avg_pool(f: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Adaptive average pooling written out: bin i covers [floor(i*H/out), ceil((i+1)*H/out))."""
    n, c, h, w = f.shape
    out = torch.empty(n, c, out_h, out_w, dtype=f.dtype)
    for i in range(out_h):
        h0, h1 = (i * h) // out_h, -((-(i + 1) * h) // out_h)
        for j in range(out_w):
            w0, w1 = (j * w) // out_w, -((-(j + 1) * w) // out_w)
            out[:, :, i, j] = f[:, :, h0:h1, w0:w1].mean(dim=(2, 3))
    return out


@pytest.mark.parametrize(
    ("shallow_shape", "deep_shape"),
    [((2, 5, 8, 6), (2, 3, 4, 3)), ((2, 4, 7, 5), (2, 6, 3, 2)), ((3, 4, 4, 4), (3, 4, 4, 4))],
)
def test_inter_layer_alignment_against_restatement(shallow_shape: tuple, deep_shape: tuple) -> None:
    shallow, deep = feature_map(shallow_shape, seed=1), feature_map(deep_shape, seed=2)
    got = inter_layer_alignment(shallow, deep)
    k = min(shallow_shape[1], deep_shape[1])
    pooled = adaptive_avg_pool(shallow, deep_shape[2], deep_shape[3])
    expected = [cosine(channel_vector(pooled, c), channel_vector(deep, c)) for c in range(k)]
    assert got.shape == (k,)
    torch.testing.assert_close(got, torch.tensor(expected, dtype=got.dtype), rtol=0, atol=1e-12)
    # whichever map is larger gets pooled, so swapping the arguments changes nothing
    torch.testing.assert_close(inter_layer_alignment(deep, shallow), got, rtol=0, atol=1e-12)


def test_inter_layer_alignment_errors_and_zero_channels() -> None:
    shallow, deep = feature_map((2, 3, 4, 4), seed=3), feature_map((2, 3, 2, 2), seed=4)
    deep[:, 1] = 0.0
    got = inter_layer_alignment(shallow, deep)
    assert torch.isfinite(got).all() and got[1].item() == 0.0 and got[0].item() != 0.0
    with pytest.raises(TapError, match=r"\(2, 3, 4, 4\) and deep \(3, 3, 2, 2\)"):
        inter_layer_alignment(shallow, feature_map((3, 3, 2, 2), seed=5))
    with pytest.raises(
        TapError, match=r"\(deep\): expected a 4-D feature map \(N, C, H, W\), got shape \(2, 3, 2\)"
    ):
        inter_layer_alignment(shallow, deep[:, :, 0])


# --------------------------------------------------------------------------------------------------------------
# models over images: layer_cka_matrices, channel_similarity_views, inter_layer_alignments
# --------------------------------------------------------------------------------------------------------------


def zoo_pair(n: int, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module, torch.Tensor]:
    """Two differently initialised resnet8 (1 input channel, 10 classes, eval mode) and ``n`` 16x16 images."""
    from tffd_viz.models import create_model

    torch.manual_seed(seed)
    a = create_model("resnet8", num_classes=10, in_chans=1).eval()
    b = create_model("resnet8", num_classes=10, in_chans=1).eval()
    images = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed + 100))
    return a, b, images


def test_layer_cka_minibatch_equals_direct_minibatch_cka() -> None:
    from tffd_viz.features import extract_features
    from tffd_viz.similarity import layer_cka_matrices

    a, b, x = zoo_pair(42)
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(a, b, x, batch_size=16, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)]  # slices 0:16, 16:32, 32:42
    fa, fb = extract_features(a, x), extract_features(b, x)
    names = ["layer1", "layer2", "layer3"]
    direct_ab, direct_aa, direct_bb = MinibatchCKA(3, 3), MinibatchCKA(3, 3), MinibatchCKA(3, 3)
    for sl in (slice(0, 16), slice(16, 32), slice(32, 42)):
        ba, bb = [fa[t][sl] for t in names], [fb[t][sl] for t in names]
        direct_ab.update(ba, bb)
        direct_aa.update(ba, ba)
        direct_bb.update(bb, bb)
    assert set(got) == {"AvA", "BvB", "AvB"}
    for key, direct in (("AvB", direct_ab), ("AvA", direct_aa), ("BvB", direct_bb)):
        matrix, rows, cols = got[key]
        assert rows == names and cols == names and isinstance(matrix, np.ndarray) and matrix.dtype == np.float64
        np.testing.assert_allclose(matrix, direct.compute().numpy(), rtol=0, atol=1e-10)
    ava = got["AvA"][0]
    np.testing.assert_allclose(ava, ava.T, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.diag(ava), np.ones(3), rtol=0, atol=1e-12)
    assert 0.0 < ava[0, 2] < 0.999
    # the minibatch estimator ignores `debiased` (it is always HSIC_1)
    again = layer_cka_matrices(a, b, x, batch_size=16, debiased=True)
    np.testing.assert_array_equal(again["AvB"][0], got["AvB"][0])


def test_layer_cka_merges_a_last_minibatch_under_four() -> None:
    from tffd_viz.features import extract_features
    from tffd_viz.similarity import layer_cka_matrices

    a, b, x = zoo_pair(34, seed=1)
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(a, b, x, taps_a=["layer2"], taps_b=["layer1", "layer3"], batch_size=16,
                             progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]  # 0:16 and 16:34 (the 2 left-over images join the second minibatch)
    fa, fb = extract_features(a, x, ["layer2"]), extract_features(b, x, ["layer1", "layer3"])
    direct = MinibatchCKA(1, 2)
    for sl in (slice(0, 16), slice(16, 34)):
        direct.update([fa["layer2"][sl]], [fb["layer1"][sl], fb["layer3"][sl]])
    matrix, rows, cols = got["AvB"]
    assert (rows, cols) == (["layer2"], ["layer1", "layer3"]) and matrix.shape == (1, 2)
    np.testing.assert_allclose(matrix, direct.compute().numpy(), rtol=0, atol=1e-10)
    assert got["BvB"][0].shape == (2, 2) and got["AvA"][0].shape == (1, 1)


@pytest.fixture(scope="module")
def flat_pair() -> tuple:
    """``zoo_pair(24)`` and both models' flattened default-tap features."""
    from tffd_viz.features import extract_features

    a, b, x = zoo_pair(24, seed=2)
    return a, b, x, extract_features(a, x, pool="flatten"), extract_features(b, x, pool="flatten")


@pytest.mark.parametrize("kind", ["linear", "rbf"])
@pytest.mark.parametrize("debiased", [False, True])
def test_layer_cka_full_batch_matches_pairwise_cka(kind: str, debiased: bool, flat_pair: tuple) -> None:
    from tffd_viz.similarity import layer_cka_matrices

    a, b, x, fa, fb = flat_pair
    calls: list[tuple[int, int]] = []
    got = layer_cka_matrices(a, b, x, kind=kind, debiased=debiased, estimator="full", batch_size=10,
                             progress=lambda d, t: calls.append((d, t)))
    # extraction batches 0:10, 10:20, 20:24 for A, then the same for B
    assert calls == [(i, 6) for i in range(1, 7)]
    fn = CKA_METHODS[kind]
    for key, (left, right) in {"AvA": (fa, fa), "BvB": (fb, fb), "AvB": (fa, fb)}.items():
        matrix, rows, cols = got[key]
        expected = np.array([[fn(left[r], right[c], debiased=debiased) for c in cols] for r in rows])
        np.testing.assert_allclose(matrix, expected, rtol=0, atol=1e-9)
    ava = got["AvA"][0]
    np.testing.assert_allclose(ava, ava.T, rtol=0, atol=0)
    np.testing.assert_allclose(np.diag(ava), np.ones(3), rtol=0, atol=1e-12)


def test_layer_cka_same_model_and_constant_layer() -> None:
    from tffd_viz.similarity import layer_cka_matrices

    class WithConstant(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 3, 3, padding=1)
            self.act = torch.nn.ReLU()
            self.flat = torch.nn.Conv2d(3, 2, 1)
            with torch.no_grad():
                self.flat.weight.zero_()
                self.flat.bias.fill_(0.5)  # output 0.5 everywhere: constant over the images
            self.fc = torch.nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.act(self.conv(x))
            return self.fc(h.mean(dim=(2, 3))) + self.flat(h).mean()

    torch.manual_seed(3)
    model = WithConstant().eval()
    x = torch.randn(20, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    for estimator in ("minibatch", "full"):
        with pytest.warns(ConstantFeatureWarning):
            got = layer_cka_matrices(model, model, x, taps_a=["act", "flat"], taps_b=["act", "flat"],
                                     estimator=estimator, batch_size=8)
        for key in ("AvA", "BvB", "AvB"):
            matrix = got[key][0]
            assert np.isfinite(matrix).all()
            assert matrix[0, 0] == pytest.approx(1.0, abs=1e-12)
            assert (matrix[1, :] == 0).all() and (matrix[:, 1] == 0).all()


def test_layer_cka_errors() -> None:
    from tffd_viz.similarity import layer_cka_matrices

    a, b, x = zoo_pair(8, seed=4)
    with pytest.raises(TffdVizError, match="linear only"):
        layer_cka_matrices(a, b, x, kind="rbf", estimator="minibatch")
    with pytest.raises(TffdVizError, match="unknown CKA estimator 'streaming'"):
        layer_cka_matrices(a, b, x, estimator="streaming")
    with pytest.raises(TffdVizError, match="unknown CKA kind 'poly'"):
        layer_cka_matrices(a, b, x, kind="poly", estimator="full")
    with pytest.raises(TffdVizError, match="n = 8 images exceeds max_n = 6"):
        layer_cka_matrices(a, b, x, estimator="full", max_n=6)
    with pytest.raises(TffdVizError, match=r"at least 4 images, got images of shape \(3, 1, 16, 16\)"):
        layer_cka_matrices(a, b, x[:3])
    with pytest.raises(TffdVizError, match="batch_size must be an int >= 4, got 2"):
        layer_cka_matrices(a, b, x, batch_size=2)
    with pytest.raises(TapError, match="nope"):
        layer_cka_matrices(a, b, x, taps_b=["nope"])


def test_channel_similarity_views_and_alignments_equal_direct_calls() -> None:
    from tffd_viz.features import extract_features
    from tffd_viz.losses import salient_order
    from tffd_viz.similarity import channel_similarity_views, inter_layer_alignments

    a, _, x = zoo_pair(12, seed=5)
    feats = extract_features(a, x)
    views = channel_similarity_views(a, x, "layer2", batch_size=5)
    f = feats["layer2"]
    order = salient_order(f)
    assert torch.equal(views["order"], order)
    torch.testing.assert_close(views["cosine"], channel_cosine_matrix(f), rtol=0, atol=1e-6)
    torch.testing.assert_close(views["cosine"][order][:, order], channel_cosine_matrix(f, order), rtol=0, atol=1e-6)
    torch.testing.assert_close(views["paired"], paired_channel_cosine(f, order), rtol=0, atol=1e-6)
    assert views["cosine"].shape == (32, 32) and views["paired"].shape == (16,)
    with pytest.raises(TapError, match=r"'fc' gives features of shape \(12, 10\)"):
        channel_similarity_views(a, x, "fc")

    got = inter_layer_alignments(a, x)
    assert list(got) == ["layer1->layer2", "layer1->layer3", "layer2->layer3"]
    for pair, values in got.items():
        s, d = pair.split("->")
        torch.testing.assert_close(values, inter_layer_alignment(feats[s], feats[d]), rtol=0, atol=1e-6)
    assert got["layer1->layer3"].shape == (16,)
    assert list(inter_layer_alignments(a, x, taps=["layer3", "layer1"])) == ["layer3->layer1"]
    with pytest.raises(TapError, match="at least two taps"):
        inter_layer_alignments(a, x, taps=["layer1"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("estimator", ["minibatch", "full"])
def test_layer_cka_matrices_on_cuda(estimator: str) -> None:
    from tffd_viz.similarity import layer_cka_matrices

    a, b, x = zoo_pair(40, seed=6)
    on_cpu = layer_cka_matrices(a, b, x, estimator=estimator, batch_size=16)
    # models on the GPU, images on the CPU (moved batch by batch); B may also stay on the CPU
    a.cuda()
    for device_b in ("cuda", "cpu"):
        got = layer_cka_matrices(a, b.to(device_b), x, estimator=estimator, batch_size=16)
        for key in ("AvA", "BvB", "AvB"):
            # cuDNN convolutions may use TF32: features agree to ~1e-3, CKA values as well
            np.testing.assert_allclose(got[key][0], on_cpu[key][0], rtol=0, atol=2e-3)
    a.cpu()
