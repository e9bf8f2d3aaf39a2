"""Error types raised by tffd_viz on bad input.

Every error the library raises because of what a user gave it (a file, a
dataset root, a tensor shape, a layer name) is a :class:`TffdVizError`, which
is a :class:`ValueError`, so callers can catch one type and show the message.
"""

from __future__ import annotations

__all__ = ["CheckpointError", "DataError", "TapError", "TffdVizError", "TrainingDiverged"]


class TffdVizError(ValueError):
    """Base class of every error tffd_viz raises on bad input."""


class DataError(TffdVizError):
    """A dataset, data root, image or sample request that cannot be served."""


class TapError(TffdVizError):
    """A feature tap (layer name) that does not exist or a feature of the wrong shape."""


class CheckpointError(TffdVizError):
    """A checkpoint file that cannot be loaded safely and strictly."""


class TrainingDiverged(TffdVizError):
    """A training run stopped because its loss, one of its terms or its weights went non-finite (NaN or inf).

    Attributes
    ----------
    epoch, step : int
        Where it happened: the epoch (from 1) and the optimiser step within it (from 1).
    term : str
        The first non-finite quantity: ``ce``, ``intra/<tap>``, ``inter/<a>-><b>``, ``kd``, ``tffd_total``,
        ``loss`` or ``weights``.
    """

    def __init__(self, message: str, *, epoch: int, step: int, term: str) -> None:
        super().__init__(message)
        self.epoch, self.step, self.term = epoch, step, term

    @property
    def where(self) -> str:
        """``"epoch E step S term T"`` (the ``diverged_at`` column of a sweep table)."""
        return f"epoch {self.epoch} step {self.step} term {self.term}"

    def __reduce__(self) -> tuple:  # keeps the keyword attributes through pickling (multiprocessing, caches)
        return _rebuilt_diverged, (str(self), self.epoch, self.step, self.term)


def _rebuilt_diverged(message: str, epoch: int, step: int, term: str) -> TrainingDiverged:
    return TrainingDiverged(message, epoch=epoch, step=step, term=term)
