"""The ``edgekd`` command line (typer + rich). Every command calls the Python API in :mod:`edgekd.api`.

Exit codes: 0 success, 2 user error (bad input, impossible budget), 1 internal error, 130 interrupted
(Ctrl-C), 143 terminated (SIGTERM). Text from user files is printed through :func:`edgekd.console.shown`.
Adding a command is one decorated function (``@app.command()`` then ``@_handle_errors``) calling the API.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, TypeVar

import typer
import typer.core
from rich import box
from rich.table import Table

from edgekd import __version__, catalog
from edgekd.config.device import load_device
from edgekd.console import SafeRichHandler, err, out, print_json, shown
from edgekd.distributed import exit_launched, launched_rank, launched_size
from edgekd.errors import ConfigError, EdgekdError, is_out_of_memory, too_long_name
from edgekd.profile.stability import stability_warning
from edgekd.report.document import fmt
from edgekd.report.search_section import LM_TRAINED_COLUMNS, lm_trained_rows
from edgekd.search.record import LMSearchRecord


def _api() -> ModuleType:
    """:mod:`edgekd.api`, imported when a command runs: it imports torch (seconds), which ``--help``,
    ``--version`` and shell completion do not need."""
    from edgekd import api

    return api


F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

app = typer.Typer(
    name="edgekd",
    help="Distill, export and profile models against an edge device's latency budget.\n\n"
    "Example: edgekd demo --out runs/demo",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
devices_app = typer.Typer(help="List and show device profiles.\n\nExample: edgekd devices show host-cpu",
                          no_args_is_help=True)
app.add_typer(devices_app, name="devices")
pipelines_app = typer.Typer(help="List the built-in recipes and the data they need.\n\nExample: edgekd pipelines list",
                            no_args_is_help=True)
app.add_typer(pipelines_app, name="pipelines")

_state = {"debug": False}


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """No type after a plain flag in --help (typer ≥ 0.2x shows ``<bool>`` after ``--fresh``)."""
    return None if self.is_flag else _option_type(self, ctx)


_option_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]


def _handle_errors(func: F) -> F:
    """Turn user errors into one line on stderr and exit code 2; other failures into exit code 1."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EdgekdError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (see main)
            terminated = isinstance(exc, Terminated)
            err.print(f"{'terminated (SIGTERM)' if terminated else 'interrupted'}; finished stages are kept and "
                      "a re-run resumes from them")
            raise typer.Exit(code=143 if terminated else 130) from None
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place internal errors are reported
            too_long = None if _state["debug"] else too_long_name(exc)
            if too_long is not None:
                err.print(f"[bold red]error:[/] {shown(too_long)}: a name longer than this filesystem allows "
                          "(ENAMETOOLONG); expected a path whose every part is under 255 bytes, or a hub id",
                          highlight=False, soft_wrap=True)
                raise typer.Exit(code=2) from None
            if is_out_of_memory(exc) and not _state["debug"]:
                err.print(f"[bold red]error:[/] out of memory: {_one_line(exc)}; this machine cannot hold "
                          "the model, batch or input as given: use smaller ones", highlight=False, soft_wrap=True)
                raise typer.Exit(code=2) from None
            if _state["debug"]:
                raise
            err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {_one_line(exc)} "
                      "(run with --debug for the traceback)", highlight=False, soft_wrap=True)
            raise typer.Exit(code=1) from None

    return wrapper  # type: ignore[return-value]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt: the same clean-up runs."""


