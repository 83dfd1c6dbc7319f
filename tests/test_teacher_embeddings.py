"""``embeddings: teacher``: a small text student starts from its teacher's word embeddings, projected to its width."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.errors import ConfigError
from edgekd.models.architectures import build_text_student
from edgekd.models.embeddings import embedding_width, inherit_embeddings, input_embeddings, project
from edgekd.models.hf import build_bert
from edgekd.models.specs import BertSpec, BiLSTMSpec, HFSpec, TextCNNSpec
from edgekd.models.task_model import TaskModel
from tests.test_text_pipeline import text_data  # noqa: F401  (fixture)

VOCAB, PAD = 50, 0


def _teacher_table(width: int, rank: int | None = None, seed: int = 0) -> nn.Embedding:
    """An embedding table of ``width`` columns whose rows lie near a ``rank``-dimensional subspace."""
    generator = torch.Generator().manual_seed(seed)
    rank = rank or width
    basis = torch.randn(rank, width, generator=generator)
    rows = torch.randn(VOCAB, rank, generator=generator) @ basis * 0.05
    return nn.Embedding.from_pretrained(rows + 1e-4 * torch.randn(VOCAB, width, generator=generator), freeze=False)


class _Teacher(nn.Module):
    def __init__(self, table: nn.Embedding) -> None:
        super().__init__()
        self.table = table

    def get_input_embeddings(self) -> nn.Embedding:
        return self.table


def _student(arch: str, width: int) -> nn.Module:
    spec = (BiLSTMSpec(arch="bilstm", embedding_dim=width, hidden=8, fc_hidden=8) if arch == "bilstm"
            else TextCNNSpec(arch="textcnn", embedding_dim=width, filters=4))
    return build_text_student(spec, vocab_size=VOCAB, num_classes=2, pad_id=PAD)


@pytest.mark.parametrize("arch", ["bilstm", "textcnn"])
@pytest.mark.parametrize(("teacher_width", "student_width"), [(24, 24), (24, 6), (40, 1)])
def test_the_student_table_is_the_teachers_on_its_principal_directions(arch: str, teacher_width: int,
                                                                        student_width: int) -> None:
    table = _teacher_table(teacher_width, rank=max(1, student_width))
    student = _student(arch, student_width)
    initial_std = float(student.embedding.weight.detach()[1:].std())  # PyTorch's N(0, 1), as sampled
    inherit_embeddings(student, _Teacher(table), where="student.model")
    inherited = student.embedding.weight.detach()
    assert torch.all(inherited[PAD] == 0) and inherited[1:].std() == pytest.approx(initial_std, rel=1e-3)
    # Up to one scale, the student's dot products are the teacher's: the table was (nearly) of the student's rank.
    source = table.weight.detach()
    gram, expected = inherited[1:] @ inherited[1:].T, source[1:] @ source[1:].T
    scale = (gram * expected).sum() / (expected * expected).sum()
    assert torch.linalg.norm(gram - scale * expected) < 0.02 * torch.linalg.norm(scale * expected)


def test_a_fresh_bert_student_takes_the_teachers_table_at_its_own_initial_scale() -> None:
    table = _teacher_table(48, rank=16)
    student = build_bert(BertSpec(arch="bert", layers=1, hidden=16, heads=2, ffn=32, embeddings="teacher"),
                         vocab_size=VOCAB, num_classes=2, pad_id=PAD, max_positions=32)
    initial_std = input_embeddings(student).weight.detach()[1:].std()
    inherit_embeddings(student, _Teacher(table), where="student.model")
    inherited = input_embeddings(student).weight.detach()
    # BERT's own initialisation (std 0.02) is kept as the scale, so the position embeddings still count.
    assert inherited[1:].std() == pytest.approx(float(initial_std), rel=1e-3) and 0.01 < initial_std < 0.03
    assert torch.all(inherited[PAD] == 0)
    cosine = torch.nn.functional.cosine_similarity(inherited[1:].flatten(), project(table.weight.detach(), 16)[1:]
                                                   .flatten(), dim=0)
    assert cosine > 0.999
    wide = build_bert(BertSpec(arch="bert", layers=1, hidden=64, heads=2, ffn=32),
                      vocab_size=VOCAB, num_classes=2, pad_id=PAD, max_positions=32)
    with pytest.raises(ConfigError, match=re.escape("student.model.hidden: 64 is wider than the teacher's")):
        inherit_embeddings(wide, _Teacher(table), where="student.model")


def test_a_pretrained_bert_student_cannot_also_take_the_teachers_table() -> None:
    with pytest.raises(ValueError, match="a pretrained model has its own"):
        BertSpec(arch="bert", pretrained="prajjwal1/bert-tiny", embeddings="teacher")


def test_the_projection_keeps_more_of_the_table_than_a_random_one() -> None:
    source = _teacher_table(32).weight.detach()
    kept = project(source, 8)
    random_basis, _ = torch.linalg.qr(torch.randn(32, 8, generator=torch.Generator().manual_seed(1)))
    kept_gram, random_gram, full = kept @ kept.T, (source @ random_basis) @ (source @ random_basis).T, source @ source.T
    assert torch.linalg.norm(full - kept_gram) < torch.linalg.norm(full - random_gram)
    assert torch.equal(project(source, 32), source)


@pytest.mark.parametrize(("teacher", "message"), [
    (_Teacher(_teacher_table(8)), "student.model.embedding_dim: 16 is wider than the teacher's word embeddings (8)"),
    (_Teacher(nn.Embedding(VOCAB + 1, 32)), "the teacher's table has 51 rows, the student's vocabulary 50"),
    (nn.Linear(4, 2), "needs a teacher with a word-embedding table; Linear has none"),
])
def test_a_teacher_the_student_cannot_take_embeddings_from_is_refused(teacher: nn.Module, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        inherit_embeddings(_student("textcnn", 16), teacher, where="student.model")


@pytest.mark.parametrize(("spec", "width"), [
    (BertSpec(arch="bert", layers=1, hidden=48, heads=2), 48),
    (BiLSTMSpec(arch="bilstm", embedding_dim=20), 20),
    (HFSpec(arch="hf", config={"model_type": "albert", "embedding_size": 16, "hidden_size": 64,
                               "num_attention_heads": 2, "intermediate_size": 64}), 16),
    (HFSpec(arch="hf", config={"model_type": "gpt2", "n_embd": 24, "n_head": 2, "n_layer": 1}), 24),
    (HFSpec(arch="hf", config={"model_type": "bert"}), None),  # transformers' default: known only once built
])
def test_the_teacher_width_is_read_from_its_spec(spec: object, width: int | None) -> None:
    assert embedding_width(spec) == width


#: The text students that can take the teacher's table, as a recipe gives them (``{width}`` filled in).
STUDENTS = {
    "textcnn": lambda width, embeddings: {"arch": "textcnn", "embedding_dim": width, "filters": 8,
                                          "embeddings": embeddings},
    "bert": lambda width, embeddings: {"arch": "bert", "layers": 1, "hidden": width, "heads": 2, "ffn": 32,
                                       "embeddings": embeddings},
}


def _recipe(data: dict, embeddings: str, width: int = 16, lr: float = 1e-4, student: str = "textcnn") -> dict:
    return {
        "name": "inherit", "seed": 0, "threads": 1, "data": data,
        "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}},
        "student": {"model": STUDENTS[student](width, embeddings)},
        "stages": [{"stage": "teacher", "epochs": 2, "batch_size": 16, "lr": 0.003},
                   {"stage": "distill", "epochs": 1, "batch_size": 16, "lr": lr, "losses": [{"kind": "hinton"}]}],
    }


def _agreement(run_dir: Path) -> float:
    """Cosine similarity of the distilled student's table with the teacher's projected to the student's width."""
    teacher = TaskModel.load(run_dir / "01-teacher" / "teacher").module.get_input_embeddings().weight.detach()
    student = input_embeddings(TaskModel.load(run_dir / "02-distill" / "student").module).weight.detach()
    expected = project(teacher, student.shape[1])
    return float(torch.nn.functional.cosine_similarity(student[1:].flatten(), expected[1:].flatten(), dim=0))


@pytest.mark.parametrize("student", sorted(STUDENTS))
def test_a_distilled_student_starts_from_the_teachers_table_and_the_choice_reruns_distillation(
        text_data: dict, tmp_path: Path, student: str) -> None:  # noqa: F811
    out = tmp_path / "run"
    edgekd.run(validate_model(_recipe(text_data, "teacher", student=student), Recipe, source="test"), out=out)
    assert _agreement(out) > 0.95  # one epoch at a small learning rate moves it little
    result = edgekd.run(validate_model(_recipe(text_data, "random", student=student), Recipe, source="test"),
                        out=out)
    assert [stage.skipped for stage in result.stages] == [True, False]  # the teacher is reused, the student not
    assert abs(_agreement(out)) < 0.2


@pytest.mark.parametrize(("student", "key"), [("textcnn", "embedding_dim"), ("bert", "hidden")])
def test_validate_refuses_a_student_wider_than_the_teachers_embeddings(text_data: dict, tmp_path: Path,  # noqa: F811
                                                                       student: str, key: str) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(_recipe(text_data, "teacher", width=64, student=student)))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    line = result.output.strip()
    assert len(line.splitlines()) == 1 and f"student.model.{key}" in line and "(32)" in line, line
