"""The ONNX verbs: ``edgekd quantize`` and ``edgekd bundle`` on a user's ONNX file, ``.ort`` in ``bench``/``profile``.

Two real models, each trained for a moment with torch and exported as the export stage does: a
CNN on scikit-learn's digits (one float input) and a bag-of-embeddings text classifier (two int64
inputs, dynamic batch and sequence axes). Each verb runs end to end through the CLI; every family
of bad input exits 2 with one line naming the file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from edgekd import api
from edgekd.export.bundle_file import read_preprocessing
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.architectures import build_model
from edgekd.models.specs import CNNSpec
from tests.reliability import assert_user_error, cli, one_torch_thread

#: Timing settings small enough for the default suite (the decision logic is the stage's, tested elsewhere).
FAST = ("--runs", "20", "--rounds", "2")


@dataclass(frozen=True)
class OnnxCase:
    """A trained model's ONNX file, example inputs by graph input name, and their labels."""

    name: str
    path: Path
    inputs: dict[str, np.ndarray]
    labels: np.ndarray
    classes: int

    def save_npz(self, path: Path, *, labelled: bool, start: int = 0, stop: int | None = None,
                 **changes: Any) -> Path:
        """Write ``inputs[start:stop]`` (and ``y``) as a .npz; ``changes`` replace (or with None, drop) arrays."""
        arrays: dict[str, Any] = {k: v[start:stop] for k, v in self.inputs.items()}
        if labelled:
            arrays["y"] = self.labels[start:stop]
        for key, value in changes.items():
            if value is None:
                arrays.pop(key)
            else:
                arrays[key] = value
        np.savez(path, **arrays)
        return path


def _train(model: nn.Module, inputs: tuple[torch.Tensor, ...], labels: torch.Tensor, steps: int) -> nn.Module:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    with one_torch_thread():
        for _ in range(steps):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(*inputs), labels).backward()
            optimizer.step()
    return model.eval()


class BagOfEmbeddings(nn.Module):
    """Token ids → masked mean of embeddings → logits (a text classifier with two int64 inputs)."""

    def __init__(self, vocab: int = 40, dim: int = 16, classes: int = 3) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        return self.head((self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1))


