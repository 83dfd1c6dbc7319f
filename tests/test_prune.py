"""Structured pruning, low-rank factorization and the hybrid schedule: physical shrinkage that reloads and exports."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

import edgekd
from edgekd.config.device import DeviceProfile
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.distill import teacher_cache
from edgekd.errors import ConfigError, StorageError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.specs import BertSpec, CNNSpec
from edgekd.models.task_model import TaskModel, build_task_model
from edgekd.pipeline import load_run_records
from edgekd.profile import bench, runner
from edgekd.profile.timing import HostTiming, time_onnx
from edgekd.prune import measure
from edgekd.prune import stage as prune_stage
from edgekd.prune.config import FactorizeConfig, HybridStage, PruneConfig
from edgekd.prune.landing import LANDING_ROUNDS, Size, landing_ratio, sizes_met
from edgekd.prune.lowrank import (
    factorize_layer,
    factorize_model,
    factorize_task_model,
    rank_for_energy,
    rank_for_params,
)
from edgekd.prune.record import CompressionRecord, read_compression_record
from edgekd.prune.structure import LowRankEmbedding, LowRankLinear, pruned_class
from edgekd.prune.structured import prune_step, record_structure

# --------------------------------------------------------------------------- factorization on known matrices


def _matrix(singular: list[float], out_dim: int = 24, in_dim: int = 16) -> torch.Tensor:
    """``U diag(singular) V^T`` with random orthonormal ``U``, ``V``."""
    generator = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(out_dim, len(singular), generator=generator, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_dim, len(singular), generator=generator, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(singular, dtype=torch.float64)) @ v.T


def test_rank_by_energy_and_eckart_young_error() -> None:
    singular = [10.0, 5.0, 2.0, 1.0, 0.5, 0.1]
    total = sum(s * s for s in singular)
    assert rank_for_energy(torch.tensor(singular), 0.5) == 1  # 100 / 130.26 = 0.77
    assert rank_for_energy(torch.tensor(singular), 0.95) == 2  # (100 + 25) / total = 0.96
    assert rank_for_energy(torch.tensor(singular), 0.99) == 3  # 129 / total = 0.990
    layer = nn.Linear(16, 24).double()
    with torch.no_grad():
        layer.weight.copy_(_matrix(singular))
    pair = factorize_layer(layer, 2)
    assert isinstance(pair, LowRankLinear) and pair.rank == 2
    error = torch.linalg.matrix_norm(pair[1].weight @ pair[0].weight - layer.weight).item()
    assert error == pytest.approx((total - 125.0) ** 0.5, rel=1e-6)  # sqrt of the dropped energy
    x = torch.randn(3, 16, dtype=torch.float64)
    assert torch.linalg.vector_norm(pair(x) - layer(x), dim=1).max() <= error * torch.linalg.vector_norm(x, dim=1).max()


def test_rank_by_param_ratio_and_layers_left_dense() -> None:
    assert rank_for_params((24, 16), 0.5) == 4  # 4 · (24 + 16) = 160 ≤ 0.5 · 384
    model = nn.Sequential(nn.Linear(16, 24), nn.ReLU(), nn.Linear(24, 24), nn.Linear(24, 3))
    with torch.no_grad():
        model[0].weight.copy_(_matrix([10.0, 5.0, 0.01], 24, 16))  # rank 2 holds ~all energy
        model[2].weight.copy_(_matrix([1.0] * 24, 24, 24))  # flat spectrum: rank too high to pay
    decisions = {d.name: d for d in factorize_model(model, FactorizeConfig(energy=0.99), skip=("3",))}
    assert decisions["0"].rank == 2 and isinstance(model[0], LowRankLinear)
    assert decisions["2"].rank is None and isinstance(model[2], nn.Linear)
    assert "3" not in decisions
    again = {d.name: d for d in factorize_model(model, FactorizeConfig(energy=0.5), skip=("3",))}
    assert again["0"].rank == 1 and model[0].rank == 1  # re-factorized from the pair's product


# --------------------------------------------------------------------------- BERT: prune, save, reload, export


def _tiny_bert() -> TaskModel:
    torch.manual_seed(0)
    signature = InputSignature("text", vocab_size=100, pad_id=0, max_length=32)
    return build_task_model(BertSpec(arch="bert", layers=2, hidden=32, heads=4, ffn=64), signature, ("neg", "pos"))


def _onnx_logits(path: Path, inputs: dict[str, torch.Tensor]) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: t.numpy() for name, t in inputs.items()})[0]


def test_pruned_bert_saves_reloads_with_from_pretrained_exports_and_runs(tmp_path: Path) -> None:
    model = _tiny_bert()
    inputs = model.example_inputs(batch=3, sequence=12)
    params = model.params
    prune_step(model, PruneConfig(targets=["heads", "ffn"], importance="l1"), 0.5, inputs)
    factorize_model(model.module, FactorizeConfig(energy=0.6), skip=("classifier",))
    record_structure(model)
    attention = model.module.bert.encoder.layer[0].attention.self
    assert (attention.num_attention_heads, attention.all_head_size, attention.query[1].out_features) == (2, 16, 16)
    assert model.module.bert.encoder.layer[0].intermediate.dense[1].out_features == 32
    assert model.params < 0.7 * params
    _assert_reloads_and_exports(model, inputs, tmp_path / "pruned")


@pytest.mark.parametrize(("heads", "ratio", "kept"), [(3, 0.5, 1), (3, 0.7, 1), (3, 0.9, 1), (4, 0.9, 1), (4, 0.25, 3),
                                                   (1, 0.9, 1)])
def test_heads_pruned_at_any_ratio_keep_one_head_per_layer(heads: int, ratio: float, kept: int,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Torch-Pruning removes ceil(ratio × heads) heads of a layer and skips a layer that would lose them all: at 0.7
    of 3 heads no head went at all. The ratio it is given leaves one; layers of one head say they stay whole."""
    torch.manual_seed(0)
    signature = InputSignature("text", vocab_size=100, pad_id=0, max_length=32)
    model = build_task_model(BertSpec(arch="bert", layers=2, hidden=heads * 8, heads=heads, ffn=32), signature,
                             ("neg", "pos"))
    with caplog.at_level("WARNING", logger="edgekd.prune.structured"):
        prune_step(model, PruneConfig(targets=["heads"], importance="l1"), ratio,
                   model.example_inputs(batch=2, sequence=8))
    assert [layer.attention.self.num_attention_heads for layer in model.module.bert.encoder.layer] == [kept, kept]
    assert ("down to one head, which stays: 'heads' removes nothing more (add 'ffn' to the targets to prune "
            "further)" in caplog.text) == (heads == 1)


