"""How the bundle README's examples read a model's answer, per task, in Python and in Kotlin.

The manifest's ``postprocessing`` says what the output is (:func:`edgekd.task_heads.postprocessing`): a
single-label classifier's logits (arg-max is the class) or probabilities, a binary classifier's one score per
example (the second class's probability or logit: it is the answer above ½), a multi-label model's logits (every
label whose sigmoid clears ``threshold``), a regression model's values (as they are), a token classifier's logits
per sub-token (``per_token``; a word's tag is its first sub-token's, words located by the tokenizer's character
offsets exactly as :mod:`edgekd.data.token_tags` does in training), or an output read as it is. Each snippet
starts from ``logits`` (the output ``postprocessing.output`` names, the only one requested: Python's
``session.run([output], ...)[0]``, Kotlin's ``result[0]``) and ends with the answer; without labels, the class's
index. The snippets follow the output's rank as the graph declares it (:mod:`edgekd.export.answer_shape`): the
example's answer is ``logits[0]`` when its first axis is the batch, the whole output when the graph has none
(``[10]``), its one score ``[0]`` of ``[batch, 1]`` or ``logits[0]`` of ``[batch]``; Kotlin casts the output to
the array of its rank. An answer of another rank than its kind reads (a vector of classes, a matrix of tags per
token) is printed as the graph gives it.
"""

from __future__ import annotations

from typing import Any

from edgekd.export.answer_shape import example_shape, has_batch_axis

#: Python lines after ``logits = session.run([output], feeds)[0]``, by answer kind; ``{label}`` is the chosen class's
#: name (or index, when no labels were given), ``{row}`` the example's answer, ``{value}`` its one score,
#: ``{values}`` its values as a list.
_PYTHON = {
    "class": """\
probabilities = np.exp({row} - {row}.max())
probabilities /= probabilities.sum()  # softmax over the classes
best = int(probabilities.argmax())
print({label}, f"{{probabilities[best]:.4f}}")  # the {what} and its probability""",
    "probabilities": """\
probabilities = {row}  # the graph ends in a softmax: its scores are probabilities already
best = int(probabilities.argmax())
print({label}, f"{{probabilities[best]:.4f}}")  # the {what} and its probability""",
    "binary_probability": """\
probability = float({value})  # the graph ends in a sigmoid: the second class's probability
best = int(probability > 0.5)
print({label}, f"{{max(probability, 1 - probability):.4f}}")  # the {what} and its probability""",
    "binary_logit": """\
probability = 1 / (1 + np.exp(-float({value})))  # sigmoid of the second class's logit
best = int(probability > 0.5)
print({label}, f"{{max(probability, 1 - probability):.4f}}")  # the {what} and its probability""",
    "labels": """\
post = manifest["postprocessing"]
probabilities = 1 / (1 + np.exp(-{row}))  # sigmoid: each label on its own
print([label for label, p in zip(post["labels"], probabilities) if p > post["threshold"]])""",
    "values": """\
print(dict(zip(manifest["labels"], {values})))  # the predicted value(s), as they are""",
    "scores": """\
print({row}.tolist())  # the model's answer, as the graph gives it""",
    "tags": """\
post = manifest["postprocessing"]
words = sentence.split(" ")
starts = np.cumsum([0] + [len(word) + 1 for word in words])  # each word's first character
tags = {{}}
for (begin, end), special, row in zip(encoded["offset_mapping"][0], encoded["special_tokens_mask"][0], {row}):
    if special or end <= begin:
        continue  # [CLS], padding ...: no word
    word = int(np.searchsorted(starts, end - 1, side="right")) - 1
    tags.setdefault(word, post["labels"][int(row.argmax())])  # a word's tag is its first sub-token's
print(" ".join(f"{{words[word]}}/{{tag}}" for word, tag in sorted(tags.items())))""",
}

#: Kotlin: the function's return type and its last lines (``result`` is the session's output), by answer kind;
#: ``{label}`` is the chosen class's name (or index), ``{threshold}`` a multi-label model's, ``{row}``,
#: ``{value}`` and ``{values}`` as in Python, ``{returns}`` the type of ``{row}``, ``{vector}`` of ``{values}``.
_KOTLIN = {
    "class": ("String", """\
val logits = {row}
val best = logits.indices.maxByOrNull {{ logits[it] }}!!
return {label}"""),
    "probabilities": ("String", """\
val probabilities = {row}
val best = probabilities.indices.maxByOrNull {{ probabilities[it] }}!!
return {label}"""),
    "binary_probability": ("String", """\
val probability = {value}  // the second class's (the graph ends in a sigmoid)
val best = if (probability > 0.5f) 1 else 0
return {label}"""),
    "binary_logit": ("String", """\
val logit = {value}  // the second class's
val best = if (1f / (1f + kotlin.math.exp(-logit)) > 0.5f) 1 else 0
return {label}"""),
    "labels": ("List<String>", """\
val logits = {row}
return LABELS.filterIndexed {{ i, _ -> 1f / (1f + kotlin.math.exp(-logits[i])) > {threshold}f }}"""),
    "values": ("{vector}", """\
return {values}  // the predicted value(s), as they are"""),
    "scores": ("{returns}", """\
return {row}  // the model's answer, as the graph gives it"""),
    "tags": ("List<String>", """\
// one tag per sub-token (padding excluded); a word's tag is its first sub-token's
val logits = {row}
return logits.take(length).map {{ row -> LABELS[row.indices.maxByOrNull {{ row[it] }}!!] }}"""),
}

