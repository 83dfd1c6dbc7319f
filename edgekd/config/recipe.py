"""The recipe: data, teacher, student and the stages to run, in order."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, StrictInt, Tag, ValidationInfo, field_validator, model_validator

from edgekd.catalog import find
from edgekd.config.base import LocalPath, PathOrId, PositiveFloat, PositiveInt, Seed, StrictModel, spelt_pattern
from edgekd.config.loading import read_yaml, validate_model
from edgekd.config.overrides import Overrides, apply_overrides, override_list
from edgekd.config.paths import escaped, expanded_or_given
from edgekd.data.config import DataConfig, TokenizerConfig
from edgekd.data.image_defaults import with_model_defaults
from edgekd.models.architectures import ModelSpec
from edgekd.stages import DEFAULT_REGISTRY


class EnsembleConfig(StrictModel):
    """Several teachers of the same architecture trained with different seeds; soft targets are averaged."""

    members: Annotated[StrictInt, Field(ge=2)] = 3
    weighting: Literal["uniform", "accuracy"] | list[PositiveFloat] = Field(
        default="accuracy", description="'accuracy' weights each member by its validation accuracy."
    )

    @field_validator("weighting")
    @classmethod
    def _one_weight_per_member(cls, weighting: str | list[float], info: ValidationInfo) -> str | list[float]:
        members = info.data.get("members")
        if isinstance(weighting, list) and members is not None and len(weighting) != members:
            raise ValueError(f"{len(weighting)} weights for {members} members; expected one weight per member")
        return weighting


#: One path or a list of them; a list is validated as a list only, so an error names its item (``weights[1]``)
#: rather than also saying that a list is not a path.
OneOrMorePaths = Annotated[
    Annotated[LocalPath, Tag("one")] | Annotated[list[LocalPath], Tag("list")],
    Discriminator(lambda value: "list" if isinstance(value, list) else "one"),
]


class TeacherConfig(StrictModel):
    """The teacher: an architecture and, optionally, trained weights (else the ``teacher`` stage trains it)."""

    model: ModelSpec
    weights: OneOrMorePaths | None = Field(
        default=None, description="A .safetensors file of trained weights; for an ensemble, one per member."
    )
    ensemble: EnsembleConfig | None = None

    @field_validator("model", mode="before")
    @classmethod
    def _one_architecture(cls, value: Any) -> Any:
        if isinstance(value, list):
            raise ValueError(f"expected one model spec (a mapping with 'arch'), got a list of {len(value)}; an "
                             "ensemble is several members of this one architecture trained with different seeds "
                             "(teacher.ensemble: {members: N}), and teachers of different architectures cannot "
                             "form one")
        return value

    @field_validator("weights")
    @classmethod
    def _weights_are_safetensors(cls, value: Path | list[Path] | None) -> Path | list[Path] | None:
        for path in value if isinstance(value, list) else [value] if value is not None else []:
            if path.suffix != ".safetensors":
                raise ValueError(f"expected a .safetensors file, got '{path}'")
        return value

    @model_validator(mode="after")
    def _one_file_per_member(self) -> TeacherConfig:
        members = self.ensemble.members if self.ensemble else 1
        given = len(self.weights) if isinstance(self.weights, list) else 1
        if self.weights is not None and given != members:
            expected = f"a list of {members} .safetensors files (one per ensemble member)" if self.ensemble \
                else "one .safetensors file"
            raise ValueError(f"weights: expected {expected}, got {given}")
        return self

    @property
    def weight_files(self) -> list[Path]:
        """The given weight files, one per member (one without an ensemble); empty when none are given."""
        if self.weights is None:
            return []
        return list(self.weights) if isinstance(self.weights, list) else [self.weights]


class StudentConfig(StrictModel):
    """The architecture of a model that distillation trains (the student, or a teacher assistant)."""

    model: ModelSpec


StageConfig = DEFAULT_REGISTRY.config_union()


class Recipe(StrictModel):
    """A compression recipe: data, teacher, student and the stages to run, in order."""

    name: str = Field(pattern=spelt_pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", "a name of letters, digits, '_', '.' "
                                            "and '-', starting with a letter or digit (it names the run's files)"))
    description: str = ""
    seed: Seed = 0
    device: PathOrId = Field(default="host-cpu", description="A profile name from devices/ or a YAML path.")
    threads: PositiveInt | Literal["auto"] = Field(
        default="auto", description="torch threads for training; auto = the physical cores this process may use.")
    data: DataConfig
    tokenizer: TokenizerConfig | None = Field(default=None, description="For text data; default trains WordPiece.")
    teacher: TeacherConfig
    assistant: StudentConfig | None = Field(default=None, description="A teacher assistant between the two.")
    student: StudentConfig
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _image_preprocessing_from_models(cls, values: Any) -> Any:
        """Image files are prepared as the recipe's Hugging Face model says (:mod:`edgekd.data.image_defaults`)."""
        return with_model_defaults(values)

    def stage_names(self) -> list[str]:
        """The stage kinds in run order."""
        return [s.stage for s in self.stages]


