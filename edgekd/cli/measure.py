"""``edgekd profile`` and ``edgekd bench``: timing ONNX or .ort models on this CPU under a device profile."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgekd.cli.common import HostDeviceOpt, JsonOpt, add_columns, api, handle_errors, print_warnings, timing_option
from edgekd.console import out, print_json, shown
from edgekd.profile.stability import stability_warning


@handle_errors
def profile(
    model: Annotated[Path, typer.Argument(help="An ONNX (.onnx) or ORT format (.ort) model file.")],
    device: HostDeviceOpt = "host-cpu",
    runs: Annotated[int, timing_option("runs", "Timed runs.")] = 200,
    warmup: Annotated[int, timing_option("warmup", "Untimed warm-up runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Profile any ONNX model with onnxruntime under a device profile's threads and input shapes.

    Example: edgekd profile runs/demo/03-export/student.onnx --device host-cpu --json
    """
    result = api().profile(model, device=device, runs=runs, warmup=warmup, show_progress=not as_json)
    figures = result.to_json()
    from edgekd.config.device import load_device
    from edgekd.profile.inputs import batch_warning, length_warning

    inputs = load_device(device).inputs
    warnings = [w for w in (stability_warning(str(model), figures),
                            batch_warning(str(model), result.input_shapes, inputs.batch),
                            length_warning(str(model), result.sequence_length, inputs.sequence_length,
                                           result.device)) if w]
    if as_json:
        print_json({**figures, "warnings": warnings})
        return
    estimate = (f" — estimate: host × speed ratio {result.speed_ratio:.2f} from '{result.reference}'"
                if result.estimate else " — measured")
    out.print(f"[bold]{shown(model)}[/] on [bold]{shown(result.device)}[/]{estimate}, {result.threads} thread(s) "
              f"here, inputs {shown(result.input_shapes)}", soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.model_dump(include={"p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_memory_mb",
                                                 "size_mb"}).items():
        table.add_row(key, f"{value:.3f}")
    out.print(table)
    print_warnings(warnings)


@handle_errors
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX (.onnx) or ORT format (.ort) model files to compare.")],
    device: HostDeviceOpt = "host-cpu",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for bench.json/.md/.html.")] = Path(
        "runs/bench"),
    runs: Annotated[int, timing_option("runs", "Timed runs per model.")] = 200,
    warmup: Annotated[int, timing_option("warmup", "Untimed warm-up runs per session.")] = 20,
    rounds: Annotated[int, timing_option("rounds", "Interleaved sessions per model (A B, B A, ...).")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark several ONNX or .ort models side by side on this CPU under a device profile (interleaved timing).

    Example: edgekd bench runs/demo/03-export/teacher.onnx runs/demo/03-export/student.onnx --device host-cpu
    """
    record = api().bench(models, device=device, out=out_dir, warmup=warmup, runs=runs, rounds=rounds)
    if as_json:
        print_json(record.to_json())
        return
    table = Table(title=f"CPU benchmark on {shown(record.device.name)}")
    add_columns(table, ("model", "p50 ms", "p90 ms", "size MB", "MACs", "verdict"), left=("model",))
    for m in record.models:
        table.add_row(shown(m.name), f"{m.p50_ms:.4f}", f"{m.p90_ms:.4f}", f"{m.size_mb:.3f}",
                      f"{m.macs:,}" if m.macs is not None else "–", m.verdict)
    out.print(table)
    print_warnings(record.warnings)
    out.print(f"report: {shown(out_dir / 'bench.html')}", soft_wrap=True)
