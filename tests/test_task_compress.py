"""Structural compression and the budget search for every task type and Hugging Face family.

Multi-label, regression and token-classification models of each family (BERT, RoBERTa, DistilBERT, GPT-2,
Llama, Qwen2, Mistral, Phi; tiny random configs) are pruned where their family allows it (Taylor importance
from the task's own loss), factorized, reloaded and exported with parity; ``drop_layers`` students of every
family lose their layers physically. Whole runs check that each prune/factorize/hybrid step and the search are
judged by the task's metric (micro-F1, MSE, token accuracy), that the model's recorded figures are the pruned
model's, and that what a family cannot do is refused at ``validate`` with the key and the family.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.device import Budget, InputShape, load_device
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.data.task_data import prepare_task_data
from edgekd.data.token_tags import IGNORE
from edgekd.distill.losses.registry import build_loss
from edgekd.distill.outputs import ModelInfo
from edgekd.distill.task_metrics import evaluation_metrics
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.call import call_logits
from edgekd.models.families import family as family_traits
from edgekd.models.specs import DropLayersSpec, HFSpec
from edgekd.models.task_model import TaskModel, build_task_model
from edgekd.prune.config import FactorizeConfig, PruneConfig, RecoveryConfig
from edgekd.prune.lowrank import factorize_task_model
from edgekd.prune.structure import low_rank_layers
from edgekd.prune.structured import prune_step
from edgekd.task_heads import PRIMARY_METRIC, hard_loss
from edgekd.workflow import open_run
from tests import hf_families
from tests.hf_families import PAD, VOCAB, padded_batch
from tests.test_tasks import _tsv
from tests.test_token_classification import tagged_data

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")

#: Phi: 4 heads of 8 (its partial rotary embedding needs an even rotary width).
PHI = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
           max_position_embeddings=160, pad_token_id=PAD, bos_token_id=2, eos_token_id=3)
FAMILIES: dict[str, dict[str, Any]] = {**hf_families.TEXT, "mistral": hf_families.DECODERS["mistral"], "phi": PHI}
#: Each task's class names (a regression has one output).
CLASSES = {"multi_label": ("food", "music", "sport"), "regression": ("label",),
           "token_classification": ("O", "B-PER", "I-PER", "B-LOC")}
TASKS = tuple(CLASSES)
#: The test data's name for each task (tests/test_tasks.py, tests/test_token_classification.py).
DATA = {"multi_label": "multi", "regression": "regression", "token_classification": "token"}
TRAINING = {"epochs": 1, "batch_size": 32, "lr": 0.003}


def _model(family: str, task: str, seed: int = 0) -> TaskModel:
    """A random ``family`` classifier for ``task`` built the way a recipe's ``arch: hf, config:`` builds it."""
    torch.manual_seed(seed)
    signature = InputSignature("text", vocab_size=VOCAB, pad_id=PAD, max_length=32,
                               per_token=task == "token_classification")
    return build_task_model(HFSpec(arch="hf", config={"model_type": family, **FAMILIES[family]}), signature,
                            CLASSES[task])


def _labels(task: str, batch: dict[str, torch.Tensor], seed: int = 0) -> torch.Tensor:
    """Random labels of ``task`` for ``batch`` (token tags only at real tokens)."""
    generator = torch.Generator().manual_seed(seed)
    rows, length = batch["input_ids"].shape
    classes = len(CLASSES[task])
    if task == "multi_label":
        return (torch.rand(rows, classes, generator=generator) < 0.4).float()
    if task == "regression":
        return torch.randn(rows, generator=generator)
    tags = torch.randint(0, classes, (rows, length), generator=generator)
    return tags.masked_fill(batch["attention_mask"] == 0, IGNORE)


def _reloads_and_exports(model: TaskModel, batch: dict[str, torch.Tensor], directory: Path) -> None:
    """Save and reload (the same logits), then export the reloaded model with parity on padded inputs."""
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(directory)
    again = TaskModel.load(directory)
    assert again.params == model.params
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module.eval(), batch), expected)
    result = export_onnx(again.module, batch, directory / "model.onnx", load_export_target("onnx-fp32"),
                         extra_dynamic_axes=again.signature.dynamic_axes())
    assert result.parity.passed, result.parity