def _terminate(_signum: int, _frame: Any) -> None:
    raise Terminated()


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line, control characters and rich markup escaped (see :func:`shown`)."""
    return shown(" ".join(line.strip() for line in str(exc).splitlines() if line.strip()))


def _show_version(value: bool) -> None:
    if value:
        out.print(f"edgekd {__version__}", soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more detail.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print edgekd's version and exit.",
                                          callback=_show_version, is_eager=True)] = False,
) -> None:
    _state["debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[SafeRichHandler(console=err, show_path=False, show_time=False)],
    )
    logging.getLogger("edgekd").setLevel(logging.DEBUG if debug else logging.INFO)
    if launched_rank() != 0:  # the other processes of a data-parallel run: rank 0 speaks for the run
        logging.getLogger("edgekd").setLevel(logging.WARNING)


RecipeArg = Annotated[str, typer.Argument(help="A recipe YAML path or a built-in name (see pipelines/).")]
DeviceOpt = Annotated[str | None, typer.Option("--device", "-d", help="Device profile name or YAML path.")]
HostDeviceOpt = Annotated[str, typer.Option("--device", "-d", help="Device profile name or YAML path.")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run directory (default runs/<recipe name>).")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Ignore finished stages of an earlier run.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
ThreadsOpt = Annotated[int | None, typer.Option(
    "--threads", min=1, help="torch threads for training (default: the recipe's threads, auto = free physical cores).")]
BudgetOpt = Annotated[float | None, typer.Option(
    "--budget-ms", help="p90 latency budget in ms, instead of the device profile's.")]


@app.command()
@_handle_errors
def run(recipe: RecipeArg, device: DeviceOpt = None, out_dir: OutOpt = None, budget_ms: BudgetOpt = None,
        threads: ThreadsOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False, as_json: JsonOpt = False,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Only say which stages would be cached, run or re-run (and what changed).")] = False,
        ) -> None:
    """Run a recipe's stages; finished stages of an earlier run are skipped.

    Example: edgekd run pipelines/demo-digits.yaml --device host-cpu --out runs/demo
    """
    if dry_run:
        plans = _api().plan(recipe, device=device, out=out_dir, budget_ms=budget_ms, fresh=fresh)
        if as_json:
            print_json([stage.to_json() for stage in plans])
            return
        for stage in plans:
            out.print(shown(stage.describe()), highlight=False)
        return
    result = _api().run(recipe, device=device, out=out_dir, budget_ms=budget_ms, threads=threads, fresh=fresh,
                     show_progress=not (quiet or as_json))
    if result.is_main_process:
        _print_run(result, as_json)


@app.command()
@_handle_errors
def demo(out_dir: OutOpt = None, threads: ThreadsOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False,
         as_json: JsonOpt = False) -> None:
    """Run the built-in demo: digits CNN teacher → small student, exported and profiled on host-cpu.

    Example: edgekd demo --out runs/demo
    """
    result = _api().run("demo-digits", out=out_dir or Path("runs/demo"), threads=threads, fresh=fresh,
                     show_progress=not (quiet or as_json))
    if result.is_main_process:
        _print_run(result, as_json)


@app.command()
@_handle_errors
def compress(
    recipe: RecipeArg,
    device: DeviceOpt = None,
    budget_ms: BudgetOpt = None,
    out_dir: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Run directory (default runs/<recipe name>-search).")] = None,
    threads: ThreadsOpt = None,
    fresh: FreshOpt = False,
    quiet: QuietOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Find the most accurate student that fits a device's budget: latency table first, training second.

    Candidates (the recipe's search stage, or a default grid around its student) are timed with random weights.

    Those over budget are dropped; the largest feasible ones are distilled; the most accurate within budget wins.

    Example: edgekd compress demo-digits --device host-cpu --budget-ms 0.02
    """
    result = _api().compress(recipe, device=device, budget_ms=budget_ms, out=out_dir, threads=threads, fresh=fresh,
                          show_progress=not (quiet or as_json))
    if as_json:
        print_json({**_run_json(result.run), "table": result.table.to_json(), "search": result.search().to_json()})
        return
    _print_search(result)
    _print_run(result.run, as_json=False)


@app.command()
@_handle_errors
def validate(recipe: RecipeArg, device: DeviceOpt = None, budget_ms: BudgetOpt = None,
             as_json: JsonOpt = False) -> None:
    """Check a recipe (keys, types, names, stage order, files) without running it; with --device or --budget-ms,
    against the device and budget a run would be given.

    Example: edgekd validate pipelines/demo-digits.yaml --device android-midrange-cpu
    """
    loaded = _api().validate(recipe, device=device, budget_ms=budget_ms)
    checked = device or str(loaded.device)
    if as_json:
        print_json({"ok": True, "recipe": loaded.name, "source": str(catalog.find("pipelines", recipe)),
                    "stages": loaded.stage_names(), "device": checked})
        return
    out.print(f"[green]ok[/]: recipe '{shown(loaded.name)}' with stages {', '.join(loaded.stage_names())} "
              f"on device '{shown(checked)}'", soft_wrap=True)


