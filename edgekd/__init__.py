"""edgekd: turn a big, accurate model into a small, fast one that fits an edge device's budget, and prove it.

The API: :func:`run`, :func:`plan`, :func:`compress`, :func:`validate` and :func:`profile` (the same
functions as :mod:`edgekd.api`), and pipelines as objects: :class:`Pipeline`, its stage objects
(:class:`Teacher`, :class:`Distill`, ...) and :func:`open_run` (:mod:`edgekd.workflow`). They are
loaded on first use, so that light entry points (the profiling worker, ``edgekd devices list``) do not
pay for the whole pipeline.

``edgekd.profile`` is also the name of the profiling subpackage. Python binds a subpackage to its
parent's attribute on import, so a plain function of that name would be replaced by the package the first
time anything imports ``edgekd.profile.<module>``. Instead, ``edgekd.profile`` is always the subpackage,
and calling it calls :func:`edgekd.api.profile`: ``edgekd.profile("model.onnx", device="host-cpu")``
works before and after any import.
"""

from __future__ import annotations

import types
from typing import Any

from edgekd.version import __version__

_API = ("compress", "plan", "run", "validate")
#: Pipelines as objects (:mod:`edgekd.workflow`): the stage objects, ``Pipeline``, ``open_run``.
_WORKFLOW = ("Bundle", "Distill", "Export", "Factorize", "Hybrid", "Pipeline", "Profile", "Prune", "Quantize",
             "Report", "Run", "Search", "Teacher", "open_run")

__all__ = ["__version__", "profile", *_API, *_WORKFLOW]


class _CallablePackage(types.ModuleType):
    """The ``edgekd.profile`` subpackage, callable as :func:`edgekd.api.profile`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from edgekd.api import profile as profile_onnx

        return profile_onnx(*args, **kwargs)


from edgekd import profile  # noqa: E402 - the subpackage is light: its public names are imported lazily

profile.__class__ = _CallablePackage


def __getattr__(name: str) -> Any:
    if name in ("api", "workflow"):  # `import edgekd; edgekd.api.bench(...)`, as the docs write it
        import importlib

        return importlib.import_module(f"edgekd.{name}")
    if name in _API:
        from edgekd import api

        return getattr(api, name)
    if name in _WORKFLOW:
        from edgekd import workflow

        return getattr(workflow, name)
    raise AttributeError(f"module 'edgekd' has no attribute {name!r}")
