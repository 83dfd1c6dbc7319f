"""Multi-label and regression tasks: labels read from the data, losses, KD targets, metrics, report and bundle."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score
from torch import nn
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.config import HFDiskData, NpzData, TextFileData
from edgekd.data.datasets import load_dataset
from edgekd.data.examples import ImageExamples
from edgekd.data.label_kind import infer_task
from edgekd.data.text import load_text_dataset
from edgekd.distill.losses.hinton import HintonDistillationLoss
from edgekd.distill.target_scale import unit_scale_targets
from edgekd.errors import DataError
from edgekd.task_heads import hard_loss, selection_score, soft_loss, task_metrics, task_of

GOOD = ["great", "lovely", "superb", "charming"]
BAD = ["dull", "awful", "boring", "tedious"]
TOPICS = {"music": ["song", "band", "tune"], "food": ["pizza", "soup", "bread"], "sport": ["goal", "match", "race"]}
FILLER = ["the", "film", "is", "a", "story", "with", "its", "cast", "and", "plot", "quite", "really"]


def _rows(task: str, count: int, seed: int, scale: float = 0.5, shift: float = 0.0) -> list[str]:
    """``count`` TSV rows whose label is a function of the text: a score from sentiment words (regression:
    ``shift + scale · (good − bad)``) or the topics whose keywords occur (multi-label)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = rng.sample(FILLER, rng.randint(2, 5))
        if task == "regression":
            good, bad = rng.randint(0, 3), rng.randint(0, 3)
            words += rng.choices(GOOD, k=good) + rng.choices(BAD, k=bad)
            label = f"{shift + scale * (good - bad):.2f}"
        else:
            chosen = [topic for topic in TOPICS if rng.random() < 0.4]
            words += [rng.choice(TOPICS[topic]) for topic in chosen]
            label = ",".join(chosen)
        rng.shuffle(words)
        rows.append(" ".join(words) + f"\t{label}")
    return rows


def _tsv(directory: Path, task: str, train: int = 300, test: int = 80, **units: float) -> dict:
    for name, count, seed in (("train", train, 1), ("dev", test, 2)):
        rows = _rows(task, count, seed, **units)
        (directory / f"{name}.tsv").write_text("\n".join(["sentence\tlabel", *rows]) + "\n")
    return {"source": "tsv", "train": str(directory / "train.tsv"), "test": str(directory / "dev.tsv"),
            "val_examples": 60}


# --------------------------------------------------------------------------- what the labels read as


@pytest.mark.parametrize(("labels", "task"), [
    (["0.25", "3", "1.5"], "regression"),
    (["-1e-3", "2", "7"], "regression"),
    (["0", "1", "1"], "single_label"),
    (["pos", "neg"], "single_label"),
    (["pos,movie", "neg", ""], "multi_label"),
    (["a, b", "c"], "multi_label"),
])
def test_task_inferred_from_labels(labels: list[str], task: str) -> None:
    assert infer_task("train.tsv", labels, range(2, 2 + len(labels)), "line") == task


def test_text_labels_encoded_by_task(tmp_path: Path) -> None:
    regression = load_text_dataset(TextFileData.model_validate(_tsv(tmp_path, "regression")), seed=0)
    assert regression.task == "regression" and regression.class_names == ("label",)
    assert regression.train.labels.dtype == np.float32 and regression.train.labels.ndim == 1
    assert set(np.round(regression.test.labels * 2).astype(int)) <= set(range(-3, 4))

    multi = load_text_dataset(TextFileData.model_validate(_tsv(tmp_path, "multi")), seed=0)
    assert multi.task == "multi_label" and multi.class_names == ("food", "music", "sport")
    assert multi.train.labels.shape == (len(multi.train), 3) and set(np.unique(multi.train.labels)) == {0.0, 1.0}
    first = (tmp_path / "dev.tsv").read_text().splitlines()[1].split("\t")[1]
    assert {multi.class_names[i] for i in np.flatnonzero(multi.test.labels[0])} == set(filter(None, first.split(",")))

    forced = load_text_dataset(TextFileData.model_validate({**_tsv(tmp_path, "regression"), "task": "single_label"}),
                               seed=0)
    assert forced.task == "single_label" and forced.train.labels.dtype == np.int64
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 5}\n" for i in range(30)))
    ratings = TextFileData(source="tsv", train=tmp_path / "train.tsv", test=tmp_path / "train.tsv", val_examples=5,
                           task="regression")
    rated = load_text_dataset(ratings, seed=0)  # whole numbers read as classes unless told otherwise
    assert rated.class_names == ("label",) and rated.test.labels.tolist() == [i % 5 for i in range(30)]


