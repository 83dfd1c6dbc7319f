"""A compression stage counts a model's MACs as ``edgekd bench`` and the profile stage do: on its ONNX graph.

DeBERTa-v2 with relative attention (c2p and p2c) computes projections of its relative-position table that do not
depend on the input, which the exported graph holds folded; a BiLSTM's recurrence is one ``LSTM`` node of the graph.
PyTorch's FLOP counter, which the stages used, counted the first (the DeBERTa-v2 below at 1.55× its graph's MACs) and
missed the second (the BiLSTM's count was its classifier head alone), so one report showed each model at two MAC
counts and a stage's ``macs_ratio`` was not the deployed graph's. Here each model is trained, compressed (pruned in
two steps, the middle one counted without a latency export; factorized), exported and profiled through the pipeline;
the stage's before and after MACs are the graph counts of the exported files at the device's input shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import edgekd
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.task_model import TaskModel
from edgekd.pipeline import load_run_records
from edgekd.profile.macs import count_macs as graph_macs
from edgekd.prune.measure import count_macs, device_inputs
from tests import hf_families
from tests.test_disentangled_shared_heads_prune import _model

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

DEVICE = {"name": "short", "description": "this CPU, 32-token inputs", "threads": 1,
          "inputs": {"batch": 1, "sequence_length": 32, "image_size": None},
          "budget": {"p90_ms": 100, "size_mb": 50, "peak_memory_mb": 500}, "precision": "fp32", "isa": "detect"}
#: case → the compression stage run on the trained teacher
STAGES: dict[str, dict[str, Any]] = {
    "deberta-v2": {"stage": "prune", "role": "teacher", "ratio": 0.5, "steps": 2, "targets": ["heads", "ffn"]},
    "bilstm": {"stage": "factorize", "role": "teacher", "param_ratio": 0.5, "embeddings": True},
}


def _teacher(case: str, files: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The teacher's model spec: a DeBERTa-v2 checkpoint with relative attention, or a small BiLSTM."""
    if case == "bilstm":
        return {"arch": "bilstm", "embedding_dim": 16, "hidden": 12, "fc_hidden": 10}
    tokenizer, checkpoint = files["tokenizer"], tmp_path / case
    _model(case, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id).module.save_pretrained(checkpoint)
    tokenizer.save_pretrained(checkpoint)
    return {"arch": "hf", "pretrained": str(checkpoint)}


def _recipe(case: str, tmp_path: Path) -> Recipe:
    """teacher → ``STAGES[case]`` → export → profile, on synthetic sentiment data at 32-token inputs."""
    files = hf_families.sentiment_files(tmp_path, train=160, dev=40)
    root, device = files["root"], tmp_path / "short.yaml"
    device.write_text(yaml.safe_dump(DEVICE))
    model = _teacher(case, files, tmp_path)
    return validate_model({
        "name": f"macs-{case}", "seed": 0, "threads": 1, "device": str(device),
        "data": {"source": "tsv", "train": str(root / "train.tsv"), "test": str(root / "dev.tsv"), "val_examples": 40},
        "tokenizer": {"pretrained": str(root / "tokenizer"), "max_length": 32},
        "teacher": {"model": model}, "student": {"model": model},
        "stages": [{"stage": "teacher", "epochs": 1, "batch_size": 16, "lr": 0.005}, STAGES[case],
                   {"stage": "export", "target": "onnx-fp32"}, {"stage": "profile", "warmup": 1, "runs": 10}],
    }, Recipe, source="test")


def _exported_macs(model_dir: Path, device: DeviceProfile, tmp_path: Path) -> int:
    """MACs of the model in ``model_dir`` as ``edgekd bench`` counts its ONNX export at ``device``'s inputs."""
    model = TaskModel.load(model_dir)
    path = tmp_path / "uncompressed.onnx"
    export_onnx(model.module, device_inputs(model, device), path, load_export_target("onnx-fp32"),
                extra_dynamic_axes=model.signature.dynamic_axes())
    return graph_macs(path, device.inputs).macs


@pytest.mark.parametrize("case", list(STAGES))
def test_the_stage_records_the_macs_of_the_onnx_graphs_edgekd_bench_counts(case: str, tmp_path: Path) -> None:
    run, device = tmp_path / "run", DeviceProfile.model_validate(DEVICE)
    edgekd.run(_recipe(case, tmp_path), out=run, show_progress=False)
    _, compressed, _, profiled = (record["metrics"].get("teacher") for record in load_run_records(run))
    before = _exported_macs(run / "01-teacher" / "teacher", device, tmp_path)
    after = graph_macs(run / "03-export" / "teacher.onnx", device.inputs).macs
    assert compressed["before"]["macs"] == before != after
    assert compressed["macs"] == after == profiled["macs"]  # the stage's row and the profile's: one count
    assert compressed["macs_ratio"] == after / before
    macs = [step["macs"] for step in compressed["trajectory"]]  # prune's middle step: counted by an export of its own
    assert macs[0] == before and macs[-1] == after and len(set(macs)) == len(macs) == STAGES[case].get("steps", 1) + 1
    model = TaskModel.load(run / f"02-{STAGES[case]['stage']}" / "teacher")
    assert count_macs(model, device_inputs(model, device)) == after  # a count without a latency export (landing's)