class PositionedBag(BagOfEmbeddings):
    """The bag of embeddings plus a 64-row position table: rows longer than 64 tokens index past it."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = nn.Embedding(64, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()
        embedded = self.embed(input_ids) + self.positions(torch.arange(input_ids.shape[1]))
        return self.head((embedded * mask).sum(1) / mask.sum(1).clamp(min=1))


def _digits_case(directory: Path) -> OnnxCase:
    digits = load_digits()
    x = (digits.images / 16).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    torch.manual_seed(0)
    model = _train(build_model(CNNSpec(arch="cnn", channels=[4], hidden=16), (1, 8, 8), 10),
                   (torch.from_numpy(x[:1200]),), torch.from_numpy(y[:1200]), steps=200)
    path = directory / "digits.onnx"
    export_onnx(model, torch.from_numpy(x[:8]), path, load_export_target("onnx-fp32"))
    return OnnxCase("digits", path, {"input": x[1200:]}, y[1200:], 10)


def _text_case(directory: Path) -> OnnxCase:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 40, (600, 12)).astype(np.int64)
    mask = (rng.random((600, 12)) > 0.2).astype(np.int64)
    groups = np.stack([((ids >= lo) & (ids < hi) & (mask == 1)).sum(1) for lo, hi in ((1, 14), (14, 27), (27, 40))])
    labels = groups.argmax(0).astype(np.int64)  # the most frequent group of tokens: learnable from mean embeddings
    torch.manual_seed(0)
    model = _train(BagOfEmbeddings(), (torch.from_numpy(ids[:400]), torch.from_numpy(mask[:400])),
                   torch.from_numpy(labels[:400]), steps=80)
    path = directory / "text.onnx"
    export_onnx(model, {"input_ids": torch.from_numpy(ids[:8]), "attention_mask": torch.from_numpy(mask[:8])},
                path, load_export_target("onnx-fp32"),
                extra_dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})
    return OnnxCase("text", path, {"input_ids": ids[400:], "attention_mask": mask[400:]}, labels[400:], 3)


@pytest.fixture(scope="module", params=["digits", "text"])
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> OnnxCase:
    make = {"digits": _digits_case, "text": _text_case}[request.param]
    return make(tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> OnnxCase:
    return _digits_case(tmp_path_factory.mktemp("digits-only"))


def _predict(path: Path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


# ---------------------------------------------------------------- quantize


@pytest.mark.parametrize(("examples", "tolerance", "advised"), [
    (99, 0.01, 100), (100, 0.01, None), (33, 0.03, 34), (34, 0.03, None), (5, 0.0, None)])
def test_the_coarse_gate_note_starts_where_one_example_outweighs_the_tolerance(
        examples: int, tolerance: float, advised: int | None) -> None:
    """At 100 examples one changed answer drops accuracy by exactly the 1-point tolerance, which the gate allows: the
    note (and docs/cli.md) begins at 99, and asks for the count where it stops (it asked for 101). A tolerance of 0
    allows no change whatever the count: no note (it divided by zero)."""
    from edgekd.quantize.config import QuantizeStage
    from edgekd.quantize.feeds import QuantData
    from edgekd.quantize.onnx_file import _notes

    data = QuantData(calibration=({"input": np.zeros((1, 4), np.float32)},),
                     val=(({"input": np.zeros((examples, 4), np.float32)}, np.zeros(examples, np.int64)),), test=())
    notes = _notes(data, QuantizeStage(stage="quantize", tolerance=tolerance))
    assert notes == ([f"accuracy gate coarse: the {examples} evaluation example(s) each weigh {100 / examples:.3g} "
                      f"points, more than the {100 * tolerance:g}-point tolerance, so one example's answer decides "
                      f"it; give at least {advised} examples (--eval)"] if advised else [])


def test_quantize_end_to_end_records_every_variant_and_a_decision_its_figures_support(
        case: OnnxCase, tmp_path: Path) -> None:
    calibration = case.save_npz(tmp_path / "calib.npz", labelled=False, stop=128)
    evaluation = case.save_npz(tmp_path / "eval.npz", labelled=True, start=128)
    out = tmp_path / "q"
    outcome = cli("quantize", case.path, "--device", "host-cpu", "--out", out, "--calibration", calibration,
                  "--eval", evaluation, *FAST, "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output)
    assert record == json.loads((out / "quantize.json").read_text())
    variants, kept = record["variants"], record["decision"]
    assert {"fp32", "fp32-optimized", "int8-static-minmax"} <= set(variants)  # auto: static for a non-transformer
    assert record["data"]["calibration"]["examples"] == 128
    examples = len(case.labels) - 128  # fewer than 100 (the text case's 72): one example outweighs the 1-point gate
    assert record["notes"] == ([] if examples >= 100 else [
        f"accuracy gate coarse: the {examples} evaluation example(s) each weigh {100 / examples:.3g} points, more "
        "than the 1-point tolerance, so one example's answer decides it; give at least 100 examples (--eval)"])

    # accuracy as recorded is the FP32 model's own on the eval file
    eval_x = {k: v[128:] for k, v in case.inputs.items()}
    fp32_accuracy = float(np.mean(_predict(case.path, eval_x).argmax(1) == case.labels[128:]))
    assert variants["fp32"]["accuracy"] == pytest.approx(fp32_accuracy)
    assert fp32_accuracy > 1.5 / case.classes  # the model learned something: the gates compare real predictions
    for name, v in variants.items():
        assert v["p50_ms"] > 0 and v["size_mb"] > 0 and v["speedup"]["rounds"] == 2, name
        assert v["path"] == (record["model"] if name == kept else None)

    # the decision follows from the recorded figures and settings
    min_speedup, tolerance = record["settings"]["min_speedup"], record["settings"]["tolerance"]
    def clears(v: dict) -> bool:
        return (v["speedup"]["low"] >= min_speedup and v["val_agreement"] >= record["settings"]["agreement"]
                and variants["fp32"]["val_accuracy"] - v["val_accuracy"] <= tolerance + 1e-9)
    if kept == "fp32":
        assert not any(clears(v) for n, v in variants.items() if n != "fp32")
        assert record["reason"].startswith("fp32 kept: ")
    else:
        assert clears(variants[kept]) and record["reason"].startswith(f"{kept} kept: ")
        assert f"{variants[kept]['speedup']['ratio']:.2f}×" in record["reason"]

    # the kept model is written and predicts as the record says
    model = out / record["model"]
    assert model.name == f"{case.path.stem}.{kept}.onnx"
    agreement = np.mean(_predict(model, eval_x).argmax(1) == _predict(case.path, eval_x).argmax(1))
    assert agreement == pytest.approx(variants[kept]["agreement"])
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted([model.name,
                                                                                         "quantize.json"])
    assert not list(out.glob(".*.tmp"))


def test_quantize_without_calibration_offers_no_static_int8_and_without_eval_gates_nothing(
        digits: OnnxCase, tmp_path: Path) -> None:
    result = api.quantize(digits.path, device="host-cpu", out=tmp_path / "q",
                          settings={"runs": 20, "rounds": 2})
    record = result.to_json()
    assert set(record["variants"]) == {"fp32", "fp32-optimized", "int8-dynamic"}
    assert record["data"] == {"calibration": None, "eval": None}
    assert any("static INT8 not offered" in note and "--calibration" in note for note in record["notes"])
    assert any("accuracy not checked" in note and "--eval" in note for note in record["notes"])
    assert all(v["accuracy"] is None and v["val_agreement"] is None for v in record["variants"].values())
    assert result.model.is_file() and result.model.parent == tmp_path / "q"
    fp16 = api.quantize(digits.path, device="host-cpu", out=tmp_path / "h", settings={"modes": ["fp16"], "runs": 20,
                                                                                       "rounds": 2}).to_json()
    assert not any("static INT8" in note for note in fp16["notes"])  # FP16 was asked for by name: nothing left out


def test_quantize_with_eval_but_no_calibration_gates_dynamic_int8_and_retries_on_eval_inputs(
        digits: OnnxCase, tmp_path: Path) -> None:
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True)
    result = api.quantize(digits.path, device="host-cpu", out=tmp_path / "q", eval=evaluation,
                          settings={"agreement": 1.0, "max_retries": 1, "runs": 20, "rounds": 2})
    record = result.to_json()
    dynamic = record["variants"]["int8-dynamic"]
    assert "int8-static-minmax" not in record["variants"] and len(record["notes"]) == 1
    if dynamic["retries"] == 0:  # agreed everywhere at once: nothing to retry
        assert dynamic["val_agreement"] == 1.0
    else:  # the sensitivity ranking ran on the eval inputs (there is no calibration data)
        assert dynamic["retries"] == 1 and len(dynamic["excluded_nodes"]) == 1
    if dynamic["val_agreement"] < 1.0:
        assert record["decision"] != "int8-dynamic"


def test_quantize_summary_and_rerun_into_the_same_directory(digits: OnnxCase, tmp_path: Path) -> None:
    calibration = digits.save_npz(tmp_path / "calib.npz", labelled=False, stop=64)
    out = tmp_path / "q"
    for _ in range(2):  # an earlier edgekd quantize output may be written again
        outcome = cli("quantize", digits.path, "-d", "host-cpu", "-o", out, "--calibration", calibration,
                      "--mode", "dynamic", "--mode", "fp16", *FAST)
        assert outcome.exit_code == 0, outcome.output
    record = json.loads((out / "quantize.json").read_text())
    assert set(record["variants"]) == {"fp32", "fp32-optimized", "int8-dynamic", "fp16"}
    for name in record["variants"]:
        assert name in outcome.output
    assert record["reason"].split(":")[0] in outcome.output and f"wrote {out / record['model']}" in outcome.output
    assert [p.name for p in out.glob("*.onnx")] == [record["model"]]


# ---------------------------------------------------------------- bundle


def test_bundle_end_to_end_manifest_from_the_graph_and_an_ort_that_matches(case: OnnxCase, tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class-{i}\n" for i in range(case.classes)))
    pre = tmp_path / "pre.yaml"
    pre.write_text("kind: tokens\nvocabulary: ids 1..39, 0 pads\n" if case.name == "text" else
                   "kind: image\nlayout: NCHW\nchannels: 1\nheight: 8\nwidth: 8\ncolor: grey\npixel_range: [0, 16]\n"
                   "scale: 0.0625\nmean: [0.0]\nstd: [1.0]\nformula: x = pixel * scale\nbyte_scale: 0.0627\n")
    out = tmp_path / "app"
    outcome = cli("bundle", case.path, "--device", "android-midrange-cpu", "--out", out, "--labels", labels,
                  "--preprocessing", pre, "--runs", "20", "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output)
    bundle = out / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert sorted(p.name for p in bundle.iterdir()) == ["README.md", "manifest.json", "model.onnx", "model.ort",
                                                        "model.required_operators.config"]
    graph = ort.InferenceSession(str(case.path), providers=["CPUExecutionProvider"])
    assert [(t["name"], t["shape"]) for t in manifest["inputs"]] == [(i.name, i.shape) for i in graph.get_inputs()]
    assert [t["name"] for t in manifest["outputs"]] == [o.name for o in graph.get_outputs()]
    assert {t["dtype"] for t in manifest["inputs"]} == {str(v.dtype) for v in case.inputs.values()}
    assert manifest["labels"] == [f"class-{i}" for i in range(case.classes)]
    assert manifest["preprocessing"]["kind"] == ("tokens" if case.name == "text" else "image")
    assert manifest["model"] == {"file": "model.ort", "format": "ort", "opset": 17, "onnx_file": "model.onnx",
                                 "required_operators": "model.required_operators.config",
                                 "onnxruntime": ort.__version__}
    assert manifest["device"]["name"] == "android-midrange-cpu" and manifest["latency"]["estimate"] is True
    assert manifest["budget"]["verdict"] == record["budget"]["verdict"] == "pass"
    assert manifest["files"] == record["files"] and record["parity"]["passed"]
    readme = (bundle / "README.md").read_text()
    assert "class-0" in readme and "android-midrange-cpu" in readme and "model.ort" in readme

    x = {k: v[:5] for k, v in case.inputs.items()}
    np.testing.assert_allclose(_predict(bundle / "model.ort", x), _predict(case.path, x), atol=1e-4, rtol=1e-4)
    with zipfile.ZipFile(out / "bundle.zip") as archive:
        assert sorted(archive.namelist()) == sorted(f"{case.path.stem}/{p.name}" for p in bundle.iterdir())


def test_bundle_labels_written_by_windows_notepad_are_read_as_written(digits: OnnxCase, tmp_path: Path) -> None:
    """A byte-order mark and CRLF line ends: the first class was named '\ufeffzero'."""
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    labels = tmp_path / "labels.txt"
    labels.write_bytes("\ufeff".encode() + "".join(f"{name}\r\n" for name in names).encode() + b"\r\n")
    outcome = cli("bundle", digits.path, "-d", "host-cpu", "-o", tmp_path / "app", "--labels", labels, "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    assert json.loads((tmp_path / "app" / "bundle" / "manifest.json").read_text())["labels"] == names


def test_bundle_summary_without_labels(digits: OnnxCase, tmp_path: Path) -> None:
    outcome = cli("bundle", digits.path, "-d", "host-cpu", "-o", tmp_path / "app", "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    assert "5 files" in outcome.output and "budget: pass" in outcome.output and "parity" in outcome.output
    manifest = json.loads((tmp_path / "app" / "bundle" / "manifest.json").read_text())
    assert manifest["labels"] == [] and manifest["preprocessing"] is None and manifest["accuracy"]["test"] is None


# ---------------------------------------------------------------- .ort in bench and profile


def test_a_graph_of_another_fixed_batch_is_timed_with_a_warning(digits: OnnxCase, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(digits.path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 2  # exported for batches of 2; host-cpu feeds 1
    onnx.save(model, str(tmp_path / "pairs.onnx"))
    expected = "its graph fixes their first axis, while the device profile feeds batches of 1"
    profiled = cli("profile", tmp_path / "pairs.onnx", "--runs", "10", "--warmup", "0", "--json")
    assert profiled.exit_code == 0, profiled.output
    (warning,) = [w for w in json.loads(profiled.output)["warnings"] if expected in w]  # beside any on stability
    assert "pairs.onnx was timed on inputs input [2, 1, 8, 8]" in warning
    benched = cli("bench", digits.path, tmp_path / "pairs.onnx", "--out", tmp_path / "b", "--runs", "10",
                  "--warmup", "0", "--rounds", "1")
    assert benched.exit_code == 0, benched.output
    warnings = json.loads((tmp_path / "b" / "bench.json").read_text())["warnings"]
    assert [w for w in warnings if expected in w] == [w for w in warnings if "pairs.onnx" in w and expected in w]
    assert len([w for w in warnings if expected in w]) == 1


def test_bench_and_profile_take_ort_files(digits: OnnxCase, tmp_path: Path) -> None:
    exported = cli("export", digits.path, "--device", "host-cpu", "--out", tmp_path / "m")
    assert exported.exit_code == 0, exported.output
    ort_file = tmp_path / "m" / "digits.ort"
    renamed = tmp_path / "digits-ort.bin"  # the content decides, whatever the name
    renamed.write_bytes(ort_file.read_bytes())
    outcome = cli("bench", ort_file, digits.path, renamed, "--out", tmp_path / "b", "--runs", "10", "--rounds", "1",
                  "--json")
    assert outcome.exit_code == 0, outcome.output
    models = json.loads((tmp_path / "b" / "bench.json").read_text())["models"]
    assert [m["macs"] is None for m in models] == [True, False, True]  # counted from an ONNX graph only
    assert models[0]["size_mb"] == pytest.approx(ort_file.stat().st_size / 2**20)
    assert all(m["p50_ms"] > 0 and m["operators"] for m in models)
    profiled = cli("profile", ort_file, "--runs", "10", "--json")
    assert profiled.exit_code == 0 and json.loads(profiled.output)["p50_ms"] > 0


# ---------------------------------------------------------------- bad inputs: exit 2, one line


def _not_onnx(tmp: Path, case: OnnxCase) -> Path:
    path = tmp / "notes.onnx"
    path.write_text("these are notes, not a model\n")
    return path


def _fake_ort(tmp: Path, case: OnnxCase) -> Path:
    path = tmp / "model.ort"
    path.write_bytes(case.path.read_bytes())  # ONNX bytes under an .ort name: no ORTM identifier
    return path


def _without_its_external_data(tmp: Path, case: OnnxCase) -> Path:
    import onnx

    onnx.save_model(onnx.load(str(case.path)), str(tmp / "split.onnx"), save_as_external_data=True,
                    location="split.data", size_threshold=0)
    (tmp / "split.data").unlink()
    return tmp / "split.onnx"


def test_an_onnx_file_whose_producer_name_starts_with_ortm_is_read_as_onnx(digits: OnnxCase, tmp_path: Path) -> None:
    """Bytes 4..8 of an ONNX file are its producer name's first letters: 'ORTM…' made it an ORT format model, which
    onnxruntime then failed to verify and quantize refused as 'an ORT format model'."""
    import onnx

    model = onnx.load(str(digits.path))
    model.producer_name = "ORTModelMaker"
    path = tmp_path / "ortm.onnx"
    onnx.save(model, str(path))
    assert path.read_bytes()[4:8] == b"ORTM"
    profiled = cli("profile", path, "--runs", "10", "--json")
    assert profiled.exit_code == 0 and json.loads(profiled.output)["p50_ms"] > 0, profiled.output
    quantized = cli("quantize", path, "--device", "host-cpu", "--runs", "10", "--rounds", "1", "--out", tmp_path / "q")
    assert quantized.exit_code == 0, quantized.output


@pytest.mark.parametrize(("make", "fragments"), [
    (lambda tmp, case: tmp / "missing.onnx", ("missing.onnx", "model file not found")),
    (_not_onnx, ("notes.onnx", "not a readable ONNX model")),
    (_fake_ort, ("model.ort", "not an ORT format model", "ORTM")),
    (_without_its_external_data, ("split.onnx", "external data file 'split.data' not found beside it")),
], ids=["missing", "not-onnx", "fake-ort", "no-external-data"])
@pytest.mark.parametrize("command", ["bench", "profile", "quantize", "bundle", "export"])
def test_every_verb_refuses_a_bad_model_file(command: str, make: Callable[[Path, OnnxCase], Path],
                                             fragments: tuple[str, ...], digits: OnnxCase, tmp_path: Path) -> None:
    extra = {"bench": ["--out", tmp_path / "b"], "profile": [], "export": ["--out", tmp_path / "e"],
             "quantize": ["-d", "host-cpu", "-o", tmp_path / "q"], "bundle": ["-d", "host-cpu", "-o", tmp_path / "a"]}
    assert_user_error(cli(command, make(tmp_path, digits), *extra[command]), *fragments)


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_graph_rewriting_verbs_refuse_an_ort_file(command: str, digits: OnnxCase, tmp_path: Path) -> None:
    cli("export", digits.path, "--out", tmp_path)
    outcome = cli(command, tmp_path / "digits.ort", "-d", "host-cpu", "-o", tmp_path / "out")
    assert_user_error(outcome, "digits.ort", "an ORT format model", f"edgekd {command} needs the ONNX file")


def _first(case: OnnxCase) -> str:
    return next(iter(case.inputs))


#: (id, makes the bad .npz in tmp from the case, whether it is labelled (--eval), fragments of the error)
NPZ_CASES: list[tuple[str, Callable[[Path, OnnxCase], Path], bool, tuple[str, ...]]] = [
    ("missing-file", lambda tmp, c: tmp / "absent.npz", False, ("absent.npz", "file not found")),
    ("not-npz", lambda tmp, c: (tmp / "bad.npz").write_text("x") and tmp / "bad.npz", False,
     ("bad.npz", "not a readable NumPy .npz file (not a zip archive")),
    ("object-array", lambda tmp, c: np.savez(tmp / "o.npz", **{k: np.array([None] * 8, dtype=object)
                                                               for k in c.inputs}) or tmp / "o.npz", False,
     ("o.npz", "not a readable NumPy .npz file")),
    ("missing-key", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=False, stop=8, **{_first(c): None}), False,
     ("d.npz", "missing", "expected arrays")),
    ("extra-key", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=False, stop=8, extra=np.zeros(8)), False,
     ("d.npz", "unexpected 'extra'")),
    ("wrong-dtype", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=False, stop=8,
                                              **{_first(c): c.inputs[_first(c)][:8].astype(np.float64)}), False,
     ("d.npz", "is float64, expected")),
    ("wrong-rank", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=False, stop=8,
                                             **{_first(c): c.inputs[_first(c)][:8].reshape(8, -1)[:, :1, None]}),
     False, ("d.npz", "has shape", "expected [N")),
    ("counts-differ", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=True, stop=8, y=c.labels[:7]), True,
     ("d.npz", "different numbers of examples")),
    ("no-labels", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=True, stop=8, y=None), True,
     ("d.npz", "missing 'y'")),
    ("label-out-of-range", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=True, stop=8,
                                                     y=np.full(8, c.classes)), True,
     ("d.npz", "holds label", "classes")),
    ("float-labels", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=True, stop=8,
                                               y=c.labels[:8].astype(np.float32)), True,
     ("d.npz", "'y' is float32", "integer class")),
    ("empty", lambda tmp, c: c.save_npz(tmp / "d.npz", labelled=False, stop=0), False,
     ("d.npz", "no examples")),
]


@pytest.mark.parametrize(("make", "labelled", "fragments"), [pytest.param(*c[1:], id=c[0]) for c in NPZ_CASES])
def test_quantize_refuses_npz_files_that_disagree_with_the_graph(
        make: Callable[[Path, OnnxCase], Path], labelled: bool, fragments: tuple[str, ...], case: OnnxCase,
        tmp_path: Path) -> None:
    option = "--eval" if labelled else "--calibration"
    outcome = cli("quantize", case.path, "-d", "host-cpu", "-o", tmp_path / "q", option, make(tmp_path, case))
    assert_user_error(outcome, *fragments)
    assert not (tmp_path / "q").exists()  # checked before anything is written


@pytest.mark.parametrize("option", ["--eval", "--calibration"])
def test_quantize_refuses_token_ids_beyond_the_embedding_table(option: str, tmp_path: Path,
                                                                tmp_path_factory: pytest.TempPathFactory) -> None:
    """onnxruntime failed on them with its Gather kernel's message, after logging it raw on stderr."""
    text = _text_case(tmp_path_factory.mktemp("text-ids"))
    ids = text.inputs["input_ids"][:8].copy()
    ids[3, 5] = 45  # the bag of embeddings has 40 rows
    data = text.save_npz(tmp_path / "d.npz", labelled=option == "--eval", stop=8, input_ids=ids)
    outcome = cli("quantize", text.path, "-d", "host-cpu", "-o", tmp_path / "q", option, data)
    assert_user_error(outcome, "d.npz", "array 'input_ids' holds id 45 (example 3)", "embedding table of 40 rows",
                      "expected ids 0..39")
    assert "onnxruntime" not in outcome.output


