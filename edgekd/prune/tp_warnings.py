"""Torch-Pruning's own warnings, sent to edgekd's debug log instead of the user's terminal.

Torch-Pruning calls :func:`warnings.warn` with a bare ``UserWarning`` while it builds its dependency graph, e.g.
``Unwrapped parameters detected: ['model.layers.0.input_layernorm.weight', ...]`` for a decoder's RMSNorm weights
(Qwen2, Llama). Printed raw on stderr, several lines long and amid edgekd's own output, it reads as a problem;
it is not one here: those weights span the hidden width, which edgekd never prunes (every layer writing it is
ignored), and what pruning did to the model is checked afterwards (config rewritten and rebuilt, parity). So
:func:`torch_pruning_warnings_logged` turns each into one debug line; any other warning raised meanwhile (torch's,
transformers') is shown as it would have been.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

log = logging.getLogger(__name__)

#: The package whose warnings are logged: the ``module`` of a warnings filter (a regex matched at the start).
PACKAGE = "torch_pruning"


@contextmanager
def torch_pruning_warnings_logged() -> Iterator[None]:
    """Run the body with Torch-Pruning's ``UserWarning`` s going to the debug log, one line each (see the module
    docstring); filters set outside (``ignore``, ``error``) do not apply to them meanwhile."""
    with warnings.catch_warnings():
        warnings.filterwarnings("always", category=UserWarning, module=rf"{PACKAGE}(\.|$)")
        shown = warnings.showwarning

        def route(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: TextIO | None = None, line: str | None = None) -> None:
            if issubclass(category, UserWarning) and from_torch_pruning(filename):
                log.debug("Torch-Pruning warned: %s", " ".join(str(message).split()))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = route
        yield


def from_torch_pruning(filename: str) -> bool:
    """Whether a warning raised in ``filename`` (as :func:`warnings.showwarning` receives it) is Torch-Pruning's."""
    return PACKAGE in Path(filename).parts
