"""Helpers shared by the reliability tests (fuzzing, kill-and-resume, safety): tiny inputs and CLI checks."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from typer.testing import CliRunner

from edgekd.cli import app
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.architectures import build_model
from edgekd.models.specs import CNNSpec
from tests.conftest import demo_recipe_dict
from tests.test_text_pipeline import _write_tsv

#: Stages of :func:`tiny_recipe`: the demo's, less the report (its plots cost seconds and measure nothing).
TINY_STAGES = ("teacher", "distill", "export", "profile", "bundle")


@dataclass(frozen=True)
class CliOutcome:
    """What an ``edgekd`` command printed (stdout and stderr together) and its exit code."""

    exit_code: int
    output: str


def cli(*args: str | Path) -> CliOutcome:
    """Run ``edgekd ARGS`` in this process (typer's CliRunner) and return its outcome."""
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return CliOutcome(result.exit_code, result.output)


def assert_user_error(outcome: CliOutcome, *fragments: str, logged: bool = False) -> None:
    """A user error: exit code 2, exactly one line starting ``error:``, no traceback, each fragment in it.

    ``logged``: the command logs its progress (``edgekd run``), so log records (a level name, then
    indented continuation lines) may stand around that one line. A command run with ``--json`` also prints the
    error as its JSON document on stdout: the same message.
    """
    output = outcome.output
    lines = [line for line in output.splitlines()
             if line.strip() and not (logged and line.startswith((" ", "INFO", "WARNING")))]
    documents = [json.loads(line) for line in lines if line.startswith('{"error": ')]
    lines = [line for line in lines if not line.startswith('{"error": ')]
    assert outcome.exit_code == 2, f"exit code {outcome.exit_code}, expected 2:\n{output}"
    assert "Traceback" not in output, output
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{output}"
    assert all(document == {"error": lines[0].removeprefix("error: "), "internal": False, "exit_code": 2}
               for document in documents), output
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in: {lines[0]}"


def tiny_recipe(*, teacher_epochs: int = 3, distill_epochs: int = 10, stages: tuple[str, ...] = TINY_STAGES
                ) -> dict[str, Any]:
    """The demo recipe shrunk to seconds: one-block CNNs, few epochs, ONNX export, a short profile."""
    recipe = copy.deepcopy(demo_recipe_dict())
    recipe["threads"] = 1  # bit-identical results between runs (threads: auto follows the machine's load)
    recipe["teacher"]["model"] = {"arch": "cnn", "channels": [8], "hidden": 16}
    recipe["student"]["model"] = {"arch": "cnn", "channels": [4], "hidden": 8}
    settings = {"teacher": {"epochs": teacher_epochs, "lr": 0.01}, "distill": {"epochs": distill_epochs, "lr": 0.01},
                "export": {"target": "onnx-fp32"}, "profile": {"warmup": 2, "runs": 10}}
    recipe["stages"] = [{**stage, **settings.get(stage["stage"], {})} for stage in recipe["stages"]
                        if stage["stage"] in stages]
    return recipe


def write_yaml(path: Path, data: Any) -> Path:
    """Write ``data`` as YAML to ``path``; returns the path."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def text_recipe(directory: Path) -> dict[str, Any]:
    """A text recipe training in seconds (1-layer BERT teacher, TextCNN student) on synthetic sentences.

    The labelled sentences are written to ``directory`` as ``train.tsv`` (120 rows) and ``dev.tsv`` (40).
    """
    _write_tsv(directory / "train.tsv", 120, seed=1)
    _write_tsv(directory / "dev.tsv", 40, seed=2)
    training = {"epochs": 8, "batch_size": 16, "lr": 0.005}
    return {
        "name": "text-tiny",
        "threads": 1,
        "data": {"source": "tsv", "train": str(directory / "train.tsv"), "test": str(directory / "dev.tsv"),
                 "val_examples": 20},
        "tokenizer": {"vocab_size": 120, "max_length": 24},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}},
        "student": {"model": {"arch": "textcnn", "embedding_dim": 8, "filters": 8, "kernel_sizes": [2, 3]}},
        "stages": [{"stage": "teacher", **training}, {"stage": "distill", **training}, {"stage": "export"}],
    }


def tiny_onnx(path: Path) -> Path:
    """Export an untrained one-block CNN over 1×8×8 images (dynamic batch) to ``path``, as the export stage does."""
    torch.manual_seed(0)
    model = build_model(CNNSpec(arch="cnn", channels=[4], hidden=8), (1, 8, 8), 10)
    export_onnx(model, torch.zeros(4, 1, 8, 8), path, load_export_target("onnx-fp32"))
    return path


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train with one torch thread outside a pipeline run, as the recipes here do (``threads: 1``).

    Tiny models train no slower on one thread, and on a loaded machine far faster than with
    spinning OpenMP threads; results are compared only between runs with the same thread count.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
