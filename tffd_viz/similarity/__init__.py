"""Representation similarity: CKA between layers and cosine similarity between channels.

Two families of measures, pure math on tensors (torch + numpy only) except in :mod:`.layers`:

=========================================  ================================================================
module                                     what it holds
=========================================  ================================================================
:mod:`tffd_viz.similarity.cka`             CKA (Kornblith et al. 2019) as pure functions on features and
                                           grams: :func:`linear_cka`, :func:`rbf_cka`, :func:`cka`, the
                                           reference colab's :func:`gram_linear`, :func:`gram_rbf`,
                                           :func:`center_gram`, :func:`cka_from_grams`; debiased (HSIC_1) and
                                           feature-space forms
:mod:`tffd_viz.similarity.minibatch`       :class:`MinibatchCKA`: linear CKA of every pair of layers from
                                           HSIC_1 summed over minibatches (Nguyen, Raghu and Kornblith 2021)
:mod:`tffd_viz.similarity.channels`        :func:`channel_cosine_matrix`, :func:`paired_channel_cosine`
                                           (intra-Tf-FD's pairing), :func:`inter_layer_alignment`
                                           (inter-Tf-FD's)
:mod:`tffd_viz.similarity.layers`          the only part that runs models: :func:`layer_cka_matrices` (A vs A,
                                           B vs B, A vs B over images), :func:`channel_similarity_views`,
                                           :func:`inter_layer_alignments`
=========================================  ================================================================

Degenerate inputs never give a silent NaN:

* CKA with a side of zero variance (constant features over the samples, or a
  centred gram that is numerically zero) is **defined as 0.0** and a
  :class:`ConstantFeatureWarning` names the constant side.
* Fewer than 4 samples raise :class:`~tffd_viz.errors.TffdVizError` (HSIC_1 and
  the debiased estimator need ``n >= 4``); non-finite features raise too.
* A channel that is all zeros has cosine 0 with every channel, itself included.
"""

from __future__ import annotations

from tffd_viz.similarity.channels import channel_cosine_matrix, inter_layer_alignment, paired_channel_cosine
from tffd_viz.similarity.cka import (
    CKA_METHODS,
    FULL_BATCH_MAX_N,
    LINEAR_CKA_FORMS,
    MIN_SAMPLES,
    ConstantFeatureWarning,
    center_gram,
    cka,
    cka_from_grams,
    gram_linear,
    gram_rbf,
    linear_cka,
    rbf_cka,
)
from tffd_viz.similarity.layers import (
    CKA_ESTIMATORS,
    channel_similarity_views,
    inter_layer_alignments,
    layer_cka_matrices,
)
from tffd_viz.similarity.minibatch import MinibatchCKA

__all__ = [
    "CKA_ESTIMATORS",
    "CKA_METHODS",
    "FULL_BATCH_MAX_N",
    "LINEAR_CKA_FORMS",
    "MIN_SAMPLES",
    "ConstantFeatureWarning",
    "MinibatchCKA",
    "center_gram",
    "channel_cosine_matrix",
    "channel_similarity_views",
    "cka",
    "cka_from_grams",
    "gram_linear",
    "gram_rbf",
    "inter_layer_alignment",
    "inter_layer_alignments",
    "layer_cka_matrices",
    "linear_cka",
    "paired_channel_cosine",
    "rbf_cka",
]
