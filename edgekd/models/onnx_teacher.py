"""A trained model given as an ONNX file, as the teacher a student is distilled from (``arch: onnx``).

A recipe names the file (relative to the recipe's folder)::

    tokenizer: {pretrained: teacher-tokenizer/}     # text: the tokenizer the teacher was trained with
    teacher:
      model: {arch: onnx, path: teacher.onnx}

The file is checked as the ONNX verbs check theirs (an ONNX model with inputs, ``onnx.checker``, its
external data files beside it, loadable by onnxruntime), then matched to the recipe's data: text
graphs take some of ``input_ids``, ``attention_mask`` and ``token_type_ids`` (``input_ids`` among
them; int64 or int32 as the graph says), image and feature graphs one input ``[N, C, H, W]`` or
``[N, F]`` whose fixed sizes are the data's. Its output (``output`` when the spec names one, else ``logits``
when the graph names one, else the first whose declared shape fits, so hidden states returned before the
logits are passed over; a warning names others of the same shape) must be
``[batch, classes]`` (``[batch, sequence, classes]`` for token classification) with the data's class count.
Every mismatch is one line naming ``teacher.model.path``, from ``edgekd validate`` when the data can be read
then, else when the teacher stage builds the model.
A text graph that takes fewer tokens than the device's ``inputs.sequence_length`` (its inputs fixed to fewer, or
a position table too short for rows that long) is refused when the recipe times its models
(:func:`graph_positions`, held to the device by :mod:`edgekd.input_rules`).

Inside edgekd the file is an :class:`OnnxTeacher` module: called like every other model, it runs
onnxruntime on the batch and returns the logits tensor, so evaluation, the teacher-output cache and
live distillation need nothing of their own. Its only state is the file's SHA-256 (a buffer), so the
teacher-output cache's key changes with the file and a model directory reloaded after the file
changed is refused; its weights count as its parameters. It is never trained (the spec is not
``trainable``), exposes only its outputs, and is neither pruned nor factorized.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from edgekd.data.examples import TEXT_INPUTS, InputSignature
from edgekd.errors import ConfigError, EdgekdError, first_line
from edgekd.models.logits import are_probabilities
from edgekd.models.specs import OnnxSpec

log = logging.getLogger(__name__)

#: onnxruntime's input types → the numpy dtype a batch tensor is cast to.
DTYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
          "tensor(float16)": np.float16, "tensor(double)": np.float64}
#: Specs already checked on data of a given signature and class count (validate, plan and run all check).
_CHECKED: set[tuple[str, str, str, int, str | None]] = set()


class Refused(Exception):
    """An ONNX file that cannot be this recipe's teacher (the message names what was expected and found); ``key``
    is the spec field to blame."""

    def __init__(self, message: str, key: str = "path") -> None:
        super().__init__(message)
        self.key = key


def onnx_digest(path: Path) -> str:
    """The SHA-256 of the ONNX file and, in order, of every external data file its tensors are stored in."""
    from edgekd.model_file import external_data_locations, read_model

    path = Path(path)
    digest = hashlib.sha256()
    model = read_model(path)
    for file in [path, *(path.parent / name for name in (external_data_locations(model) if model else []))]:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_file(path: Path) -> None:
    """Raise :class:`Refused` unless ``path`` is an ONNX model with inputs whose external data files are beside it
    (the checks the ONNX verbs make) and that ``onnx.checker`` passes or onnxruntime loads: onnxruntime's own
    converters write graphs the checker rejects (``convert_float_to_float16`` with ``keep_io_types`` leaves its casts
    out of topological order), which run, so the checker's objection is then a log line."""
    import onnx

    from edgekd.model_file import require_onnx

    try:
        require_onnx(path, "an ONNX teacher")  # read_model: external data files beside it
    except EdgekdError as exc:
        raise Refused(str(exc).removeprefix(f"{path}: ")) from None
    try:
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, OSError, ValueError) as exc:
        objection = " ".join(str(exc).split())[:300]
        try:
            _session(path)
        except Refused:
            raise Refused(f"onnx.checker rejects it ({objection}) and onnxruntime cannot load it") from None
        log.info("%s: onnx.checker objects (%s), but onnxruntime loads and runs it", path, objection)


