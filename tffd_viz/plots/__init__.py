"""Every figure of the app, the notebooks and the HTML report, as plotly figures.

Each ``*_figure`` function takes plain data (numpy arrays, torch tensors, lists, dicts of them) and
RETURNS a :class:`plotly.graph_objects.Figure`; nothing is shown, written or cached here, and no
streamlit is imported. All figures share one look: ``template="plotly_white"``, a title, axis titles
(with units where there are any) and a compact margin; model A is drawn in
:data:`COLOR_A`, model B in :data:`COLOR_B` (:func:`model_color`), the salient half of a layer's
channels in :data:`SALIENT_COLOR`, the redundant half in :data:`REDUNDANT_COLOR` and the middle
channel of an odd channel count (which intra-Tf-FD leaves out) in :data:`LEFT_OUT_COLOR`.

Conventions
-----------
* "Model" dictionaries map a legend label to the model's data, e.g. ``{"A": ..., "B": ...}`` or
  ``{"A · baseline": ..., "B · Tf-FD": ...}``; the dict order is the drawing order. A label that
  starts with the word ``A`` or ``B`` gets that model's colour, any other label a colour by position.
* Ranks are 0-based as in :mod:`tffd_viz.importance` and :mod:`tffd_viz.dynamics`: rank 0 is the
  most salient channel and, with ``k = C // 2``, ranks ``0..k-1`` are the salient half, ranks
  ``C-k..C-1`` the redundant half (odd ``C``: rank ``k`` is the middle channel intra-Tf-FD leaves
  out). Ranks passed in as data are drawn as given.
* Figures stay light: image grids are limited to a number of tiles and larger maps are block-averaged
  down to at most ``max_side`` pixels a side.

Non-finite values (policy)
--------------------------
A NaN or infinity in an input never gives a silently broken plot and never raises: every figure
counts the non-finite values of its numeric inputs, leaves them out of the drawing (a gap in a
heatmap or line, no bar, a black pixel in an image, left out of a mean) and adds an annotation
(``name="nonfinite"``) reading ``"<N> values are not finite (<input>: <count>, ...); they are not
drawn"``. Missing values (``None`` or an absent key in a history or table) are not numerical faults:
they are simply not drawn, without that annotation. Inputs of the wrong shape or type raise
:class:`~tffd_viz.errors.TffdVizError` naming the figure, the input and the shapes.

Modules
-------
One module per page of the app, all re-exported here (``tffd_viz.plots.<fn>``):
:mod:`~tffd_viz.plots.ranking` (saliency, rank agreement and stability), :mod:`~tffd_viz.plots.losses` (terms,
contributions, gradients, sweeps), :mod:`~tffd_viz.plots.maps` (feature maps, intra-Tf-FD pairs, attribution,
galleries), :mod:`~tffd_viz.plots.similarity` (channel cosines, alignment, CKA),
:mod:`~tffd_viz.plots.embeddings`, :mod:`~tffd_viz.plots.training` (training curves, rank evolution),
:mod:`~tffd_viz.plots.accuracy` (confusion, per-class errors, accuracy over seeds),
:mod:`~tffd_viz.plots.noise` (differences next to their noise) and :mod:`~tffd_viz.plots.whatif`; the shared
look (layout, colours, notes, the annotated heatmap) is in the private ``_base`` and the input readers in
``_inputs``. :data:`FIGURE_FUNCTIONS` names every figure function.
"""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go

