"""Interrupted runs: SIGKILL a running pipeline in training, export or profiling, run the same command again.

The re-run must skip the finished stages, resume training from its last epoch checkpoint and end
with exactly the figures (and ONNX bytes) of an uninterrupted run with the same seed; no file a
killed process was writing may ever be taken for a finished artifact. The same recipe and seed
must also give identical figures and bytes run after run, for text recipes as for image ones.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import psutil
import pytest
from safetensors import safe_open

import edgekd
from edgekd.artifacts import Artifact
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.distill.trainer import CHECKPOINT
from edgekd.models.task_model import MANIFEST, WEIGHTS
from edgekd.pipeline import FINGERPRINT_FILE, STAGE_RECORD, load_run_records, stage_dir_name
from tests.reliability import one_torch_thread, text_recipe, tiny_recipe, write_yaml

POLL_S = 0.005
TIMEOUT_S = 300
#: Model figures that must not depend on whether (or where) a run was interrupted.
FIGURES = ("accuracy", "val_accuracy", "params", "best_epoch", "epochs_run", "stopped_early", "size_mb",
           "parity_max_abs_diff", "opset", "macs")


@dataclass(frozen=True)
class Timing:
    """How long a stage took in the uninterrupted reference run, and (training stages) one of its epochs."""

    seconds: float
    epochs: int = 0
    epoch_seconds: float = 0.0

    @classmethod
    def of(cls, record: dict[str, Any]) -> Timing:
        trained = [m for m in record["metrics"].values() if isinstance(m, dict) and m.get("epochs_run")]
        if not trained:
            return cls(record["wall_seconds"])
        epochs = trained[0]["epochs_run"]
        return cls(record["wall_seconds"], epochs, trained[0]["train_seconds"] / epochs)


@dataclass
class Killed:
    """One killed attempt: the stage it was killed in, where exactly, and what the process logged."""

    stage: str
    where: str
    log: str
    epochs_done: int | None = None


class Attempt:
    """``edgekd run RECIPE --out RUN_DIR [OPTIONS]`` in a subprocess of its own session, logging to a file, after
    running ``prelude`` in it (Python code)."""

    def __init__(self, recipe: Path, run_dir: Path, log: Path, *options: str, prelude: str = "") -> None:
        self.run_dir, self.log_path = run_dir, log
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
        argv = ["edgekd", "run", str(recipe), "--out", str(run_dir), "-q", *options]
        code = f"{prelude}\nimport runpy, sys\nsys.argv = {argv!r}\nrunpy.run_module('edgekd', run_name='__main__')"
        with log.open("w") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", code],
                stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )

    def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Poll until ``condition()`` holds; fail if the run ends or takes too long first."""
        deadline = time.monotonic() + TIMEOUT_S
        while not condition():
            assert self.proc.poll() is None, f"the run ended (exit {self.proc.returncode}) before {what}:\n{self.log}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(POLL_S)

    def kill(self) -> None:
        """SIGKILL the run and every process it started (its profiling workers)."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def finish(self) -> str:
        """Wait for the run to end; it must succeed. Returns its log."""
        code = self.proc.wait(timeout=TIMEOUT_S)
        assert code == 0, f"exit code {code}:\n{self.log}"
        return self.log

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def workers(self) -> list[psutil.Process]:
        """The profiling worker processes the run has started and that are still alive."""
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
            return [c for c in children if "edgekd.profile.worker" in " ".join(c.cmdline())]
        except psutil.Error:
            return []


@pytest.fixture(autouse=True)
def no_stage_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every attempt trains its stages itself: with the shared stage store on, the attempts reused the teacher the
    reference run had trained, so no attempt could be killed while training it."""
    monkeypatch.setenv("EDGEKD_STAGE_STORE", "off")


