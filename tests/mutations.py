"""Seeded mutations of valid inputs for the fuzz test: recipes, device profiles, text data files, ONNX models.

Every :class:`Case` knows by construction whether its input is still valid. A deleted key that has a
default, an in-range number, a new label in the training split or a reformatted YAML file leaves the
input valid; a deleted required key, a misspelled key, a wrong type, an out-of-range number, an
impossible budget, broken YAML, a bad data file, a truncated or corrupted ONNX file does not. Which
keys are required and which ranges hold is written out here from the documented configuration, not
taken from edgekd's validation (its models are read only so that a typo never lands on another real
key), and every generator that relies on a property of its output (YAML that does not parse, an
ONNX opset past the newest, a flipped operator name no ONNX operator has) checks it.
"""

from __future__ import annotations

import copy
import io
import json
import random
import re
import typing
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import yaml
from pydantic import BaseModel

from edgekd import config
from tests.reliability import text_recipe, tiny_recipe

Key = tuple[str | int, ...]

#: Keys of the tiny recipe that have no default (``*`` for any list index).
RECIPE_REQUIRED = {"name", "data", "data.source", "data.name", "teacher", "teacher.model", "teacher.model.arch",
                   "teacher.model.channels", "student", "student.model", "student.model.arch",
                   "student.model.channels", "stages", "stages[*].stage", "stages[*].losses[*].kind"}
#: Numbers of the tiny recipe: (values out of their documented range, values inside it).
RECIPE_NUMBERS: dict[str, tuple[list[float], list[float]]] = {
    "seed": ([-1, -100], [0, 7]),
    "data.val_fraction": ([0, 1, -0.1, 1.5], [0.05, 0.3]),
    "data.test_fraction": ([0, 1, 2.5], [0.1, 0.4]),
    "data.limit": ([0, -5], [600]),
    "teacher.model.channels[0]": ([0, -8], [1, 3]),
    "teacher.model.hidden": ([0, -16], [1]),
    "teacher.model.dropout": ([1, 1.5, -0.2], [0, 0.5]),
    "student.model.hidden": ([0], [2]),
    "stages[0].epochs": ([0, -3], [1]),
    "stages[0].batch_size": ([0], [1, 7]),
    "stages[0].lr": ([0, -0.001], [1e-6, 0.5]),
    "stages[1].epochs": ([0], [2]),
    "stages[1].weight_decay": ([-1e-4], [0, 0.1]),
    "stages[1].warmup_ratio": ([1, -0.5], [0, 0.5]),
    "stages[1].max_grad_norm": ([0, -1], [1]),
    "stages[1].patience": ([0], [3]),
    "stages[1].losses[0].temperature": ([0, -1, -4], [1e-3, 20]),
    "stages[1].losses[0].alpha": ([-0.1, 1.5, 2], [0, 1]),
    "stages[3].runs": ([9, 0], [10, 50]),
    "stages[3].warmup": ([-1], [0]),
}
#: Names (enum values, catalog entries) of the tiny recipe, misspelled by the fuzz test.
RECIPE_NAMES = ("stages[0].stage", "stages[1].stage", "stages[4].stage", "teacher.model.arch", "student.model.arch",
                "stages[1].losses[0].kind", "data.source", "data.name", "device", "stages[2].target")

DEVICE: dict[str, Any] = {
    "name": "fuzz-device", "description": "a device profile for the fuzz test", "threads": 1,
    "inputs": {"batch": 1, "sequence_length": 32, "image_size": None},
    "budget": {"p90_ms": 50.0, "size_mb": 10.0, "peak_memory_mb": 512.0}, "precision": "fp32", "isa": "detect",
}
DEVICE_REQUIRED = {"name", "budget", "budget.p90_ms", "budget.size_mb", "budget.peak_memory_mb"}
DEVICE_VALUES: dict[str, tuple[list[Any], list[Any]]] = {
    "threads": ([0, -2, "many"], [2, "auto"]),
    "inputs.batch": ([0, -1], [4]),
    "inputs.sequence_length": ([0], [128]),
    "inputs.image_size": ([0, -8], [8]),
    "budget.p90_ms": ([0, -5], [0.5, 1000]),
    "budget.size_mb": ([0, -1], [0.05]),
    "budget.peak_memory_mb": ([0, -64], [64]),
    "precision": (["int4", "FP32"], ["int8"]),
    "isa": (["neon"], [["neon", "dotprod"]]),
}
#: Budgets no model meets on any machine: 0.1 µs per call, under a megabyte for a runtime session, one byte.
IMPOSSIBLE_BUDGETS = {"budget.p90_ms": [1e-4, 1e-6], "budget.peak_memory_mb": [0.5, 0.001], "budget.size_mb": [1e-6]}
REFERENCE = {"model": "mobilebert-seq128", "latency_ms": 62, "threads": 4, "source": "a published benchmark table"}