def test_hf_disk_sequence_and_float_columns(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    names = ["food", "music", "sport"]
    rows = [(f"text {i}", [i % 3] if i % 2 else [0, 2], i / 7) for i in range(20)]
    features = datasets.Features({"text": datasets.Value("string"),
                                  "tags": datasets.Sequence(datasets.ClassLabel(names=names)),
                                  "score": datasets.Value("float32")})
    table = {"text": [r[0] for r in rows], "tags": [r[1] for r in rows], "score": [r[2] for r in rows]}
    split = datasets.Dataset.from_dict(table, features=features)
    datasets.DatasetDict({"train": split, "validation": split}).save_to_disk(str(tmp_path / "saved"))
    base = {"source": "hf_disk", "path": str(tmp_path / "saved"), "text_column": "text", "val_examples": 4}
    multi = load_dataset(HFDiskData.model_validate({**base, "label_column": "tags"}), seed=0)
    assert multi.task == "multi_label" and multi.class_names == tuple(names)
    assert multi.test.labels[:2].tolist() == [[1, 0, 1], [0, 1, 0]]
    scores = load_dataset(HFDiskData.model_validate({**base, "label_column": "score"}), seed=0)
    assert scores.task == "regression" and np.allclose(scores.test.labels, [r[2] for r in rows], atol=1e-6)
    recipe = _recipe_dict({**base, "label_column": "tags"}, [], augment={"copies": 1})
    recipe["stages"][1]["augment"] = recipe.pop("augment")
    (tmp_path / "recipe.yaml").write_text(json.dumps(recipe))
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "recipe.yaml")])
    assert result.exit_code == 2 and "stages[1].augment: augmented sentences are unlabelled" in result.output
    assert "the labels read as multi_label" in " ".join(result.output.split())


# --------------------------------------------------------------------------- losses, KD targets, metrics


@pytest.mark.parametrize("seed", range(4))
def test_metrics_agree_with_scipy_and_sklearn(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(50, generator=generator)
    predicted = values + 0.5 * torch.randn(50, generator=generator)
    predicted[:5] = predicted[5]  # ties, which Spearman ranks by their average
    figures = task_metrics(predicted[:, None], values)
    assert figures["mse"] == pytest.approx(float(((predicted - values) ** 2).mean()), rel=1e-6)
    assert figures["pearson"] == pytest.approx(pearsonr(predicted, values)[0], rel=1e-6)
    assert figures["spearman"] == pytest.approx(spearmanr(predicted, values)[0], rel=1e-6)
    assert selection_score(predicted[:, None], values) == pytest.approx(-figures["mse"])

    truth = (torch.rand(60, 4, generator=generator) < 0.3).float()
    logits = torch.randn(60, 4, generator=generator) + 2 * (truth - 0.5)
    chosen = (logits > 0).numpy()
    figures = task_metrics(logits, truth)
    assert figures["micro_f1"] == pytest.approx(f1_score(truth.numpy(), chosen, average="micro"))
    assert figures["macro_f1"] == pytest.approx(f1_score(truth.numpy(), chosen, average="macro", zero_division=1.0))
    assert figures["subset_accuracy"] == pytest.approx(float((chosen == truth.numpy().astype(bool)).all(1).mean()))


def test_losses_and_kd_targets_follow_the_task() -> None:
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 3), torch.randn(8, 3)
    multi = (torch.rand(8, 3) < 0.5).float()
    values = torch.randn(8)
    classes = torch.tensor([0, 1, 2, -1, 0, 1, 2, 0])
    assert [task_of(labels) for labels in (multi, values, classes)] == ["multi_label", "regression", "single_label"]
    assert hard_loss(student, multi) == pytest.approx(float(F.binary_cross_entropy_with_logits(student, multi)))
    assert hard_loss(student[:, :1], values) == pytest.approx(float(F.mse_loss(student[:, 0], values)))
    labelled = classes >= 0  # the unlabelled row (an augmented sentence) does not count
    assert hard_loss(student, classes) == pytest.approx(float(F.cross_entropy(student[labelled], classes[labelled])))
    # Multi-label targets are the teacher's sigmoid probabilities at T: the student's best answer is the teacher's
    # own logits (zero gradient there), not its arg-max; regression targets are the teacher's values.
    for task, width in (("multi_label", 3), ("regression", 1)):
        matched = teacher[:, :width].clone().requires_grad_(True)
        soft_loss(matched, teacher[:, :width], 2.0, task).backward()
        assert matched.grad.abs().max() < 1e-6
        off = (teacher[:, :width] + 1).requires_grad_(True)
        soft_loss(off, teacher[:, :width], 2.0, task).backward()
        assert off.grad.abs().max() > 1e-3
    hinton = HintonDistillationLoss(temperature=2.0, alpha=0.7)
    expected = 0.7 * 4 * F.binary_cross_entropy_with_logits(student / 2, torch.sigmoid(teacher / 2)) \
        + 0.3 * F.binary_cross_entropy_with_logits(student, multi)
    assert hinton.forward_logits(student, teacher, multi) == pytest.approx(float(expected))
    expected = 0.7 * F.mse_loss(student[:, :1], teacher[:, :1]) + 0.3 * F.mse_loss(student[:, 0], values)
    assert hinton.forward_logits(student[:, :1], teacher[:, :1], values) == pytest.approx(float(expected))


