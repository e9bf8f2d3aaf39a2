"""Tf-FD loss terms of a trained model on a sample batch, and the lambda / layer what-if.

Two questions the app asks of a model and a batch of images:

* **How large is each term?** :func:`tffd_terms_on_batch` runs one forward pass (eval mode, no
  grad) and returns a :class:`TermsReport` with the cross-entropy, every intra-layer term (one per
  tap) and every inter-layer term (``"a->b"``), computed by :func:`tffd_viz.losses.tffd_terms`.
  :meth:`TermsReport.weighted` then weighs them for *any* ``lambda_intra`` / ``lambda_inter`` and
  any subset of stages and pairs without a new forward pass.
* **How hard does each term pull on each stage?** :func:`gradient_norm_share` returns the L2 norm
  of the gradient that the CE and every weighted Tf-FD term send to the parameters of each stage
  (``stem``, the tap modules, ``head``), so one sees whether a lambda makes a term negligible or
  dominant next to the cross-entropy.

Neither function changes the model: a model in train mode is switched to eval mode for the pass
and switched back (module by module) afterwards, and gradients are taken with
:func:`torch.autograd.grad` with respect to detached aliases of the parameters through
:func:`torch.func.functional_call`, so no ``.grad`` is ever written and BatchNorm running
statistics are not updated.

The weighting follows :func:`tffd_viz.losses.weighted_total` (the reference Tf-FD objective)::

    total = warm * (lambda_intra * reduce(intra terms) + lambda_inter * reduce(inter terms))

so with the paper's ``reduction="mean"`` each intra term carries the weight
``warm * lambda_intra / n_intra`` and each inter term ``warm * lambda_inter / n_inter``.
"""

from __future__ import annotations

import numbers
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tffd_viz.errors import DataError, TapError, TffdVizError
from tffd_viz.features import eval_mode, hooked_forward, model_device
from tffd_viz.losses import reduction_fn, tffd_terms, weighted_total
from tffd_viz.models import extract_taps, resolve_taps
from tffd_viz.recipes import PAPER_LAMBDA_INTER, PAPER_LAMBDA_INTRA
from tffd_viz.sweeps import sweep_table, sweep_value_columns
from tffd_viz.types import StageKey

__all__ = [
    "TermsReport",
    "gradient_norm_share",
    "stage_parameter_groups",
    "sweep_table",  # re-exported from tffd_viz.sweeps (the sweep tables' one reader)
    "sweep_value_columns",  # re-exported from tffd_viz.sweeps
    "term_weights",
    "tffd_terms_on_batch",
]

PairKey = str | tuple[StageKey, StageKey]

STEM = "stem"
"""Group of the parameters that run before the first tap."""

HEAD = "head"
"""Group of the parameters that run after the last tap."""

BETWEEN_PREFIX = "after:"
"""Prefix of a group of parameters that run between two taps (``"after:layer1"``), rare in the zoo."""


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------


def _checked_batch(model: nn.Module, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(images, Tensor) or images.dim() != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a tensor of shape (N, C, H, W), got {shape}")
    labels = torch.as_tensor(labels)
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"labels must have shape (N,) = ({images.shape[0]},) to match images {tuple(images.shape)}, "
            f"got {tuple(labels.shape)}"
        )
    if images.shape[0] < 1:
        raise DataError(f"the batch is empty: images {tuple(images.shape)}")
    device = model_device(model)
    return images.to(device), labels.to(device=device, dtype=torch.long)


def term_weights(
    names: Sequence[str], lam: float, reduction: str = "mean", warm: float = 1.0
) -> dict[str, float]:
    """Weight that each term of one family carries in the Tf-FD total.

    The reductions of :data:`tffd_viz.losses.REDUCTIONS` are linear, so the weight of term ``k``
    is ``warm * lam * reduce(one_hot(k))``: ``warm * lam / n`` for ``"mean"`` and ``warm * lam``
    for ``"sum"``.

    Parameters
    ----------
    names : sequence of str
        The ``n`` terms of the family (intra stage names or inter ``"a->b"`` keys).
    lam : float
        ``lambda_intra`` or ``lambda_inter``.
    reduction : {"mean", "sum"}
    warm : float
        Warm-up factor (:func:`tffd_viz.losses.warmup_weight`).

    Returns
    -------
    dict[str, float]
        Term name -> weight.
    """
    reduce = reduction_fn(reduction)
    n = len(names)
    weights: dict[str, float] = {}
    for k, name in enumerate(names):
        one_hot = [torch.tensor(1.0 if i == k else 0.0, dtype=torch.float64) for i in range(n)]
        weights[name] = float(warm) * float(lam) * float(reduce(one_hot))
    return weights


