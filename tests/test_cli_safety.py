"""What the CLI prints from user files is inert, and signals and kills leave a clean run directory.

Control characters (terminal escape sequences, bidirectional overrides) in ONNX input names, paths and
YAML values are shown escaped; rich markup in them (``[/bold]``) is shown literally; SIGTERM ends a run
as Ctrl-C does; a process killed while writing the report leaves no temporary file in the run root.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import onnx
import psutil
import pytest
from onnx import TensorProto, helper
from rich.console import Console

from edgekd.config.device import load_device
from edgekd.console import printable, shown
from edgekd.rundir import LOCK_FILE
from tests.reliability import TINY_STAGES, assert_user_error, cli, tiny_recipe, write_yaml

ROOT = Path(__file__).resolve().parent.parent
#: Every character that must never reach a terminal raw.
CONTROLS = [chr(c) for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0))] + [
    "\u2028", "\u2029", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))]
MARKUP = ["[/bold]", "[red]x[/red]", "[link=http://x]y[/link]", "[", "]", "\\[b]"]


def _raw_controls(text: str) -> list[str]:
    """The control characters of ``text`` other than newline (rich's own output holds no others unstyled)."""
    return [c for c in text if c in CONTROLS]


def _rendered(text: str) -> str:
    console = Console(file=io.StringIO(), width=400, color_system=None, highlight=False)
    console.print(text)
    return console.file.getvalue()


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
def test_every_control_character_is_shown_escaped(char: str) -> None:
    value = f"a{char}b"
    assert _raw_controls(printable(value)) == []
    rendered = _rendered(shown(value))
    assert _raw_controls(rendered) == [] and rendered.startswith("a\\") and rendered.rstrip("\n").endswith("b")


@pytest.mark.parametrize("markup", MARKUP)
def test_markup_in_user_text_is_printed_literally(markup: str) -> None:
    assert _rendered(shown(f"runs/{markup}/x")).rstrip("\n") == f"runs/{markup}/x"


def test_newlines_and_tabs_stay_on_one_line() -> None:
    assert _rendered(shown("a\nb\tc\rd")).rstrip("\n") == "a\\nb\\tc\\rd"
    assert printable("a\nb") == "a\nb"


HOSTILE = "x\x1b[2J\x1b]0;owned\x07[/bold]\u202e"


def test_hostile_yaml_values_and_paths_are_shown_inert(tmp_path: Path) -> None:
    directory = tmp_path / "devices[/bold]\x1b[31m"
    directory.mkdir(parents=True)
    device = write_yaml(directory / "dev.yaml", {**load_device("host-cpu").model_dump(mode="json"),
                                                  "description": HOSTILE})
    recipe = {**tiny_recipe(), "device": str(device)}
    outcome = cli("validate", write_yaml(tmp_path / "recipe.yaml", recipe))
    assert outcome.exit_code == 0, outcome.output
    assert _raw_controls(outcome.output) == [] and "devices[/bold]\\x1b[31m" in outcome.output
    for broken in ({**recipe, "seed": HOSTILE}, {**recipe, HOSTILE: 1}, {**recipe, "device": HOSTILE}):
        outcome = cli("validate", write_yaml(tmp_path / "broken.yaml", broken))
        assert outcome.exit_code == 2 and len(outcome.output.splitlines()) == 1, outcome.output
        assert _raw_controls(outcome.output) == [] and "[/bold]" in outcome.output, outcome.output


def test_hostile_onnx_input_name_and_path_are_shown_inert(tmp_path: Path) -> None:
    directory = tmp_path / "m[/bold]\x1b[31m"
    directory.mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Relu", [HOSTILE], ["y"])], "g",
                              [helper.make_tensor_value_info(HOSTILE, TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, directory / "m.onnx")
    outcome = cli("profile", directory / "m.onnx", "--runs", "10", "--warmup", "0")
    assert outcome.exit_code == 0, outcome.output
    assert _raw_controls(outcome.output) == []
    assert "[/bold]" in outcome.output and "\\x1b[2J" in outcome.output
    missing = cli("profile", directory / "none.onnx")
    assert missing.exit_code == 2 and _raw_controls(missing.output) == [] and "[/bold]" in missing.output
    # the bundle's README (read in a terminal with cat) names the input: escaped there too
    bundled = cli("bundle", directory / "m.onnx", "--device", "host-cpu", "--out", tmp_path / "app", "--runs", "10",
                  "--warmup", "0")
    assert bundled.exit_code == 0, bundled.output
    readme = (tmp_path / "app" / "bundle" / "README.md").read_text(encoding="utf-8")
    assert _raw_controls(readme) == [] and "\\x1b[2J" in readme


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny run with a report, in a directory whose name holds markup and an escape sequence."""
    root = tmp_path_factory.mktemp("safety")
    recipe = write_yaml(root / "recipe.yaml", tiny_recipe(stages=(*TINY_STAGES, "report")))
    run_dir = root / "runs[/bold]\x1b[31m"
    outcome = cli("run", recipe, "--out", run_dir, "-q")
    assert outcome.exit_code == 0, outcome.output
    assert _raw_controls(outcome.output) == [] and "runs[/bold]\\x1b[31m" in outcome.output
    return run_dir


def _edgekd(*args: str | Path, prelude: str = "") -> subprocess.Popen:
    """``edgekd ARGS`` in a fresh process through the console-script entry point, after running ``prelude``."""
    argv = ["edgekd", *map(str, args)]
    code = f"{prelude}\nimport sys\nfrom edgekd.cli import main\nsys.argv = {argv!r}\nmain()"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COLUMNS="200")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


KILL_IN_SAVEFIG = """
import os, signal, matplotlib.figure
def savefig(self, fname, *args, **kwargs):
    open(fname, "wb").write(b"half a PNG")
    os.kill(os.getpid(), signal.SIGKILL)
matplotlib.figure.Figure.savefig = savefig
"""


def _top_level_leftovers(run_dir: Path) -> list[str]:
    """Temporary or hidden files in the run root, except the run's lock file (kept by design, see edgekd.rundir)."""
    return sorted(p.name for p in run_dir.iterdir() if p.is_file() and p.name != LOCK_FILE and (
        p.name.endswith(".tmp") or p.name.startswith(".")))


def test_killed_while_plotting_leaves_no_temporary_file_in_the_run_root(finished_run: Path, tmp_path: Path) -> None:
    def files() -> dict[str, bytes]:  # the lock file names its last holder: the report command now
        return {p.name: p.read_bytes() for p in finished_run.iterdir() if p.is_file() and p.name != LOCK_FILE}

    before = files()
    proc = _edgekd("report", finished_run, prelude=KILL_IN_SAVEFIG)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert _top_level_leftovers(finished_run) == []
    assert files() == before
    # the next rebuild clears the staging directory the killed one left
    outcome = cli("report", finished_run)
    assert outcome.exit_code == 0, outcome.output
    assert not (finished_run / ".report.partial").exists() and _top_level_leftovers(finished_run) == []
    # the report stage of a run stages its files in its own partial directory: a copy of the finished run
    # without its report resumes the earlier stages, so only the report stage runs (and is killed)
    report_dir = next(finished_run.glob("*-report"))
    report = {report_dir.name, *json.loads((report_dir / "stage.json").read_text())["metrics"]["files"]}
    shutil.copytree(finished_run, tmp_path / "run", ignore=lambda d, names: report if Path(d) == finished_run else ())
    trained = {path: path.read_bytes() for path in (tmp_path / "run").glob("0[12]-*/stage.json")}
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(stages=(*TINY_STAGES, "report")))
    proc = _edgekd("run", recipe, "--out", tmp_path / "run", "-q", prelude=KILL_IN_SAVEFIG)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert len(trained) == 2 and {path: path.read_bytes() for path in trained} == trained  # resumed, not re-run
    assert _top_level_leftovers(tmp_path / "run") == []
    assert not list((tmp_path / "run").glob("*.png"))


def test_sigterm_ends_a_run_like_ctrl_c_keeping_finished_stages(tmp_path: Path) -> None:
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe(teacher_epochs=2, distill_epochs=400))
    run_dir = tmp_path / "run"
    proc = _edgekd("run", recipe, "--out", run_dir, "-q")
    deadline = time.monotonic() + 300
    while not (run_dir / ".02-distill.partial").is_dir():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.strip()][-1] == (
        "terminated (SIGTERM); finished stages are kept and a re-run resumes from them")
    assert (run_dir / "01-teacher").is_dir() and not (run_dir / "02-distill").exists()
    assert not [c for c in psutil.Process().children(recursive=True) if "edgekd" in " ".join(c.cmdline())]