# --------------------------------------------------------------------------- every family, every task


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_prunes_and_factorizes_for_every_task(family: str, task: str, tmp_path: Path) -> None:
    model, batch = _model(family, task), padded_batch()
    labels = _labels(task, batch)
    with torch.no_grad():
        shape = call_logits(model.module.eval(), batch).shape
    before = model.params
    targets = family_traits(family).prune_targets
    if targets:  # Taylor importance: gradients of the task's own loss (BCE, MSE, per-token CE)
        prune_step(model, PruneConfig(targets=sorted(targets), importance="taylor"), 0.5, batch,
                   gradients=lambda module: hard_loss(call_logits(module, batch), labels).backward())
        assert model.params < before
    pruned = model.params
    decisions = factorize_task_model(model, FactorizeConfig(param_ratio=0.4))
    assert any(d.rank is not None for d in decisions) and low_rank_layers(model.module)
    assert model.params < pruned
    with torch.no_grad():
        assert call_logits(model.module.eval(), batch).shape == shape
    _reloads_and_exports(model, batch, tmp_path / "compressed")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_drop_layers_removes_layers_of_every_family(family: str, tmp_path: Path) -> None:
    teacher, batch = _model(family, "regression"), padded_batch()
    student = build_task_model(DropLayersSpec(arch="drop_layers", keep=[1]), teacher.signature, CLASSES["regression"],
                               teacher=teacher)
    assert student.module.config.num_hidden_layers == 1 and student.params < teacher.params
    kept = {name: value for name, value in teacher.module.state_dict().items() if ".1." in name}
    copied = student.module.state_dict()
    assert kept and all(torch.equal(copied[name.replace(".1.", ".0.")], value) for name, value in kept.items())
    _reloads_and_exports(student, batch, tmp_path / "dropped")


# --------------------------------------------------------------------------- the recovery loss fits the task


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("task", TASKS)
def test_default_recovery_distils_with_the_tasks_targets(task: str, seed: int) -> None:
    """The default recovery loss is the task's: sigmoid-target BCE, MSE on the teacher's values, per-token KL."""
    spec = RecoveryConfig().losses[0]
    loss = build_loss(spec, ModelInfo(hidden=8, layers=1, heads=2), ModelInfo(hidden=8, layers=1, heads=2))
    batch = padded_batch(seed=seed)
    labels = _labels(task, batch, seed)
    generator = torch.Generator().manual_seed(seed + 10)
    shape = (*labels.shape, len(CLASSES[task])) if task == "token_classification" else (len(labels), len(
        CLASSES[task]))
    student, teacher = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
    t, alpha = spec.temperature, spec.alpha
    if task == "multi_label":
        soft = F.binary_cross_entropy_with_logits(student / t, torch.sigmoid(teacher / t)) * t * t
        hard = F.binary_cross_entropy_with_logits(student, labels)
    elif task == "regression":
        soft, hard = F.mse_loss(student, teacher), F.mse_loss(student[:, 0], labels)
    else:
        keep = labels != IGNORE
        soft = F.kl_div(F.log_softmax(student[keep] / t, -1), F.softmax(teacher[keep] / t, -1),
                        reduction="batchmean") * t * t
        hard = F.cross_entropy(student[keep], labels[keep])
    torch.testing.assert_close(loss.forward_logits(student, teacher, labels), alpha * soft + (1 - alpha) * hard)


# --------------------------------------------------------------------------- whole runs


def _recipe(tmp_path: Path, task: str, family: str, stages: list[dict[str, Any]],
            student: dict[str, Any] | None = None) -> dict[str, Any]:
    data = (tagged_data(tmp_path, train=120, test=40) if task == "token_classification"
            else _tsv(tmp_path, DATA[task], train=120, test=40))
    return {"name": f"{family}-{task}", "data": data, "tokenizer": {"vocab_size": 100, "max_length": 24},
            "teacher": {"model": {"arch": "hf", "config": {"model_type": family, **FAMILIES[family]}}},
            "student": {"model": student or {"arch": "drop_layers", "keep": [0]}},
            "stages": [{"stage": "teacher", **TRAINING},
                       {"stage": "distill", **TRAINING, "losses": [{"kind": "hinton"}]}, *stages]}


