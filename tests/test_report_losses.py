"""Tests of tffd_viz.report.losses."""

from __future__ import annotations

from tffd_viz.report import card_lambdas


def test_card_lambdas_fall_back_to_the_paper() -> None:
    assert card_lambdas({"lambda_intra": 1e-3, "lambda_inter": 2e-3}) == (1e-3, 2e-3, "card")
    assert card_lambdas({"lambda_intra": None, "lambda_inter": 2e-3}) == (8e-4, 5e-4, "paper")