def _assert_reloads_and_exports(model: TaskModel, inputs: dict[str, torch.Tensor], directory: Path) -> None:
    """``model`` saved to ``directory`` reloads with Hugging Face's loader and ``TaskModel.load`` to the same
    logits, and its ONNX export passes parity and gives them too."""
    expected = model.module(**inputs).logits
    model.save(directory)
    reloaded = pruned_class(BertForSequenceClassification).from_pretrained(directory).eval()
    torch.testing.assert_close(reloaded(**inputs).logits, expected)
    again = TaskModel.load(directory)
    torch.testing.assert_close(again.module(**inputs).logits, expected)
    onnx_path = directory.with_suffix(".onnx")
    result = export_onnx(again.module, inputs, onnx_path, load_export_target("onnx-fp32"),
                         extra_dynamic_axes=again.signature.dynamic_axes())
    assert result.parity.passed
    np.testing.assert_allclose(_onnx_logits(onnx_path, inputs), expected.detach().numpy(), atol=1e-4)


def test_factorized_embeddings_prune_save_reload_and_export(tmp_path: Path) -> None:
    model = _tiny_bert()
    inputs = model.example_inputs(batch=3, sequence=12)
    table = model.module.bert.embeddings.word_embeddings.weight.detach().double().clone()
    params = model.params
    decisions = factorize_model(model.module, FactorizeConfig(param_ratio=0.25, embeddings=True), skip=("classifier",))
    record_structure(model)
    words = model.module.bert.embeddings.word_embeddings
    rank = {d.name: d.rank for d in decisions}["bert.embeddings.word_embeddings"]
    assert isinstance(words, LowRankEmbedding) and words.rank == rank == 6  # ⌊0.25 · 100·32 / 132⌋
    assert words[0].padding_idx == 0
    singular = torch.linalg.svdvals(table)
    error = torch.linalg.matrix_norm(words[0].weight.double() @ words[1].weight.double().T - table).item()
    assert error == pytest.approx(singular[rank:].pow(2).sum().sqrt().item(), rel=1e-4)  # Eckart–Young
    prune_step(model, PruneConfig(targets=["heads", "ffn"], importance="l2"), 0.5, inputs)  # a later hybrid step
    assert model.params < 0.4 * params
    _assert_reloads_and_exports(model, inputs, tmp_path / "factorized")


