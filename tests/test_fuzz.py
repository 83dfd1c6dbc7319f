"""Bad input never crashes edgekd: every malformed input is one clear line and exit code 2, never a traceback.

The fuzz cases are seeded mutations of valid recipes, device profiles, text data files and ONNX models
(see :mod:`tests.mutations`); a mutation that leaves its input valid by construction must pass. A full
disk while writing an artifact, or a file the user may not read, is a user error too, and a full disk
leaves the previous artifact in place.
"""

from __future__ import annotations

import errno
import json
import os
from collections import Counter
from pathlib import Path
from typing import IO, Any

import pytest

import edgekd
from edgekd import atomic
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
