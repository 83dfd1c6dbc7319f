"""The ``dataset_distill`` stage's configuration: which method learns the synthetic set, and how it is judged."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from edgekd.config.base import Epochs, PositiveFloat, PositiveInt, StrictModel
from edgekd.models.architectures import IMAGE_ARCHS
from edgekd.stage_kind import PlanState, StageKind

Method = Literal["meta", "gradient_matching", "distribution_matching"]

#: Each method's learning rate for the synthetic images (Adam), measured on digits at 1 image per class.
METHOD_LR: dict[str, float] = {"meta": 0.01, "gradient_matching": 0.01, "distribution_matching": 0.05}


class AugmentSettings(StrictModel):
    """Differentiable augmentation (Zhao & Bilen 2021, DSA): one random affine warp per image, no flips."""

    enabled: bool = Field(default=False, description="Off by default: on digits, DM reached 85.7% at 1 image per "
                          "class without it, 72.7% with it (500 iterations).")
    scale: Annotated[float, Field(ge=0, lt=0.5)] = 0.1
    rotate_degrees: Annotated[float, Field(ge=0, le=45)] = 10.0
    translate: Annotated[float, Field(ge=0, lt=0.5)] = Field(
        default=0.125, description="Largest shift as a share of the image side (0.125: one pixel of 8).")


class EvaluationSettings(StrictModel):
    """How a set is judged: fresh, randomly initialised models of the family trained on it alone."""

    inits: Annotated[int, Field(ge=1)] = Field(default=5, description="Fresh initialisations trained per set.")
    random_draws: Annotated[int, Field(ge=1)] = Field(default=5, description="Random real subsets drawn.")
    steps: PositiveInt = Field(default=300, description="Training steps on a small set (synthetic, subset, coreset).")
    full_epochs: Epochs = Field(default=30, description="Epochs the full training set (the reference) is first "
                                "trained, never fewer steps than 'steps'.")
    full_doublings: Annotated[int, Field(ge=0, le=6)] = Field(
        default=3, description="Times the full set's steps may double while a model's validation accuracy rises: "
        "the reference is trained until it stops improving, not cut short.")
    batch_size: PositiveInt = 256
    lr: PositiveFloat = 0.001
    augment: bool = Field(default=False, description="Train with the stage's differentiable augmentation too.")
    baselines: bool = Field(default=True, description="Also evaluate random real, coreset and full training set.")


class DatasetDistillStage(StrictModel):
    """Learn ``images_per_class`` synthetic training examples per class for the recipe's student family.

    ``meta``: Wang et al. (2018), unrolled inner steps with learned step sizes; ``gradient_matching``:
    Zhao, Mopuri & Bilen (2021, DC); ``distribution_matching``: Zhao & Bilen (2023, DM). ``labels``:
    ``hard`` (one-hot), ``learned`` (soft labels learned with the images; meta only) or ``teacher``
    (the trained teacher's soft labels for the synthetic images, at ``temperature``).
    """

    stage: Literal["dataset_distill"]
    method: Method = "distribution_matching"
    images_per_class: PositiveInt = 10
    role: Literal["student", "teacher"] = Field(default="student", description="Whose model family is distilled for.")
    labels: Literal["hard", "learned", "teacher"] = "hard"
    temperature: PositiveFloat = 4.0
    iterations: PositiveInt = Field(default=1000, description="Outer updates of the synthetic set.")
    lr: PositiveFloat | None = Field(
        default=None, description="Learning rate of the synthetic images (Adam); unset: the method's own (image_lr).")
    batch_real: PositiveInt = Field(default=128, description="Real examples per class in each matching step.")
    init: Literal["real", "noise"] = "real"
    inner_steps: PositiveInt = Field(default=10, description="meta: unrolled training steps per outer update.")
    inner_lr: PositiveFloat = Field(default=0.01, description="meta: initial step size (learned per step).")
    outer_loop: PositiveInt = Field(
        default=1, description="gradient_matching: synthetic updates per initialisation (DC's outer loop).")
    inner_loop: PositiveInt = Field(
        default=5, description="gradient_matching: network steps on the synthetic set between them (inner loop).")
    augment: AugmentSettings = Field(default_factory=AugmentSettings)
    evaluation: EvaluationSettings = Field(default_factory=EvaluationSettings)
    coreset: Literal["herding", "k_center"] = "herding"

    @property
    def image_lr(self) -> float:
        """The learning rate of the synthetic images: ``lr``, else the method's (:data:`METHOD_LR`)."""
        return self.lr if self.lr is not None else METHOD_LR[self.method]

    @model_validator(mode="after")
    def _learned_labels_need_meta(self) -> DatasetDistillStage:
        if self.labels == "learned" and self.method != "meta":
            raise ValueError(f"labels: 'learned' needs method 'meta' (method '{self.method}' matches per class)")
        return self


def _check_dataset_distill(config: DatasetDistillStage, state: PlanState, where: str) -> None:
    """Image data (no gradient reaches a token id) and, for ``labels: teacher``, a teacher trained before it.

    The models' own modality matches the data's (checked for every recipe), so image data means an image family.
    """
    recipe = state.recipe
    if recipe.data.modality != "image":
        raise state.fail(f"{where}.method", f"'{config.method}' learns synthetic images, but data.source "
                         f"'{recipe.data.source}' gives {recipe.data.modality} (token ids cannot be learnt by "
                         "gradient); use image data")
    arch = getattr(recipe, config.role).model.arch
    if arch not in IMAGE_ARCHS:
        raise state.fail(f"{where}.role", f"dataset distillation builds fresh {config.role} networks of a family it "
                         f"can differentiate to the inputs; {config.role}.model.arch '{arch}' is not one of "
                         f"{', '.join(IMAGE_ARCHS)}")
    if config.labels == "teacher" and "teacher" not in state.trained:
        raise state.fail(f"{where}.labels", "'teacher' needs a 'teacher' stage before it (its soft labels label "
                         "the synthetic images)")


DATASET_DISTILL = StageKind(
    DatasetDistillStage, "edgekd.dataset_distill.stage:run_dataset_distill",
    reads=lambda config: ("seed", "data", config.role), repeatable=True, check=_check_dataset_distill,
    record="edgekd.dataset_distill.record:read_dataset_distill_record")
KINDS = (DATASET_DISTILL,)
