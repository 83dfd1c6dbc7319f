"""Pipelines as Python objects, one to one with recipes, and finished runs opened as objects.

The stage objects are the recipe's own config models under short names (``Teacher(epochs=3)`` is the
``{stage: teacher, epochs: 3}`` of a recipe), so a pipeline written in Python and one written in YAML
are the same thing and convert into each other::

    import edgekd
    from edgekd import Distill, Export, Pipeline, Profile, Report, Teacher

    pipeline = Pipeline(
        name="digits",
        data={"source": "sklearn", "name": "digits"},
        teacher={"arch": "cnn", "channels": [32, 64]},
        student={"arch": "cnn", "channels": [8, 16], "hidden": 32},
        stages=[Teacher(epochs=5), Distill(epochs=10), Export(), Profile(runs=50), Report()],
        device="host-cpu",
    )
    result = pipeline.run("runs/digits")          # the same RunResult as `edgekd run`
    run = edgekd.open_run("runs/digits")          # later, in another process
    student = run.load_model("student")           # the PyTorch module, rebuilt from safetensors

``data`` is a recipe's data mapping, or your own sets as PyTorch objects,
``{"train": Dataset | DataLoader, "test": ..., "val": ...}`` (``val`` optional), materialized and
fingerprinted by content as :mod:`edgekd.data.memory` describes.

Every argument is validated as the recipe is, with the same one-line errors naming the key
(``Pipeline(...): stages[1].lr: Input should be greater than 0``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel

from edgekd.config.device import DeviceProfile
from edgekd.config.loading import parse_yaml
from edgekd.config.paths import AS_WRITTEN, user_path
from edgekd.config.recipe import Recipe, load_recipe, validate_recipe
from edgekd.distill.config import DistillStage as Distill
from edgekd.distill.config import TeacherStage as Teacher
from edgekd.errors import ConfigError
from edgekd.export.config import BundleStage as Bundle
from edgekd.export.config import ExportStage as Export
from edgekd.pipeline import ReportFile, RunResult, load_run
from edgekd.profile.config import ProfileStage as Profile
from edgekd.prune.config import FactorizeStage as Factorize
from edgekd.prune.config import HybridStage as Hybrid
from edgekd.prune.config import PruneStage as Prune
from edgekd.quantize.config import QuantizeStage as Quantize
from edgekd.report.config import ReportStage as Report
from edgekd.run_plan import StagePlan
from edgekd.search.config import SearchStage as Search

__all__ = ["Bundle", "Distill", "Export", "Factorize", "Hybrid", "Pipeline", "Profile", "Prune", "Quantize", "Report",
           "Run", "Search", "Teacher", "open_run"]

SOURCE = "Pipeline(...)"


class Pipeline:
    """A recipe built from Python objects (see the module docstring); :attr:`recipe` is the validated recipe."""

    def __init__(self, *, data: Any, teacher: Any, student: Any, stages: list[Any], name: str = "pipeline",
                 device: str | Path = "host-cpu", seed: int = 0, tokenizer: Any = None, assistant: Any = None,
                 threads: int | str = "auto", description: str = "") -> None:
        if not isinstance(device, str | Path):  # str() of a DeviceProfile would be read as a profile's name
            raise ConfigError(f"{SOURCE}: device: expected a profile name or a YAML path, got {type(device).__name__}; "
                              "a DeviceProfile object goes to run(device=...) or plan(device=...)")
        _check_stage_list(stages)
        fields = {"name": name, "description": description, "seed": seed, "device": str(device), "threads": threads,
                  "data": _data(data), "tokenizer": _plain(tokenizer), "teacher": _role(teacher, "teacher"),
                  "assistant": _role(assistant, "assistant"), "student": _role(student, "student"),
                  "stages": [_plain(stage) for stage in stages]}
        self.recipe: Recipe = validate_recipe(fields, source=SOURCE, folder=Path.cwd())
        if self.recipe.data.source == "memory" and tokenizer is not None:
            raise ConfigError(f"{SOURCE}: tokenizer: the data given as Dataset/DataLoader objects is fed as given "
                              "(token ids already tokenized); leave tokenizer out")

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> Pipeline:
        """The pipeline of an already validated recipe."""
        pipeline = cls.__new__(cls)
        pipeline.recipe = recipe
        return pipeline

    @classmethod
    def from_yaml(cls, path: str | Path) -> Pipeline:
        """The pipeline of a recipe file, a built-in recipe's name, or YAML text (what :meth:`to_yaml` returns: a
        string of several lines; its relative paths start from the working directory)."""
        if isinstance(path, str) and "\n" in path:
            source = "Pipeline.from_yaml(text)"
            return cls.from_recipe(validate_recipe(parse_yaml(path, source), source=source, folder=Path.cwd()))
        return cls.from_recipe(load_recipe(path))

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The recipe as YAML (written to ``path`` when given); :meth:`from_yaml` reads it back unchanged.

        A model given as an ``nn.Module`` object, or data given as Dataset/DataLoader objects, cannot be
        written: :class:`ConfigError` names the part (its role, or ``data``).
        """
        if self.recipe.data.source == "memory":
            raise ConfigError(f"{SOURCE}.to_yaml(): data: the sets given as Dataset/DataLoader objects are not "
                              "serializable; save them as files (images: .npz, source: npz; text: TSV/CSV) to "
                              "write a recipe")
        for role in ("teacher", "assistant", "student"):
            holder = getattr(self.recipe, role)
            instance = getattr(holder.model, "instance", None) if holder is not None else None
            if instance is not None:
                raise ConfigError(f"{SOURCE}.to_yaml(): {role}: the module given as an object ({instance}) is not "
                                  "serializable; give it as 'package.module:factory' (with kwargs) instead")
        given = self.recipe.model_dump(mode="json", context=AS_WRITTEN, exclude_unset=True)  # defaults read as set
        text = yaml.safe_dump(given, sort_keys=False)
        if path is not None:
            user_path(path, "to_yaml(path)").write_text(text, encoding="utf-8")
        return text

    def run(self, out: str | Path | None = None, *, device: str | Path | DeviceProfile | None = None,
            budget_ms: float | None = None, threads: int | Literal["auto"] | None = None, fresh: bool = False,
            show_progress: bool = False) -> RunResult:
        """Run the pipeline as ``edgekd run`` does (finished stages in ``out`` are reused; ``device``, ``budget_ms``
        and ``threads`` as its ``--device``, ``--budget-ms`` and ``--threads``)."""
        import edgekd.api as api

        return api.run(self.recipe, device=device, out=out, budget_ms=budget_ms, threads=threads, fresh=fresh,
                       show_progress=show_progress)

    def plan(self, out: str | Path | None = None, *, device: str | Path | DeviceProfile | None = None,
             budget_ms: float | None = None, fresh: bool = False) -> list[StagePlan]:
        """What :meth:`run` would do, stage by stage (``edgekd run --dry-run``)."""
        import edgekd.api as api

        return api.plan(self.recipe, device=device, out=out, budget_ms=budget_ms, fresh=fresh)

    def __repr__(self) -> str:
        return f"Pipeline(name={self.recipe.name!r}, stages={self.recipe.stage_names()})"


