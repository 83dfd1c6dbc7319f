"""Python's module cache after an interrupted import: what a Ctrl-C in the middle of a stage leaves behind.

edgekd imports heavy libraries (matplotlib, transformers, onnxruntime's tools) inside the stage that needs them. A
Ctrl-C while such an import runs removes the package being imported from ``sys.modules`` but keeps the submodules it
had already loaded, bound to the half-built package object. The next import of the package in that process builds
a new one, finds those submodules cached and fails on their stale references (``module 'matplotlib' has no
attribute 'get_data_path'``) until the interpreter restarts: a notebook's re-run would fail where a new process
resumes. :func:`drop_orphan_modules` removes the submodules whose package is gone, so they load again with it.
"""

from __future__ import annotations

import sys


def drop_orphan_modules() -> list[str]:
    """Remove from ``sys.modules`` every submodule whose parent package is no longer there (what an interrupted
    import of the package leaves); the names removed."""
    orphans = sorted(name for name in list(sys.modules)
                     if "." in name and not _parents_loaded(name))
    for name in orphans:
        sys.modules.pop(name, None)
    return orphans


def _parents_loaded(name: str) -> bool:
    """Whether every package above the module ``name`` is in ``sys.modules``."""
    parts = name.split(".")
    return all(".".join(parts[:end]) in sys.modules for end in range(1, len(parts)))
