"""A small real run's report (json, Markdown, self-contained HTML checked in Chromium) and mobile bundle.

One reduced demo run (1 epoch each, 600 digits) serves every test here: its report, its rebuild
by `edgekd report`, and its bundle, whose .ort model must run in onnxruntime like the ONNX model.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from sklearn.datasets import load_digits
from typer.testing import CliRunner

import edgekd
from edgekd.artifacts import Artifact, ModelArtifact, StageContext
from edgekd.cli import app
from edgekd.export.bundle_readme import render_readme
from edgekd.export.bundle_stage import run_bundle
from edgekd.export.config import BundleStage
from edgekd.export.manifest import image_input
from edgekd.model_metrics import ModelFigures
from edgekd.pipeline import load_run
from edgekd.profile.cpu import detect_cpu
from edgekd.report.build import build_report
from edgekd.report.markdown import render_markdown
from edgekd.report.record import check_report
from edgekd.report.sections import run_document
from edgekd.search.record import SearchRecord
from edgekd.stages import DEFAULT_REGISTRY
from tests.conftest import demo_recipe_dict, shrink
from tests.test_quantize_record import _classifier_metrics

runner = CliRunner()
PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ["accuracy_vs_latency.png", "size_per_stage.png", "latency_distribution.png"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    recipe = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=1, runs=20)
    recipe["data"]["limit"] = 600
    root = tmp_path_factory.mktemp("report")
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = runner.invoke(app, ["run", str(root / "recipe.yaml"), "--out", str(root / "run"), "-q"])
    assert result.exit_code == 0, result.output
    return root / "run"


def _records(run_dir: Path) -> tuple:
    recipe, device, records = load_run(run_dir)
    records = [r for r in records if r["stage"] != "report"]
    return recipe, device, records, Artifact.from_json(records[-1]["artifact"])


def test_report_files_and_content(run_dir: Path) -> None:
    report = json.loads((run_dir / "report.json").read_text())
    assert report["files"] == ["report.json", "report.md", "report.html", *PLOTS]
    for name in PLOTS:
        assert (run_dir / name).read_bytes()[:8] == PNG
    assert [row["stage"] for row in report["stages"]] == ["teacher", "distill", "export", "profile", "bundle"]
    assert report["stages"][2]["changed"] == ["teacher", "student"] and report["stages"][4]["changed"] == []
    assert report["teacher"]["macs"] > report["student"]["macs"] > 0
    assert report["final_model"] == "student" and report["bundle"]["format"] == "ort"
    assert sum(op["share"] for op in report["operators"]) == pytest.approx(1.0)
    assert report["notes"] and "measured, not estimated" in report["notes"][0]

    markdown = (run_dir / "report.md").read_text()
    for text in ("| accuracy (test) |", "Verdict: **", "## Stages", "| MACs per inference |", "## Top operators",
                 "## Mobile bundle", "## Recipe and device profile", *[f"]({name})" for name in PLOTS]):
        assert text in markdown, text

    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert len(images) == 3 and all(base64.b64decode(data)[:8] == PNG for data in images)
    assert not re.search(r'(src|href)="(?!data:|#)', html)  # self-contained: no file or network reference
    assert html.count("<table>") == 5 and "<script" not in html


def test_report_command_rebuilds_from_the_run_directory(run_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "report.json").read_text())
    stage_records = {p: p.read_bytes() for p in copy.glob("*/stage.json")}
    for name in before["files"]:
        (copy / name).unlink()
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 0, result.output
    after = json.loads((copy / "report.json").read_text())
    assert {k: v for k, v in after.items() if k != "stages"} == {k: v for k, v in before.items() if k != "stages"}
    assert [r["stage"] for r in after["stages"]] == [r["stage"] for r in before["stages"]]
    assert {p: p.read_bytes() for p in copy.glob("*/stage.json")} == stage_records  # nothing re-ran
    assert all((copy / name).is_file() for name in after["files"])


@pytest.mark.parametrize("damage", ["record-removed", "record-truncated", "file-changed", "kind-unknown",
                                    "metrics-a-list", "metrics-null"])
def test_report_command_refuses_a_damaged_stage_and_keeps_the_report(damage: str, run_dir: Path,
                                                                     tmp_path: Path) -> None:
    """A stage.json removed or truncated left that stage and every later one out of the rebuilt report (the profile
    read as 'not measured'), which replaced the good one with exit 0."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = {name: (copy / name).read_bytes() for name in ("report.json", "report.md", "report.html")}
    record = next(copy.glob("0[0-9]-distill/stage.json"))
    if damage == "record-removed":
        record.unlink()
    elif damage == "record-truncated":
        record.write_bytes(record.read_bytes()[:10])
    elif damage == "kind-unknown":
        record.write_text(json.dumps({**json.loads(record.read_text()), "stage": "distil"}))
    elif damage.startswith("metrics"):
        record.write_text(json.dumps({**json.loads(record.read_text()), "metrics": [] if "list" in damage else None}))
    else:
        model = next(copy.glob("0[0-9]-export/student.onnx"))
        record = model.parent / "stage.json"
        model.write_bytes(model.read_bytes()[:100])
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"cannot rebuild the report: {record}" in said
    assert damage != "kind-unknown" or "'stage' names no stage kind of edgekd ('distil')" in said
    assert said.split(f"{record}: ")[1].startswith({  # what is wrong with it, naming the field
        "record-removed": "missing;", "record-truncated": "not readable as JSON (UTF-8);",
        "metrics-a-list": "'metrics' missing or of the wrong type;",
        "metrics-null": "'metrics' missing or of the wrong type;",
    }.get(damage, ""))
    assert {name: (copy / name).read_bytes() for name in before} == before