def _scores_graph(path: Path, scores: str) -> Path:
    """A [N, 64] → scores graph: ``symbolic`` [N, classes] (10), ``per-token`` [N, 8, 5] or ``one-score`` [N]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    width = {"symbolic": 10, "per-token": 40, "one-score": 10}[scores]
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(64, width)).astype(np.float32), "W")
    nodes, extra = [helper.make_node("MatMul", ["input", "W"], ["m"])], [weights]
    if scores == "per-token":
        extra.append(numpy_helper.from_array(np.array([0, 8, 5], dtype=np.int64), "to"))
        nodes.append(helper.make_node("Reshape", ["m", "to"], ["scores"]))
    elif scores == "one-score":
        extra.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"))
        nodes.append(helper.make_node("ReduceSum", ["m", "axis"], ["scores"], keepdims=0))
    else:
        nodes.append(helper.make_node("Identity", ["m"], ["scores"]))
    declared = {"symbolic": ["N", "classes"], "per-token": ["N", 8, 5], "one-score": ["N"]}[scores]
    graph = helper.make_graph(nodes, scores, [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 64])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, declared)], extra)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("scores", "fragments"), [
    # the first batch of the device's (host-cpu: one example)
    ("per-token", ("gives shape [1, 8, 5] for 1 example(s)", "[batch, classes]")),  # was an internal error
    ("one-score", ("gives shape [1] for 1 example(s)", "[batch, classes]")),  # was scored as logits of 64 classes
    ("symbolic", ("holds label 10", "expected classes 0..9", "has 10 classes")),  # was 1.8% accuracy, exit 0
])
def test_quantize_eval_refuses_outputs_it_cannot_score_against_one_label_per_example(
        scores: str, fragments: tuple[str, ...], tmp_path: Path) -> None:
    model = _scores_graph(tmp_path / f"{scores}.onnx", scores)
    labels = np.arange(100) % (15 if scores == "symbolic" else 5)
    np.savez(tmp_path / "eval.npz", input=np.random.default_rng(1).random((100, 64), dtype=np.float32), y=labels)
    outcome = cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q", "--eval", tmp_path / "eval.npz")
    assert_user_error(outcome, "eval.npz", *fragments)
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize("option", ["--calibration", "--eval"])
def test_nan_inputs_are_refused_naming_the_file_array_and_row(option: str, digits: OnnxCase, tmp_path: Path) -> None:
    images = digits.inputs["input"][:8].copy()
    images[3, 0, 2, 2] = np.nan
    bad = digits.save_npz(tmp_path / "d.npz", labelled=option == "--eval", stop=8, input=images)
    assert_user_error(cli("quantize", digits.path, "-d", "host-cpu", "-o", tmp_path / "q", option, bad),
                      "d.npz", "array 'input' holds NaN or infinite values (1 of 8 example(s), the first at row 3)")
    assert not (tmp_path / "q").exists()


def _two_score_outputs(digits: OnnxCase, path: Path) -> Path:
    """The digits model with its logits renamed ``scores`` and their negation ``negated`` as the first output: no
    output says which holds the scores."""
    import onnx

    model = onnx.load(str(digits.path))
    (scores,) = model.graph.output
    for node in model.graph.node:
        node.output[:] = ["scores" if name == scores.name else name for name in node.output]
    scores.name = "scores"
    model.graph.node.append(onnx.helper.make_node("Neg", ["scores"], ["negated"]))
    model.graph.output.insert(0, onnx.helper.make_tensor_value_info("negated", onnx.TensorProto.FLOAT, ["batch", 10]))
    onnx.save(model, str(path))
    return path


def test_quantize_takes_a_graph_whose_weights_are_in_external_data(digits: OnnxCase, tmp_path: Path) -> None:
    """onnxruntime's pre-processing wrote its scratch copy elsewhere and could not find the weights: exit 2 naming a
    temporary path, where profile, bench and bundle took the same file."""
    import onnx

    (tmp_path / "ext").mkdir()
    onnx.save(onnx.load(str(digits.path)), str(tmp_path / "ext" / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    assert (tmp_path / "ext" / "model.onnx.data").stat().st_size > 1000
    calibration = digits.save_npz(tmp_path / "calib.npz", labelled=False, stop=64)
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True, start=64, stop=200)
    outcome = cli("quantize", tmp_path / "ext" / "model.onnx", "-d", "host-cpu", "-o", tmp_path / "q", "--calibration",
                  calibration, "--eval", evaluation, "--runs", "10", "--rounds", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output)
    predicted = _predict(digits.path, {"input": digits.inputs["input"][64:200]}).argmax(1)
    assert record["variants"]["fp32"]["accuracy"] == pytest.approx(float(np.mean(predicted == digits.labels[64:200])))
    kept = tmp_path / "q" / record["model"]
    assert kept.is_file() and not list((tmp_path / "q").glob("*.data"))  # the kept model stands alone


def test_quantize_takes_a_file_name_as_long_as_the_filesystem_does(digits: OnnxCase, tmp_path: Path) -> None:
    """edgekd's own scratch names (``.<stem>.preprocessed.onnx.<random>.tmp``) outgrew a 245-byte name the
    filesystem took: 'File name too long', blamed on pre-processing. The kept variant's name is cut to fit."""
    import shutil

    from edgekd.quantize.onnx_file import NAME_BYTES, kept_name

    long = tmp_path / f"{'m' * 240}.onnx"
    shutil.copyfile(digits.path, long)
    outcome = cli("quantize", long, "-d", "host-cpu", "-o", tmp_path / "q", "--mode", "dynamic", "--runs", "10",
                  "--rounds", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    kept = json.loads(outcome.output)["model"]
    assert (tmp_path / "q" / kept).is_file() and kept.startswith("m" * 200) and len(kept.encode()) <= NAME_BYTES
    suffix = ".int8-dynamic.onnx"
    assert kept_name("é" * 200, "int8-dynamic") == "é" * ((NAME_BYTES - len(suffix)) // 2) + suffix  # whole chars


def test_quantize_evaluates_a_static_batch_graph_on_any_number_of_examples(digits: OnnxCase, tmp_path: Path) -> None:
    """A graph exported for batches of 4 takes 4 rows at a time: the last 3 of 103 examples are run filled up to 4
    and scored alone (it used to be refused: "give a multiple of it")."""
    import onnx

    model = onnx.load(str(digits.path))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 4
    onnx.save(model, str(tmp_path / "fours.onnx"))
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True, stop=103)
    outcome = cli("quantize", tmp_path / "fours.onnx", "-d", "host-cpu", "-o", tmp_path / "q", "--eval", evaluation,
                  "--mode", "dynamic", "--runs", "10", "--rounds", "1", "--json")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads(outcome.output)
    predicted = _predict(digits.path, {"input": digits.inputs["input"][:103]}).argmax(1)
    assert record["variants"]["fp32"]["accuracy"] == pytest.approx(float(np.mean(predicted == digits.labels[:103])))
    assert record["data"]["eval"]["examples"] == 103


def test_a_graph_with_two_score_outputs_and_no_logits_says_which_it_reads(
        digits: OnnxCase, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    two = _two_score_outputs(digits, tmp_path / "two.onnx")
    with caplog.at_level("WARNING", logger="edgekd.export.manifest"):
        outcome = cli("bundle", two, "-d", "host-cpu", "-o", tmp_path / "b", "--runs", "10", "--warmup", "0")
    assert outcome.exit_code == 0, outcome.output
    assert "outputs 'negated', 'scores' are all floating-point tensors and none is named 'logits': the " \
           "first, 'negated', is read as the model's scores (--scores NAME chooses another)" in caplog.text


def test_scores_names_the_output_quantize_scores_and_bundle_reads(
        digits: OnnxCase, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    two = _two_score_outputs(digits, tmp_path / "two.onnx")
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True)
    expected = float(np.mean(_predict(digits.path, digits.inputs).argmax(1) == digits.labels))
    assert expected > 0.5  # the model learnt: scoring the negated output would be told apart
    accuracies = {}
    for chosen in (None, "scores"):
        out = tmp_path / f"q-{chosen}"
        outcome = cli("quantize", two, "-d", "host-cpu", "-o", out, "--eval", evaluation, "--mode", "dynamic",
                      "--runs", "10", "--rounds", "1", *(["--scores", chosen] if chosen else []), "--json")
        assert outcome.exit_code == 0, outcome.output
        accuracies[chosen] = json.loads(outcome.output)["variants"]["fp32"]["accuracy"]
    assert accuracies["scores"] == pytest.approx(expected) and accuracies[None] < 0.2  # the default read 'negated'
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"digit {d}\n" for d in range(10)))
    caplog.clear()  # the default quantize above may have said which output it read
    with caplog.at_level("WARNING", logger="edgekd.export.manifest"):
        outcome = cli("bundle", two, "-d", "host-cpu", "-o", tmp_path / "b", "--runs", "10", "--warmup", "0",
                      "--labels", labels, "--scores", "scores")
    assert outcome.exit_code == 0, outcome.output
    assert "none is named 'logits'" not in caplog.text  # chosen: nothing ambiguous
    manifest = json.loads((tmp_path / "b" / "bundle" / "manifest.json").read_text())
    assert manifest["postprocessing"]["output"] == "scores"
    readme = (tmp_path / "b" / "bundle" / "README.md").read_text()
    assert 'session.run(["scores"], {"input": x})' in readme and 'setOf("scores")' in readme  # Python and Kotlin