def test_ffn_pruned_bert_needs_no_structure(tmp_path: Path) -> None:
    """Uniform FFN pruning with every head kept reloads with the stock Auto class."""
    model = _tiny_bert()
    inputs = model.example_inputs(batch=2, sequence=8)
    prune_step(model, PruneConfig(targets=["ffn"], importance="random"), 0.25, inputs)
    assert model.module.config.intermediate_size == 48 and not hasattr(model.module.config, "edgekd_structure")
    model.save(tmp_path / "ffn")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ffn").eval()
    torch.testing.assert_close(reloaded(**inputs).logits, model.module(**inputs).logits)


# --------------------------------------------------------------------------- CNN: physically smaller and faster


def test_pruned_cnn_is_smaller_and_faster_in_onnx(tmp_path: Path) -> None:
    torch.manual_seed(0)
    signature = InputSignature("image", image_shape=(3, 32, 32))
    model = build_task_model(CNNSpec(arch="cnn", channels=[32, 64, 128], hidden=128), signature, tuple("0123456789"))
    inputs = model.example_inputs(batch=8)
    target = load_export_target("onnx-fp32")
    export_onnx(model.module, inputs, tmp_path / "dense.onnx", target)
    dense_params = model.params
    prune_step(model, PruneConfig(ratio=0.5, importance="l2"), 0.5, inputs)
    assert model.spec["channels"] == [16, 32, 64] and model.spec["hidden"] == 64
    assert model.params < 0.3 * dense_params
    export_onnx(model.module, inputs, tmp_path / "pruned.onnx", target)
    model.save(tmp_path / "pruned")
    assert TaskModel.load(tmp_path / "pruned").params == model.params
    shape = validate_model({"name": "x", "budget": {"p90_ms": 1, "size_mb": 1, "peak_memory_mb": 1},
                            "inputs": {"batch": 8}}, DeviceProfile, source="t").inputs
    p50 = {name: [] for name in ("dense", "pruned")}
    for _ in range(2):  # interleaved, so a slow spell of a loaded machine hits both
        for name in p50:
            p50[name].append(time_onnx(tmp_path / f"{name}.onnx", shape, threads=1, warmup=5, runs=40).p50_ms)
    assert min(p50["pruned"]) / min(p50["dense"]) < 1.0


# --------------------------------------------------------------------------- the stages in a pipeline


def _digits_recipe(stages: list[dict]) -> Recipe:
    recipe = {
        "name": "prune-test", "data": {"source": "sklearn", "name": "digits", "limit": 600},
        "teacher": {"model": {"arch": "cnn", "channels": [16, 32], "hidden": 32}},
        "student": {"model": {"arch": "cnn", "channels": [16, 32], "hidden": 32}},
        "stages": [{"stage": "teacher", "epochs": 4, "lr": 0.01}, {"stage": "distill", "epochs": 2, "lr": 0.01},
                   *stages, {"stage": "export"}],
    }
    return validate_model(recipe, Recipe, source="test")


