"""Concurrency: the library calls the app makes, from several threads at once on shared models.

The app (``app_pages/_cache.py``) keeps one model per checkpoint for every browser session and holds
that model's lock around each library call (taking several locks in one global order, by ``id``).
Here 6 "sessions" (threads), each with its own batch seed, criterion and layer, run the app's calls
at once on two shared models through the same locking, and must get exactly the numbers a sequential
run gets (and 8 sessions, each on its own page, seed and pair of four models of three architectures, must
get the numbers and figure JSON each gets alone); afterwards each model's state_dict, modes, ``requires_grad``
flags, ``.grad`` and hook dictionaries must be as before (cached models are never mutated).
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
HOOK_DICTS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)


pytestmark = pytest.mark.usefixtures("single_thread")


@dataclass
class Entry:
    """What ``_cache.model_entry`` keeps: a model in eval mode without grad, and its lock."""

    model: nn.Module
    lock: threading.Lock


def cached_model(seed: int) -> Entry:
    """A digits resnet8 prepared as ``_cache.model_entry`` prepares it (eval, requires_grad off)."""
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
    """Run ``fn`` holding the entries' locks, taken in one global order as ``_cache._call`` does."""
    locks = sorted({id(e.lock): e.lock for e in entries}.values(), key=id)
    for lock in locks:
        lock.acquire()
    try:
        return fn(*args)
    finally:
        for lock in reversed(locks):
            lock.release()


