"""Quantization settings that fit an instruction set, and what ``modes: [auto]`` tries.

onnxruntime's CPU INT8 kernels multiply uint8 activations by int8 weights (u8s8). With int8
dot-product instructions (x86 VNNI or AMX, ARM ``dotprod``/``i8mm``) that is the fast path at full
range. On x86 with AVX2 but no VNNI, u8s8 runs on ``VPMADDUBSW``, whose 16-bit intermediate sums
can saturate with full-range weights, so weights are reduced to 7 bits there (onnxruntime's own
advice). uint8 weights (Optimum's ``avx2`` preset) take the slow u8u8 path everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from edgekd.stage_record import FullRecord

#: ISA features that give int8 dot products, fastest first.
INT8_DOT_PRODUCT: tuple[str, ...] = ("amx_int8", "avx512_vnni", "avx_vnni", "i8mm", "dotprod")
_X86_SIMD = ("avx512f", "avx2")

Mode = Literal["dynamic", "static", "fp16"]


class Int8Settings(FullRecord):
    """Data types and weight range for INT8 on one instruction set, and why."""

    activation_type: Literal["uint8", "int8"]
    weight_type: Literal["uint8", "int8"]
    reduce_range: bool
    why: str


def int8_settings(isa: Sequence[str]) -> Int8Settings:
    """The INT8 settings for a CPU with the (normalized) ISA features ``isa``."""
    dot = [feature for feature in INT8_DOT_PRODUCT if feature in isa]
    if dot:
        return Int8Settings(activation_type="uint8", weight_type="int8", reduce_range=False,
                            why=f"u8s8 at full range on int8 dot products ({', '.join(dot)})")
    if any(feature in isa for feature in _X86_SIMD):
        return Int8Settings(activation_type="uint8", weight_type="int8", reduce_range=True,
                            why="u8s8 with 7-bit weights: without VNNI, VPMADDUBSW saturates on full-range weights")
    return Int8Settings(activation_type="uint8", weight_type="int8", reduce_range=False,
                        why="u8s8 at full range (no int8 dot-product instructions declared)")


def isa_label(isa: Sequence[str]) -> str:
    """A short name of what the ISA offers INT8: its dot-product features, else its widest SIMD."""
    dot = [feature for feature in INT8_DOT_PRODUCT if feature in isa]
    if dot:
        return ", ".join(dot)
    simd = next((feature for feature in (*_X86_SIMD, "neon") if feature in isa), None)
    return f"{simd}-only" if simd else "no SIMD features declared"


def expand_modes(modes: Sequence[str], *, transformer: bool, precision: str, calibrated: bool = True) -> list[Mode]:
    """The modes to try, in order, with ``auto`` replaced by what fits the model and device.

    ``auto`` tries dynamic INT8 for transformers (weights dominate; activations vary per input)
    and static INT8 for other models (convolutions have no fast dynamic kernels), plus FP16
    weights when the device prefers fp16. Without calibration data (``calibrated`` false) static
    INT8 cannot be made, so ``auto`` tries dynamic INT8 for every model.
    """
    expanded: list[Mode] = []
    for mode in modes:
        if mode == "auto":
            chosen: list[Mode] = ["dynamic" if transformer or not calibrated else "static"]
            chosen += ["fp16"] if precision == "fp16" else []
        else:
            chosen = [mode]  # type: ignore[list-item]
        expanded += [m for m in chosen if m not in expanded]
    return expanded
