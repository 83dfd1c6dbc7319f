"""Profiling: CPU detection, input feeds, timing in a worker, corrupt files, budgets, speed ratios."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.config.device import Budget, InputShape, ReferenceFigure, load_device
from edgekd.errors import ConfigError, ModelError
from edgekd.profile import references
from edgekd.profile import speed_ratio as sr
from edgekd.profile.bench import paired_speedup
from edgekd.profile.budget import judge
from edgekd.profile.cpu import KNOWN_ISA, detect_cpu, device_isa, host_threads, normalize_isa, resolve_threads
from edgekd.profile.inputs import TOKEN_ID_HIGH, InputSpec, make_feeds, resolve_shape
from edgekd.profile.runner import ProfileResult, profile_onnx, summarize_timings
from edgekd.profile.timing import MIB, HostTiming

# --------------------------------------------------------------------------- tiny models


def _save(path: Path, nodes: list, inputs: list, outputs: list, initializers: list | None = None) -> Path:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializers or [])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def mlp_model(path: Path, width: int = 64) -> Path:
    """x[batch, width] → MatMul → Relu."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((width, width), dtype=np.float32), "W")
    return _save(
        path,
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [weight],
    )


def text_model(path: Path) -> Path:
    """input_ids / attention_mask / token_type_ids [batch, sequence] → embedding lookup and casts."""
    table = numpy_helper.from_array(np.zeros((TOKEN_ID_HIGH, 8), dtype=np.float32), "E")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    return _save(
        path,
        [helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
         helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
         helper.make_node("Cast", ["token_type_ids"], ["types"], to=TensorProto.FLOAT)],
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "sequence"]) for n in names],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("mask", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("types", TensorProto.FLOAT, None)],
        [table],
    )


def image_model(path: Path, dims: list) -> Path:
    """pixel_values[dims] → GlobalAveragePool."""
    return _save(
        path,
        [helper.make_node("GlobalAveragePool", ["pixel_values"], ["pooled"])],
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, None)],
    )


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mlp_model(tmp_path_factory.mktemp("models") / "mlp.onnx")


@pytest.fixture(scope="module")
def host_result(mlp: Path) -> ProfileResult:
    return profile_onnx(mlp, load_device("host-cpu"), warmup=5, runs=60)


# --------------------------------------------------------------------------- CPU


def test_detect_cpu_is_sane_and_cached() -> None:
    cpu = detect_cpu()
    assert cpu.brand.strip()
    assert cpu.arch
    assert cpu.logical_cores >= cpu.physical_cores >= 1
    assert set(cpu.isa) <= set(KNOWN_ISA)
    assert list(cpu.isa) == [name for name in KNOWN_ISA if name in cpu.isa]  # canonical order
    assert detect_cpu() is cpu
    assert json.loads(json.dumps(cpu.to_json()))["isa"] == list(cpu.isa)


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64" or not Path("/proc/cpuinfo").is_file(),
    reason="compares with the x86 flags in /proc/cpuinfo",
)
def test_detect_cpu_agrees_with_proc_cpuinfo() -> None:
    flags_line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    proc = set(normalize_isa(flags_line.split(":", 1)[1].split()))
    detected = set(detect_cpu().isa)
    for name in ("avx", "avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile"):
        assert (name in detected) == (name in proc), name


def test_normalize_isa_spellings() -> None:
    assert normalize_isa(["AVX512VNNI", "avxvnni", "amx_int8", "sse2", "asimddp"])[:3] == (
        "avx512_vnni", "avx_vnni", "amx_int8")
    assert "dotprod" in normalize_isa(["asimd", "asimddp"])
    assert "neon" in normalize_isa(["asimd"])


def test_threads_and_isa_from_device_profiles() -> None:
    cpu = detect_cpu()
    assert resolve_threads(load_device("host-cpu")) == cpu.physical_cores
    assert resolve_threads(load_device("x86-server-1core")) == 1
    assert resolve_threads(load_device("android-midrange-cpu")) == 4
    assert device_isa(load_device("host-cpu")) == list(cpu.isa)
    assert device_isa(load_device("android-midrange-cpu")) == ["neon", "dotprod"]
    assert host_threads(0) == 1


def test_threads_beyond_this_machines_cores_are_capped_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    cores = detect_cpu().physical_cores
    with caplog.at_level("INFO", logger="edgekd.profile.cpu"):
        assert host_threads(10_000) == host_threads(10_000) == cores
        assert host_threads(cores) == cores
    said = [r.getMessage() for r in caplog.records if "physical cores" in r.getMessage()]
    assert said == [f"the device's 10000 threads are more than this machine's {cores} physical cores: timing "
                    f"with {cores} (the records show the count used)"], said


