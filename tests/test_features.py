"""Tests of tffd_viz.features: batched extraction against one full pass, mode/grad hygiene, pooling,
predictions, accuracy and confusion matrices against plain re-statements."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.features import (
    POOLS,
    accuracy,
    batch_slices,
    confusion_matrix,
    eval_mode,
    extract_features,
    extract_pair,
    iter_tap_batches,
    model_device,
    predict_logits,
    prediction_summary,
)
from tffd_viz.models import create_model, extract_taps

pytestmark = pytest.mark.usefixtures("single_thread")


def _model(arch: str = "resnet8", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=10, in_chans=1)
    # non-trivial BN statistics and affine parameters, so eval vs train mode differ visibly
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _images(n: int = 10, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 32, 32, generator=gen)


def _full_pass(model: nn.Module, images: torch.Tensor, taps=None):
    with eval_mode(model), torch.no_grad():
        return extract_taps(model, images, taps)


# --------------------------------------------------------------------------------------------------
# extraction
# --------------------------------------------------------------------------------------------------


def test_batched_extraction_equals_one_full_pass() -> None:
    model, x = _model(), _images(10)
    ref = _full_pass(model, x)
    small = extract_features(model, x, batch_size=3)
    big = extract_features(model, x, batch_size=64)
    assert list(small) == list(big) == ["layer1", "layer2", "layer3"]
    for name in ref:
        assert small[name].shape == ref[name].shape == (10, *ref[name].shape[1:])
        torch.testing.assert_close(small[name], ref[name], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(big[name], ref[name], rtol=1e-5, atol=1e-5)


def test_iter_tap_batches_slices_cover_images_in_order() -> None:
    model, x = _model(), _images(7)
    ref = _full_pass(model, x, ["layer3"])["layer3"]
    seen = []
    for sl, feats in iter_tap_batches(model, x, "layer3", batch_size=3):
        seen.append((sl.start, sl.stop))
        assert list(feats) == ["layer3"]
        torch.testing.assert_close(feats["layer3"], ref[sl], rtol=1e-5, atol=1e-5)
    assert seen == [(0, 3), (3, 6), (6, 7)]
    assert batch_slices(7, 3) == [slice(0, 3), slice(3, 6), slice(6, 7)]


def test_training_mode_is_switched_to_eval_and_restored_per_module() -> None:
    model, x = _model(), _images(6)
    ref = _full_pass(model, x)
    model.train()
    model.layer2.eval()  # mixed modes must come back exactly
    modes = {name: m.training for name, m in model.named_modules()}
    stats = {n: b.clone() for n, b in model.named_buffers()}
    feats = extract_features(model, x, batch_size=4)
    for name in ref:  # eval-mode values (train mode would use batch statistics)
        torch.testing.assert_close(feats[name], ref[name], rtol=1e-5, atol=1e-5)
    assert {name: m.training for name, m in model.named_modules()} == modes
    for n, b in model.named_buffers():  # BN running statistics untouched
        assert torch.equal(b, stats[n]), n


def test_mode_is_eval_during_iteration_and_grad_mode_not_leaked() -> None:
    model, x = _model(), _images(5)
    model.train()
    for _sl, feats in iter_tap_batches(model, x, batch_size=2):
        assert not model.training and not model.layer1[0].bn1.training
        assert torch.is_grad_enabled()  # no_grad is not held across the yield
        assert all(not f.requires_grad for f in feats.values())
    assert model.training and model.layer1[0].bn1.training


def test_closing_iterator_early_restores_mode() -> None:
    model, x = _model(), _images(6)
    model.train()
    it = iter_tap_batches(model, x, batch_size=2)
    next(it)
    assert not model.training
    it.close()
    assert model.training


def test_eval_model_is_not_written_to() -> None:
    class Spy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.writes = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x)

        def train(self, mode: bool = True) -> Spy:
            self.writes += 1
            return super().train(mode)

    spy = Spy().eval()
    spy.writes = 0
    extract_features(spy, _images(3), taps=["conv"])
    assert spy.writes == 0


def test_no_grad_and_no_parameter_grads() -> None:
    model, x = _model(), _images(4)
    feats = extract_features(model, x, batch_size=2)
    logits = predict_logits(model, x, batch_size=3)
    assert all(not f.requires_grad for f in feats.values()) and not logits.requires_grad
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------------------------------------
# pooling
# --------------------------------------------------------------------------------------------------


def test_pooling_values_against_restatement() -> None:
    model, x = _model(), _images(5)
    raw = extract_features(model, x, batch_size=2)
    avg = extract_features(model, x, batch_size=2, pool="avg")
    mx = extract_features(model, x, batch_size=2, pool="max")
    flat = extract_features(model, x, batch_size=2, pool="flatten")
    for name, f in raw.items():
        n, c, h, w = f.shape
        ref_avg = torch.zeros(n, c)
        ref_max = torch.zeros(n, c)
        for i in range(n):
            for ch in range(c):
                ref_avg[i, ch] = f[i, ch].sum() / (h * w)
                ref_max[i, ch] = max(float(v) for v in f[i, ch].reshape(-1))
        torch.testing.assert_close(avg[name], ref_avg, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mx[name], ref_max)
        assert flat[name].shape == (n, c * h * w)
        torch.testing.assert_close(flat[name][2].reshape(c, h, w), f[2])


def test_pooling_of_non_spatial_tap_and_unknown_pool() -> None:
    model, x = _model(), _images(3)
    fc = extract_features(model, x, taps="fc", pool="avg")["fc"]
    torch.testing.assert_close(fc, predict_logits(model, x), rtol=1e-5, atol=1e-5)
    assert set(POOLS) == {None, "avg", "max", "flatten"}
    with pytest.raises(TffdVizError, match="unknown pool 'median'"):
        extract_features(model, x, pool="median")


# --------------------------------------------------------------------------------------------------
# pairs
# --------------------------------------------------------------------------------------------------


def test_extract_pair_uses_the_same_images_in_the_same_order() -> None:
    model_a = _model("resnet8", seed=0)
    model_b = copy.deepcopy(model_a)
    x = _images(7)
    feats_a, feats_b = extract_pair(model_a, model_b, x, batch_size=3, pool="avg")
    for name in feats_a:
        assert torch.equal(feats_a[name], feats_b[name])
    other = _model("vgg8", seed=2)
    fa, fb = extract_pair(model_a, other, x, taps_b=["block1", "block4"], batch_size=3)
    assert list(fb) == ["block1", "block4"]
    ref_b = _full_pass(other, x, ["block1", "block4"])
    torch.testing.assert_close(fb["block4"], ref_b["block4"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fa["layer3"], _full_pass(model_a, x)["layer3"], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# predictions and metrics
# --------------------------------------------------------------------------------------------------


def test_predict_logits_equals_one_eval_pass() -> None:
    model, x = _model(), _images(9)
    with torch.no_grad():
        ref = model(x)
    out = predict_logits(model, x, batch_size=4)
    assert out.shape == (9, 10) and out.device.type == "cpu"
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_accuracy_against_restatement() -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(50, 7, generator=gen)
    labels = torch.randint(0, 7, (50,), generator=gen)
    correct = 0
    for i in range(50):
        best = max(range(7), key=lambda k: float(logits[i, k]))
        correct += int(best == int(labels[i]))
    assert accuracy(logits, labels) == pytest.approx(100.0 * correct / 50)
    assert accuracy(torch.eye(3), torch.tensor([0, 1, 0])) == pytest.approx(200.0 / 3)
    with pytest.raises(DataError, match="4 rows but labels has 3"):
        accuracy(torch.randn(4, 3), torch.tensor([0, 1, 2]))


def test_confusion_matrix_against_loop() -> None:
    gen = torch.Generator().manual_seed(4)
    pred = torch.randint(0, 5, (200,), generator=gen)
    labels = torch.randint(0, 5, (200,), generator=gen)
    ref = torch.zeros(5, 5, dtype=torch.long)
    for p, t in zip(pred.tolist(), labels.tolist()):
        ref[t, p] += 1
    cm = confusion_matrix(pred, labels, 5)
    assert cm.dtype == torch.long and torch.equal(cm, ref) and int(cm.sum()) == 200
    # rows are the true class
    assert torch.equal(
        confusion_matrix(torch.tensor([1]), torch.tensor([0]), 2), torch.tensor([[0, 1], [0, 0]])
    )
    with pytest.raises(DataError, match=r"outside \[0, 5\)"):
        confusion_matrix(torch.tensor([5]), torch.tensor([0]), 5)
    with pytest.raises(DataError, match=r"logits\.argmax"):
        confusion_matrix(torch.randn(3, 5), torch.tensor([0, 1, 2]), 5)


def test_prediction_summary_against_restatement() -> None:
    model, x = _model(), _images(12)
    gen = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 10, (12,), generator=gen)
    with torch.no_grad():
        ref_pred = model(x).argmax(1)
    out = prediction_summary(model, x, labels, batch_size=5)
    assert out["n"] == 12 and torch.equal(out["pred"], ref_pred)
    assert out["accuracy"] == pytest.approx(100.0 * sum(int(p == t) for p, t in zip(ref_pred, labels)) / 12)
    ref_cm = torch.zeros(10, 10, dtype=torch.long)
    for p, t in zip(ref_pred.tolist(), labels.tolist()):
        ref_cm[t, p] += 1
    assert torch.equal(out["confusion"], ref_cm)
    assert prediction_summary(model, x, labels, num_classes=12)["confusion"].shape == (12, 12)
    with pytest.raises(DataError, match="12 rows but labels has 3"):
        prediction_summary(model, x, labels[:3])


# --------------------------------------------------------------------------------------------------
# devices and bad input
# --------------------------------------------------------------------------------------------------


def test_model_device_and_device_mismatch() -> None:
    model = _model()
    assert model_device(model) == torch.device("cpu")
    assert model_device(nn.ReLU()) == torch.device("cpu")
    with pytest.raises(TffdVizError, match="model's parameters are on cpu"):
        extract_features(model, _images(2), device="meta")


def test_bad_inputs_raise_named_errors() -> None:
    model = _model()
    with pytest.raises(DataError, match=r"\(N, C, H, W\), got \(1, 32, 32\)"):
        extract_features(model, torch.zeros(1, 32, 32))
    with pytest.raises(DataError, match="uint8"):
        extract_features(model, torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(DataError, match="empty"):
        predict_logits(model, torch.zeros(0, 1, 32, 32))
    with pytest.raises(TapError, match="unknown tap"):
        iter_tap_batches(model, _images(2), taps=["nope"])  # raised eagerly, before iteration
    with pytest.raises(TffdVizError, match="batch_size"):
        extract_features(model, _images(2), batch_size=0)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_with_cpu_images_matches_cpu() -> None:
    model, x = _model(), _images(6)
    ref = extract_features(model, x, batch_size=4)
    gpu = copy.deepcopy(model).cuda()
    out = extract_features(gpu, x, batch_size=4)
    on_dev = extract_features(gpu, x, batch_size=4, to_cpu=False)
    for name in ref:
        assert out[name].device.type == "cpu" and on_dev[name].device.type == "cuda"
        torch.testing.assert_close(out[name], ref[name], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(
        predict_logits(gpu, x, device="cuda"), predict_logits(model, x), rtol=1e-3, atol=1e-3
    )
