"""Write a mobile bundle: a directory an app developer drops into a project, and the same as a ``.zip``.

The directory and the zip are built beside their targets and renamed into place (readers see the
old bundle or the complete new one, never one's directory beside the other's zip). The zip is
reproducible: entries sorted by path, every timestamp the ZIP epoch (1980-01-01), permissions 0644,
DEFLATE level 9, all under one top-level folder; the same files always give the same bytes.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime as ort

from edgekd.atomic import atomic_dir, atomic_path
from edgekd.config.device import DeviceProfile
from edgekd.console import printable
from edgekd.export.bundle_readme import render_readme
from edgekd.export.config import ExportTarget
from edgekd.export.manifest import MANIFEST, TOKENIZER_DIR, build_manifest, file_entries
from edgekd.export.ort_format import convert_to_ort, random_feeds
from edgekd.export.parity import ParityResult
from edgekd.model_file import copy_model
from edgekd.profile.runner import ProfileResult
from edgekd.profile.verdict_record import BudgetVerdict

README = "README.md"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: Bundle file names of each deployable file kind.
BUNDLE_NAMES = {"ort": "model.ort", "onnx": "model.onnx", "required_operators": "model.required_operators.config"}


def converted_files(onnx_path: Path, target: ExportTarget, device: DeviceProfile,
                    work_dir: Path) -> tuple[dict[str, Path], ParityResult]:
    """The files to ship by kind, ``onnx_path`` converted to ``.ort`` in ``work_dir`` as ``target`` says, and parity.

    The conversion is parity-checked at ``device``'s input shapes; the ONNX file is shipped only
    with ``target.keep_onnx``, the operator configuration only with ``reduced_operator_config``.
    """
    result = convert_to_ort(onnx_path, target, random_feeds(onnx_path, device.inputs), out_dir=work_dir)
    files = {"ort": result.path, "onnx": onnx_path}
    if result.operators_config is not None:
        files["required_operators"] = result.operators_config
    return (files if target.keep_onnx else {k: v for k, v in files.items() if k != "onnx"}), result.parity


def pack_model(
    bundle_dir: Path,
    zip_path: Path,
    *,
    onnx_path: Path,
    deploy: dict[str, Path],
    name: str,
    opset: int | None,
    labels: list[str],
    preprocessing: dict[str, Any] | None,
    tokenizer: list[Path],
    device: DeviceProfile,
    profile: ProfileResult,
    budget: BudgetVerdict | None,
    accuracy: float | None,
    postprocessing: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
    scores: str | None = None,
) -> dict[str, Any]:
    """Write the bundle of one model: its ``deploy`` files (by kind), tokenizer, manifest and README, and the zip.

    ``onnx_path`` is the model's ONNX file (the manifest's inputs and outputs are read from its graph);
    ``profile`` its latency figures on ``device`` and ``budget`` their verdict. Returns the manifest.
    """
    sources = {BUNDLE_NAMES[kind]: path for kind, path in deploy.items()}
    sources.update({f"{TOKENIZER_DIR}/{path.name}": path for path in tokenizer})
    fmt = "ort" if "ort" in deploy else "onnx"
    manifest = build_manifest(
        name=name,
        model={"file": BUNDLE_NAMES[fmt], "format": fmt, "opset": opset,
               "onnx_file": BUNDLE_NAMES["onnx"] if "onnx" in deploy else None,
               "required_operators": BUNDLE_NAMES["required_operators"] if "required_operators" in deploy else None,
               "onnxruntime": ort.__version__},
        onnx_path=onnx_path,
        labels=labels,
        preprocessing=preprocessing,
        tokenizer={"directory": TOKENIZER_DIR, "files": [p.name for p in tokenizer]} if tokenizer else None,
        device=device,
        profile=profile,
        budget=budget,
        accuracy=accuracy,
        postprocessing=postprocessing,
        metrics=metrics,
        scores=scores,
    )
    return write_bundle(bundle_dir, zip_path, sources, manifest, render_readme)


def write_bundle(
    bundle_dir: Path,
    zip_path: Path,
    sources: dict[str, Path],
    manifest: dict[str, Any],
    readme: Callable[[dict[str, Any]], str],
) -> dict[str, Any]:
    """Write ``sources`` (bundle path → file), ``README.md`` and ``manifest.json``, then the zip.

    ``readme`` renders the README from the manifest (control characters escaped, see
    :func:`edgekd.console.printable`). The manifest gets ``files``: the sha256 and
    size of every file but itself. Returns the complete manifest.

    The directory and the zip are both built beside the earlier ones before either replaces them; the earlier zip is
    deleted before the directory is renamed over, and the new zip renamed in after it: a failure or a kill leaves the
    earlier bundle, the earlier or new directory without a zip, or the new bundle, never one bundle's directory
    beside another's zip.
    """
    with atomic_path(zip_path) as zipped, atomic_dir(bundle_dir) as tmp:
        tmp.chmod(0o755)  # a temporary directory is private; the bundle is not
        for name, source in sorted(sources.items()):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".onnx"):
                copy_model(source, tmp / name)  # standalone: external weights embedded
            else:
                shutil.copyfile(source, tmp / name)
        # names from the graph may hold control characters (an escape sequence would recolour a terminal that
        # shows the README): written as visible escapes
        (tmp / README).write_text(printable(readme(manifest)), encoding="utf-8")
        manifest = {**manifest, "files": file_entries(tmp)}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        _zip_into(zipped, tmp, folder=manifest["name"])
        zip_path.unlink(missing_ok=True)  # then the directory is renamed over, then the zip in (leaving the blocks)
    return manifest


def _zip_into(zip_path: Path, source_dir: Path, *, folder: str) -> None:
    """Write every file below ``source_dir`` into ``zip_path`` as ``folder/<relative path>``, reproducibly."""
    files = sorted((p for p in source_dir.rglob("*") if p.is_file()),
                   key=lambda p: p.relative_to(source_dir).as_posix())
    with zipfile.ZipFile(zip_path, "w") as archive:
        for path in files:
            info = zipfile.ZipInfo(f"{folder}/{path.relative_to(source_dir).as_posix()}", date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, whatever this machine is, so the attributes below mean the same
            info.external_attr = 0o100644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
