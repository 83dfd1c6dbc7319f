"""How the bundle README's examples feed a model every graph input the manifest lists, each at its dtype.

What an input carries is :func:`edgekd.profile.inputs.input_role`'s answer, as when the model is timed: token ids
(from the bundled tokenizer, else a placeholder marked as such), an attention mask of ones for the text's tokens,
token type ids of zeros (one segment), positions counting up, or the user's own preprocessed values. Only the
inputs of a text (:func:`text_inputs`) are fed as its tokens: any other integer input (a category per example,
``[batch]``; a fixed count of ids, ``[batch, 3]``) is a placeholder that says the bundle does not record what it
holds. Python builds ``feeds`` (or ``x`` for a model of one input, as its user's own array); Kotlin's
``classify(ids, length)`` builds a ``[1, length]`` tensor per input with the buffer of its dtype (``LongBuffer``
for int64, ``IntBuffer`` for int32), and a model of the user's own values (several inputs, or one not float32)
gets one typed argument per input, a tensor of the input's own rank.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from edgekd.export.code_literals import kotlin_string, python_string
from edgekd.profile.inputs import InputSpec, Role, input_role, length_axes

#: The roles of a token input (a text model's; any other input is ``floats`` or ``bytes``).
_TOKEN_ROLES = frozenset({"ids", "mask", "segments", "positions"})
#: Hugging Face's names of a text's inputs: a graph taking them takes a text, whatever its length axis.
_TEXT_NAMES = frozenset({"input_ids", "attention_mask", "token_type_ids", "position_ids"})

#: Python placeholder of an integer input that is not a text's (role ``unknown``).
_PYTHON_UNKNOWN = ("np.zeros({shape}, dtype={dtype})",
                   "PLACEHOLDER: this input's values, as in training (the bundle does not record what they mean)")
#: Python placeholders by role: the array's expression and its comment; ``{shape}`` is a literal, ``{dtype}`` numpy's.
_PYTHON_PLACEHOLDERS = {
    "ids": ("np.zeros({shape}, dtype={dtype})", "PLACEHOLDER: your text's token ids ({ids_from})"),
    "mask": ("np.ones({shape}, dtype={dtype})", "attention mask: 1 for each of the text's tokens, 0 for padding"),
    "segments": ("np.zeros({shape}, dtype={dtype})", "token type ids: one segment"),
    "positions": ("np.zeros({shape}, dtype={dtype}) + np.arange({length}, dtype={dtype})", "positions 0, 1, 2 ..."),
    "unknown": _PYTHON_UNKNOWN,
}
_PYTHON_USER = ("np.zeros({shape}, dtype={dtype})", "your input here, preprocessed as in training")

#: Python feeds of a text model by role, from the bundled tokenizer's ``encoded`` batch.
_PYTHON_TOKENIZED = {
    "ids": ('encoded["input_ids"].astype({dtype})', "token ids from the bundled tokenizer"),
    "mask": ('encoded["attention_mask"].astype({dtype})', "1 for each of the text's tokens, 0 for padding"),
    "segments": ('np.zeros(encoded["input_ids"].shape, dtype={dtype})', "token type ids: one segment, as trained"),
    "positions": ('np.zeros(encoded["input_ids"].shape, dtype={dtype}) + np.arange({length}, dtype={dtype})',
                  "positions 0, 1, 2 ..."),
    "unknown": _PYTHON_UNKNOWN,
}

#: Kotlin by dtype: the array type, the java.nio buffer a tensor is made from (None: a boolean[1][size] array), its
#: one and zero, the conversion of an Int to it.
_KOTLIN_TYPES = {"int64": ("LongArray", "LongBuffer", "1L", "0L", "toLong"),
                 "int32": ("IntArray", "IntBuffer", "1", "0", "toInt"),
                 "float32": ("FloatArray", "FloatBuffer", "1f", "0f", "toFloat"),
                 "bool": ("BooleanArray", None, "true", "false", "")}


#: Kotlin of an input of the user's own values by dtype: its array, the java.nio buffer wrapping it and what
#: ``OnnxTensor.createTensor`` needs beside them (a byte buffer's element type).
_KOTLIN_TENSORS = {"float32": ("FloatArray", "FloatBuffer", ""), "float64": ("DoubleArray", "DoubleBuffer", ""),
                   "int64": ("LongArray", "LongBuffer", ""), "int32": ("IntArray", "IntBuffer", ""),
                   "int16": ("ShortArray", "ShortBuffer", ""),
                   "int8": ("ByteArray", "ByteBuffer", ", ai.onnxruntime.OnnxJavaType.INT8"),
                   "uint8": ("ByteArray", "ByteBuffer", ", ai.onnxruntime.OnnxJavaType.UINT8")}

#: Kotlin's hard keywords: not an argument name.
_KOTLIN_KEYWORDS = frozenset({"as", "break", "class", "continue", "do", "else", "false", "for", "fun", "if", "in",
                              "interface", "is", "null", "object", "package", "return", "super", "this", "throw",
                              "true", "try", "typealias", "typeof", "val", "var", "when", "while"})


def roles(manifest: dict[str, Any]) -> dict[str, Role]:
    """What each graph input of ``manifest`` carries (:func:`input_role`); an input that is no numpy number tensor
    (a sequence or map, a bfloat16 tensor) is the user's own (``floats``), and a token role's input that is not one
    of a text's (:func:`text_inputs`) is ``unknown``: integers the bundle does not say the meaning of."""
    text = text_inputs(manifest)
    found = {}
    for tensor in manifest["inputs"]:
        try:
            dtype = np.dtype(tensor["dtype"])
        except TypeError:
            dtype = None
        role = input_role(tensor["name"], dtype, None) if dtype is not None and dtype.kind in "fiub" else "floats"
        found[tensor["name"]] = "unknown" if role in _TOKEN_ROLES and tensor["name"] not in text else role
    return found