def at_once(work: Callable[[int], None], n: int, join_s: float = 60.0) -> None:
    """Run ``work(0)`` ... ``work(n - 1)`` in ``n`` threads released together; fail when one raises
    (the errors with their thread) or is still running after ``join_s``
    (a deadlock: a guard, not a speed target)."""
    start = threading.Barrier(n)
    errors: list[tuple[int, BaseException]] = []

    def run(i: int) -> None:
        try:
            start.wait(timeout=30)
            work(i)
        except BaseException as exc:  # reported below with its session
            errors.append((i, exc))

    threads = [threading.Thread(target=run, args=(i,), name=f"session-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=join_s)
    assert not any(t.is_alive() for t in threads), "a session hung (deadlock?)"
    assert not errors, errors


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
        "globals": (
            len(nn.modules.module._global_forward_hooks),
            len(nn.modules.module._global_forward_pre_hooks),
        ),
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

    results: dict[int, dict[str, Any]] = {}

    def run(session: int) -> None:
        calls = plans[session]
        order = calls[session % len(calls) :] + calls[: session % len(calls)]  # sessions interleave
        results[session] = {name: locked_call(ents, fn) for name, ents, fn in order}

    at_once(run, SESSIONS, join_s=120)
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

    def bad_or_good(i: int) -> None:
        if i % 2:
            try:
                locked_call([a], tffd_terms_on_batch, a.model, images, labels, ["layer1", "fc"])
            except ValueError as exc:
                failures.append(type(exc).__name__)
        else:
            outputs.append(locked_call([a], predict_logits, a.model, images))

    at_once(bad_or_good, 8)
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

    def load(_: int) -> None:
        m, card = load_checkpoint(data)
        assert card["epochs"] == 7
        loaded.append(m.state_dict())

    at_once(load, 4)
    assert len(loaded) == 4
    for state in loaded:
        for k, v in model.state_dict().items():
            assert torch.equal(state[k], v), k


# ------------------------------------------------------------------------------------------------
# 8 sessions, each on its own page, seed and pair of models (issue 21: under load, the same numbers)
# ------------------------------------------------------------------------------------------------

#: The shared models of the 8-session test: (architecture, seed); three architectures.
MODELS_8 = (("resnet8", 0), ("resnet8", 1), ("wrn_16_1", 2), ("resnet14", 3))
DIGITS = tuple(str(i) for i in range(10))


def cached_arch_model(arch: str, seed: int) -> Entry:
    """Like :func:`cached_model` for any zoo architecture (digits: 10 classes, one input channel)."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=10, in_chans=1)
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 1, 32, 32))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return Entry(model, threading.Lock())


def figure_json(fig: Any) -> str:
    """A plotly figure as the JSON the browser receives (what a user sees, byte for byte)."""
    return fig.to_json()


@dataclass(frozen=True)
class Session:
    """One browser session: its page, its batch seed and its two models (A, B) with a layer of each."""

    page: str
    seed: int
    a: Entry
    b: Entry

    @property
    def layers(self) -> tuple[str, str]:
        from tffd_viz.models import default_taps

        ta, tb = default_taps(self.a.model), default_taps(self.b.model)
        return ta[self.seed % len(ta)], tb[self.seed % len(tb)]


def _page_overview(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.features import prediction_summary
    from tffd_viz.plots import confusion_figure

    out = {}
    for key, e in (("A", s.a), ("B", s.b)):
        summary = locked_call([e], prediction_summary, e.model, images, labels, 10)
        out[key] = summary
        out[f"fig {key}"] = figure_json(
            confusion_figure(summary["confusion"].numpy(), list(DIGITS), normalize=True)
        )
    return out


def _page_losses(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.plots import grad_share_figure, terms_bar_figure

    reports = {
        k: locked_call([e], tffd_terms_on_batch, e.model, images, labels) for k, e in (("A", s.a), ("B", s.b))
    }
    share = locked_call([s.a], gradient_norm_share, s.a.model, images[:8], labels[:8], 8e-4, 5e-4)
    return {
        "reports": reports,
        "share": share,
        "terms fig": figure_json(
            terms_bar_figure(
                {k: {"intra": r.intra, "inter": r.inter} for k, r in reports.items()}, log_y=True
            )
        ),
        "share fig": figure_json(grad_share_figure(share["norms"], share["terms"], share["groups"])),
    }


def _page_ranking(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.plots import saliency_bars_figure

    la, lb = s.layers
    ra = locked_call([s.a], lambda: tap_rankings(s.a.model, "tffd", images=images, taps=[la])[la])
    rb = locked_call([s.b], lambda: tap_rankings(s.b.model, "tffd", images=images, taps=[lb])[lb])
    scores = locked_call(
        [s.b], lambda: channel_scores("taylor", model=s.b.model, images=images, labels=labels, tap=lb)
    )
    return {
        "A": ra,
        "B": rb,
        "taylor B": scores,
        "fig": figure_json(saliency_bars_figure({"A": ra.scores}, tap=la)),
    }


def _page_cka(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.plots import cka_grid_figure
    from tffd_viz.similarity import layer_cka_matrices

    result = locked_call([s.a, s.b], layer_cka_matrices, s.a.model, s.b.model, images)
    panels = {"A vs A": result["AvA"], "B vs B": result["BvB"], "A vs B": result["AvB"]}
    return {"panels": panels, "fig": figure_json(cka_grid_figure(panels))}


def _page_similarity(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.plots import alignment_figure, cosine_matrix_figure
    from tffd_viz.similarity import channel_similarity_views, inter_layer_alignments

    la, _ = s.layers
    view = locked_call([s.a], channel_similarity_views, s.a.model, images, la)
    align = locked_call([s.b], inter_layer_alignments, s.b.model, images)
    return {
        "view": view,
        "align": align,
        "cosine fig": figure_json(cosine_matrix_figure(view["cosine"], order=view["order"])),
        "align fig": figure_json(alignment_figure({"B": align})),
    }


def _page_feature_maps(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.plots import feature_maps_figure

    _, lb = s.layers
    ranking = locked_call([s.b], lambda: tap_rankings(s.b.model, "tffd", images=images, taps=[lb])[lb])
    maps = locked_call([s.b], extract_features, s.b.model, images, [lb])[lb][s.seed % len(images)]
    return {
        "order": ranking.order,
        "maps": maps,
        "fig": figure_json(feature_maps_figure(maps.numpy(), ranking.order, max_channels=16, cols=4)),
    }


def _page_embeddings(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.embeddings import layer_embedding, layer_probe_table
    from tffd_viz.plots import embedding_figure, probe_accuracy_figure

    la, _ = s.layers
    coords, axes = locked_call(
        [s.a], lambda: layer_embedding(s.a.model, images, la, method="pca", seed=s.seed)
    )
    table = locked_call([s.b], lambda: layer_probe_table(s.b.model, images, labels, seed=s.seed))
    return {
        "coords": coords,
        "table": table,
        "emb fig": figure_json(
            embedding_figure(coords, labels.numpy(), class_names=list(DIGITS), axis_names=tuple(axes))
        ),
        "probe fig": figure_json(probe_accuracy_figure({"B": table})),
    }


def _page_attribution(s: Session, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    from tffd_viz.attribution import selected_attribution_maps
    from tffd_viz.plots import attribution_figure

    la, _ = s.layers
    indices = [0, 3, 5]
    cam = locked_call(
        [s.a], lambda: selected_attribution_maps(s.a.model, images, indices, method="gradcam", layer=la)
    )
    ig = locked_call(
        [s.b],
        lambda: selected_attribution_maps(
            s.b.model, images, indices, method="integrated_gradients", n_steps=4
        ),
    )
    shown = images[indices]
    images01 = ((shown - shown.min()) / (shown.max() - shown.min())).numpy()
    return {"gradcam": cam, "ig": ig, "fig": figure_json(attribution_figure(images01, {"A": cam, "B": ig}))}


#: Page -> what a session on that page computes and draws (the page's library calls and figures).
PAGES_8: dict[str, Callable[[Session, torch.Tensor, torch.Tensor], dict[str, Any]]] = {
    "overview": _page_overview,
    "losses": _page_losses,
    "ranking": _page_ranking,
    "cka": _page_cka,
    "similarity": _page_similarity,
    "feature_maps": _page_feature_maps,
    "embeddings": _page_embeddings,
    "attribution": _page_attribution,
}


def session_view(s: Session) -> dict[str, Any]:
    """Everything session ``s`` shows: its page's numbers and figures on its own sample batch."""
    images, labels = sample_batch("digits", "test", n=24, seed=s.seed)
    return PAGES_8[s.page](s, images, labels)


def test_eight_sessions_on_different_pages_seeds_and_models_see_what_each_sees_alone():
    entries = [cached_arch_model(arch, seed) for arch, seed in MODELS_8]
    before = [snapshot(e.model) for e in entries]
    sessions = [Session(page, 10 + i, entries[i % 4], entries[(i + 1) % 4]) for i, page in enumerate(PAGES_8)]
    assert len(sessions) == 8
    alone = [session_view(s) for s in sessions]  # each session run by itself, one after the other

    results: dict[int, dict[str, Any]] = {}

    def run(i: int) -> None:
        results[i] = session_view(sessions[i])

    at_once(run, len(sessions), join_s=300)
    for i, s in enumerate(sessions):
        assert_identical(results[i], alone[i], f"session {i} ({s.page}, seed {s.seed})")
    for e, snap in zip(entries, before):
        assert_unchanged(e.model, snap)
    # the models differ, so what the sessions compare is not the same thing over and over (not vacuous)
    assert alone[0]["fig A"] != alone[0]["fig B"]
    assert not np.array_equal(
        as_comparable(alone[0]["A"]["confusion"]), as_comparable(alone[0]["B"]["confusion"])
    )


def test_two_sessions_run_whatifs_at_once_without_interfering():
    """Two sessions run what-ifs (tffd_viz.whatif) from one shared model at once while a third keeps using it:
    each what-if deep-copies the model under its lock (as ``_cache.call`` does) and trains only its copies, so
    each gets the rows of a sequential run and the shared model is untouched."""
    from tffd_viz.data import load_dataset
    from tffd_viz.whatif import WhatIf, WhatIfConfig

    shared = cached_model(0)
    before = snapshot(shared.model)
    bundle = load_dataset("digits")
    images, _ = sample_batch("digits", "test", n=16, seed=0)
    reference = predict_logits(shared.model, images)
    configs = [
        WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0, steps=2, heldout_n=32),
        WhatIfConfig(lambda_intra=0.0, lambda_inter=0.5, steps=2, heldout_n=32, seed=3),
    ]

    def whatif(cfg: WhatIfConfig) -> tuple[list, dict]:
        w = locked_call([shared], WhatIf, shared.model, bundle, cfg)
        return list(w.run()), w.result()["end"]

    expected = [whatif(cfg) for cfg in configs]
    results: dict[int, Any] = {}
    logits: list[torch.Tensor] = []

    def run(i: int) -> None:
        if i < len(configs):
            results[i] = whatif(configs[i])
        else:
            logits.extend(locked_call([shared], predict_logits, shared.model, images) for _ in range(5))

    at_once(run, 3, join_s=300)
    for i in range(len(configs)):
        assert_identical(results[i], expected[i], f"what-if session {i}")
    assert expected[0][0] != expected[1][0]  # the sessions' choices differ, so must their rows
    assert len(logits) == 5 and all(torch.equal(o, reference) for o in logits)
    assert_unchanged(shared.model, before)
