"""Candidates with random weights, exported as the latency table times them.

Latency does not depend on weight values, so a candidate is built untrained: the student spec,
pruned with the same settings the search's training uses (layer scope: every layer loses the same
share, so the shapes do not depend on the weights), factorized by parameter ratio (ranks from the
shapes alone), exported with the search's export target and, for ``int8``, quantized the way the
quantize stage's ``modes`` would (dynamic INT8 for transformers, static INT8 calibrated on random
inputs otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from edgekd.config.device import DeviceProfile
from edgekd.data.examples import InputSignature
from edgekd.export.config import ExportTarget
from edgekd.export.onnx_export import export_onnx
from edgekd.models.task_model import TaskModel, build_task_model, read_description
from edgekd.profile.inputs import make_feeds
from edgekd.prune.config import FactorizeConfig, PruneConfig
from edgekd.prune.lowrank import factorize_task_model
from edgekd.prune.measure import device_inputs
from edgekd.prune.structured import prune_step
from edgekd.quantize.config import QuantizeSettings
from edgekd.quantize.graph import prepare_graphs
from edgekd.quantize.isa import expand_modes
from edgekd.quantize.model import int8_options
from edgekd.quantize.quantizers import WEIGHTED_OPS, quantize_dynamic_int8, quantize_static_int8
from edgekd.search.layer_source import LayerSource
from edgekd.search.space import LAYER_COPY, Structure

#: How a search prunes, in the latency table and in training alike (layer scope: shapes independent of weights).
PRUNE_SETTINGS: dict[str, Any] = {"importance": "l2", "scope": "layer"}
#: Random input batches that calibrate a static INT8 candidate of the table.
CALIBRATION_BATCHES = 4


@dataclass(frozen=True)
class Family:
    """What every candidate of a search shares: the architecture, what it is fed and the classes (and, for
    ``drop_layers`` students, the teacher whose blocks they keep)."""

    arch: str
    signature: InputSignature
    class_names: tuple[str, ...]
    teacher: LayerSource | None = None

    @classmethod
    def of_model_dir(cls, directory: Path, arch: str) -> Family:
        """The family of ``arch`` students for the data a saved model (the teacher) was built for."""
        described = read_description(directory)
        teacher = LayerSource(directory=Path(directory)) if arch == LAYER_COPY else None
        return cls(arch, described.signature, described.class_names, teacher)

    @property
    def depth(self) -> int | None:
        """The teacher's block count for ``drop_layers`` students (None for other archs)."""
        return None if self.teacher is None else self.teacher.depth(self.signature, self.class_names)

    def teacher_model(self) -> TaskModel | None:
        """The teacher ``drop_layers`` candidates are built from (None for other archs)."""
        return None if self.teacher is None else self.teacher.model(self.signature, self.class_names)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (the classes by count: their names do not change a model)."""
        teacher = {} if self.teacher is None else {"teacher": self.teacher.to_json(self.signature, self.class_names)}
        return {"arch": self.arch, "signature": self.signature.to_json(), "classes": len(self.class_names), **teacher}


def build_random(structure: Structure, family: Family, device: DeviceProfile) -> TaskModel:
    """The structure's model with random weights (seeded; a ``drop_layers`` one copies the teacher's), pruned and
    factorized as training will."""
    torch.manual_seed(0)
    model = build_task_model(structure.model_spec(), family.signature, family.class_names,
                             teacher=family.teacher_model())
    if structure.prune:
        config = PruneConfig(ratio=structure.prune, **PRUNE_SETTINGS)
        prune_step(model, config, structure.prune, device_inputs(model, device))
    if structure.factorize is not None:
        factorize_task_model(model, FactorizeConfig(param_ratio=structure.factorize))
    return model


@dataclass(frozen=True)
class LatencyExport:
    """A structure as the latency table times it: its ONNX files by precision and its model's parameters."""

    files: dict[str, Path]
    params: int
    """The parameters of the model built (:attr:`~edgekd.models.task_model.TaskModel.params`), counted as a trained
    student's are, so the table and the report give one figure (the graph's initializers differ: folded batch
    norms, shape constants, quantized weights with their scales)."""


def export_for_latency(structure: Structure, precisions: list[str], family: Family, device: DeviceProfile,
                       target: ExportTarget, quantize: QuantizeSettings, out_dir: Path) -> LatencyExport:
    """ONNX files of ``structure`` (random weights) in ``out_dir`` by precision (``fp32`` always, ``int8`` if asked)
    and the built model's parameter count."""
    model = build_random(structure, family, device)
    fp32 = out_dir / f"{structure.key}.fp32.onnx"
    export_onnx(model.module, model.example_inputs(), fp32, target,
                extra_dynamic_axes=family.signature.dynamic_axes())
    files = {"fp32": fp32}
    if "int8" in precisions:
        files["int8"] = int8_for_latency(fp32, out_dir, structure.key, device, quantize)
    return LatencyExport(files=files, params=model.params)


def int8_for_latency(fp32: Path, out_dir: Path, stem: str, device: DeviceProfile, settings: QuantizeSettings) -> Path:
    """The INT8 model the quantize stage's first INT8 mode would make of ``fp32`` (its timing, not its accuracy)."""
    graphs = prepare_graphs(fp32, out_dir, stem)
    options = int8_options(settings, device)
    modes = [m for m in expand_modes(settings.modes, transformer=graphs.transformer, precision="int8") if m != "fp16"]
    mode = modes[0] if modes else ("dynamic" if graphs.transformer else "static")
    target = out_dir / f"{stem}.int8.onnx"
    if mode == "dynamic":
        return quantize_dynamic_int8(graphs.optimized, target, options)
    calibration = [make_feeds(graphs.preprocessed, device.inputs, seed=i) for i in range(CALIBRATION_BATCHES)]
    return quantize_static_int8(graphs.preprocessed, target, options, calibration, "minmax",
                                op_types=sorted(WEIGHTED_OPS) if graphs.transformer else None)
