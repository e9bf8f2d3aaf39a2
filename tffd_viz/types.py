"""Type aliases shared by the library's signatures (one definition each)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import torch

__all__ = ["ArrayLike", "StageKey"]

#: A stage named by its tap name (``"layer2"``) or by its position in the model's stage list (``1``).
StageKey: TypeAlias = int | str

#: An array the library accepts: a tensor or a NumPy array (converted with ``torch.as_tensor`` /
#: ``np.asarray``).
ArrayLike: TypeAlias = torch.Tensor | np.ndarray
