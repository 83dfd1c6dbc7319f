"""The Python API; the CLI is a thin layer over these functions.

Example::

    import edgekd
    result = edgekd.run("demo-digits", out="runs/demo")
    print(result.report()["student"]["p90_ms"])
    figures = edgekd.profile("runs/demo/03-export/student.onnx", device="host-cpu")
    found = edgekd.compress("demo-digits", device="host-cpu", budget_ms=0.02)   # budget-driven search
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from edgekd.catalog import UnknownEntryError, find
from edgekd.config.base import MAX_ROUNDS, MAX_RUNS, MAX_WARMUP, MIN_RUNS
from edgekd.config.device import DeviceLike, DeviceProfile, load_device, with_budget
from edgekd.config.loading import validate_model
from edgekd.config.overrides import Overrides, apply_overrides, no_overrides_of_object
from edgekd.config.paths import user_path, user_text
from edgekd.config.recipe import Recipe, load_recipe, validate_recipe
from edgekd.data.config import HFDiskData, NpzData, TextFileData
from edgekd.data.image_files import is_image_data
from edgekd.data_needs import check_data_present, data_need
from edgekd.errors import ConfigError, ConfigTypeError, ModelError
from edgekd.input_rules import (
    check_image_fits,
    check_sequence_fits,
    check_tokenizer_present,
    warn_foreign_tokenizers,
)
from edgekd.pipeline import RunResult, run_pipeline
from edgekd.profile.floor import check_budget
from edgekd.quantize.config import QuantizeSettings
from edgekd.run_plan import StagePlan, plan_run
from edgekd.rundir import check_claimable, claimed
from edgekd.stages import check_recipe
from edgekd.task_rules import check_corpus_lengths, check_corpus_vocabulary, check_generation_fits, corpus_reader
from edgekd.threads import training_threads

#: What names a recipe wherever one is taken (see :func:`validate`).
RecipeLike = str | Path | Mapping[str, Any] | Recipe


class Timing(BaseModel):
    """How the ONNX verbs time a model, bounded as their CLI options and the recipe's stages are (``runs`` from
    :data:`~edgekd.config.base.MIN_RUNS` to :data:`~edgekd.config.base.MAX_RUNS`: percentiles need the first, and
    a typo beyond the second would time for hours)."""

    model_config = ConfigDict(extra="forbid")

    warmup: int = Field(default=20, ge=0, le=MAX_WARMUP)
    runs: int = Field(default=200, ge=MIN_RUNS, le=MAX_RUNS)
    rounds: int = Field(default=4, ge=1, le=MAX_ROUNDS)


def _timing(**settings: Any) -> Timing:
    """The timing arguments of an API call, checked: a wrong type or bound is a one-line ConfigError naming it
    (``runs="ten"`` failed deep in the profiler with TypeError, ``runs=0`` with a bare ValueError)."""
    return validate_model(settings, Timing, source="timing arguments")

if TYPE_CHECKING:
    from edgekd.export.bundle_file import BundledFile
    from edgekd.export.ort_format import OrtModel
    from edgekd.export.source import ExportedModel
    from edgekd.profile.speed_ratio import CalibratedDevice
    from edgekd.quantize.onnx_file import QuantizedFile
    from edgekd.recipe_list import BuiltInRecipe
    from edgekd.report.bench_record import BenchReport
    from edgekd.search.compress import CompressResult


def validate(recipe: RecipeLike, *, device: DeviceLike | None = None, budget_ms: float | None = None,
             latency: bool = True, overrides: Overrides = None) -> Recipe:
    """Load and check a recipe without running it: a built-in name, a YAML path, a mapping of the same keys as
    a recipe file or a :class:`Recipe` (relative paths of these two start from the working directory).
    ``overrides`` (``KEY=VALUE`` strings, ``--set``: :mod:`edgekd.config.overrides`) change a file's or a
    mapping's keys before it is validated.

    Checked: keys, types, names, stage order, the device profile (and that some model could meet
    its budget on this machine), local data files (columns, labels, sizes) and teacher weights. ``device`` and
    ``budget_ms`` check it against the device a run is given instead of the recipe's (``--device``,
    ``--budget-ms``); ``latency=False`` leaves the budget's feasibility to a budget search.
    """
    source = _source(recipe)
    if isinstance(recipe, Recipe):
        no_overrides_of_object(overrides)
        loaded = _revalidated(recipe)
    elif isinstance(recipe, Mapping):
        loaded = validate_recipe(apply_overrides(dict(recipe), overrides), source=source, folder=Path.cwd())
    else:
        loaded = load_recipe(source, overrides)
    path = Path(source)  # a recipe file's "# Data:" comment says where to get missing data
    check_recipe(loaded, source)
    try:
        profile = _checked_device(loaded.device if device is None else device, latency=latency, budget_ms=budget_ms)
    except UnknownEntryError as exc:
        raise ConfigError(f"{source}: device: {exc}") from None
    check_generation_fits(loaded, profile, source)
    check_sequence_fits(loaded, profile, source)
    check_image_fits(loaded, profile, source)
    check_tokenizer_present(loaded, source)
    corpus = corpus_reader(loaded)  # the corpus checks share one read of data.path
    check_corpus_vocabulary(loaded, source, corpus)
    warn_foreign_tokenizers(loaded, source)
    check_data_present(data_need(loaded, path), path)
    check_corpus_lengths(loaded, profile, source, corpus)
    _check_inputs(loaded, source)
    return loaded


def _given(recipe: RecipeLike, device: DeviceLike | None, budget_ms: float | None,
           overrides: Overrides) -> Recipe:
    """The recipe :func:`run`, :func:`plan` and :func:`compress` start from: a :class:`Recipe` validated again,
    anything else checked by :func:`validate` (the budget's feasibility left to them)."""
    if isinstance(recipe, Recipe):
        no_overrides_of_object(overrides)
        return _revalidated(recipe)
    return validate(recipe, device=device, budget_ms=budget_ms, latency=False, overrides=overrides)


def _revalidated(recipe: Recipe) -> Recipe:
    """``recipe`` validated again: a :class:`Recipe` is frozen, but pydantic's ``model_copy(update=...)`` makes one
    without validating (a teacher stage copied with ``epochs=-5`` ran and trained nothing)."""
    return validate_recipe(_as_given(recipe), source=f"recipe '{recipe.name}'", folder=Path.cwd(), expanded=True)


def _as_given(value: Any) -> Any:
    """A validated config's fields as given (set, not defaulted: a default written out reads as a setting the user
    chose, which some checks refuse beside others; a union's one-value tag always counts as given); lists and
    mappings item by item."""
    if isinstance(value, BaseModel):
        return {name: _as_given(getattr(value, name)) for name in type(value).model_fields
                if name in value.model_fields_set}
    if isinstance(value, list | tuple):
        return [_as_given(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _as_given(item) for key, item in value.items()}
    return value


def _source(recipe: RecipeLike) -> str:
    """How messages name ``recipe``: its file, ``recipe mapping`` or ``recipe '<name>'``."""
    if isinstance(recipe, Recipe):
        return f"recipe '{recipe.name}'"
    if isinstance(recipe, Mapping):
        return "recipe mapping"
    if isinstance(recipe, str | Path):
        return str(find("pipelines", recipe))
    held = getattr(recipe, "recipe", None)  # an edgekd.Pipeline holds its validated Recipe
    hint = "; a Pipeline's is pipeline.recipe (or call pipeline.plan/run)" if isinstance(held, Recipe) else ""
    raise ConfigTypeError(f"recipe: expected a built-in name, a YAML path, a mapping or a Recipe, "
                          f"got {type(recipe).__name__}{hint}")


def pipelines() -> list[BuiltInRecipe]:
    """The built-in recipes: name, description, stages and the data each needs (``data.ready``: whether it is here;
    ``data.where``: where to get it); ``to_json()`` is an entry as ``edgekd pipelines list --json`` prints it."""
    from edgekd.recipe_list import builtin_recipes

    return builtin_recipes()


def _checked_device(device: DeviceLike, *, latency: bool = True,
                    budget_ms: float | None = None) -> DeviceProfile:
    """A device profile (given, or loaded by name or path) whose budget is not impossible on this machine.

    ``budget_ms`` replaces the profile's p90 budget (``--budget-ms``). ``latency=False`` leaves the p90
    limit to a budget search, which explains it with its candidates.
    """
    loaded = load_device(device)
    source = str(find("devices", device)) if isinstance(device, str | Path) else f"device '{loaded.name}'"
    if budget_ms is not None:
        loaded, source = with_budget(loaded, budget_ms), f"{source} with --budget-ms {budget_ms:g}"
    check_budget(loaded, source, latency=latency)
    return loaded


def _check_inputs(recipe: Recipe, source: str) -> None:
    """Read local text data (files, saved datasets) and ``.npz`` sets as the teacher stage will, list image data's
    files and classes, check that named directories and weights exist, and that the training split holds the
    images per class each ``dataset_distill`` stage asks (``source`` names the recipe in that refusal)."""
    data = recipe.data
    if isinstance(data, NpzData):
        from edgekd.data.task_data import prepare_task_data

        prepare_task_data(data, recipe.seed)  # the run's own read: its shape, label and class checks
    if isinstance(data, HFDiskData):
        from edgekd.data.places import check_place

        check_place(data.path, "data.path", "directory", "a datasets directory saved with save_to_disk")
    if isinstance(data, TextFileData) or isinstance(data, HFDiskData) and data.modality == "text":
        from edgekd.data.text import load_text_dataset

        load_text_dataset(data, recipe.seed)  # a saved dataset's splits, columns and labels too
    if is_image_data(data):
        from edgekd.data.image_data import check_images

        check_images(data)  # lists the files and classes and reads each image's header; pixels when it is loaded
    for weights in recipe.teacher.weight_files:
        if not weights.is_file():
            raise ModelError(f"{weights}: weights file not found (teacher.weights)")
    if "dataset_distill" in recipe.stage_names():
        from edgekd.dataset_distill.run import check_class_sizes

        check_class_sizes(recipe, source)


def run(
    recipe: RecipeLike,
    *,
    device: DeviceLike | None = None,
    out: str | Path | None = None,
    budget_ms: float | None = None,
    threads: int | Literal["auto"] | None = None,
    fresh: bool = False,
    show_progress: bool = False,
    overrides: Overrides = None,
) -> RunResult:
    """Run a recipe (a built-in name, a YAML path, a mapping or a :class:`Recipe`) and return its result.

    ``device`` overrides the recipe's device profile, ``budget_ms`` its p90 latency budget and ``threads``
    its torch training threads (see :mod:`edgekd.threads`); ``out`` is the run directory (default
    ``runs/<recipe name>``); ``fresh`` ignores stages cached by an earlier run; ``overrides`` change the
    recipe's keys as :func:`validate`'s do.
    """
    loaded, profile, run_dir = _prepared(recipe, device, out, budget_ms, threads, overrides, fresh_table=fresh)
    with training_threads(loaded.threads):
        return run_pipeline(loaded, profile, run_dir, fresh=fresh, show_progress=show_progress)


def plan(
    recipe: RecipeLike,
    *,
    device: DeviceLike | None = None,
    out: str | Path | None = None,
    budget_ms: float | None = None,
    fresh: bool = False,
    overrides: Overrides = None,
) -> list[StagePlan]:
    """What :func:`run` with the same arguments would do, stage by stage, without doing it (``--dry-run``); a run
    directory :func:`run` would refuse (a file, another program's files) is refused as it would be."""
    loaded, profile, run_dir = _prepared(recipe, device, out, budget_ms, None, overrides)
    check_claimable(run_dir)
    return plan_run(loaded, profile, run_dir, fresh=fresh)


def _prepared(recipe: RecipeLike, device: DeviceLike | None,
              out: str | Path | None, budget_ms: float | None,
              threads: int | Literal["auto"] | None, overrides: Overrides, *,
              fresh_table: bool = False) -> tuple[Recipe, DeviceProfile, Path]:
    """The checked recipe, its device profile and the run directory :func:`run` and :func:`plan` use (a search's
    latency table built or read first; ``fresh_table``: timed again)."""
    loaded = _with_threads(_given(recipe, device, budget_ms, overrides), threads)
    if isinstance(recipe, Recipe):  # what validate checks of a recipe given as a file or mapping
        check_recipe(loaded, f"recipe '{loaded.name}'")
        _check_inputs(loaded, f"recipe '{loaded.name}'")
    searches = "search" in loaded.stage_names()
    profile = _checked_device(loaded.device if device is None else device, latency=not searches, budget_ms=budget_ms)
    check_generation_fits(loaded, profile, f"recipe '{loaded.name}'")
    check_sequence_fits(loaded, profile, f"recipe '{loaded.name}'")
    check_image_fits(loaded, profile, f"recipe '{loaded.name}'")
    if isinstance(recipe, Recipe):  # else validate checked it, against this device
        check_corpus_lengths(loaded, profile, f"recipe '{loaded.name}'", corpus_reader(loaded))
    if searches:
        from edgekd.search.compress import preflight

        preflight(loaded, profile, fresh=fresh_table)
    return loaded, profile, _path(out, "out") or Path("runs") / loaded.name


def _with_threads(recipe: Recipe, threads: int | Literal["auto"] | None) -> Recipe:
    """``recipe`` with its ``threads`` replaced (``--threads``), checked as the recipe's own value is."""
    if threads is None:
        return recipe
    if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads >= 1):
        raise ConfigError(f"--threads: expected a positive number of threads or 'auto', got {threads!r}")
    return recipe.model_copy(update={"threads": threads})


def compress(
    recipe: RecipeLike,
    *,
    device: DeviceLike | None = None,
    budget_ms: float | None = None,
    out: str | Path | None = None,
    threads: int | Literal["auto"] | None = None,
    fresh: bool = False,
    show_progress: bool = False,
    overrides: Overrides = None,
) -> CompressResult:
    """Find the most accurate student of ``recipe`` that fits ``device``'s budget, and run it to a report.

    The recipe (a built-in name, a YAML path, a mapping or a :class:`Recipe`) becomes a budget search (see
    :func:`edgekd.search.compress.search_recipe`); ``budget_ms`` replaces the device profile's p90
    budget; ``out`` is the run directory (default ``runs/<recipe name>-search``). The latency table
    is built (or read from the cache; ``fresh``: timed again, and earlier stages ignored) first: a budget no
    candidate meets raises :class:`~edgekd.errors.BudgetError` before anything trains.
    """
    from edgekd.search.compress import CompressResult, check_search, preflight, search_recipe

    given = _given(recipe, device, budget_ms, overrides)
    loaded = _with_threads(search_recipe(given, _source(recipe)), threads)
    check_search(loaded, given, _source(recipe))  # its refusals name the keys of the recipe given
    profile = _checked_device(loaded.device if device is None else device, latency=False, budget_ms=budget_ms)
    table = preflight(loaded, profile, fresh=fresh)
    run_dir = _path(out, "out") or Path("runs") / loaded.name
    with training_threads(loaded.threads):
        result = run_pipeline(loaded, profile, run_dir, fresh=fresh, show_progress=show_progress)
    return CompressResult(run=result, table=table)


def profile(
    onnx_path: str | Path,
    *,
    device: DeviceLike = "host-cpu",
    warmup: int = 20,
    runs: int = 200,
    show_progress: bool = False,
):
    """Profile any ONNX or ``.ort`` file with onnxruntime under a device profile; returns a ``ProfileResult``."""
    from edgekd.profile.runner import profile_onnx

    timing, profile_ = _timing(warmup=warmup, runs=runs), load_device(device)
    return profile_onnx(user_path(onnx_path, "onnx_path"), profile_, warmup=timing.warmup, runs=timing.runs,
                        show_progress=show_progress)


def report(run_dir: str | Path) -> list[Path]:
    """Rebuild a run directory's report.json/.md/.html and plots from its records (nothing is re-run)."""
    from edgekd.report.write import rebuild_report

    return rebuild_report(user_path(run_dir, "run_dir"))


def bench(
    models: list[str | Path] | str | Path,
    *,
    device: DeviceLike = "host-cpu",
    out: str | Path = "runs/bench",
    warmup: int = 20,
    runs: int = 200,
    rounds: int = 4,
) -> BenchReport:
    """Time several ONNX or ``.ort`` files side by side (interleaved) and write bench.json/.md/.html to ``out``;
    returns bench.json's typed record (``models``, each with its figures and verdict; ``to_json()`` is the file's
    content)."""
    from edgekd.profile.bench import bench_models
    from edgekd.profile.cpu import detect_cpu
    from edgekd.report.bench import BENCH_RECORD, write_bench_report

    _timing(warmup=warmup, runs=runs, rounds=rounds)
    profile_ = load_device(device)
    given = [models] if isinstance(models, str | Path) else models  # one file, not its letters
    paths = [user_path(m, "models") for m in given]
    if not paths:
        raise ConfigError("bench: no models given; expected one or more ONNX or .ort files")
    out = user_path(out, "out")
    with claimed(out, record=BENCH_RECORD):  # new, empty or an earlier bench's: refused now, not after the timing
        figures = bench_models(paths, profile_, warmup=warmup, runs=runs, rounds=rounds)
        settings = {"warmup": warmup, "runs": runs, "rounds": rounds, "interleaved": True}
        return write_bench_report(figures, profile_, detect_cpu().to_json(), settings, out)


def calibrate(devices: list[str | Path] | str | Path | None = None, *, fresh: bool = False
              ) -> list[CalibratedDevice]:
    """Measure the host→device speed ratio of estimated devices (default: every built-in one with a reference;
    one name or path is that one device).

    Each entry: the device's name and its :class:`~edgekd.profile.speed_ratio.SpeedRatio` (``speed``: ratio,
    range, spread, whether it was cached; ``to_json()`` is the entry as ``--json`` prints it). ``fresh``
    re-measures instead of reading the cache. A device without a reference (measured directly) is a
    :class:`ConfigError`.
    """
    from edgekd.catalog import names
    from edgekd.profile.speed_ratio import CalibratedDevice, speed_ratio

    if devices is None:
        profiles = [p for p in (load_device(name) for name in names("devices")) if p.reference is not None]
    else:
        profiles = [load_device(device) for device in ([devices] if isinstance(devices, str | Path) else devices)]
    calibrated = []
    for profile_ in profiles:
        if profile_.reference is None:
            raise ConfigError(f"device '{profile_.name}' has no reference figure: it is measured directly on this "
                              "machine, so there is no speed ratio to calibrate")
        calibrated.append(CalibratedDevice(profile_.name, speed_ratio(profile_.reference, fresh=fresh)))
    return calibrated


def export(model: str | Path, *, target: str | Path = "ort-mobile", device: DeviceLike = "host-cpu",
           out: str | Path | None = None, kwargs: Mapping[str, Any] | None = None,
           input_shape: Sequence[int] | str | None = None, sample: str | Path | None = None, warmup: int = 20,
           runs: int = 200) -> OrtModel | ExportedModel:
    """``edgekd export``: an ONNX file converted as an export target says, or a PyTorch model exported to ONNX.

    ``model`` is an ONNX file (converted to ``.ort`` for ORT Mobile, parity-checked at ``device``'s input
    shapes; returns an ``OrtModel``), or a PyTorch source (returns an
    :class:`~edgekd.export.source.ExportedModel`, see :mod:`edgekd.export.source`): a Hugging Face
    directory or a hub id in the local cache, or ``package.module:factory`` called with ``kwargs`` and fed
    ``input_shape`` (one float input per example) or the arrays of a ``sample`` ``.npz``. A source is
    exported with the parity gate, converted when ``target`` is an ort target, and profiled on ``device``
    (``warmup``, ``runs``). ``out``: beside an ONNX file by default, else ``runs/export/<name>``.
    """
    from edgekd.export.config import load_export_target
    from edgekd.export.ort_format import export_file
    from edgekd.export.source import default_out, export_source, input_shape_of, source_kind

    _timing(warmup=warmup, runs=runs)
    model = user_text(model, "model")  # a file, a Hugging Face directory or hub id, or package.module:factory
    out_dir = _path(out, "out") or default_out(model)
    profile_, target_ = load_device(device), load_export_target(target)
    if source_kind(model) != "onnx":
        return export_source(str(model), target_, profile_, out_dir,
                             kwargs=dict(kwargs) if kwargs is not None else None,
                             input_shape=input_shape_of(input_shape, "input_shape"),
                             sample=_path(sample, "sample"), warmup=warmup, runs=runs)
    if kwargs is not None or input_shape is not None or sample is not None:
        raise ConfigError(f"{model}: kwargs, input shape and sample apply to a 'package.module:factory', not to an "
                          "ONNX file")
    return export_file(Path(model), target_, out_dir, shape=profile_.inputs)


def quantize(model: str | Path, *, device: DeviceLike, out: str | Path,
             calibration: str | Path | None = None, eval: str | Path | None = None,  # noqa: A002 - the CLI's --eval
             settings: QuantizeSettings | Mapping[str, Any] | None = None, scores: str | None = None) -> QuantizedFile:
    """Quantize an ONNX file for ``device`` as the quantize stage does; the kept model and quantize.json go to ``out``.

    ``calibration``: a ``.npz`` with one array per graph input, named as the input (needed for static
    INT8); ``eval``: the same plus ``y`` labels (the accuracy and agreement gates), scored on the graph output
    ``scores`` (default: the one named ``logits``, else the first floating-point one). ``settings``: the
    quantize stage's settings (:class:`~edgekd.quantize.config.QuantizeSettings` or a mapping of them).
    Returns a :class:`~edgekd.quantize.onnx_file.QuantizedFile` (the kept model, the decision, the record).
    """
    from edgekd.quantize.onnx_file import quantize_file

    return quantize_file(user_path(model, "model"), load_device(device), user_path(out, "out"),
                         calibration=_path(calibration, "calibration"), evaluation=_path(eval, "eval"),
                         settings=_quantize_settings(settings), scores=scores)


def _quantize_settings(settings: QuantizeSettings | Mapping[str, Any] | None) -> QuantizeSettings | None:
    """``settings`` validated as the quantize stage's (an invalid mapping is a one-line ConfigError)."""
    if settings is None or isinstance(settings, QuantizeSettings):
        return settings
    return validate_model(dict(settings), QuantizeSettings, source="quantize settings")


def bundle(model: str | Path, *, device: DeviceLike, out: str | Path,
           labels: str | Path | None = None, preprocessing: str | Path | None = None,
           target: str | Path = "ort-mobile", warmup: int = 20, runs: int = 200,
           scores: str | None = None) -> BundledFile:
    """Pack an ONNX file for an Android/iOS app as the bundle stage does: ``out``/bundle/, bundle.zip, bundle.json.

    The model is converted as the export ``target`` says (``.ort`` with its reduced-operator config,
    parity-checked at ``device``'s input shapes) and profiled on ``device`` for the manifest's latency.
    ``labels``: a text file with one class name per line; ``preprocessing``: a JSON or YAML mapping
    stored as the manifest's ``preprocessing``; ``scores``: the graph output holding the model's answer (default:
    the one named ``logits``, else the first floating-point one). Returns a
    :class:`~edgekd.export.bundle_file.BundledFile`.
    """
    from edgekd.export.bundle_file import bundle_file
    from edgekd.export.config import load_export_target

    _timing(warmup=warmup, runs=runs)
    return bundle_file(user_path(model, "model"), load_device(device), user_path(out, "out"),
                       load_export_target(target), labels=_path(labels, "labels"),
                       preprocessing=_path(preprocessing, "preprocessing"),
                       warmup=warmup, runs=runs, scores=scores)


def _path(value: str | Path | None, what: str) -> Path | None:
    """An optional path argument, ``~`` and variables expanded (:func:`~edgekd.config.paths.user_path`)."""
    return user_path(value, what) if value is not None else None