def text_inputs(manifest: dict[str, Any]) -> frozenset[str]:
    """The graph inputs of ``manifest`` that carry a text's tokens, one row each: the 2-D inputs
    :func:`length_axes` finds the text's length in, when the manifest's preprocessing is a text's, or the token
    ids' length axis is dynamic, or the inputs have Hugging Face's names; none otherwise (integers of a fixed count
    per example are not known to be a text's)."""
    specs = {t["name"]: InputSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in manifest["inputs"]}
    axes = {name: axis for name, axis in length_axes(list(specs.values())).items() if len(specs[name].dims) == 2}
    dynamic = any(not isinstance(specs[name].dims[axis], int) for name, axis in axes.items())
    text = (manifest.get("preprocessing") or {}).get("kind") == "text" or dynamic or bool(set(axes) & _TEXT_NAMES)
    return frozenset(axes) if text else frozenset()


def is_token_model(manifest: dict[str, Any]) -> bool:
    """Whether the examples feed ``manifest``'s model one text's token ids: a text model, or a graph with token
    inputs (integers other than an image's bytes) and no image preprocessing."""
    kind = (manifest.get("preprocessing") or {}).get("kind")
    return kind == "text" or kind != "image" and bool(_TOKEN_ROLES & set(roles(manifest).values()))


def python_feeds(manifest: dict[str, Any], *, tokenized: bool) -> list[str]:
    """Python lines ending in ``logits = session.run([output], ...)[0]``: every graph input at its dtype, from the
    tokenizer's ``encoded`` batch when ``tokenized``, else placeholders of the shapes the model takes."""
    output = python_string(manifest["postprocessing"]["output"])
    found, shapes = roles(manifest), input_shapes(manifest)
    pre = manifest.get("preprocessing") or {}
    lines = []
    for tensor in manifest["inputs"]:
        name, role, shape = tensor["name"], found[tensor["name"]], shapes[tensor["name"]]
        expression, comment = (_PYTHON_TOKENIZED if tokenized else _PYTHON_PLACEHOLDERS).get(role, _PYTHON_USER)
        values = {"shape": repr(tuple(shape)), "dtype": _numpy_dtype(tensor["dtype"]),
                  "length": pre.get("max_length") if tokenized else (shape or [1])[-1], "ids_from": _ids_from(pre)}
        lines.append((expression.format(**values), comment.format(**values), name))
    if len(lines) == 1 and not tokenized:
        ((expression, comment, name),) = lines
        return [f"x = {expression}  # {comment}", f"logits = session.run([{output}], {{{python_string(name)}: x}})[0]"]
    return ["feeds = {", *[f"    {python_string(name)}: {expression},  # {comment}"
                           for expression, comment, name in lines],
            "}", f"logits = session.run([{output}], feeds)[0]"]


