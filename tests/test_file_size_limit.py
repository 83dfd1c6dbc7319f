"""A file over the size a process may write (``ulimit -f``: EFBIG, "File too large") is a one-line error naming
the file and the limit, like a full disk; it was an internal error (safetensors' SafetensorError quoting errno 27).
Once the limit is lifted the same command finishes."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from edgekd.atomic import write_bytes
from edgekd.errors import StorageError
from tests.reliability import tiny_recipe, write_yaml

LIMIT = 16 * 1024  # bytes: run.json fits, the teacher's training checkpoint (~40 KB) does not


def _edgekd(*args: str | Path, limit: int | None) -> subprocess.CompletedProcess[str]:
    def limited() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "EDGEKD_STAGE_STORE": "off", "COLUMNS": "400"}
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True, text=True,
                          preexec_fn=limited, env=env, timeout=600)


@pytest.mark.slow  # ~25 s on 2 loaded cores: two edgekd processes, each importing torch
def test_a_file_over_the_size_limit_is_one_line_and_the_run_finishes_once_it_is_lifted(tmp_path: Path) -> None:
    recipe = tiny_recipe(teacher_epochs=1, stages=("teacher",))
    recipe["teacher"]["model"] = {"arch": "cnn", "channels": [32], "hidden": 64}  # a 13 KB ONNX file
    path, run_dir = write_yaml(tmp_path / "recipe.yaml", recipe), tmp_path / "run"
    limited = _edgekd("run", path, "--out", run_dir, "-q", limit=LIMIT)
    errors = [line for line in limited.stderr.splitlines() + limited.stdout.splitlines()
              if line.startswith("error:")]
    assert limited.returncode == 2, limited.stderr
    assert "Traceback" not in limited.stderr and "internal error" not in limited.stderr
    assert len(errors) == 1 and str(run_dir) in errors[0], limited.stderr
    assert "cannot write it: file too large; raise the file size limit (ulimit -f)" in errors[0]
    assert not [p for p in run_dir.rglob(".*") if p.name.endswith(".tmp")]
    finished = _edgekd("run", path, "--out", run_dir, "-q", limit=None)
    assert finished.returncode == 0, finished.stderr
    assert (run_dir / "01-teacher" / "teacher" / "model.safetensors").is_file()


def test_a_library_quoting_file_too_large_is_a_storage_error(tmp_path: Path) -> None:
    """Libraries with their own exception types (safetensors, onnx) quote the system's text, not an errno."""
    import edgekd.atomic as atomic

    def too_large(tmp: Path, target: Path) -> None:
        raise RuntimeError(f"Error while serializing: I/O error: {os.strerror(errno.EFBIG)} (os error 27)")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(atomic, "_persist", too_large)
        with pytest.raises(StorageError, match="model.bin: cannot write it: file too large; raise the file size"):
            write_bytes(tmp_path / "model.bin", b"weights")
    assert not list(tmp_path.iterdir())
