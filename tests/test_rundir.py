"""Run and output directories: the lock file is never a way to write outside them.

``.edgekd.lock`` is opened, truncated and written with its holder by every run, ``edgekd quantize`` and
``edgekd bundle``: a symlink or hard link in its place made edgekd overwrite the file it leads to (exit 0).
A hard link (a directory copied with links) is replaced by a file of its own; a symlink is refused.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from edgekd.errors import ConfigError
from edgekd.rundir import LOCK_FILE, claimed
from tests.reliability import assert_user_error, cli, tiny_onnx, tiny_recipe, write_yaml

PRECIOUS = "precious user data\n"


def _foreign_lock(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """An output directory whose only entry is a lock of ``kind`` leading to (or being) something not edgekd's;
    returns the directory and the user's file."""
    out, precious = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    precious.write_text(PRECIOUS)
    lock = out / LOCK_FILE
    {"symlink": lambda: lock.symlink_to(precious), "hardlink": lambda: os.link(precious, lock),
     "directory": lock.mkdir, "fifo": lambda: os.mkfifo(lock)}[kind]()
    return out, precious


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo"])
def test_a_lock_file_that_is_not_a_file_of_its_own_is_refused(kind: str, tmp_path: Path) -> None:
    out, precious = _foreign_lock(tmp_path, kind)
    described = {"symlink": "a symbolic link", "directory": "a directory", "fifo": "not a regular file"}[kind]
    with pytest.raises(ConfigError, match=f"^{re.escape(str(out / LOCK_FILE))}: is {described}, not edgekd's lock"), \
            claimed(out):
        pytest.fail("claimed through a lock file that is not edgekd's")
    assert precious.read_text() == PRECIOUS


def test_a_run_whose_lock_is_a_symlink_exits_2_and_leaves_the_target_untouched(tmp_path: Path) -> None:
    out, precious = _foreign_lock(tmp_path, "symlink")
    outcome = cli("run", write_yaml(tmp_path / "recipe.yaml", tiny_recipe()), "--out", out, "-q")
    assert_user_error(outcome, f"{out / LOCK_FILE}: is a symbolic link", "remove it and run again", logged=True)
    assert precious.read_text() == PRECIOUS
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


@pytest.mark.parametrize("command", ["quantize", "bundle"])
def test_quantize_and_bundle_refuse_an_output_whose_lock_is_a_symlink(command: str, tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    out, precious = _foreign_lock(tmp_path, "symlink")
    outcome = cli(command, model, "-d", "host-cpu", "-o", out)
    assert_user_error(outcome, f"{out / LOCK_FILE}: is a symbolic link")
    assert precious.read_text() == PRECIOUS
    assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]


def test_a_hard_linked_lock_gets_a_file_of_its_own_and_the_other_name_is_untouched(tmp_path: Path) -> None:
    """A directory copied with hard links (a search's kept candidates) shares its lock's file with the original:
    claiming it writes a file of its own rather than through the link, and does not refuse it."""
    out, precious = _foreign_lock(tmp_path, "hardlink")
    with claimed(out):
        assert (out / LOCK_FILE).stat().st_nlink == 1 and "pid" in (out / LOCK_FILE).read_text()
    assert precious.read_text() == PRECIOUS and precious.stat().st_nlink == 1