# --------------------------------------------------------------------------- feeds


def test_feeds_fill_dynamic_text_axes(tmp_path: Path) -> None:
    path = text_model(tmp_path / "text.onnx")
    feeds = make_feeds(path, InputShape(batch=2, sequence_length=16), seed=3)
    assert {k: v.shape for k, v in feeds.items()} == {
        "input_ids": (2, 16), "attention_mask": (2, 16), "token_type_ids": (2, 16)}
    assert feeds["input_ids"].dtype == np.int64
    assert feeds["input_ids"].min() >= 0 and feeds["input_ids"].max() < TOKEN_ID_HIGH
    assert (feeds["attention_mask"] == 1).all() and (feeds["token_type_ids"] == 0).all()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    from_session = make_feeds(session, InputShape(batch=2, sequence_length=16), seed=3)
    assert all(np.array_equal(feeds[k], from_session[k]) for k in feeds)
    session.run(None, feeds)  # ids are valid for a 32-entry vocabulary


def small_vocabulary_model(path: Path, rows: int = 20, ids_type: int = TensorProto.INT32) -> Path:
    """int32 (or ``ids_type``) ids → Cast → Gather on a dequantized ``rows``-row table (a character model's
    embedding)."""
    table = numpy_helper.from_array(np.zeros((rows, 4), dtype=np.uint8), "Q")
    scale = numpy_helper.from_array(np.array(0.1, dtype=np.float32), "scale")
    return _save(
        path,
        [helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.INT64),
         helper.make_node("DequantizeLinear", ["Q", "scale"], ["E"]),
         helper.make_node("Gather", ["E", "ids"], ["emb"])],
        [helper.make_tensor_value_info("input_ids", ids_type, ["batch", "sequence"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)],
        [table, scale],
    )


def test_token_ids_stay_inside_a_small_vocabulary(tmp_path: Path) -> None:
    """A 20-symbol model is fed ids below 20 (not the default 32, which onnxruntime refuses as out of bounds),
    from the file, from a session given the file's limits, and in the profiling worker."""
    from edgekd.profile.inputs import token_id_limits

    path = small_vocabulary_model(tmp_path / "chars.onnx")
    assert token_id_limits(path) == {"input_ids": 20}
    assert token_id_limits(text_model(tmp_path / "text.onnx")) == {"input_ids": TOKEN_ID_HIGH}
    shape = InputShape(batch=4, sequence_length=64)
    feeds = make_feeds(path, shape)
    assert feeds["input_ids"].max() < 20 and feeds["input_ids"].dtype == np.int32
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    session.run(None, feeds)
    assert np.array_equal(make_feeds(session, shape, limits=token_id_limits(path))["input_ids"], feeds["input_ids"])
    timed = profile_onnx(path, load_device("host-cpu"), warmup=1, runs=3)
    assert timed.input_shapes == {"input_ids": [1, 128]}


@pytest.mark.parametrize(("rows", "limits"), [(20, {"input_ids": 20}), (1, {"input_ids": 1}), (40, {})])
def test_token_ids_of_an_ort_file_stay_inside_its_table(tmp_path: Path, rows: int, limits: dict[str, int]) -> None:
    """An ``.ort`` file's tables cannot be read: its id ceiling is found by running it, so a 20-symbol model converted
    to ORT format is timed (ids below 32 failed with 'indices element out of data bounds', and read as too long a
    row); a table of 32 rows or more keeps the default ceiling."""
    from edgekd.export.config import load_export_target
    from edgekd.export.ort_format import export_file
    from edgekd.profile.inputs import token_id_limits

    onnx_path = small_vocabulary_model(tmp_path / "chars.onnx", rows=rows)
    ort_path = export_file(onnx_path, load_export_target("ort-mobile"), tmp_path / "ort").path
    assert token_id_limits(ort_path) == limits
    session = ort.InferenceSession(str(ort_path), providers=["CPUExecutionProvider"])
    feeds = make_feeds(session, InputShape(batch=2, sequence_length=64), limits=token_id_limits(ort_path))
    assert feeds["input_ids"].max() < min(rows, TOKEN_ID_HIGH)
    timed = profile_onnx(ort_path, load_device("host-cpu"), warmup=1, runs=3)
    assert timed.input_shapes == {"input_ids": [1, 128]}


