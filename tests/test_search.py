"""Budget-driven search: the candidate grid, the cached latency table, impossible budgets, a search end to end."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

import edgekd
from edgekd.atomic import write_json
from edgekd.catalog import find
from edgekd.cli import app
from edgekd.config.device import Budget, InputShape, load_device, with_budget
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.errors import BudgetError, ConfigError, StorageError
from edgekd.models.specs import BertSpec, MLPSpec
from edgekd.pipeline import damaged_stage, load_run_records
from edgekd.profile import speed_ratio as speed_ratio_module
from edgekd.profile.cpu import CpuInfo
from edgekd.report.document import Document
from edgekd.report.markdown import render_markdown
from edgekd.report.search_section import search_section
from edgekd.search import table as table_module
from edgekd.search.build import Family
from edgekd.search.compress import preflight, search_recipe
from edgekd.search.config import SearchStage
from edgekd.search.messages import no_fit_message
from edgekd.search.plan import Row, plan_search
from edgekd.search.record import Entry, SearchRecord, read_search_record
from edgekd.search.space import candidates
from edgekd.search.table import latency_table, table_key, table_path
from tests.conftest import demo_recipe_dict

runner = CliRunner()
FAST_TABLE = {"warmup": 3, "runs": 20, "rounds": 1}
DIGITS = Family("mlp", InputSignature("image", image_shape=(1, 8, 8)), tuple(str(i) for i in range(10)))
#: Digits MLPs a few microseconds fast, and one far slower and, at 16 MB (4.5 MB pruned to half width), over a
#: 3 MB budget: the size keeps both out on any machine, however fast it times them.
SPACE = {"hidden": [[16], [64], [2048, 2048]]}
#: This machine with a budget the search has to work for (the small MLPs meet its latency even on a loaded machine).
TIGHT = Budget(p90_ms=0.5, size_mb=3, peak_memory_mb=500)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One edgekd cache for the module, so later tests reuse the latency table earlier ones built."""
    root = tmp_path_factory.mktemp("edgekd-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEKD_CACHE", str(root))
        yield root


def _search(**settings: Any) -> dict[str, Any]:
    return {"stage": "search", "space": copy.deepcopy(SPACE), "prune": [0.0, 0.5], "precision": ["fp32"], "top_k": 2,
            "distill": {"epochs": 1, "lr": 0.004}, "recovery": {"epochs": 1, "lr": 0.002}, "table": FAST_TABLE,
            "confirm_runs": 30, **settings}


def _recipe(**search: Any) -> dict[str, Any]:
    """The digits demo with an MLP teacher (fast to train) and a search over MLP students."""
    recipe = demo_recipe_dict()
    recipe["name"] = "digits-search"
    recipe["teacher"]["model"] = {"arch": "mlp", "hidden": [256]}
    recipe["student"]["model"] = {"arch": "mlp", "hidden": [32]}
    recipe["stages"] = [{"stage": "teacher", "epochs": 3, "lr": 0.003}, _search(**search),
                        {"stage": "profile", "warmup": 5, "runs": 30}, {"stage": "report"}]
    return recipe


# --------------------------------------------------------------------------- the grid


def test_grid_is_the_product_of_the_space_and_leaves_invalid_students_out() -> None:
    stage = SearchStage(stage="search", space={"hidden": [64, 96, 64], "heads": [2, 5]}, prune=[0.0, 0.5],
                        precision=["fp32", "int8"])
    grid = candidates(stage, BertSpec(arch="bert", layers=2, hidden=64, heads=2))
    structures = {c.structure.key: c.structure for c in grid}
    # 64 and 96 (64 listed once) × heads 2 (5 divides neither width) × prune 2 → 4 structures, × 2 precisions
    assert len(grid) == 8 and len(structures) == 4
    assert {(s.spec["hidden"], s.spec["heads"], s.prune) for s in structures.values()} == {
        (64, 2, 0.0), (64, 2, 0.5), (96, 2, 0.0), (96, 2, 0.5)}
    assert grid[0].label == "bert hidden=64 heads=2 fp32" and grid[2].label == "bert hidden=64 heads=2 prune=0.5 fp32"
    # the key names what shapes the graph: dropout does not, widths do
    same = candidates(stage, BertSpec(arch="bert", layers=2, hidden=64, heads=2, dropout=0.3))
    assert [c.key for c in same] == [c.key for c in grid]
    other = candidates(stage, BertSpec(arch="bert", layers=3, hidden=64, heads=2))
    assert not {c.key for c in other} & {c.key for c in grid}


