"""The shared type aliases: one definition each, and what they admit."""

from __future__ import annotations

import typing

import numpy as np
import torch

from tffd_viz import types


def test_stage_key_is_a_name_or_a_position():
    assert set(typing.get_args(types.StageKey)) == {int, str}


def test_array_like_is_a_tensor_or_an_ndarray():
    assert set(typing.get_args(types.ArrayLike)) == {torch.Tensor, np.ndarray}


def test_no_module_defines_its_own_alias():
    import pathlib
    import re

    root = pathlib.Path(types.__file__).parent
    own = re.compile(r"^(StageKey|ArrayLike)\s*(:\s*TypeAlias\s*)?=", re.MULTILINE)
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if p.name != "types.py" and own.search(p.read_text())
    ]
    assert offenders == []