def test_killed_in_training_export_and_profiling_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    _kill_and_resume(tmp_path, tiny_recipe(), ("distill", "export", "profile"), seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_repeated_kills_in_every_phase_resume_to_the_uninterrupted_result(tmp_path: Path, seed: int) -> None:
    recipe = tiny_recipe(teacher_epochs=12, distill_epochs=16)
    _kill_and_resume(tmp_path, recipe, ("teacher", "teacher", "distill", "distill", "export", "profile"), seed=seed)


def _kill_and_resume(tmp_path: Path, recipe: dict[str, Any], phases: tuple[str, ...], seed: int) -> None:
    """Kill one attempt per phase at a seeded random point of it, then let the same command finish."""
    path, run_dir = write_yaml(tmp_path / "recipe.yaml", recipe), tmp_path / "run"
    with one_torch_thread():
        reference = edgekd.run(path, out=tmp_path / "reference")
    stages = [stage["stage"] for stage in recipe["stages"]]
    timings = {record.stage: Timing.of(record.data) for record in reference.stages}
    rng, killed = random.Random(seed), []
    for attempt_no, phase in enumerate(phases):
        attempt = Attempt(path, run_dir, tmp_path / f"attempt-{attempt_no}.log")
        stage_dir = stage_dir_name(stages.index(phase) + 1, phase)
        partial = run_dir / f".{stage_dir}.partial"
        where = KILL_POINTS[phase](attempt, partial, rng, timings[phase])
        attempt.kill()
        assert not (run_dir / stage_dir).exists(), f"killed too late: stage {stage_dir} had finished ({where})"
        _assert_finished_stages_are_whole(run_dir)
        killed.append(Killed(phase, where, attempt.log, _checkpoint_epochs(partial) if timings[phase].epochs else None))
    final_log = Attempt(path, run_dir, tmp_path / "final.log").finish()

    _assert_finished_stages_are_whole(run_dir)
    assert not list(run_dir.glob(".*.partial")), "a stage directory was left unfinished"
    for before, after in zip(killed, [*killed[1:], Killed("", "", final_log)], strict=True):
        _assert_resumed(after.log, stages, before)
    records = load_run_records(run_dir)
    for last in {k.stage: k for k in killed if k.epochs_done is not None}.values():
        metrics = next(r for r in records if r["stage"] == last.stage)["metrics"]
        role = "teacher" if last.stage == "teacher" else "student"
        assert metrics[role]["resumed_from_epoch"] == last.epochs_done, (last.stage, last.where)
    assert _figures(records) == _figures([r.data for r in reference.stages])
    export_dir = stage_dir_name(stages.index("export") + 1, "export")
    for model in ("teacher.onnx", "student.onnx"):
        assert (run_dir / export_dir / model).read_bytes() == (tmp_path / "reference" / export_dir / model).read_bytes()


def _kill_in_training(attempt: Attempt, partial: Path, rng: random.Random, timing: Timing) -> str:
    """Wait for the checkpoint of a random epoch in the first half of what remains, then up to half an epoch more.

    Three epochs at least remain after the one waited for, so the kill lands in training even when
    epochs run faster than in the reference run, and a later attempt can be killed in training again.
    """
    start, epochs = _checkpoint_epochs(partial) or 0, timing.epochs
    assert start + 1 <= epochs - 4, f"no room for another kill in training ({start} of {epochs} epochs done)"
    target = rng.randint(start + 1, start + max(1, (epochs - 4 - start) // 2))
    jitter = rng.uniform(0, timing.epoch_seconds / 2)
    attempt.wait_for(lambda: (_checkpoint_epochs(partial) or 0) >= target, f"epoch {target} of {partial.name}")
    time.sleep(jitter)
    return f"{jitter:.3f} s after the checkpoint of epoch {target}"


def _kill_in_export(attempt: Attempt, partial: Path, rng: random.Random, timing: Timing) -> str:
    """Wait for the export to start, or for its first model to be written, then a random moment more."""
    marker, jitter = rng.choice(["started", "teacher.onnx"]), rng.uniform(0, timing.seconds / 10)
    attempt.wait_for(lambda: (partial / ("" if marker == "started" else marker)).exists(), f"export {marker}")
    time.sleep(jitter)
    return f"{jitter:.3f} s after export {marker}"


def _kill_in_profile(attempt: Attempt, partial: Path, rng: random.Random, timing: Timing) -> str:
    """Wait for profiling to start, or for a model's timing worker to run, then a random moment more."""
    marker, jitter = rng.choice(["started", "timing"]), rng.uniform(0, timing.seconds / 10)
    reached = partial.exists if marker == "started" else lambda: bool(attempt.workers())
    attempt.wait_for(reached, f"profile {marker}")
    time.sleep(jitter)
    return f"{jitter:.3f} s after profile {marker}"


#: How to kill an attempt in each phase: (attempt, the stage's working directory, RNG, its reference timing) → where.
KILL_POINTS: dict[str, Callable[[Attempt, Path, random.Random, Timing], str]] = {
    "teacher": _kill_in_training, "distill": _kill_in_training, "export": _kill_in_export,
    "profile": _kill_in_profile}


def _checkpoint_epochs(partial: Path) -> int | None:
    """Epochs recorded in a training stage's checkpoint (a teacher's is per member), if one is there."""
    try:
        paths = sorted(partial.glob(f"**/{CHECKPOINT}"))
    except FileNotFoundError:  # a temporary directory renamed away while the glob walked the live stage
        return None
    if not paths:
        return None
    try:
        with safe_open(str(paths[0]), framework="pt") as handle:
            return int(json.loads(handle.metadata()["history"])["epochs_run"])
    except (OSError, ValueError, KeyError):  # a read racing the first write
        return None


def _assert_finished_stages_are_whole(run_dir: Path) -> None:
    """Every stage directory without ``.partial`` holds a record and complete files, and no temporaries."""
    for record_path in sorted(run_dir.glob(f"[0-9][0-9]-*/{STAGE_RECORD}")):
        stage_dir = record_path.parent
        leftovers = [p for p in stage_dir.rglob(".*") if p.name.endswith((".tmp", ".old"))]
        assert not leftovers, f"temporary files in the finished stage {stage_dir.name}: {leftovers}"
        artifact = Artifact.from_json(json.loads(record_path.read_text())["artifact"])
        for model in artifact.models.values():
            if model.weights is not None:
                model_dir = run_dir / model.weights
                assert json.loads((model_dir / MANIFEST).read_text())["spec"]
                with safe_open(str(model_dir / WEIGHTS), framework="pt") as handle:
                    assert list(handle.keys())
            if model.onnx is not None:
                onnx.checker.check_model(onnx.load(str(run_dir / model.onnx)))


def _assert_resumed(log: str, stages: list[str], killed: Killed) -> None:
    """The attempt after ``killed`` skipped every stage before the killed one and resumed its training."""
    index = stages.index(killed.stage)
    for number, stage in enumerate(stages[:index], start=1):
        assert f"stage {stage_dir_name(number, stage)}: skipped" in log, (stage, killed.where, log)
    assert f"stage {stage_dir_name(index + 1, killed.stage)}: running" in log, log
    if killed.epochs_done:
        assert f"resuming after epoch {killed.epochs_done}" in log, (killed.where, log)


def _figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per stage, every model's reproducible figures and (for training stages) the per-epoch history."""
    figures: dict[str, Any] = {}
    for record in records:
        models = Artifact.from_json(record["artifact"]).models
        figures[record["stage"]] = {
            "models": {role: {k: m.metrics.get(k) for k in FIGURES} for role, m in models.items()},
            "history": [{k: v for k, v in epoch.items() if k != "seconds"}
                        for epoch in record["metrics"].get("history", [])],
        }
    return figures


def test_a_killed_write_is_not_committed_with_the_stage_that_resumes_its_directory(tmp_path: Path) -> None:
    path = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(teacher_epochs=1, stages=("teacher", "export")))
    run_dir = tmp_path / "run"
    with one_torch_thread():
        edgekd.run(path, out=run_dir)
        # As if killed while writing teacher.onnx: the stage's working directory with its marker and a temporary.
        partial = run_dir / ".02-export.partial"
        (run_dir / "02-export").rename(partial)
        record = json.loads((partial / STAGE_RECORD).read_text())
        (partial / STAGE_RECORD).unlink()
        (partial / FINGERPRINT_FILE).write_text(record["fingerprint"])
        (partial / ".teacher.onnx.k1ll3d.tmp").write_bytes(b"half an ONNX file")
        result = edgekd.run(path, out=run_dir)
    assert [r.skipped for r in result.stages] == [True, False]
    _assert_finished_stages_are_whole(run_dir)


def test_same_text_recipe_and_seed_give_identical_figures_and_onnx_bytes(tmp_path: Path) -> None:
    recipe = validate_model(text_recipe(tmp_path), Recipe, source="text recipe")
    with one_torch_thread():
        first, second = (edgekd.run(recipe, out=tmp_path / run) for run in ("a", "b"))
    assert _figures([r.data for r in first.stages]) == _figures([r.data for r in second.stages])
    assert first.artifact.get("teacher").metrics["accuracy"] > 0.9  # it learned: not a comparison of constants
    for role in ("teacher", "student"):
        assert (tmp_path / "a/03-export" / f"{role}.onnx").read_bytes() == (
            tmp_path / "b/03-export" / f"{role}.onnx").read_bytes()


#: SIGKILL the process at a moment of replacing ``01-teacher`` by the new one finished beside it (what a kill -9, an
#: OOM kill or a power loss there leaves): after the first or second rename of a directory of that stage, or once the
#: first stage.json (the mark of edgekd's stage directories) is deleted.
KILL_WHILE_REPLACING = """
import os, signal
from pathlib import Path
POINT, RENAMES = {point!r}, []
real_replace, real_unlink = os.replace, os.unlink
def replace(src, dst, **kwargs):
    real_replace(src, dst, **kwargs)
    if "01-teacher" in Path(src).name + Path(dst).name:
        RENAMES.append(dst)
        if POINT == f"rename {{len(RENAMES)}}":
            os.kill(os.getpid(), signal.SIGKILL)
def unlink(path, *args, **kwargs):
    real_unlink(path, *args, **kwargs)
    if POINT == "stage.json deleted" and os.path.basename(path) == "stage.json":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace, os.unlink = replace, unlink
"""


@pytest.mark.parametrize("point", ["rename 1", "rename 2", "stage.json deleted"])
def test_killed_while_a_finished_stage_is_replaced_resumes_with_its_files_whole(tmp_path: Path, point: str) -> None:
    """A kill while ``--fresh`` replaced a finished stage directory left it without its stage.json (deleted first):
    every later run was refused ('exists and was not written by edgekd')."""
    path = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(teacher_epochs=1, distill_epochs=1,
                                                            stages=("teacher", "distill")))
    run_dir = tmp_path / "run"
    Attempt(path, run_dir, tmp_path / "first.log").finish()
    prelude = KILL_WHILE_REPLACING.format(point=point)
    killed = Attempt(path, run_dir, tmp_path / "killed.log", "--fresh", prelude=prelude)
    assert killed.proc.wait(timeout=TIMEOUT_S) == -signal.SIGKILL, killed.log
    final_log = Attempt(path, run_dir, tmp_path / "final.log").finish()
    assert "stage 01-teacher: skipped" in final_log and "stage 02-distill: skipped" in final_log, final_log
    _assert_finished_stages_are_whole(run_dir)
    assert [r["stage"] for r in load_run_records(run_dir)] == ["teacher", "distill"]
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".0")], "a stage directory was left aside"