@pytest.mark.parametrize(("change", "fragments"), [
    (lambda r: r["stages"][1]["space"].update(hiden=[[8]]), ["stages[1].space.hiden", "did you mean 'hidden'"]),
    (lambda r: r["stages"][1]["space"].update(hidden=[["wide"]]), ["stages[1].space.hidden[0]", "'wide'"]),
    (lambda r: r["student"].update(model={"arch": "bilstm"}), ["student.model.arch", "'bilstm' model takes text"]),
    (lambda r: r["stages"].insert(2, {"stage": "export"}), ["stages[2].stage", "'export' cannot follow 'search'"]),
    (lambda r: r["stages"].pop(0), ["stages[0].stage", "'search' needs a 'teacher' stage"]),
    (lambda r: r["stages"][1].update(max_candidates=4), ["stages[1]: the grid has 6 candidates"]),
])
def test_search_recipe_mistakes_are_one_line_errors(write_recipe, change, fragments: list[str]) -> None:
    recipe = _recipe()
    change(recipe)
    result = runner.invoke(app, ["validate", str(write_recipe(recipe))])
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# --------------------------------------------------------------------------- the latency table


def test_latency_table_is_cached_per_device_and_cpu(cache: Path) -> None:
    stage = SearchStage(stage="search", space=SPACE, prune=[0.0, 0.5], precision=["fp32"], table=FAST_TABLE)
    grid = candidates(stage, MLPSpec(arch="mlp", hidden=[32]))
    host = load_device("host-cpu")
    first = latency_table(grid, DIGITS, host, stage)
    assert first.stats.profiled == len(grid) == 6 and Path(first.stats.path).parent == cache / "latency-tables"
    by_label = {e.label: e for e in first.entries.values()}
    small, large = by_label["mlp hidden=[16] fp32"], by_label["mlp hidden=[2048,2048] fp32"]
    assert small.macs == 8 * 8 * 16 + 16 * 10 and large.size_mb > TIGHT.size_mb > small.size_mb
    assert by_label["mlp hidden=[2048,2048] prune=0.5 fp32"].macs == 64 * 1024 + 1024 * 1024 + 1024 * 10
    # the second search on the same device costs no profiling, whatever its budget
    again = latency_table(grid, DIGITS, with_budget(host, 0.5), stage)
    assert (again.stats.profiled, again.stats.reused, again.stats.seconds) == (0, 6, 0.0)
    assert again.entries == first.entries
    # --fresh times every candidate again (a table timed on a busy machine) and replaces the cached entries
    timed_again = latency_table(grid, DIGITS, host, stage, fresh=True)
    assert (timed_again.stats.profiled, timed_again.stats.reused) == (6, 0)
    cached = latency_table(grid, DIGITS, host, stage)
    assert cached.stats.profiled == 0 and cached.entries == timed_again.entries != first.entries
    # another profile, another CPU: another table
    one_thread = host.model_copy(update={"threads": 1})
    assert table_path(table_key(DIGITS, one_thread, stage)) != Path(first.stats.path)
    other_cpu = CpuInfo("Another CPU", "x86_64", 2, 2, ("avx2",))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(table_module, "detect_cpu", lambda: other_cpu)
        assert table_path(table_key(DIGITS, host, stage)) != Path(first.stats.path)