@app.command()
@_handle_errors
def profile(
    model: Annotated[Path, typer.Argument(help="An ONNX (.onnx) or ORT format (.ort) model file.")],
    device: HostDeviceOpt = "host-cpu",
    runs: Annotated[int, typer.Option(min=10, help="Timed runs.")] = 200,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Profile any ONNX model with onnxruntime under a device profile's threads and input shapes.

    Example: edgekd profile runs/demo/03-export/student.onnx --device host-cpu --json
    """
    result = _api().profile(model, device=device, runs=runs, warmup=warmup, show_progress=not as_json)
    figures = result.to_json()
    unstable = stability_warning(str(model), figures)
    if as_json:
        print_json({**figures, "warnings": [unstable] if unstable else []})
        return
    estimate = (f" — estimate: host × speed ratio {result.speed_ratio:.2f} from '{result.reference}'"
                if result.estimate else " — measured")
    out.print(f"[bold]{shown(model)}[/] on [bold]{shown(device)}[/]{estimate}, {result.threads} thread(s) "
              f"here, inputs {shown(result.input_shapes)}", soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.model_dump(include={"p50_ms", "p90_ms", "p99_ms", "mean_ms", "peak_memory_mb",
                                                 "size_mb"}).items():
        table.add_row(key, f"{value:.3f}")
    out.print(table)
    _print_warnings([unstable] if unstable else [])


@app.command()
@_handle_errors
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory (edgekd run/demo --out).")],
           as_json: JsonOpt = False) -> None:
    """Rebuild a run's report.json, report.md, report.html and plots from its records, re-running nothing.

    Example: edgekd report runs/demo
    """
    paths = _api().report(run_dir)
    if as_json:
        print_json({"run_dir": str(run_dir), "files": [str(path) for path in paths]})
        return
    for path in paths:
        out.print(f"wrote {shown(path)}", soft_wrap=True)


@app.command()
@_handle_errors
def bench(
    models: Annotated[list[Path], typer.Argument(help="ONNX (.onnx) or ORT format (.ort) model files to compare.")],
    device: HostDeviceOpt = "host-cpu",
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for bench.json/.md/.html.")] = Path(
        "runs/bench"),
    runs: Annotated[int, typer.Option(min=10, help="Timed runs per model.")] = 200,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs per session.")] = 20,
    rounds: Annotated[int, typer.Option(min=1, help="Interleaved sessions per model (A B, B A, ...).")] = 4,
    as_json: JsonOpt = False,
) -> None:
    """Benchmark several ONNX or .ort models side by side on this CPU under a device profile (interleaved timing).

    Example: edgekd bench runs/demo/03-export/teacher.onnx runs/demo/03-export/student.onnx --device host-cpu
    """
    record = _api().bench(models, device=device, out=out_dir, warmup=warmup, runs=runs, rounds=rounds)
    if as_json:
        print_json(record.to_json())
        return
    table = Table(title=f"CPU benchmark on {shown(record.device.name)}")
    for column in ("model", "p50 ms", "p90 ms", "size MB", "MACs", "verdict"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for m in record.models:
        table.add_row(shown(m.name), f"{m.p50_ms:.4f}", f"{m.p90_ms:.4f}", f"{m.size_mb:.3f}",
                      f"{m.macs:,}" if m.macs is not None else "–", m.verdict)
    out.print(table)
    _print_warnings(record.warnings)
    out.print(f"report: {shown(out_dir / 'bench.html')}", soft_wrap=True)


@app.command()
@_handle_errors
def export(
    source: Annotated[str, typer.Argument(help="An ONNX file; or a PyTorch model: a Hugging Face directory, a hub id "
                                               "(local cache only) or package.module:factory.")],
    target: Annotated[str, typer.Option("--target", "-t", help="Export preset from exporters/ or a YAML path.")] = (
        "ort-mobile"),
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
    runs: Annotated[int, typer.Option(min=10, help="Timed runs of the profile (PyTorch sources).")] = 200,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs of the profile.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Export a model for deployment: an ONNX file to ONNX Runtime's .ort format for Android/iOS apps, or a
    PyTorch model (Hugging Face or your own factory) to ONNX with a parity check against PyTorch, profiled on
    the device.

    Example: edgekd export runs/demo/03-export/student.onnx --target ort-mobile --out mobile/

    Example: edgekd export tests.user_modules:small_cnn --kwargs '{"width": 8}' --input-shape 1,8,8 -o cnn/
    """
    from edgekd.export.source import ExportedModel

    result = _api().export(source, target=target, device=device, out=out_dir, kwargs=_json_object(kwargs, "--kwargs"),
                        input_shape=_dims(input_shape, "--input-shape"), sample=sample, warmup=warmup, runs=runs)
    if isinstance(result, ExportedModel):
        _print_exported(result, as_json)
        return
    if as_json:
        print_json({"path": str(result.path), **result.to_json()})
        return
    out.print(f"wrote {shown(result.path)} ({result.size_mb:.3f} MB)"
              + (f" and {shown(result.operators_config)}" if result.operators_config else "")
              + f"; parity with {shown(Path(source).name)}: max abs diff {result.parity.max_abs_diff:.2e}",
              soft_wrap=True)


def _print_exported(result: Any, as_json: bool) -> None:
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
    _print_warnings(list(result.notes))


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


def _dims(text: str | None, option: str) -> tuple[int, ...] | None:
    """An option's comma-separated positive sizes (``--input-shape 1,8,8``)."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ConfigError(f"{option}: '{text}'; expected positive sizes separated by commas, e.g. 1,8,8")
    return tuple(int(part) for part in parts)


RequiredDeviceOpt = Annotated[str, typer.Option(
    "--device", "-d", help="Device profile name or YAML path (its threads, input shapes, ISA and budget).")]


@app.command()
@_handle_errors
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
    runs: Annotated[int | None, typer.Option(help="Timed runs per variant (default 200).")] = None,
    rounds: Annotated[int | None, typer.Option(help="Interleaved timing sessions per variant (default 4).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Quantize an ONNX model as the quantize stage does: INT8/FP16 variants for the device's ISA, timed
    against FP32 in one interleaved run, one kept only where it is faster (and, with --eval, as accurate).

    Example: edgekd quantize runs/demo/03-export/student.onnx --device host-cpu --calibration calib.npz --out q/
    """
    given = {"modes": modes, "min_speedup": min_speedup, "runs": runs, "rounds": rounds}
    result = _api().quantize(model, device=device, out=out_dir, calibration=calibration, eval=eval_file,
                          settings={key: value for key, value in given.items() if value is not None})
    record = result.to_json()
    if as_json:
        print_json(record)
        return
    quantized = result.quantized
    table = Table(title=f"{shown(model)} on {shown(record['device']['name'])}")
    metric = quantized.variants["fp32"].metric  # the primary metric the variants were scored on
    for column in ("variant", "p50 ms", "vs fp32", "MB", metric, "agree", "kept"):
        table.add_column(column, justify="left" if column in ("variant", "kept") else "right", no_wrap=True)
    for name, v in quantized.variants.items():
        speedup = f"{v.speedup.ratio:.2f}×" if name != "fp32" and v.speedup is not None else "1"
        table.add_row(shown(name), f"{v.p50_ms:.4f}", speedup, f"{v.size_mb:.3f}",
                      "–" if v.score is None else f"{v.score:.4f}",
                      "–" if v.agreement is None else f"{v.agreement:.3f}", "yes" if name == quantized.decision else "")
    out.print(table)
    out.print(f"INT8 settings: {shown(quantized.int8_settings.why)}", soft_wrap=True)
    out.print(shown(quantized.reason), soft_wrap=True)
    _print_warnings(record["notes"])
    out.print(f"wrote {shown(result.model)} and {shown(result.record_path)}", soft_wrap=True)


@app.command()
@_handle_errors
def bundle(
    model: Annotated[Path, typer.Argument(help="An ONNX model file.")],
    device: RequiredDeviceOpt,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for bundle/, bundle.zip and bundle.json.")],
    labels: Annotated[Path | None, typer.Option(
        help="Text file with one class name per line, in the order of the model's output.")] = None,
    preprocessing: Annotated[Path | None, typer.Option(
        help="JSON or YAML mapping stored as the manifest's preprocessing (kind: image|text|...).")] = None,
    target: Annotated[str, typer.Option("--target", "-t", help="Export preset from exporters/ or a YAML path.")] = (
        "ort-mobile"),
    runs: Annotated[int, typer.Option(min=10, help="Timed runs for the manifest's latency.")] = 200,
    warmup: Annotated[int, typer.Option(min=0, help="Untimed warm-up runs.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Pack an ONNX model for an Android/iOS app as a run's bundle stage does: .ort + reduced-operator config,
    manifest.json (inputs and outputs from the graph, latency on the device) and README.md, plus bundle.zip.

    Example: edgekd bundle runs/demo/03-export/student.onnx --device host-cpu --labels labels.txt --out app/
    """
    result = _api().bundle(model, device=device, out=out_dir, labels=labels, preprocessing=preprocessing,
                        target=target, runs=runs, warmup=warmup)
    if as_json:
        print_json(result.to_json())
        return
    record = result.record
    profile, budget = record.profile, record.budget
    out.print(f"bundle of {shown(model)} ({record.format}) for {shown(record.device.name)}: "
              f"{len(record.files) + 1} files in {shown(result.directory)}, {shown(result.zip_path)} "
              f"({record.zip_bytes:,} bytes)", soft_wrap=True)
    if record.parity is not None:
        out.print(f".ort parity with the ONNX model: max abs diff {record.parity.max_abs_diff:.2e}", soft_wrap=True)
    colour = "green" if budget.passed else "red"
    out.print(f"{shown(record.profiled_file)}: p50 {profile.p50_ms:.3f} ms, p90 {profile.p90_ms:.3f} ms"
              + (" (estimate)" if profile.estimate else "") + f"; budget: [{colour}]{budget.verdict}[/]",
              soft_wrap=True)


@devices_app.command("list")
@_handle_errors
def devices_list(as_json: JsonOpt = False) -> None:
    """List the built-in device profiles.

    Example: edgekd devices list
    """
    devices = [load_device(name) for name in catalog.names("devices")]
    if as_json:
        print_json([{"source": str(catalog.find("devices", d.name)), **d.model_dump(mode="json")} for d in devices])
        return
    table = Table(title="device profiles (the names --device takes)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True, min_width=max(len(d.name) for d in devices))
    for column in ("threads", "p90 ms", "size MB", "memory MB", "latency"):
        table.add_column(column, no_wrap=True, justify="left" if column == "latency" else "right")
    for device in devices:
        b = device.budget
        table.add_row(shown(device.name), str(device.threads), f"{b.p90_ms:g}", f"{b.size_mb:g}",
                      f"{b.peak_memory_mb:g}", "estimated" if device.is_estimate else "measured")
    out.print(table)
    for device in devices:  # below the table, so that long descriptions never squeeze the names
        out.print(f"[bold]{shown(device.name)}[/]: {shown(device.description)}")


@devices_app.command("show")
@_handle_errors
def devices_show(name: Annotated[str, typer.Argument(help="Device profile name or YAML path.")]) -> None:
    """Show one device profile as JSON, with the file it was read from.

    Example: edgekd devices show raspberry-pi-4
    """
    device = load_device(name)
    out.print_json(json.dumps({"source": str(catalog.find("devices", name)), **device.model_dump(mode="json")}))


@devices_app.command("calibrate")
@_handle_errors
def devices_calibrate(
    names: Annotated[list[str] | None, typer.Argument(
        help="Device profiles with a reference figure (default: every built-in one).")] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Measure again instead of reading the cache.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure the host→device speed ratio of estimated devices: the reference model timed here in rounds.

    A measurement whose rounds vary by more than 15% is retried, and is not cached if it stays unstable.

    Example: edgekd devices calibrate android-midrange-cpu --fresh
    """
    calibrated = _api().calibrate(names or None, fresh=fresh)
    if as_json:
        print_json([c.to_json() for c in calibrated])
        return
    table = Table(title="host→device speed ratios (device ms ÷ host ms of the reference model)", box=box.SIMPLE_HEAD)
    table.add_column("device", no_wrap=True)
    for column in ("reference", "published ms", "host ms", "ratio", "rounds", "spread", "status"):
        table.add_column(column, justify="left" if column in ("reference", "status") else "right")
    for c in calibrated:
        speed = c.speed
        status = "cached" if speed.cached else "measured now" if speed.stable else "[red]unstable: not cached[/]"
        table.add_row(shown(c.device), speed.reference_model, f"{speed.device_ms:g}", f"{speed.host_ms:.4g}",
                      f"{speed.ratio:.3g} ± {speed.uncertainty:.2g}", str(len(speed.host_rounds_ms)),
                      f"{speed.spread:.0%}", status)
    out.print(table)


@pipelines_app.command("list")
@_handle_errors
def pipelines_list(as_json: JsonOpt = False) -> None:
    """List the built-in recipes: their stages, the data each needs, whether it is here and where to get it.

    Example: edgekd pipelines list
    """
    recipes = _api().pipelines()
    if as_json:
        print_json([r.to_json() for r in recipes])
        return
    table = Table(title="built-in recipes (the names run, validate and compress take)", box=box.SIMPLE_HEAD)
    table.add_column("name", no_wrap=True, min_width=max(len(r.name) for r in recipes))
    table.add_column("data")
    table.add_column("here?", no_wrap=True)
    for r in recipes:
        table.add_row(shown(r.name), shown(r.data.summary), "[green]yes[/]" if r.data.ready else "[red]missing[/]")
    out.print(table)
    needs: dict[tuple[str, str], list[str]] = {}  # (missing paths, where to get them) → recipes
    for r in recipes:
        if not r.data.ready:
            missing = ", ".join(shown(str(path)) for _, path in sorted(r.data.missing.items()))
            needs.setdefault((missing, shown(r.data.where)), []).append(shown(r.name))
    for (missing, where), names in needs.items():
        out.print(f"[bold]{', '.join(names)}[/] need{'s' if len(names) == 1 else ''} {missing}. {where}")


def _print_warnings(warnings: list[str]) -> None:
    """Warnings about the figures just printed, on stderr (stdout stays the result)."""
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {shown(warning)}", soft_wrap=True)


def _print_search(result) -> None:
    """The latency table's origin, the trained candidates and the choice of a search run."""
    table = result.table
    out.print(f"latency table: {table.entries} candidates, "
              + (f"{table.profiled} timed now in {table.seconds:.1f} s, " if table.profiled else "")
              + f"{table.reused} from the cache ({shown(table.path)})", soft_wrap=True)
    search = result.search()
    if isinstance(search, LMSearchRecord):
        _print_lm_search(search, table.entries)
        return
    trained = Table(title=f"trained candidates ({search.table.feasible} of {table.entries} fit the budget "
                          f"p90 {search.budget.p90_ms:g} ms on {shown(search.device)})")
    for column in ("candidate", f"val {search.metric}", f"test {search.metric}", "p90 ms", "size MB", "verdict"):
        trained.add_column(column, justify="left" if column == "candidate" else "right")
    for m in search.measured:
        trained.add_row(shown(m.label), fmt(m.val_score, "{:.4f}"), fmt(m.score, "{:.4f}"), f"{m.p90_ms:.3f}",
                        f"{m.size_mb:.3f}", m.verdict)
    out.print(trained)
    out.print(f"chosen: [bold]{shown(search.chosen.label)}[/] — p90 {search.chosen.confirmed.p90_ms:.3f} ms on "
              f"re-profile" + (" (estimate)" if search.estimate else ""), soft_wrap=True)


def _print_lm_search(search: LMSearchRecord, entries: int) -> None:
    """A causal-LM search's trained candidates (per-token figures, validation loss) and its choice."""
    trained = Table(title=f"trained candidates ({search.table.feasible} of {entries} fit the budget "
                          f"{search.per_token_limit_ms:g} ms per token on {shown(search.device)}; chosen by "
                          f"{search.metric.description})")
    for column in LM_TRAINED_COLUMNS:
        trained.add_column(column, justify="left" if column == LM_TRAINED_COLUMNS[0] else "right")
    for row in lm_trained_rows(search):
        trained.add_row(shown(row[0]), *row[1:])
    out.print(trained)
    out.print(f"chosen: [bold]{shown(search.chosen.label)}[/] — {search.chosen.confirmed.p90_ms:.3f} "
              "ms per token p90 on re-measurement" + (" (estimate)" if search.estimate else ""), soft_wrap=True)


def _run_json(result) -> dict[str, Any]:
    """A run's stages and, when it has one, its report.json, as one JSON-ready mapping."""
    stages = [{"index": r.index, "stage": r.stage, "directory": r.directory, "skipped": r.skipped,
               "wall_seconds": r.wall_seconds} for r in result.stages]
    return {"run_dir": str(result.run_dir), "stages": stages, "report": _own_report(result.report)}


def _own_report(read: Callable[[], T]) -> T | None:
    """``read()`` of a run's report.json, or None when the run has no report of its own (no report stage, or the
    file an earlier run of the directory left, built from stages since replaced: both a ConfigError); a damaged
    file still raises its StorageError."""
    try:
        return read()
    except ConfigError:
        return None


def _print_run(result, as_json: bool) -> None:
    """The run's stage table and, when it has a report, the teacher/student summary and budget verdict."""
    if as_json:
        print_json(_run_json(result))
        return
    table = Table(title=f"run {shown(result.run_dir)}")
    for column in ("#", "stage", "status", "seconds"):
        table.add_column(column)
    for record in result.stages:
        status = "[dim]skipped (cached)[/]" if record.skipped else "[green]ran[/]"
        table.add_row(str(record.index), record.stage, status, f"{record.wall_seconds:.1f}")
    out.print(table)
    report = _own_report(result.report_record)
    if report is None:
        return
    summary = Table(title="teacher vs student")
    summary.add_column("")
    models = {role: figures for role in ("teacher", "student") if (figures := report.figures(role)) is not None}
    for role in models:
        summary.add_column(role, justify="right")
    rows = ((("val_loss", "{:.4f}"), ("perplexity", "{:.3f}"), ("params", "{:,}"), ("size_mb", "{:.3f}"),
             ("time_to_first_token_ms", "{:.3f}"), ("per_token_p50_ms", "{:.3f}"), ("per_token_p90_ms", "{:.3f}"),
             ("tokens_per_second", "{:.0f}"))
            if any(figures.task == "causal_lm" for figures in models.values()) else
            (("accuracy", "{:.4f}"), ("params", "{:,}"), ("size_mb", "{:.3f}"), ("p50_ms", "{:.3f}"),
             ("p90_ms", "{:.3f}")))
    for field, pattern in rows:
        summary.add_row(field, *["–" if (value := getattr(figures, field)) is None else pattern.format(value)
                                 for figures in models.values()])
    out.print(summary)
    comparison = report.comparison
    if comparison is not None and comparison.p50_latency_ratio is not None:  # no accuracy ratio for regression
        ratios = (("accuracy", comparison.accuracy_ratio), ("p50 latency", comparison.p50_latency_ratio))
        out.print("student/teacher: " + ", ".join(f"{name} ratio {value:.3f}" for name, value in ratios
                                                  if value is not None), soft_wrap=True)
    budget = report.budget
    colour = "green" if budget.passed else "red"
    out.print(f"budget on {shown(report.device.name)}: [{colour}]{budget.verdict}[/]"
              + (" (latency estimated)" if budget.estimate else ""), soft_wrap=True)
    out.print(f"report: {shown(result.run_dir / 'report.html')} (and report.md)", soft_wrap=True)
    if (result.run_dir / "bundle.zip").is_file():
        out.print(f"mobile bundle: {shown(result.run_dir / 'bundle')} and bundle.zip", soft_wrap=True)


def main() -> None:
    """Console-script entry point: SIGTERM ends a command as Ctrl-C does (a message, finished stages kept).
    A process a launcher started (torchrun, accelerate launch) ends through :func:`exit_launched`."""
    signal.signal(signal.SIGTERM, _terminate)
    if launched_size() == 1:
        app()
        return
    try:
        app()
    except SystemExit as exc:
        exit_launched(exc.code)
    exit_launched(0)


@app.command("distill-data")
@_handle_errors
def distill_data(recipe: RecipeArg, out_dir: OutOpt = None, fresh: FreshOpt = False, quiet: QuietOpt = False) -> None:
    """Learn a recipe's synthetic training set (its dataset_distill stage) and compare it with real subsets.

    Example: edgekd distill-data pipelines/digits-dataset-distill.yaml --out runs/digits-dd
    """
    from edgekd.dataset_distill.api import distill_data as run_distill_data
    from edgekd.report.dataset_distill import dataset_distill_summary
    from edgekd.report.record import DatasetDistillRun

    result = run_distill_data(recipe, out=out_dir, fresh=fresh, show_progress=not quiet)
    (learnt,) = (DatasetDistillRun.model_validate(entry) for entry in dataset_distill_summary([result.stages[-1].data]))
    table = Table(title=f"{learnt.method}, {learnt.images_per_class} per class "
                        f"({learnt.distill_seconds:.1f} s): test accuracy of fresh models")
    for column in ("training set", "mean", "std"):
        table.add_column(column)
    for name, score in learnt.accuracy.items():
        table.add_row(name, f"{score.mean:.4f}", f"{score.std:.4f}")
    out.print(table)
    out.print(f"synthetic set: {result.run_dir / learnt.synthetic_set}")
