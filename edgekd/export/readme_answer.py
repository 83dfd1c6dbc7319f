"""How the bundle README's examples read a model's answer, per task, in Python and in Kotlin.

The manifest's ``postprocessing`` says what the output is (:func:`edgekd.task_heads.postprocessing`): a
single-label classifier's logits (arg-max is the class) or probabilities, a binary classifier's one score per
example (the second class's probability or logit: it is the answer above ½), a multi-label model's logits (every
label whose sigmoid clears ``threshold``), a regression model's values (as they are), a token classifier's logits
per sub-token (``per_token``; a word's tag is its first sub-token's, words located by the tokenizer's character
offsets exactly as :mod:`edgekd.data.token_tags` does in training), or an output read as it is. Each snippet
starts from ``logits`` (the output ``postprocessing.output`` names, the only one requested: Python's
``session.run([output], ...)[0]``, Kotlin's ``result[0]``) and ends with the answer; without labels, the class's
index.
"""

from __future__ import annotations

from typing import Any

#: Python lines after ``logits = session.run([output], feeds)[0]``, by answer kind; ``{label}`` is the chosen class's
#: name (or index, when no labels were given).
_PYTHON = {
    "class": """\
probabilities = np.exp(logits[0] - logits[0].max())
probabilities /= probabilities.sum()  # softmax over the classes
best = int(probabilities.argmax())
print({label}, f"{{probabilities[best]:.4f}}")  # the {what} and its probability""",
    "probabilities": """\
probabilities = logits[0]  # the graph ends in a softmax: its scores are probabilities already
best = int(probabilities.argmax())
print({label}, f"{{probabilities[best]:.4f}}")  # the {what} and its probability""",
    "binary_probability": """\
probability = float(logits[0][0])  # the graph ends in a sigmoid: the second class's probability
best = int(probability > 0.5)
print({label}, f"{{max(probability, 1 - probability):.4f}}")  # the {what} and its probability""",
    "binary_logit": """\
probability = 1 / (1 + np.exp(-float(logits[0][0])))  # sigmoid of the second class's logit
best = int(probability > 0.5)
print({label}, f"{{max(probability, 1 - probability):.4f}}")  # the {what} and its probability""",
    "labels": """\
post = manifest["postprocessing"]
probabilities = 1 / (1 + np.exp(-logits[0]))  # sigmoid: each label on its own
print([label for label, p in zip(post["labels"], probabilities) if p > post["threshold"]])""",
    "values": """\
print(dict(zip(manifest["labels"], logits[0].tolist())))  # the predicted value(s), as they are""",
    "scores": """\
print(logits[0].tolist())  # the model's answer, as the graph gives it""",
    "tags": """\
post = manifest["postprocessing"]
words = sentence.split(" ")
starts = np.cumsum([0] + [len(word) + 1 for word in words])  # each word's first character
tags = {{}}
for (begin, end), special, row in zip(encoded["offset_mapping"][0], encoded["special_tokens_mask"][0], logits[0]):
    if special or end <= begin:
        continue  # [CLS], padding ...: no word
    word = int(np.searchsorted(starts, end - 1, side="right")) - 1
    tags.setdefault(word, post["labels"][int(row.argmax())])  # a word's tag is its first sub-token's
print(" ".join(f"{{words[word]}}/{{tag}}" for word, tag in sorted(tags.items())))""",
}

#: Kotlin: the function's return type and its last lines (``result`` is the session's output), by answer kind;
#: ``{label}`` is the chosen class's name (or index), ``{threshold}`` a multi-label model's.
_KOTLIN = {
    "class": ("String", """\
val logits = (result[0].value as Array<FloatArray>)[0]
val best = logits.indices.maxByOrNull {{ logits[it] }}!!
return {label}"""),
    "probabilities": ("String", """\
val probabilities = (result[0].value as Array<FloatArray>)[0]
val best = probabilities.indices.maxByOrNull {{ probabilities[it] }}!!
return {label}"""),
    "binary_probability": ("String", """\
val probability = (result[0].value as Array<FloatArray>)[0][0]  // the second class's (the graph ends in a sigmoid)
val best = if (probability > 0.5f) 1 else 0
return {label}"""),
    "binary_logit": ("String", """\
val logit = (result[0].value as Array<FloatArray>)[0][0]  // the second class's
val best = if (1f / (1f + kotlin.math.exp(-logit)) > 0.5f) 1 else 0
return {label}"""),
    "labels": ("List<String>", """\
val logits = (result[0].value as Array<FloatArray>)[0]
return LABELS.filterIndexed {{ i, _ -> 1f / (1f + kotlin.math.exp(-logits[i])) > {threshold}f }}"""),
    "values": ("FloatArray", """\
return (result[0].value as Array<FloatArray>)[0]  // the predicted value(s), as they are"""),
    "scores": ("FloatArray", """\
return (result[0].value as Array<FloatArray>)[0]  // the model's answer, as the graph gives it"""),
    "tags": ("List<String>", """\
// one tag per sub-token (padding excluded); a word's tag is its first sub-token's
val logits = (result[0].value as Array<Array<FloatArray>>)[0]
return logits.take(length).map {{ row -> LABELS[row.indices.maxByOrNull {{ row[it] }}!!] }}"""),
}

#: The manifest's ``postprocessing.kind`` → answer kind (any other kind: ``class``).
_KINDS = {"sigmoid": "labels", "identity": "values", "probabilities": "probabilities",
          "binary_probability": "binary_probability", "binary_logit": "binary_logit", "score": "scores",
          "as_given": "scores"}


def answer_kind(manifest: dict[str, Any]) -> str:
    """``class``, ``probabilities`` (a class from a graph ending in softmax), ``binary_probability`` /
    ``binary_logit`` (a binary classifier's one score per example), ``labels`` (multi-label), ``values``
    (regression), ``scores`` (an output read as it is) or ``tags`` (per token) for ``manifest``."""
    post = manifest.get("postprocessing") or {}
    if post.get("per_token"):
        return "tags"
    return _KINDS.get(post.get("kind"), "class")


def python_answer(manifest: dict[str, Any]) -> list[str]:
    """Python lines turning ``logits`` into the answer the model's task gives."""
    named = bool(manifest.get("labels"))
    return _PYTHON[answer_kind(manifest)].format(
        label='manifest["labels"][best]' if named else "best",
        what="label" if named else "class index (no labels were given)").splitlines()


def kotlin_answer(manifest: dict[str, Any]) -> tuple[str, list[str]]:
    """The Kotlin function's return type and its lines turning ``result`` into the answer."""
    returns, body = _KOTLIN[answer_kind(manifest)]
    threshold = (manifest.get("postprocessing") or {}).get("threshold", 0.5)
    label = "LABELS[best]" if manifest.get("labels") else "best.toString()  // the class index (no labels were given)"
    return returns, body.format(label=label, threshold=repr(float(threshold))).splitlines()