def test_npz_labels_read_by_task(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    images = rng.random((40, 1, 4, 4), dtype=np.float32)
    path = tmp_path / "set.npz"
    np.savez(path, inputs=images, labels=images.mean(axis=(1, 2, 3)))
    splits = load_dataset(NpzData(source="npz", path=path, val_fraction=0.2, test_fraction=0.2), seed=0)
    assert splits.y_train.dtype == torch.float32 and splits.class_names == ("value",)
    rows = (rng.random((40, 3)) < 0.5).astype(np.int64)
    np.savez(path, inputs=images, labels=rows, class_names=np.asarray(["a", "b", "c"]))
    splits = load_dataset(NpzData(source="npz", path=path, val_fraction=0.2, test_fraction=0.2), seed=1)
    assert splits.y_test.shape == (8, 3) and splits.class_names == ("a", "b", "c")
    np.savez(path, inputs=images, labels=rows * 2)
    with pytest.raises(DataError, match=r"set.npz: 'labels' must be 0/1 rows, one column per class"):
        load_dataset(NpzData(source="npz", path=path, task="multi_label"), seed=0)
    np.savez(path, inputs=images, labels=np.full(40, np.nan))
    with pytest.raises(DataError, match=r"set.npz: 'labels' must be finite numbers \(data.task is regression\)"):
        load_dataset(NpzData(source="npz", path=path, task="regression"), seed=0)


# --------------------------------------------------------------------------- validate: what does not apply


def _recipe_dict(data: dict, stages: list[dict], **extra: object) -> dict:
    training = {"epochs": 8, "batch_size": 16, "lr": 0.004, "warmup_ratio": 0.1}
    return {
        "name": "task-test", "data": data, "tokenizer": {"vocab_size": 200, "max_length": 32},
        "teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64}},
        "student": {"model": {"arch": "textcnn", "embedding_dim": 32, "filters": 32, "kernel_sizes": [1, 2]}},
        "stages": [{"stage": "teacher", **training}, {"stage": "distill", **training,
                                                       "losses": [{"kind": "hinton", "alpha": 0.5}]}, *stages],
        **extra,
    }


@pytest.mark.parametrize(("task", "change", "key", "message"), [
    ("multi", {"teacher": {"model": {"arch": "bert", "layers": 1, "hidden": 32, "heads": 2, "ffn": 64},
                           "ensemble": {"members": 2}}}, "teacher.ensemble", "an ensemble averages class"),
    ("regression", {"augment": {"copies": 1}}, "stages[1].augment", "augmented sentences are unlabelled"),
    ("regression", {"task": "banana"}, "data.task", "single_label"),
], ids=["ensemble", "augment", "unknown-task"])
def test_validate_refuses_what_does_not_apply(tmp_path: Path, task: str, change: dict, key: str,
                                             message: str) -> None:
    recipe = _recipe_dict(_tsv(tmp_path, task), [])
    if "stages" in change:
        recipe["stages"] += change["stages"]
    elif "augment" in change:
        recipe["stages"][1]["augment"] = change["augment"]
    elif "task" in change:
        recipe["data"]["task"] = change["task"]
    else:
        recipe.update(change)
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    line = " ".join(result.output.split())
    assert key in line and message in line and "Traceback" not in result.output


# --------------------------------------------------------------------------- end to end


def _run(tmp_path: Path, task: str, rows: int) -> tuple[dict, dict]:
    stages = [{"stage": "export"}, {"stage": "profile", "warmup": 2, "runs": 10}, {"stage": "bundle"},
              {"stage": "report"}]
    recipe = _recipe_dict(_tsv(tmp_path, task, train=rows), stages)
    result = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    return result.report(), manifest


def test_regression_end_to_end(tmp_path: Path) -> None:
    report, manifest = _run(tmp_path, "regression", rows=300)
    test = load_text_dataset(TextFileData.model_validate(_tsv(tmp_path, "regression", train=300)), seed=0).test.labels
    baseline = float(np.var(test))  # the MSE of always answering the mean
    for role in ("teacher", "student"):
        figures = report[role]
        assert figures["task"] == "regression" and figures["primary_metric"] == "mse"
        assert figures["mse"] < 0.6 * baseline and figures["pearson"] > 0.6 and figures["accuracy"] is None
    assert manifest["postprocessing"]["kind"] == "identity" and manifest["labels"] == ["label"]
    assert manifest["metrics"]["mse"] == pytest.approx(report["student"]["mse"])
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "MSE (test, lower is better)" in markdown and "Pearson r (test)" in markdown


def test_multi_label_end_to_end(tmp_path: Path) -> None:
    report, manifest = _run(tmp_path, "multi", rows=600)  # the from-scratch BERT teacher needs more than 300
    test = load_text_dataset(TextFileData.model_validate(_tsv(tmp_path, "multi", train=600)), seed=0).test.labels
    # The best constant answer: every label on (or off: F1 0); its micro-F1 is the trivial baseline.
    baseline = f1_score(test, np.ones_like(test), average="micro")
    for role in ("teacher", "student"):
        assert report[role]["task"] == "multi_label"
        assert report[role]["micro_f1"] > baseline + 0.15, (role, report[role]["micro_f1"], baseline)
    post = manifest["postprocessing"]
    assert (post["kind"], post["threshold"], post["labels"]) == ("sigmoid", 0.5, ["food", "music", "sport"])
    assert manifest["metrics"]["micro_f1"] == pytest.approx(report["student"]["micro_f1"])


@pytest.mark.parametrize(("scale", "shift"), [(0.2, 0.0), (20_000.0, 100_000.0)], ids=["unit", "prices"])
def test_image_regression_from_npz(scale: float, shift: float, tmp_path: Path) -> None:
    """Images of a bright square at a random column; the target is that column, as a fraction of the width, or in
    units like prices (100,000 + 20,000 per column), which trained to a constant: an output layer starting near
    zero cannot reach 100,000 by steps of the learning rate (see edgekd.distill.target_scale)."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    columns = rng.integers(0, 6, size=400)
    images = rng.normal(0, 0.1, size=(400, 1, 8, 8)).astype(np.float32)
    for image, column in zip(images, columns, strict=True):
        image[0, 3:5, column:column + 3] += 1.0
    targets = (columns * scale + shift).astype(np.float32)
    np.savez(tmp_path / "squares.npz", inputs=images, labels=targets)
    training = {"epochs": 15, "batch_size": 32, "lr": 0.005}
    recipe = {"name": "squares", "data": {"source": "npz", "path": str(tmp_path / "squares.npz"),
                                          "val_fraction": 0.15, "test_fraction": 0.25, "task": "regression"},
              "teacher": {"model": {"arch": "cnn", "channels": [16, 32], "hidden": 32}},
              "student": {"model": {"arch": "cnn", "channels": [8, 16], "hidden": 16}},
              "stages": [{"stage": "teacher", **training}, {"stage": "distill", **training,
                                                             "losses": [{"kind": "hinton", "alpha": 0.5}]},
                         {"stage": "export"}, {"stage": "report"}]}
    report = edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run").report()
    baseline = float(np.var(targets))  # answering the mean
    for role in ("teacher", "student"):
        assert report[role]["task"] == "regression"
        figures = report[role]
        assert figures["mse"] < 0.3 * baseline and figures["spearman"] > 0.8, (role, figures["mse"], baseline)
    student = edgekd.open_run(tmp_path / "run").load_model("student").eval()
    assert not any("parametrizations" in name for name, _ in student.named_parameters())  # a plain model again
    session = ort.InferenceSession(str(tmp_path / "run" / "03-export" / "student.onnx"))
    with torch.no_grad():
        expected = student(torch.from_numpy(images[:16])).numpy()
    exported = session.run(None, {session.get_inputs()[0].name: images[:16]})[0]
    np.testing.assert_allclose(exported, expected, rtol=1e-4, atol=1e-4 * max(scale, 1.0))
    assert abs(float(np.mean(exported)) - float(np.mean(targets))) < 2 * float(np.std(targets))


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_decoder_regression_teacher_learns_prices(family: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A decoder classifier (GPT-2, Llama, Qwen2, ...) scores every position with a `score` Linear without a bias and
    reads the last token's: its regression targets around 100,000 are learnt at unit scale too (they were skipped
    in silence, and the teacher answered about 6 for every sentence), and the model saved, reloaded with
    transformers and exported to ONNX predicts in the data's units."""
    import onnxruntime as ort
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tests import hf_families

    data = {**_tsv(tmp_path, "regression", scale=20_000.0, shift=100_000.0), "task": "regression"}  # not classes
    hf_families.save(family, tmp_path / family, num_labels=1, vocab_size=200, pad_token_id=0)
    recipe = {**_recipe_dict(data, []), "teacher": {"model": {"arch": "hf", "pretrained": str(tmp_path / family)}},
              "stages": [{"stage": "teacher", "epochs": 6, "batch_size": 16, "lr": 0.003}, {"stage": "export"}]}
    caplog.set_level("INFO", logger="edgekd.distill.target_scale")
    edgekd.run(validate_model(recipe, Recipe, source="test"), out=tmp_path / "run")

    rows = [line.split("\t") for line in Path(data["test"]).read_text().splitlines()[1:]]
    sentences, targets = [row[0] for row in rows], np.array([float(row[1]) for row in rows])
    baseline = float(np.var(targets))  # answering the mean
    figures = json.loads((tmp_path / "run" / "01-teacher" / "stage.json").read_text())["metrics"]["teacher"]
    assert figures["mse"] < 0.3 * baseline and figures["pearson"] > 0.8, (figures["mse"], baseline, figures["pearson"])
    assert "the output layer (score, without a bias: its weight carries the mean) is trained at unit scale" in \
        caplog.text
    saved = tmp_path / "run" / "01-teacher" / "teacher"
    model = AutoModelForSequenceClassification.from_pretrained(saved).eval()
    assert not any("parametrizations" in name for name, _ in model.named_parameters())  # a plain model again
    session = ort.InferenceSession(str(tmp_path / "run" / "02-export" / "teacher.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(saved)
    reloaded, exported = [], []
    for sentence in sentences:  # one at a time: no padding
        ids = np.array([tokenizer(sentence)["input_ids"]], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(ids.shape[1])[None]}
        with torch.no_grad():
            reloaded.append(float(model(input_ids=torch.from_numpy(ids)).logits[0, 0]))
        exported.append(float(session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})[0][0, 0]))
    np.testing.assert_allclose(exported, reloaded, rtol=1e-4)
    assert float(np.mean((np.array(reloaded) - targets) ** 2)) < 0.3 * baseline
    assert pearsonr(reloaded, targets)[0] > 0.8


def _prices(count: int = 40) -> ImageExamples:
    """Images whose targets are prices: 60,000 to 140,000."""
    images = torch.randn(count, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return ImageExamples(images=images, labels=torch.linspace(60_000.0, 140_000.0, count) + 0.5)


def test_a_model_already_at_the_targets_scale_keeps_its_outputs_when_training_starts() -> None:
    """Prune and factorize recovery train a student that already answers in the targets' units: its bias was shifted
    by their mean again (a pruned CNN's recovery ended at MSE 1.8e10 for targets of variance 1.2e9)."""
    prices = _prices()
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with torch.no_grad():
        model[1].weight.mul_(1e-3)
        model[1].bias.fill_(float(prices.labels.mean()))
    before = model(prices.images).detach()
    with unit_scale_targets(model, prices):
        inside = model(prices.images).detach()
    torch.testing.assert_close(inside, before, rtol=1e-5, atol=1.0)


@pytest.mark.parametrize(("model", "why"), [
    (nn.Sequential(nn.Flatten(), nn.Linear(64, 1), nn.Softplus()),
     "its output is neither the output of its last nn.Linear of one unit (1) nor an average or a choice of its "
     "outputs: more layers follow it"),
    (nn.Sequential(nn.Conv2d(1, 1, 8), nn.Flatten()), "it has no nn.Linear of one unit"),
], ids=["softplus-after", "conv-head"])
def test_a_head_that_cannot_train_at_unit_scale_is_warned_of(model: nn.Module, why: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    prices = _prices()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    with caplog.at_level("WARNING", logger="edgekd.distill.target_scale"), unit_scale_targets(model, prices):
        assert model.state_dict().keys() == state.keys()  # trains as it is
    assert f"but Sequential trains at their scale ({why}): it may learn no more than a constant" in caplog.text
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
