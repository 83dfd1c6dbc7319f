"""Data-parallel distillation: two CPU processes (gloo, under torchrun) train as one process does,
only rank 0 writes, and the options that go with it (accumulation, mixed precision) are checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.training import TrainingConfig
from edgekd.data.config import SklearnData
from edgekd.data.task_data import prepare_task_data
from edgekd.distill.trainer import fit
from edgekd.distributed import World, check_training
from edgekd.errors import ConfigError
from edgekd.models.architectures import build_model
from edgekd.models.specs import MLPSpec
from tests.reliability import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]
PROCESSES = 2
#: Dropout 0 and MLPs (no BatchNorm, which normalises over each process's share) so that the two
#: runs may differ only by floating-point summation order; the distill stage also accumulates.
RECIPE: dict[str, Any] = {
    "name": "data-parallel",
    "seed": 0,
    "device": "host-cpu",
    "data": {"source": "sklearn", "name": "digits", "val_fraction": 0.15, "test_fraction": 0.25},
    "teacher": {"model": {"arch": "mlp", "hidden": [64], "dropout": 0.0}},
    "student": {"model": {"arch": "mlp", "hidden": [16]}},
    "stages": [
        {"stage": "teacher", "epochs": 3, "batch_size": 64, "lr": 0.002, "max_grad_norm": 1.0},
        {"stage": "distill", "epochs": 3, "batch_size": 64, "lr": 0.004, "gradient_accumulation_steps": 2,
         "losses": [{"kind": "hinton", "temperature": 4.0, "alpha": 0.7}]},
        {"stage": "export"},
        {"stage": "profile", "warmup": 2, "runs": 10},
        {"stage": "report"},
    ],
}
WEIGHTS = ("01-teacher/teacher/model.safetensors", "02-distill/student/model.safetensors")


def _launch(recipe: Path, run_dir: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --standalone --nproc_per_node 2 -m edgekd run RECIPE --out RUN_DIR -q`` on this checkout."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "COLUMNS": "200"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={PROCESSES}",
               "-m", "edgekd", "run", str(recipe), "--out", str(run_dir), "-q"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _files(run_dir: Path) -> set[str]:
    return {str(path.relative_to(run_dir)) for path in run_dir.rglob("*")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The recipe run by two processes, and by this one (one torch thread each, as under torchrun)."""
    root = tmp_path_factory.mktemp("data-parallel")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    launched = _launch(recipe, root / "two")
    with one_torch_thread():
        edgekd.run(recipe, out=root / "one")
    return {"root": root, "recipe": recipe, "launched": launched}


def test_two_gloo_processes_train_as_one_process_with_the_same_batch(runs: dict[str, Any]) -> None:
    root = runs["root"]
    for name in WEIGHTS:
        one, two = load_file(root / "one" / name), load_file(root / "two" / name)
        assert one.keys() == two.keys()
        for key in one:
            torch.testing.assert_close(two[key], one[key], rtol=0, atol=1e-5, msg=f"{name}: {key}")
    history = [json.loads((root / run / "02-distill/stage.json").read_text())["metrics"]["history"]
               for run in ("one", "two")]
    assert [e["train_loss"] for e in history[1]] == pytest.approx([e["train_loss"] for e in history[0]], rel=1e-5)
    assert [e["val_accuracy"] for e in history[1]] == [e["val_accuracy"] for e in history[0]]


def test_two_processes_write_each_artifact_once_and_finish(runs: dict[str, Any]) -> None:
    root, launched = runs["root"], runs["launched"]
    # The same files as the single-process run: one copy of each, nothing rank-suffixed, nothing left over.
    assert _files(root / "two") == _files(root / "one")
    assert not [name for name in _files(root / "two") if "rank" in name or name.endswith((".npy", ".partial"))]
    report = json.loads((root / "two/report.json").read_text())
    assert report["budget"]["verdict"] in ("pass", "fail") and (root / "two/run.json").is_file()
    assert launched.stdout.count("teacher vs student") == 1  # rank 0 alone reports