def test_an_input_too_large_for_memory_is_a_user_error_naming_it(tmp_path: Path) -> None:
    """An input no machine can hold (7 rows of 4M × 4M floats, beyond any address space, so the allocation fails at
    once whatever the kernel's overcommit setting) was an 'internal error' with exit 1."""
    outcome = cli("export", "tests.user_modules:small_cnn", "--input-shape", "1,4194304,4194304", "--device",
                  "host-cpu", "--target", "onnx-fp32", "--out", tmp_path / "m")
    assert_user_error(outcome, "out of memory", "can't allocate memory", "use smaller ones")


def test_names_longer_than_the_filesystem_allows_are_one_line_errors(tmp_path: Path) -> None:
    """A path part over 255 bytes (a data file, a checkpoint or tokenizer id, --out) failed in the first stat():
    internal error, OSError ENAMETOOLONG."""
    from tests.reliability import text_recipe

    long = "x" * 300
    recipe = text_recipe(tmp_path)
    cases = {"data": {**recipe, "data": {**recipe["data"], "train": str(tmp_path / long)}},
             "pretrained": {**recipe, "teacher": {"model": {"arch": "hf", "pretrained": long}}},
             "tokenizer": {**recipe, "tokenizer": {"pretrained": long}}}
    for name, changed in cases.items():
        outcome = cli("validate", write_yaml(tmp_path / f"{name}.yaml", changed))
        assert_user_error(outcome, "a name longer than this filesystem allows (ENAMETOOLONG)", "x" * 40)
    outcome = cli("run", write_yaml(tmp_path / "recipe.yaml", recipe), "--out", tmp_path / long, "-q")
    assert_user_error(outcome, "a name longer than this filesystem allows", logged=True)


def test_profile_with_a_device_file_names_the_profile_not_the_path(tmp_path: Path) -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    text = (Path(__file__).parents[1] / "devices" / "host-cpu.yaml").read_text()
    device = tmp_path / "my-devices" / "lab-host.yaml"
    device.parent.mkdir()
    device.write_text(text.replace("name: host-cpu", "name: lab-host"))
    outcome = cli("profile", tmp_path / "m.onnx", "--device", device, "--runs", "10", "--warmup", "0")
    assert outcome.exit_code == 0, outcome.output
    assert "on lab-host" in outcome.output and "my-devices" not in outcome.output.split(" on ")[1], outcome.output
