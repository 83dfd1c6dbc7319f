"""An image-file source's preprocessing defaults taken from the recipe's models, when the recipe is read.

Teacher and student are fed the same tensors, so a recipe has one preprocessing. Unless the data config
says how to prepare images (``image_processor``, or any of ``image_size``/``color``/``mean``/``std``),
the first of teacher, assistant and student that is a Hugging Face model (``arch: hf``) decides:

1. a ``pretrained`` checkpoint that ships an image processor (``preprocessor_config.json`` in a local or
   packaged directory; a hub id is assumed to ship one) becomes ``data.image_processor``;
2. else the first such model whose config (``config:`` or the checkpoint's ``config.json``) has an
   ``image_size`` gives ``data.image_size`` (the model's input size; plain resizing).

These read the recipe's raw values, before its fields are validated, so they expand ``~`` and variables
themselves, with the same function (:func:`edgekd.config.paths.expanded_or_given`). The value is written into the
data config, so the run record shows it and every stage reading ``data``
(its fingerprint included) sees the same preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from edgekd.config.paths import expand_path, expanded_or_given
from edgekd.data.image_config import IMAGE_FILE_SOURCES, ImagePrep
from edgekd.errors import ConfigValueError, EdgekdError

ROLES = ("teacher", "assistant", "student")
PROCESSOR_FILE = "preprocessor_config.json"


def with_model_defaults(values: Any) -> Any:
    """Raw recipe ``values`` with the image preprocessing its models imply filled into ``data`` (see above)."""
    if not isinstance(values, dict) or not _needs_defaults(values.get("data")):
        return values
    specs = [spec for spec in (_get(values.get(role), "model") for role in ROLES) if _get(spec, "arch") == "hf"]
    for spec in specs:
        pretrained = _get(spec, "pretrained")
        if isinstance(pretrained, str) and _ships_processor(pretrained):
            return {**values, "data": _update(values["data"], image_processor=pretrained)}
    for spec in specs:
        size = _image_size(spec)
        if size is not None:
            return {**values, "data": _update(values["data"], image_size=size)}
    return values


def _needs_defaults(data: Any) -> bool:
    """An image-file source that leaves its preprocessing to the models."""
    source = _get(data, "source")
    if source not in IMAGE_FILE_SOURCES and not (source == "hf_disk" and _get(data, "image_column")):
        return False
    return all(_get(data, key) is None for key in ImagePrep.model_fields if key != "color") and (
        "color" not in (data if isinstance(data, dict) else getattr(data, "model_fields_set", set())))


def _get(value: Any, key: str) -> Any:
    """``value[key]`` of a raw mapping, or the attribute of a config object; None when absent."""
    if value is None:
        return None
    return value.get(key) if isinstance(value, dict) else getattr(value, key, None)


def _update(data: Any, **changes: Any) -> Any:
    return data.model_copy(update=changes) if isinstance(data, BaseModel) else {**data, **changes}


def _ships_processor(name: str) -> bool:
    """Whether checkpoint ``name`` has an image processor (a hub id is assumed to: they ship one)."""
    from edgekd.models.packaged import is_packaged, resolve_pretrained

    if is_packaged(name):
        try:
            name = resolve_pretrained(name)
        except EdgekdError:  # the model spec's own validation reports a broken package
            return False
    try:
        local = Path(expand_path(name))
    except ConfigValueError:  # an unset variable: said at the model's own key, not copied to data.image_processor
        return False
    return (local / PROCESSOR_FILE).is_file() if local.is_dir() else not local.exists()


def _image_size(spec: Any) -> int | tuple[int, int] | None:
    """The ``image_size`` of an HF model's config mapping or local checkpoint ``config.json``."""
    config = _get(spec, "config")
    if config is None:
        local = Path(expanded_or_given(str(_get(spec, "pretrained")))) / "config.json"
        try:
            config = json.loads(local.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
    size = config.get("image_size") if isinstance(config, dict) else None
    if isinstance(size, int) and not isinstance(size, bool) and size > 0:
        return size
    if isinstance(size, list | tuple) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size):
        return (size[0], size[1])
    return None
