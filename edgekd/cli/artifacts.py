"""``edgekd export``, ``quantize`` and ``bundle``: the deployable files a run's stages make, made from a model
file on its own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from edgekd.cli.common import JsonOpt, RequiredDeviceOpt, add_columns, api, handle_errors, print_warnings, timing_option
from edgekd.console import out, print_json, shown
from edgekd.errors import ConfigError

if TYPE_CHECKING:
    from edgekd.export.source import ExportedModel

TargetOpt = Annotated[str, typer.Option("--target", "-t", help="Export preset from exporters/ or a YAML path.")]
ScoresOpt = Annotated[str | None, typer.Option(
    "--scores", metavar="OUTPUT", help="The graph output holding the model's scores (default: the one named logits, "
    "else the first floating-point one).")]


@handle_errors
def export(
    source: Annotated[str, typer.Argument(help="An ONNX file; or a PyTorch model: a Hugging Face directory, a hub id "
                                               "(local cache only) or package.module:factory.")],
    target: TargetOpt = "ort-mobile",
    device: Annotated[str, typer.Option(
        "--device", "-d", help="Device profile: its input shapes (parity, sample) and the profile.")] = "host-cpu",
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Output directory (default: beside an ONNX file, else runs/export/<name>).")] = None,
    kwargs: Annotated[str | None, typer.Option(
        help="JSON object of keyword arguments for a package.module:factory.")] = None,
    input_shape: Annotated[str | None, typer.Option(
        help="A factory's input per example, e.g. 1,8,8 (random float inputs).")] = None,
    sample: Annotated[Path | None, typer.Option(
        help="A factory's input batch as .npz: one float array, or input_ids (and attention_mask).")] = None,
    runs: Annotated[int, timing_option("runs", "Timed runs of the profile (PyTorch sources).")] = 200,
    warmup: Annotated[int, timing_option("warmup", "Untimed warm-up runs of the profile.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Export a model for deployment: an ONNX file to ONNX Runtime's .ort format for Android/iOS apps, or a
    PyTorch model (Hugging Face or your own factory) to ONNX with a parity check against PyTorch, profiled on
    the device.

    Example: edgekd export runs/demo/03-export/student.onnx --target ort-mobile --out mobile/

    Example: edgekd export tests.user_modules:small_cnn --kwargs '{"width": 8}' --input-shape 1,8,8 -o cnn/
    """
    from edgekd.export.source import ExportedModel, input_shape_of

    result = api().export(source, target=target, device=device, out=out_dir, kwargs=_json_object(kwargs, "--kwargs"),
                          input_shape=input_shape_of(input_shape, "--input-shape"), sample=sample, warmup=warmup,
                          runs=runs)
    if isinstance(result, ExportedModel):
        _print_exported(result, as_json)
        return
    if as_json:
        print_json({"path": str(result.path), **result.to_json(),
                    "onnx_copy": str(result.onnx_copy) if result.onnx_copy else None})
        return
    out.print(f"wrote {shown(result.path)} ({result.size_mb:.3f} MB)"
              + (f" and {shown(result.operators_config)}" if result.operators_config else "")
              + (f", copied the ONNX model to {shown(result.onnx_copy)}" if result.onnx_copy else "")
              + f"; parity with {shown(Path(source).name)}: max abs diff {result.parity.max_abs_diff:.2e}",
              soft_wrap=True)


def _print_exported(result: ExportedModel, as_json: bool) -> None:
    """An exported PyTorch source: its files, parity and profile."""
    record = result.to_json()
    if as_json:
        print_json(record)
        return
    parity = result.onnx.parity
    out.print(f"wrote {shown(result.onnx.path)} ({result.onnx.size_mb:.3f} MB); parity with PyTorch: max abs diff "
              f"{parity.max_abs_diff:.2e} (within {parity.tolerance_text()})", soft_wrap=True)
    if result.ort is not None:
        out.print(f"wrote {shown(result.ort.path)} ({result.ort.size_mb:.3f} MB); parity with the ONNX model: max "
                  f"abs diff {result.ort.parity.max_abs_diff:.2e}", soft_wrap=True)
    figures = result.profile
    out.print(f"{shown(result.path.name)} on {shown(figures.device)}: p50 {figures.p50_ms:.3f} ms, p90 "
              f"{figures.p90_ms:.3f} ms" + (" (estimate)" if figures.estimate else "") + f", inputs "
              f"{shown(figures.input_shapes)}", soft_wrap=True)
    print_warnings(list(result.notes))


