"""Minibatch CKA: linear CKA between every pair of layers of two models, accumulated over minibatches.

:class:`MinibatchCKA` sums the unbiased HSIC_1 of Song et al. (2012) over minibatches (Nguyen, Raghu and
Kornblith 2021, "Do wide and deep networks learn the same things?") for every pair of layers, with memory
independent of the number of samples. It only does math on the features it is given; running models over
images is :func:`tffd_viz.similarity.layers.layer_cka_matrices`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from tffd_viz.errors import TffdVizError
from tffd_viz.similarity.cka import (
    _CONSTANT_RTOL,
    MIN_SAMPLES,
    _as_float64_matrix,
    _as_tensor,
    _centered_features,
    _centered_gram,
    _warn_constant,
)
from tffd_viz.types import ArrayLike

__all__ = ["MinibatchCKA"]


class MinibatchCKA:
    """Linear CKA between every layer of model A and every layer of model B, over minibatches.

    For each minibatch of ``m`` samples and each layer, the linear gram ``K = X X^T`` is
    formed in float64 from the minibatch-centred features, and the unbiased estimator
    ``HSIC_1(K, L) = <U(K), U(L)> / (m (m - 3))`` (Song et al. 2012) is summed over
    minibatches for every pair (a_i, b_j) and for (a_i, a_i), (b_j, b_j). Then
    ``CKA_ij = sum HSIC_1(K_ai, L_bj) / sqrt(sum HSIC_1(K_ai, K_ai) sum HSIC_1(L_bj, L_bj))``
    (Nguyen, Raghu and Kornblith 2021). Every minibatch counts equally. Memory is
    ``O(layers * m^2)`` per update and ``O(n_a n_b)`` in between, independent of the number
    of samples. Centring does not change HSIC_1 but keeps float32 features with a large
    offset precise.

    A layer that is constant over every minibatch seen gets CKA 0.0 with every layer (and
    a :class:`ConstantFeatureWarning` naming it) instead of NaN.

    Parameters
    ----------
    n_a, n_b : int
        Number of layers (taps) of model A and model B. For one model against itself use
        ``MinibatchCKA(n, n)`` and ``update(feats, feats)``.

    Attributes
    ----------
    n_batches : int
        Minibatches accumulated since construction or :meth:`reset`.
    n_samples : int
        Samples accumulated.
    names_a, names_b : list of str or None
        Tap names, when :meth:`update` got dicts.
    """

    def __init__(self, n_a: int, n_b: int) -> None:
        for name, value in (("n_a", n_a), ("n_b", n_b)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TffdVizError(
                    f"MinibatchCKA: {name} must be a positive int (number of layers), got {value!r}"
                )
        self.n_a = n_a
        self.n_b = n_b
        self.reset()

    def reset(self) -> None:
        """Forget every accumulated minibatch."""
        self.n_batches: int = 0
        self.n_samples: int = 0
        self.names_a: list[str] | None = None
        self.names_b: list[str] | None = None
        self._hsic_ab: torch.Tensor | None = None  # (n_a, n_b) float64
        self._hsic_aa: torch.Tensor | None = None  # (n_a,)
        self._hsic_bb: torch.Tensor | None = None  # (n_b,)
        self._varies_a: torch.Tensor | None = None  # (n_a,) bool: non-constant in some minibatch
        self._varies_b: torch.Tensor | None = None

    @property
    def device(self) -> torch.device | None:
        """Device of the accumulators (that of the first update), or None before it."""
        return None if self._hsic_ab is None else self._hsic_ab.device

    def _feature_list(
        self, feats: Sequence[ArrayLike] | Mapping[str, ArrayLike], side: str, expected: int
    ) -> tuple[list[ArrayLike], list[str] | None]:
        if isinstance(feats, Mapping):
            names: list[str] | None = [str(k) for k in feats]
            items = list(feats.values())
        elif isinstance(feats, (torch.Tensor, np.ndarray)):
            raise TffdVizError(
                f"MinibatchCKA.update: feats_{side} must be a list (or dict) of per-layer tensors, got one "
                f"tensor of shape {tuple(feats.shape)}"
            )
        else:
            names, items = None, list(feats)
        if len(items) != expected:
            raise TffdVizError(
                f"MinibatchCKA.update: feats_{side} has {len(items)} layers, expected n_{side} = {expected}"
            )
        return items, names

    def _u_centered_grams(
        self, items: list[ArrayLike], side: str, device: torch.device | None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Return flattened U-centred grams ``(layers, m*m)``, a non-constant flag per layer and ``m``."""
        grams, raw_norms, centred_norms, mats = [], [], [], []
        m: int | None = None
        for i, item in enumerate(items):
            f = _as_tensor(item, f"feats_{side}[{i}]")
            xm = _as_float64_matrix(f, f"feats_{side}[{i}]", device=device, check_finite=False)
            if m is None:
                m = xm.shape[0]
            elif xm.shape[0] != m:
                raise TffdVizError(
                    f"MinibatchCKA.update: feats_{side}[{i}] has {xm.shape[0]} samples (shape "
                    f"{tuple(f.shape)}) but feats_{side}[0] has {m}"
                )
            device = xm.device
            xc = _centered_features(xm)
            mats.append((xm, tuple(f.shape)))
            raw_norms.append(torch.linalg.vector_norm(xm))
            centred_norms.append(torch.linalg.vector_norm(xc))
            grams.append(xc @ xc.T)
        assert m is not None
        if m < MIN_SAMPLES:
            raise TffdVizError(
                f"MinibatchCKA.update: minibatch size {m} is below {MIN_SAMPLES} (HSIC_1 needs m >= 4)"
            )
        stacked = torch.stack(grams)
        # One reduction checks every layer: NaN or infinity in a layer's features makes its gram non-finite.
        if not bool(torch.isfinite(stacked).all()):
            for i, (xm, shape) in enumerate(mats):
                if not bool(torch.isfinite(xm).all()):
                    raise TffdVizError(
                        f"feats_{side}[{i}]: features of shape {shape} contain NaN or infinity"
                    )
            raise TffdVizError(
                f"MinibatchCKA.update: the grams of feats_{side} overflow (features too large)"
            )
        # Constant layers (zero up to the rounding of the mean subtraction), kept as a tensor: no sync per
        # layer.
        varies = torch.stack(centred_norms) > _CONSTANT_RTOL * torch.stack(raw_norms)
        u = _centered_gram(stacked, unbiased=True).reshape(len(grams), m * m)
        return u, varies, m

    @staticmethod
    def _check_ids(ids_a: ArrayLike | None, ids_b: ArrayLike | None, m: int) -> None:
        checked = []
        for side, ids in (("a", ids_a), ("b", ids_b)):
            if ids is None:
                continue
            t = torch.as_tensor(np.asarray(ids) if not isinstance(ids, torch.Tensor) else ids).detach().cpu()
            if t.dim() != 1 or t.shape[0] != m or t.is_floating_point() or t.is_complex():
                raise TffdVizError(
                    f"MinibatchCKA.update: ids_{side} must be a 1-D integer array of the {m} minibatch "
                    f"sample ids, got dtype {t.dtype} shape {tuple(t.shape)}"
                )
            checked.append(t.to(torch.int64))
        if len(checked) == 2 and not torch.equal(checked[0], checked[1]):
            bad = int(torch.nonzero(checked[0] != checked[1])[0])
            raise TffdVizError(
                f"MinibatchCKA.update: the two models saw different samples: position {bad} has id "
                f"{int(checked[0][bad])} in ids_a but {int(checked[1][bad])} in ids_b"
            )

    def update(
        self,
        feats_a: Sequence[ArrayLike] | Mapping[str, ArrayLike],
        feats_b: Sequence[ArrayLike] | Mapping[str, ArrayLike],
        ids_a: ArrayLike | None = None,
        ids_b: ArrayLike | None = None,
    ) -> None:
        """Accumulate one minibatch.

        Parameters
        ----------
        feats_a : list of Tensor or dict str -> Tensor, n_a entries, each shape (m, ...)
            Model A's layer features for the minibatch (flattened to ``(m, d)``).
        feats_b : list of Tensor or dict str -> Tensor, n_b entries, each shape (m, ...)
            Model B's features for the same ``m`` samples in the same order (may be
            ``feats_a`` itself; its grams are then reused).
        ids_a, ids_b : 1-D int Tensor or ndarray of length m, optional
            Sample ids; when both are given they must be equal.

        Raises
        ------
        TffdVizError
            Wrong number of layers, differing ``m`` within or between models, ``m < 4``,
            mismatched ids, non-finite features.
        """
        items_a, names_a = self._feature_list(feats_a, "a", self.n_a)
        items_b, names_b = self._feature_list(feats_b, "b", self.n_b)
        device = self.device
        u_a, varies_a, m = self._u_centered_grams(items_a, "a", device)
        if feats_b is feats_a:
            u_b, varies_b, m_b = u_a, varies_a, m
        else:
            u_b, varies_b, m_b = self._u_centered_grams(items_b, "b", u_a.device)
        if m_b != m:
            raise TffdVizError(
                f"MinibatchCKA.update: model A's minibatch has {m} samples but model B's has {m_b}"
            )
        self._check_ids(ids_a, ids_b, m)
        scale = 1.0 / (m * (m - 3))
        hsic_ab = (u_a @ u_b.T) * scale
        hsic_aa = (u_a * u_a).sum(dim=1) * scale
        hsic_bb = hsic_aa if u_b is u_a else (u_b * u_b).sum(dim=1) * scale
        if self._hsic_ab is None:
            self._hsic_ab, self._hsic_aa, self._hsic_bb = hsic_ab, hsic_aa, hsic_bb.clone()
            self._varies_a, self._varies_b = varies_a, varies_b.clone()
        else:
            assert self._hsic_aa is not None and self._hsic_bb is not None
            assert self._varies_a is not None and self._varies_b is not None
            self._hsic_ab += hsic_ab
            self._hsic_aa += hsic_aa
            self._hsic_bb += hsic_bb
            self._varies_a |= varies_a
            self._varies_b |= varies_b
        if names_a is not None:
            self.names_a = names_a
        if names_b is not None:
            self.names_b = names_b
        self.n_batches += 1
        self.n_samples += m

    def _layer_label(self, side: str, i: int) -> str:
        names = self.names_a if side == "a" else self.names_b
        return f"{side}[{i}]" + (f" ({names[i]!r})" if names is not None else "")

    def compute(self) -> torch.Tensor:
        """Return the CKA matrix.

        Returns
        -------
        Tensor, shape (n_a, n_b), float64, on the accumulators' device
            ``CKA[i, j]`` between layer i of model A and layer j of model B; rows/columns of
            constant layers are 0.0 (with a :class:`ConstantFeatureWarning`).

        Raises
        ------
        TffdVizError
            Before the first :meth:`update`.
        """
        if self._hsic_ab is None:
            raise TffdVizError("MinibatchCKA.compute: no minibatch accumulated yet; call update() first")
        assert self._hsic_aa is not None and self._hsic_bb is not None
        assert self._varies_a is not None and self._varies_b is not None
        ok_a = self._varies_a & (self._hsic_aa > 0)
        ok_b = self._varies_b & (self._hsic_bb > 0)
        if not bool(ok_a.all() and ok_b.all()):
            bad = [self._layer_label("a", i) for i in torch.nonzero(~ok_a).flatten().tolist()]
            bad += [self._layer_label("b", j) for j in torch.nonzero(~ok_b).flatten().tolist()]
            _warn_constant("MinibatchCKA.compute", bad)
        norm_a = torch.where(ok_a, self._hsic_aa, torch.ones_like(self._hsic_aa)).sqrt()
        norm_b = torch.where(ok_b, self._hsic_bb, torch.ones_like(self._hsic_bb)).sqrt()
        result = self._hsic_ab / (norm_a[:, None] * norm_b[None, :])
        return torch.where(ok_a[:, None] & ok_b[None, :], result, torch.zeros_like(result))