def test_entries_an_earlier_process_timed_under_load_are_timed_again_on_a_quiet_machine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A table cached while other work kept the CPUs busy (seen: 6.55 ms for a 1.32 ms model) would steer every
    later search; a later process times those entries again once the machine is quiet."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    monkeypatch.setattr("edgekd.threads.allowed_cpus", lambda: {0, 1})  # 0.5 busy CPUs of 2 make a timing suspect
    caplog.set_level("INFO", logger="edgekd")
    stage = SearchStage(stage="search", space={"hidden": [[16], [32]]}, precision=["fp32"], table=FAST_TABLE)
    grid = candidates(stage, MLPSpec(arch="mlp", hidden=[32]))
    host = load_device("host-cpu")
    key = table_key(DIGITS, host, stage)

    def entry(candidate: Any, p90: float, load: float | None, when: str = "2026-01-01T00:00:00+0000") -> Entry:
        return Entry(key=candidate.key, label=candidate.label, precision="fp32", p50_ms=p90, p90_ms=p90, size_mb=0.1,
                     peak_memory_mb=1.0, host_p90_ms=p90, estimate=False, macs=1, params=1, measured_at=when,
                     other_load=load)

    loaded, quiet = grid
    write_json(table_path(key), {"key": key, "entries": {loaded.key: entry(loaded, 6.55, 1.5).to_json(),
                                                          quiet.key: entry(quiet, 1.0, 0.1).to_json()}})
    timed: list[list[str]] = []

    def measure(missing: list[Any]) -> dict[str, Entry]:
        timed.append([c.key for c in missing])
        return {c.key: entry(c, 1.32, None, when=time.strftime(table_module.TIME_FORMAT)) for c in missing}

    monkeypatch.setattr(table_module, "busy_cpus", lambda cpus: 1.8)  # still busy: kept, with a warning
    kept = table_module.cached_table(grid, key, host, measure)
    assert timed == [] and kept.entries[loaded.key].p90_ms == 6.55
    assert "1 cached candidate(s) were timed while other processes kept up to 1.5 CPUs busy, and 1.8" in caplog.text
    monkeypatch.setattr(table_module, "busy_cpus", lambda cpus: 0.0)
    retimed = table_module.cached_table(grid, key, host, measure)
    assert timed == [[loaded.key]] and (retimed.stats.profiled, retimed.stats.reused) == (1, 1)
    assert retimed.entries[loaded.key].p90_ms == 1.32 and retimed.entries[quiet.key].p90_ms == 1.0
    assert retimed.entries[loaded.key].other_load is not None  # the load it was timed under, watched this time
    # an entry this process timed stays as timed, however busy the machine was: a command's checks and search agree
    table_module.cached_table(grid, key, host, measure)
    assert timed == [[loaded.key]]