def kotlin_classify(manifest: dict[str, Any], returns: str, answer: str) -> tuple[list[str], list[str]]:
    """The ``java.nio`` buffers the token model's Kotlin example imports, and its ``classify(ids, length)`` with the
    ``tensor`` helpers it calls: one tensor per graph input, of its dtype; ``answer`` reads ``result``."""
    found = roles(manifest)
    pre = manifest.get("preprocessing") or {}
    ids = next((t["dtype"] for t in manifest["inputs"] if found[t["name"]] == "ids" and t["dtype"] in _KOTLIN_TYPES
                and t["dtype"] != "bool"), "int64")
    columns, used = [], {ids}
    for tensor in manifest["inputs"]:
        name, dtype = tensor["name"], tensor["dtype"]
        column = _kotlin_column(found[name], dtype, ids)
        if column is None:  # stops there when run, saying so
            column = f"TODO({kotlin_string(f'input {name!r} ({dtype}): build its tensor as in training')})"
        else:
            used.add(dtype)
            column = f"tensor({column})"
        columns.append(f"        {kotlin_string(name)} to {column}")
    tokenizer = manifest.get("tokenizer")
    source = f"from the bundled tokenizer ({tokenizer['directory']}/)" if tokenizer else "from training's tokenizer"
    length = (f"padded with {pre.get('pad_id', 0)} or cut to {pre['max_length']}" if pre.get("max_length")
              else "padded or cut to the length the model was trained on")
    strip = ", leading and trailing whitespace removed (as in training)" if pre.get("strip") else ""
    lines = [f"// ids: the token ids of one text{strip},", f"// {source}, {length};",
             "// length: how many of them are the text's own tokens (the rest is padding)",
             f"fun classify(ids: {_KOTLIN_TYPES[ids][0]}, length: Int): {returns} {{",
             "    val feeds = mapOf(", ",\n".join(columns) + ")", *_kotlin_run(manifest, answer)]
    for dtype in sorted(used):
        array, buffer = _KOTLIN_TYPES[dtype][:2]
        make = (f"OnnxTensor.createTensor(env, {buffer}.wrap(values), longArrayOf(1, values.size.toLong()))" if buffer
                else "OnnxTensor.createTensor(env, arrayOf(values))  // boolean[1][size]")
        lines += ["", f"fun tensor(values: {array}): OnnxTensor =  // one row: a [1, size] tensor", f"    {make}"]
    buffers = sorted(filter(None, (_KOTLIN_TYPES[dtype][1] for dtype in used)))
    return buffers, "\n".join(lines).splitlines()


def kotlin_inputs(manifest: dict[str, Any], returns: str, answer: str) -> tuple[list[str], list[str]]:
    """The ``java.nio`` buffers and ``classify`` of a model whose inputs are the user's own values (several inputs,
    or one that is not float32): one typed argument per graph input, named after it, fed as a tensor of the shape
    the model takes; an input of a type the example has no array for stops there when run, saying so. ``answer``
    reads ``result``."""
    shapes, arguments, columns, buffers = input_shapes(manifest), [], [], set()
    for tensor, argument in zip(manifest["inputs"], _kotlin_names([t["name"] for t in manifest["inputs"]]),
                                strict=True):
        name, dtype = tensor["name"], tensor["dtype"]
        kind = _KOTLIN_TENSORS.get(dtype)
        if kind is None:
            todo = kotlin_string(f"input {name!r} ({dtype}): build its tensor as in training")
            columns.append(f"        {kotlin_string(name)} to TODO({todo})")
            continue
        array, buffer, java_type = kind
        arguments.append(f"{argument}: {array}")
        buffers.add(buffer)
        columns.append(f"        {kotlin_string(name)} to OnnxTensor.createTensor(env, {buffer}.wrap({argument}), "
                       f"longArrayOf({', '.join(map(str, shapes[name]))}){java_type})")
    lines = ["// each argument: that input's values row by row, preprocessed as in training",
             f"fun classify({', '.join(arguments)}): {returns} {{", "    val feeds = mapOf(", ",\n".join(columns) + ")",
             *_kotlin_run(manifest, answer)]
    return sorted(buffers), lines