def test_a_label_count_other_than_the_read_outputs_names_the_outputs_scores_can_read(digits: OnnxCase,
                                                                                     tmp_path: Path) -> None:
    two = _two_score_outputs(digits, tmp_path / "two.onnx")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    outcome = cli("bundle", two, "-d", "host-cpu", "-o", tmp_path / "b", "--labels", tmp_path / "labels.txt")
    assert_user_error(outcome, "labels.txt: 2 labels, but", "two.onnx's output 'negated' has 10 classes (shape "
                      "['batch', 10]); expected one line per class; --scores OUTPUT reads another: 'scores' "
                      "['batch', 10]")


@pytest.mark.parametrize("verb", ["quantize", "bundle"])
@pytest.mark.parametrize(("chosen", "what"), [("missing", "is not an output of the graph"),
                                              ("label", "is a int64 output, not floating-point scores")])
def test_scores_naming_no_floating_point_output_is_refused_listing_the_outputs(
        verb: str, chosen: str, what: str, digits: OnnxCase, tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(_two_score_outputs(digits, tmp_path / "two.onnx")))
    model.graph.node.append(onnx.helper.make_node("ArgMax", ["scores"], ["label"], axis=1, keepdims=0))
    model.graph.output.append(onnx.helper.make_tensor_value_info("label", onnx.TensorProto.INT64, ["batch"]))
    onnx.save(model, str(tmp_path / "three.onnx"))
    outcome = cli(verb, tmp_path / "three.onnx", "-d", "host-cpu", "-o", tmp_path / "out", "--scores", chosen)
    assert_user_error(outcome, "three.onnx", f"scores: '{chosen}' {what} (its outputs: 'negated' (float32), "
                      "'scores' (float32), 'label' (int64))")
    assert not (tmp_path / "out").exists()


