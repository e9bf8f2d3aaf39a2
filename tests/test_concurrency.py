"""Concurrency: the library calls the app makes, from several threads at once on shared models.

The app (``app_pages/cache.py``) keeps one model per checkpoint for every browser session and holds
that model's lock around each library call (taking several locks in one global order, by ``id``).
Here 6 "sessions" (threads), each with its own batch seed, criterion and layer, run the app's calls
at once on two shared models through the same locking, and must get exactly the numbers a sequential
run gets; afterwards each model's state_dict, modes, ``requires_grad`` flags, ``.grad`` and hook
dictionaries must be as before (cached models are never mutated).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tffd_viz.checkpoints import load_checkpoint
from tffd_viz.data import sample_batch
from tffd_viz.features import extract_features, predict_logits
from tffd_viz.importance import channel_scores, tap_rankings
from tffd_viz.models import create_model, extract_taps
from tffd_viz.similarity import channel_cosine_matrix, linear_cka
from tffd_viz.terms import gradient_norm_share, tffd_terms_on_batch

SESSIONS = 6
HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class Entry:
    """What ``cache.model_entry`` keeps: a model in eval mode without grad, and its lock."""

    model: nn.Module
    lock: threading.Lock


def cached_model(seed: int) -> Entry:
    """A digits resnet8 prepared as ``cache.model_entry`` prepares it (eval, requires_grad off)."""
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=10, in_chans=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 32, 32))  # BatchNorm running statistics away from their init
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Entry(model, threading.Lock())


def locked_call(entries: list[Entry], fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn`` holding the entries' locks, taken in one global order as ``cache._call`` does."""
    locks = sorted({id(e.lock): e.lock for e in entries}.values(), key=id)
    for lock in locks:
        lock.acquire()
    try:
        return fn(*args)
    finally:
        for lock in reversed(locks):
            lock.release()


def session_calls(a: Entry, b: Entry, session: int) -> list[tuple[str, list[Entry], Callable[[], Any]]]:
    """The calls one browser session makes for its own choices (seed, layer, criterion)."""
    images, labels = sample_batch("digits", "test", n=24, seed=session)
    layer = ("layer1", "layer2", "layer3")[session % 3]
    criterion = ("tffd", "l1", "taylor", "bn_gamma")[session % 4]
    ma, mb = a.model, b.model

    def cka_ab() -> float:
        fa = extract_taps(ma, images, [layer])[layer]
        fb = extract_taps(mb, images, [layer])[layer]
        return linear_cka(fa, fb)

    return [
        ("logits", [a], lambda: predict_logits(ma, images)),
        ("features", [b], lambda: extract_features(mb, images, pool="avg")),
        ("terms", [a], lambda: tffd_terms_on_batch(ma, images, labels)),
        ("scores", [b], lambda: channel_scores(criterion, model=mb, images=images, labels=labels, tap=layer)),
        ("rankings", [a], lambda: tap_rankings(ma, "tffd", images=images)),
        ("cosine", [b], lambda: channel_cosine_matrix(extract_taps(mb, images, [layer])[layer])),
        ("grad-share", [a], lambda: gradient_norm_share(ma, images[:8], labels[:8], 8e-4, 5e-4)),
        ("cka A vs B", [a, b], cka_ab),
    ]