def test_byte_ids_of_a_table_stay_inside_it(tmp_path: Path) -> None:
    """uint8 inputs are fed any byte (an image's pixels) unless they index a table: byte ids of a 20-symbol
    model stay below 20."""
    path = small_vocabulary_model(tmp_path / "bytes.onnx", ids_type=TensorProto.UINT8)
    feeds = make_feeds(path, InputShape(batch=4, sequence_length=64))
    assert feeds["input_ids"].dtype == np.uint8 and feeds["input_ids"].max() < 20
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def fused_embedding_model(path: Path, words: int = 20, positions: int = 64) -> Path:
    """onnxruntime's fused BERT embedding (EmbedLayerNormalization, com.microsoft) of a ``words``-symbol
    vocabulary, two segments and ``positions`` positions: its ids reach no Gather."""
    rng = np.random.default_rng(0)
    tables = [numpy_helper.from_array(rng.standard_normal((rows, 8)).astype(np.float32), name)
              for name, rows in (("word", words), ("position", positions), ("segment", 2))]
    norms = [numpy_helper.from_array(np.full(8, value, dtype=np.float32), name)
             for name, value in (("gamma", 1.0), ("beta", 0.0))]
    node = helper.make_node("EmbedLayerNormalization", ["input_ids", "token_type_ids", "word", "position", "segment",
                                                       "gamma", "beta"], ["emb", "mask_index"], domain="com.microsoft")
    ids = [helper.make_tensor_value_info(name, TensorProto.INT32, ["batch", "sequence"])
           for name in ("input_ids", "token_type_ids")]
    graph = helper.make_graph([node], "g", ids, [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)],
                              tables + norms)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_token_ids_of_a_fused_embedding_stay_inside_its_tables(tmp_path: Path) -> None:
    """A fused graph's EmbedLayerNormalization reads the word and segment tables at its ids: a 20-symbol model is
    fed ids below 20 and onnxruntime runs it (ids below 32 were out of its table)."""
    from edgekd.profile.inputs import token_id_limits

    path = fused_embedding_model(tmp_path / "fused.onnx")
    assert token_id_limits(path) == {"input_ids": 20, "token_type_ids": 2}
    feeds = make_feeds(path, InputShape(batch=4, sequence_length=64))
    assert feeds["input_ids"].max() < 20
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def position_model(path: Path, positions: int, axis: int) -> Path:
    """position_ids → Gather on a table of ``positions`` rows along ``axis`` (0: [positions, 4]; 1: [4, positions])."""
    shape = (positions, 4) if axis == 0 else (4, positions)
    table = numpy_helper.from_array(np.zeros(shape, dtype=np.float32), "P")
    return _save(
        path,
        [helper.make_node("Gather", ["P", "position_ids"], ["emb"], axis=axis)],
        [helper.make_tensor_value_info("position_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("emb", TensorProto.FLOAT, None)],
        [table],
    )


@pytest.mark.parametrize("axis", [0, 1])
def test_position_ids_longer_than_their_table_are_refused_in_one_line(axis: int, tmp_path: Path) -> None:
    """Position ids count up to the sequence length: a 64-position table (rows read along the Gather's axis) runs at
    64 tokens, and 128 is refused naming the input, the table and the key, not onnxruntime's 'out of bounds'."""
    from edgekd.profile.inputs import token_id_limits

    path = position_model(tmp_path / "positions.onnx", 64, axis)
    assert token_id_limits(path) == {"position_ids": 64}
    feeds = make_feeds(path, InputShape(sequence_length=64))
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)
    with pytest.raises(ModelError) as info:
        make_feeds(path, InputShape(sequence_length=128))
    assert str(info.value) == (f"{path}: input 'position_ids' indexes a table of 64 positions but is fed 128 (the "
                               "sequence length); profile it with a device whose inputs.sequence_length is at most 64")


def test_token_id_limits_of_a_file_onnx_cannot_parse_are_empty(tmp_path: Path) -> None:
    from edgekd.profile.inputs import token_id_limits

    (tmp_path / "model.ort").write_bytes(b"not a protobuf")
    assert token_id_limits(tmp_path / "model.ort") == {}


def test_feeds_default_profile_shape(tmp_path: Path) -> None:
    feeds = make_feeds(text_model(tmp_path / "text.onnx"), load_device("host-cpu").inputs)
    assert feeds["input_ids"].shape == (1, 128)


def test_feeds_image_sizes(tmp_path: Path) -> None:
    dynamic = image_model(tmp_path / "dyn.onnx", ["N", 3, "height", "width"])
    assert make_feeds(dynamic, InputShape(image_size=64))["pixel_values"].shape == (1, 3, 64, 64)
    with pytest.raises(ModelError, match="sets inputs.image_size") as info:
        make_feeds(dynamic, InputShape())
    assert str(info.value).startswith(f"{dynamic}: input 'pixel_values'")  # the file is named
    static = image_model(tmp_path / "static.onnx", [1, 3, 32, 32])
    feeds = make_feeds(static, InputShape())
    assert feeds["pixel_values"].shape == (1, 3, 32, 32) and feeds["pixel_values"].dtype == np.float32


def test_static_image_size_mismatch_names_input_shape_and_size(tmp_path: Path) -> None:
    static = image_model(tmp_path / "static.onnx", [1, 3, 32, 32])
    with pytest.raises(ModelError) as info:
        make_feeds(static, InputShape(image_size=64))
    message = str(info.value)
    assert "'pixel_values'" in message and "[1, 3, 32, 32]" in message and "image_size=64" in message
    assert "\n" not in message


def test_resolve_shape_rules() -> None:
    shape = InputShape(batch=4, sequence_length=10, image_size=96)
    assert resolve_shape(InputSpec("x", ("s0", "s1"), "int64"), shape) == (4, 10)
    assert resolve_shape(InputSpec("x", (1, "seq_len"), "int64"), shape) == (1, 10)
    assert resolve_shape(InputSpec("img", ("batch", "h", "w", 3), "float"), shape) == (4, 96, 96, 3)
    # a 2-D or 3-D input's next dynamic dim is its length: [batch, channels, time], [batch, time, features]
    assert resolve_shape(InputSpec("frames", ("batch", 5, "mystery"), "float"), shape) == (4, 5, 10)
    assert resolve_shape(InputSpec("frames", ("b", "t", 12), "float"), shape) == (4, 10, 12)
    with pytest.raises(ModelError, match="axis 2"):  # only one length: the features' width is not guessed
        resolve_shape(InputSpec("x", ("batch", "t", "f"), "float"), shape)
    with pytest.raises(ModelError, match="axis 1"):
        resolve_shape(InputSpec("x", ("batch", "d", 3, 3, 3), "float"), shape)


def test_unsupported_input_type_is_a_model_error(tmp_path: Path) -> None:
    path = _save(tmp_path / "str.onnx", [helper.make_node("Identity", ["s"], ["t"])],
                 [helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])],
                 [helper.make_tensor_value_info("t", TensorProto.STRING, ["batch"])])
    with pytest.raises(ModelError, match="input 's' has unsupported type string"):
        make_feeds(path, InputShape())


