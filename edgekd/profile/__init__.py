"""Profiling exported models: onnxruntime sessions under a device profile's threads and shapes.

The public names are imported lazily so that ``python -m edgekd.profile.worker`` (the timing
process) does not load torch or transformers through this package:

- :func:`profile_onnx`, :class:`ProfileResult` (:mod:`edgekd.profile.runner`)
- :func:`judge` (:mod:`edgekd.profile.budget`), :class:`BudgetVerdict` (:mod:`edgekd.profile.verdict_record`)
- :class:`SpeedRatio` (:mod:`edgekd.profile.speed_ratio`; its function ``speed_ratio`` is
  reached through that module, whose name it shares)
- :func:`detect_cpu`, :class:`CpuInfo`, :func:`resolve_threads`, :func:`device_isa` (:mod:`edgekd.profile.cpu`)
- :func:`make_feeds` (:mod:`edgekd.profile.inputs`)
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "profile_onnx": "runner", "ProfileResult": "runner",
    "judge": "budget", "BudgetVerdict": "verdict_record",
    "SpeedRatio": "speed_ratio",
    "detect_cpu": "cpu", "CpuInfo": "cpu", "resolve_threads": "cpu", "device_isa": "cpu",
    "make_feeds": "inputs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name from its submodule on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edgekd.profile' has no attribute '{name}'")
    return getattr(importlib.import_module(f"edgekd.profile.{_EXPORTS[name]}"), name)
