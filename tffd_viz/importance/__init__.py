"""Channel importance and ranking: which channels Tf-FD calls salient, and how robust that call is.

Intra-layer Tf-FD sorts the channels of a stage by :func:`tffd_viz.losses.channel_saliency` and
pulls the bottom half towards the top half. This module scores channels with that criterion and
with classical alternatives, ranks them exactly as Tf-FD does, splits them into Tf-FD's salient
and redundant halves, compares criteria and measures how stable a ranking is across batches and
bootstrap resamples.

Criteria live in the registry :data:`CRITERIA` (name -> :class:`Criterion`):

=============  ========  ==========================================================================
name           needs     score of channel ``c`` (shape ``(C,)``, higher = more important)
=============  ========  ==========================================================================
``tffd``       features  Tf-FD saliency, :func:`tffd_viz.losses.channel_saliency` (imported)
``l1``         features  mean over samples of the map's L1 norm ``sum_hw |f[n,c]|``
``l2``         features  mean over samples of the map's L2 norm ``||f[n,c]||_2``
``mean``       features  mean activation over samples and positions
``bn_gamma``   model     ``|gamma|`` of the BatchNorm2d tied to the tap (see :data:`BN_RULES`)
``taylor``     model     ``|mean_{n,h,w} a * dCE/da|`` at the tap (Molchanov et al. 2017)
=============  ========  ==========================================================================

A feature criterion is ``fn(f: Tensor (N, C, H, W)) -> Tensor (C,)``; a model criterion is
``fn(model, images (N, C, H, W) or None, labels (N,) or None, tap: str) -> Tensor (C,)``.
Captum criteria (``layer_conductance``, ``layer_grad_x_activation``) are added by
``tffd_viz.attribution`` through :func:`register_criterion`; :func:`available_criteria` imports
that module (the one lazy import here, so this core package imports without captum).

Nothing here changes a model: model criteria run in eval mode (restored afterwards) and the
Taylor criterion takes gradients with ``torch.autograd.grad`` with respect to the tap tensor only,
so no parameter's ``.grad`` is written.

The package, one concern a module:

====================  ======================================================================================
``criteria``          :class:`Criterion`, the registry :data:`CRITERIA` and the built-in criteria
``feature_criteria``  the feature criteria (``tffd``, ``l1``, ``l2``, ``mean``) and their per-sample forms
``model_criteria``    ``bn_gamma`` (:data:`BN_RULES`, :func:`bn_for_tap`) and ``taylor``
                      (:func:`taylor_scores`)
``ranking``           :func:`channel_scores`, Tf-FD's order and halves, :func:`tap_rankings`,
                      :func:`rankings_table`
``agreement``         :func:`rank_agreement` between criteria
``stability``         rank stability across batches and bootstrap bands (:func:`tap_rank_stability`)
====================  ======================================================================================
"""

from tffd_viz.importance.agreement import ConstantScoresWarning, rank_agreement
from tffd_viz.importance.criteria import (
    CRITERIA,
    Criterion,
    available_criteria,
    get_criterion,
    register_criterion,
)
from tffd_viz.importance.model_criteria import BN_RULES, BNMatch, bn_for_tap, bn_gamma_scores, taylor_scores
from tffd_viz.importance.ranking import (
    SalientSplit,
    TapRanking,
    channel_ranking,
    channel_scores,
    rank_positions,
    rankings_table,
    salient_split,
    tap_rankings,
)
from tffd_viz.importance.stability import (
    bootstrap_rank_band,
    ranking_stability_across_batches,
    split_stability,
    tap_rank_stability,
)

__all__ = [
    "BN_RULES",
    "CRITERIA",
    "BNMatch",
    "ConstantScoresWarning",
    "Criterion",
    "SalientSplit",
    "TapRanking",
    "available_criteria",
    "bn_for_tap",
    "bn_gamma_scores",
    "bootstrap_rank_band",
    "channel_ranking",
    "channel_scores",
    "get_criterion",
    "rank_agreement",
    "rank_positions",
    "ranking_stability_across_batches",
    "rankings_table",
    "register_criterion",
    "salient_split",
    "split_stability",
    "tap_rank_stability",
    "tap_rankings",
    "taylor_scores",
]
