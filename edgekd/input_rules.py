"""The device's text inputs fit every text classifier of a recipe that times its models on the device.

Stages that time a model (profile, quantize, bundle, prune, factorize, hybrid, search) feed it
``device.inputs.sequence_length`` tokens; a Hugging Face model with fewer positions
(``max_position_embeddings``, less the positions RoBERTa-style embeddings skip) cannot run them, and
onnxruntime would fail on an out-of-range index after every stage before it had trained. Refused by
``edgekd validate`` and before the first stage instead, naming the role and both numbers. Causal LMs
have their own check on the device's generation lengths (:func:`edgekd.task_rules.check_generation_fits`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgekd.data.config import is_corpus
from edgekd.errors import ConfigError
from edgekd.task_rules import role_config

if TYPE_CHECKING:
    from edgekd.config.device import DeviceProfile
    from edgekd.config.recipe import Recipe

#: Stages that run a model at the device's input shapes.
TIMING_STAGES = frozenset({"profile", "quantize", "bundle", "prune", "factorize", "hybrid", "search"})


def check_sequence_fits(recipe: Recipe, device: DeviceProfile, source: str) -> None:
    """Raise ``ConfigError`` when a text classifier role of a recipe with a timing stage takes fewer tokens than
    the device's ``inputs.sequence_length``."""
    if (recipe.data.modality != "text" or is_corpus(recipe.data)
            or not TIMING_STAGES & set(recipe.stage_names())):
        return
    length = device.inputs.sequence_length
    for role in ("teacher", "assistant", "student"):
        config = role_config(recipe, role)
        positions = _usable_positions(config) if config is not None else None
        if positions is not None and positions < length:
            raise ConfigError(f"{source}: {role}.model: it takes at most {positions} tokens, but device "
                              f"'{device.name}' feeds inputs.sequence_length {length}; give a device profile with "
                              f"a shorter sequence_length (--device my-device.yaml) or a model with more positions")


def _usable_positions(config: dict[str, Any]) -> int | None:
    """The tokens the model of a transformers config mapping takes (built on the meta device, nothing allocated);
    None when the config gives no limit or cannot be built (reported with its key when the model builds)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from edgekd.models.hf import quiet_transformers, usable_positions

    quiet_transformers()
    try:
        built = AutoConfig.for_model(**config)
        with torch.device("meta"):
            model = AutoModel.from_config(built)
    except Exception:  # an unknown family or a config transformers refuses: its own check names the key
        return None
    return usable_positions(model)
