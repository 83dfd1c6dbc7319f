"""Training threads: the recipe's number capped at the affinity mask, or ``auto`` = the free physical cores."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import edgekd
from edgekd import threads
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.profile.load import is_loaded, watch_other_load
from edgekd.threads import allowed_cpus, busy_cpus, physical_cores, resolve_training_threads, training_threads
from tests.reliability import assert_user_error, cli, tiny_recipe, write_yaml

CPUS = allowed_cpus()


@pytest.fixture
def no_omp_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.mark.parametrize("setting", range(1, len(CPUS) + 4))
def test_a_number_is_capped_at_the_affinity_mask(setting: int) -> None:
    assert resolve_training_threads(setting) == min(setting, len(CPUS))


@pytest.mark.parametrize("value", ["1", "2", "7"])
def test_auto_follows_an_explicit_omp_num_threads(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    monkeypatch.setattr(threads, "busy_cpus", lambda cpus: pytest.fail("no load measurement when the env decides"))
    assert resolve_training_threads("auto") == min(int(value), len(CPUS))


@pytest.mark.parametrize("cores, cpus, busy, expected", [
    (2, 2, 0.0, 2), (2, 2, 0.2, 2), (2, 2, 1.0, 1), (2, 2, 2.0, 1), (2, 2, 0.6, 1),
    (8, 16, 0.0, 8), (8, 16, 8.0, 4), (8, 16, 16.0, 1), (4, 4, 1.0, 3), (1, 1, 0.0, 1),
])
def test_auto_takes_the_physical_cores_other_processes_leave_free(
        cores: int, cpus: int, busy: float, expected: int, no_omp_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "allowed_cpus", lambda: set(range(cpus)))
    monkeypatch.setattr(threads, "physical_cores", lambda mask: cores)
    monkeypatch.setattr(threads, "busy_cpus", lambda mask: busy)
    assert resolve_training_threads("auto") == expected
    assert resolve_training_threads("auto", processes=2) == max(1, cores // 2)  # launched together: share equally


def test_physical_cores_counts_smt_siblings_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = {0: ("0", "0"), 1: ("0", "1"), 2: ("0", "0"), 3: ("0", "1"), 4: ("1", "0"), 5: ("1", "0")}
    for cpu, (package, core) in layout.items():
        topology = tmp_path / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text(package + "\n")
        (topology / "core_id").write_text(core + "\n")
    monkeypatch.setattr(threads, "_TOPOLOGY", tmp_path)
    assert physical_cores({0, 1, 2, 3, 4, 5}) == 3
    assert physical_cores({0, 2}) == 1 and physical_cores({0, 1}) == 2 and physical_cores({0, 4}) == 2


def test_busy_cpus_sees_a_busy_loop_on_a_pinned_cpu() -> None:
    cpu = min(CPUS)
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    loop = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert busy_cpus({cpu}, seconds=0.5) >= 0.7
    finally:
        loop.kill()
        loop.wait()


def test_other_load_sees_a_busy_process_beside_a_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a latency table records beside its figures: the CPUs other processes kept busy meanwhile."""
    cpu = min(CPUS)
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True: pass"
    loop = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.2)  # started
        with watch_other_load() as watch:
            time.sleep(0.5)
        assert watch.cores is not None and watch.cores >= 0.7
    finally:
        loop.kill()
        loop.wait()
    monkeypatch.setattr(threads, "allowed_cpus", lambda: set(range(8)))
    assert is_loaded(2.0) and not is_loaded(1.9) and not is_loaded(None)  # a quarter of the CPUs


def test_training_threads_sets_and_restores_torch_threads(no_omp_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "busy_cpus", lambda mask: float(len(mask)))  # everything busy: one thread
    with training_threads("auto") as count:
        assert count == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with training_threads(len(CPUS) + 5) as count:
        assert count == len(CPUS) == torch.get_num_threads()
    assert torch.get_num_threads() == before


def test_auto_decides_again_before_a_stage_once_its_decision_is_old(
        no_omp_env: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A run started while another process kept both cores busy trains its later stages on both once that
    process is gone (not on one for the rest of the run); a recent decision is kept."""
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "physical_cores", lambda mask: 2)
    load = iter([2.0, 0.0])  # busy when the run starts, idle at the next stage
    monkeypatch.setattr(threads, "busy_cpus", lambda mask: next(load))
    before = torch.get_num_threads()
    caplog.set_level(logging.INFO, logger="edgekd")
    with training_threads("auto") as count:
        assert count == 1
        threads.retune_training_threads()  # decided a moment ago: kept, no load measured
        assert torch.get_num_threads() == 1
        monkeypatch.setattr(threads, "RETUNE_AFTER_S", 0.0)
        threads.retune_training_threads()
        assert torch.get_num_threads() == 2
    assert "training with 2 torch thread(s) from now on (threads: auto; was 1" in caplog.text
    assert torch.get_num_threads() == before
    threads.retune_training_threads()  # outside a run: nothing to decide
    assert torch.get_num_threads() == before


def test_a_number_or_omp_num_threads_is_never_decided_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "RETUNE_AFTER_S", 0.0)
    monkeypatch.setattr(threads, "busy_cpus", lambda mask: pytest.fail("the count was given: no load measurement"))
    with training_threads(1):
        threads.retune_training_threads()
        assert torch.get_num_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with training_threads("auto"):
        threads.retune_training_threads()
        assert torch.get_num_threads() == 1


def test_a_pipeline_decides_auto_threads_again_at_its_stages(no_omp_env: None, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1})
    monkeypatch.setattr(threads, "physical_cores", lambda mask: 2)
    monkeypatch.setattr(threads, "RETUNE_AFTER_S", 0.0)
    load = iter([2.0] + [0.0] * 10)  # busy at the start only
    monkeypatch.setattr(threads, "busy_cpus", lambda mask: next(load))
    recipe = validate_model({**tiny_recipe(teacher_epochs=1, stages=("teacher",)), "threads": "auto"}, Recipe,
                            source="test")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    assert "training with 1 torch thread(s) (threads: auto)" in caplog.text
    assert "training with 2 torch thread(s) from now on" in caplog.text  # before the teacher stage


def test_cli_threads_reaches_training_and_bad_values_are_refused(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(teacher_epochs=1, stages=("teacher",)))
    done = subprocess.run([sys.executable, "-m", "edgekd", "run", str(recipe), "--out", str(tmp_path / "run"), "-q",
                           "--threads", "1"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    assert done.returncode == 0, done.stderr
    assert "training with 1 torch thread(s) (threads: 1)" in done.stderr
    outcome = cli("run", recipe, "--out", tmp_path / "other", "--threads", "0")
    assert outcome.exit_code == 2 and "--threads" in outcome.output
    assert "'auto'" in cli("run", recipe, "--out", tmp_path / "other", "--threads", "some").output
    # a recipe's fixed count set back to auto (the option took numbers only)
    fixed = write_yaml(tmp_path / "fixed.yaml", {**tiny_recipe(teacher_epochs=1, stages=("teacher",)), "threads": 1})
    with caplog.at_level(logging.INFO, logger="edgekd"):
        assert cli("run", fixed, "--out", tmp_path / "auto", "-q", "--threads", "auto").exit_code == 0
    assert "torch thread(s) (threads: auto)" in caplog.text
    bad = write_yaml(tmp_path / "bad.yaml", {**tiny_recipe(), "threads": "many"})
    assert_user_error(cli("validate", bad), "threads")
