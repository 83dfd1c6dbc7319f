"""Bad input never crashes edgekd: every malformed input is one clear line and exit code 2, never a traceback.

The fuzz cases are seeded mutations of valid recipes, device profiles, text data files and ONNX models
(see :mod:`tests.mutations`); a mutation that leaves its input valid by construction must pass. A full
disk while writing an artifact, or a file the user may not read, is a user error too, and a full disk
leaves the previous artifact in place.

Run directories (see :mod:`tests.run_tampering`): a foreign ``--out`` is refused and left as it was; a
tampered run heals to the same files; a second run on a locked directory names the holder. Non-finite
numbers: a diverging training stops at once, NaN/inf weights files are refused, a NaN model is never
exported nor passes a gate. Places the user cannot write to and pretrained models that do not fit the
tokenizer are one line each.
"""

from __future__ import annotations

import errno
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from safetensors.torch import load_file, save_file

import edgekd
from edgekd import atomic
from edgekd.errors import ExportError
from edgekd.export import parity
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models.architectures import build_model
from edgekd.models.specs import CNNSpec
from edgekd.quantize.evaluate import model_outputs
from edgekd.quantize.quality import split_scores
from edgekd.stages import DEFAULT_REGISTRY as STAGES
from tests.mutations import Case, generate
from tests.reliability import (
    CliOutcome,
    assert_user_error,
    cli,
    one_torch_thread,
    text_recipe,
    tiny_onnx,
    tiny_recipe,
    write_yaml,
)
from tests.run_tampering import TAMPERS, Tamper, bad_run_record, foreign_directory, snapshot


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    """The fuzz cases (seed 0), mutating a freshly exported tiny CNN among the rest."""
    root = tmp_path_factory.mktemp("fuzz")
    return generate(root, tiny_onnx(root / "base.onnx").read_bytes())


def test_fuzz_cases_cover_every_kind_of_input_valid_and_not(cases: list[Case]) -> None:
    assert len(cases) >= 200
    kinds = Counter((case.category.split("/")[0], case.valid) for case in cases)
    for kind in ("recipe", "device", "data", "onnx"):
        assert kinds[kind, False] >= 20 and kinds[kind, True] >= 3, kinds


def test_each_fuzz_case_exits_0_when_valid_else_2_with_one_line_naming_the_problem(cases: list[Case]) -> None:
    failures = []
    for case in cases:
        for path, content in case.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        outcome = cli(*case.args)
        try:
            _check(case, outcome)
        except AssertionError as exc:
            failures.append(f"{case.category} ({case.detail}): {exc}")
    summary = Counter(case.category for case in cases)
    assert not failures, f"{len(failures)} of {len(cases)} cases failed ({dict(summary)}):\n" + "\n".join(failures)


def _check(case: Case, outcome: CliOutcome) -> None:
    """Valid: exit code 0 (and, for ``profile --json``, a JSON result). Invalid: one line naming the problem."""
    if case.valid:
        assert outcome.exit_code == 0, f"valid input rejected (exit {outcome.exit_code}): {outcome.output}"
        if "--json" in case.args:
            assert json.loads(outcome.output)["p50_ms"] > 0
        return
    assert_user_error(outcome, case.names_file)
    assert not case.names_one_of or any(name in outcome.output for name in case.names_one_of), (
        f"none of {case.names_one_of} in: {outcome.output}")