def test_estimated_device_scales_the_table_by_its_speed_ratio(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fixed = speed_ratio_module.SpeedRatio(ratio=3.0, host_ms=10.0, device_ms=30.0, reference_model="mobilebert-seq128",
                                          source="a test figure", threads=2, cpu={})
    monkeypatch.setattr("edgekd.profile.runner.speed_ratio", lambda *_args, **_kwargs: fixed)
    stage = SearchStage(stage="search", space={"hidden": [[16]]}, precision=["fp32"], table=FAST_TABLE)
    table = latency_table(candidates(stage, MLPSpec(arch="mlp", hidden=[32])), DIGITS,
                          load_device("android-midrange-cpu"), stage)
    (entry,) = table.entries.values()
    assert entry.estimate and entry.p90_ms == pytest.approx(3.0 * entry.host_p90_ms)


def test_bert_candidates_are_timed_at_the_device_sequence_length_in_fp32_and_int8(cache: Path) -> None:
    stage = SearchStage(stage="search", space={"layers": [1], "hidden": [32]}, precision=["fp32", "int8"],
                        table=FAST_TABLE)
    family = Family("bert", InputSignature("text", vocab_size=200, pad_id=0, max_length=32), ("neg", "pos"))
    device = load_device("host-cpu").model_copy(update={"inputs": InputShape(batch=1, sequence_length=16)})
    table = latency_table(candidates(stage, BertSpec(arch="bert", layers=2, hidden=64, heads=2)), family, device,
                          stage)
    fp32, int8 = sorted(table.entries.values(), key=lambda e: e.precision)
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    assert fp32.macs == int8.macs > 0 and int8.size_mb < fp32.size_mb


# --------------------------------------------------------------------------- impossible budgets


def test_impossible_budget_exits_2_with_the_fastest_candidate_before_training(write_recipe, cache: Path,
                                                                              tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(app, ["compress", str(write_recipe(_recipe())), "--budget-ms", "0.0001", "--out", str(out)])
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    assert len(text.splitlines()) == 1 and "Traceback" not in text, text
    assert "fastest candidate" in text and "vs budget 0.0001 ms" in text, text
    assert "an empty ONNX graph already takes" in text, text
    assert not out.exists()  # refused before the teacher trained
    # `edgekd run` of a recipe with a search stage checks the same way before training
    impossible = load_device("host-cpu").model_copy(update={"budget": TIGHT.model_copy(update={"p90_ms": 1e-4})})
    with pytest.raises(BudgetError, match="fastest candidate"):
        edgekd.run(validate_model(_recipe(), Recipe, source="test"), device=impossible, out=out)
    assert not out.exists()


def test_budget_error_says_what_would_be_needed() -> None:
    stage = SearchStage(stage="search", space={"layers": [1, 2]}, precision=["fp32", "int8"])
    grid = candidates(stage, BertSpec(arch="bert", layers=2, hidden=64, heads=2))
    family = Family("bert", InputSignature("text", vocab_size=200, pad_id=0, max_length=32), ("neg", "pos"))
    phone = load_device("android-midrange-cpu").model_copy(update={"isa": ["neon"]})  # no int8 dot products

    def rows(p90: float, size: float) -> list[Row]:
        return [Row(c, Entry(key=c.key, label=c.label, precision=c.precision, p50_ms=p90 * (i + 1),
                             p90_ms=p90 * (i + 1), size_mb=size, peak_memory_mb=40.0, host_p90_ms=p90, estimate=True,
                             macs=1, params=1, measured_at=""), ("p90_ms",)) for i, c in enumerate(grid)]

    slow = no_fit_message(rows(62.0, 1.0), phone, stage, family)
    assert "fastest candidate 62 ms p90 (estimated) vs budget 50 ms" in slow, slow
    assert "a smaller max sequence length (inputs.sequence_length is 128)" in slow
    assert "int8 on a VNNI device (this one: neon-only)" in slow
    assert slow.endswith("smaller students in space, structured pruning after distillation (prune: [0.5]) or "
                         "low-rank factorization (factorize: [0.5])"), slow
    compressing = stage.model_copy(update={"prune": [0.0, 0.5], "factorize": [None, 0.5]})
    assert no_fit_message(rows(62.0, 1.0), phone, compressing, family).endswith(
        "int8 on a VNNI device (this one: neon-only) or smaller students in space")
    big = [replace(row, over=("size_mb",)) for row in rows(1.0, 60.0)]
    assert "smallest file 60 MB vs budget 25 MB" in no_fit_message(big, phone, stage, family)


def test_a_default_space_leaves_out_students_larger_than_the_teacher(cache: Path) -> None:
    # the MLP's default space (hidden [32], [64], [128], [64, 64], [128, 128]) around digits' 64 inputs
    stage = SearchStage(stage="search", precision=["fp32"], table=FAST_TABLE)
    student, device = MLPSpec(arch="mlp", hidden=[32]), load_device("host-cpu")
    teacher_params = 64 * 64 + 64 + 64 * 10 + 10  # an MLP teacher with hidden [64]
    plan = plan_search(stage, student, DIGITS, device, teacher_params=teacher_params)
    outgrown = {row.candidate.label for row in plan.rows if row.outgrows_teacher}
    # hidden [64] is the teacher itself: no compression either
    assert outgrown == {"mlp hidden=[64] fp32", "mlp hidden=[128] fp32", "mlp hidden=[64,64] fp32",
                        "mlp hidden=[128,128] fp32"}
    assert all((row.entry.params >= teacher_params) == row.outgrows_teacher for row in plan.rows)
    ranked = [choice.structure.label for choice in plan.ranked]
    assert "mlp hidden=[32]" in ranked and not any(label + " fp32" in outgrown for label in ranked)
    # a space the recipe gives is taken as written
    given = stage.model_copy(update={"space": {"hidden": [[32], [128]]}})
    assert not any(row.outgrows_teacher for row in plan_search(given, student, DIGITS, device,
                                                                  teacher_params=teacher_params).rows)
    # a teacher smaller than every default candidate: one line saying what to do
    with pytest.raises(ConfigError) as refused:
        plan_search(stage, student, DIGITS, device, teacher_params=1210)
    assert str(refused.value) == (
        "search.space: every candidate of the default 'mlp' space has as many parameters as the teacher or more "
        "(1,210; the smallest, mlp hidden=[32] fp32, has 2,410), and a student as large as its teacher is no "
        "compression; give search.space sizes below the teacher's")


def test_compress_on_a_default_space_keeps_the_student_smaller_than_its_teacher(cache: Path, tmp_path: Path) -> None:
    recipe = _recipe(space=None, prune=[0.0], top_k=1)
    recipe["teacher"]["model"]["hidden"] = [64]
    found = edgekd.compress(validate_model(recipe, Recipe, source="test"),
                            device=load_device("host-cpu").model_copy(update={"budget": TIGHT}), out=tmp_path / "run")
    search = read_search_record(next(r for r in load_run_records(found.run.run_dir) if r["stage"] == "search"))
    teacher = found.report()["teacher"]["params"]
    statuses = {row.label: row.status for row in search.table.candidates}
    assert statuses["mlp hidden=[128,128] fp32"] == "not smaller than the teacher"
    assert all(row.params < teacher for row in search.table.candidates if row.status != "not smaller than the teacher")
    assert search.chosen.params < teacher
    assert "not smaller than the teacher" in (found.run.run_dir / "report.md").read_text()


def test_compress_refuses_a_teacher_smaller_than_every_default_candidate_before_it_trains(
        cache: Path, tmp_path: Path) -> None:
    recipe = _recipe(space=None, prune=[0.0], top_k=1)
    recipe["teacher"]["model"]["hidden"] = [16]  # 1,210 parameters: below the default space's smallest (2,410)
    with pytest.raises(ConfigError, match=r"every candidate of the default 'mlp' space .* \(1,210; the smallest"):
        edgekd.compress(validate_model(recipe, Recipe, source="test"), device=load_device("host-cpu"),
                        out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused at preflight: no teacher trained


# --------------------------------------------------------------------------- a search end to end


def test_compress_picks_a_model_within_budget_and_reports_it(cache: Path, tmp_path: Path) -> None:
    recipe = validate_model(_recipe(), Recipe, source="test")
    device = load_device("host-cpu").model_copy(update={"budget": TIGHT})
    found = edgekd.compress(recipe, device=device, out=tmp_path / "run")
    stage = next(r for r in load_run_records(found.run.run_dir) if r["stage"] == "search")
    search = read_search_record(stage)
    assert isinstance(search, SearchRecord) and search.model_dump(mode="json") == stage["metrics"]["search"]
    assert damaged_stage(found.run.run_dir) is None  # every stage's record reads back as its kind's: reusable
    rows = search.table.candidates
    over = [row for row in rows if row.over]
    assert {row.label for row in over} == {"mlp hidden=[2048,2048] fp32", "mlp hidden=[2048,2048] prune=0.5 fp32"}
    assert all("size_mb" in row.over for row in over), over
    # over-budget candidates were never trained; the two largest feasible ones were (one pruned after distillation)
    assert {row.status for row in over} == {"over budget"}
    assert [t.label for t in search.trained] == ["mlp hidden=[64]", "mlp hidden=[64] prune=0.5"]
    # the choice is the most accurate (validation) within budget, confirmed by a re-profile
    passing = [m for m in search.measured if m.verdict == "pass"]
    assert search.chosen.val_accuracy == max(m.val_accuracy for m in passing)
    assert search.chosen.confirmed.verdict == "pass" and search.chosen.confirmed.p90_ms <= TIGHT.p90_ms
    # a damaged record is one line naming its file and field
    broken = copy.deepcopy(stage)
    broken["metrics"]["search"]["chosen"]["confirmed"]["verdict"] = "maybe"
    with pytest.raises(StorageError, match=r"^\d\d-search/stage\.json: metrics\.search\.chosen\.confirmed"
                                           r"\.verdict: [^\n]+$"):
        read_search_record(broken)
    report = found.report()
    assert report["student"]["p90_ms"] <= TIGHT.p90_ms and report["budget"]["verdict"] == "pass"
    assert report["student"]["accuracy"] == search.chosen.accuracy
    # the report shows the table, the trained candidates and the Pareto plot
    run_dir = found.run.run_dir
    assert report["plots"]["search_pareto"] == "search_pareto.png" and (run_dir / "search_pareto.png").is_file()
    markdown = (run_dir / "report.md").read_text()
    assert "## Budget search" in markdown and "latency table candidate" in markdown and "← chosen" in markdown
    assert "Budget search" in (run_dir / "report.html").read_text()
    # compress timed the table before the teacher trained, its stage read it back: the report says when it was timed
    moments = sorted({row.measured_at for row in search.table.candidates})
    assert (f"none timed by the search stage, {len(rows)} read from the cache ({search.table.path}), timed "
            f"{moments[0]}") in markdown
    assert json.loads((run_dir / "report.json").read_text())["search"]["chosen"]["label"] == search.chosen.label
    # the table was timed once, by the pre-flight check; the stage and a second search reuse it
    assert found.table.profiled + found.table.reused == len(rows) and search.table.profiled == 0
    second = preflight(recipe, with_budget(load_device("host-cpu"), 1.0))
    assert second is not None and (second.profiled, second.seconds) == (0, 0.0)
    # a table timed beside other work says so in the report (64 busy CPUs: loaded on any machine up to 256)
    busy = [row.model_copy(update={"other_load": 64.0}) for row in rows]
    section = search_section(search.model_copy(update={"table": search.table.model_copy(update={"candidates": busy})}))
    assert section is not None
    text = render_markdown(Document(title="search", sections=(section,)))
    assert f"; {len(rows)} timed while other processes kept up to 64 CPUs busy (their figures may be slow)" in text


def test_compress_reports_the_chosen_candidates_quantize_decision_and_one_params_count(
        cache: Path, tmp_path: Path) -> None:
    """The chosen candidate's quantize stage ran and kept FP32 (INT8 would have to be 1000× faster), with a reason:
    the report's student carried neither (precision and quantization_reason null: the search took the export's
    student, which the decision was never written on). A CNN's batch norms are folded into its exported graph, whose
    initializers the latency table counted as parameters (2,146 in the model, 2,122 in the graph here): the table
    now counts the model's, as every other params figure of the report does, and writes them in full as they do."""
    recipe = _recipe(space={"channels": [[8, 16]], "hidden": [32]}, prune=[0.0], precision=["fp32", "int8"], top_k=1,
                     quantize={"runs": 20, "rounds": 1, "min_speedup": 1000, "agreement": 0.01, "tolerance": 0.5})
    recipe["student"]["model"] = {"arch": "cnn", "channels": [8, 16], "hidden": 32}
    device = load_device("host-cpu").model_copy(update={"budget": TIGHT})
    found = edgekd.compress(validate_model(recipe, Recipe, source="test"), device=device, out=tmp_path / "run")
    report, search = found.report(), found.search()
    candidate_run = found.run.run_dir / "02-search" / "candidates" / search.chosen.structure
    quantized = next(r for r in load_run_records(candidate_run) if r["stage"] == "quantize")
    decided = quantized["artifact"]["student"]["metrics"]
    assert (decided["precision"], search.chosen.precision) == ("fp32", "fp32")
    assert decided["quantization_reason"].startswith("fp32 kept: ")
    assert decided["quantization_reason"].endswith("keeping it needs 1000×")
    assert report["student"]["precision"] == "fp32"
    assert report["student"]["quantization_reason"] == decided["quantization_reason"]
    assert report["quantization"] == [{"stage": "search", "role": "student", "decision": "fp32",
                                       "reason": decided["quantization_reason"]}]  # was empty: no quantize stage here
    params = report["student"]["params"]
    assert params == 2146 and search.chosen.params == params
    assert [row.params for row in search.table.candidates] == [params, params]  # fp32 and int8 of the one structure
    markdown = (found.run.run_dir / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| cnn channels=[8,16] hidden=32 ")
            and line.endswith(" | trained |")]  # the latency table's rows (the trained candidates' table follows)
    assert len(rows) == 2 and all(row.endswith(" | 2,146 | trained |") for row in rows), rows


def test_compress_says_when_it_varies_the_teachers_architecture_instead_of_the_students(
        caplog: pytest.LogCaptureFixture) -> None:
    recipe = demo_recipe_dict()
    recipe["student"]["model"] = {"arch": "module", "factory": "tests.user_modules:small_cnn"}
    with caplog.at_level("WARNING", logger="edgekd.search.compress"):
        derived = search_recipe(validate_model(recipe, Recipe, source="demo"))
    assert derived.student.model.arch == recipe["teacher"]["model"]["arch"]
    assert "compress: the recipe's student ('module') cannot be varied by a search (searchable: " in caplog.text
    assert f"the search varies the teacher's architecture ('{derived.student.model.arch}') instead" in caplog.text


def test_compress_turns_a_plain_recipe_into_a_search() -> None:
    recipe = validate_model(demo_recipe_dict(), Recipe, source="demo")
    derived = search_recipe(recipe)
    assert derived.name == "demo-digits-search"
    assert derived.stage_names() == ["teacher", "search", "profile", "bundle", "report"]
    search = derived.stages[1]
    distill = recipe.stages[1]
    assert (search.distill.epochs, search.distill.lr, search.target) == (distill.epochs, distill.lr, "ort-mobile")
    assert search_recipe(derived) == derived
    text = yaml.safe_load(find("pipelines", "sst2-distilbert-style").read_text())
    text["data"].update(train="train.tsv", test="dev.tsv")
    sst2 = search_recipe(validate_model(text, Recipe, source="sst2"))
    assert sst2.student.model.arch == "drop_layers"  # varied by how many of the trained teacher's layers it keeps
