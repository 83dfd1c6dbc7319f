"""Every Python and shell code block of README.md and docs/*.md runs and exits 0.

Blocks run in document order, each in a fresh process, in a sandbox that looks like a checkout (the
repository's files linked in, its own ``runs/``) and that already holds ``runs/demo``, a short run of the
demo recipe, so examples that read the demo's files run in seconds.

A block whose first line is a marker comment is treated as it says (the marker is visible to readers):

- ``# needs: time — <why>``: runs only with ``-m slow`` (e.g. the full demo, minutes of training);
- ``# needs: data — <what>``: skipped (data that is not in the repository, e.g. ``../shared/data/sst2``);
- ``# needs: cluster — <what>``: skipped (several machines or GPUs).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import demo_recipe_dict, shrink

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LANGUAGES = {"python": "python", "py": "python", "bash": "shell", "sh": "shell", "shell": "shell"}
MARKER = re.compile(r"^#\s*needs:\s*(\w+)\b(.*)$")
SKIPPED = {"data", "cluster"}
LINKED = ("edgekd", "pipelines", "devices", "exporters", "benchmarks", "tests", "docs", "Makefile",
          "pyproject.toml", "README.md")
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Block:
    """One fenced code block of a document."""

    doc: Path
    line: int
    language: str
    code: str

    @property
    def needs(self) -> tuple[str, str] | None:
        """The block's marker (kind, reason), if its first line has one."""
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = MARKER.match(first)
        return (match.group(1), match.group(2).strip(" —-:")) if match else None

    def __str__(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def code_blocks(doc: Path) -> list[Block]:
    """The Python and shell blocks of ``doc``, in order."""
    text = doc.read_text(encoding="utf-8")
    return [Block(doc, text.count("\n", 0, m.start()) + 1, LANGUAGES[m.group(1)], m.group(2))
            for m in FENCE.finditer(text) if m.group(1) in LANGUAGES]


def _params() -> list:
    params = []
    for block in (b for doc in DOCS for b in code_blocks(doc)):
        needs = block.needs
        marks = [pytest.mark.slow] if needs and needs[0] == "time" else []
        params.append(pytest.param(block, id=str(block), marks=marks))
    return params


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkout-like directory whose ``runs/demo`` holds a short demo run."""
    from edgekd import api

    root = tmp_path_factory.mktemp("checkout")
    for name in LINKED:
        (root / name).symlink_to(ROOT / name)
    recipe = root / "demo-short.yaml"
    recipe.write_text(yaml.safe_dump(shrink(demo_recipe_dict(), teacher_epochs=2, distill_epochs=3)))
    api.run(recipe, out=root / "runs" / "demo")
    return root


def run_block(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``block`` in a fresh process in ``cwd``, with this checkout's edgekd first on the paths."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    command = ([sys.executable, "-c", block.code] if block.language == "python"
               else ["bash", "-euo", "pipefail", "-c", block.code])
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("block", _params())
def test_code_block_runs(block: Block, sandbox: Path) -> None:
    needs = block.needs
    if needs and needs[0] in SKIPPED:
        pytest.skip(f"{block} needs {needs[0]}: {needs[1]}")
    if needs:
        assert needs[0] == "time", f"{block}: unknown marker 'needs: {needs[0]}' (expected time, data or cluster)"
    result = run_block(block, sandbox)
    assert result.returncode == 0, f"{block} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"


def test_every_document_has_blocks_and_markers_are_known() -> None:
    """The collector sees the documents' blocks (a broken fence pattern would silently test nothing)."""
    blocks = [b for doc in DOCS for b in code_blocks(doc)]
    assert {b.doc for b in blocks} >= {ROOT / "README.md"}
    kinds = {b.needs[0] for b in blocks if b.needs}
    assert kinds <= {"time", "data", "cluster"}, kinds
    unmarked = [b for b in blocks if not b.needs]
    assert unmarked, "every block is marked: nothing would run by default"


def _yaml_blocks() -> list[tuple[Block, dict]]:
    """YAML blocks of the documents that describe a built-in device profile or recipe (by their ``name``)."""
    text_blocks = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) == "yaml":
                data = yaml.safe_load(m.group(2))
                if isinstance(data, dict) and isinstance(data.get("name"), str):
                    text_blocks.append((Block(doc, text.count("\n", 0, m.start()) + 1, "yaml", m.group(2)), data))
    return text_blocks


