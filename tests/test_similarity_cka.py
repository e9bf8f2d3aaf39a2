"""Tests for tffd_viz.similarity.cka: full-batch CKA, grams and centring (and the package's re-exports).

The CKA values are checked against a plain numpy re-statement of the reference colab of
Kornblith et al. (2019) (``gram_linear``, ``gram_rbf``, ``center_gram``, ``cka``,
``feature_space_linear_cka``, ``_debiased_dot_product_similarity_helper``), against the
values the colab prints for its own example, against Song et al.'s HSIC_1 formula written
out, and against the known invariances of CKA.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tffd_viz.similarity
from tffd_viz.errors import TffdVizError
from tffd_viz.similarity.cka import (
    CKA_METHODS,
    FULL_BATCH_MAX_N,
    ConstantFeatureWarning,
    center_gram,
    cka,
    cka_from_grams,
    gram_linear,
    gram_rbf,
    linear_cka,
    rbf_cka,
)

TOL = 1e-10

# ------------------------------------------------------------------------------------------------------------
# plain numpy re-statement of the reference colab (Kornblith et al. 2019,
# representation_similarity/Demo.ipynb)
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# full-batch CKA against the reference
# ------------------------------------------------------------------------------------------------------------


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


def test_u_centred_inner_product_is_song_hsic1() -> None:
    # <U(K), U(L)> / (n (n - 3)) with U the unbiased center_gram is Song et al.'s HSIC_1
    # (what MinibatchCKA sums)
    x, y = correlated_pair(17, 6, 5, seed=3)
    n = x.shape[0]
    for kx, ky in ((ref_gram_linear(x), ref_gram_linear(y)), (ref_gram_rbf(x), ref_gram_rbf(y, 0.7))):
        hsic1 = float((center_gram(kx, unbiased=True) * center_gram(ky, unbiased=True)).sum()) / (n * (n - 3))
        assert hsic1 == pytest.approx(song_hsic1(kx, ky), rel=1e-10, abs=1e-12)


def test_registry_and_dispatch() -> None:
    assert {"linear": linear_cka, "rbf": rbf_cka} == CKA_METHODS
    x, y = correlated_pair(40, 5, 6)
    assert cka(x, y) == linear_cka(x, y)
    assert cka(x, y, kind="linear", debiased=True, method="gram") == linear_cka(x, y, True, method="gram")
    with pytest.raises(TffdVizError, match="unknown CKA kind 'cosine'"):
        cka(x, y, kind="cosine")
    with pytest.raises(TffdVizError, match="unknown method 'svd'"):
        linear_cka(x, y, method="svd")


# ------------------------------------------------------------------------------------------------------------
# invariances
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# degenerate input and errors
# ------------------------------------------------------------------------------------------------------------


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


def test_package_reexports_every_public_name() -> None:
    import importlib

    names = set()
    for module in ("cka", "minibatch", "channels", "layers"):
        sub = importlib.import_module(f"tffd_viz.similarity.{module}")
        for name in sub.__all__:
            assert getattr(tffd_viz.similarity, name) is getattr(sub, name)
        names |= set(sub.__all__)
    assert set(tffd_viz.similarity.__all__) == names
