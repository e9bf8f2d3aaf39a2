"""``python -m tffd_viz <command> ...``: the same as the ``tffd-viz`` console script."""

from __future__ import annotations

import sys

from tffd_viz.cli import main

if __name__ == "__main__":
    sys.exit(main())