def _check_stage_list(stages: Any) -> None:
    """``stages`` is a list (or tuple) of stage objects or mappings: one stage, or a stage class not called, is a
    one-line :class:`ConfigError` (pydantic read a lone stage's fields as the list's items)."""
    if not isinstance(stages, list | tuple):
        raise ConfigError(f"{SOURCE}: stages: expected a list of stages, got {type(stages).__name__}"
                          + (f"; write stages=[{type(stages).__name__}(...)]" if isinstance(stages, BaseModel) else ""))
    for index, stage in enumerate(stages):
        if isinstance(stage, type):
            raise ConfigError(f"{SOURCE}: stages[{index}]: the class {stage.__name__}, not a stage; call it "
                              f"({stage.__name__}(...))")


def _plain(value: Any) -> Any:
    """A config object as the mapping a recipe would hold; mappings and None pass through."""
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def _data(value: Any) -> Any:
    """The data config: ``{"train": Dataset, ...}`` sets are materialized (:mod:`edgekd.data.memory`)."""
    from collections.abc import Mapping

    from edgekd.data.memory import is_memory_data, register_data

    if not isinstance(value, Mapping | BaseModel):  # a Path was read as an object's attributes ('data.source: ...')
        raise ConfigError(f"{SOURCE}: data: expected a data mapping ({{'source': ...}}) or the sets {{'train': ..., "
                          f"'test': ...}}, got {type(value).__name__}")
    return register_data(value, SOURCE) if is_memory_data(value) else _plain(value)