def load_recipe(name_or_path: str | Path, overrides: Overrides = None) -> Recipe:
    """Load a recipe by built-in name (``demo-digits``) or path, with ``overrides`` (``KEY=VALUE``,
    :mod:`edgekd.config.overrides`) set in it before it is validated.

    ``~`` and environment variables (``$VAR``, ``${VAR}``) in its paths are expanded (:mod:`edgekd.config.paths`);
    its relative paths are relative to the recipe file; so are ``device`` and a stage's export ``target`` when
    they name a YAML file found there (a profile or preset beside the recipe), and a ``pretrained`` checkpoint or
    ``image_processor`` when it names a directory there; else each is a built-in name, a hub id or a path from the
    working directory as given.
    """
    path = find("pipelines", name_or_path)
    overrides = override_list(overrides)
    source = f"{path} (with --set {' '.join(overrides)})" if overrides else str(path)
    recipe = validate_recipe(apply_overrides(read_yaml(path), overrides), source=source, folder=path.parent)
    stages = [stage.model_copy(update={"target": _beside(path, stage.target)})
              if isinstance(getattr(stage, "target", None), str) else stage for stage in recipe.stages]
    return recipe.model_copy(update={"device": _beside(path, recipe.device), "stages": stages})


def validate_recipe(data: Any, *, source: str, folder: Path, expanded: bool = False) -> Recipe:
    """The recipe of parsed ``data`` (a mapping; ``expanded``: one edgekd wrote, its paths expanded already) whose
    relative paths start from ``folder``: the recipe file's, or the working directory for one given in Python. Its
    path fields, and a ``pretrained`` checkpoint or ``image_processor`` naming a directory there, are made absolute,
    so that the run record names the same files from any working directory (``edgekd report``, ``open_run``)."""
    return validate_model(_checkpoints_beside(data, folder, expanded), Recipe, source=source, base_dir=folder,
                          expanded=expanded)


#: Recipe keys whose value is a hub id or a local directory (a checkpoint, a tokenizer, an image processor).
CHECKPOINT_KEYS = ("pretrained", "image_processor")


def _checkpoints_beside(values: Any, folder: Path, expanded: bool) -> Any:
    """Raw recipe ``values`` with every :data:`CHECKPOINT_KEYS` value that names a directory in ``folder`` made that
    directory's absolute path, before validation reads it (image preprocessing defaults look for the teacher's
    processor files there); ``expanded``: the values' ``~`` and variables are expanded already."""
    if isinstance(values, list):
        return [_checkpoints_beside(item, folder, expanded) for item in values]
    if not isinstance(values, dict):
        return values
    out = {}
    for key, value in values.items():
        local = "" if key not in CHECKPOINT_KEYS or not isinstance(value, str) else \
            value if expanded else expanded_or_given(value)
        if local and not local.startswith("pypi:") and not Path(local).is_absolute() and (folder / local).is_dir():
            absolute = str((folder / local).resolve())
            out[key] = absolute if expanded else escaped(absolute)  # else validated (expanded) again as the value
        else:
            out[key] = _checkpoints_beside(value, folder, expanded)
    return out


def _beside(recipe: Path, name: str) -> str:
    """``name`` (expanded when its field was validated) as the path of the YAML file beside ``recipe`` when it
    names one there, else as given."""
    relative = Path(name)
    beside = recipe.parent / relative
    if name.endswith((".yaml", ".yml")) and not relative.is_absolute() and beside.is_file():
        return str(beside.resolve())
    return name
