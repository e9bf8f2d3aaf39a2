"""Error types raised by tffd_viz on bad input.

Every error the library raises because of what a user gave it (a file, a
dataset root, a tensor shape, a layer name) is a :class:`TffdVizError`, which
is a :class:`ValueError`, so callers can catch one type and show the message.
"""

from __future__ import annotations

__all__ = ["TffdVizError", "DataError", "TapError", "CheckpointError"]


class TffdVizError(ValueError):
    """Base class of every error tffd_viz raises on bad input."""


class DataError(TffdVizError):
    """A dataset, data root, image or sample request that cannot be served."""


class TapError(TffdVizError):
    """A feature tap (layer name) that does not exist or a feature of the wrong shape."""


class CheckpointError(TffdVizError):
    """A checkpoint file that cannot be loaded safely and strictly."""