# --------------------------------------------------------------------------- profiling


def test_profile_reports_ordered_percentiles_and_file_size(mlp: Path, host_result: ProfileResult) -> None:
    r = host_result
    assert 0 < r.min_ms <= r.p50_ms <= r.p90_ms <= r.p99_ms
    assert r.min_ms <= r.mean_ms
    assert r.size_mb == pytest.approx(mlp.stat().st_size / MIB)
    assert r.peak_memory_mb >= 0
    assert r.estimate is False and r.speed_ratio is None and r.reference is None
    assert (r.host_p50_ms, r.host_p90_ms) == (r.p50_ms, r.p90_ms)
    assert r.input_shapes == {"x": [1, 64]}
    assert (r.runs, r.warmup, r.threads) == (60, 5, detect_cpu().physical_cores)
    assert r.cpu.brand == detect_cpu().brand and r.onnxruntime == ort.__version__
    assert json.loads(json.dumps(r.to_json()))["p90_ms"] == r.p90_ms


def test_profile_with_progress_bar(mlp: Path) -> None:
    result = profile_onnx(mlp, load_device("x86-server-1core"), warmup=2, runs=10, show_progress=True)
    assert result.threads == 1 and result.runs == 10


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not an onnx model\n", bytes(range(256)) * 8],
    ids=["empty", "text", "binary-garbage"],
)
def test_corrupt_file_is_one_line_model_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelError) as info:
        profile_onnx(path, load_device("host-cpu"), warmup=1, runs=2)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_model_is_model_error(tmp_path: Path) -> None:
    full = mlp_model(tmp_path / "full.onnx", width=256).read_bytes()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(ModelError, match="truncated.onnx") as info:
        profile_onnx(path, load_device("host-cpu"), warmup=1, runs=2)
    assert "\n" not in str(info.value)