def _differences(shown: object, shipped: object, path: str = "") -> list[str]:
    """Where the values a document shows differ from the shipped file (keys it leaves out, or '...', are fine)."""
    if shown == "...":
        return []
    if isinstance(shown, dict) and isinstance(shipped, dict):
        return [d for key, value in shown.items() if key in shipped
                for d in _differences(value, shipped[key], f"{path}.{key}".lstrip("."))]
    if isinstance(shown, list) and isinstance(shipped, list) and all(isinstance(v, dict) for v in shown):
        pairs = enumerate(zip(shown, shipped, strict=False))
        return [d for i, (a, b) in pairs for d in _differences(a, b, f"{path}[{i}]")]
    return [] if shown == shipped else [f"{path}: the document says {shown!r}, the shipped file {shipped!r}"]


def test_documented_profiles_and_recipes_match_the_shipped_files() -> None:
    """A YAML block named after a built-in device profile or recipe shows that file's values."""
    from edgekd.catalog import find, names

    checked = 0
    for block, data in _yaml_blocks():
        for kind in ("devices", "pipelines"):
            if data["name"] in names(kind):
                shipped = yaml.safe_load(find(kind, data["name"]).read_text())
                assert _differences(data, shipped) == [], f"{block} ({data['name']})"
                checked += 1
    assert checked >= 2  # the device profile and the recipe walkthrough


#: A line naming a source file and ending with a colon, then a blank line and an indented block: a quote of it.
QUOTE = re.compile(r"^.*`([\w/]+\.py)`[^`\n]*:\n\n((?:(?: {4}.*)?\n)+)", re.MULTILINE)


def test_quoted_source_is_the_files_own_text() -> None:
    """An indented block after a line naming a source file (``edgekd/profile/config.py`` is ...:) is that file's
    text verbatim: docs/extending.md quoted a profile stage definition the code had left behind."""
    checked = 0
    for doc in DOCS:
        for match in QUOTE.finditer(doc.read_text(encoding="utf-8")):
            quoted = "\n".join(line[4:] for line in match.group(2).rstrip("\n").splitlines())
            assert quoted in (ROOT / match.group(1)).read_text(encoding="utf-8"), f"{doc.name}: {match.group(1)}"
            checked += 1
    assert checked >= 1  # extending.md's stage definition


def test_every_test_the_docs_cite_exists() -> None:
    """docs/guarantees.md cited a test under a name it had lost: each `test_...` a document names in backticks is a
    test function of tests/."""
    defined = {name for path in (ROOT / "tests").glob("*.py")
               for name in re.findall(r"^(?:async )?def (test_\w+)", path.read_text(encoding="utf-8"), re.MULTILINE)}
    cited = {(doc.name, name) for doc in DOCS for name in re.findall(r"`(test_\w+)`", doc.read_text(encoding="utf-8"))}
    assert len(cited) >= 10
    assert sorted(c for c in cited if c[1] not in defined) == []


def test_api_profile_is_callable_after_any_import() -> None:
    """``edgekd.profile(...)`` works whether or not the ``edgekd.profile`` subpackage was imported first."""
    probes = [
        "import edgekd; import edgekd.profile.runner; assert callable(edgekd.profile)",
        "import edgekd; edgekd.run; from edgekd.profile import cpu; assert callable(edgekd.profile)",
        "from edgekd import profile; import edgekd.profile.worker; assert profile is __import__('edgekd').profile",
        "import edgekd, sys; assert 'torch' not in sys.modules and 'edgekd.api' not in sys.modules",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for code in probes:
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{code}\n{result.stderr}"


def test_run_then_profile_in_one_process(tmp_path: Path) -> None:
    """The README's sequence: ``edgekd.run`` (which imports the profiling code), then ``edgekd.profile``."""
    recipe = tmp_path / "recipe.yaml"
    short = shrink(demo_recipe_dict(), teacher_epochs=1, distill_epochs=1, runs=10)
    short["stages"] = [s for s in short["stages"] if s["stage"] in ("teacher", "distill", "export", "profile")]
    short["stages"][2]["target"] = "onnx-fp32"
    recipe.write_text(yaml.safe_dump(short))
    code = (f"import edgekd\nresult = edgekd.run({str(recipe)!r}, out={str(tmp_path / 'run')!r})\n"
            f"figures = edgekd.profile(result.run_dir / '03-export' / 'student.onnx', runs=10)\n"
            "assert figures.p50_ms > 0 and not figures.estimate\n")
    block = Block(ROOT / "README.md", 0, "python", code)
    result = run_block(block, tmp_path)
    assert result.returncode == 0, result.stderr
