"""Untrusted files: nothing edgekd loads can run code, and running a model's own code is explicit and reported.

The source checks grep ``edgekd/`` as the issue's checker does, docstrings and comments included:
no ``trust_remote_code=True`` (nor a default of true), ``torch.load(`` only with ``weights_only=True``,
``yaml.load(`` only with a safe loader. In code (comments and string literals blanked, since prose
saying "never pickle" is no use of it): no pickle or other object serializer, no ``eval(``/``exec(``
builtins (``module.eval()``, torch's switch to inference mode, is a method, not the builtin).
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import edgekd
from edgekd.artifacts import Artifact
from edgekd.config.device import load_device
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.models.specs import CNNSpec
from edgekd.models.task_model import build_task_model
from edgekd.report.build import build_report
from tests.reliability import assert_user_error, cli, text_recipe, tiny_recipe, write_yaml

PACKAGE = Path(edgekd.__file__).resolve().parent
#: Patterns forbidden anywhere in the source text: (pattern, whether only code counts).
FORBIDDEN = {
    "trust_remote_code=True": (re.compile(r"trust_remote_code\s*=\s*True"), False),
    "trust_remote_code defaulting to true": (
        re.compile(r"trust_remote_code\s*:[^=\n]*=\s*(True|Field\(\s*(default\s*=\s*)?True)"), False),
    "unsafe YAML loaders": (re.compile(r"yaml\.(unsafe_load|full_load|Loader|UnsafeLoader|FullLoader)\b"), False),
    "pickle": (re.compile(r"pickle", re.IGNORECASE), True),
    "other object serializers": (re.compile(r"\b(dill|joblib|marshal|shelve)\b"), True),
    "eval/exec/compile builtins": (re.compile(r"(?<![\w.])(eval|exec|compile|__import__)\s*\("), True),
    "torch.save (a pickle)": (re.compile(r"torch\.save\s*\("), True),
}
#: Calls allowed only with the given argument: (call, required argument).
GUARDED_CALLS = {"torch.load(": re.compile(r"weights_only\s*=\s*True"),
                 "yaml.load(": re.compile(r"Loader\s*=\s*(yaml\.)?C?SafeLoader"),
                 "yaml.load_all(": re.compile(r"Loader\s*=\s*(yaml\.)?C?SafeLoader")}


def _sources(code_only: bool = False) -> dict[Path, str]:
    """Every module of ``edgekd/``; with ``code_only``, comments and string literals blanked out."""
    texts = {path: path.read_text(encoding="utf-8") for path in sorted(PACKAGE.rglob("*.py"))}
    return {path: _code(text) for path, text in texts.items()} if code_only else texts


def _code(text: str) -> str:
    """``text`` with comments and string literals replaced by spaces (lines and columns kept)."""
    lines = text.splitlines(keepends=True)
    prose = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type in prose:
            (row, col), (end_row, end_col) = token.start, token.end
            for line in range(row, end_row + 1):
                start, stop = (col if line == row else 0), (end_col if line == end_row else len(lines[line - 1]))
                blank = re.sub(r"[^\n]", " ", lines[line - 1][start:stop])
                lines[line - 1] = lines[line - 1][:start] + blank + lines[line - 1][stop:]
    return "".join(lines)


@pytest.mark.parametrize("what", sorted(FORBIDDEN))
def test_source_has_no_code_running_loader(what: str) -> None:
    pattern, code_only = FORBIDDEN[what]
    found = [f"{path.relative_to(PACKAGE.parent)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for path, text in _sources(code_only).items() for m in pattern.finditer(text)]
    assert not found, f"{what} in edgekd/:\n" + "\n".join(found)


@pytest.mark.parametrize("call", sorted(GUARDED_CALLS))
def test_guarded_calls_always_pass_their_safe_argument(call: str) -> None:
    unsafe = []
    for path, text in _sources().items():
        for start in (m.start() for m in re.finditer(re.escape(call), text)):
            arguments = _call_arguments(text, start + len(call))
            if not GUARDED_CALLS[call].search(arguments):
                unsafe.append(f"{path.relative_to(PACKAGE.parent)}: {call}{arguments})")
    assert not unsafe, "\n".join(unsafe)


def _call_arguments(text: str, start: int) -> str:
    """The text between the opening parenthesis just before ``start`` and its closing one."""
    depth, end = 1, start
    while depth and end < len(text):
        depth += {"(": 1, ")": -1}.get(text[end], 0)
        end += 1
    return text[start:end - 1]


def test_yaml_tags_never_construct_python_objects(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"name: {tag}\n")
    outcome = cli("validate", recipe)
    assert_user_error(outcome, str(recipe), "malformed YAML")
    device = tmp_path / "device.yaml"
    device.write_text(f"name: phone\nbudget: {tag}\n")
    outcome = cli("validate", write_yaml(tmp_path / "uses-device.yaml", {**tiny_recipe(), "device": str(device)}))
    assert_user_error(outcome, str(device), "malformed YAML")
    assert not marker.exists()


def test_models_are_saved_as_safetensors_only(tmp_path: Path) -> None:
    signature = InputSignature(kind="image", image_shape=(1, 8, 8))
    model = build_task_model(CNNSpec(arch="cnn", channels=[4]), signature, tuple("0123456789"))
    directory = model.save(tmp_path / "student")
    assert sorted(p.name for p in directory.iterdir()) == ["edgekd_model.json", "model.safetensors"]
    with safe_open(str(directory / "model.safetensors"), framework="pt") as handle:
        assert all(isinstance(handle.get_tensor(key), torch.Tensor) for key in handle.keys())  # noqa: SIM118


def test_trust_remote_code_is_off_unless_the_recipe_says_so_and_then_reported(tmp_path: Path) -> None:
    recipe = text_recipe(tmp_path)
    device = load_device("host-cpu")
    plain = build_report(validate_model(recipe, Recipe, source="recipe"), device, Artifact(), [], cpu={})
    assert plain["trust_remote_code"] == [] and not any("trust_remote_code" in w for w in plain["warnings"])
    assert plain["recipe"]["teacher"]["model"]["trust_remote_code"] is False

    recipe["teacher"]["model"] = {"arch": "bert", "pretrained": "someone/custom-bert", "trust_remote_code": True}
    trusted = build_report(validate_model(recipe, Recipe, source="recipe"), device, Artifact(), [], cpu={})
    assert trusted["trust_remote_code"] == ["teacher.model"]
    assert any("teacher.model.trust_remote_code is true" in w and "someone/custom-bert" in w
               for w in trusted["warnings"])