def test_model_onnxruntime_cannot_load_is_model_error(tmp_path: Path) -> None:
    path = _save(tmp_path / "unknown_op.onnx", [helper.make_node("NoSuchOperator", ["x"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(ModelError, match="onnxruntime cannot load it") as info:
        profile_onnx(path, load_device("host-cpu"), warmup=1, runs=2)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_is_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not found"):
        profile_onnx(tmp_path / "nope.onnx", load_device("host-cpu"))


# --------------------------------------------------------------------------- budget


def test_budget_pass_and_fail(host_result: ProfileResult) -> None:
    fits = host_result.model_copy(update={"p90_ms": 10.0, "size_mb": 5.0, "peak_memory_mb": 100.0})
    verdict = judge(fits, Budget(p90_ms=10.0, size_mb=50, peak_memory_mb=500))
    assert verdict.verdict == "pass" and verdict.passed and not verdict.estimate
    assert [c.name for c in verdict.checks] == ["p90_latency", "model_size", "peak_memory"]
    assert verdict.to_json()["limits"] == {"p90_ms": 10.0, "size_mb": 50.0, "peak_memory_mb": 500.0,
                                           "ms_per_token": None}
    assert set(verdict.to_json()) == {"verdict", "checks", "limits", "estimate"}  # judged only when a stage names it

    too_big = fits.model_copy(update={"size_mb": 60.0, "estimate": True})
    verdict = judge(too_big, Budget(p90_ms=10.0, size_mb=50, peak_memory_mb=500))
    assert verdict.verdict == "fail" and verdict.estimate
    failed = [c.model_dump() for c in verdict.checks if not c.passed]
    assert failed == [{"name": "model_size", "value": 60.0, "limit": 50.0, "unit": "MB", "passed": False}]
    assert json.loads(json.dumps(verdict.to_json()))["verdict"] == "fail"


# --------------------------------------------------------------------------- speed ratio


def test_estimate_multiplies_host_latency_by_ratio(mlp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = load_device("android-midrange-cpu")
    calls: list[ReferenceFigure] = []

    def fake_ratio(reference: ReferenceFigure, threads: int | None = None) -> sr.SpeedRatio:
        calls.append(reference)
        return sr.SpeedRatio(ratio=10.0, host_ms=7.4, device_ms=74.0, reference_model=reference.model,
                             source=reference.source, threads=2, cpu={})

    monkeypatch.setattr("edgekd.profile.runner.speed_ratio", fake_ratio)
    r = profile_onnx(mlp, device, warmup=2, runs=20)
    assert calls == [device.reference]
    assert r.estimate is True and r.speed_ratio == 10.0 and r.reference == "mobilebert-seq128"
    assert r.p50_ms == pytest.approx(r.host_p50_ms * 10) and r.p90_ms == pytest.approx(r.host_p90_ms * 10)
    assert r.threads == host_threads(4)
    assert "Pixel 4" in (r.reference_source or "")


def test_host_time_is_measured_once_and_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    measured: list[tuple[str, int]] = []

    def fake_measure(model: references.ReferenceModel, threads: int) -> sr.HostTime:
        measured.append((model.key, threads))
        return sr.HostTime((5.0, 4.9, 5.2, 5.0, 5.1))

    monkeypatch.setattr(sr, "measure_host_time", fake_measure)
    figure = ReferenceFigure(model="bert-base-seq128", latency_ms=50.0, threads=4, source="a published table, row X")
    first = sr.speed_ratio(figure, threads=1)
    second = sr.speed_ratio(figure.model_copy(update={"latency_ms": 100.0}), threads=1)
    assert measured == [("bert-base-seq128", 1)]
    assert (first.ratio, second.ratio, second.host_ms) == (10.0, 20.0, 5.0)
    assert (first.cached, second.cached) == (False, True)
    records = list((tmp_path / "reference").glob("host-ms-bert-base-seq128-*.json"))
    assert len(records) == 1
    record = json.loads(records[0].read_text())
    assert record["cpu"] == detect_cpu().brand and record["onnxruntime"] == ort.__version__
    sr.speed_ratio(figure, threads=2)
    assert measured[-1] == ("bert-base-seq128", 2)


def test_every_reference_name_has_a_builder() -> None:
    names = ReferenceFigure.model_fields["model"].annotation.__args__
    assert set(names) == set(references.REFERENCE_MODELS)
    with pytest.raises(ConfigError, match="unknown reference model 'gpt-9'"):
        references.reference_model("gpt-9")


def test_real_speed_ratio_for_mobilenet_v2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds the INT8 MobileNetV2 reference, times it here and derives the Raspberry Pi 4 ratio."""
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path))
    reference = load_device("raspberry-pi-4").reference
    assert reference is not None
    ratio = sr.speed_ratio(reference)
    assert (tmp_path / "reference" / "mobilenet-v2-int8-224.onnx").is_file()
    assert ratio.host_ms > 0 and ratio.ratio == pytest.approx(26.4 / ratio.host_ms)
    assert ratio.threads == host_threads(4) and ratio.reference_model == "mobilenet-v2-int8-224"


def _timed(path: str, session_p50s: np.ndarray, noise_seed: int, noise: float = 0.01) -> ProfileResult:
    """A model's figures from sessions whose runs scatter by ``noise`` (relative) around the given medians."""
    rng = np.random.default_rng(noise_seed)
    timings = [HostTiming(times_ms=tuple(p50 * (1 + noise * rng.standard_normal(41))), input_shapes={},
                          peak_memory_mb=1.0, size_mb=1.0, threads=1, onnxruntime="test") for p50 in session_p50s]
    return summarize_timings(Path(path), load_device("host-cpu"), timings, warmup=0)


def test_paired_speedup_follows_the_rounds_not_the_machine_load() -> None:
    rng = np.random.default_rng(0)
    covered = 0
    for case in range(40):
        true, rounds = rng.uniform(0.8, 3.0), int(rng.integers(2, 7))
        drift = 1 + rng.uniform(0.0, 0.05) * rng.standard_normal(rounds)  # what the rounds cannot pair away
        quiet = paired_speedup(_timed("a.onnx", np.full(rounds, 10.0), case),
                               _timed("b.onnx", 10.0 / true * drift, case + 1000))
        load = rng.uniform(1.0, 4.0, rounds)  # the machine's load changes from round to round
        busy = paired_speedup(_timed("a.onnx", 10.0 * load, case),
                              _timed("b.onnx", 10.0 / true * drift * load, case + 1000))
        assert (busy.ratio, busy.low, busy.high) == pytest.approx((quiet.ratio, quiet.low, quiet.high), rel=1e-9)
        assert busy.rounds == rounds and busy.low <= busy.ratio <= busy.high
        covered += busy.low <= true <= busy.high
    assert covered >= 34, covered  # a 95% interval: about 38 of 40
    one = paired_speedup(_timed("a.onnx", np.array([10.0]), 0), _timed("b.onnx", np.array([5.0]), 1))
    assert one.low is None and not one.clears(1.0) and "no interval" in one.text()


def test_profile_stage_times_the_models_side_by_side_and_records_the_speedup_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edgekd
    from edgekd.profile import bench
    from tests.reliability import one_torch_thread, tiny_recipe, write_yaml

    # The machine gets 3× busier right after the first timing session. The fake worker's latency is the file
    # size in KB × the load, so the student's true speed-up over the teacher is the ratio of their file sizes.
    calls: list[Path] = []

    def fake_time_onnx(path: Path, shape: object, *, threads: int, warmup: int, runs: int, **_: object) -> HostTiming:
        calls.append(Path(path))
        size = Path(path).stat().st_size
        return HostTiming(times_ms=(size / 1000 * (1.0 if len(calls) == 1 else 3.0),) * runs, input_shapes={},
                          peak_memory_mb=1.0, size_mb=size / 2**20, threads=threads, onnxruntime="fake")

    monkeypatch.setattr(bench, "time_onnx", fake_time_onnx)
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(teacher_epochs=1, distill_epochs=1,
                                                              stages=("teacher", "distill", "export", "profile")))
    with one_torch_thread():
        result = edgekd.run(recipe, out=tmp_path / "run")
    metrics = result.stages[3].metrics
    sizes = {role: (tmp_path / "run" / "03-export" / f"{role}.onnx").stat().st_size for role in ("teacher", "student")}
    speedup = metrics["student"]["speedup"]["teacher"]
    assert speedup["rounds"] == 4 and len(calls) == 8 and calls[:2] != calls[2:4]  # A B, B A, ...
    assert speedup["low"] <= sizes["teacher"] / sizes["student"] <= speedup["high"]  # the load shows as spread