def _role(value: Any, role: str) -> Any:
    """A model role: a spec (or its mapping) is wrapped as ``{model: spec}``; a role config passes through.

    An ``nn.Module`` object or a ``"package.module:factory"`` string is the user's own module (``arch: module``);
    a ``Path`` or a string ending in ``.onnx`` is an ONNX file (``arch: onnx``, a teacher).
    """
    from torch import nn

    from edgekd.models.user_module import register_object

    if isinstance(value, nn.Module):
        return {"model": {"arch": "module", "instance": register_object(value, f"{SOURCE}: {role}")}}
    if isinstance(value, Path) or isinstance(value, str) and value.lower().endswith(".onnx"):
        return {"model": {"arch": "onnx", "path": str(value)}}  # a trained model's ONNX file (a teacher)
    if isinstance(value, str):
        return {"model": {"arch": "module", "factory": value}}
    value = _plain(value)
    if isinstance(value, dict) and "arch" in value:
        return {"model": value}
    return value


@dataclass(frozen=True)
class Run(ReportFile):
    """A finished run directory, opened without running anything (:func:`open_run`)."""

    directory: Path
    recipe: Recipe
    device: DeviceProfile
    stages: tuple[dict[str, Any], ...]
    """Every finished stage's ``stage.json`` record, in order."""

    @property
    def report_path(self) -> Path:
        """The run's ``report.json`` (:meth:`report`, :meth:`report_record`)."""
        return self.directory / "report.json"

    def model_dir(self, role: str) -> Path:
        """The directory of the last saved PyTorch model of ``role`` (``teacher``, ``assistant``, ``student``)."""
        for record in reversed(self.stages):
            model = record.get("artifact", {}).get(role)
            if model and model.get("weights"):
                return self.directory / model["weights"]
        roles = sorted({r for record in self.stages for r in record.get("artifact", {})})
        raise ConfigError(f"{self.directory}: no saved '{role}' model; the run has: {', '.join(roles) or 'none'}")

    def load_model(self, role: str = "student") -> Any:
        """The PyTorch module of ``role``, rebuilt from its spec and safetensors weights (nothing is unpickled).

        A user's own module (``arch: module``) is rebuilt by calling its factory and comes back as the
        user's class, taking the input the user's ``forward`` takes. A causal LM comes back as its transformers
        model (its tokenizer is saved beside it: ``edgekd.models.causal_lm.load_tokenizer(run.model_dir(role))``).
        """
        from edgekd.models.causal_lm import is_causal_lm_dir, load_causal_lm
        from edgekd.models.task_model import TaskModel
        from edgekd.models.user_module import unwrap

        directory = self.model_dir(role)
        if is_causal_lm_dir(directory):
            return load_causal_lm(directory).eval()
        return unwrap(TaskModel.load(directory).module)


def open_run(directory: str | Path) -> Run:
    """A finished run directory as a :class:`Run` (its recipe, device profile, stage records, report, models)."""
    from edgekd.run_plan import check_recipe_matches

    directory = user_path(directory, "directory")
    recipe, device, records = load_run(directory)
    check_recipe_matches(directory, recipe, device, records, "cannot open the run")
    return Run(directory=directory, recipe=recipe, device=device, stages=tuple(records))