@pytest.mark.parametrize("stage", [
    {"stage": "prune", "ratio": 0.5, "steps": 2, "importance": "l2"},
    {"stage": "factorize", "energy": 0.6},
    {"stage": "hybrid", "target_params_ratio": 0.7, "max_steps": 2, "prune": {"ratio": 0.2},
     "factorize": {"energy": 0.9}},
])
def test_speedups_compare_models_timed_side_by_side_not_minutes_apart(stage: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # A machine that gets busy (3× slower) while the stage compresses, and stays busy. The fake worker's
    # latency is the file size in KB × the load, so the true speed-up is the ratio of file sizes.
    load = {"factor": 1.0}

    def fake_time_onnx(path: Path, shape: object, *, threads: int, warmup: int, runs: int, **_: object) -> HostTiming:
        size = Path(path).stat().st_size
        return HostTiming(times_ms=(size / 1000 * load["factor"],) * runs, input_shapes={}, peak_memory_mb=1.0,
                          size_mb=size / 2**20, threads=threads, onnxruntime="fake")

    for module in (runner, bench):
        monkeypatch.setattr(module, "time_onnx", fake_time_onnx)
    for name in ("prune_step", "factorize_task_model"):
        original = getattr(prune_stage, name)

        def busy(*args: object, _original=original, **kwargs: object) -> object:
            load["factor"] = 3.0
            return _original(*args, **kwargs)

        monkeypatch.setattr(prune_stage, name, busy)
    sizes: dict[int, int] = {}
    unlink = Path.unlink

    def remember_size(self: Path, *args: object, **kwargs: object) -> None:
        if self.name.startswith("check-") and self.suffix == ".onnx":
            sizes[int(self.stem.removeprefix("check-"))] = self.stat().st_size
        unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", remember_size)
    recipe = _digits_recipe([stage])
    metrics = edgekd.run(recipe, out=tmp_path / "run", show_progress=False).stages[2].metrics["student"]
    last = metrics["trajectory"][-1]["step"]
    assert metrics["speedup"] == pytest.approx(sizes[0] / sizes[last], rel=1e-9)  # minutes apart: a third of it
    interval = metrics["speedup_interval"]
    assert interval["rounds"] == measure.ROUNDS and interval["low"] == pytest.approx(interval["high"])
    for shot in metrics["trajectory"]:
        if shot["step"] not in sizes:  # a step measured without latency (prune's intermediate steps)
            assert shot["onnx_p50_ms"] is None and shot["speedup"] is None
            continue
        assert shot["onnx_p50_ms"] == pytest.approx(sizes[shot["step"]] / 1000 * 3.0)  # all timed together
        assert shot["speedup"]["ratio"] == pytest.approx(sizes[0] / sizes[shot["step"]])


class _BertJob:
    """A hybrid step's work on a tiny BERT, as the stage's job does it (L2 pruning, then SVD factorization)."""

    def __init__(self) -> None:
        self.model = _tiny_bert()
        self.inputs = self.model.example_inputs(batch=1, sequence=32)

    def prune(self, ratio: float) -> None:
        prune_step(self.model, PruneConfig(targets=["heads", "ffn"], importance="l2"), ratio, self.inputs)

    def factorize(self) -> object:
        return factorize_task_model(self.model, FactorizeConfig(energy=0.9))

    def size(self) -> Size:
        return Size(self.model.params, measure.count_macs(self.model, self.inputs))


def test_the_hybrid_step_that_reaches_a_size_target_prunes_only_enough_to_land_on_it() -> None:
    job = _BertJob()
    base = job.size()
    full = _BertJob()
    full.prune(0.5)
    full.factorize()
    overshoot = full.size().macs / base.macs  # a whole step of 0.5 goes well past 0.85
    config = HybridStage(prune={"ratio": 0.5}, factorize={"energy": 0.9}, target_macs_ratio=0.85)
    assert overshoot < 0.6
    ratio = landing_ratio(job, config, base)
    assert job.size() == base  # the trials ran on copies
    assert 0 < ratio < 0.5
    job.prune(ratio)
    job.factorize()
    landed = job.size().macs / base.macs
    assert 0.8 < landed <= 0.85  # on the target's side, not at the whole step's 0.5
    less = _BertJob()
    less.prune(ratio - 0.5 / 2**LANDING_ROUNDS)  # the bisection's last lower bound: short of the target
    less.factorize()
    assert not sizes_met(config, base, less.size())
    assert landing_ratio(_BertJob(), config.model_copy(update={"target_macs_ratio": 0.3}), base) == 0.5


def test_the_landing_trials_say_nothing_the_step_itself_does_not(caplog: pytest.LogCaptureFixture) -> None:
    """Down to one head, every trial of the landing bisection warned that 'heads' removes nothing more: the MiniLM
    hybrid's log held the warning 8 times for its last step."""
    job = _BertJob()
    base = job.size()
    job.prune(0.75)  # 4 heads to 1 in each layer
    assert {layer.attention.self.num_attention_heads for layer in job.model.module.bert.encoder.layer} == {1}
    config = HybridStage(prune={"ratio": 0.5}, factorize={"energy": 0.9}, target_macs_ratio=0.99)
    with caplog.at_level(logging.INFO, logger="edgekd"):
        ratio = landing_ratio(job, config, job.size())
        assert 0 < ratio < 0.5 and caplog.records == []
        job.prune(ratio)
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "prune: the attention layers are down to one head, which stays: 'heads' removes nothing more"]
    assert job.size().macs < base.macs


