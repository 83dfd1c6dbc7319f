"""Keep torch's TorchScript exporter from writing to the user's terminal.

torch's ``setup_onnx_logging`` tests a function object instead of calling it, so every export turns the
exporter's ONNX log on, and a failing export then writes the whole TorchScript IR graph (hundreds of
lines) to the process's standard output from C++, before edgekd's one-line :class:`ExportError`.
:func:`quiet_torch_exporter` points file descriptor 1 at a temporary file while the exporter runs and
hands what it wrote to the debug log. The Python warnings the exporter raises while tracing (constant folding
skipped, an LSTM exported with a batch size other than 1) go to the debug log too: they were printed raw to the
user's terminal amid edgekd's own lines, and what they warn about is checked by the export's parity gate
(batches of 1 and 7 rows, lengths it did not trace). So does what Python code prints to ``sys.stderr`` meanwhile:
torch.export prints the partial graph it traced (a Longformer's: 1,700 lines) when tracing fails, before the
exception edgekd turns into its one line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

log = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_torch_exporter() -> Iterator[None]:
    """Run the body with the process's standard output, and Python's ``sys.stderr``, going to the debug log (see the
    module docstring)."""
    sys.stdout.flush()
    saved = os.dup(1)
    printed = io.StringIO()
    with tempfile.TemporaryFile() as sink, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stderr(printed):
                yield
        finally:
            for warning in caught:
                log.debug("torch's ONNX exporter warned: %s: %s", warning.category.__name__, warning.message)
            if printed.getvalue().strip():
                log.debug("torch's ONNX exporter printed to stderr:\n%s", printed.getvalue().strip())
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            written = sink.read().decode(errors="replace").strip()
            if written:
                log.debug("torch's ONNX exporter wrote %d lines:\n%s", written.count("\n") + 1, written)