#: One damage per stage kind of the run to its ``stage.json`` metrics: (stage, field path the refusal names, damage).
METRICS_DAMAGE = [
    ("teacher", "metrics.teacher.accuracy", lambda m: m["teacher"].update(accuracy="abc")),
    ("distill", "metrics.student.losses", lambda m: m["student"].update(losses=5)),
    ("distill", "metrics.student.accuracy", lambda m: m["student"].update(accuracy="abc")),
    ("export", "metrics.student.size_mb", lambda m: m["student"].update(size_mb="big")),
    ("profile", "metrics.student.p50_ms", lambda m: m["student"].update(p50_ms="fast")),
    ("bundle", "metrics.format", lambda m: m.update(format=7)),
]


def _damaged_copy(run_dir: Path, tmp_path: Path, stage: str, damage) -> tuple[Path, Path]:
    """A copy of the run with ``damage`` done to the metrics of its ``stage`` stage; (copy, that stage.json)."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    path = next(copy.glob(f"0[0-9]-{stage}/stage.json"))
    record = json.loads(path.read_text())
    damage(record["metrics"])
    path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return copy, path


@pytest.mark.parametrize("stage,field,damage", METRICS_DAMAGE, ids=lambda v: v if isinstance(v, str) else "")
def test_report_command_refuses_a_stage_whose_metrics_are_not_its_typed_record(
        stage: str, field: str, damage, run_dir: Path, tmp_path: Path) -> None:
    """A distill or teacher record's figure of the wrong type was accepted (exit 0): every stage kind's metrics are
    read back as its typed record, and the refusal names the stage.json and the field."""
    copy, path = _damaged_copy(run_dir, tmp_path, stage, damage)
    before = (copy / "report.json").read_bytes()
    result = runner.invoke(app, ["report", str(copy)])
    assert result.exit_code == 2, result.output
    assert f"cannot rebuild the report: {path}: {field}: " in " ".join(result.output.split())
    assert (copy / "report.json").read_bytes() == before


@pytest.mark.parametrize("stage,field,damage", METRICS_DAMAGE, ids=lambda v: v if isinstance(v, str) else "")
def test_a_stage_whose_metrics_are_not_its_typed_record_is_not_reused(
        stage: str, field: str, damage, run_dir: Path, tmp_path: Path) -> None:
    copy, path = _damaged_copy(run_dir, tmp_path, stage, damage)
    plan = runner.invoke(app, ["run", str(run_dir.parent / "recipe.yaml"), "--out", str(copy), "--dry-run"])
    assert plan.exit_code == 0, plan.output
    said = " ".join(plan.output.split())
    why = "this stage always runs" if stage == "bundle" else f"its finished result cannot be reused ({field}: "
    assert f"{path.parent.name} re-runs: {why}" in said, plan.output
    assert stage == "teacher" or "01-teacher cached" in said


def test_a_distill_stage_whose_metrics_are_damaged_runs_again(run_dir: Path, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """A distill record with ``losses: 5`` was reused ("skipped, finished earlier"): it runs again, the teacher
    before it is reused, and the record is whole again."""
    copy, path = _damaged_copy(run_dir, tmp_path, "distill", lambda m: m["student"].update(losses=5))
    with caplog.at_level(logging.WARNING, logger="edgekd"):
        result = edgekd.run(run_dir.parent / "recipe.yaml", out=copy, show_progress=False)
    assert f"{path}: not reused (metrics.student.losses: Input should be a valid list)" in caplog.text
    assert [r.stage for r in result.stages if r.skipped] == ["teacher"]
    assert json.loads(path.read_text())["metrics"]["student"]["losses"] == ["hinton"]


def test_report_command_rejects_a_directory_that_is_not_a_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not an edgekd run directory" in result.output


def test_quantization_decisions_are_rendered(run_dir: Path) -> None:
    recipe, device, records, artifact = _records(run_dir)
    metrics = _classifier_metrics()  # a quantize stage's record, as the stage makes it
    del metrics["teacher"]
    metrics["student"] |= {"decision": "refused", "reason": "INT8 lost 3% accuracy"}
    quantize = {**records[-1], "stage": "quantize", "metrics": metrics}
    report = build_report(recipe, device, artifact, [*records, quantize], cpu=detect_cpu().to_json())
    assert report["quantization"] == [{"stage": "quantize", "role": "student", "decision": "refused",
                                       "reason": "INT8 lost 3% accuracy"}]
    markdown = render_markdown(run_document(check_report(report)))
    assert "- Quantization of the student: refused — INT8 lost 3% accuracy" in markdown


def check_bundle(bundle: Path) -> dict:
    """Every file of a digits bundle matches its manifest entry, and model.ort answers like model.onnx."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file())
    assert sorted(manifest["files"]) == [f for f in files if f != "manifest.json"]
    for name, entry in manifest["files"].items():
        assert hashlib.sha256((bundle / name).read_bytes()).hexdigest() == entry["sha256"], name
    pixels = load_digits().images[:16]  # real digits, 0..16, preprocessed as the manifest says
    pre = manifest["preprocessing"]
    x = ((pixels * pre["scale"] - pre["mean"][0]) / pre["std"][0]).astype(np.float32)[:, None]
    ort_out, onnx_out = (ort.InferenceSession(str(bundle / name), providers=["CPUExecutionProvider"])
                         .run(None, {"input": x})[0] for name in ("model.ort", "model.onnx"))
    np.testing.assert_allclose(ort_out, onnx_out, atol=1e-4)
    return manifest