def test_a_graph_with_a_short_position_table_is_told_its_length(tmp_path: Path) -> None:
    """host-cpu feeds 128 tokens; the graph's position table has 64 rows: onnxruntime's own message names a
    Gather index, the verbs name the length."""
    ids = torch.ones(2, 8, dtype=torch.long)
    path = tmp_path / "short.onnx"
    export_onnx(PositionedBag().eval(), {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, path,
                load_export_target("onnx-fp32"),
                extra_dynamic_axes={"input_ids": {1: "sequence"}, "attention_mask": {1: "sequence"}})
    for outcome in (cli("profile", path, "--runs", "10"), cli("bench", path, "--out", tmp_path / "b", "--runs", "10")):
        assert_user_error(outcome, "short.onnx", "it takes at most 64 tokens (a position table or a length fixed "
                          "when it was traced), but the device profile feeds inputs.sequence_length 128")


def test_wrong_static_size_names_the_graph_shape(digits: OnnxCase, tmp_path: Path) -> None:
    bad = digits.save_npz(tmp_path / "d.npz", labelled=False, input=np.zeros((4, 1, 7, 7), np.float32))
    assert_user_error(cli("quantize", digits.path, "-d", "host-cpu", "-o", tmp_path / "q", "--calibration", bad),
                      "d.npz", "shape [4, 1, 7, 7], expected [N, 1, 8, 8]", "'input'")


def test_a_graph_without_a_batch_axis_is_named_as_such(tmp_path: Path) -> None:
    """A graph input [16] (one example, no batch axis) fed [N, 16] was told to expect '[N, ]'."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.ones((16, 4), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"])], "unbatched",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [16])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4])], [weights])
    model = tmp_path / "unbatched.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    np.savez(tmp_path / "c.npz", x=np.zeros((8, 16), np.float32))
    assert_user_error(cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q", "--calibration",
                          tmp_path / "c.npz"),
                      "c.npz", "shape [8, 16], one [16] example per row", "without an example (batch) axis")
    np.savez(tmp_path / "d.npz", x=np.zeros((8, 3), np.float32))  # a rank-1 input: expected [N], not '[N, ]'
    dynamic = tmp_path / "dynamic.onnx"
    graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(dynamic))
    assert_user_error(cli("quantize", dynamic, "-d", "host-cpu", "-o", tmp_path / "q", "--calibration",
                          tmp_path / "d.npz"), "d.npz", "expected [N] (N examples")


def test_static_mode_needs_calibration_and_bad_settings_are_one_line(digits: OnnxCase, tmp_path: Path) -> None:
    assert_user_error(cli("quantize", digits.path, "-d", "host-cpu", "-o", tmp_path, "--mode", "static"),
                      "--mode static", "--calibration")
    assert_user_error(cli("quantize", digits.path, "-d", "host-cpu", "-o", tmp_path, "--mode", "int4"),
                      "modes[0]", "'int4'")


@pytest.mark.parametrize(("lines", "fragments"), [
    ("a\nb\n", ("labels.txt", "2 labels", "has 10 classes")),
    ("".join(f"{i}\n" for i in range(11)), ("labels.txt", "11 labels", "has 10 classes")),
    ("a\n\nb\n", ("labels.txt", "line 2 is blank")),
    ("", ("labels.txt", "it is empty")),
    ("".join(f"{i % 9}\n" for i in range(10)), ("labels.txt", "line 10 repeats line 1 ('0')", "distinct")),
], ids=["too-few", "too-many", "blank-line", "empty", "repeated"])
def test_bundle_refuses_labels_that_do_not_fit_the_output(lines: str, fragments: tuple[str, ...], digits: OnnxCase,
                                                          tmp_path: Path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text(lines)
    outcome = cli("bundle", digits.path, "-d", "host-cpu", "-o", tmp_path / "a", "--labels", labels)
    assert_user_error(outcome, *fragments)


GOOD_IMAGE = ("kind: image\nlayout: NCHW\nchannels: 1\nheight: 8\nwidth: 8\ncolor: grey\npixel_range: [0, 16]\n"
              "scale: 1.0\nmean: [0.5]\nstd: [1.0]\nformula: x = (pixel * scale - mean) / std\nbyte_scale: 0.0625\n")


@pytest.mark.parametrize(("text", "fragments"), [
    ("- a list\n", ("pre.yaml", "expected a mapping with a 'kind'")),
    ("kind: image\nheight: 8\n", ("pre.yaml", "layout: required key is missing", "and 9 more problems")),
    ("kind: text\n", ("pre.yaml", "max_length: required key is missing", "and 1 more problem")),
    ("kind: text\nmax_length: 0\npad_id: 0\n", ("pre.yaml", "max_length", "greater than 0")),
    (GOOD_IMAGE.replace("pixel_range: [0, 16]", "pixel_range: 16"), ("pre.yaml", "pixel_range", "tuple")),
    (GOOD_IMAGE.replace("mean: [0.5]", "mean: 0.5"), ("pre.yaml", "mean", "list")),
    (GOOD_IMAGE.replace("std: [1.0]", "std: [1.0, 2.0, 3.0]"), ("pre.yaml", "one value per channel (1)")),
    (GOOD_IMAGE.replace("std: [1.0]", "std: [0]"), ("pre.yaml", "std[0]", "greater than 0")),
    ("kind: [unclosed\n", ("pre.yaml", "malformed YAML")),
    (GOOD_IMAGE.replace("channels: 1\nheight: 8\nwidth: 8", "channels: 3\nheight: 224\nwidth: 224")
     .replace("mean: [0.5]\nstd: [1.0]", "mean: [0.5, 0.5, 0.5]\nstd: [1, 1, 1]"),
     ("pre.yaml: channels 3, height 224, width 224 (NCHW), but", "digits.onnx's input 'input' is ['batch', 1, 8, 8]: "
      "expected channels 1, height 8, width 8")),
    (GOOD_IMAGE.replace("NCHW", "NHWC"), ("pre.yaml: height 8, channels 1 (NHWC)", "expected height 1, channels 8")),
    (GOOD_IMAGE.replace("NCHW", "banana"), ("pre.yaml", "layout", "'NCHW' or 'NHWC'")),
], ids=["not-mapping", "image-keys", "text-keys", "text-length", "range-scalar", "mean-scalar", "std-per-channel",
        "std-zero", "malformed", "image-size-not-the-graphs", "layout-not-the-graphs", "layout-unknown"])
def test_bundle_refuses_a_bad_preprocessing_file(text: str, fragments: tuple[str, ...], digits: OnnxCase,
                                                 tmp_path: Path) -> None:
    pre = tmp_path / "pre.yaml"
    pre.write_text(text)
    outcome = cli("bundle", digits.path, "-d", "host-cpu", "-o", tmp_path / "a", "--preprocessing", pre)
    assert_user_error(outcome, *fragments)
    pre.write_text(GOOD_IMAGE)  # the same file made right is read as written
    assert read_preprocessing(pre, digits.path)["mean"] == [0.5]


def _mlp_graph(path: Path) -> Path:
    """Flatten, Gemm, Sigmoid, Gemm at opset 17: operators unchanged since opset 13, so ONNX's converter takes the
    graph down to 13."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "w1", "b1"], ["hidden"]),
         helper.make_node("Sigmoid", ["hidden"], ["active"]), helper.make_node("Gemm", ["active", "w2", "b2"],
                                                                               ["logits"])],
        "mlp", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
         for name, shape in (("w1", (64, 32)), ("b1", (32,)), ("w2", (32, 10)), ("b2", (10,)))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize(("graph", "opset", "shipped"), [("mlp", 13, 13), ("mlp", 17, 17), ("cnn", 13, 17)])
