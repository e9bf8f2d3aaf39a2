"""Checkpoint factories shared by the tests of tffd_viz.checkpoints: trained zoo models, their state_dicts
as torch.save bytes, and a full model card (with its JSON form written out by hand)."""

from __future__ import annotations

import functools
import io

import numpy as np
import torch

from tffd_viz.models import create_model

SOURCE_KEYS = ["source_format", "source_name", "source_layout", "recognised_as", "sha256"]


def trained_model(arch: str = "resnet8", num_classes: int = 10, in_chans: int = 3, seed: int = 0):
    """A zoo model whose BatchNorm buffers differ from their initial values (two train-mode passes).

    The passes use small 8x8 inputs (the zoo pools adaptively) to keep the tests fast.
    """
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=num_classes, in_chans=in_chans)
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.randn(2, in_chans, 8, 8))
    return model.eval()


@functools.cache
def _cached_state(arch: str, num_classes: int, in_chans: int, seed: int) -> dict[str, torch.Tensor]:
    return trained_model(arch, num_classes, in_chans, seed).state_dict()


def state_of(arch: str = "resnet8", num_classes: int = 10, in_chans: int = 3, seed: int = 0):
    """A fresh copy of a trained model's state_dict (safe to modify)."""
    return {k: v.clone() for k, v in _cached_state(arch, num_classes, in_chans, seed).items()}


def torch_bytes(obj, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def assert_state_equal(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key].cpu(), value.cpu()), key


def full_card() -> dict:
    return {
        "arch": "resnet8",
        "num_classes": 10,
        "in_chans": 1,
        "dataset": "digits",
        "mean": (0.25,),
        "std": (0.5,),
        "method": "tffd",
        "lambda_intra": 8e-4,
        "lambda_inter": 5e-4,
        "taps": ("layer1", "layer2", "layer3"),
        "pairs": [("layer1", "layer3")],
        "epochs": np.int64(2),
        "warmup": 20,
        "seed": 0,
        "recipe": "digits-fast",
        "final_acc": np.float32(91.5),
        "best_acc": 92.25,
        "train_seconds": torch.tensor(3.5),
        "device": "cpu",
        "versions": {"torch": torch.__version__},
        "history": [
            {
                "epoch": 1,
                "lr": 0.1,
                "ce": 1.5,
                "intra": {"layer1": 0.01},
                "inter": {"layer1->layer3": 0.2},
                "train_acc": 50.0,
                "test_acc": 60.0,
                "seconds": 1.25,
                "saliency": {"layer1": [0.5, 0.25]},
            },
        ],
        "notes": "an extra key",
    }


def full_card_json() -> dict:
    """``full_card()`` as JSON would hold it, written out by hand (tuples -> lists, scalars -> numbers)."""
    card = full_card()
    card.update(
        mean=[0.25],
        std=[0.5],
        taps=["layer1", "layer2", "layer3"],
        pairs=[["layer1", "layer3"]],
        epochs=2,
        final_acc=91.5,
        train_seconds=3.5,
    )
    return card
