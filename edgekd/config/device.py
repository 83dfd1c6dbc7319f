"""Device profiles: how a target runs a model, the budget it must fit, and how its speed is estimated."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, StrictInt, field_validator

from edgekd.catalog import find
from edgekd.config.base import PositiveFloat, PositiveInt, StrictModel
from edgekd.config.loading import load_yaml_model, validate_model
from edgekd.errors import ConfigError, ConfigTypeError
from edgekd.profile.cpu import KNOWN_ISA
from edgekd.profile.references import REFERENCE_MODELS

#: The largest batch and token count a device profile may run: beyond them one input alone would take gigabytes
#: (and onnx refuses dimensions past 2**31 only when the model is exported, after training).
MAX_BATCH, MAX_SEQUENCE = 4096, 32768


class InputShape(StrictModel):
    """Input shapes the device runs: dynamic axes of a model are filled from these."""

    batch: Annotated[StrictInt, Field(gt=0, le=MAX_BATCH)] = 1
    sequence_length: Annotated[StrictInt, Field(gt=0, le=MAX_SEQUENCE)] = 128
    image_size: PositiveInt | None = Field(
        default=None, description="Side of a square image input; null keeps the model's own size."
    )


class GenerationShape(StrictModel):
    """How a causal language model is run on the device: a prompt, then new tokens one at a time."""

    prompt_tokens: PositiveInt = Field(default=32, description="Tokens of prompt before the first new token.")
    new_tokens: Annotated[StrictInt, Field(ge=2)] = Field(
        default=64, description="Tokens generated after the prompt (at least 2: the first comes with the prompt "
        "call, per-token latency is timed from the second).")


class Budget(StrictModel):
    """What the exported model must fit in on the device."""

    p90_ms: PositiveFloat
    size_mb: PositiveFloat
    peak_memory_mb: PositiveFloat
    ms_per_token: PositiveFloat | None = Field(
        default=None, description="A causal LM's per-token p90 latency limit; unset, p90_ms applies per token.")


class ReferenceFigure(StrictModel):
    """A published latency of a public model on the device, used to derive a host→device ratio."""

    model: Literal[tuple(REFERENCE_MODELS)]  # type: ignore[valid-type]  # the keys of the reference registry
    latency_ms: PositiveFloat
    threads: PositiveInt
    source: str = Field(min_length=10, description="Where the figure was published.")


class DeviceProfile(StrictModel):
    """A target device: how it runs the model, what it must fit, and how to estimate its speed."""

    name: str = Field(min_length=1)
    description: str = ""
    threads: PositiveInt | Literal["auto"] = "auto"
    inputs: InputShape = InputShape()
    generation: GenerationShape = GenerationShape()
    budget: Budget
    precision: Literal["fp32", "fp16", "int8"] = "fp32"
    isa: list[str] | Literal["detect"] = Field(
        default="detect", description="Instruction-set features; 'detect' reads them from this CPU."
    )

    @field_validator("isa")
    @classmethod
    def _known_isa(cls, isa: list[str] | str) -> list[str] | str:
        unknown = [name for name in isa if name not in KNOWN_ISA] if isinstance(isa, list) else []
        if unknown:
            raise ValueError(f"unknown instruction-set feature {', '.join(map(repr, unknown))}; "
                             f"expected 'detect' or names from: {', '.join(KNOWN_ISA)}")
        return isa
    reference: ReferenceFigure | None = Field(
        default=None,
        description="Set for devices edgekd cannot run on: latencies are then estimates.",
    )

    @property
    def is_estimate(self) -> bool:
        """True when latencies on this device are estimated from the host through a speed ratio."""
        return self.reference is not None


#: What names a device profile wherever one is taken (see :func:`load_device`).
DeviceLike = str | Path | Mapping[str, Any] | DeviceProfile


def load_device(device: DeviceLike) -> DeviceProfile:
    """A device profile: by built-in name (``host-cpu``), YAML path, a mapping of a profile file's keys, or as
    given (a :class:`DeviceProfile`); any other type is a :class:`~edgekd.errors.ConfigTypeError`."""
    if isinstance(device, DeviceProfile):
        return device
    if isinstance(device, Mapping):
        return validate_model(dict(device), DeviceProfile, source="device mapping")
    if not isinstance(device, str | Path):
        raise ConfigTypeError(f"device: expected a built-in name, a YAML path, a mapping or a DeviceProfile, "
                              f"got {type(device).__name__}")
    return load_yaml_model(find("devices", device), DeviceProfile)


def with_budget(device: DeviceProfile, p90_ms: float | None) -> DeviceProfile:
    """``device`` with its p90 latency budget replaced by ``p90_ms`` (unchanged for None)."""
    if p90_ms is None:
        return device
    if isinstance(p90_ms, bool) or not isinstance(p90_ms, numbers.Real):  # True would read as 1 ms
        raise ConfigError(f"--budget-ms: expected a number of milliseconds, got {p90_ms!r}")
    p90_ms = float(p90_ms)  # a numpy number too
    data = device.model_dump(mode="json")
    data["budget"]["p90_ms"] = p90_ms
    if data["budget"].get("ms_per_token") is not None:  # a causal LM's latency limit is per token
        data["budget"]["ms_per_token"] = p90_ms
    return validate_model(data, DeviceProfile, source="--budget-ms")
