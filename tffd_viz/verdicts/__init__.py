"""A-vs-B statements that hold: every difference next to a noise reference, a conclusion only beyond it.

Two models differ in every number one measures on them; most of those differences are what another seed,
or another batch of images, would give as well. This package measures a model on a whole held-out split
(:func:`model_measures`: the held-out Tf-FD terms of :mod:`tffd_viz.heldout`, raw and scale-free, the
activation energy per stage, and channel cosines with their reference), and writes the "A vs B: what changed"
table (:func:`what_changed`): per quantity the two values, their difference, the size of the noise and a
verdict.

Noise references (each the size a difference must exceed, :data:`NOISE_SIGMAS` standard deviations of the
difference of two single measurements):

* **seeds** where the shipped checkpoints hold several seeds of a configuration (digits s0-s2):
  ``2 * sqrt(var_A + var_B)``, each variance over the seeds of one configuration (ddof 1; a configuration
  with a single seed borrows the other's variance);
* else **batches**: ``2 * sqrt(s_A ** 2 + s_B ** 2)`` with ``s`` the batch-to-batch standard deviation of the
  quantity over the split's batches (what one training batch sees, the loss being per batch);
* the accuracy without seeds: the test split's sampling noise, ``s = 100 * sqrt(p (1 - p) / n)`` per model.

The CKA of a layer of A with the same layer of B is read as a dissimilarity ``1 - CKA`` against the largest
dissimilarity between two seeds of one configuration (:func:`cka_rows`).

A raw Tf-FD term can fall because the maps shrink as a whole (BatchNorm and weight decay make that cheap);
:func:`term_verdict` says so whenever the term divided by the energy of the maps it compares
(:func:`tffd_viz.heldout.scale_free_terms`, the one definition) is unchanged within noise.
"""

from __future__ import annotations

from tffd_viz.verdicts.cka import cka_diagonal, cka_rows, seed_cka
from tffd_viz.verdicts.finding import effect_summary
from tffd_viz.verdicts.measures import (
    channel_cosine_stats,
    heldout_slices,
    model_measures,
    random_pair_cosine,
    seed_siblings,
)
from tffd_viz.verdicts.noise import (
    NO_NOISE as NO_NOISE,
)
from tffd_viz.verdicts.noise import (
    NOISE_SIGMAS,
    Noise,
    batch_noise,
    difference_verdict,
    lambda_text,
    sampling_noise,
    seed_noise,
    term_verdict,
)
from tffd_viz.verdicts.pair import noise_table, pair_comparison, pair_comparison_on
from tffd_viz.verdicts.table import (
    QUANTITIES,
    WHAT_CHANGED_COLUMNS,
    seed_mean_measures,
    what_changed,
    what_changed_text,
)

__all__ = [
    "NOISE_SIGMAS",
    "QUANTITIES",
    "WHAT_CHANGED_COLUMNS",
    "Noise",
    "batch_noise",
    "channel_cosine_stats",
    "cka_diagonal",
    "cka_rows",
    "difference_verdict",
    "effect_summary",
    "heldout_slices",
    "lambda_text",
    "model_measures",
    "noise_table",
    "pair_comparison",
    "pair_comparison_on",
    "random_pair_cosine",
    "sampling_noise",
    "seed_cka",
    "seed_mean_measures",
    "seed_noise",
    "seed_siblings",
    "term_verdict",
    "what_changed",
    "what_changed_text",
]