#: Lines no YAML parser accepts, wherever they stand (each generated file is checked).
YAML_BREAKERS = ("\tindented: with a tab", "key: [unclosed", "key: {unclosed: 1", 'key: "unclosed',
                 "key: value: more", "key: *undefined_alias", "key: !!python/object/apply:os.system ['echo pwned']",
                 "key: \x00", "---\nsecond: document")
NOT_MAPPINGS = ("- a\n- b\n", "42\n", "", "# only a comment\n", "~\n", "just a sentence\n")

#: ONNX protobuf field numbers (onnx/onnx.proto).
MODEL_IR_VERSION, MODEL_GRAPH, MODEL_OPSET_IMPORT = 1, 7, 8
OPSET_DOMAIN, OPSET_VERSION = 1, 2
GRAPH_NODE, GRAPH_INITIALIZER, GRAPH_INPUT = 1, 5, 11
NODE_OP_TYPE, TENSOR_DATA_TYPE, TENSOR_RAW_DATA, VALUE_NAME = 4, 2, 9, 1


@dataclass(frozen=True)
class Case:
    """One fuzz input: the files to write, the ``edgekd`` command, and whether the input is valid.

    An invalid case's one-line error must name ``names_file`` and at least one of ``names_one_of``.
    """

    category: str
    detail: str
    files: dict[Path, bytes]
    args: tuple[str, ...]
    valid: bool
    names_file: str = ""
    names_one_of: tuple[str, ...] = ()


Make = Callable[[Path], Case]
"""Builds a case in the directory it is given (absolute paths are written into recipes)."""


def generate(root: Path, base_onnx: bytes, seed: int = 0) -> list[Case]:
    """Every fuzz case, each in its own directory under ``root`` (only the text data's originals are written)."""
    rng = random.Random(seed)
    makers = [*recipe_cases(rng), *device_cases(rng), *data_cases(rng, root / "text-base"),
              *onnx_cases(rng, base_onnx)]
    return [make(root / f"{index:03d}") for index, make in enumerate(makers)]


# --------------------------------------------------------------------------- keys of nested YAML data


def show(key: Key) -> str:
    """A key path as edgekd's messages write it: ``stages[1].losses[0].alpha``."""
    text = ""
    for part in key:
        text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + part
    return text