#: The manifest's ``postprocessing.kind`` → answer kind (any other kind: ``class``).
_KINDS = {"sigmoid": "labels", "identity": "values", "probabilities": "probabilities",
          "binary_probability": "binary_probability", "binary_logit": "binary_logit", "score": "scores",
          "as_given": "scores"}


#: The ranks of one example's answer each kind reads (any rank: ``scores``); one of another rank is read as it is.
_RANKS = {"class": (1,), "probabilities": (1,), "labels": (1,), "values": (0, 1), "binary_probability": (0, 1),
          "binary_logit": (0, 1), "tags": (2,)}


def answer_kind(manifest: dict[str, Any]) -> str:
    """``class``, ``probabilities`` (a class from a graph ending in softmax), ``binary_probability`` /
    ``binary_logit`` (a binary classifier's one score per example), ``labels`` (multi-label), ``values``
    (regression), ``scores`` (an output read as it is) or ``tags`` (per token) for ``manifest``; ``scores`` when
    the example's answer has another rank than the kind reads."""
    post = manifest.get("postprocessing") or {}
    kind = "tags" if post.get("per_token") else _KINDS.get(post.get("kind"), "class")
    ranks = _RANKS.get(kind)
    return "scores" if ranks is not None and len(example_shape(_scored(manifest)["shape"])) not in ranks else kind


def python_row(manifest: dict[str, Any]) -> str:
    """The Python expression of the example's answer in ``logits``: ``logits[0]``, or ``logits`` for a graph whose
    output has no batch axis."""
    return "logits[0]" if has_batch_axis(_scored(manifest)["shape"]) else "logits"


def python_answer(manifest: dict[str, Any]) -> list[str]:
    """Python lines turning ``logits`` into the answer the model's task gives."""
    named = bool(manifest.get("labels"))
    return _PYTHON[answer_kind(manifest)].format(
        label='manifest["labels"][best]' if named else "best",
        what="label" if named else "class index (no labels were given)",
        **_reads(manifest, python_row(manifest), vector="{}.tolist()", scalar="[{}.item()]")).splitlines()


def kotlin_answer(manifest: dict[str, Any]) -> tuple[str, list[str]]:
    """The Kotlin function's return type and its lines turning ``result`` into the answer."""
    returns, body = _KOTLIN[answer_kind(manifest)]
    threshold = (manifest.get("postprocessing") or {}).get("threshold", 0.5)
    label = "LABELS[best]" if manifest.get("labels") else "best.toString()  // the class index (no labels were given)"
    scored = _scored(manifest)
    shape, element = scored["shape"], _KOTLIN_ELEMENTS.get(scored["dtype"], "Float")
    row = f"(result[0].value as {_kotlin_array(len(shape), element)})" + ("[0]" if has_batch_axis(shape) else "")
    reads = {**_reads(manifest, row, vector="{}", scalar=f"{element.lower()}ArrayOf({{}})"),
             "returns": _kotlin_array(len(example_shape(shape)), element), "vector": _kotlin_array(1, element)}
    return returns.format(**reads), body.format(label=label, threshold=repr(float(threshold)), **reads).splitlines()


def _reads(manifest: dict[str, Any], row: str, *, vector: str, scalar: str) -> dict[str, str]:
    """How a snippet reads the example's answer ``row``: itself, ``value`` (its one score: ``row[0]`` of a
    ``[1]``, ``row`` of a scalar) and ``values`` (a list: ``vector`` or ``scalar`` formats ``row``, by its rank)."""
    rank = len(example_shape(_scored(manifest)["shape"]))
    return {"row": row, "value": row + "[0]" * rank, "values": (vector if rank else scalar).format(row)}


def _scored(manifest: dict[str, Any]) -> dict[str, Any]:
    """The output the answer is read from (``postprocessing.output``), as the graph declares it."""
    output = manifest["postprocessing"]["output"]
    return next(tensor for tensor in manifest["outputs"] if tensor["name"] == output)


#: The Kotlin element onnxruntime's Java API gives a tensor's values as, by dtype (any other: ``Float``, which it
#: gives float16 as).
_KOTLIN_ELEMENTS = {"float64": "Double", "int64": "Long", "int32": "Int", "int16": "Short", "int8": "Byte",
                    "uint8": "Byte", "bool": "Boolean"}


def _kotlin_array(rank: int, element: str) -> str:
    """The Kotlin type onnxruntime's Java API gives a tensor of ``rank`` and ``element``s as (the element itself
    for a scalar): ``Array<FloatArray>`` for a float32 matrix."""
    if rank == 0:
        return element
    return "Array<" * (rank - 1) + f"{element}Array" + ">" * (rank - 1)
