"""Tests of tffd_viz.report.inputs: bad inputs raise errors that name them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tffd_viz.checkpoints import save_checkpoint
from tffd_viz.errors import DataError
from tffd_viz.models import create_model
from tffd_viz.report import report_sections

pytest_plugins = ("report_fixtures",)


def test_bad_inputs_raise_errors_that_name_them(pair: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="360"):
        report_sections(pair[0], pair[1], n=361, progress=False)
    with pytest.raises(DataError, match="mnist"):
        report_sections(pair[0], pair[1], dataset="mnist", progress=False)
    torch.manual_seed(0)
    rgb = save_checkpoint(
        create_model("resnet8", num_classes=10, in_chans=3),
        {"dataset": "digits"},
        tmp_path / "rgb.safetensors",
    )
    with pytest.raises(DataError, match=r"model B .*rgb\.safetensors.* expects 3 input channel"):
        report_sections(pair[0], rgb, n=8, progress=False)
    cardless = save_checkpoint(create_model("resnet8", num_classes=10, in_chans=1), None, tmp_path / "bare")
    with pytest.raises(DataError, match="names no dataset"):
        report_sections(cardless, pair[1], n=8, progress=False)
