"""onnxruntime session options as edgekd opens every session: on the CPU threads asked for, and quiet.

ONNX Runtime logs a failing kernel (an index beyond an embedding table, a shape it cannot broadcast) on stderr,
ANSI-coloured, and raises the same failure as an exception, which edgekd reports in one line naming the file. Its
log is set to FATAL only, so the user sees that one line, not also onnxruntime's raw one before it.
"""

from __future__ import annotations

import onnxruntime as ort

#: ONNX Runtime's FATAL severity: only what it cannot raise as an exception is logged.
QUIET = 4


def session_options(threads: int | None = None, *, sequential: bool = False) -> ort.SessionOptions:
    """Options of a quiet session with ``threads`` intra-op threads (onnxruntime's default when None), one
    inter-op thread and sequential execution when ``sequential`` (timing)."""
    options = ort.SessionOptions()
    options.log_severity_level = QUIET
    if threads is not None:
        options.intra_op_num_threads = threads
    if sequential:
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return options