def test_prune_and_hybrid_stages_in_a_pipeline(tmp_path: Path) -> None:
    recovery = {"epochs": 1, "lr": 0.005}
    recipe = _digits_recipe([
        {"stage": "prune", "ratio": 0.5, "steps": 2, "importance": "taylor", "scope": "global", "recovery": recovery},
        {"stage": "hybrid", "target_params_ratio": 0.6, "max_steps": 3, "recovery": recovery,
         "prune": {"ratio": 0.2}, "factorize": {"energy": 0.9}},
    ])
    result = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    records = load_run_records(tmp_path / "run")
    prune, hybrid = (read_compression_record(records[i], "student") for i in (2, 3))
    assert isinstance(prune, CompressionRecord) and prune.to_json() == records[2]["metrics"]["student"]
    assert prune.params_ratio < 0.5 and prune.macs_ratio < 0.5 and prune.ratio_per_step == pytest.approx(1 - 0.5**0.5)
    assert [s.step for s in prune.trajectory] == [0, 1, 2] and prune.before == prune.trajectory[0]
    assert prune.parity_max_abs_diff < 1e-4 and prune.onnx_p50_ms > 0 and prune.target_reached is None
    assert hybrid.target_reached and hybrid.params_ratio <= 0.6 and hybrid.steps_run == len(hybrid.trajectory) - 1
    assert all(s.onnx_p50_ms > 0 and 0 <= s.accuracy <= 1 for s in hybrid.trajectory)
    student = result.artifact.get("student")
    assert student.onnx is not None and student.metrics["params"] == hybrid.params
    assert TaskModel.load(tmp_path / "run" / "04-hybrid" / "student").params == hybrid.params
    again = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)  # the records read back: all reused
    assert all(stage.skipped for stage in again.stages)
    records[3]["metrics"]["student"]["trajectory"][1].pop("macs")  # a damaged record is one line
    with pytest.raises(StorageError, match=r"^04-hybrid/stage\.json: metrics\.student\.trajectory\[1\]\.macs: "):
        read_compression_record(records[3], "student")


def interrupt_recovery(monkeypatch: pytest.MonkeyPatch, job_class: type, at_step: int) -> list[int]:
    """``job_class``'s recovery stopped (as by Ctrl-C) the first time it reaches ``at_step``; the steps it was called
    for are appended to the list returned."""
    recovered: list[int] = []
    recover = job_class.recover

    def stopping(job: object, step: int) -> None:
        recovered.append(step)
        if step == at_step and recovered.count(at_step) == 1:
            raise KeyboardInterrupt
        recover(job, step)

    monkeypatch.setattr(job_class, "recover", stopping)
    return recovered


def _trajectory(run_dir: Path, index: int) -> list[tuple[int, int, int, float]]:
    """Each step's parameters, MACs and validation accuracy, as the stage ``index`` (from 0) recorded them."""
    record = read_compression_record(load_run_records(run_dir)[index], "student")
    return [(s.step, s.params, s.macs, s.val_accuracy) for s in record.trajectory]