def as_comparable(value: Any) -> Any:
    """Tensors, arrays, dataclasses and dicts of them as plain nested Python/numpy values."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if hasattr(value, "__dataclass_fields__"):
        return {k: as_comparable(getattr(value, k)) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        return {k: as_comparable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_comparable(v) for v in value]
    return value


def assert_identical(got: Any, expected: Any, where: str) -> None:
    got, expected = as_comparable(got), as_comparable(expected)
    if isinstance(expected, dict):
        assert list(got) == list(expected), where
        for k in expected:
            assert_identical(got[k], expected[k], f"{where}[{k!r}]")
    elif isinstance(expected, list):
        assert len(got) == len(expected), where
        for i, (g, e) in enumerate(zip(got, expected)):
            assert_identical(g, e, f"{where}[{i}]")
    elif isinstance(expected, np.ndarray):
        assert got.dtype == expected.dtype and got.shape == expected.shape, where
        assert np.array_equal(got, expected, equal_nan=True), where
    else:
        assert got == expected, where


def snapshot(model: nn.Module) -> dict[str, Any]:
    """Everything a session could mutate on a shared model."""
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [len(getattr(m, d)) for m in model.modules() for d in HOOK_DICTS],
        "globals": (len(nn.modules.module._global_forward_hooks),
                    len(nn.modules.module._global_forward_pre_hooks)),
    }


def assert_unchanged(model: nn.Module, before: dict[str, Any]) -> None:
    after = snapshot(model)
    assert list(after["state"]) == list(before["state"])
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"
    assert after["training"] == before["training"] and not any(after["training"])
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"]), "a .grad was written"
    assert after["hooks"] == before["hooks"] and not any(after["hooks"]), "a hook was left behind"
    assert after["globals"] == before["globals"]


def test_sessions_in_threads_get_the_sequential_results_and_leave_models_untouched():
    a, b = cached_model(0), cached_model(1)
    before = {"A": snapshot(a.model), "B": snapshot(b.model)}
    plans = {s: session_calls(a, b, s) for s in range(SESSIONS)}
    expected = {s: {name: locked_call(ents, fn) for name, ents, fn in calls} for s, calls in plans.items()}

    start = threading.Barrier(SESSIONS)
    results: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def run(session: int) -> None:
        try:
            start.wait(timeout=30)
            calls = plans[session]
            order = calls[session % len(calls):] + calls[:session % len(calls)]  # sessions interleave
            results[session] = {name: locked_call(ents, fn) for name, ents, fn in order}
        except BaseException as exc:  # reported below with its session
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,), name=f"session-{s}") for s in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a session hung (deadlock?)"
    assert not errors, errors
    for s in range(SESSIONS):
        for name in expected[s]:
            assert_identical(results[s][name], expected[s][name], f"session {s}: {name}")
    # sessions made different choices, so their results differ (the comparison above is not vacuous)
    assert not np.array_equal(as_comparable(expected[0]["logits"]), as_comparable(expected[1]["logits"]))
    assert_unchanged(a.model, before["A"])
    assert_unchanged(b.model, before["B"])


def test_a_call_that_fails_in_one_session_leaves_the_model_clean_for_the_others():
    """A bad layer name in one session (TapError inside a locked call) leaves no hook and frees the lock."""
    a = cached_model(0)
    before = snapshot(a.model)
    images, labels = sample_batch("digits", "test", n=8, seed=0)
    reference = predict_logits(a.model, images)
    failures: list[str] = []
    outputs: list[torch.Tensor] = []

    def bad() -> None:
        try:
            locked_call([a], tffd_terms_on_batch, a.model, images, labels, ["layer1", "fc"])
        except ValueError as exc:
            failures.append(type(exc).__name__)

    def good() -> None:
        outputs.append(locked_call([a], predict_logits, a.model, images))

    threads = [threading.Thread(target=bad if i % 2 else good) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert failures == ["TapError"] * 4 and len(outputs) == 4
    assert all(torch.equal(o, reference) for o in outputs)
    assert not a.lock.locked()
    assert_unchanged(a.model, before)


def test_concurrent_checkpoint_loads_agree():
    """Several sessions uploading pickles at once (torch.load's allow-list is process-wide state)."""
    model = cached_model(3).model
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "epoch": 7}, buf)
    data = buf.getvalue()
    loaded: list[dict[str, torch.Tensor]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def load() -> None:
        try:
            start.wait(timeout=30)
            m, card = load_checkpoint(data)
            assert card["epochs"] == 7
            loaded.append(m.state_dict())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(loaded) == 4
    for state in loaded:
        for k, v in model.state_dict().items():
            assert torch.equal(state[k], v), k
