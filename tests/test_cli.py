"""CLI conventions: --version, completion, help without <bool>, uncut device names, --json, --budget-ms, --device."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from edgekd import __version__, catalog
from edgekd.cli import app
from edgekd.config.device import load_device
from tests.reliability import TINY_STAGES, assert_user_error, cli, tiny_onnx, tiny_recipe, write_yaml

COMMAND = typer.main.get_command(app)


def _invoke(*args: str | Path, columns: int = 200) -> click.testing.Result:
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": str(columns)})


def _commands(group: click.Group = COMMAND, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command path of the CLI (``("devices", "list")``, ...)."""
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer's own click, not click.Group, in typer ≥ 0.2x)
            paths += _commands(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


def test_version_and_completion() -> None:
    result = _invoke("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"edgekd {__version__}"
    root_help = _invoke("--help").stdout
    assert "--install-completion" in root_help and "--show-completion" in root_help


def test_the_command_line_starts_without_torch() -> None:
    """``--help``, ``--version`` and shell completion (which runs the program on every tab) import neither torch
    nor transformers: the API, which does, is imported when a command runs."""
    code = ("import sys; from edgekd.cli import app; from typer.testing import CliRunner; "
            "assert CliRunner().invoke(app, ['devices', 'list']).exit_code == 0; "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


@pytest.mark.parametrize("path", _commands(), ids=" ".join)
def test_help_has_an_example_and_no_type_after_flags(path: tuple[str, ...]) -> None:
    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.stdout
    assert "Example: edgekd " + " ".join(path) in " ".join(result.stdout.split())


@pytest.mark.parametrize("columns", [60, 80, 100, 140])
def test_devices_list_never_cuts_names(columns: int) -> None:
    result = _invoke("devices", "list", columns=columns)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= columns for line in lines), [line for line in lines if len(line) > columns]
    for name in catalog.names("devices"):
        assert any(line.split()[:1] == [name] for line in lines), f"{name} cut at {columns} columns:\n{result.stdout}"
        assert any(line.startswith(f"{name}: ") for line in lines)


def test_devices_list_json_is_every_profile() -> None:
    result = _invoke("devices", "list", "--json")
    assert result.exit_code == 0, result.output
    devices = json.loads(result.stdout)
    assert [d["name"] for d in devices] == [load_device(n).name for n in catalog.names("devices")]
    assert all(Path(d["source"]).is_file() and "budget" in d for d in devices)


def _command(path: tuple[str, ...]) -> click.Command:
    command = COMMAND
    for name in path:
        command = command.commands[name]
    return command


def _options(command: click.Command) -> list[list[str]]:
    """The names of each option of ``command`` (``["--quiet", "-q"]``)."""
    return [p.opts for p in command.params if p.param_type_name == "option"]


def _names_one(text: str, names: list[str]) -> bool:
    """Whether ``text`` names the option by one of its ``names`` (``-q`` for ``--quiet``), as a whole word."""
    return any(re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) for name in names)


def test_the_command_table_of_docs_cli_lists_every_option() -> None:
    """docs/cli.md's table lacked ``run --dry-run`` and ``--warmup`` of bench, export and bundle: each command's
    options are in its row(s), and the options before the command in the text below the table."""
    doc = (Path(__file__).parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    table = [line for line in doc.splitlines() if line.startswith("| `edgekd ")]
    missing = []
    for path in _commands():
        name = "edgekd " + " ".join(path)
        rows = " ".join(cell for line in table for cell in line.split("` / `") if cell.lstrip("| `").startswith(name)
                        and cell.lstrip("| `")[len(name):][:1] in (" ", "`"))
        assert rows, f"docs/cli.md has no row for {name}"
        missing += [f"{name} {names[0]}" for names in _options(_command(path)) if not _names_one(rows, names)]
    before = doc.split("`RECIPE` is a YAML path", 1)[1].split("```", 1)[0]
    missing += [f"edgekd {names[0]}" for names in _options(COMMAND) if not _names_one(before, names)]
    assert missing == [], f"docs/cli.md does not list: {', '.join(missing)}"


def test_demo_help_names_the_directory_the_demo_runs_into() -> None:
    """``edgekd demo --help`` said ``default runs/<recipe name>`` (runs/demo-digits); the demo runs into runs/demo."""
    assert "(default runs/demo)" in " ".join(_invoke("demo", "--help").stdout.split())


def test_validate_json(write_recipe) -> None:
    recipe = write_recipe()
    result = _invoke("validate", recipe, "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["ok"] is True and record["source"] == str(recipe)
    assert record["stages"] == ["teacher", "distill", "export", "profile", "bundle", "report"]


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_debug_adds_the_traceback_and_keeps_the_exit_code(debug: bool, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``edgekd --debug validate bad.yaml`` printed the traceback alone and exited 1, a user error read as a bug."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    flag = ["--debug"] if debug else []
    user = _invoke(*flag, "validate", bad)
    assert user.exit_code == 2, user.output
    assert f"error: {bad}: malformed YAML" in " ".join(user.output.split())
    assert ("Traceback (most recent call last)" in user.output) == debug
    monkeypatch.setattr("edgekd.api.validate", lambda *_a, **_k: 1 / 0)  # a bug in edgekd
    internal = _invoke(*flag, "validate", bad)
    assert internal.exit_code == 1, internal.output
    assert "internal error: ZeroDivisionError: division by zero" in internal.output
    assert ("Traceback (most recent call last)" in internal.output) == debug


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A tiny run with a report, made through ``edgekd run --json --budget-ms 1000``, and its JSON output."""
    root = tmp_path_factory.mktemp("cli-run")
    recipe = write_yaml(root / "recipe.yaml", tiny_recipe(stages=(*TINY_STAGES, "report")))
    result = _invoke("run", recipe, "--out", root / "run", "--json", "--budget-ms", "1000")
    assert result.exit_code == 0, result.output
    return root / "run", json.loads(result.stdout)


def test_run_json_has_stages_and_report(finished_run: tuple[Path, dict]) -> None:
    run_dir, record = finished_run
    assert record["run_dir"] == str(run_dir)
    assert [s["stage"] for s in record["stages"]] == [*TINY_STAGES, "report"]
    assert all(not s["skipped"] and s["wall_seconds"] >= 0 for s in record["stages"])
    assert record["report"] == json.loads((run_dir / "report.json").read_text())


def test_run_budget_ms_replaces_the_device_budget(finished_run: tuple[Path, dict], tmp_path: Path) -> None:
    _, record = finished_run
    assert record["report"]["budget"]["limits"]["p90_ms"] == 1000
    assert record["report"]["device"]["budget"]["p90_ms"] == 1000
    recipe = write_yaml(tmp_path / "recipe.yaml", tiny_recipe())
    for budget, fragment in (("1e-9", "--budget-ms 1e-09"), ("-1", "greater than 0"), ("0", "greater than 0")):
        assert_user_error(cli("run", recipe, "--out", tmp_path / "run", "--budget-ms", budget), fragment)
    assert not (tmp_path / "run").exists()


def test_report_and_bench_json(finished_run: tuple[Path, dict], tmp_path: Path) -> None:
    run_dir, _ = finished_run
    report = _invoke("report", run_dir, "--json")
    assert report.exit_code == 0, report.output
    files = json.loads(report.stdout)["files"]
    assert {Path(f).name for f in files} >= {"report.json", "report.md", "report.html"}
    assert all(Path(f).is_file() for f in files)
    models = [run_dir / "03-export" / f"{role}.onnx" for role in ("teacher", "student")]
    bench = _invoke("bench", *models, "--out", tmp_path / "bench", "--runs", "10", "--rounds", "1", "--warmup", "1",
                    "--json")
    assert bench.exit_code == 0, bench.output
    record = json.loads(bench.stdout)
    assert record == json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert [m["name"] for m in record["models"]] == ["teacher.onnx", "student.onnx"]


def test_export_takes_a_device_for_its_input_shapes(tmp_path: Path) -> None:
    model = tiny_onnx(tmp_path / "m.onnx")
    result = _invoke("export", model, "--device", "raspberry-pi-4", "--out", tmp_path / "mobile")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mobile" / "m.ort").is_file()
    assert_user_error(cli("export", model, "--device", "no-such-device", "--out", tmp_path / "other"),
                      "no-such-device")


def test_a_failing_command_run_with_json_prints_its_error_as_json_on_stdout(tmp_path: Path) -> None:
    """`edgekd validate bad.yaml --json` printed nothing on stdout: a script reading it got no document."""
    bad = write_yaml(tmp_path / "bad.yaml", {**tiny_recipe(), "seed": "many"})
    result = _invoke("validate", bad, "--json")
    assert result.exit_code == 2
    answer = json.loads(result.stdout)
    assert answer["exit_code"] == 2 and answer["internal"] is False
    assert answer["error"].startswith(f"{bad}: seed:") and answer["error"] in " ".join(result.stderr.split())
    plain = _invoke("validate", bad)
    assert plain.exit_code == 2 and plain.stdout == ""  # without --json, the one line on stderr only


def _json_commands() -> list[tuple[str, ...]]:
    """Every command path that takes ``--json``."""
    return [path for path in _commands() if "--json" in _invoke(*path, "--help").stdout]


@pytest.mark.parametrize("path", _json_commands(), ids=" ".join)
def test_a_usage_error_of_any_command_given_json_is_its_json_document(path: tuple[str, ...]) -> None:
    """An unknown option (a mistake click catches while it reads the arguments, before the command runs) printed
    nothing on stdout and a usage box on stderr, though ``--json`` promises a document either way."""
    result = _invoke(*path, "--json", "--no-such-option")
    assert result.exit_code == 2, result.output
    answer = json.loads(result.stdout)
    assert answer == {"error": answer["error"], "internal": False, "exit_code": 2}
    assert "No such option: --no-such-option" in answer["error"] and f"{' '.join(path)} --help" in answer["error"]
    assert result.stderr.splitlines() == [f"error: {answer['error']}"]
    plain = _invoke(*path, "--no-such-option")  # without --json: click's usage box, nothing on stdout
    assert plain.exit_code == 2 and plain.stdout == "" and "Usage:" in plain.stderr


@pytest.mark.parametrize(("args", "message"), [
    (("nosuch", "--json"), "No such command 'nosuch'; see 'edgekd --help'"),
    (("devices", "lst", "--json"), "No such command 'lst'. Did you mean 'list'? See 'edgekd devices --help'"),
    (("--json",), "No command before --json, which commands take after their name "
                  "('edgekd COMMAND [ARGS]... --json'); see 'edgekd --help'"),
    (("devices", "--json"), "No command before --json, which commands take after their name "
                            "('edgekd devices COMMAND [ARGS]... --json'); see 'edgekd devices --help'"),
    (("--debug", "--json", "run", "recipe.yaml"), "No command before --json, which commands take after their name "
                                                  "('edgekd COMMAND [ARGS]... --json'); see 'edgekd --help'"),
], ids=["unknown", "unknown-in-group", "missing", "missing-in-group", "before-the-command"])
def test_no_command_chosen_given_json_is_the_json_document(args: tuple[str, ...], message: str) -> None:
    """An unknown command name or none (``edgekd nosuch --json``, ``edgekd --json``) printed click's usage box and
    nothing on stdout, though every command's usage error given ``--json`` is its JSON document."""
    result = _invoke(*args)
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout) == {"error": message, "internal": False, "exit_code": 2}
    assert result.stderr.splitlines() == [f"error: {message}"]
    plain = _invoke(*(arg for arg in args if arg != "--json"), "nosuch")  # no --json (a stray word: never valid)
    assert plain.exit_code == 2 and plain.stdout == "" and "Usage:" in plain.stderr
    after_dashes = _invoke("nosuch", "--", "--json")  # after --, --json is an argument's value
    assert after_dashes.exit_code == 2 and after_dashes.stdout == "" and "Usage:" in after_dashes.stderr


@pytest.mark.parametrize(("args", "said"), [
    (("run", "RECIPE", "--budget-ms", "abc", "--dry-run"), "Invalid value for '--budget-ms'"),
    (("run", "RECIPE", "--threads", "-3"), "expected a positive number of threads or 'auto', got '-3'"),
    (("validate", "RECIPE", "--budget-ms", "abc"), "Invalid value for '--budget-ms'"),
    (("profile", "model.onnx", "--runs", "0"), "Invalid value for '--runs': expected 10 to"),
    (("run",), "Missing argument 'recipe'"),
], ids=["mistyped", "parser", "validate", "out-of-range", "missing"])
def test_a_bad_option_value_or_missing_argument_given_json_is_the_json_document(
        args: tuple[str, ...], said: str, write_recipe) -> None:
    """The same kind of mistake caught later (``--budget-ms -1``) was a JSON document; one caught by click was not."""
    recipe = str(write_recipe(tiny_recipe()))
    args = tuple(recipe if arg == "RECIPE" else arg for arg in args)
    result = _invoke(*args, "--json")
    assert result.exit_code == 2, result.output
    assert said in json.loads(result.stdout)["error"] and said in result.stderr
    assert_user_error(cli(*args, "--json"), said)
