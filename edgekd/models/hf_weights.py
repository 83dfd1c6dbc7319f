"""A ``save_pretrained`` weights file read into a Hugging Face model the way transformers itself reads it.

transformers 5 renames (and for some families merges) tensors between the layout a checkpoint is stored in and
the modules it builds: ``save_pretrained`` writes ViT's ``vit.encoder.layer.0.attention.attention.key.weight``,
the model holds ``vit.layers.0.attention.k_proj.weight``. A file of the stored layout given to a built model (a
``teacher.weights`` that is a run's ``model.safetensors``, the weights a budget search hands its candidates) is
therefore read through ``from_pretrained`` on a directory of the model's config and that file, which applies the
family's conversion.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)


def converted_state(model: nn.Module, path: Path) -> dict[str, torch.Tensor] | None:
    """``path``'s tensors under ``model``'s names as ``from_pretrained`` converts them, or None when ``model`` is
    not a transformers model or its loader leaves any of the model's tensors missing, unexpected or misshapen."""
    from transformers import PreTrainedModel

    from edgekd.models.hf import quiet_transformers

    if not isinstance(model, PreTrainedModel):
        return None
    quiet_transformers()
    dtype = next(model.parameters()).dtype
    with tempfile.TemporaryDirectory(prefix="edgekd-weights-") as tmp:
        model.config.save_pretrained(tmp)
        os.symlink(Path(path).resolve(), Path(tmp) / "model.safetensors")
        try:
            loaded, info = type(model).from_pretrained(tmp, output_loading_info=True, dtype=dtype)
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
            log.debug("%s: transformers could not read it as %s: %s", path, type(model).__name__, exc)
            return None
    if any(info.get(key) for key in ("missing_keys", "unexpected_keys", "mismatched_keys")):
        return None
    state = loaded.state_dict()
    return state if set(state) == set(model.state_dict()) else None
