"""Parity between a PyTorch model and its ONNX export, measured on onnxruntime's CPU provider.

:func:`check_parity` runs the same input batches through the model (eval mode, no gradients)
and through a plain ``onnxruntime.InferenceSession`` on the exported file, then reports the
largest and mean absolute difference and how often the two agree on the arg-max class.
Running batches of different sizes (always batch 1 and a batch larger than 1) proves that the
exported batch axis is really dynamic: a graph with a fixed batch size fails on one of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgekd.errors import ExportError

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 7)
"""Batch sizes :func:`parity_batches` builds by default: 1 and an odd size larger than 1."""


@dataclass(frozen=True)
class ParityResult:
    """How closely an ONNX model's outputs match the PyTorch model's on the same inputs.

    ``max_abs_diff`` and ``mean_abs_diff`` are taken over every output element of every batch;
    ``argmax_agreement`` is the fraction of output rows (positions along all but the last axis)
    whose arg-max over the last axis agrees (1.0 for outputs with no class axis); ``samples``
    counts the input rows; ``passed`` is ``max_abs_diff <= atol`` (False when it is NaN).
    """

    max_abs_diff: float
    mean_abs_diff: float
    atol: float
    passed: bool
    samples: int
    argmax_agreement: float

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return asdict(self)


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Put ``model`` in eval mode for the block and restore every submodule's own mode after."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)


def parity_batches(
    sample: torch.Tensor, sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *, seed: int = 0
) -> list[torch.Tensor]:
    """Deterministic input batches of the given sizes, built from the rows of ``sample``.

    A batch no larger than ``sample`` is its first rows. A larger one repeats the rows; for
    floating-point inputs the repeated rows get seeded Gaussian noise scaled to the sample's
    standard deviation, so every row differs. Integer inputs (token ids) are repeated as they
    are, since noise would make them invalid. The global RNG is not touched.
    """
    if sample.dim() == 0 or sample.shape[0] == 0:
        raise ValueError(f"sample must have a non-empty batch axis, got shape {tuple(sample.shape)}")
    sample = sample.detach()
    rows = sample.shape[0]
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        if size <= rows:
            batches.append(sample[:size].clone())
            continue
        index = torch.arange(size) % rows
        batch = sample[index].clone()
        if sample.is_floating_point():
            scale = sample.float().std(unbiased=False).item()
            noise = torch.randn(batch[rows:].shape, generator=generator) * scale
            batch[rows:] += noise.to(sample.dtype)
        batches.append(batch)
    return batches


def check_parity(
    model: torch.nn.Module,
    onnx_path: Path,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    atol: float,
    *,
    label: str | Path | None = None,
) -> ParityResult:
    """Compare ``model``'s outputs with onnxruntime's (CPU provider) on ``onnx_path``.

    ``inputs`` is one batch or a list of batches, each fed whole to both sides; pass several
    batch sizes, including 1 and one larger than 1 (see :func:`parity_batches`), to check the
    dynamic batch axis. The model must take one tensor and return one tensor, and the ONNX model
    must have one input. The model runs in eval mode under ``torch.no_grad()``; its train/eval
    modes are restored afterwards. ``label`` names the file in error messages (default
    ``onnx_path``). Raises :class:`ExportError` when onnxruntime cannot load or run the file or
    when the outputs differ in shape; a difference larger than ``atol`` is reported through
    ``ParityResult.passed``, not raised.
    """
    batches = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
    if not batches:
        raise ValueError("check_parity needs at least one input batch")
    shown = label if label is not None else onnx_path
    session = _cpu_session(Path(onnx_path), shown)
    input_name = session.get_inputs()[0].name

    diffs, matches, samples = [], [], 0
    for batch in batches:
        expected = _torch_output(model, batch, shown)
        try:
            actual = np.asarray(session.run(None, {input_name: batch.detach().cpu().numpy()})[0])
        except Exception as exc:
            raise ExportError(
                f"{shown}: onnxruntime failed on a batch of shape {tuple(batch.shape)}: {one_line(exc)}"
            ) from exc
        if actual.shape != expected.shape:
            raise ExportError(
                f"{shown}: output shape differs for input shape {tuple(batch.shape)}: "
                f"torch {expected.shape}, onnxruntime {actual.shape}"
            )
        diffs.append(_abs_diff(expected, actual).ravel())
        matches.append(_argmax_matches(expected, actual))
        samples += int(batch.shape[0])

    diff, match = np.concatenate(diffs), np.concatenate(matches)
    max_diff = float(diff.max(initial=0.0))  # NaN if any element differs by NaN
    return ParityResult(
        max_abs_diff=max_diff,
        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
        atol=float(atol),
        passed=bool(max_diff <= atol),
        samples=samples,
        argmax_agreement=float(match.mean()) if match.size else 1.0,
    )


def one_line(exc: BaseException) -> str:
    """``ExceptionType: first non-empty line of its message``, for one-line error reports."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _cpu_session(path: Path, shown: str | Path) -> ort.InferenceSession:
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{shown}: onnxruntime cannot load the model: {one_line(exc)}") from exc
    if len(session.get_inputs()) != 1:
        names = [i.name for i in session.get_inputs()]
        raise ExportError(f"{shown}: expected an ONNX model with one input, got {len(names)}: {names}")
    return session


def _torch_output(model: torch.nn.Module, batch: torch.Tensor, shown: str | Path) -> np.ndarray:
    with eval_mode(model), torch.no_grad():
        output = model(batch)
    if not isinstance(output, torch.Tensor):
        raise ExportError(
            f"{shown}: {type(model).__name__} returns {type(output).__name__}; only models returning "
            "a single tensor can be exported and checked for parity"
        )
    return output.detach().cpu().numpy()


def _abs_diff(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """|expected - actual| in float64, 0 where both are equal (including NaN/NaN and inf/inf)."""
    a, b = expected.astype(np.float64), actual.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isclose(a, b, rtol=0.0, atol=0.0, equal_nan=True), 0.0, np.abs(a - b))


def _argmax_matches(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per output row (all axes but the last), whether the arg-max over the last axis agrees."""
    if expected.ndim < 2:
        return np.ones(expected.size, dtype=bool)
    width = expected.shape[-1]
    return expected.reshape(-1, width).argmax(axis=1) == actual.reshape(-1, width).argmax(axis=1)