class OnnxTeacher(nn.Module):
    """The ONNX file at ``path`` run by onnxruntime on CPU; returns the graph's logits as a float tensor."""

    def __init__(self, path: Path, signature: InputSignature, num_classes: int, output: str | None = None) -> None:
        super().__init__()
        self.path = Path(path)
        check_file(self.path)
        self.register_buffer("onnx_sha256", torch.tensor(list(bytes.fromhex(onnx_digest(self.path))),
                                                         dtype=torch.uint8))
        self.external_parameters = _weight_count(self.path)
        self._session = _session(self.path)
        self.inputs = _matched_inputs(self._session, signature)
        self.output, self.binary = _matched_output(self._session, signature, num_classes, self.path, output)
        self.activation = score_activation(self.path, self.output)
        self.fixed_batch, self.fixed_sequence = _fixed_sizes(self._session, signature)
        self.pad_id = signature.pad_id

    def run(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """The graph's output for the batch entries it takes (on the device of the batch).

        A graph exported with a fixed batch runs on chunks of that many rows (the last one filled up with copies
        of its first row, whose outputs are dropped); one with a fixed sequence length gets rows padded to it
        (padding token ids, mask 0), and per-token logits come back cut to the batch's length.
        """
        first = next(value for value in batch.values() if value is not None)
        feeds = {name: batch[key].detach().cpu().numpy().astype(dtype, copy=False)
                 for name, (key, dtype) in self.inputs.items()}
        rows, length = first.shape[0], first.shape[1] if first.ndim > 1 else 0
        if self.fixed_sequence is not None:
            feeds = {name: _padded_to(value, self.fixed_sequence, self.pad_id if name == "input_ids" else 0)
                     for name, value in feeds.items()}
        step = self.fixed_batch or rows
        parts = [self._session.run([self.output], filled({n: v[start:start + step] for n, v in feeds.items()},
                                                          step))[0][: min(step, rows - start)]
                 for start in range(0, rows, step)]
        logits = np.concatenate(parts) if len(parts) > 1 else parts[0]
        if self.fixed_sequence is not None and logits.ndim == 3:
            logits = logits[:, :length]
        scores = as_logits(np.asarray(logits, dtype=np.float32), self.path, self.activation)
        return torch.from_numpy(two_class_logits(scores) if self.binary else scores).to(first.device)

    def describe(self) -> dict[str, Any]:
        """The file as the teacher record gives it: path, SHA-256, the graph inputs fed and the output read."""
        return {"path": str(self.path), "sha256": bytes(self.onnx_sha256.tolist()).hex(),
                "inputs": list(self.inputs), "output": self.output}

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        saved = state_dict.get(f"{prefix}onnx_sha256")
        if saved is not None and not torch.equal(saved.to(self.onnx_sha256), self.onnx_sha256):
            raise ConfigError(f"teacher.model.path: '{self.path}' changed since the teacher stage read it "
                              "(its SHA-256 differs); re-run the teacher stage")
        super()._load_from_state_dict(state_dict, prefix, *args)


def as_logits(scores: np.ndarray, path: Path, activation: str | None = None) -> np.ndarray:
    """A graph's scores as logits.

    Scores of a graph whose scored output comes from a Sigmoid (``activation`` ``'sigmoid'``, see
    :func:`score_activation`: a multi-label model, or a binary one with one score) are per-label probabilities:
    they become their logits ``log(p / (1 - p))``, ``p`` clipped to [:data:`SIGMOID_CLIP`, 1 - it] (the saturated
    ends of float32), which sigmoid-based losses turn back into the same probabilities; read as logits, a label
    the teacher is sure of (0.99) taught a student a probability of sigmoid(0.99) = 0.73. Probabilities of a
    Softmax (``'softmax'``, or without a known activation every row non-negative and summing to 1 over the classes:
    a graph ending in Softmax, as scikit-learn-onnx's classifiers and many exported apps do) become their
    logarithm, which is the logits up to a per-row constant that softmax ignores at every temperature; read as
    logits themselves, they softened into near-uniform targets. Other scores are returned as they are."""
    if activation == "sigmoid":
        _say(path, "sigmoid probabilities (its scored output comes from a Sigmoid): their logits log(p / (1 - p)) "
             "are taken")
        return sigmoid_logits(scores)
    if activation != "softmax" and not are_probabilities(scores):
        return scores
    _say(path, "probabilities (rows summing to 1): its logarithm is taken as the logits")
    return np.log(np.maximum(scores, np.finfo(np.float32).tiny))


def sigmoid_logits(probabilities: np.ndarray) -> np.ndarray:
    """The logits ``log(p / (1 - p))`` of sigmoid probabilities, ``p`` clipped to [:data:`SIGMOID_CLIP`, 1 − it]."""
    clipped = np.clip(probabilities.astype(np.float64), SIGMOID_CLIP, 1 - SIGMOID_CLIP)
    return (np.log(clipped) - np.log1p(-clipped)).astype(np.float32)


def two_class_logits(scores: np.ndarray) -> np.ndarray:
    """A binary classifier's one logit ``z`` per row (of the second class, ``[..., 1]``) as two classes' logits
    ``[0, z]``: their softmax is ``[1 - sigmoid(z), sigmoid(z)]``, and the arg-max is the second class exactly when
    ``z > 0``."""
    return np.concatenate([np.zeros_like(scores), scores], axis=-1)


def _say(path: Path, what: str) -> None:
    """One log line per file and process: how its scores are read as logits."""
    if path not in _SAID_PROBABILITIES:
        _SAID_PROBABILITIES.add(path)
        log.info("%s answers with %s", path, what)


#: The smallest probability (and distance from 1) a sigmoid score is read as: its logit is at most ±16.1.
SIGMOID_CLIP = 1e-7
#: Ops that pass a graph's scores on unchanged in value (renamed, reshaped or cast after the last activation).
PASS_THROUGH = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Cast"})


def score_activation(path: Path, output: str) -> str | None:
    """``'sigmoid'`` or ``'softmax'`` when the graph at ``path`` computes its output ``output`` with that op last
    (through ops that only rename, reshape or cast it: :data:`PASS_THROUGH`), else None (logits, or an
    activation spelt in other ops, which :func:`as_logits` judges by the values)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producers = {name: node for node in graph.node for name in node.output}
    name = output
    while (node := producers.get(name)) is not None:
        if node.op_type in ("Sigmoid", "Softmax"):
            return node.op_type.lower()
        if node.op_type not in PASS_THROUGH or not node.input:
            return None
        name = node.input[0]
    return None


#: ONNX files whose scores were said to be read as logits (once per process).
_SAID_PROBABILITIES: set[Path] = set()


class ImageOnnxTeacher(OnnxTeacher):
    """Takes the image (or feature) batch as one tensor."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - edgekd's image input name
        return self.run({"input": input})


class TextOnnxTeacher(OnnxTeacher):
    """Takes the text inputs its graph names."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        for key, _dtype in self.inputs.values():
            if given[key] is None:  # a graph with a mask or token types, called without them
                given[key] = torch.ones_like(input_ids) if key == "attention_mask" else torch.zeros_like(input_ids)
        return self.run(given)


def build_onnx_teacher(spec: OnnxSpec, signature: InputSignature, num_classes: int) -> OnnxTeacher:
    """The teacher module of ``spec`` for data of ``signature``, checked on a probe batch; one line naming
    ``teacher.model.path`` (a :class:`ConfigError`) when it cannot be the recipe's teacher."""
    try:
        return _built(spec, signature, num_classes)
    except Refused as exc:
        raise ConfigError(f"teacher.model.{exc.key}: '{spec.path}': {exc}") from None


def _built(spec: OnnxSpec, signature: InputSignature, num_classes: int) -> OnnxTeacher:
    model = (ImageOnnxTeacher if signature.kind == "image" else TextOnnxTeacher)(spec.path, signature, num_classes,
                                                                                spec.output)
    _check_probe(model, signature, num_classes)
    return model


def check_spec(spec: OnnxSpec, state: Any, where: str) -> None:
    """``check_recipe``'s rule for an ONNX teacher (``check_recipe`` refuses any fixed model as a student): alone,
    without separate weights, with the tokenizer its token ids come from (``tokenizer.pretrained``); the file
    checked and matched to the recipe's data (when it can be read)."""
    from edgekd.models.user_module import data_shape

    recipe = state.recipe
    if recipe.teacher.weights is not None:
        raise state.fail("teacher.weights", "an ONNX teacher carries its weights in its file; drop 'weights'")
    if recipe.teacher.ensemble is not None:
        raise state.fail("teacher.ensemble", "an ensemble trains members of one architecture with different seeds; "
                         "an ONNX teacher is one fixed file and is not trained, so its members would be identical")
    student = getattr(recipe.student.model, "embeddings", "random")
    if student == "teacher":
        raise state.fail("student.model.embeddings", "an ONNX teacher exposes only its outputs, not its word "
                         "embeddings; use embeddings: random")
    if recipe.data.modality == "text" and getattr(recipe.tokenizer, "pretrained", None) is None:
        raise state.fail("tokenizer.pretrained", "an ONNX teacher reads the token ids of the tokenizer it was "
                         "trained with, not one trained on the data; name that tokenizer's directory (tokenizer: "
                         "{pretrained: DIR}, e.g. a pretrained student's checkpoint when they share it)")
    try:
        check_file(spec.path)
    except Refused as exc:
        raise state.fail(f"{where}.path", f"'{spec.path}': {exc}") from None
    data = data_shape(recipe)
    if data is None:
        return  # hub data: matched when the teacher stage builds it
    signature, num_classes = data
    if signature.kind == "text":  # rows as long as the tokenizer's max_length reach the graph's positions
        signature = replace(signature, max_length=recipe.tokenizer.max_length)
    key = (str(spec.path), onnx_digest(spec.path), repr(signature), num_classes, spec.output)
    if key in _CHECKED:
        return
    if signature.kind == "text" and Path(recipe.tokenizer.pretrained).is_dir():  # its ids: the probe's too
        problem = _vocabulary_problem(spec.path, recipe.tokenizer.pretrained, signature.vocab_size)
        if problem is not None:
            raise state.fail("tokenizer.pretrained", problem)
    try:
        _built(spec, signature, num_classes)
    except Refused as exc:
        raise state.fail(f"{where}.{exc.key}", f"'{spec.path}': {exc}") from None
    _CHECKED.add(key)


def _vocabulary_problem(path: Path, pretrained: str, size: int) -> str | None:
    """Why the tokenizer at ``pretrained`` (of ``size`` tokens) gives ids the graph's ``input_ids`` cannot take (more
    tokens than the rows of the embedding they index); None when it can, or when the graph's rows cannot be read."""
    from edgekd.profile.inputs import token_id_limits

    rows = token_id_limits(path).get("input_ids")
    if rows is None or size <= rows:
        return None
    return (f"'{pretrained}' has {size} tokens, but the input_ids of '{path}' index an embedding of {rows} rows "
            f"(ids from {rows} on fail in onnxruntime); name the tokenizer the teacher was trained with")


def graph_positions(spec: OnnxSpec, recipe: Any, length: int) -> int | None:
    """The most tokens a text graph takes when fewer than ``length`` (the device's ``inputs.sequence_length``),
    else None: the length its inputs fix (the profiler would time it at that length, not the device's), or, when
    dynamic, the longest row it runs on as the profiler feeds it (a position table shorter than ``length`` fails
    in onnxruntime). None too for a file its own check refuses."""
    from edgekd.profile.inputs import input_specs

    try:
        inputs = input_specs(spec.path)
    except EdgekdError:
        return None
    fixed = [value.dims[1] for value in inputs if len(value.dims) == 2 and isinstance(value.dims[1], int)]
    if fixed:
        return min(fixed) if min(fixed) < length else None
    return _longest_run(str(spec.path), onnx_digest(spec.path), length)


@functools.lru_cache(maxsize=16)
def _longest_run(path: str, digest: str, length: int) -> int | None:
    """:func:`edgekd.profile.positions.longest_run` of the graph at ``path`` (of SHA-256 ``digest``, so a changed
    file is run again), in an onnxruntime session with torch's thread count."""
    from edgekd.profile.positions import longest_run

    try:
        session = _session(Path(path))
    except Refused:
        return None
    return longest_run(path, length, session)


def _session(path: Path) -> Any:
    """An onnxruntime CPU session on ``path`` with torch's thread count; a load failure is :class:`Refused`."""
    import onnxruntime as ort

    from edgekd.ort_options import session_options

    try:
        return ort.InferenceSession(str(path), session_options(torch.get_num_threads()),
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types for a graph it cannot load
        raise Refused(f"onnxruntime cannot load it: {first_line(exc)}") from None


def _weight_count(path: Path) -> int:
    """The number of values in the graph's weights, read without loading external data: its initializers but the
    exporter's constants (scalars, and int64 or boolean tensors: shapes, indices, a position-id table, a causal
    mask), so a graph counts the parameters of the PyTorch model it was exported from."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    constants = {onnx.TensorProto.INT64, onnx.TensorProto.BOOL}
    return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in graph.initializer
                   if tensor.dims and tensor.data_type not in constants))


def _shape(value: Any) -> str:
    """An onnxruntime input or output's shape as ``[N, 3, 224, 224]`` (named dimensions by name)."""
    return "[" + ", ".join(str(dim) if dim is not None else "?" for dim in value.shape) + "]"


def _matched_inputs(session: Any, signature: InputSignature) -> dict[str, tuple[str, Any]]:
    """Graph input name → (the batch entry fed to it, its numpy dtype); :class:`Refused` when the graph's inputs
    are not the data's."""
    inputs = session.get_inputs()
    if signature.kind == "text":
        names = [value.name for value in inputs]
        foreign = [name for name in names if name not in TEXT_INPUTS]
        if foreign or "input_ids" not in names:
            found = f"input '{foreign[0]}'" if foreign else "no input 'input_ids'"
            raise Refused(f"the graph has {found} (inputs: {', '.join(names)}); the tokenizer gives "
                          f"{', '.join(TEXT_INPUTS)}: expected input_ids and any of the other two")
        mapped = {}
        for value in inputs:
            if value.type not in ("tensor(int64)", "tensor(int32)") or len(value.shape) != 2:
                raise Refused(f"graph input '{value.name}' is {value.type} {_shape(value)}; expected token ids "
                              "int64 or int32 [batch, sequence]")
            mapped[value.name] = (value.name, DTYPES[value.type])
        return mapped
    expected = ["batch", *signature.image_shape]
    if len(inputs) != 1:
        raise Refused(f"the graph takes {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); the data's "
                      f"{'images' if len(signature.image_shape) > 1 else 'features'} are one input {expected}")
    (value,) = inputs
    fixed = list(value.shape[1:])
    fits = len(value.shape) == len(expected) and all(not isinstance(dim, int) or dim == want
                                                     for dim, want in zip(fixed, signature.image_shape, strict=True))
    if not fits or value.type not in DTYPES:
        raise Refused(f"graph input '{value.name}' is {value.type} {_shape(value)}; the data's inputs are "
                      f"float {expected}")
    return {value.name: ("input", DTYPES[value.type])}


def _fixed_sizes(session: Any, signature: InputSignature) -> tuple[int | None, int | None]:
    """The batch size and (text) sequence length the graph's inputs fix, None where they are dynamic;
    :class:`Refused` when the fixed length is shorter than the tokenizer's rows."""
    first = session.get_inputs()[0]
    batch = first.shape[0] if isinstance(first.shape[0], int) else None
    sequence = first.shape[1] if signature.kind == "text" and isinstance(first.shape[1], int) else None
    if sequence is not None and signature.max_length > sequence:
        raise Refused(f"its inputs are fixed to {sequence} tokens, but the tokenizer's rows reach max_length "
                      f"{signature.max_length}; set tokenizer.max_length to at most {sequence}")
    return batch, sequence


def _padded_to(array: np.ndarray, length: int, value: int) -> np.ndarray:
    """Token rows ``[batch, sequence]`` padded on the right to ``length`` with ``value``."""
    return np.pad(array, ((0, 0), (0, length - array.shape[1])), constant_values=value)


def filled(feeds: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``feeds`` with fewer than ``rows`` rows filled up with copies of their first row (a graph exported with a
    fixed batch of ``rows`` runs a short last batch so; the copies' outputs are dropped)."""
    short = rows - len(next(iter(feeds.values())))
    return feeds if short <= 0 else {name: np.concatenate([value, np.repeat(value[:1], short, axis=0)])
                                     for name, value in feeds.items()}


def _matched_output(session: Any, signature: InputSignature, num_classes: int, path: Path,
                    output: str | None = None) -> tuple[str, bool]:
    """The name of the graph's logits output: ``output`` when the recipe names one, else ``logits`` when the graph
    names one, else the first output whose declared shape is the task's, one with the class count fixed before one
    left open (a graph may return hidden states before its logits; a warning names the others that fit); for two
    classes, else one sigmoid score per row (a binary classifier: the second class's, said by the returned flag);
    :class:`Refused` when none is."""
    outputs = session.get_outputs()
    if output is not None and output not in {value.name for value in outputs}:
        listed = ", ".join(f"'{value.name}'" for value in outputs)
        raise Refused(f"'{output}' is not an output of the graph (its outputs: {listed})", key="output")
    named = [value for value in outputs if value.name == (output or "logits")]
    fitting = [value for value in named or outputs if _fits(value.shape, signature, num_classes)]
    if not fitting and num_classes == 2:
        binary = [value for value in named or outputs if _fits(value.shape, signature, 1)
                  and value.shape[-1] == 1 and score_activation(path, value.name) == "sigmoid"]
        if binary:
            return binary[0].name, True
    if not fitting:
        shapes = ", ".join(f"'{value.name}' {_shape(value)}" for value in named or outputs)
        what = "its output" if len(named or outputs) == 1 else "none of its outputs fits:"
        raise Refused(f"{what} {shapes}; expected logits {_expected(signature, num_classes)} "
                      f"({num_classes} classes in the data)")
    exact = [value for value in fitting if value.shape[-1] == num_classes]  # before outputs of open width
    chosen, others = (exact or fitting)[0], (exact or fitting)[1:]
    if others and not named:
        _warn_other_outputs(str(path), chosen.name, tuple(value.name for value in others),
                            str(_expected(signature, num_classes)))
    return chosen.name, False


@functools.cache
def _warn_other_outputs(path: str, chosen: str, others: tuple[str, ...], expected: str) -> None:
    """Say once per process (validate, plan and each stage build the teacher) which of several fitting outputs is
    read as the logits."""
    log.warning("%s: outputs %s fit the logits %s too; reading '%s' (the first) as the logits: set "
                "teacher.model.output to read another", path, ", ".join(f"'{name}'" for name in others), expected,
                chosen)


def _fits(shape: list[Any], signature: InputSignature, num_classes: int) -> bool:
    """Whether an output's declared shape can be the task's logits: its rank, and its last size if fixed."""
    last = shape[-1] if shape else None
    return len(shape) == len(_expected(signature, num_classes)) and not (isinstance(last, int) and last != num_classes)


def _expected(signature: InputSignature, num_classes: int) -> list[Any]:
    return ["batch", "sequence", num_classes] if signature.per_token else ["batch", num_classes]


def _check_probe(model: OnnxTeacher, signature: InputSignature, num_classes: int) -> None:
    """Run the graph on a small batch of the data's kind (token ids up to the vocabulary's last): it must run and
    answer with the data's class count."""
    from edgekd.models.user_module import PROBE_BATCH, PROBE_TOKENS, probe_inputs

    inputs = probe_inputs(signature)
    logits = _probe_run(model, inputs)
    if signature.kind == "text" and signature.max_length > PROBE_TOKENS:  # the longest rows the data will give
        longest = {name: value[:1, :1].repeat(1, signature.max_length) for name, value in inputs.items()}
        _probe_run(model, longest)
    expected = [PROBE_BATCH, PROBE_TOKENS, num_classes] if signature.per_token else [PROBE_BATCH, num_classes]
    if list(logits.shape) != expected:
        raise Refused(f"its output is {list(logits.shape)} for a batch of {PROBE_BATCH}; expected logits "
                      f"{_expected(signature, num_classes)} ({num_classes} classes in the data)")


def _probe_run(model: OnnxTeacher, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """The graph's output on ``inputs``; :class:`Refused` naming their shapes when onnxruntime fails on them."""
    try:
        with torch.no_grad():
            return model(**inputs)
    except Exception as exc:  # noqa: BLE001 - whatever onnxruntime raises, the graph does not run on these inputs
        shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in inputs.items())
        raise Refused(f"onnxruntime fails on the data's inputs ({shapes}): {first_line(exc)}") from None