def test_bundle_converts_a_newer_opset_down_to_the_export_targets_where_onnx_can(
        graph: str, opset: int, shipped: int, digits: OnnxCase, tmp_path: Path) -> None:
    """The target's opset is the operator set the app's runtime is built for: a file of a newer opset is shipped
    converted down to it (checked against the file), one of that opset or older as it is, and one the converter
    cannot take down (the CNN's Relu has no adapter from opset 14 to 13) as it is, with a note."""
    import onnx
    import yaml

    from edgekd.catalog import find

    target = yaml.safe_load(find("exporters", "ort-mobile").read_text())
    (tmp_path / "old-runtime.yaml").write_text(yaml.safe_dump({**target, "name": "old-runtime", "opset": opset}))
    model = _mlp_graph(tmp_path / "mlp.onnx") if graph == "mlp" else digits.path
    assert onnx.load(str(model)).opset_import[0].version == 17
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "b", "--runs", "10", "--warmup", "0",
                  "--target", tmp_path / "old-runtime.yaml")
    assert outcome.exit_code == 0, outcome.output
    record = json.loads((tmp_path / "b" / "bundle.json").read_text())
    manifest = json.loads((tmp_path / "b" / "bundle" / "manifest.json").read_text())
    in_file = onnx.load(str(tmp_path / "b" / "bundle" / "model.onnx")).opset_import
    assert manifest["model"]["opset"] == shipped == next(entry.version for entry in in_file if entry.domain == "")
    assert record.get("converted_from_opset") == (17 if shipped < 17 else None)
    if shipped == opset:
        assert "notes" not in record
    else:
        (note,) = record["notes"]
        assert note.startswith("shipped at its own opset 17, newer than the export target's 13 ('old-runtime'), "
                               "which an app runtime built for opset 13 cannot load: ONNX's version converter cannot "
                               "take it down (") and "Relu" in note and note.endswith("for such a runtime")
        assert "warning: shipped at its own opset 17" in outcome.output
    x = digits.inputs["input"][:50]
    assert np.allclose(_predict(tmp_path / "b" / "bundle" / "model.ort", {"input": x}), _predict(model, {"input": x}),
                       atol=1e-4)