def parse(text: str) -> Key:
    """The inverse of :func:`show`."""
    return tuple(int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", text))


def keys(tree: Any, prefix: Key = ()) -> list[Key]:
    """Every mapping key of ``tree``, depth first, as paths."""
    found: list[Key] = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for name, value in items:
        if isinstance(name, str):
            found.append((*prefix, name))
        found.extend(keys(value, (*prefix, name)))
    return found


def required(key: Key, patterns: set[str]) -> bool:
    """Whether ``key`` matches one of the ``patterns`` (``*`` for any index)."""
    return re.sub(r"\[\d+\]", "[*]", show(key)) in patterns


def edited(tree: Any, key: Key, change: Callable[[dict | list, str | int], None]) -> Any:
    """A deep copy of ``tree`` with ``change(parent, last)`` applied where ``key`` points."""
    tree = copy.deepcopy(tree)
    parent = tree
    for part in key[:-1]:
        parent = parent.setdefault(part, {}) if isinstance(parent, dict) else parent[part]
    change(parent, key[-1])
    return tree


def with_value(tree: Any, key: Key, value: Any) -> Any:
    return edited(tree, key, lambda parent, last: parent.__setitem__(last, value))


def without(tree: Any, key: Key) -> Any:
    return edited(tree, key, lambda parent, last: parent.__delitem__(last))


def renamed(tree: Any, key: Key, name: str) -> Any:
    return edited(tree, key, lambda parent, last: parent.__setitem__(name, parent.pop(last)))


def misspelled(word: str, rng: random.Random, taken: set[str]) -> str:
    """A typo of ``word`` (swapped, dropped, doubled or changed letter) that is none of ``taken``."""
    while True:
        i = rng.randrange(len(word))
        typo = rng.choice([
            word[:i] + word[i + 1:i + 2] + word[i:i + 1] + word[i + 2:],
            word[:i] + word[i + 1:],
            word[:i] + word[i] + word[i:],
            word[:i] + rng.choice("aeiorstnx") + word[i + 1:],
        ])
        if typo and typo != word and typo not in taken:
            return typo


def wrong_type(value: Any, rng: random.Random) -> Any:
    """A value of a type no field holding ``value`` accepts (no coercion turns it back)."""
    if isinstance(value, dict):
        return rng.choice([["a", "list"], "a sentence", 3])
    if isinstance(value, list):
        return rng.choice([{"a": 1}, "a sentence"])
    if isinstance(value, int | float):
        return rng.choice(["lots", [value], {"value": value}])
    return rng.choice([{"value": value}, [{"value": value}]])


def _field_names() -> set[str]:
    """Every key name any edgekd config model has (a typo must not be another valid key)."""
    models = [m for m in vars(config).values() if isinstance(m, type) and issubclass(m, BaseModel)]
    return {name for model in models for name in model.model_fields} | {
        arg for m in models for f in m.model_fields.values() for arg in typing.get_args(f.annotation)
        if isinstance(arg, str)}


FIELD_NAMES = _field_names()


def yaml_bytes(data: Any) -> bytes:
    """``data`` as YAML, one scalar per line (so that lines can be commented or broken one at a time)."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1 << 20).encode()


def broken_yaml(text: str, breaker: str, rng: random.Random) -> bytes:
    """``text`` with ``breaker`` inserted as a line at a random place, checked not to parse."""
    lines = text.splitlines()
    for _ in range(20):
        at = rng.randrange(len(lines) + 1)
        broken = "\n".join([*lines[:at], breaker, *lines[at:]]) + "\n"
        try:
            yaml.safe_load(broken)
        except yaml.YAMLError:
            return broken.encode()
    raise AssertionError(f"{breaker!r} did not break the YAML anywhere")


# --------------------------------------------------------------------------- recipes and device profiles


def _recipe_case(category: str, detail: str, content: bytes | Any, valid: bool, *names: str) -> Make:
    """A ``validate`` of a recipe (a dict, dumped as YAML, or raw bytes) using the built-in host-cpu profile."""

    def make(directory: Path) -> Case:
        recipe = directory / "recipe.yaml"
        data = content if isinstance(content, bytes) else yaml_bytes(content)
        return Case(category, detail, {recipe: data}, ("validate", str(recipe)), valid, str(recipe), names)

    return make


def _device_case(category: str, detail: str, content: bytes | Any, valid: bool, *names: str) -> Make:
    """A ``validate`` of the tiny recipe on a device profile (a dict, dumped as YAML, or raw bytes)."""

    def make(directory: Path) -> Case:
        device, recipe = directory / "device.yaml", directory / "recipe.yaml"
        data = content if isinstance(content, bytes) else yaml_bytes(content)
        files = {device: data, recipe: yaml_bytes({**tiny_recipe(), "device": str(device)})}
        return Case(category, detail, files, ("validate", str(recipe)), valid, str(device), names)

    return make


def _key_mutations(base: dict[str, Any], needed: set[str], rng: random.Random, count: int,
                   case: Callable[..., Make], kind: str) -> Iterator[Make]:
    """Deleted, misspelled and retyped keys of ``base``; a deletion is valid where the key has a default."""
    paths = keys(base)
    for key in rng.sample(paths, count):
        is_required = required(key, needed)
        yield case(f"{kind}/delete-{'required' if is_required else 'optional'}", f"deleted {show(key)}",
                   without(base, key), not is_required, show(key))
    for key in rng.sample(paths, count):
        typo = misspelled(str(key[-1]), rng, FIELD_NAMES)
        yield case(f"{kind}/misspelled-key", f"{show(key)} → {typo}", renamed(base, key, typo), False,
                   show(key), show((*key[:-1], typo)))
    for key in rng.sample(paths, count):
        value = wrong_type(_get(base, key), rng)
        yield case(f"{kind}/wrong-type", f"{show(key)} = {value!r}", with_value(base, key, value), False,
                   *(name for name in (show(key), show(key[:-1])) if name))


def _get(tree: Any, key: Key) -> Any:
    for part in key:
        tree = tree[part]
    return tree


def _value_mutations(base: dict[str, Any], table: dict[str, tuple[list[Any], list[Any]]],
                     case: Callable[..., Make], kind: str) -> Iterator[Make]:
    for text, (bad, good) in table.items():
        for value in bad:
            yield case(f"{kind}/out-of-range", f"{text} = {value!r}", with_value(base, parse(text), value), False, text)
        for value in good:
            yield case(f"{kind}/in-range", f"{text} = {value!r}", with_value(base, parse(text), value), True)


def _text_mutations(base: dict[str, Any], rng: random.Random, case: Callable[..., Make], kind: str,
                    breakers: tuple[str, ...]) -> Iterator[Make]:
    """Broken YAML, top levels that are not mappings, and reformattings that keep the content valid."""
    text = yaml_bytes(base).decode()
    for breaker in breakers:
        yield case(f"{kind}/malformed-yaml", f"line {breaker!r} inserted", broken_yaml(text, breaker, rng), False,
                   "malformed YAML")
    at = rng.randrange(len(text))
    yield case(f"{kind}/malformed-yaml", "a byte that is not UTF-8", (text[:at] + "\n").encode() + b"\xff\xfe\n",
               False, "cannot read file")
    for other in NOT_MAPPINGS:
        yield case(f"{kind}/not-a-mapping", f"top level {other!r}", other.encode(), False, "expected a mapping")
    yield case(f"{kind}/reformatted", "flow style", yaml.safe_dump(base, default_flow_style=True).encode(), True)
    yield case(f"{kind}/reformatted", "as JSON", json.dumps(base, indent=1).encode(), True)
    yield case(f"{kind}/reformatted", "keys shuffled", yaml_bytes(_shuffled(base, rng)), True)
    lines = text.splitlines()
    commented = [line + ("  # a comment" if rng.random() < 0.5 else "") for line in lines]
    yield case(f"{kind}/reformatted", "comments, blank lines, document marker",
               ("---\n# fuzz\n\n" + "\n\n".join(commented) + "\n").encode(), True)


def _shuffled(tree: Any, rng: random.Random) -> Any:
    if isinstance(tree, dict):
        items = list(tree.items())
        rng.shuffle(items)
        return {k: _shuffled(v, rng) for k, v in items}
    return [_shuffled(v, rng) for v in tree] if isinstance(tree, list) else tree


def recipe_cases(rng: random.Random) -> Iterator[Make]:
    """Mutations of the tiny recipe, checked with ``edgekd validate``."""
    base = tiny_recipe()
    yield _recipe_case("recipe/unchanged", "the tiny recipe", base, True)
    yield from _key_mutations(base, RECIPE_REQUIRED, rng, 12, _recipe_case, "recipe")
    yield from _value_mutations(base, RECIPE_NUMBERS, _recipe_case, "recipe")
    for ratio in (1, 1.5, 0, -0.2):
        stages = [*base["stages"][:2], {"stage": "prune", "ratio": ratio}, *base["stages"][2:]]
        yield _recipe_case("recipe/out-of-range", f"prune ratio {ratio}", {**base, "stages": stages}, False,
                           "stages[2].ratio")
    for text in RECIPE_NAMES:
        key = parse(text)
        typo = misspelled(_get(base, key), rng, FIELD_NAMES)
        yield _recipe_case("recipe/unknown-name", f"{text} = {typo!r}", with_value(base, key, typo), False, text,
                           "device")
    yield _recipe_case("recipe/unknown-name", "device file missing", {**base, "device": "/nonexistent/phone.yaml"},
                       False, "phone.yaml")
    yield from _stage_order_cases(base)
    yield from _text_mutations(base, rng, _recipe_case, "recipe", YAML_BREAKERS)


def _stage_order_cases(base: dict[str, Any]) -> Iterator[Make]:
    """Stage lists that break (or keep) the documented order: each stage once, after what it needs."""
    stages = base["stages"]
    by_name = {stage["stage"]: stage for stage in stages}
    invalid = {
        "teacher twice": [stages[0], *stages], "export twice": [*stages[:3], stages[2], *stages[3:]],
        "profile twice": [*stages, by_name["profile"]], "bundle twice": [*stages, by_name["bundle"]],
        "no teacher": stages[1:], "no export": [s for s in stages if s["stage"] != "export"],
        "no profile": [s for s in stages if s["stage"] != "profile"], "export first": [stages[2], *stages[:2],
                                                                                           *stages[3:]],
        "no stages": [], "distill twice into the student": [*stages[:2], stages[1], *stages[2:]],
        "distill from the assistant": [stages[0], {**stages[1], "teacher": "assistant"}, *stages[2:]],
        "distill the teacher into itself": [stages[0], {**stages[1], "student": "teacher"}, *stages[2:]],
    }
    for detail, changed in invalid.items():
        yield _recipe_case("recipe/stage-order", detail, {**base, "stages": changed}, False, "stages")
    valid = {"no bundle": stages[:4], "report added": [*stages, {"stage": "report"}],
             "no distill": [s for s in stages if s["stage"] != "distill"]}
    for detail, changed in valid.items():
        yield _recipe_case("recipe/stage-order-valid", detail, {**base, "stages": changed}, True)


def device_cases(rng: random.Random) -> Iterator[Make]:
    """Mutations of a device profile, checked with ``edgekd validate`` of a recipe naming it."""
    yield _device_case("device/unchanged", "the fuzz device", DEVICE, True)
    yield from _key_mutations(DEVICE, DEVICE_REQUIRED, rng, 6, _device_case, "device")
    yield from _value_mutations(DEVICE, DEVICE_VALUES, _device_case, "device")
    for text, values in IMPOSSIBLE_BUDGETS.items():
        for value in values:
            yield _device_case("device/impossible-budget", f"{text} = {value}",
                               with_value(DEVICE, parse(text), value), False, f"{text}: {value:g} is impossible")
    yield _device_case("device/reference", "a valid reference figure", {**DEVICE, "reference": REFERENCE}, True)
    for key, value in (("model", "resnet-9000"), ("latency_ms", 0), ("source", "short"), ("threads", 0)):
        yield _device_case("device/reference", f"reference.{key} = {value!r}",
                           {**DEVICE, "reference": {**REFERENCE, key: value}}, False, f"reference.{key}")
    yield from _text_mutations(DEVICE, rng, _device_case, "device", YAML_BREAKERS[:4])


# --------------------------------------------------------------------------- text data files


def data_cases(rng: random.Random, base_dir: Path) -> Iterator[Make]:
    """Mutations of the text recipe's TSV files (and of its ``val_examples``), checked with ``edgekd validate``."""
    base_dir.mkdir(parents=True, exist_ok=True)
    recipe = text_recipe(base_dir)
    train, dev = ((base_dir / name).read_text().splitlines() for name in ("train.tsv", "dev.tsv"))
    recipe["data"].update(train="train.tsv", test="dev.tsv")

    def case(category: str, detail: str, files: dict[str, bytes | None], valid: bool, names_file: str,
             *names: str, val_examples: int | None = None) -> Make:
        contents = {"train.tsv": _tsv(train), "dev.tsv": _tsv(dev), **files}
        data = {**recipe["data"], **({"val_examples": val_examples} if val_examples else {})}

        def make(directory: Path) -> Case:
            written = {directory / name: content for name, content in contents.items() if content is not None}
            written[directory / "recipe.yaml"] = yaml_bytes({**recipe, "data": data})
            return Case(category, detail, written, ("validate", str(directory / "recipe.yaml")), valid,
                        str(directory / names_file), names)

        return make

    for name, lines in (("train.tsv", train), ("dev.tsv", dev)):
        yield case("data/wrong-columns", f"{name}: column 'sentence' renamed",
                   {name: _tsv([lines[0].replace("sentence", "text"), *lines[1:]])}, False, name, "no column")
        yield case("data/wrong-columns", f"{name}: label column dropped",
                   {name: _tsv([line.split("\t")[0] for line in lines])}, False, name, "no column 'label'")
        row = rng.randrange(1, len(lines))
        yield case("data/wrong-columns", f"{name}: a field too many on line {row + 1}",
                   {name: _tsv(_replaced(lines, row, lines[row] + "\textra"))}, False, name, f"line {row + 1}")
        yield case("data/wrong-columns", f"{name}: a field missing on line {row + 1}",
                   {name: _tsv(_replaced(lines, row, lines[row].split("\t")[0]))}, False, name, f"line {row + 1}")
        yield case("data/empty", f"{name}: empty file", {name: b""}, False, name, "empty file")
        yield case("data/empty", f"{name}: header line only", {name: _tsv(lines[:1])}, False, name, "no data rows")
        yield case("data/unreadable", f"{name}: not UTF-8",
                   {name: _tsv(lines[:row]) + b"caf\xe9\t1\n" + _tsv(lines[row:])}, False, name, "UTF-8")
        yield case("data/missing", f"{name} missing", {name: None}, False, name, "file not found")
    for label in ("2", "positive", "-1"):
        row = rng.randrange(1, len(dev))
        sentence = dev[row].split("\t")[0]
        yield case("data/unknown-label", f"dev.tsv line {row + 1}: label {label!r}",
                   {"dev.tsv": _tsv(_replaced(dev, row, f"{sentence}\t{label}"))}, False, "dev.tsv",
                   f"label '{label}'")
    for count in (len(train) - 1, 10_000):
        yield case("data/too-small", f"val_examples = {count}", {}, False, "train.tsv", "val_examples",
                   val_examples=count)
    row = rng.randrange(1, len(train))
    sentence = train[row].split("\t")[0]
    shuffled = train[1:]
    rng.shuffle(shuffled)
    valid = {
        "a third label in the training split": {"train.tsv": _tsv(_replaced(train, row, f"{sentence}\t2"))},
        "byte-order mark": {"train.tsv": b"\xef\xbb\xbf" + _tsv(train)},
        "CRLF line ends and blank lines": {"dev.tsv": "\r\n\r\n".join(dev).encode() + b"\r\n"},
        "rows shuffled": {"train.tsv": _tsv([train[0], *shuffled])},
        "an extra column first": {"dev.tsv": _tsv([f"{i}\t{line}" for i, line in enumerate(dev)])},
    }
    for detail, files in valid.items():
        yield case("data/valid-variation", detail, files, True, "")


def _tsv(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _replaced(lines: list[str], row: int, line: str) -> list[str]:
    return [*lines[:row], line, *lines[row + 1:]]


# --------------------------------------------------------------------------- ONNX files


@dataclass(frozen=True)
class WireField:
    """One field of a serialized protobuf message: its number and where its value lies.

    ``prefix`` is where the length of a length-delimited field starts (else the value's start).
    """

    number: int
    prefix: int
    start: int
    end: int


def wire_fields(data: bytes, start: int = 0, end: int | None = None, number: int | None = None) -> list[WireField]:
    """The fields of the message in ``data[start:end]`` (only those numbered ``number``, if given)."""
    end = len(data) if end is None else end
    found, pos = [], start
    while pos < end:
        key, pos = _varint(data, pos)
        wire, prefix = key & 7, pos
        if wire == 0:
            value_start, (_, after) = pos, _varint(data, pos)
        elif wire == 2:
            length, value_start = _varint(data, pos)
            after = value_start + length
        else:
            value_start, after = pos, pos + {1: 8, 5: 4}[wire]
        found.append(WireField(key >> 3, prefix, value_start, after))
        pos = after
    return [f for f in found if number is None or f.number == number]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        value, shift, pos = value | (byte & 0x7F) << shift, shift + 7, pos + 1
        if not byte & 0x80:
            return value, pos


def flipped(data: bytes, at: int, bit: int) -> bytes:
    return data[:at] + bytes([data[at] ^ (1 << bit)]) + data[at + 1:]


def _onnx_case(category: str, detail: str, content: bytes | None, valid: bool, *names: str,
               device: dict[str, Any] | None = None, directory_instead: bool = False) -> Make:
    """``edgekd profile`` of ``content`` (None: no file at all) on host-cpu or on ``device``."""

    def make(directory: Path) -> Case:
        model = directory / "model.onnx"
        files = {} if content is None or directory_instead else {model: content}
        if directory_instead:
            files[model / "inside.txt"] = b"a directory, not a model"
        args = ["profile", str(model), "--runs", "10", "--warmup", "0", "--json"]
        if device is not None:
            files[directory / "device.yaml"] = yaml_bytes(device)
            args += ["--device", str(directory / "device.yaml")]
        return Case(category, detail, files, tuple(args), valid, str(model), names or ("model.onnx",))

    return make


def onnx_cases(rng: random.Random, base: bytes) -> Iterator[Make]:
    """Truncated, bit-flipped, semantically broken, foreign and harmlessly changed ONNX files."""
    (graph,) = wire_fields(base, number=MODEL_GRAPH)
    yield _onnx_case("onnx/unchanged", "the exported model", base, True)
    for cut in sorted(rng.sample(range(graph.end), 30)):  # a cut before the graph's end loses nodes or the wire format
        yield _onnx_case("onnx/truncated", f"first {cut} of {len(base)} bytes", base[:cut], False)
    yield from _bit_flips(rng, base, graph)
    yield from _broken_graphs(base)
    yield from _foreign_files(rng, base)


def _bit_flips(rng: random.Random, base: bytes, graph: WireField) -> Iterator[Make]:
    """Single-bit flips whose effect is known: in weights (valid), in names, lengths and versions (invalid)."""
    proto = onnx.load_from_string(base)
    names = {n for node in proto.graph.node for n in (*node.input, *node.output)} | {
        t.name for t in proto.graph.initializer}
    nodes = wire_fields(base, graph.start, graph.end, GRAPH_NODE)
    flips = 0
    while flips < 3:
        (op_type,) = wire_fields(base, *_span(rng.choice(nodes)), NODE_OP_TYPE)
        at, bit = rng.randrange(op_type.start, op_type.end), rng.randrange(8)
        new = flipped(base, at, bit)[op_type.start:op_type.end].decode("latin-1")
        if not onnx.defs.has(new):  # a flip to another real operator (Relu → Selu) could still run
            flips += 1
            yield _onnx_case("onnx/bit-flip", f"operator {base[op_type.start:op_type.end].decode()} → {new!r}",
                             flipped(base, at, bit), False)
    (value,) = wire_fields(base, graph.start, graph.end, GRAPH_INPUT)
    (name,) = wire_fields(base, value.start, value.end, VALUE_NAME)
    for _ in range(2):
        at, bit = rng.randrange(name.start, name.end), rng.randrange(7)
        assert flipped(base, at, bit)[name.start:name.end].decode("latin-1") not in names
        yield _onnx_case("onnx/bit-flip", "graph input renamed: no node reads it", flipped(base, at, bit), False)
    growing = [(i, b) for i in range(graph.start - graph.prefix) for b in range(7)
               if not base[graph.prefix + i] >> b & 1 and 1 << (7 * i + b) > len(base) - graph.end]
    for i, b in rng.sample(growing, 2):
        yield _onnx_case("onnx/bit-flip", "graph length past the end of the file", flipped(base, graph.prefix + i, b),
                         False)
    (ir_version,) = wire_fields(base, number=MODEL_IR_VERSION)
    default_opset = next(f for f in wire_fields(base, number=MODEL_OPSET_IMPORT)
                         if not wire_fields(base, f.start, f.end, OPSET_DOMAIN)
                         or _span_bytes(base, wire_fields(base, f.start, f.end, OPSET_DOMAIN)[0]) == b"")
    (opset,) = wire_fields(base, default_opset.start, default_opset.end, OPSET_VERSION)
    for field, newest, what in ((ir_version, onnx.IR_VERSION, "IR version"),
                                (opset, onnx.defs.onnx_opset_version(), "opset")):
        bit = rng.choice([5, 6])
        new, _ = _varint(flipped(base, field.start, bit), field.start)
        assert new > newest and field.end == field.start + 1
        yield _onnx_case("onnx/bit-flip", f"{what} {base[field.start]} → {new}", flipped(base, field.start, bit), False)
    floats = [f for f in wire_fields(base, graph.start, graph.end, GRAPH_INITIALIZER)
              if _int_field(base, f, TENSOR_DATA_TYPE) == onnx.TensorProto.FLOAT]
    for _ in range(2):
        (raw,) = wire_fields(base, *_span(rng.choice(floats)), TENSOR_RAW_DATA)
        at = rng.randrange(raw.start, raw.end)
        yield _onnx_case("onnx/bit-flip-valid", f"a weight's bit at byte {at}", flipped(base, at, rng.randrange(8)),
                         True)


def _span(field: WireField) -> tuple[int, int]:
    return field.start, field.end


def _int_field(data: bytes, message: WireField, number: int) -> int:
    """The integer field ``number`` of the message ``message`` holds."""
    (field,) = wire_fields(data, message.start, message.end, number)
    return _varint(data, field.start)[0]


def _span_bytes(data: bytes, field: WireField) -> bytes:
    return data[field.start:field.end]


def _broken_graphs(base: bytes) -> Iterator[Make]:
    """Models that parse but cannot run (or not on the device): each breaks one rule of ONNX or of the profile."""

    def changed(change: Callable[[onnx.ModelProto], None]) -> bytes:
        model = onnx.load_from_string(base)
        change(model)
        return model.SerializeToString()

    def set_dims(model: onnx.ModelProto, params: dict[int, str]) -> None:
        for axis, param in params.items():
            model.graph.input[0].type.tensor_type.shape.dim[axis].dim_param = param

    def external(model: onnx.ModelProto) -> None:
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value="weights.bin")

    def described(model: onnx.ModelProto) -> None:
        model.doc_string, model.producer_name = "fuzz", "fuzz"
        model.metadata_props.add(key="origin", value="fuzz")

    broken: dict[str, tuple[Callable[[onnx.ModelProto], None], tuple[str, ...]]] = {
        "no nodes": (lambda m: m.graph.ClearField("node"), ("no graph nodes",)),
        "an unknown operator": (lambda m: setattr(m.graph.node[0], "op_type", "NoSuchOp"), ()),
        "string input": (lambda m: setattr(m.graph.input[0].type.tensor_type, "elem_type", onnx.TensorProto.STRING),
                         ()),
        "an output nothing produces": (lambda m: setattr(m.graph.output[0], "name", "nowhere"), ()),
        "weights shorter than their shape": (
            lambda m: setattr(m.graph.initializer[0], "raw_data", m.graph.initializer[0].raw_data[:4]), ()),
        "weights in a missing external file": (external, ("weights.bin",)),
        "dynamic image size, none in the profile": (lambda m: set_dims(m, {2: "height", 3: "width"}), ("image_size",)),
    }
    for detail, (change, names) in broken.items():
        yield _onnx_case("onnx/broken-graph", detail, changed(change), False, *names)
    yield _onnx_case("onnx/shape-mismatch", "8×8 model on a 16×16 device", base, False, "image_size=16",
                     device={**DEVICE, "inputs": {"image_size": 16}})
    yield _onnx_case("onnx/valid-variation", "dynamic image size on a 16×16 device",
                     changed(lambda m: set_dims(m, {2: "height", 3: "width"})), True,
                     device={**DEVICE, "inputs": {"image_size": 16}})
    yield _onnx_case("onnx/valid-variation", "doc string, metadata and producer changed", changed(described), True)


def _foreign_files(rng: random.Random, base: bytes) -> Iterator[Make]:
    """Files that are not ONNX models at all, a directory and a path that does not exist."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("model.onnx", base)
    foreign = {
        "empty file": b"",
        "1 random byte": rng.randbytes(1),
        "64 random bytes": rng.randbytes(64),
        "4 KiB of random bytes": rng.randbytes(4096),
        "a YAML file": yaml_bytes(DEVICE),
        "a PNG header": b"\x89PNG\r\n\x1a\n" + rng.randbytes(32),
        "the model zipped": archive.getvalue(),
        "JSON": json.dumps({"graph": {"node": []}}).encode(),
    }
    for detail, content in foreign.items():
        yield _onnx_case("onnx/not-onnx", detail, content, False)
    yield _onnx_case("onnx/not-onnx", "a directory", b"", False, directory_instead=True)
    yield _onnx_case("onnx/missing", "no such file", None, False, "not found")
