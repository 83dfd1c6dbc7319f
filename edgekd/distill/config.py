"""Settings of the ``teacher`` and ``distill`` stages."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, model_validator

from edgekd.config.base import LocalPath, PositiveInt, StrictModel
from edgekd.config.training import TrainingConfig
from edgekd.digest import file_digest
from edgekd.distill.losses.hinton import HintonLoss
from edgekd.distill.losses.registry import LossConfig, build_loss
from edgekd.distill.outputs import ModelInfo
from edgekd.errors import ConfigError
from edgekd.models.embeddings import check_embedding_width
from edgekd.models.specs import spec_of
from edgekd.stage_kind import PlanState, StageKind, check_losses_fit

if TYPE_CHECKING:
    from edgekd.config.recipe import Recipe


class AugmentConfig(StrictModel):
    """Tang et al. (2019) transfer-set augmentation: masked tokens and n-gram samples, labelled by the teacher."""

    copies: PositiveInt = Field(default=10, description="Augmented sentences per training sentence.")
    p_mask: Annotated[float, Field(ge=0, le=1)] = 0.1
    p_ngram: Annotated[float, Field(ge=0, le=1)] = 0.25
    max_ngram: PositiveInt = 5


class TeacherStage(TrainingConfig):
    """Train the teacher on the hard labels, or load and evaluate ``teacher.weights`` when given."""

    stage: Literal["teacher"] = "teacher"


class DistillSettings(TrainingConfig):
    """How a student is distilled: training settings, the weighted ``losses`` and the transfer set."""

    losses: list[LossConfig] = Field(default_factory=lambda: [HintonLoss(kind="hinton")], min_length=1)
    cache_teacher: bool = Field(
        default=True, description="Compute the teacher outputs the losses read once, memory-mapped on disk "
        "(float16 hidden states/attention maps: turn off for transfer sets too large for the disk)."
    )
    teacher_cache_dir: LocalPath | None = Field(
        default=None, description="Keep cached teacher outputs here, shared between runs (a subdirectory per "
        "teacher, transfer set and stored layers; for a causal LM, the teacher's sequence_kd continuations); "
        "default: inside the stage, deleted after training."
    )
    augment: AugmentConfig | None = None


class DistillStage(DistillSettings):
    """Distil ``student`` from ``teacher`` with a weighted sum of ``losses``."""

    stage: Literal["distill"] = "distill"
    teacher: Literal["teacher", "assistant"] = "teacher"
    student: Literal["student", "assistant"] = "student"

    @model_validator(mode="after")
    def _roles_differ(self) -> DistillStage:
        if self.teacher == self.student:
            raise ValueError(f"teacher and student must be different models, both are '{self.teacher}'")
        return self


def _teacher_weight_digests(_config: TeacherStage, recipe: Recipe) -> dict[str, Any]:
    """Digests of the given teacher weights (a list for an ensemble) or of the files its model is read from (an ONNX
    file's): new ones re-run the stage."""
    digests = [file_digest(path) for path in recipe.teacher.weight_files]
    inputs: dict[str, Any] = {"teacher_weights_sha256": digests if len(digests) > 1 else next(iter(digests), None)}
    content = recipe.teacher.model.content_digest()
    if content is not None:
        inputs["teacher_onnx_sha256"] = content
    return inputs


def _check_distill(config: DistillStage, state: PlanState, where: str) -> None:
    """Its teacher trained earlier, a new student, an assistant spec when it trains one, losses both models have."""
    recipe = state.recipe
    if config.teacher not in state.trained:
        before = "a 'teacher' stage" if config.teacher == "teacher" else "a 'distill' stage into 'assistant'"
        raise state.fail(f"{where}.teacher", f"distilling from '{config.teacher}' needs {before} before it")
    if config.student == "assistant" and recipe.assistant is None:
        raise state.fail(f"{where}.student", "'assistant' needs a top-level 'assistant' with a model")
    if config.student in state.trained:
        raise state.fail(f"{where}.student", f"'{config.student}' is already trained by an earlier stage")
    if config.augment is not None and recipe.data.modality != "text":
        raise state.fail(f"{where}.augment", f"augmentation makes new sentences: it needs text data, and "
                         f"data.source '{recipe.data.source}' gives images")
    if config.augment is not None and recipe.data.source == "memory":
        raise state.fail(f"{where}.augment", "augmentation makes new sentences from raw text; data given in Python "
                         "is already token ids")
    ensemble = config.teacher == "teacher" and recipe.teacher.ensemble is not None
    if ensemble:
        for index, loss in enumerate(config.losses):
            if loss.kind != "hinton":
                raise state.fail(f"{where}.losses[{index}].kind", "distilling from an ensemble transfers averaged "
                                 f"soft targets only: use 'hinton' (got '{loss.kind}'), or a single teacher")
    check_losses_fit(config.losses, config.student, config.teacher, state, f"{where}.losses")
    _check_loss_sizes(config, state, where)
    check_embedding_width(spec_of(recipe, config.student), spec_of(recipe, config.teacher), state.fail,
                          f"{config.student}.model")
    compared = sorted({need for loss in config.losses for need in loss.needs})
    if compared and config.cache_teacher and recipe.data.modality != "text":
        raise state.fail(f"{where}.cache_teacher", f"the teacher-output cache stores {', '.join(compared)} per "
                         "token of text; for image transformers set cache_teacher: false")


def _check_loss_sizes(config: DistillStage, state: PlanState, where: str) -> None:
    """Build each loss for the two models' declared sizes, as the run will once they are built: a layer map that
    does not fit their depths or MiniLM ``relation_heads`` that do not divide their widths is refused before the
    teacher trains. Models whose sizes only the built model tells are checked when the stage runs."""
    student = ModelInfo.declared(getattr(state.recipe, config.student).model)
    teacher = ModelInfo.declared(getattr(state.recipe, config.teacher).model)
    if student is None or teacher is None:
        return
    for index, loss in enumerate(config.losses):
        try:
            build_loss(loss, student, teacher)
        except ConfigError as exc:
            raise state.fail(f"{where}.losses[{index}]", str(exc)) from None


TEACHER = StageKind(
    TeacherStage, "edgekd.distill.stage:run_teacher", reads=("seed", "data", "tokenizer", "teacher"),
    extra_inputs=_teacher_weight_digests, data_parallel=True, shareable=True, trains=lambda _config: "teacher",
    record="edgekd.distill.record:read_teacher_record")
DISTILL = StageKind(
    DistillStage, "edgekd.distill.stage:run_distill", reads=lambda config: ("seed", "data", config.student),
    data_parallel=True, repeatable=True, check=_check_distill, trains=lambda config: config.student,
    record="edgekd.distill.record:read_distill_record")
KINDS = (TEACHER, DISTILL)