def test_bundle_refuses_a_text_length_other_than_the_graph_fixes(tmp_path: Path) -> None:
    """The README's code pads or truncates to ``max_length``: a graph fixed at 16 tokens cannot take 32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["vectors", "input_ids"], ["embedded"]),
         helper.make_node("ReduceMean", ["embedded"], ["pooled"], axes=[1], keepdims=0),
         helper.make_node("MatMul", ["pooled", "w"], ["logits"])],
        "fixed", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", 16])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(rng.normal(size=(30, 4)).astype(np.float32), "vectors"),
         numpy_helper.from_array(rng.normal(size=(4, 2)).astype(np.float32), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "fixed.onnx")
    pre = tmp_path / "pre.yaml"
    pre.write_text("kind: text\nmax_length: 32\npad_id: 0\n")
    outcome = cli("bundle", tmp_path / "fixed.onnx", "-d", "host-cpu", "-o", tmp_path / "a", "--preprocessing", pre)
    assert_user_error(outcome, "pre.yaml: max_length 32, but", "fixed.onnx's input 'input_ids' fixes 16 tokens: "
                      "expected max_length 16")
    pre.write_text("kind: text\nmax_length: 16\npad_id: 0\n")
    assert read_preprocessing(pre, tmp_path / "fixed.onnx")["max_length"] == 16


@pytest.mark.parametrize("command", ["quantize", "bundle"])
@pytest.mark.parametrize(("make_out", "fragments"), [
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt", ("file.txt", "is a file")),
    (lambda tmp: (tmp / "file.txt").write_text("x") and tmp / "file.txt" / "out", ("file.txt", "cannot write")),
    (lambda tmp: (tmp / "mine").mkdir() or (tmp / "mine" / "thesis.tex").write_text("x") and tmp / "mine",
     ("mine", "not empty", "thesis.tex")),
], ids=["file", "below-a-file", "foreign-dir"])
def test_unusable_out_directories_are_refused(command: str, make_out: Callable[[Path], Path],
                                              fragments: tuple[str, ...], digits: OnnxCase, tmp_path: Path) -> None:
    out = make_out(tmp_path)
    assert_user_error(cli(command, digits.path, "-d", "host-cpu", "-o", out, "--runs", "10"), *fragments)
    assert (tmp_path / "mine").exists() is False or (tmp_path / "mine" / "thesis.tex").read_text() == "x"


# ---------------------------------------------------------------- ONNX files with external data


def test_every_verb_writes_a_standalone_copy_of_a_model_with_external_data(digits: OnnxCase, tmp_path: Path) -> None:
    """A user's model whose weights sit in an external data file: every ONNX file the verbs write must run on its
    own, moved away from the source folder, and predict what the source does."""
    import onnx

    source = tmp_path / "src" / "ext.onnx"
    source.parent.mkdir()
    onnx.save_model(onnx.load(str(digits.path)), str(source), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="ext.weights", size_threshold=0)
    assert {t.data_location for t in onnx.load(str(source), load_external_data=False).graph.initializer} == {
        onnx.TensorProto.EXTERNAL}
    commands = {"quantize": ("quantize", source, "-d", "host-cpu", "-o", tmp_path / "q", "--mode", "dynamic", *FAST),
                "bundle": ("bundle", source, "-d", "host-cpu", "-o", tmp_path / "b", "--target", "onnx-fp32",
                           "--runs", "10"),
                "bundle-ort": ("bundle", source, "-d", "host-cpu", "-o", tmp_path / "bo", "--runs", "10"),
                "export": ("export", source, "-d", "host-cpu", "-o", tmp_path / "e", "--runs", "10")}
    for name, args in commands.items():
        outcome = cli(*args)
        assert outcome.exit_code == 0, (name, outcome.output)
    written = [*(tmp_path / "q").glob("*.onnx"), tmp_path / "b" / "bundle" / "model.onnx",
               tmp_path / "bo" / "bundle" / "model.onnx", tmp_path / "e" / "ext.onnx"]
    moved = tmp_path / "moved"
    moved.mkdir()
    x = {k: v[:5] for k, v in digits.inputs.items()}
    expected = _predict(source, x)
    for i, path in enumerate(written):
        alone = moved / f"{i}.onnx"
        alone.write_bytes(path.read_bytes())
        np.testing.assert_allclose(_predict(alone, x), expected, atol=0.05, err_msg=str(path))


# ---------------------------------------------------------------- unusual graph signatures


def _graph_file(path: Path, inputs: list[Any], nodes: list[Any], outputs: list[Any]) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs)
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graphs_of_scalar_or_unranked_inputs_bundle_and_a_graph_without_inputs_is_refused(tmp_path: Path) -> None:
    """A scalar or unranked input made the .ort parity check count rows on an axis there is none of (IndexError),
    and a graph without inputs crashed the bundle README (StopIteration, IndexError): 'internal error', exit 1."""
    from onnx import TensorProto, helper, numpy_helper

    scalar = _graph_file(tmp_path / "scalar.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [])],
                         [helper.make_node("Relu", ["x"], ["y"])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    unranked = _graph_file(tmp_path / "unranked.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                           [helper.make_node("Relu", ["x"], ["y"])],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    for model in (scalar, unranked):
        outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / model.stem, "--runs", "10")
        assert outcome.exit_code == 0, outcome.output
        assert (tmp_path / model.stem / "bundle" / "model.ort").is_file()
    constant = _graph_file(tmp_path / "constant.onnx", [], [helper.make_node(
        "Constant", [], ["y"], value=numpy_helper.from_array(np.ones(3, np.float32)))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    for command in ("bundle", "quantize", "export"):
        assert_user_error(cli(command, constant, "-d", "host-cpu", "-o", tmp_path / command),
                          "constant.onnx: the graph has no inputs", f"edgekd {command} needs a model")


def test_quantize_names_the_user_s_file_when_onnxruntime_cannot_load_it(tmp_path: Path) -> None:
    """A node reading a tensor nothing produces: the error named a scratch copy that no longer exists
    ('q/.quantize-….tmp/broken.preprocessed.onnx: dynamic INT8 quantization failed')."""
    from onnx import TensorProto, helper

    broken = _graph_file(tmp_path / "broken.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
                         [helper.make_node("Relu", ["nowhere"], ["y"])],
                         [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    outcome = cli("quantize", broken, "-d", "host-cpu", "-o", tmp_path / "q")
    assert_user_error(outcome, f"{broken}: onnxruntime cannot load the model", "nowhere")
    assert ".tmp" not in outcome.output


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_the_same_command_runs_again_after_it_was_killed(command: str, digits: OnnxCase, tmp_path: Path) -> None:
    """A SIGKILL leaves the lock file and the command's scratch directory in --out; running the same command again
    was refused ('not empty and not an edgekd run directory (it holds '.quantize-….tmp')')."""
    out = tmp_path / "out"
    scratch = out / f".{command}-k1ll3d.tmp"  # as tempfile names them, with a half-written candidate inside
    scratch.mkdir(parents=True)
    (scratch / "digits.preprocessed.onnx").write_bytes(b"half")
    (out / ".edgekd.lock").write_text("pid 1 on host since then\n")
    (out / ".bundle.zip.x7.tmp").write_bytes(b"half a zip")
    timing = FAST if command == "quantize" else ("--runs", "10")
    outcome = cli(command, digits.path, "-d", "host-cpu", "-o", out, *timing)
    assert outcome.exit_code == 0, outcome.output
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    foreign = tmp_path / "foreign"  # without edgekd's lock file, a hidden .tmp is the user's: refused, kept
    foreign.mkdir()
    (foreign / ".notes.tmp").write_text("mine")
    assert_user_error(cli(command, digits.path, "-d", "host-cpu", "-o", foreign, *timing), "not empty", ".notes.tmp")
    assert (foreign / ".notes.tmp").read_text() == "mine"


def _scikit_learn_style(path: Path, digits: OnnxCase, *, zipmap: bool) -> Path:
    """The digits model as scikit-learn-onnx lays a classifier out: the int64 label first, then the probabilities
    (a float tensor, or with ``zipmap`` a sequence of {class: probability} maps)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(digits.path))
    graph = model.graph
    logits = graph.output[0].name
    nodes = [helper.make_node("Softmax", [logits], ["probability_tensor"], axis=-1),
             helper.make_node("ArgMax", ["probability_tensor"], ["label"], axis=-1, keepdims=0)]
    outputs = [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])]
    if zipmap:
        nodes.append(helper.make_node("ZipMap", ["probability_tensor"], ["probabilities"], domain="ai.onnx.ml",
                                      classlabels_int64s=list(range(digits.classes))))
        outputs.append(helper.make_value_info("probabilities", helper.make_sequence_type_proto(
            helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))))
    else:
        outputs.append(helper.make_tensor_value_info("probability_tensor", TensorProto.FLOAT,
                                                     ["batch", digits.classes]))
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.extend(outputs)
    model.opset_import.append(helper.make_opsetid("ai.onnx.ml", 1))
    onnx.save(model, str(path))
    return path