def test_bundle_matches_its_manifest_and_runs_like_the_onnx_model(run_dir: Path) -> None:
    bundle = run_dir / "bundle"
    manifest = check_bundle(bundle)
    assert manifest["model"]["file"] == "model.ort" and manifest["latency"]["estimate"] is False
    assert manifest["labels"] == [str(i) for i in range(10)] and manifest["preprocessing"]["scale"] == 1 / 16
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8]}]

    readme = (bundle / "README.md").read_text()
    (snippet,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    done = subprocess.run([sys.executable, "-c", snippet], cwd=bundle, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    label, logits = done.stdout.strip().splitlines()
    example = manifest["preprocessing"]["example"]
    label = label.split(" ")[0]  # the label, then its probability
    assert label == example["label"] and label in manifest["labels"]
    np.testing.assert_allclose([float(v) for v in logits.split()], example["logits"], atol=1e-4)


def test_bundle_converts_an_onnx_file_replaced_after_export(run_dir: Path, tmp_path: Path) -> None:
    """A stage after export (quantize) that swaps the ONNX file gets the new file converted, not the stale .ort."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    recipe, device, records, artifact = _records(copy)
    student = artifact.get("student")
    (copy / "07-quantize").mkdir()
    shutil.copyfile(copy / student.onnx, copy / "07-quantize" / "student.onnx")
    artifact = artifact.with_model(student.updated(onnx="07-quantize/student.onnx"))
    ctx = StageContext(recipe=DEFAULT_REGISTRY["bundle"].view(recipe, None), device=device, run_dir=copy,
                       work_dir=tmp_path / "work", stage_dir_name="08-bundle", where="stages[7]",
                       log=logging.getLogger("test"), previous=tuple(records))
    ctx.work_dir.mkdir()
    output = run_bundle(BundleStage(stage="bundle"), artifact, ctx)
    assert (copy / "bundle" / "model.ort").read_bytes() == (ctx.work_dir / "student.ort").read_bytes()
    assert (copy / "bundle" / "model.onnx").read_bytes() == (copy / "07-quantize" / "student.onnx").read_bytes()
    assert output.metrics["format"] == "ort" and (copy / "bundle.zip").is_file()


def test_every_model_record_round_trips_through_the_typed_artifact(run_dir: Path) -> None:
    """What stages record of a model loads as typed fields and writes back unchanged (``stage.json`` stays the same)."""
    records = [json.loads(path.read_text()) for path in sorted(run_dir.glob("*/stage.json"))]
    models = [model for record in records for side in ("inputs", "artifact") for model in record[side].values()]
    assert len(models) >= 8
    for model in models:
        assert ModelArtifact.from_json(model).to_json() == model
    student = Artifact.from_json(records[-1]["artifact"]).get("student")
    assert student.deploy_files is not None and student.deploy_files["ort"].endswith("student.ort")
    assert student.metrics.opset == 17 and 0 < student.metrics.accuracy <= 1 and "deploy_files" not in student.metrics


def test_a_run_directory_of_the_earlier_layout_resumes(run_dir: Path, tmp_path: Path) -> None:
    """Stage records written while deploy files were a model metric (``metrics.deploy_files``) still load: the
    resumed run reuses every stage before the bundle, ships the same .ort and reports the same figures."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    moved = 0
    for path in copy.glob("*/stage.json"):
        record = json.loads(path.read_text())
        for model in [*record["inputs"].values(), *record["artifact"].values()]:
            if "deploy_files" in model:
                model["metrics"]["deploy_files"] = model.pop("deploy_files")
                moved += 1
        path.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    assert moved >= 2
    shutil.rmtree(copy / "bundle")
    result = edgekd.run(run_dir.parent / "recipe.yaml", out=copy)
    assert [r.stage for r in result.stages if not r.skipped] == ["bundle", "report"]
    assert (copy / "bundle" / "model.ort").read_bytes() == (run_dir / "bundle" / "model.ort").read_bytes()
    before, after = (json.loads((d / "report.json").read_text()) for d in (run_dir, copy))
    for role in before["roles"]:
        assert after[role] == before[role]
    assert [row["models"] for row in after["stages"]] == [row["models"] for row in before["stages"]]
    # the same files ship (the README gives the shipped .ort's latency, timed again by each bundle stage)
    assert {k: v for k, v in after["bundle"]["files"].items() if k != "README.md"} == \
        {k: v for k, v in before["bundle"]["files"].items() if k != "README.md"}


def test_report_html_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium); browser check skipped")
    probe = ('<script>window.addEventListener("load", () => {'
             'document.body.dataset.images = [...document.images].map(i => i.naturalWidth).join(",");'
             'document.body.dataset.tables = document.querySelectorAll("table").length;});</script></body>')
    page = tmp_path / "report.html"
    page.write_text((run_dir / "report.html").read_text().replace("</body>", probe))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom"]
    done = subprocess.run([browser, *flags, page.as_uri()], capture_output=True, text=True, timeout=120)
    body = re.search(r"<body([^>]*)>", done.stdout)
    assert body is not None, done.stderr[-2000:]
    widths = re.search(r'data-images="([^"]*)"', body.group(1))
    tables = re.search(r'data-tables="(\d+)"', body.group(1))
    assert widths and tables, body.group(1)
    assert [int(w) > 0 for w in widths.group(1).split(",")] == [True] * 3  # every plot decoded and laid out
    assert int(tables.group(1)) == 5


def test_manifest_example_is_reproduced_by_its_formula_and_the_readme_snippets(run_dir: Path) -> None:
    """The manifest's 8-bit example, pushed through its own formulas, gives its input and its logits; the
    README's Kotlin conversion uses the manifest's constants; 0..255 bytes fed unscaled answer differently."""
    bundle = run_dir / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    pre = manifest["preprocessing"]
    example = pre["example"]
    assert pre["pixel_range"] == [0, 16] and pre["byte_scale"] == pytest.approx(16 / 255)
    image = np.array(example["pixels_8bit"])
    assert image.shape == (pre["height"], pre["width"]) and image.min() >= 0 and 128 < image.max() <= 255
    x = image_input(pre, image).astype(np.float32)
    np.testing.assert_allclose(x[0], example["input"], atol=1e-7)
    np.testing.assert_allclose(x, (image / 255.0)[None, None], atol=1e-6)  # the formula, spelt out for digits
    session = ort.InferenceSession(str(bundle / "model.ort"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0][0]
    np.testing.assert_allclose(logits, example["logits"], atol=1e-4)
    assert example["label"] == manifest["labels"][int(np.argmax(logits))] and example["dataset_label"] == "0"
    raw = session.run(None, {"input": image.astype(np.float32)[None, None]})[0][0]
    assert not np.allclose(raw, example["logits"], atol=1e-2)  # why the manifest insists on byte_scale
    readme = (bundle / "README.md").read_text()
    np.testing.assert_allclose(_kotlin_input(readme, image.ravel()), x.ravel(), atol=1e-6)
    assert str(example["label"]) in readme and f"{example['logits'][0]:.4f}" in readme


def _kotlin_input(readme: str, planes: np.ndarray) -> np.ndarray:
    """The model input the README's Kotlin conversion makes of 8-bit ``planes`` (its constants, its indexing)."""
    (kotlin,) = re.findall(r"```kotlin\n(.*?)```", readme, re.S)

    def floats(name: str) -> np.ndarray:
        (values,) = re.findall(rf"val {name} = floatArrayOf\((.*?)\)", kotlin)
        return np.array([float(v.strip().rstrip("f")) for v in values.split(",")])

    mean, std = floats("mean"), floats("std")
    plane = int(re.search(r"val plane = (\d+)", kotlin).group(1))
    convert = next(line for line in kotlin.splitlines() if "FloatArray(bytes.size)" in line)
    byte_scale, scale = (float(v) for v in re.findall(r"([-\d.e]+)f\b", convert))
    channel = np.arange(len(planes)) // plane
    return (planes * byte_scale * scale - mean[channel]) / std[channel]


def test_readme_kotlin_normalises_each_channel_with_its_own_mean_and_std(run_dir: Path) -> None:
    """An RGB model's README: the Kotlin conversion gives exactly the manifest formula's input, channel by channel
    (it used to apply the first channel's mean and std to all three)."""
    manifest = json.loads((run_dir / "bundle" / "manifest.json").read_text())
    rng = np.random.default_rng(0)
    height, width = 5, 7
    for channels in (1, 2, 3):
        pre = {**manifest["preprocessing"], "channels": channels, "height": height, "width": width,
               "byte_scale": float(rng.uniform(0.5, 1)), "scale": float(rng.uniform(0.001, 0.01)),
               "mean": rng.uniform(-1, 1, channels).tolist(), "std": rng.uniform(0.1, 2, channels).tolist()}
        pre.pop("example")
        bitmap = rng.integers(0, 256, (channels, height, width))
        readme = render_readme({**manifest, "preprocessing": pre,
                                "inputs": [{**manifest["inputs"][0], "shape": ["batch", channels, height, width]}]})
        expected = np.stack([image_input(pre, bitmap[c])[0, c] for c in range(channels)])
        np.testing.assert_allclose(_kotlin_input(readme, bitmap.ravel()), expected.ravel(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_image_input_follows_the_manifest_formula_for_any_constants(seed: int) -> None:
    rng = np.random.default_rng(seed)
    channels = int(rng.integers(1, 4))
    pre = {"channels": channels, "byte_scale": float(rng.uniform(0.01, 1)), "scale": float(rng.uniform(0.01, 1)),
           "mean": rng.uniform(-1, 1, channels).tolist(), "std": rng.uniform(0.1, 2, channels).tolist()}
    image = rng.integers(0, 256, (5, 7))
    x = image_input(pre, image)
    assert x.shape == (1, channels, 5, 7)
    for c in range(channels):
        expected = (image * pre["byte_scale"] * pre["scale"] - pre["mean"][c]) / pre["std"][c]
        np.testing.assert_allclose(x[0, c], expected)


def _drawn(monkeypatch: pytest.MonkeyPatch, draw, *args):
    """Run a plot function and return its matplotlib figure instead of only the file."""
    from edgekd.report import plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda fig, path: figures.append(fig) or path)
    assert draw(*args, Path("unused.png")) is not None
    (fig,) = figures
    fig.canvas.draw()
    return fig


def _search_record(seed: int, metric: str = "accuracy") -> SearchRecord:
    """A search record whose test figures rank the candidates differently from their validation figures (of
    ``metric``; ``mse``: lower is better)."""
    rng = np.random.default_rng(seed)
    lower = metric == "mse"
    measured = []
    for i in range(6):
        val = float(rng.uniform(0.5, 0.95))
        measured.append({"structure": f"s{i}", "label": f"cnn #{i}", "precision": "fp32", "onnx": f"c{i}.onnx",
                         "params": 1000 * (i + 1), "p50_ms": 0.01, "p90_ms": float(rng.uniform(0.01, 0.1)),
                         "table_p90_ms": None, "size_mb": 0.1, "peak_memory_mb": 5.0, "estimate": False,
                         "metric": metric, "val_score": val, "score": float(1.4 - val), "accuracy": None,
                         "val_accuracy": None, "verdict": "pass" if i < 4 else "fail"})
    chosen = (min if lower else max)(measured[:4], key=lambda m: m["val_score"])
    confirmed = {key: chosen[key] for key in ("label", "p50_ms", "p90_ms", "size_mb", "peak_memory_mb", "verdict")}
    rows = [{"key": m["structure"], "label": m["label"], "structure": m["structure"], "precision": "fp32",
             "p50_ms": m["p90_ms"], "p90_ms": m["p90_ms"], "size_mb": 0.1, "peak_memory_mb": 5.0,
             "host_p90_ms": m["p90_ms"], "estimate": False, "macs": 10_000, "params": m["params"],
             "measured_at": "2026-12-05T00:00:00", "over": [], "status": "trained"} for m in measured]
    return SearchRecord(
        device="host-cpu", budget={"p90_ms": 0.08, "size_mb": 10, "peak_memory_mb": 100}, latency_margin=0.1,
        estimate=False, reference=None, family={"arch": "textcnn"}, space={}, prune=[0.0], factorize=[None],
        precision=["fp32"], rank_by="macs", top_k=6,
        table={"path": "table.json", "entries": 6, "profiled": 6, "reused": 0, "seconds": 1.0, "feasible": 6,
               "candidates": rows},
        trained=[], confirmations=[], wall_seconds=1.0, metric=metric, lower_is_better=lower, measured=measured,
        chosen={**chosen, "confirmed": {**confirmed, "runs": 20}})


@pytest.mark.parametrize("metric", ["accuracy", "mse"])
@pytest.mark.parametrize("seed", range(3))
def test_pareto_star_is_the_validation_figure_the_choice_used_and_the_legend_covers_nothing(
        seed: int, metric: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.report.plots import plot_search_pareto

    search = _search_record(seed, metric)
    fig = _drawn(monkeypatch, plot_search_pareto, search, ModelFigures(p90_ms=0.2, **{f"val_{metric}": 0.97}))
    ax = fig.axes[0]
    stars = [c for c in ax.collections if c.get_label().startswith("chosen")]
    assert len(stars) == 1
    np.testing.assert_allclose(stars[0].get_offsets(), [[search.chosen.p90_ms, search.chosen.val_score]])
    better = min if metric == "mse" else max
    assert search.chosen.score != better(m.score for m in search.measured)  # the test figure would mislead
    assert f"validation {metric}" in ax.get_title() and any(f"test {metric}" in c.get_label() for c in ax.collections)
    steps = [line for line in ax.lines if "Pareto" in line.get_label()]
    values = list(steps[0].get_ydata())
    assert len(steps) == 1 and values == sorted(values, reverse=metric == "mse")  # each step: a better figure
    assert ax.get_legend() is None and len(fig.legends) == 1
    legend = fig.legends[0]
    box = legend.get_window_extent()
    assert all(not box.overlaps(axis.get_window_extent()) for axis in fig.axes)
    assert min(text.get_fontsize() for text in legend.get_texts()) >= 9
    assert fig.get_window_extent().contains(box.x0, box.y0) and fig.get_window_extent().contains(box.x1, box.y1)


def test_accuracy_plot_legend_is_outside_the_axes(run_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekd.report.plots import plot_accuracy_latency

    fig = _drawn(monkeypatch, plot_accuracy_latency, check_report(json.loads((run_dir / "report.json").read_text())))
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1
    assert not fig.legends[0].get_window_extent().overlaps(fig.axes[0].get_window_extent())


def test_a_lone_figure_in_the_html_takes_the_row(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text()
    assert "figure:last-child:nth-child(odd) { flex: 1 1 100%; }" in html
    assert html.count("<figure>") == 3  # three plots: the third spans the row instead of leaving half of it empty