def test_two_processes_agree_on_what_to_resume(runs: dict[str, Any]) -> None:
    root = runs["root"]
    shutil.copytree(root / "two", root / "again")
    changed = {**RECIPE, "stages": [dict(s) for s in RECIPE["stages"]]}
    changed["stages"][1]["lr"] = 0.003
    recipe = root / "changed.yaml"
    recipe.write_text(yaml.safe_dump(changed))
    teacher_record = (root / "again/01-teacher/stage.json").read_text()
    _launch(recipe, root / "again")
    assert (root / "again/01-teacher/stage.json").read_text() == teacher_record  # cached, not re-run
    distill = json.loads((root / "again/02-distill/stage.json").read_text())
    assert distill["config"]["lr"] == 0.003
    assert _files(root / "again") == _files(root / "two")


def test_shares_cover_each_batch_once_in_near_equal_parts() -> None:
    for batch in (1, 7, 64, 65):
        for steps in (1, 3):
            rows: list[int] = []
            sizes: list[int] = []
            for rank in range(3):
                for part in World(rank=rank, size=3).share(batch, steps):
                    rows += range(part.start, part.stop)
                    sizes.append(part.stop - part.start)
            assert sorted(rows) == list(range(batch))
            assert max(sizes) - min(sizes) <= 1
    assert World().share(64, 1) == [slice(0, 64)]


def _fit_digits(tmp_path: Path, **settings: Any) -> dict[str, torch.Tensor]:
    data = prepare_task_data(SklearnData(source="sklearn", name="digits", limit=400), seed=0)
    torch.manual_seed(0)
    model = build_model(MLPSpec(arch="mlp", hidden=[32]), data.signature.image_shape, 10)
    config = TrainingConfig(**{"epochs": 2, "batch_size": 50, "lr": 3e-3, "max_grad_norm": 1.0, **settings})
    fit(model, data.train, data.val, config, lambda m, inputs, labels, _idx: F.cross_entropy(m(*inputs.values()),
        labels), seed=0, checkpoint_dir=tmp_path / str(settings), show_progress=False)
    return model.state_dict()


def test_accumulation_changes_memory_not_the_result(tmp_path: Path) -> None:
    whole = _fit_digits(tmp_path)
    parts = _fit_digits(tmp_path, gradient_accumulation_steps=3)
    for key in whole:
        torch.testing.assert_close(parts[key], whole[key], rtol=0, atol=1e-5, msg=key)


def test_bf16_autocast_trains_close_to_fp32(tmp_path: Path) -> None:
    fp32 = _fit_digits(tmp_path)
    bf16 = _fit_digits(tmp_path, mixed_precision="bf16")
    differences = [(bf16[key] - fp32[key]).abs().max().item() for key in fp32]
    assert 0 < max(differences) < 0.05


@pytest.mark.parametrize(("stage", "expected"), [
    ({"gradient_accumulation_steps": 100}, "stages[1].gradient_accumulation_steps: 100 accumulation steps for a "
                                           "batch_size of 64 leave some steps without examples; expected at most 64"),
    ({"mixed_precision": "fp32"}, "stages[1].mixed_precision: Input should be 'no', 'bf16' or 'fp16'"),
])
def test_bad_training_options_are_named_on_one_line(write_recipe, stage: dict[str, Any], expected: str) -> None:
    recipe = {**RECIPE, "stages": [dict(s) for s in RECIPE["stages"]]}
    recipe["stages"][1].update(stage)
    result = CliRunner().invoke(app, ["validate", str(write_recipe(recipe))])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
    assert expected in result.output


def test_fp16_on_cpu_and_too_small_shared_batches_fail_before_anything_runs(tmp_path: Path) -> None:
    recipe = {**RECIPE, "stages": [dict(s) for s in RECIPE["stages"]]}
    recipe["stages"][1]["mixed_precision"] = "fp16"
    path = tmp_path / "fp16.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"stages\[1\]\.mixed_precision: 'fp16' needs CUDA GPUs .* expected 'bf16'"):
        edgekd.run(path, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    config = TrainingConfig(batch_size=8, gradient_accumulation_steps=4)
    with pytest.raises(ConfigError, match=r"stages\[0\]\.batch_size: 8 examples cannot be shared by 4 processes × 4 "
                                          r"accumulation steps; expected at least 16"):
        check_training(config, "stages[0]", World(rank=0, size=4))
