"""Parity between a PyTorch model and its ONNX export, measured on onnxruntime's CPU provider.

:func:`check_parity` runs the same input batches through the model (eval mode, no gradients)
and through a plain ``onnxruntime.InferenceSession`` on the exported file, then reports the
largest and mean absolute difference and how often the two agree on the arg-max class. The
tolerance is ``atol + rtol × max |reference output|``: float32 rounding grows with the scale of the
activations, so a fixed absolute bound alone rejects correct exports of models with large logits.
Running batches of different sizes (always batch 1 and a batch larger than 1) proves that the
exported batch axis is really dynamic: a graph with a fixed batch size fails on one of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from pydantic import BaseModel, ConfigDict, computed_field

from edgekd.errors import ExportError
from edgekd.models.call import call_model, eval_mode
from edgekd.models.logits import model_logits
from edgekd.ort_options import session_options

DEFAULT_BATCH_SIZES: tuple[int, ...] = (1, 7)
"""Batch sizes :func:`parity_batches` builds by default: 1 and an odd size larger than 1."""

Batch = dict[str, torch.Tensor]
"""Model inputs by name (``{"input": images}`` or ``{"input_ids": ..., "attention_mask": ...}``)."""


def as_batch(inputs: torch.Tensor | Mapping[str, torch.Tensor], name: str = "input") -> Batch:
    """A named batch: a lone tensor becomes ``{name: tensor}``."""
    return {name: inputs} if isinstance(inputs, torch.Tensor) else dict(inputs)


def batch_rows(batch: Mapping[str, Any]) -> int:
    """The batch size (all inputs share their first axis): 1 for a graph without inputs or of scalar inputs."""
    shapes = [np.shape(value) for value in batch.values()]
    return next((int(shape[0]) for shape in shapes if len(shape)), 1)


class ParityResult(BaseModel):
    """How closely an ONNX model's outputs match the PyTorch model's on the same inputs.

    Each output must stay within ``atol + rtol × reference_max_abs`` of the reference, where
    ``reference_max_abs`` is that output's largest finite |value| over all batches. ``max_abs_diff``
    and ``reference_max_abs`` are the figures of the output nearest to (or furthest past) its
    tolerance (the only output, for a classifier); ``mean_abs_diff`` is taken over every output
    element of every batch; ``argmax_agreement`` is the fraction of output rows (positions along
    all but the last axis) whose arg-max over the last axis agrees (1.0 for outputs with no class
    axis); ``samples`` counts the input rows; ``passed`` is False when any difference is NaN.
    The export stage records it (with its ``tolerance``) in ``stage.json``; read back, the tolerance is
    computed again from the figures.
    """

    model_config = ConfigDict(frozen=True)

    max_abs_diff: float
    mean_abs_diff: float
    atol: float
    rtol: float
    reference_max_abs: float
    passed: bool
    samples: int
    argmax_agreement: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tolerance(self) -> float:
        """The bound ``max_abs_diff`` was held to."""
        return self.atol + self.rtol * self.reference_max_abs

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict (the tolerance included)."""
        return self.model_dump(mode="json")

    def tolerance_text(self) -> str:
        """The tolerance in the export target's terms, for error messages."""
        if not self.rtol:
            return f"parity_atol {self.atol:g}"
        return (f"the tolerance {self.tolerance:.3g} (parity_atol {self.atol:g} + parity_rtol {self.rtol:g} × "
                f"largest |output| {self.reference_max_abs:.3g})")


def parity_batches(
    sample: torch.Tensor | Mapping[str, torch.Tensor], sizes: Sequence[int] = DEFAULT_BATCH_SIZES, *, seed: int = 0
) -> list[Batch]:
    """Deterministic input batches of the given sizes, built from the rows of ``sample``.

    A batch no larger than ``sample`` is its first rows. A larger one repeats the rows; for
    floating-point inputs the repeated rows get seeded Gaussian noise scaled to the sample's
    standard deviation, so every row differs. Integer inputs (token ids, masks) are repeated as
    they are, since noise would make them invalid. The global RNG is not touched.
    """
    sample = {name: tensor.detach() for name, tensor in as_batch(sample).items()}
    first = next(iter(sample.values()))
    if first.dim() == 0 or first.shape[0] == 0:
        raise ValueError(f"sample must have a non-empty batch axis, got shape {tuple(first.shape)}")
    rows = first.shape[0]
    generator = torch.Generator().manual_seed(seed)
    batches = []
    for size in sizes:
        if size <= rows:
            batches.append({name: tensor[:size].clone() for name, tensor in sample.items()})
            continue
        index = torch.arange(size) % rows
        batch = {}
        for name, tensor in sample.items():
            repeated = tensor[index].clone()
            if tensor.is_floating_point():
                scale = tensor.float().std(unbiased=False).item()
                noise = torch.randn(repeated[rows:].shape, generator=generator) * scale
                repeated[rows:] += noise.to(tensor.dtype)
            batch[name] = repeated
        batches.append(batch)
    return batches


