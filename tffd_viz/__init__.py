"""tffd-viz: analyse and visualise Teacher-free Feature Distillation (Tf-FD).

The library never imports streamlit; the app in ``app.py``/``app_pages`` is a
thin layer over it. Heavy submodules are imported lazily by their users.
"""

from tffd_viz.errors import CheckpointError, DataError, TapError, TffdVizError

__version__ = "0.1.0"

__all__ = ["CheckpointError", "DataError", "TapError", "TffdVizError", "__version__"]