def _compress_run(tmp_path: Path, task: str, family: str) -> None:
    """Prune (Taylor, where the family prunes) and factorize with recovery, then export: every step is scored by
    the task's metric, the saved model's figures are its own, and the export has parity."""
    prunes = bool(family_traits(family).prune_targets)
    stages = ([{"stage": "prune", "ratio": 0.5, "importance": "taylor", "recovery": TRAINING}] if prunes else [])
    stages += [{"stage": "factorize", "param_ratio": 0.4, "recovery": TRAINING}, {"stage": "export"}]
    recipe = validate_model(_recipe(tmp_path, task, family, stages), Recipe, source="test")
    run = edgekd.run(recipe, out=tmp_path / "run")
    metric = PRIMARY_METRIC[task]
    records = {record.stage: record for record in run.stages}
    for name in ("prune", "factorize") if prunes else ("factorize",):
        summary = records[name].metrics["student"]
        assert summary["metric"] == metric and summary["before"]["metric"] == metric
        assert summary["params_ratio"] < 1 and all(step["metric"] == metric for step in summary["trajectory"])
        if name == "prune":
            assert summary["macs_ratio"] < 1
        assert (summary["accuracy"] is None) == (task == "regression")
    figures = records["factorize"].data["artifact"]["student"]["metrics"]
    assert figures["primary_metric"] == metric and figures["task"] == task
    model = TaskModel.load(open_run(tmp_path / "run").model_dir("student"))
    now = evaluation_metrics(model, prepare_task_data(recipe.data, recipe.seed, tokenizer=model.tokenizer))
    assert figures[metric] == pytest.approx(now[metric]) and figures[f"val_{metric}"] == pytest.approx(
        now[f"val_{metric}"])
    assert figures["accuracy"] == now["accuracy"]  # None for regression: it has no classes
    exported = records["export"].data["artifact"]["student"]["metrics"]
    assert exported["parity_max_abs_diff"] < 1e-3


@pytest.mark.parametrize(("task", "family"), [("multi_label", "bert"), ("regression", "llama"),
                                              ("token_classification", "qwen2")])
def test_compression_stages_are_judged_by_the_tasks_metric(task: str, family: str, tmp_path: Path) -> None:
    _compress_run(tmp_path, task, family)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", list(FAMILIES))
def test_compression_stages_for_every_family_and_task(task: str, family: str, tmp_path: Path) -> None:
    _compress_run(tmp_path, task, family)


@pytest.mark.parametrize("task", TASKS)
def test_hybrid_steps_are_judged_by_the_tasks_metric(task: str, tmp_path: Path) -> None:
    hybrid = {"stage": "hybrid", "target_macs_ratio": 0.7, "max_steps": 3, "measure_latency": False,
              "recovery": TRAINING}
    recipe = validate_model(_recipe(tmp_path, task, "bert", [hybrid]), Recipe, source="test")
    summary = next(r for r in edgekd.run(recipe, out=tmp_path / "run").stages if r.stage == "hybrid").metrics
    student = summary["student"]
    assert student["target_reached"] and student["macs_ratio"] <= 0.7 and student["params_ratio"] < 1
    assert [step["metric"] for step in student["trajectory"]] == [PRIMARY_METRIC[task]] * (student["steps_run"] + 1)
    assert student["score"] == student["figures"][PRIMARY_METRIC[task]]


# --------------------------------------------------------------------------- the search


