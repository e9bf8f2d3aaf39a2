"""Checkpoints: safe, strict loading of the common formats, and self-describing model cards.

The project's own format is a safetensors file of the model's ``state_dict`` (BatchNorm buffers
included) plus a *model card*: a JSON dict written beside it (``x.safetensors`` -> ``x.json``) and
also embedded in the safetensors metadata under ``"card"``, so an uploaded file alone keeps its card.

Foreign checkpoints load too, from a path or from the bytes of an upload:

* PyTorch pickles (``.pt``, ``.pth``, ``.pth.tar``; zip or legacy format) holding a bare state_dict
  or a dict with the weights under ``model``, ``state_dict``, ``net``, ``snet``, ``student`` (...),
  as RepDistiller and the Tf-FD reference code save them; known metadata (``epoch``, ``best_acc``,
  ``opt.model``, ...) goes into the card;
* wrapper prefixes (``module.``, ``_orig_mod.``, ``module.student.``, ...) are stripped;
* key layouts of other code bases are mapped onto the zoo names by small rule sets
  (:data:`LAYOUTS`; ``tffd-reference`` maps the Tf-FD authors' ``res1..3`` / ``.ds.`` ResNets);
* without a card the architecture, class count and input channels are inferred from the key names
  and tensor shapes (:func:`infer_arch`).

Safety: pickles are only ever read by ``torch.load(..., weights_only=True)``, with a short explicit
allow-list of harmless types real checkpoints carry (``argparse.Namespace``, numpy scalars and
dtypes). A file whose unpickling would run code is refused with :class:`CheckpointError` before
anything runs. Loading is strict: missing, unexpected or mis-shaped keys give one readable error.

The package, one concern a module:

================  ==========================================================================================
``readers``       bytes -> tensors, stored card and metadata; the unpickling safety code (allow-list, lock)
``cards``         the model card: its keys, JSON form and strictly finite values
``layouts``       wrapper prefixes, the key layouts of other code bases and the published zoos among them
``inference``     architecture, class count and input channels from key names and tensor shapes
``fitting``       which zoo model a checkpoint loads into and how its keys, shapes and values fit (strictly)
``loading``       :func:`load_checkpoint`, :func:`read_card`, :func:`list_checkpoints`
``saving``        :func:`save_checkpoint`
================  ==========================================================================================

>>> model, card = load_checkpoint("checkpoints/digits_resnet8_tffd_s0.safetensors")
>>> path = save_checkpoint(model, card, "runs/copy")        # -> runs/copy.safetensors + runs/copy.json
"""

from tffd_viz.checkpoints.cards import CARD_KEYS, FORMAT_TAG, SOURCE_KEYS, empty_card, finite_card
from tffd_viz.checkpoints.inference import infer_arch
from tffd_viz.checkpoints.layouts import LAYOUTS, WRAPPER_PREFIXES, Layout, recognised_as
from tffd_viz.checkpoints.loading import list_checkpoints, load_checkpoint, read_card
from tffd_viz.checkpoints.readers import SAFE_GLOBALS, STATE_DICT_KEYS, checkpoint_sha256
from tffd_viz.checkpoints.saving import save_checkpoint
from tffd_viz.errors import CheckpointError

__all__ = [
    "CARD_KEYS",
    "FORMAT_TAG",
    "LAYOUTS",
    "SAFE_GLOBALS",
    "SOURCE_KEYS",
    "STATE_DICT_KEYS",
    "WRAPPER_PREFIXES",
    "CheckpointError",
    "Layout",
    "checkpoint_sha256",
    "empty_card",
    "finite_card",
    "infer_arch",
    "list_checkpoints",
    "load_checkpoint",
    "read_card",
    "recognised_as",
    "save_checkpoint",
]
