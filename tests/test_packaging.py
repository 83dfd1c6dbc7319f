"""The wheel carries every subpackage and the three YAML catalogs, and they are found once installed; the source
distribution carries what builds, tests and documents it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from edgekd import catalog

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject() -> None:
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "edgekd").rglob("__init__.py")}
    assert on_disk <= listed, f"add to [tool.setuptools] packages: {sorted(on_disk - listed)}"


def test_catalogs_are_found_in_the_checkout() -> None:
    assert {"host-cpu", "android-midrange-cpu", "raspberry-pi-4", "x86-server-1core"} <= set(catalog.names("devices"))
    assert "onnx-fp32" in catalog.names("exporters")
    assert "demo-digits" in catalog.names("pipelines")


def _clean_source_copy(tmp_path: Path, *extra: str) -> Path:
    """The project's sources (and the ``extra`` files and folders) without a stale build/ directory, which
    setuptools would pack too."""
    source = tmp_path / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in ("pyproject.toml", "README.md", "MANIFEST.in", "edgekd", "pipelines", "devices", "exporters", *extra):
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy2(ROOT / name, source / name)
    return source


def _build_wheel(tmp_path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(_clean_source_copy(tmp_path))], check=True, capture_output=True, timeout=300)
    return next(tmp_path.glob("edgekd-*.whl"))


def test_wheel_ships_catalogs_and_finds_them_outside_the_checkout(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for kind in ("pipelines", "devices", "exporters"):
        shipped = {Path(n).name for n in names if n.startswith(f"edgekd/_catalog/{kind}/")}
        assert shipped == {p.name for p in (ROOT / kind).glob("*.yaml")}, kind
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = "from edgekd import catalog; print(catalog.catalog_dir('devices')); print(catalog.names('devices'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(site)}, check=True)
    assert str(site / "edgekd" / "_catalog" / "devices") in done.stdout
    assert "raspberry-pi-4" in done.stdout


@pytest.mark.slow
def test_pip_install_into_fresh_venv_then_devices_list(tmp_path: Path) -> None:
    """`pip install .` with all dependencies into a new venv, then the CLI from another directory."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", str(_clean_source_copy(tmp_path))],
                   check=True, timeout=900)
    done = subprocess.run([venv / "bin" / "edgekd", "devices", "list"], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "COLUMNS": "200"}, check=True)
    for name in ("host-cpu", "android-midrange-cpu", "raspberry-pi-4", "x86-server-1core"):
        assert name in done.stdout


def test_sdist_carries_the_docs_the_tests_with_their_helpers_and_the_build_files(tmp_path: Path) -> None:
    """The sdist shipped the tests without their conftest and helper modules (every test failed to collect) and
    none of the docs the README links to."""
    source = _clean_source_copy(tmp_path, "docs", "tests", "benchmarks", ".ci", "Makefile")
    code = "from setuptools import build_meta; print(build_meta.build_sdist('dist'))"
    done = subprocess.run([sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300,
                          check=True)
    with tarfile.open(source / "dist" / done.stdout.split()[-1]) as archive:
        names = {Path(*Path(name).parts[1:]).as_posix() for name in archive.getnames()}
    expected = {p.relative_to(ROOT).as_posix() for folder in ("tests", "docs") for p in (ROOT / folder).rglob("*")
                if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)[:5]
    assert {"Makefile", ".ci/run", "README.md", "benchmarks/kd_sst2.py"} <= names
