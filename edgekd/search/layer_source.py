"""The teacher a searched ``drop_layers`` student copies its layers from.

A ``drop_layers`` student is the teacher with some of its blocks kept, so a search over it varies
how many it keeps (``keep``: 1 … the teacher's depth − 1, each spread evenly) and needs the teacher
itself: to build each candidate of the latency table (the compress command's check before training
builds it from the recipe's spec: a checkpoint, or sizes; the search stage loads the trained teacher
it saved) and to know its depth. Latency depends on the teacher's architecture, not its weights: the
table's cache key holds the teacher's family and parameter shapes, which are the same for the spec's
model and its trained copy.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.data.examples import InputSignature
from edgekd.models import hf
from edgekd.models.task_model import TaskModel, build_task_model


@dataclass(eq=False)
class LayerSource:
    """A teacher whose blocks ``drop_layers`` candidates keep: a saved model directory or a spec to build."""

    directory: Path | None = None
    spec: Any = None
    """The teacher's model spec (built with the family's signature and classes) when there is no directory."""
    _model: TaskModel | None = None

    def model(self, signature: InputSignature, class_names: tuple[str, ...]) -> TaskModel:
        """The teacher (loaded or built once, then reused by every candidate)."""
        if self._model is None:
            self._model = (TaskModel.load(self.directory) if self.directory is not None
                           else build_task_model(self.spec, signature, class_names))
        return self._model

    def depth(self, signature: InputSignature, class_names: tuple[str, ...]) -> int:
        """How many blocks the teacher has."""
        return hf.layer_count(self.model(signature, class_names).module)

    def to_json(self, signature: InputSignature, class_names: tuple[str, ...]) -> dict[str, Any]:
        """What the teacher's latency depends on: its family and a digest of its parameters' names and shapes."""
        module = self.model(signature, class_names).module
        shapes = {name: list(parameter.shape) for name, parameter in module.named_parameters()}
        digest = hashlib.sha256(json.dumps(shapes, sort_keys=True).encode()).hexdigest()[:16]
        return {"model_type": getattr(module.config, "model_type", None), "shapes": digest}