def check_parity(
    model: torch.nn.Module,
    onnx_path: Path,
    inputs: torch.Tensor | Mapping[str, torch.Tensor] | Sequence[torch.Tensor | Mapping[str, torch.Tensor]],
    atol: float,
    *,
    rtol: float = 0.0,
    label: str | Path | None = None,
    session: ort.InferenceSession | None = None,
) -> ParityResult:
    """Compare ``model``'s outputs with onnxruntime's (CPU provider) on ``onnx_path``.

    ``inputs`` is one batch or a list of batches (a tensor, fed as the ONNX model's only input,
    or a mapping of input names to tensors, passed to the model by keyword as :mod:`edgekd.models.call`
    binds them, and to onnxruntime under the graph's own input names only), each fed
    whole to both sides; pass several batch sizes, including 1 and one larger than 1 (see
    :func:`parity_batches`), to check the dynamic batch axis. The model must return one tensor
    (or an object with ``.logits``). The model runs in eval mode under ``torch.no_grad()``; its train/eval
    modes are restored afterwards. ``label`` names the file in error messages (default
    ``onnx_path``); ``session``, when given, is one already open on it (:func:`cpu_session`), so several checks of
    one file load it once. Raises :class:`ExportError` when onnxruntime cannot load or run the file or
    when the outputs differ in shape; a difference larger than ``atol + rtol × max |torch output|``
    is reported through ``ParityResult.passed``, not raised.
    """
    single = isinstance(inputs, (torch.Tensor, Mapping))
    shown = label if label is not None else onnx_path
    session = session if session is not None else cpu_session(Path(onnx_path), shown)
    only_input = session.get_inputs()[0].name
    batches = [as_batch(b, only_input) for b in ([inputs] if single else list(inputs))]
    if not batches:
        raise ValueError("check_parity needs at least one input batch")

    outputs, samples = OutputDiffs(), 0
    for batch in batches:
        shapes = {name: tuple(t.shape) for name, t in batch.items()}
        expected = _torch_output(model, batch, shown)
        try:
            actual = np.asarray(session.run(None, graph_feed(session, batch))[0])
        except Exception as exc:
            raise ExportError(f"{shown}: onnxruntime failed on inputs of shapes {shapes}: {one_line(exc)}") from exc
        if actual.shape != expected.shape:
            raise ExportError(
                f"{shown}: output shape differs for inputs of shapes {shapes}: "
                f"torch {expected.shape}, onnxruntime {actual.shape}"
            )
        outputs.add(0, expected, actual)
        samples += batch_rows(batch)
    return outputs.result(samples, atol, rtol)


def check_file_parity(
    reference: Path,
    candidate: Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    atol: float,
    *,
    rtol: float = 0.0,
    label: str | Path | None = None,
) -> ParityResult:
    """Compare every output of two model files (e.g. ``.onnx`` and its ``.ort``) on onnxruntime's CPU provider.

    ``feeds`` are input batches by input name, each run through both models. ``label`` names the
    candidate in error messages (default ``candidate``). Each output has its own tolerance, ``atol +
    rtol × max |that reference output|``. Raises :class:`ExportError` when either file
    cannot be loaded or run, or when their outputs differ in number or shape.
    """
    shown = label if label is not None else candidate
    sessions = cpu_session(Path(reference), reference), cpu_session(Path(candidate), shown)
    if not feeds:
        raise ValueError("check_file_parity needs at least one feed")
    outputs, samples = OutputDiffs(), 0
    for feed in feeds:
        try:
            expected, actual = (session.run(None, graph_feed(session, feed)) for session in sessions)
        except Exception as exc:
            shapes = {name: tuple(array.shape) for name, array in feed.items()}
            raise ExportError(f"{shown}: onnxruntime failed on inputs of shapes {shapes}: {one_line(exc)}") from exc
        if [_layout(a) for a in actual] != [_layout(e) for e in expected]:
            raise ExportError(f"{shown}: outputs differ from {Path(reference).name}: shapes "
                              f"{[_layout(a) for a in actual]} vs {[_layout(e) for e in expected]}")
        for index, (want, got) in enumerate(zip(expected, actual, strict=True)):
            outputs.add(index, _values(want), _values(got))
        samples += batch_rows(feed)
    return outputs.result(samples, atol, rtol)