def _select(
    keys: Sequence[str], picked: Sequence[Any] | None, resolve: Callable[[Any], str], what: str
) -> list[str]:
    if picked is None:
        return list(keys)
    if isinstance(picked, str | int):
        raise TffdVizError(f"{what} must be a list, got {picked!r}")
    out: list[str] = []
    for key in picked:
        name = resolve(key)
        if name not in keys:
            raise TffdVizError(f"{what} {key!r} was not computed on this batch; available: {list(keys)}")
        if name not in out:
            out.append(name)
    return out


# --------------------------------------------------------------------------------------------------
# term values on a batch
# --------------------------------------------------------------------------------------------------


@dataclass
class TermsReport:
    """Cross-entropy and unweighted Tf-FD terms of one model on one batch (plain floats).

    Attributes
    ----------
    taps : list of str
        Stage names, shallow to deep, that the terms were computed on.
    ce : float
        Mean cross-entropy of the batch.
    intra : dict[str, float]
        Tap name -> unweighted intra-layer term, in stage order.
    inter : dict[str, float]
        ``"a->b"`` -> unweighted inter-layer term, in pair order.
    n : int
        Batch size.
    accuracy : float
        Top-1 accuracy (%) of the batch.
    """

    taps: list[str]
    ce: float
    intra: dict[str, float] = field(default_factory=dict)
    inter: dict[str, float] = field(default_factory=dict)
    n: int = 0
    accuracy: float = float("nan")

    def _stage_name(self, key: StageKey) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, bool) or not isinstance(key, numbers.Integral):
            raise TffdVizError(f"a stage is a tap name or index, got {key!r}")
        if not 0 <= int(key) < len(self.taps):
            raise TffdVizError(f"stage index {key} out of range for taps {self.taps}")
        return self.taps[int(key)]

    def _pair_name(self, key: PairKey) -> str:
        if isinstance(key, str):
            return key
        if isinstance(key, Sequence) and len(key) == 2:
            return f"{self._stage_name(key[0])}->{self._stage_name(key[1])}"
        raise TffdVizError(f"a pair is 'a->b' or (a, b), got {key!r}")

    def selected(
        self, stages: Sequence[StageKey] | None = None, pairs: Sequence[PairKey] | None = None
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Return the ``(intra, inter)`` terms restricted to ``stages`` and ``pairs``.

        Parameters
        ----------
        stages : sequence of tap names or indices into :attr:`taps`, optional
            Default: every computed intra term. Empty: none.
        pairs : sequence of ``"a->b"`` or ``(a, b)`` (names or indices), optional
            Default: every computed inter term. Empty: none.

        Raises
        ------
        TffdVizError
            A stage or pair that was not computed on this batch (the message lists those that were).
        """
        intra_keys = _select(list(self.intra), stages, self._stage_name, "stage")
        inter_keys = _select(list(self.inter), pairs, self._pair_name, "pair")
        return {k: self.intra[k] for k in intra_keys}, {k: self.inter[k] for k in inter_keys}

    def weighted(
        self,
        lambda_intra: float,
        lambda_inter: float,
        stages: Sequence[StageKey] | None = None,
        pairs: Sequence[PairKey] | None = None,
        reduction: str = "mean",
        warm: float = 1.0,
    ) -> dict[str, float]:
        """Weigh the already computed terms (no new forward pass).

        Parameters
        ----------
        lambda_intra, lambda_inter : float
            Weights of the two families.
        stages, pairs : optional
            Subset of terms, see :meth:`selected`.
        reduction : {"mean", "sum"}, default "mean"
            How each family is combined (the paper's is ``"mean"``).
        warm : float, default 1.0
            Warm-up factor multiplying both families (not the CE).

        Returns
        -------
        dict[str, float]
            ``"intra"`` = ``warm * lambda_intra * reduce(intra)``, ``"inter"`` likewise,
            ``"tffd"`` = their sum, ``"ce"`` and ``"ce+tffd"``. An empty family gives 0.
        """
        intra, inter = self.selected(stages, pairs)
        reduction_fn(reduction)
        as_t = {k: torch.tensor(v, dtype=torch.float64) for k, v in intra.items()}
        as_e = {k: torch.tensor(v, dtype=torch.float64) for k, v in inter.items()}
        ref = torch.zeros((), dtype=torch.float64)
        w_intra = float(warm) * float(weighted_total(as_t, {}, lambda_intra, 0.0, reduction, reference=ref))
        w_inter = float(warm) * float(weighted_total({}, as_e, 0.0, lambda_inter, reduction, reference=ref))
        total = w_intra + w_inter
        return {"ce": self.ce, "intra": w_intra, "inter": w_inter, "tffd": total, "ce+tffd": self.ce + total}

    def rows(
        self,
        lambda_intra: float = PAPER_LAMBDA_INTRA,
        lambda_inter: float = PAPER_LAMBDA_INTER,
        stages: Sequence[StageKey] | None = None,
        pairs: Sequence[PairKey] | None = None,
        reduction: str = "mean",
        warm: float = 1.0,
    ) -> list[dict[str, Any]]:
        """Table rows: one per term, with its unweighted value and its weighted contribution.

        Returns
        -------
        list of dict
            ``{"term", "kind", "value", "weighted"}`` with kind ``"ce"`` (weighted = value),
            ``"intra"`` or ``"inter"`` (weighted = :func:`term_weights` x value). The weighted
            intra and inter rows sum to ``weighted(...)["tffd"]``.
        """
        intra, inter = self.selected(stages, pairs)
        wi = term_weights(list(intra), lambda_intra, reduction, warm)
        we = term_weights(list(inter), lambda_inter, reduction, warm)
        rows: list[dict[str, Any]] = [{"term": "ce", "kind": "ce", "value": self.ce, "weighted": self.ce}]
        rows += [{"term": k, "kind": "intra", "value": v, "weighted": wi[k] * v} for k, v in intra.items()]
        rows += [{"term": k, "kind": "inter", "value": v, "weighted": we[k] * v} for k, v in inter.items()]
        return rows


def _check_finite_pass(logits: Tensor, feats: Mapping[str, Tensor], input_shape: tuple[int, ...]) -> None:
    """Raise naming the taps (then the logits) of a forward pass that hold NaN or Inf."""
    for name, f in feats.items():
        bad = int((~torch.isfinite(f)).sum()) if f.is_floating_point() else 0
        if bad:
            raise TapError(
                f"features of tap {name!r} (shape {tuple(f.shape)}) contain {bad} NaN/Inf values on "
                f"images of shape {input_shape}: the model's weights or the images are not finite"
            )
    bad = int((~torch.isfinite(logits)).sum())
    if bad:
        raise TffdVizError(
            f"the model's logits (shape {tuple(logits.shape)}) contain {bad} NaN/Inf values on "
            f"images of shape {input_shape}: weights after the tapped layers are not finite"
        )


def tffd_terms_on_batch(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    taps: Sequence[str] | None = None,
    stages: Sequence[StageKey] | None = None,
    pairs: Sequence[tuple[StageKey, StageKey]] | None = None,
) -> TermsReport:
    """CE and every unweighted Tf-FD term of ``model`` on one batch, from one forward pass.

    Parameters
    ----------
    model : nn.Module
        Returns logits ``(N, K)``; run in eval mode (a model in train mode is switched for the pass
        and restored), under ``no_grad``.
    images : Tensor, shape (N, C, H, W)
        Normalised input batch (moved to the model's device).
    labels : Tensor, shape (N,)
        Class indices.
    taps : list of str, optional
        Stage module names, shallow to deep; default the model's default taps.
    stages, pairs : optional
        Which intra / inter terms to compute, as in :func:`tffd_viz.losses.tffd_terms`
        (indices or tap names). Default: every stage and every ``i < j`` pair.

    Returns
    -------
    TermsReport

    Raises
    ------
    DataError
        Images not 4-D, or labels not ``(N,)``.
    TapError
        Unknown taps, or a tap whose features hold NaN/Inf (named; TffdVizError for non-finite
        logits); TffdVizError for a bad stage or pair. Terms that overflow float32 (finite
        activations near 1e30) are recomputed in float64 instead.
    """
    images, labels = _checked_batch(model, images, labels)
    names = resolve_taps(model, taps)
    with eval_mode(model), torch.no_grad():
        logits, feats = extract_taps(model, images, names, return_logits=True)
        if logits.dim() != 2 or logits.shape[0] != labels.shape[0]:
            raise TapError(
                f"model output must be logits (N, K) with N = {labels.shape[0]}, got {tuple(logits.shape)}"
            )
        _check_finite_pass(logits, feats, tuple(images.shape))
        ce = F.cross_entropy(logits, labels)
        intra, inter = tffd_terms(feats, stages=stages, pairs=pairs)
        if not all(bool(torch.isfinite(v)) for v in [*intra.values(), *inter.values()]):
            # finite float32 features this large (near 1e30) overflow a float32 mean of squares
            intra, inter = tffd_terms({k: v.double() for k, v in feats.items()}, stages=stages, pairs=pairs)
        acc = (logits.argmax(dim=1) == labels).double().mean() * 100.0
    return TermsReport(
        taps=list(names),
        ce=float(ce),
        intra={k: float(v) for k, v in intra.items()},
        inter={k: float(v) for k, v in inter.items()},
        n=int(labels.shape[0]),
        accuracy=float(acc),
    )


# --------------------------------------------------------------------------------------------------
# parameter groups and gradient norms
# --------------------------------------------------------------------------------------------------


def _owning_tap(module_name: str, taps: Sequence[str]) -> str | None:
    """The most specific tap whose module is ``module_name`` or one of its ancestors."""
    best: str | None = None
    for tap in taps:
        if (module_name == tap or module_name.startswith(tap + ".")) and (
            best is None or len(tap) > len(best)
        ):
            best = tap
    return best


def stage_parameter_groups(
    model: nn.Module, images: Tensor, taps: Sequence[str] | None = None
) -> OrderedDict[str, list[str]]:
    """Split the parameters of ``model`` into stages: ``stem``, one group per tap, ``head``.

    A parameter belongs to the tap whose module contains it (the most specific tap when taps are
    nested). Every other module's own parameters are placed by when the module first starts
    running on a forward pass of ``images[:1]`` (eval mode, ``no_grad``): before the first tap
    starts -> ``"stem"``; after the last tap has finished -> ``"head"``; otherwise ->
    ``"after:<tap>"`` for the last tap finished before it (none in the zoo models). Parameters of
    modules that never run get no gradient and are left out. Empty groups are left out.

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C, H, W)
        Only the first image is used.
    taps : list of str, optional
        Default: the model's default taps.

    Returns
    -------
    OrderedDict[str, list[str]]
        Group name -> parameter names (``model.named_parameters()``), groups in forward order.
    """
    names = resolve_taps(model, taps)
    modules = dict(model.named_modules())
    clock = [0]
    starts: dict[str, int] = {}
    ends: dict[str, int] = {}

    def pre_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inputs: object) -> None:
            clock[0] += 1
            starts.setdefault(name, clock[0])

        return hook

    def post_hook(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _inputs: object, _output: object) -> None:
            clock[0] += 1
            ends[name] = clock[0]

        return hook

    owned = {
        mname: [f"{mname}.{p}" if mname else p for p, _ in mod.named_parameters(recurse=False)]
        for mname, mod in modules.items()
    }
    watched = [m for m, ps in owned.items() if ps and _owning_tap(m, names) is None]
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[0] < 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise DataError(f"images must be a non-empty tensor of shape (N, C, H, W), got {shape}")
    x = images[:1].to(model_device(model))
    handles = [modules[m].register_forward_pre_hook(pre_hook(m)) for m in watched]
    handles += [modules[t].register_forward_pre_hook(pre_hook(t)) for t in names]
    handles += [modules[t].register_forward_hook(post_hook(t)) for t in names]
    hooked_forward(model, x, handles)
    missing = [t for t in names if t not in starts]
    if missing:
        raise TapError(f"tap(s) {missing} did not run on an input of shape {tuple(x.shape)}")

    tap_order = sorted(names, key=lambda t: starts[t])
    first_start = starts[tap_order[0]]
    last_end = max(ends[t] for t in names)
    buckets: dict[str, list[str]] = {}
    unique = {id(p): n for n, p in model.named_parameters()}
    canonical = {n for n in unique.values()}
    for mname, pnames in owned.items():
        pnames = [p for p in pnames if p in canonical]
        if not pnames:
            continue
        tap = _owning_tap(mname, names)
        if tap is not None:
            group = tap
        elif mname not in starts:
            continue
        elif starts[mname] < first_start:
            group = STEM
        elif starts[mname] > last_end:
            group = HEAD
        else:
            done = [t for t in tap_order if ends[t] < starts[mname]]
            group = BETWEEN_PREFIX + done[-1] if done else STEM
        buckets.setdefault(group, []).extend(pnames)
    order = [STEM]
    for t in tap_order:
        order += [t, BETWEEN_PREFIX + t]
    order.append(HEAD)
    return OrderedDict((g, buckets[g]) for g in order if buckets.get(g))


class _TapRunner(nn.Module):
    """Wrapper whose forward is one :func:`extract_taps` pass, so functional_call can swap parameters."""

    def __init__(self, model: nn.Module, taps: list[str]):
        super().__init__()
        self.model = model
        self.taps = taps

    def forward(self, x: Tensor) -> tuple[Tensor, OrderedDict[str, Tensor]]:
        return extract_taps(self.model, x, self.taps, return_logits=True)


def gradient_norm_share(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    lambda_intra: float,
    lambda_inter: float,
    taps: Sequence[str] | None = None,
    stages: Sequence[StageKey] | None = None,
    pairs: Sequence[tuple[StageKey, StageKey]] | None = None,
    warm: float = 1.0,
    reduction: str = "mean",
) -> dict[str, Any]:
    """L2 norm of the gradient each loss term sends to each stage's parameters.

    The terms are the CE and every *weighted* Tf-FD term: intra term ``k`` times
    ``warm * lambda_intra / n_intra`` (``"mean"`` reduction, as in the Tf-FD objective; see
    :func:`term_weights`), inter terms likewise with ``lambda_inter``. The gradient of each term is
    taken separately with ``torch.autograd.grad(..., retain_graph=True, allow_unused=True)``
    with respect to detached aliases of the parameters (through :func:`torch.func.functional_call`),
    so the model's parameters, buffers, ``.grad`` and ``requires_grad`` flags are untouched; the
    pass runs in eval mode (BatchNorm uses and keeps its running statistics).

    Parameters
    ----------
    model : nn.Module
    images : Tensor, shape (N, C, H, W)
    labels : Tensor, shape (N,)
    lambda_intra, lambda_inter : float
    taps, stages, pairs : optional
        As in :func:`tffd_terms_on_batch`.
    warm : float, default 1.0
        Warm-up factor multiplying the Tf-FD terms (not the CE).
    reduction : {"mean", "sum"}, default "mean"

    Returns
    -------
    dict
        ``"terms"``: list of T term names (``"ce"``, intra tap names, inter ``"a->b"``);
        ``"kinds"``: their kinds (``"ce"``, ``"intra"``, ``"inter"``); ``"values"``: float64 array
        (T,) of the weighted term values; ``"groups"``: list of G parameter groups (see
        :func:`stage_parameter_groups`); ``"group_sizes"``: parameters per group;
        ``"norms"``: float64 array (T, G), ``norms[t, g] = ||d term_t / d params_g||_2``;
        ``"share"``: ``norms`` divided by its column sums (each column sums to 1; a column of
        zeros stays 0).
    """
    images, labels = _checked_batch(model, images, labels)
    names = resolve_taps(model, taps)
    reduction_fn(reduction)
    groups = stage_parameter_groups(model, images, names)
    params = OrderedDict((f"model.{n}", p.detach().requires_grad_(True)) for n, p in model.named_parameters())
    runner = _TapRunner(model, names)
    with eval_mode(model), torch.enable_grad():
        logits, feats = torch.func.functional_call(runner, params, (images,))
        ce = F.cross_entropy(logits, labels)
        intra, inter = tffd_terms(feats, stages=stages, pairs=pairs)
        wi = term_weights(list(intra), lambda_intra, reduction, warm)
        we = term_weights(list(inter), lambda_inter, reduction, warm)
        terms: list[tuple[str, str, Tensor]] = [("ce", "ce", ce)]
        terms += [(k, "intra", wi[k] * v) for k, v in intra.items()]
        terms += [(k, "inter", we[k] * v) for k, v in inter.items()]
        group_names = list(groups)
        flat = [params[f"model.{p}"] for g in group_names for p in groups[g]]
        bounds = np.cumsum([0] + [len(groups[g]) for g in group_names])
        norms = np.zeros((len(terms), len(group_names)), dtype=np.float64)
        for t, (_, _, value) in enumerate(terms):
            if not value.requires_grad:
                continue
            grads = torch.autograd.grad(value, flat, retain_graph=True, allow_unused=True)
            sq = [0.0 if g is None else float(g.detach().double().pow(2).sum()) for g in grads]
            for j in range(len(group_names)):
                norms[t, j] = float(np.sqrt(sum(sq[bounds[j] : bounds[j + 1]])))
    col = norms.sum(axis=0, keepdims=True)
    share = np.divide(norms, col, out=np.zeros_like(norms), where=col > 0)
    return {
        "terms": [name for name, _, _ in terms],
        "kinds": [kind for _, kind, _ in terms],
        "values": np.array([float(v.detach()) for _, _, v in terms], dtype=np.float64),
        "groups": group_names,
        "group_sizes": [
            int(sum(dict(model.named_parameters())[p].numel() for p in groups[g])) for g in group_names
        ],
        "norms": norms,
        "share": share,
    }
