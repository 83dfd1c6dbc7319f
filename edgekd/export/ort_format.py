"""ONNX → ONNX Runtime's ``.ort`` format (what ORT Mobile loads), checked against the ONNX model.

The conversion is onnxruntime's own tool, ``onnxruntime.tools.convert_onnx_models_to_ort``
(called through its Python API), in its "fixed" optimization style at the export target's
``ort_optimization_level`` (default ``all``, the tool's own default): the fusions onnxruntime
would apply when loading the ONNX file are baked into the ``.ort`` (a minimal mobile build cannot
apply them at load time). The converter leaves out the CPU-specific NCHWc layouts, so the file
runs on ARM phones. The ONNX file beside it keeps the target's ``optimization_level`` (``basic``:
standard operators, which the quantize stage and other runtimes need); onnxruntime applies the
same fusions to it when it loads it, so the latency profiled on the ONNX file stands for the
``.ort``.

With ``reduced_operator_config`` the operator list a minimal ONNX Runtime build needs is
written beside the model as ``<model>.required_operators.config`` (pass it to ORT's build with
``--include_ops_by_config``). The converter's comment lines name absolute paths; they are
replaced by one line naming the model file, so the file is the same wherever it was made.

The ``.ort`` bytes themselves are not reproducible: onnxruntime serializes parts of the graph
in an order that differs from one conversion to the next (the model is the same).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgekd.atomic import refuse_if_full, write_errors_reported, write_text, write_with
from edgekd.config.device import InputShape
from edgekd.errors import ConfigError, ExportError
from edgekd.export.beside_files import check_replaceable, record_path, write_record
from edgekd.export.config import ExportTarget
from edgekd.export.later_shapes import check_file_runs
from edgekd.export.parity import DEFAULT_BATCH_SIZES, ParityResult, check_file_parity, one_line, parity_batches
from edgekd.model_file import copy_model, require_onnx
from edgekd.profile.inputs import make_feeds

log = logging.getLogger(__name__)

#: The converter reads its optimization level from this environment variable only.
LEVEL_VARIABLE = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
_CONVERTER_LEVELS = {"disabled": "disable", "basic": "basic", "extended": "extended", "all": "all"}
_MIB = 1024 * 1024


@dataclass(frozen=True)
class OrtModel:
    """A converted ``.ort`` model, its reduced-operator configuration and its parity with the ONNX model."""

    path: Path
    operators_config: Path | None
    size_mb: float
    parity: ParityResult
    onnx_copy: Path | None = None
    """The copy of the ONNX model written beside it (``edgekd export`` of a file, targets that keep the ONNX)."""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready mapping (file names, relative to the directory they were written to)."""
        return {"file": self.path.name, "size_mb": self.size_mb, "parity": self.parity.to_json(),
                "operators_config": self.operators_config.name if self.operators_config else None}

    def deploy_files(self, ref: Callable[[str], str], onnx_name: str | None) -> dict[str, str]:
        """What an app ships, by kind (``ort``, ``required_operators``, ``onnx`` if named), as ``ref(name)``."""
        files = {"ort": ref(self.path.name)}
        if self.operators_config is not None:
            files["required_operators"] = ref(self.operators_config.name)
        if onnx_name is not None:
            files["onnx"] = ref(onnx_name)
        return files


@dataclass(frozen=True)
class OrtPaths:
    """The files converting ``<stem>.onnx`` into a directory may write there: the ``.ort`` model and its reduced
    operator configuration and, when the ONNX model is kept beside them (:func:`export_file`), its copy and the
    copy's external-data file."""

    ort: Path
    operators_config: Path
    onnx_copy: Path | None = None
    """The ONNX model's copy; None when the target does not keep it, or the model already is that file."""
    onnx_copy_data: Path | None = None
    """The copy's external-data file (``<copy>.data``, written only for a model with external data)."""

    @classmethod
    def of(cls, onnx_path: Path, out_dir: Path, *, keep_onnx: bool = False) -> OrtPaths:
        """The paths for converting ``onnx_path`` into ``out_dir``; with ``keep_onnx``, its copy's too."""
        converted = cls(ort=out_dir / f"{onnx_path.stem}.ort",
                        operators_config=out_dir / f"{onnx_path.stem}.required_operators.config")
        copy = out_dir / onnx_path.name
        if not keep_onnx or copy.resolve() == onnx_path.resolve():
            return converted
        return replace(converted, onnx_copy=copy, onnx_copy_data=copy.with_name(f"{copy.name}.data"))

    def named(self) -> list[Path]:
        """Every file named here: what an earlier conversion into the directory may have written."""
        return [path for path in (self.ort, self.operators_config, self.onnx_copy, self.onnx_copy_data)
                if path is not None]

    def copy_written(self) -> list[Path]:
        """The files of the kept ONNX copy that exist (none when it is not kept)."""
        return [path for path in (self.onnx_copy, self.onnx_copy_data) if path is not None and path.is_file()]