from tffd_viz.plots._base import (
    CLASS_COLORS,
    COLOR_A,
    COLOR_B,
    LEFT_OUT_COLOR,
    MODEL_COLORS,
    REDUNDANT_COLOR,
    SALIENT_COLOR,
    TEMPLATE,
    format_lambda,
    model_color,
    model_key,
)
from tffd_viz.plots.accuracy import (
    ERROR_BARS_ABOVE,
    accuracy_breakdown_figure,
    accuracy_seeds_figure,
    class_error_figure,
    confusion_figure,
    confusion_pair_figure,
)
from tffd_viz.plots.embeddings import embedding_figure, probe_accuracy_figure
from tffd_viz.plots.losses import (
    COLOR_RANGES,
    grad_share_figure,
    sweep_heatmap_figure,
    terms_bar_figure,
    weighted_contributions_figure,
)
from tffd_viz.plots.maps import (
    attribution_figure,
    disagreement_gallery_figure,
    feature_maps_figure,
    paired_maps_figure,
)
from tffd_viz.plots.noise import (
    cka_reference_figure,
    cosine_reference_figure,
    heldout_terms_figure,
    noise_ratio_figure,
    saliency_gap_figure,
)
from tffd_viz.plots.ranking import (
    rank_agreement_figure,
    rank_band_figure,
    saliency_bars_figure,
    split_stability_figure,
)
from tffd_viz.plots.similarity import (
    alignment_figure,
    cka_grid_figure,
    cka_heatmap_figure,
    cosine_matrix_figure,
    paired_similarity_figure,
)
from tffd_viz.plots.training import crossings_figure, rank_evolution_figure, training_curves_figure
from tffd_viz.plots.whatif import ARM_COLORS, curve_quantities, whatif_curves_figure, whatif_heldout_figure

__all__ = [
    "ARM_COLORS",
    "CLASS_COLORS",
    "COLOR_A",
    "COLOR_B",
    "COLOR_RANGES",
    "ERROR_BARS_ABOVE",
    "FIGURE_FUNCTIONS",
    "LEFT_OUT_COLOR",
    "MODEL_COLORS",
    "REDUNDANT_COLOR",
    "SALIENT_COLOR",
    "TEMPLATE",
    "accuracy_breakdown_figure",
    "accuracy_seeds_figure",
    "alignment_figure",
    "attribution_figure",
    "cka_grid_figure",
    "cka_heatmap_figure",
    "cka_reference_figure",
    "class_error_figure",
    "confusion_figure",
    "confusion_pair_figure",
    "cosine_matrix_figure",
    "cosine_reference_figure",
    "crossings_figure",
    "curve_quantities",
    "disagreement_gallery_figure",
    "embedding_figure",
    "feature_maps_figure",
    "format_lambda",
    "grad_share_figure",
    "heldout_terms_figure",
    "model_color",
    "model_key",
    "noise_ratio_figure",
    "paired_maps_figure",
    "paired_similarity_figure",
    "probe_accuracy_figure",
    "rank_agreement_figure",
    "rank_band_figure",
    "rank_evolution_figure",
    "saliency_bars_figure",
    "saliency_gap_figure",
    "split_stability_figure",
    "sweep_heatmap_figure",
    "terms_bar_figure",
    "training_curves_figure",
    "weighted_contributions_figure",
    "whatif_curves_figure",
    "whatif_heldout_figure",
]

FIGURE_FUNCTIONS: dict[str, Callable[..., go.Figure]] = {
    f.__name__.removesuffix("_figure"): f
    for f in (
        # ranking
        saliency_bars_figure,
        rank_agreement_figure,
        rank_band_figure,
        split_stability_figure,
        # losses
        terms_bar_figure,
        weighted_contributions_figure,
        grad_share_figure,
        sweep_heatmap_figure,
        # maps
        feature_maps_figure,
        paired_maps_figure,
        attribution_figure,
        disagreement_gallery_figure,
        # similarity
        cosine_matrix_figure,
        paired_similarity_figure,
        alignment_figure,
        cka_heatmap_figure,
        cka_grid_figure,
        # embeddings
        embedding_figure,
        probe_accuracy_figure,
        # training
        training_curves_figure,
        rank_evolution_figure,
        crossings_figure,
        # accuracy
        confusion_figure,
        accuracy_seeds_figure,
        class_error_figure,
        confusion_pair_figure,
        accuracy_breakdown_figure,
        # noise
        heldout_terms_figure,
        cosine_reference_figure,
        cka_reference_figure,
        noise_ratio_figure,
        saliency_gap_figure,
        # what-if
        whatif_curves_figure,
        whatif_heldout_figure,
    )
}
"""Every figure function by short name (``"saliency_bars"`` -> :func:`saliency_bars_figure`)."""