@pytest.mark.parametrize("target", ["onnx-fp32", "ort-mobile"])
def test_a_full_disk_under_onnxruntimes_own_writes_is_told_as_one(target: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """onnxruntime writes the optimized graph and the .ort file itself and says only 'Protobuf serialization
    failed' or 'Failed to save ORT format model': on a full disk that read as a broken graph."""
    import shutil
    from collections import namedtuple

    import onnxruntime

    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher", "export"))
    recipe["stages"][1]["target"] = target
    real_session = onnxruntime.InferenceSession

    def no_room(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - onnxruntime's signature
        options = args[1] if len(args) > 1 else kwargs.get("sess_options")
        if getattr(options, "optimized_model_filepath", ""):
            raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Protobuf serialization failed.")
        return real_session(*args, **kwargs)

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(onnxruntime, "InferenceSession", no_room)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with one_torch_thread():
        outcome = cli("run", write_yaml(tmp_path / "recipe.yaml", recipe), "--out", tmp_path / "run", "-q")
    assert_user_error(outcome, "no space left for a file of about", "MiB (0.0 MiB free); free some space and run "
                      "again", logged=True)


def test_full_disk_while_writing_an_artifact_is_one_line_and_keeps_the_previous_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher", "export"))
    path, run_dir = write_yaml(tmp_path / "recipe.yaml", recipe), tmp_path / "run"
    with one_torch_thread():
        edgekd.run(path, out=run_dir)
    previous = (run_dir / "02-export" / "teacher.onnx").read_bytes()
    recipe["stages"][1]["target"] = "ort-mobile"  # the export stage runs again
    changed = write_yaml(tmp_path / "changed.yaml", recipe)
    persist = atomic._persist

    def disk_full_for_models(tmp: Path, target: Path) -> None:
        if target.suffix == ".onnx":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
        persist(tmp, target)

    monkeypatch.setattr(atomic, "_persist", disk_full_for_models)
    with one_torch_thread():
        outcome = cli("run", changed, "--out", run_dir, "-q")
    assert_user_error(outcome, "teacher.onnx: cannot write it: no space left on device",
                      logged=True)
    assert (run_dir / "02-export" / "teacher.onnx").read_bytes() == previous
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp")]

    monkeypatch.setattr(atomic, "_persist", persist)  # space freed: the same command now finishes
    with one_torch_thread():
        assert cli("run", changed, "--out", run_dir, "-q").exit_code == 0
    assert (run_dir / "02-export" / "teacher.ort").is_file()


def test_files_this_user_may_not_read_are_one_line_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", text_recipe(tmp_path))
    locked: set[Path] = set()
    open_file = Path.open

    def permission_denied(self: Path, *args: Any, **kwargs: Any) -> IO[Any]:
        if self.resolve() in locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return open_file(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", permission_denied)  # tests may run as root, whom chmod does not stop
    for name, fragment in (("dev.tsv", "cannot read it (Permission denied) (data.test)"),
                           ("recipe.yaml", "cannot read file")):
        locked.add((tmp_path / name).resolve())
        outcome = cli("validate", recipe)
        assert_user_error(outcome, name, fragment)


# Run directories: edgekd writes only into its own, heals a damaged one, and lets one run at a time in.

def test_foreign_out_directories_are_refused_and_left_untouched(tmp_path: Path) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(stages=("teacher", "export")))
    rng = random.Random(0)
    for case in range(12):
        out = tmp_path / f"foreign{case}"
        foreign_directory(out, rng)
        before = snapshot(out)
        outcome = cli("run", recipe, "--out", out, "-q")
        assert_user_error(outcome, str(out), "not empty and not an edgekd run directory", logged=True)
        assert snapshot(out) == before, f"case {case}: files changed"


def test_out_that_is_a_file_or_the_filesystem_root_is_refused(tmp_path: Path) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(stages=("teacher", "export")))
    for name in ("out.txt", "model.onnx", "run.json"):
        (tmp_path / name).write_text("mine\n")
        assert_user_error(cli("run", recipe, "--out", tmp_path / name, "-q"), name, "is a file", logged=True)
        assert_user_error(cli("run", recipe, "--out", tmp_path / name / "run", "-q"), name,
                          "a part of its path is a file", logged=True)
        assert (tmp_path / name).read_text() == "mine\n"
    for root in ("/", "//", "/.", f"/{tmp_path.parts[1]}/.."):
        assert_user_error(cli("run", recipe, "--out", root, "-q"), "root of the filesystem", logged=True)


def test_bench_and_export_out_at_or_below_a_file_is_one_line(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "model.onnx")
    (tmp_path / "taken").write_text("mine\n")
    for out in (tmp_path / "taken", tmp_path / "taken" / "out", tmp_path / "taken" / "a" / "b"):
        assert_user_error(cli("export", model, "--target", "ort-mobile", "--out", out), str(tmp_path / "taken"),
                          "a part of its path is a file")
        assert_user_error(cli("bench", model, "--out", out, "--runs", "10", "--rounds", "1", "--warmup", "0"),
                          str(tmp_path / "taken"),
                          "is a file" if out.parent == tmp_path else "a part of its path is a file")
    assert (tmp_path / "taken").read_text() == "mine\n"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A finished tiny run (teacher, distill, export, profile, bundle) and its recipe."""
    root = tmp_path_factory.mktemp("run")
    recipe = write_yaml(root / "recipe.yaml", tiny_recipe(teacher_epochs=1, distill_epochs=2))
    with one_torch_thread():
        edgekd.run(recipe, out=root / "run")
    return recipe, root / "run"


def _models(run_dir: Path) -> dict[str, bytes | None]:
    """What the stages and the bundle wrote (records, whose timings differ between runs, left out)."""
    return {name: content for name, content in snapshot(run_dir).items()
            if name[:2].isdigit() and not name.endswith("/stage.json") or name == "bundle/model.onnx"}


@pytest.mark.parametrize("tamper", TAMPERS, ids=[t.name for t in TAMPERS])
def test_tampered_run_directories_heal_to_the_same_files(tamper: Tamper, finished_run: tuple[Path, Path],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEKD_STAGE_STORE", "off")  # heal from the run directory alone, not the teacher store
    recipe, base = finished_run
    expected = _models(base)
    rng = random.Random(TAMPERS.index(tamper))
    failures = []
    for case in range(3):
        run_dir = tmp_path / f"case{case}" / "run"
        shutil.copytree(base, run_dir)
        damaged = tamper.apply(run_dir, rng)
        with one_torch_thread():
            result = edgekd.run(recipe, out=run_dir)
        skipped = [r.skipped for r in result.stages]
        changed = sorted(k for k in expected.keys() | _models(run_dir).keys()
                         if expected.get(k) != _models(run_dir).get(k))
        if skipped != [r.index < damaged and STAGES[r.stage].cacheable for r in result.stages] or changed:
            failures.append(f"{tamper.name} in stage {damaged}: skipped {skipped}, files differing {changed}")
        assert b"not for the bundle" not in (run_dir / "bundle.zip").read_bytes()
    assert not failures, "\n".join(failures)


def test_a_run_record_edgekd_did_not_write_is_rewritten_by_run_and_refused_by_report(
        finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, base = finished_run
    rng = random.Random(1)
    for case in range(4):
        run_dir = tmp_path / f"case{case}"
        shutil.copytree(base, run_dir)
        bad_run_record(run_dir, rng)
        assert_user_error(cli("report", run_dir), "run.json", "not an edgekd run record")
        with one_torch_thread():
            result = edgekd.run(recipe, out=run_dir)
        assert [r.skipped for r in result.stages] == [STAGES[r.stage].cacheable for r in result.stages]
        assert json.loads((run_dir / "run.json").read_text())["recipe"]["name"] == "demo-digits"


def test_second_run_or_report_on_a_locked_directory_exits_2_naming_the_holder(
        finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, base = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from edgekd.rundir import claimed\n"
         "with claimed(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(edgekd.__file__).parents[1])})
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        before = snapshot(run_dir)
        outcome = cli("run", recipe, "--out", run_dir, "-q")
        assert_user_error(outcome, str(run_dir), "another edgekd run is using this directory",
                          f"process {holder.pid} on {socket.gethostname()}", logged=True)
        assert_user_error(cli("report", run_dir), str(run_dir), "another edgekd run is using this directory")
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    with one_torch_thread():  # the holder is gone: its lock with it
        assert cli("run", recipe, "--out", run_dir, "-q").exit_code == 0


# Non-finite numbers at run time: training stops at once, no gate passes a NaN, a NaN model is never exported.

def test_diverging_training_stops_with_one_line_at_the_first_non_finite_loss(tmp_path: Path) -> None:
    rng = random.Random(0)
    for case in range(6):
        recipe = tiny_recipe(stages=("teacher", "distill", "export"))
        stage = rng.choice(recipe["stages"][:2])
        key = rng.choice(("lr", "weight_decay") + (("loss weight",) if stage["stage"] == "distill" else ()))
        # Adam undoes the scale of a loss: a loss weight diverges only where it overflows float32 (3.4e38).
        value = rng.uniform(1e38, 3e38) if key == "loss weight" else 10.0 ** rng.randint(30, 38)
        if key == "loss weight":
            stage["losses"] = [{**stage.get("losses", [{"kind": "hinton"}])[0], "weight": value}]
        else:
            stage[key] = value
        with one_torch_thread():
            outcome = cli("run", write_yaml(tmp_path / f"recipe{case}.yaml", recipe), "--out", tmp_path / f"run{case}",
                          "-q")
        assert_user_error(outcome, "the training loss became nan", "Lower the learning rate", logged=True)
        assert not list((tmp_path / f"run{case}").glob("*/*.onnx")), f"{stage['stage']}.{key} = {value:g}"


def _poisoned(state: dict[str, torch.Tensor], rng: random.Random) -> tuple[dict[str, torch.Tensor], str]:
    """``state`` with NaN, +inf or -inf at random places of one random floating-point tensor."""
    name = rng.choice(sorted(n for n, t in state.items() if t.is_floating_point()))
    poisoned = {n: t.clone() for n, t in state.items()}
    flat = poisoned[name].view(-1)
    for index in rng.sample(range(flat.numel()), rng.randint(1, min(3, flat.numel()))):
        flat[index] = rng.choice((math.nan, math.inf, -math.inf))
    return poisoned, name


def test_weights_files_with_nan_or_inf_are_refused_in_one_line(finished_run: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    _, base = finished_run
    state = load_file(str(base / "01-teacher" / "teacher" / "model.safetensors"))
    rng = random.Random(0)
    for case in range(8):
        poisoned, name = _poisoned(state, rng)
        weights = tmp_path / f"teacher{case}.safetensors"
        save_file(poisoned, str(weights))
        recipe = tiny_recipe(stages=("teacher", "distill", "export"))
        recipe["teacher"]["weights"] = str(weights)
        outcome = cli("run", write_yaml(tmp_path / f"recipe{case}.yaml", recipe), "--out", tmp_path / f"run{case}",
                      "-q")
        assert_user_error(outcome, weights.name, f"tensor '{name}' holds", "NaN or infinite", logged=True)


def test_a_model_with_non_finite_weights_is_never_exported(tmp_path: Path) -> None:
    rng = random.Random(1)
    for case in range(8):
        torch.manual_seed(case)
        model = build_model(CNNSpec(arch="cnn", channels=[4], hidden=8), (1, 8, 8), 10)
        poisoned, name = _poisoned(model.state_dict(), rng)
        model.load_state_dict(poisoned)
        path = tmp_path / f"model{case}.onnx"
        with pytest.raises(ExportError, match=f"not exported: the model's tensor '{re.escape(name)}' holds"):
            export_onnx(model, torch.zeros(4, 1, 8, 8), path, load_export_target("onnx-fp32"))
        assert not path.exists()


def test_nan_outputs_never_pass_parity_or_agreement(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for case in range(20):
        expected = rng.normal(size=(int(rng.integers(1, 8)), 10)).astype(np.float32)
        actual = expected.copy()
        rows, cols = rng.integers(0, expected.shape[0]), rng.integers(0, 10)
        both = case % 2 == 0  # NaN on both sides (the same broken model twice) or on one side
        actual[rows, cols] = np.nan
        if both:
            expected[rows, cols] = np.nan
        diffs = parity.OutputDiffs()
        diffs.add(0, expected, actual)
        assert not diffs.result(samples=len(expected), atol=1e-4, rtol=1e-4).passed, (case, both)
    # A model whose every weight is NaN, as an ONNX file (written around the exporter's own check).
    model = onnx.load(str(tiny_onnx(tmp_path / "model.onnx")))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT:
            tensor.CopyFrom(numpy_helper.from_array(np.full_like(numpy_helper.to_array(tensor), np.nan), tensor.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    feeds = [({"input": rng.normal(size=(n, 1, 8, 8)).astype(np.float32)}, np.zeros(n, dtype=np.int64))
             for n in (1, 5)]
    outputs = model_outputs(tmp_path / "nan.onnx", feeds, threads=1)
    scores = split_scores(outputs, outputs, feeds)
    assert scores.metrics == {"accuracy": 0.0} and scores.agreement == 0.0


# Run-time I/O mistakes: places the user cannot write to, pretrained models that do not fit the tokenizer.

@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only filesystem (a tmpfs mounted ``ro``; mounting needs root, skipped otherwise) holding ``old/``."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        (mount / "old").mkdir()
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_place_to_write_is_one_line(read_only_dir: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tiny_recipe(stages=("teacher", "distill"))
    path = write_yaml(tmp_path / "recipe.yaml", recipe)
    for out in (read_only_dir / "run", read_only_dir / "a" / "b", read_only_dir / "old"):  # new, nested, empty
        assert_user_error(cli("run", path, "--out", out, "-q"), str(out), "read-only file system", logged=True)
    recipe["stages"][1]["teacher_cache_dir"] = str(read_only_dir / "cache")
    with one_torch_thread():
        outcome = cli("run", write_yaml(tmp_path / "cached.yaml", recipe), "--out", tmp_path / "run", "-q")
    assert_user_error(outcome, str(read_only_dir / "cache"), "read-only file system", "(distill.teacher_cache_dir)",
                      logged=True)
    monkeypatch.setenv("EDGEKD_CACHE", str(read_only_dir / "edgekd"))
    recipe = tiny_recipe(stages=("teacher", "export", "profile"))
    with one_torch_thread():
        outcome = cli("run", write_yaml(tmp_path / "profiled.yaml", recipe), "--device", "raspberry-pi-4",
                      "--out", tmp_path / "run2", "-q")
    assert_user_error(outcome, str(read_only_dir / "edgekd"), "read-only file system", "EDGEKD_CACHE", logged=True)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_a_place_that_takes_no_new_entries_is_one_line(tmp_path: Path) -> None:
    """/proc refuses to create anything with 'no such file or directory', which escaped as an internal error."""
    path = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(stages=("teacher",)))
    for out in ("/proc/edgekd-run", "/proc/self/edgekd/run"):
        assert_user_error(cli("run", path, "--out", out, "-q"), out, "cannot be created there", logged=True)


def test_a_pretrained_model_smaller_than_the_tokenizer_is_one_line(tmp_path: Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    rng = random.Random(0)
    for case in range(4):
        recipe = text_recipe(tmp_path)
        vocab, length = recipe["tokenizer"]["vocab_size"], recipe["tokenizer"]["max_length"]
        short_vocab = case % 2 == 0
        config = BertConfig(vocab_size=rng.randint(8, vocab - 1) if short_vocab else vocab + 10, hidden_size=16,
                            num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                            max_position_embeddings=length + 10 if short_vocab else rng.randint(4, length - 1))
        BertForSequenceClassification(config).save_pretrained(tmp_path / f"model{case}", safe_serialization=True)
        recipe["teacher"]["model"] = {"arch": "bert", "pretrained": str(tmp_path / f"model{case}")}
        with one_torch_thread():
            outcome = cli("run", write_yaml(tmp_path / f"recipe{case}.yaml", recipe), "--out", tmp_path / f"run{case}",
                          "-q")
        fragment = (f"its vocabulary has {config.vocab_size} tokens, fewer than the tokenizer's" if short_vocab else
                    f"it takes at most {config.max_position_embeddings} tokens")
        assert_user_error(outcome, f"model{case}", fragment, logged=True)


def test_only_stage_directories_edgekd_wrote_are_deleted(finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, base = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(base, run_dir)
    rng = random.Random(2)
    mine: dict[Path, bytes] = {}
    for name in ("07-notes/a.md", ".08-draft.partial/b.txt", "09-profile/c.bin"):  # stage-like names, not stages
        (run_dir / name).parent.mkdir(parents=True)
        (run_dir / name).write_bytes(rng.randbytes(16))
        mine[run_dir / name] = (run_dir / name).read_bytes()
    shorter = tiny_recipe(teacher_epochs=1, distill_epochs=2, stages=("teacher", "distill", "export"))
    with one_torch_thread():
        result = edgekd.run(write_yaml(tmp_path / "shorter.yaml", shorter), out=run_dir)
    assert [r.skipped for r in result.stages] == [True, True, True]
    assert not (run_dir / "04-profile").exists() and not (run_dir / "05-bundle").exists()  # edgekd's: removed
    assert {path: path.read_bytes() for path in mine} == mine  # the user's: kept
    # A directory in a stage's place that edgekd did not write is refused, not replaced.
    (run_dir / "03-export" / "stage.json").unlink()
    shutil.rmtree(run_dir / "02-distill")
    (run_dir / "02-distill").mkdir()
    (run_dir / "02-distill" / "mine.txt").write_text("keep")
    outcome = cli("run", tmp_path / "shorter.yaml", "--out", run_dir, "-q")
    assert_user_error(outcome, "02-distill", "was not written by edgekd", logged=True)
    assert (run_dir / "02-distill" / "mine.txt").read_text() == "keep"


def test_deleted_teacher_weights_and_changed_distill_settings_rerun_the_teacher(
        finished_run: tuple[Path, Path], tmp_path: Path) -> None:
    _, base = finished_run
    for case, name in enumerate(("model.safetensors", "edgekd_model.json")):
        run_dir = tmp_path / f"run{case}"
        shutil.copytree(base, run_dir)
        (run_dir / "01-teacher" / "teacher" / name).unlink()
        changed = tiny_recipe(teacher_epochs=1, distill_epochs=2)
        changed["stages"][1]["lr"] = 0.02 + case / 100
        with one_torch_thread():
            outcome = cli("run", write_yaml(tmp_path / f"changed{case}.yaml", changed), "--out", run_dir, "-q")
        assert outcome.exit_code == 0, outcome.output
        assert (run_dir / "01-teacher" / "teacher" / name).read_bytes() == (
            base / "01-teacher" / "teacher" / name).read_bytes()