def _kotlin_names(names: list[str]) -> list[str]:
    """Kotlin identifiers for graph input names: other characters become ``_``, a leading digit or a keyword gets
    ``input_`` before it, and repeats a number after."""
    found: list[str] = []
    for name in names:
        identifier = re.sub(r"\W", "_", name, flags=re.ASCII) or "input"
        if identifier[0].isdigit() or identifier in _KOTLIN_KEYWORDS:
            identifier = f"input_{identifier}"
        candidate, number = identifier, 2
        while candidate in found:
            candidate, number = f"{identifier}_{number}", number + 1
        found.append(candidate)
    return found


def _kotlin_run(manifest: dict[str, Any], answer: str) -> list[str]:
    """The end of a Kotlin ``classify``: run the session on ``feeds``, read the answer, close the tensors."""
    output = kotlin_string(manifest["postprocessing"]["output"])
    return ["    try {", f"        session.run(feeds, setOf({output})).use {{ result ->", answer, "        }",
            "    } finally {", "        feeds.values.forEach { it.close() }", "    }", "}"]


def _kotlin_column(role: Role, dtype: str, ids: str) -> str | None:
    """The Kotlin array an input of ``role`` and ``dtype`` is fed, made of ``ids`` (of dtype ``ids``) and
    ``length``; None for an input the example cannot build (the user's own values, or a type it has no array of)."""
    if dtype not in _KOTLIN_TYPES or role not in _TOKEN_ROLES or role in ("ids", "positions") and dtype == "bool":
        return None
    array, _, one, zero, convert = _KOTLIN_TYPES[dtype]
    if role == "ids":
        return "ids" if dtype == ids else f"{array}(ids.size) {{ i -> ids[i].{convert}() }}"
    if role == "mask":
        return f"{array}(ids.size) {{ i -> " + ("i < length }" if dtype == "bool" else f"if (i < length) {one} else "
                                                                                      f"{zero} }}")
    if role == "positions":
        return f"{array}(ids.size) {{ i -> i.{convert}() }}"
    return f"{array}(ids.size)"


def input_shapes(manifest: dict[str, Any]) -> dict[str, list[int]]:
    """Each input's shape in the examples, by name: a dynamic axis 1, the text's length on a token input's length axis
    (:func:`length_axes`): a text model's ``max_length``, else the device's ``sequence_length``."""
    pre = manifest.get("preprocessing") or {}
    length = pre.get("max_length") if pre.get("kind") == "text" else \
        ((manifest.get("device") or {}).get("inputs") or {}).get("sequence_length")
    axes = length_axes([InputSpec(t["name"], tuple(t["shape"]), t["dtype"]) for t in manifest["inputs"]])
    shapes = {}
    for tensor in manifest["inputs"]:
        shape = [dim if isinstance(dim, int) and dim > 0 else 1 for dim in tensor["shape"]]
        axis = axes.get(tensor["name"])
        if length and axis is not None and not isinstance(tensor["shape"][axis], int):
            shape[axis] = int(length)
        shapes[tensor["name"]] = shape
    return shapes


def _ids_from(pre: dict[str, Any]) -> str:
    """How a placeholder's token ids are made: tokenized as in training, padded or cut to the text's length."""
    if pre.get("max_length"):
        return f"as in training, padded with {pre.get('pad_id', 0)} or cut to {pre['max_length']}"
    return "as in training"


def _numpy_dtype(name: str) -> str:
    """The numpy dtype of a manifest's dtype name, as Python code."""
    return "np.bool_" if name == "bool" else f"np.{name}"