def test_a_graph_answering_with_its_label_first_is_scored_on_its_probabilities(digits: OnnxCase,
                                                                                tmp_path: Path) -> None:
    """quantize --eval scored the first output, the int64 label of shape [batch], as logits: its arg-max over the
    last axis was one number for the whole batch, and the accuracy recorded (exit 0) was the share of examples of
    that class. The bundle's manifest and README called the label output logits to softmax."""
    model = _scikit_learn_style(tmp_path / "sklearn-style.onnx", digits, zipmap=False)
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True, start=100, stop=300)
    outcome = cli("quantize", model, "-d", "host-cpu", "--eval", evaluation, "--runs", "10", "--rounds", "1",
                  "-o", tmp_path / "q", "--json")
    assert outcome.exit_code == 0, outcome.output
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    labels, _ = session.run(None, {k: v[100:300] for k, v in digits.inputs.items()})
    accuracy = float((labels == digits.labels[100:300]).mean())
    assert accuracy > 0.5  # a trained model: far from any one class's share of the examples
    assert json.loads(outcome.output)["variants"]["fp32"]["accuracy"] == pytest.approx(accuracy)

    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app", "--runs", "10")
    assert outcome.exit_code == 0, outcome.output
    manifest = json.loads((tmp_path / "app" / "bundle" / "manifest.json").read_text())
    assert manifest["postprocessing"]["output"] == "probability_tensor"
    readme = (tmp_path / "app" / "bundle" / "README.md").read_text()
    assert "- Output `label`: int64 [batch]\n" in readme
    assert f"- Output `probability_tensor`: float32 [batch, {digits.classes}]: probabilities" in readme
    assert 'logits = session.run(["probability_tensor"], {"input": x})[0]' in readme  # the examples read it too
    assert 'session.run(mapOf("input" to tensor), setOf("probability_tensor"))' in readme


def test_a_graph_returning_a_sequence_of_maps_bundles_and_is_not_scored(digits: OnnxCase, tmp_path: Path) -> None:
    """scikit-learn-onnx's ZipMap output (a sequence of {class: probability} maps): reading its type crashed the
    manifest (KeyError: 0) and comparing it with the .ort's crashed the parity check (TypeError on dicts), both
    'internal error'; with only an int64 label besides it, quantize --eval has nothing to score and says so."""
    model = _scikit_learn_style(tmp_path / "zipmap.onnx", digits, zipmap=True)
    outcome = cli("bundle", model, "-d", "host-cpu", "-o", tmp_path / "app", "--runs", "10", "--json")
    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.output)["parity"]["passed"]
    manifest = json.loads((tmp_path / "app" / "bundle" / "manifest.json").read_text())
    assert [(t["name"], t["dtype"]) for t in manifest["outputs"]] == [
        ("label", "int64"), ("probabilities", "sequence(map(int64, float32))")]
    outcome = cli("export", model, "-d", "host-cpu", "-o", tmp_path / "ort")
    assert outcome.exit_code == 0, outcome.output
    evaluation = digits.save_npz(tmp_path / "eval.npz", labelled=True, start=0, stop=64)
    assert_user_error(cli("quantize", model, "-d", "host-cpu", "--eval", evaluation, "-o", tmp_path / "q"),
                      "zipmap.onnx: no output is a floating-point tensor", "'label' (int64)",
                      "'probabilities' (sequence(map(int64, float32)))")


def test_an_opset_11_graph_is_quantized_static_int8(digits: OnnxCase, tmp_path: Path) -> None:
    """On an opset-11 graph onnxruntime's static quantizer wrote per-channel DequantizeLinear nodes with an ``axis``
    (an opset-13 attribute): a model it could not load, and the whole command failed naming a scratch file."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10)).eval()
    model = tmp_path / "opset11.onnx"
    torch.onnx.export(net, (torch.zeros(2, 1, 8, 8),), str(model), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}}, opset_version=11, dynamo=False)
    outcome = cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q", "--runs", "10", "--rounds", "1",
                  "--calibration", digits.save_npz(tmp_path / "calib.npz", labelled=False, stop=128),
                  "--eval", digits.save_npz(tmp_path / "eval.npz", labelled=True, start=128), "--json")
    assert outcome.exit_code == 0, outcome.output
    variants = json.loads(outcome.output)["variants"]
    assert variants["int8-static-minmax"]["agreement"] > 0.9  # a working INT8 model, scored on the eval file


def test_a_graph_input_named_like_the_labels_array(tmp_path: Path) -> None:
    """A graph input named 'y' was dropped from every calibration batch as if it were the labels ('Required inputs
    (['y']) are missing', naming a scratch file); it calibrates now, and an evaluation file, which cannot hold it
    and the labels under one name, is refused saying so."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name)
               for name, shape in (("wx", (6, 3)), ("wy", (4, 3)))]
    model = tmp_path / "two-inputs.onnx"
    _graph_file(model, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 6]),
                        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                [helper.make_node("MatMul", ["x", "wx"], ["px"]), helper.make_node("MatMul", ["y", "wy"], ["py"]),
                 helper.make_node("Add", ["px", "py"], ["logits"])],
                [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])])
    import onnx
    proto = onnx.load(str(model))
    proto.graph.initializer.extend(weights)
    onnx.save(proto, str(model))
    arrays = {"x": rng.normal(size=(64, 6)).astype(np.float32), "y": rng.normal(size=(64, 4)).astype(np.float32)}
    np.savez(tmp_path / "calib.npz", **arrays)
    outcome = cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q", "--runs", "10", "--rounds", "1",
                  "--calibration", tmp_path / "calib.npz", "--json")
    assert outcome.exit_code == 0, outcome.output
    assert "int8-static-minmax" in json.loads(outcome.output)["variants"]
    np.savez(tmp_path / "eval.npz", **arrays)
    assert_user_error(cli("quantize", model, "-d", "host-cpu", "-o", tmp_path / "q2", "--eval", tmp_path / "eval.npz"),
                      "eval.npz: ", "has a graph input named 'y', the name an evaluation file gives its labels")