def _json_object(text: str | None, option: str) -> dict[str, Any] | None:
    """An option's JSON object (``--kwargs '{"width": 8}'``); anything else is a one-line ConfigError."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{option}: not JSON ({exc}); expected an object such as '{{\"width\": 8}}'") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{option}: expected a JSON object of keyword arguments, got {type(value).__name__}")
    return value


@handle_errors
def quantize(
    model: Annotated[Path, typer.Argument(help="An ONNX model file.")],
    device: RequiredDeviceOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the kept model and quantize.json.")],
    calibration: Annotated[Path | None, typer.Option(
        help=".npz with one array per graph input, named as the input (needed for static INT8).")] = None,
    eval_file: Annotated[Path | None, typer.Option(
        "--eval", help=".npz like --calibration plus 'y' class labels: the accuracy and agreement gates.")] = None,
    modes: Annotated[list[str] | None, typer.Option(
        "--mode", help="Variant to try: auto, dynamic, static or fp16 (repeatable; default auto).")] = None,
    min_speedup: Annotated[float | None, typer.Option(
        help="How much faster than FP32 a variant must be to be kept (default 1.05).")] = None,
    runs: Annotated[int | None, timing_option("runs", "Timed runs per variant (default 200).")] = None,
    rounds: Annotated[int | None, timing_option(
        "rounds", "Interleaved timing sessions per variant (default 4).")] = None,
    scores: ScoresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize an ONNX model as the quantize stage does: INT8/FP16 variants for the device's ISA, timed
    against FP32 in one interleaved run, one kept only where it is faster (and, with --eval, as accurate).

    Example: edgekd quantize runs/demo/03-export/student.onnx --device host-cpu --calibration calib.npz --out q/
    """
    given = {"modes": modes, "min_speedup": min_speedup, "runs": runs, "rounds": rounds}
    result = api().quantize(model, device=device, out=out_dir, calibration=calibration, eval=eval_file,
                            settings={key: value for key, value in given.items() if value is not None}, scores=scores)
    record = result.to_json()
    if as_json:
        print_json(record)
        return
    quantized = result.quantized
    table = Table(title=f"{shown(model)} on {shown(record['device']['name'])}")
    metric = quantized.variants["fp32"].metric  # the primary metric the variants were scored on
    add_columns(table, ("variant", "p50 ms", "vs fp32", "MB", metric, "agree", "kept"), left=("variant", "kept"),
                no_wrap=True)
    for name, v in quantized.variants.items():
        speedup = f"{v.speedup.ratio:.2f}×" if name != "fp32" and v.speedup is not None else "1"
        table.add_row(shown(name), f"{v.p50_ms:.4f}", speedup, f"{v.size_mb:.3f}",
                      "–" if v.score is None else f"{v.score:.4f}",
                      "–" if v.agreement is None else f"{v.agreement:.3f}", "yes" if name == quantized.decision else "")
    out.print(table)
    out.print(f"INT8 settings: {shown(quantized.int8_settings.why)}", soft_wrap=True)
    out.print(shown(quantized.reason), soft_wrap=True)
    print_warnings(record["notes"])
    out.print(f"wrote {shown(result.model)} and {shown(result.record_path)}", soft_wrap=True)


@handle_errors
def bundle(
    model: Annotated[Path, typer.Argument(help="An ONNX model file.")],
    device: RequiredDeviceOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for bundle/, bundle.zip and bundle.json.")],
    labels: Annotated[Path | None, typer.Option(
        help="Text file with one class name per line, in the order of the model's output.")] = None,
    preprocessing: Annotated[Path | None, typer.Option(
        help="JSON or YAML mapping stored as the manifest's preprocessing (kind: image|text|...).")] = None,
    target: TargetOpt = "ort-mobile",
    runs: Annotated[int, timing_option("runs", "Timed runs for the manifest's latency.")] = 200,
    warmup: Annotated[int, timing_option("warmup", "Untimed warm-up runs.")] = 20,
    scores: ScoresOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pack an ONNX model for an Android/iOS app as a run's bundle stage does: .ort + reduced-operator config,
    manifest.json (inputs and outputs from the graph, latency on the device) and README.md, plus bundle.zip.

    Example: edgekd bundle runs/demo/03-export/student.onnx --device host-cpu --labels labels.txt --out app/
    """
    result = api().bundle(model, device=device, out=out_dir, labels=labels, preprocessing=preprocessing,
                          target=target, runs=runs, warmup=warmup, scores=scores)
    if as_json:
        print_json(result.to_json())
        return
    record = result.record
    profile, budget = record.profile, record.budget
    out.print(f"bundle of {shown(model)} ({record.format}) for {shown(record.device.name)}: "
              f"{len(record.files) + 1} files in {shown(result.directory)}, {shown(result.zip_path)} "
              f"({record.zip_bytes:,} bytes)", soft_wrap=True)
    print_warnings(record.notes)
    if record.converted_from_opset is not None:
        out.print(f"converted from opset {record.converted_from_opset} to opset {record.target.opset}, the export "
                  f"target's", soft_wrap=True)
    if record.parity is not None:
        out.print(f".ort parity with the ONNX model: max abs diff {record.parity.max_abs_diff:.2e}", soft_wrap=True)
    colour = "green" if budget.passed else "red"
    out.print(f"{shown(record.profiled_file)}: p50 {profile.p50_ms:.3f} ms, p90 {profile.p90_ms:.3f} ms"
              + (" (estimate)" if profile.estimate else "") + f"; budget: [{colour}]{budget.verdict}[/]",
              soft_wrap=True)
