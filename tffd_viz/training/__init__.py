"""The parts of the training loop of :mod:`tffd_viz.train`, one concern per module.

========================  ===========================================================================
module                    what it holds
========================  ===========================================================================
``config``                :class:`TrainConfig`, the checks of every option, recipes -> configs, stage specs
``schedules``             the learning-rate schedules
``augment``               the seeded per-epoch draws, the augmentations as batch tensor ops, rank shards
``step``                  one optimisation step, test accuracy, the probe saliency
``state``                 output paths, the resume state (written, checked, read), the weights' hash
``distributed``           torchrun ranks: process group, cross-rank saliency, stop time, weight agreement
``divergence``            non-finite losses or weights, and the error naming them with the usual remedy
``teacher``               the frozen teacher of Tf-FD+ (``method="tffd_kd"``)
========================  ===========================================================================

The public names are importable from :mod:`tffd_viz.train` (the loop), which is the entry point.
"""

__all__: list[str] = []
