"""Optimizer settings shared by every stage that trains (teacher, distill, recovery, search)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from edgekd.config.base import Epochs, PositiveFloat, PositiveInt, StrictModel


class TrainingConfig(StrictModel):
    """Optimizer settings shared by every stage that trains (AdamW, linear warm-up then linear decay)."""

    epochs: Epochs = 10
    batch_size: PositiveInt = 64
    lr: PositiveFloat = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.0
    max_grad_norm: PositiveFloat | None = Field(default=None, description="Clip the gradient norm to this.")
    patience: PositiveInt | None = Field(
        default=None, description="Stop after this many epochs without a better validation accuracy."
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        default="no", description="Autocast forward passes to this precision (accelerate); 'fp16' needs CUDA GPUs."
    )

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        """``mixed_precision: no`` unquoted, as the docs write it, is YAML's false."""
        return "no" if value is False else value
    gradient_accumulation_steps: PositiveInt = Field(
        default=1,
        description="Compute each batch of batch_size examples in this many sequential parts per process "
        "(less memory, same batch).",
    )

    @field_validator("gradient_accumulation_steps")
    @classmethod
    def _parts_fit_batch(cls, steps: int, info: ValidationInfo) -> int:
        batch_size = info.data.get("batch_size")
        if batch_size is not None and steps > batch_size:
            raise ValueError(f"{steps} accumulation steps for a batch_size of {batch_size} leave some steps without "
                             f"examples; expected at most {batch_size}")
        return steps
