"""What CPU this is: brand, architecture, core counts and the instruction-set features that matter.

Only the features that change how fast a model runs are kept (SIMD width, FMA, INT8/BF16 dot
products, matrix units), under one normalized spelling per feature whatever the source calls it
(``avx512vnni`` and ``avx512_vnni`` are both ``avx512_vnni``; ARM's ``asimd`` is ``neon`` and
``asimddp`` is ``dotprod``).
"""

from __future__ import annotations

import functools
import logging
import os
import platform
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict

if TYPE_CHECKING:
    from edgekd.config.device import DeviceProfile

#: Every ISA name :func:`detect_cpu` can report, in the order it reports them.
KNOWN_ISA: tuple[str, ...] = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
    "neon", "fphp", "asimdhp", "dotprod", "i8mm", "bf16", "sve", "sve2",
)

# Raw flag spellings (from py-cpuinfo, /proc/cpuinfo or sysctl) → the normalized name.
_ALIASES: dict[str, str] = {
    "sse4_2": "sse4_2", "sse4.2": "sse4_2",
    "avx": "avx", "avx2": "avx2", "fma": "fma", "fma3": "fma", "f16c": "f16c",
    "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
    "avx512vnni": "avx512_vnni", "avx512_vnni": "avx512_vnni",
    "avxvnni": "avx_vnni", "avx_vnni": "avx_vnni",
    "avx512bf16": "avx512_bf16", "avx512_bf16": "avx512_bf16",
    "avx512fp16": "avx512_fp16", "avx512_fp16": "avx512_fp16",
    "amx_tile": "amx_tile", "amxtile": "amx_tile",
    "amx_int8": "amx_int8", "amxint8": "amx_int8",
    "amx_bf16": "amx_bf16", "amxbf16": "amx_bf16",
    "neon": "neon", "asimd": "neon",
    "fphp": "fphp", "asimdhp": "asimdhp",
    "asimddp": "dotprod", "dotprod": "dotprod",
    "i8mm": "i8mm", "bf16": "bf16", "sve": "sve", "sve2": "sve2",
}


@dataclass(frozen=True)
class CpuInfo:
    """The host CPU as far as inference speed is concerned (``report.json``'s ``cpu``: unknown keys are refused)."""

    __pydantic_config__ = ConfigDict(extra="forbid")

    brand: str
    arch: str
    logical_cores: int
    physical_cores: int
    isa: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (``isa`` as a list)."""
        data = asdict(self)
        data["isa"] = list(self.isa)
        return data


def normalize_isa(flags: list[str] | set[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Keep the relevant features of raw CPU ``flags``, normalized and in :data:`KNOWN_ISA` order."""
    found = {_ALIASES[flag.lower()] for flag in flags if flag.lower() in _ALIASES}
    if platform.machine().lower() in ("aarch64", "arm64"):
        found.add("neon")  # Advanced SIMD is mandatory on ARMv8-A, even where no flag names it.
    return tuple(name for name in KNOWN_ISA if name in found)


@functools.cache
def detect_cpu() -> CpuInfo:
    """Detect this machine's CPU once per process (py-cpuinfo for brand and flags, psutil for cores).

    ``logical_cores`` and ``physical_cores`` are capped at the CPUs this process may run on
    (its affinity mask), so a container limited to two cores reports two.
    """
    import cpuinfo
    import psutil

    info = cpuinfo.get_cpu_info()
    logical = psutil.cpu_count(logical=True) or os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or logical
    if hasattr(os, "sched_getaffinity"):
        allowed = len(os.sched_getaffinity(0))
        logical, physical = min(logical, allowed), min(physical, allowed)
    brand = str(info.get("brand_raw") or platform.processor() or "unknown CPU").strip()
    return CpuInfo(
        brand=brand,
        arch=str(info.get("arch_string_raw") or platform.machine()),
        logical_cores=int(logical),
        physical_cores=int(physical),
        isa=normalize_isa(info.get("flags", [])),
    )


def host_threads(requested: int) -> int:
    """``requested`` threads capped at this machine's physical cores (never below one); a cap is said once."""
    cores = detect_cpu().physical_cores
    if requested > cores:
        _say_capped(requested, cores)
    return max(1, min(requested, cores))


@functools.cache
def _say_capped(requested: int, cores: int) -> None:
    logging.getLogger(__name__).info("the device's %d threads are more than this machine's %d physical cores: "
                                     "timing with %d (the records show the count used)", requested, cores, cores)


def resolve_threads(device: DeviceProfile) -> int:
    """The device profile's thread count; ``"auto"`` means this machine's physical cores."""
    return detect_cpu().physical_cores if device.threads == "auto" else device.threads


def device_isa(device: DeviceProfile) -> list[str]:
    """The device profile's ISA features; ``"detect"`` reads them from this CPU."""
    return list(detect_cpu().isa) if device.isa == "detect" else list(device.isa)