def convert_to_ort(
    onnx_path: Path,
    target: ExportTarget,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    out_dir: Path | None = None,
) -> OrtModel:
    """Convert ``onnx_path`` to ``<stem>.ort`` in ``out_dir`` (default: beside it) and check it on ``feeds``.

    Every output of the ``.ort`` model must match the ONNX model's within ``target.parity_atol`` (plus
    ``target.parity_rtol`` × the largest |output|)
    on every batch of ``feeds``; otherwise, or when onnxruntime cannot convert the model, an
    :class:`ExportError` is raised and no file is written. Files are written atomically.
    """
    onnx_path = Path(onnx_path)
    out_dir = Path(out_dir) if out_dir is not None else onnx_path.parent
    with write_errors_reported(out_dir):
        out_dir.mkdir(parents=True, exist_ok=True)
    paths = OrtPaths.of(onnx_path, out_dir)
    with tempfile.TemporaryDirectory(prefix=".ort-", dir=out_dir) as tmp:
        converted, config = _run_converter(onnx_path, Path(tmp), target.ort_optimization_level)
        parity = check_file_parity(onnx_path, converted, feeds, target.parity_atol, rtol=target.parity_rtol,
                                   label=paths.ort)
        if not parity.passed:
            raise ExportError(
                f"{paths.ort}: parity check failed: max |onnx - ort| = {parity.max_abs_diff:.3g} exceeds "
                f"{parity.tolerance_text()} (export target '{target.name}'); the file was not written"
            )
        write_with(paths.ort, lambda tmp_path: shutil.copyfile(converted, tmp_path))
        if target.reduced_operator_config:
            write_text(paths.operators_config,
                       portable_operator_config(config.read_text(encoding="utf-8"), paths.ort.name))
    log.debug("converted %s to %s (parity max diff %.2e)", onnx_path, paths.ort, parity.max_abs_diff)
    return OrtModel(path=paths.ort,
                    operators_config=paths.operators_config if target.reduced_operator_config else None,
                    size_mb=paths.ort.stat().st_size / _MIB, parity=parity)


def numpy_feeds(sample: Mapping[str, torch.Tensor]) -> list[dict[str, np.ndarray]]:
    """Parity batches (batch 1 and 7, see :func:`parity_batches`) of a named sample, as onnxruntime feeds."""
    return [{name: tensor.cpu().numpy() for name, tensor in batch.items()} for batch in parity_batches(sample)]


def random_feeds(onnx_path: Path, shape: InputShape | None = None) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs of batch 1 and 7 (other dynamic axes from ``shape``) to check parity on, each run on
    ``onnx_path`` first: a graph that does not run at them is refused in one line naming the device's length
    (:func:`edgekd.export.later_shapes.check_file_runs`). A graph answering NaN to the Gaussian float inputs (a
    logarithm or square root of its input: a domain of non-negative values) gets their absolute values instead,
    so the check compares numbers."""
    shape = shape or InputShape()
    feeds = [make_feeds(onnx_path, shape.model_copy(update={"batch": size}), seed=size) for size in DEFAULT_BATCH_SIZES]
    if check_file_runs(Path(onnx_path), feeds, shape):
        feeds = [{name: np.abs(array) if array.dtype.kind == "f" else array for name, array in feed.items()}
                 for feed in feeds]
    return feeds


def export_file(onnx_path: Path, target: ExportTarget, out_dir: Path, shape: InputShape | None = None) -> OrtModel:
    """``edgekd export``: convert an existing ONNX file as ``target`` says, into ``out_dir``.

    Parity is checked on seeded random inputs of batch 1 and 7 (other dynamic axes filled from ``shape``,
    default a default device profile's). With ``target.keep_onnx`` the ONNX file is copied beside the result.
    The files written are recorded in ``<stem>.export.json``; files in the way that an earlier export did not
    write are refused before the conversion (:mod:`edgekd.export.beside_files`).
    """
    onnx_path, out_dir = Path(onnx_path), Path(out_dir)
    if target.format != "ort":
        raise ConfigError(f"export target '{target.name}' has format '{target.format}', which {onnx_path} "
                          "already is; choose a target with format 'ort' (e.g. ort-mobile)")
    require_onnx(onnx_path, "edgekd export")
    paths = OrtPaths.of(onnx_path, out_dir, keep_onnx=target.keep_onnx)
    record = record_path(out_dir, onnx_path)
    check_replaceable(record, paths.named(), onnx_path)
    result = convert_to_ort(onnx_path, target, random_feeds(onnx_path, shape), out_dir=out_dir)
    if paths.onnx_copy is not None:
        copy_model(onnx_path, paths.onnx_copy)
    written = [result.path, *([result.operators_config] if result.operators_config else []), *paths.copy_written()]
    write_record(record, written, {"source": str(onnx_path), "target": target.name, **result.to_json()},
                 source=onnx_path)
    return replace(result, onnx_copy=paths.onnx_copy)


def portable_operator_config(text: str, model_name: str) -> str:
    """The converter's operator configuration without its comment lines (they name absolute paths)."""
    operators = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    header = (f"# Operators required by {model_name} (onnxruntime {ort.__version__}); "
              "build ONNX Runtime with --include_ops_by_config <this file>")
    return "\n".join([header, *operators]) + "\n"


def _run_converter(onnx_path: Path, out_dir: Path, level: str) -> tuple[Path, Path]:
    """Run onnxruntime's converter on one model into the empty ``out_dir``; the .ort and .config it wrote."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)  # it logs every config it writes
    printed = io.StringIO()
    with _environment(LEVEL_VARIABLE, _CONVERTER_LEVELS[level]), contextlib.redirect_stdout(printed):
        try:
            convert_onnx_models_to_ort(onnx_path.resolve(), output_dir=out_dir,
                                       optimization_styles=[OptimizationStyle.Fixed])
        except Exception as exc:  # the converter raises ValueError, onnxruntime's Fail, ...
            refuse_if_full(out_dir, onnx_path.stat().st_size, exc)
            raise ExportError(f"{onnx_path}: onnxruntime cannot convert it to ORT format: {one_line(exc)}") from exc
    log.debug("onnxruntime converter output:\n%s", printed.getvalue())
    models, configs = sorted(out_dir.glob("*.ort")), sorted(out_dir.glob("*.config"))
    if len(models) != 1 or len(configs) != 1:
        raise ExportError(f"{onnx_path}: onnxruntime's converter wrote {[p.name for p in out_dir.iterdir()]}, "
                          "expected one .ort model and one .config file")
    return models[0], configs[0]


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the block, restoring its earlier value after."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
