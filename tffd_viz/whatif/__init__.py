"""Try a lambda before training with it: short Tf-FD fine-tunes from one model, against controls.

From a starting model, :class:`WhatIf` runs three short fine-tunes from the *same* weights:

* ``control``: plain cross-entropy (the Tf-FD terms at the chosen lambdas are computed, detached, and logged);
* ``tffd``: cross-entropy plus the chosen lambda-weighted Tf-FD terms (no warm-up: the lambdas act from
  step 1);
* ``control2``: plain cross-entropy on another batch order (``noise_seed``). Its distance from ``control`` is
  the noise floor against which the Tf-FD arm's difference from ``control`` is read.

``control`` and ``tffd`` draw the same batches and augmentations (one seeded generator each, same seed, with
:func:`tffd_viz.train.epoch_draws` and :func:`tffd_viz.train.augment_batch`); every step is
:func:`tffd_viz.train.train_step` (BatchNorm in train mode), with SGD at the card recipe's momentum, Nesterov
flag and weight decay, the recipe's batch size and a constant learning rate (default: a tenth of the recipe's
peak lr). The arms advance together, step by step, so a run stopped early compares them at the same step.

Before the first step and after the last, every arm is evaluated on a fixed held-out subset of the test split
(:func:`tffd_viz.heldout.heldout_terms`: eval mode, accuracy and every Tf-FD term with its batch-to-batch
spread, raw and divided by the activation energy of the maps it compares). :func:`compare_arms` turns those
into one row per quantity, :func:`whatif_answer` states the answer in words and numbers and
:func:`train_command` gives the ``tffd-viz train`` command line that trains with these settings for real.

The starting model is never modified: it is deep-copied once (hold its lock while constructing a
:class:`WhatIf` from a model shared between threads) and each arm trains its own copy. On the CPU the rows are
deterministic: the same inputs give the same rows bit for bit.

>>> from tffd_viz.checkpoints import load_checkpoint
>>> from tffd_viz.data import load_dataset
>>> model, card = load_checkpoint("checkpoints/digits_resnet8_baseline_s0.safetensors")   # from the repo root
>>> config = WhatIfConfig(lambda_intra=1.0, lambda_inter=0.0, steps=2, heldout_n=64)
>>> w = WhatIf(model, load_dataset("digits"), config, card=card)
>>> rows = list(w.run())                       # one row per arm per step
>>> [(row["arm"], row["step"]) for row in rows[:3]]
[('control', 1), ('tffd', 1), ('control2', 1)]
>>> print(whatif_answer(w.result()).splitlines()[-1])
Train with these settings for real: tffd-viz train --recipe digits ... --lambda-intra 1 --lambda-inter 0 ...
"""

from __future__ import annotations

from tffd_viz.whatif.answer import compare_arms, train_command, whatif_answer
from tffd_viz.whatif.cli import (
    add_whatif_arguments,
    checkpoint_file,
    heldout_rows,
    run_whatif,
    whatif_html,
    write_rows_csv,
)
from tffd_viz.whatif.config import (
    ARM_LABELS,
    ARMS,
    DEFAULT_HELDOUT_N,
    DEFAULT_STEPS,
    LR_FRACTION,
    WhatIfConfig,
    default_steps,
    heldout_subset,
    whatif_settings,
)
from tffd_viz.whatif.run import WhatIf

__all__ = [
    "ARMS",
    "ARM_LABELS",
    "DEFAULT_HELDOUT_N",
    "DEFAULT_STEPS",
    "LR_FRACTION",
    "WhatIf",
    "WhatIfConfig",
    "add_whatif_arguments",
    "checkpoint_file",
    "compare_arms",
    "default_steps",
    "heldout_rows",
    "heldout_subset",
    "run_whatif",
    "train_command",
    "whatif_answer",
    "whatif_html",
    "whatif_settings",
    "write_rows_csv",
]