def _search_run(tmp_path: Path, task: str, family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A search over BERT students of a ``family`` teacher: it picks the best validation figure of the task's
    metric (lowest MSE for regression) and says which metric in its summary and report."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    search = {"stage": "search", "space": {"hidden": [16, 32]}, "prune": [0.0, 0.5], "precision": ["fp32"],
              "top_k": 2, "distill": {"epochs": 2, "lr": 0.004}, "recovery": {"epochs": 1, "lr": 0.002},
              "table": {"warmup": 2, "runs": 10, "rounds": 1}, "confirm_runs": 10}
    student = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2, "ffn": 32}
    recipe = _recipe(tmp_path, task, family, [search, {"stage": "report"}], student=student)
    del recipe["stages"][1]  # the search distils each candidate itself
    device = load_device("host-cpu").model_copy(update={"budget": Budget(p90_ms=1000, size_mb=50, peak_memory_mb=8000),
                                                        "inputs": InputShape(batch=1, sequence_length=16)})
    run = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run", device=device)
    record = next(r for r in run.stages if r.stage == "search")
    found = record.metrics["search"]
    metric = PRIMARY_METRIC[task]
    assert found["metric"] == metric and found["lower_is_better"] == (metric == "mse")
    passing = [m for m in found["measured"] if m["verdict"] == "pass"]
    assert len(passing) >= 2 and all(m["metric"] == metric for m in passing)
    best = (min if metric == "mse" else max)(m["val_score"] for m in passing)
    assert found["chosen"]["val_score"] == best
    chosen = record.data["artifact"]["student"]["metrics"]
    assert found["chosen"]["val_score"] == chosen[f"val_{metric}"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert f"chosen by validation {metric}" in " ".join(markdown.split()) and f"val {metric}" in markdown


def test_search_chooses_by_the_lowest_validation_mse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _search_run(tmp_path, "regression", "llama", monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize(("task", "family"), [("multi_label", "roberta"), ("token_classification", "bert"),
                                              ("multi_label", "gpt2"), ("token_classification", "mistral")])
def test_search_chooses_by_the_tasks_metric(task: str, family: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    _search_run(tmp_path, task, family, monkeypatch)


# --------------------------------------------------------------------------- what a family cannot do


#: Families whose layout edgekd does not rewrite all of (sizes at the other families' scale).
UNCHANGED = {
    "albert": dict(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                   intermediate_size=37, max_position_embeddings=160),
    "deberta-v2": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=37, max_position_embeddings=160),
    "mpnet": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                  max_position_embeddings=162),
    "nystromformer": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                          intermediate_size=37, max_position_embeddings=160),
}
#: Families edgekd cannot prune (their layers' layout is not described): the student is one built from its config.
NOT_PRUNED = [family for family in UNCHANGED if not family_traits(family).prune_targets]


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("family", NOT_PRUNED)
@pytest.mark.parametrize(("stage", "reason"), [
    ({"stage": "prune"}, "has nothing structured pruning removes"),
    ({"stage": "hybrid", "target_params_ratio": 0.5}, "cannot be factorized")])
def test_pruning_a_family_that_cannot_be_pruned_is_refused_at_validate(family: str, task: str, stage: dict,
                                                                       reason: str, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, family, UNCHANGED[family])
    student = {"arch": "hf", "config": {"model_type": family, **UNCHANGED[family]}}
    (tmp_path / "recipe.yaml").write_text(json.dumps(_recipe(tmp_path, task, family, [stage], student)))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert f"stages[2].stage: a 'hf' ({family}) student {reason}" in line, line
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("model_type", "stages", "key", "message"), [
    ("albert", [], "student.model.arch",
     "'drop_layers' keeps some layers of the teacher's stack of transformer blocks; a teacher.model.arch 'hf' "
     "(albert) cannot be cut so: its layers share their weights"),
])
@pytest.mark.parametrize("task", TASKS)
def test_what_a_family_cannot_do_is_refused_with_its_key_and_family(model_type: str, stages: list, key: str,
                                                                    message: str, task: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(FAMILIES, model_type, UNCHANGED[model_type])
    (tmp_path / "recipe.yaml").write_text(json.dumps(_recipe(tmp_path, task, model_type, stages)))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "recipe.yaml")])
    line = " ".join(result.output.split())
    assert result.exit_code == 2 and f"{key}: {message}" in line and "Traceback" not in result.output, line
