"""Tests for tffd_viz.similarity.minibatch:
MinibatchCKA against the published implementation and full batch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.similarity.cka import ConstantFeatureWarning, linear_cka, rbf_cka
from tffd_viz.similarity.minibatch import MinibatchCKA

TOL = 1e-10


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


# ------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------


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


# ------------------------------------------------------------------------------------------------------------
# minibatch CKA
# ------------------------------------------------------------------------------------------------------------


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
    # So the 0.005 bound holds for every seed only at n=4096, which is used here
    # (seed 0; the test stays fast).
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