@pytest.mark.parametrize("stage", [
    {"stage": "hybrid", "target_params_ratio": 0.3, "max_steps": 4, "prune": {"ratio": 0.2},
     "factorize": {"energy": 0.9}},
    {"stage": "prune", "ratio": 0.6, "steps": 4, "importance": "taylor"},
])
def test_an_interrupted_schedule_resumes_after_its_last_finished_step(stage: dict, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = _digits_recipe([{**stage, "recovery": {"epochs": 1, "lr": 0.005}, "measure_latency": False}
                             if stage["stage"] == "hybrid" else {**stage, "recovery": {"epochs": 1, "lr": 0.005}}])
    edgekd.run(recipe, out=tmp_path / "straight", show_progress=False)
    steps = len(_trajectory(tmp_path / "straight", 2)) - 1
    assert steps >= 3
    recovered = interrupt_recovery(monkeypatch, prune_stage._Compression, at_step=3)
    with pytest.raises(KeyboardInterrupt):
        edgekd.run(recipe, out=tmp_path / "stopped", show_progress=False)
    partial = tmp_path / "stopped" / ".03-{}.partial".format(stage["stage"])
    assert sorted(p.name for p in partial.glob("schedule-step-*")) == ["schedule-step-2"]  # only the newest step
    edgekd.run(recipe, out=tmp_path / "stopped", show_progress=False)
    assert recovered == [1, 2, 3, *range(3, steps + 1)]  # steps 1 and 2 were not run again
    assert _trajectory(tmp_path / "stopped", 2) == _trajectory(tmp_path / "straight", 2)  # as if never stopped
    finished = tmp_path / "stopped" / "03-{}".format(stage["stage"])
    assert not list(finished.glob("schedule*")) and not (finished / "schedule.json").exists()


def test_the_recoveries_run_the_teacher_over_the_training_set_once(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    recovery = {"epochs": 1, "lr": 0.005}
    recipe = _digits_recipe([{"stage": "hybrid", "target_params_ratio": 0.3, "max_steps": 3, "measure_latency": False,
                              "prune": {"ratio": 0.2}, "factorize": {"energy": 0.9}, "recovery": recovery}])
    built = []
    build = teacher_cache._build
    monkeypatch.setattr(teacher_cache, "_build", lambda *args: built.append(args[0]) or build(*args))
    edgekd.run(recipe, out=tmp_path / "cached", show_progress=False)
    assert len(_trajectory(tmp_path / "cached", 2)) > 2
    assert len([path for path in built if "hybrid" in str(path)]) == 1  # one pass, read by every step's recovery
    assert not (tmp_path / "cached" / "03-hybrid" / prune_stage.TEACHER_OUTPUTS).exists()
    monkeypatch.setattr(teacher_cache.TeacherOutputCache, "open_or_build", lambda *_: None)  # the teacher run live
    edgekd.run(recipe, out=tmp_path / "live", show_progress=False)
    for cached, live in zip(_trajectory(tmp_path / "cached", 2), _trajectory(tmp_path / "live", 2), strict=True):
        assert cached[:3] == live[:3] and cached[3] == pytest.approx(live[3], abs=0.02)


def test_a_hybrid_whose_model_meets_its_target_already_keeps_it(tmp_path: Path) -> None:
    recipe = _digits_recipe([{"stage": "hybrid", "target_latency_ms": 10_000, "max_steps": 3}])
    edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    hybrid = read_compression_record(load_run_records(tmp_path / "run")[2], "student")
    assert hybrid.target_reached and hybrid.steps_run == 0 and hybrid.params_ratio == 1.0
    assert [s.step for s in hybrid.trajectory] == [0] and hybrid.shortfall is None
    distilled = TaskModel.load(tmp_path / "run" / "02-distill" / "student")
    assert TaskModel.load(tmp_path / "run" / "03-hybrid" / "student").params == distilled.params


@pytest.mark.parametrize(("schedule", "steps", "why"), [
    ({"max_steps": 2, "prune": {"ratio": 0.2}}, 2, "max_steps 2 reached"),
    ({"max_steps": 15, "prune": {"ratio": 0.5}}, 5,  # the CNN's channels and layers are all at their least by then
     "step 6 would remove nothing more (no unit left to prune, no layer left to factorize)"),
])
def test_a_hybrid_that_misses_its_target_says_by_how_much_and_why_it_stopped(
        schedule: dict, steps: int, why: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    recipe = _digits_recipe([{"stage": "hybrid", "target_macs_ratio": 0.001, "measure_latency": False,
                              "factorize": {"energy": 0.9}, **schedule}, {"stage": "report"}])
    edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    hybrid = read_compression_record(load_run_records(tmp_path / "run")[2], "student")
    assert not hybrid.target_reached and hybrid.steps_run == steps and len(hybrid.prune_ratios) == steps
    expected = (f"the student missed its target after {steps} step(s), {why}: MACs {hybrid.macs_ratio:.3g} of the "
                "input model's (target 0.001)")
    assert hybrid.shortfall == expected
    assert f"hybrid: {expected}" in caplog.text
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert f"03-hybrid: {expected}" in report["warnings"]


@pytest.mark.parametrize(("stages", "message"), [
    ([{"stage": "export"}, {"stage": "prune"}], "must come before 'export'"),
    ([{"stage": "factorize", "role": "assistant"}], "'assistant' needs a 'teacher' or 'distill' stage"),
])
def test_stage_order_is_checked(stages: list[dict], message: str, tmp_path: Path) -> None:
    recipe = _digits_recipe([]).model_dump(mode="json")
    recipe["stages"] = recipe["stages"][:2] + stages
    with pytest.raises(ConfigError, match=message):
        edgekd.validate(_write(tmp_path, recipe))


@pytest.mark.parametrize(("stage", "message"), [
    ({"stage": "factorize", "energy": 0.9, "param_ratio": 0.3}, "either 'energy' or 'param_ratio'"),
    ({"stage": "hybrid"}, "give a target"),
    ({"stage": "prune", "importance": "fisher"}, "importance"),
])
def test_stage_settings_are_checked(stage: dict, message: str) -> None:
    recipe = _digits_recipe([]).model_dump(mode="json")
    recipe["stages"].insert(2, stage)
    with pytest.raises(ConfigError, match=message):
        validate_model(recipe, Recipe, source="test")


def _write(tmp_path: Path, recipe: dict) -> Path:
    import yaml

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path
