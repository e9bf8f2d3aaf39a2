"""Inputs and checks shared by the tests of :mod:`tffd_viz.plots` (``tests/test_plots*.py``)."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

RNG_SEED = 0


def seeded_rng() -> np.random.Generator:
    """A fresh generator with the tests' seed."""
    return np.random.default_rng(RNG_SEED)


def nonfinite_texts(fig: go.Figure) -> list[str]:
    """Texts of the figure's non-finite-policy annotations (``name="nonfinite"``)."""
    return [a.text for a in fig.layout.annotations if a.name == "nonfinite"]


def epoch_history(n: int = 4) -> list[dict]:
    """A checkpoint-card history of ``n`` epochs: CE, two intra terms, one inter term, accuracies."""
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "ce": 2.0 / e,
            "intra": {"layer1": 0.3 / e, "layer2": 0.2 / e},
            "inter": {"layer1->layer2": 0.05 / e},
            "train_acc": 40.0 + 5 * e,
            "test_acc": 38.0 + 4 * e,
        }
        for e in range(1, n + 1)
    ]


def sweep_rows() -> list[dict]:
    """A 2 x 3 lambda sweep with 3 seeds a cell (``final_acc`` random in [80, 90))."""
    rng = seeded_rng()
    return [
        {"lambda_intra": li, "lambda_inter": le, "seed": s, "final_acc": float(80 + 10 * rng.random())}
        for li in (0.0, 8e-4)
        for le in (0.0, 5e-4, 1e-3)
        for s in range(3)
    ]