class OutputDiffs:
    """Differences collected per output (by position) over the batches of one parity check."""

    def __init__(self) -> None:
        self.diffs: dict[int, list[np.ndarray]] = {}
        self.scales: dict[int, float] = {}
        self.matches: list[np.ndarray] = []

    def add(self, output: int, expected: np.ndarray, actual: np.ndarray) -> None:
        self.diffs.setdefault(output, []).append(_abs_diff(expected, actual).ravel())
        self.scales[output] = max(self.scales.get(output, 0.0), _largest_magnitude(expected))
        self.matches.append(_argmax_matches(expected, actual))

    def result(self, samples: int, atol: float, rtol: float) -> ParityResult:
        """The verdict: every output within its own tolerance; the figures of the closest call."""
        def excess(verdict: tuple[float, float]) -> float:
            largest, scale = verdict
            if math.isnan(largest):
                return math.inf
            tolerance = atol + rtol * scale
            if not tolerance:
                return math.inf if largest else 0.0
            return largest / tolerance

        # (largest difference, reference scale) per output; the difference is NaN if any element's is
        per_output = [(float(np.concatenate(parts).max(initial=0.0)), self.scales[output])
                      for output, parts in self.diffs.items()]
        largest, scale = max(per_output, key=excess)
        every = np.concatenate([d for parts in self.diffs.values() for d in parts])
        match = np.concatenate(self.matches)
        return ParityResult(
            max_abs_diff=largest,
            mean_abs_diff=float(every.mean()) if every.size else 0.0,
            atol=float(atol),
            rtol=float(rtol),
            reference_max_abs=scale,
            passed=bool(largest <= atol + rtol * scale),
            samples=samples,
            argmax_agreement=float(match.mean()) if match.size else 1.0,
        )


def one_line(exc: BaseException) -> str:
    """``ExceptionType: first non-empty line of its message``, for one-line error reports."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def cpu_session(path: Path, shown: str | Path) -> ort.InferenceSession:
    """An onnxruntime CPU session on ``path``, quiet; one that cannot load is an :class:`ExportError` naming
    ``shown``."""
    try:
        return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"{shown}: onnxruntime cannot load the model: {one_line(exc)}") from exc


def graph_feed(session: ort.InferenceSession, batch: Mapping[str, np.ndarray | torch.Tensor]) -> dict[str, np.ndarray]:
    """The entries of ``batch`` that are inputs of ``session``'s graph, as arrays (onnxruntime refuses any other name).

    A batch carries every input a model family may take; a graph has only those its model uses (no
    ``token_type_ids`` in a DistilBERT, Llama, TextCNN or BiLSTM graph).
    """
    wanted = {i.name for i in session.get_inputs()}
    return {name: value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            for name, value in batch.items() if name in wanted}


def _torch_output(model: torch.nn.Module, batch: Batch, shown: str | Path) -> np.ndarray:
    """The model's logits on a copy of ``batch``: a model that changes its input in place (``x.mul_(…)``) would
    otherwise hand onnxruntime other inputs than it was given."""
    with eval_mode(model), torch.no_grad():
        output = call_model(model, {name: tensor.clone() for name, tensor in batch.items()})
    try:
        return model_logits(output).detach().cpu().numpy()
    except TypeError:
        raise ExportError(
            f"{shown}: {type(model).__name__} returns {type(output).__name__}; only models returning "
            "a single tensor (or .logits) can be exported and checked for parity"
        ) from None


def _layout(output: Any) -> Any:
    """What must match between two runs' outputs besides their values: a tensor's shape; a sequence's or map's
    (scikit-learn-onnx's ZipMap: a list of {class: probability}) length, keys and their values' layouts."""
    if isinstance(output, dict):
        return {key: _layout(value) for key, value in sorted(output.items())}
    if isinstance(output, list | tuple):
        return [_layout(item) for item in output]
    return np.shape(output)


def _values(output: Any) -> np.ndarray:
    """An output's numbers as one array: a tensor as it is, a sequence or map (by sorted key) flattened in order."""
    if isinstance(output, dict):
        output = [value for _, value in sorted(output.items())]
    if isinstance(output, list | tuple):
        parts = [_values(item).ravel() for item in output]
        return np.concatenate(parts) if parts else np.zeros(0)
    return np.asarray(output)


def _abs_diff(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """|expected - actual| in float64: 0 where both are the same infinity, NaN where either is NaN.

    A NaN output is a broken model, not a match: NaN on both sides must fail the gate, not pass it.
    """
    if not _numeric(expected) or not _numeric(actual):  # strings (a scikit-learn label): equal or not
        return np.where(np.asarray(expected == actual, dtype=bool), 0.0, np.inf)
    a, b = expected.astype(np.float64), actual.astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.where(np.isnan(a) | np.isnan(b), np.nan, np.where(a == b, 0.0, np.abs(a - b)))


def _numeric(array: np.ndarray) -> bool:
    return array.dtype.kind in "biufc"


def _largest_magnitude(output: np.ndarray) -> float:
    """The largest finite |value| of a reference output (0 when it has none): the scale ``rtol`` multiplies."""
    if not _numeric(output):
        return 0.0
    finite = np.abs(output[np.isfinite(output)])
    return float(finite.max(initial=0.0))


def _argmax_matches(expected: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per output row (all axes but the last), whether the arg-max over the last axis agrees."""
    if expected.ndim < 2:
        return np.ones(expected.size, dtype=bool)
    width = expected.shape[-1]
    return expected.reshape(-1, width).argmax(axis=1) == actual.reshape(-1, width).argmax(axis=1)
