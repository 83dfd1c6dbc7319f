"""The user's own ``torch.nn.Module`` as a teacher or student (``arch: module``).

A recipe names it by import path and keyword arguments::

    teacher:
      model: {arch: module, factory: "mypkg.nets:small_cnn", kwargs: {width: 16}}

and ``edgekd.Pipeline(teacher=...)`` takes the same string or the module object itself. Only the
named factory is imported and called (nothing else a package ships is run); the module must return
logits ``[batch, classes]``, as a tensor or a dict/``ModelOutput`` holding ``logits``. Image data
reaches it as one positional tensor ``[batch, channels, height, width]``; text data as the keyword
arguments among ``input_ids``, ``attention_mask`` and ``token_type_ids`` that its ``forward`` takes.

Inside edgekd the module is wrapped (:class:`UserModule`) so that it is called like every other
model and returns the logits tensor; its weights are saved as safetensors next to the spec, so a run
directory rebuilds it by calling the factory again and loading the weights. A module given as an
object is kept in this process under its class name and a digest of its initial weights (the spec's
``instance``, part of every fingerprint); it cannot be rebuilt in another process.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib
import importlib.machinery
import inspect
import logging
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd.data.examples import TEXT_INPUTS, InputSignature
from edgekd.digest import update_with_tensor
from edgekd.errors import ConfigError, EdgekdError, ModelError
from edgekd.log_level import raised_level
from edgekd.models.call import eval_mode
from edgekd.models.layer_shapes import reshape_layers
from edgekd.models.logits import are_probabilities
from edgekd.models.specs import ModuleSpec

log = logging.getLogger(__name__)

#: Modules given to ``Pipeline(...)`` as objects, by their spec's ``instance`` (copies taken when given).
_OBJECTS: dict[str, nn.Module] = {}
#: Specs already checked on data of a given signature and class count, with the export target the recipe exports
#: to (the check runs at validate, plan and run).
_CHECKED: set[tuple[str, str, int, str | None]] = set()
#: Rows of the batch a module is tried on.
PROBE_BATCH = 2
#: Tokens per row of the text batch a module is tried on.
PROBE_TOKENS = 8


class Refused(Exception):
    """A module spec that cannot give a working model: ``key`` is the spec field to blame."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key, self.message = key, message


class UserModule(nn.Module):
    """The user's module (``.module``), called as edgekd calls its models and returning the logits tensor."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self._register_load_state_dict_pre_hook(_prefixed)


class ImageModule(UserModule):
    """Takes the image batch as one positional tensor."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - edgekd's image input name
        return logits_of(self.module(input))


class TextModule(UserModule):
    """Takes the text inputs its ``forward`` names (``input_ids`` positionally when it names none of them)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        parameters = inspect.signature(module.forward).parameters
        any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        self.keywords = tuple(name for name in TEXT_INPUTS if any_keyword or name in parameters)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        named = {name: given[name] for name in self.keywords if given[name] is not None}
        if "input_ids" in named:
            return logits_of(self.module(**named))
        return logits_of(self.module(input_ids, **named))


def _prefixed(state_dict: dict[str, Any], prefix: str, *_: Any) -> None:
    """Accept the user's module's own state dict (e.g. ``teacher.weights`` it saved itself) as the wrapper's."""
    inner = f"{prefix}module."
    for name in [n for n in state_dict if n.startswith(prefix) and not n.startswith(inner)]:
        state_dict[inner + name[len(prefix):]] = state_dict.pop(name)


def logits_of(output: Any) -> torch.Tensor:
    """The logits of a module's output: the tensor itself, or the ``logits`` of a dict or ``ModelOutput``."""
    if isinstance(output, torch.Tensor):
        return output
    logits = output.get("logits") if isinstance(output, Mapping) else getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise ModelError(f"the module returned {type(output).__name__}; expected a logits tensor [batch, classes] "
                         "or a dict/ModelOutput holding 'logits'")
    return logits


def register_object(module: nn.Module, role: str = "module") -> str:
    """Keep a copy of ``module`` for this process; the ``instance`` key is its class and a digest of its initial
    weights and of its submodules' own attributes (two objects differing only in an activation or a temperature
    are two models). A module edgekd cannot train (:func:`untrainable`) is a :class:`ConfigError` naming
    ``role``."""
    problem = untrainable(module)
    if problem is not None:
        raise ConfigError(f"{role}: {problem}")
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        update_with_tensor(digest, name, tensor.reshape(-1))
    for prefix, submodule in module.named_modules():
        for name, value in sorted(vars(submodule).items()):
            if not name.startswith("_") and name != "training":
                _update_with_attribute(digest, f"{prefix}.{name}", value)
    key = f"{type(module).__module__}.{type(module).__qualname__}@sha256:{digest.hexdigest()[:16]}"
    if key not in _OBJECTS:
        log.warning("%s was given as an object: the run keeps it in this process and its run directory cannot be "
                    "reloaded in a new one; give it as 'package.module:factory' to make it reloadable",
                    type(module).__name__)
        _OBJECTS[key] = copy.deepcopy(module)
    return key


def _update_with_attribute(digest: Any, name: str, value: Any) -> None:
    """Fold a module attribute into ``digest``: a tensor by content, plain values by ``repr``, a function or class
    by its qualified name, containers element by element, any other object by its type (its own attributes are
    not read)."""
    if isinstance(value, torch.Tensor):
        update_with_tensor(digest, name, value.detach().reshape(-1))
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _update_with_attribute(digest, f"{name}[{index}]", item)
        return
    if isinstance(value, Mapping):
        for key in sorted(value, key=repr):
            _update_with_attribute(digest, f"{name}[{key!r}]", value[key])
        return
    if value is None or isinstance(value, (str, int, float, bool, complex, bytes)):
        text = repr(value)
    elif callable(value) and hasattr(value, "__qualname__"):
        text = f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    else:
        text = type(value).__qualname__
    digest.update(f"{name}={text};".encode())


def resolve_factory(path: str) -> Callable[..., Any]:
    """The callable at ``package.module:factory``: only that module is imported (see :func:`import_user_module`)."""
    module_name, _, attribute = path.partition(":")
    try:
        found: Any = import_user_module(module_name)
    except ImportError as exc:
        raise Refused("factory", f"cannot import '{module_name}' ({exc}); expected an importable "
                      "'package.module:factory' (installed, on PYTHONPATH, or in the current directory)") from exc
    except Exception as exc:  # the user's module failed while importing
        raise Refused("factory", f"importing '{module_name}' raised {_one_line(exc)}") from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise Refused("factory", f"'{module_name}' has no attribute '{attribute}'")
        found = getattr(found, part)
    if not callable(found):
        raise Refused("factory", f"'{path}' is a {type(found).__name__}, not callable; expected a function or "
                      "class returning a torch.nn.Module")
    return found


def import_user_module(name: str) -> Any:
    """Import the module ``name``; one not found on ``sys.path`` is looked for in the current directory too, as
    ``python -m`` finds it (the ``edgekd`` console script does not put that directory on ``sys.path``). The
    directory is appended, so an installed package of the same name still wins; it stays on ``sys.path`` for the
    modules the user's module imports in turn."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        cwd, top = str(Path.cwd()), name.partition(".")[0]
        # the directory searched already, a module the user's module imports missing, or none there by that name
        if exc.name != top or cwd in sys.path or importlib.machinery.PathFinder.find_spec(top, [cwd]) is None:
            raise
        sys.path.append(cwd)
        log.debug("importing %s from the current directory %s", name, cwd)
        return importlib.import_module(name)


def instantiate(spec: ModuleSpec) -> nn.Module:
    """A fresh module of ``spec`` (its factory called, or a copy of the object), reshaped as pruning left it."""
    if spec.instance is not None:
        if spec.instance not in _OBJECTS:
            raise Refused("instance", f"'{spec.instance}' was given to Pipeline(...) as an object in another "
                          "process and cannot be rebuilt here; give the model as 'package.module:factory' "
                          "to reload its run directory")
        module = copy.deepcopy(_OBJECTS[spec.instance])
    else:
        factory = resolve_factory(str(spec.factory))
        try:
            module = factory(**spec.kwargs)
        except Exception as exc:
            raise Refused("factory", f"'{spec.factory}'(**{spec.kwargs}) raised {_one_line(exc)}") from exc
        if not isinstance(module, nn.Module):
            raise Refused("factory", f"'{spec.factory}' returned {type(module).__name__}; expected a torch.nn.Module")
        problem = untrainable(module)
        if problem is not None:
            raise Refused("factory", f"'{spec.factory}': {problem}")
    module = plain_float32(module)
    if spec.shapes:
        try:
            reshape_layers(module, spec.shapes)
        except (ConfigError, AttributeError) as exc:
            raise Refused("shapes", f"the module does not have the pruned layers recorded ({_one_line(exc)})") from exc
    return module


#: Wrappers around the user's module and the attribute holding it: data parallelism's and torch.compile's.
_WRAPPERS = {"DataParallel": "module", "DistributedDataParallel": "module", "OptimizedModule": "_orig_mod"}


def untrainable(module: nn.Module) -> str | None:
    """Why edgekd cannot train ``module`` as it is, or None: parameters on the ``meta`` device (shapes without
    data), or layers torch already quantized (``torch.ao`` INT8 layers hold packed weights, not parameters)."""
    name = type(module).__name__
    if any(tensor.is_meta for tensor in [*module.parameters(), *module.buffers()]):
        return (f"the module ({name}) holds tensors on the 'meta' device (shapes without data); build it on the CPU, "
                "or give it its weights first (module.to_empty(device='cpu') then load_state_dict)")
    quantized = next((f"{child} ({type(layer).__module__}.{type(layer).__name__})" for child, layer
                      in module.named_modules() if type(layer).__module__.startswith("torch.ao.nn.quantized")), None)
    if quantized is not None:
        return (f"the module ({name}) holds torch-quantized layers, e.g. {quantized}; give the float module: edgekd "
                "trains in float and quantizes the exported model itself (a quantize stage, or edgekd quantize)")
    return None


def plain_float32(module: nn.Module) -> nn.Module:
    """The module edgekd trains and exports: the user's own inside a data-parallel or ``torch.compile`` wrapper
    (edgekd runs its own processes; the ONNX exporter cannot trace a compiled module), its floating-point
    parameters and buffers in float32 (edgekd trains in float32, its ``precision`` option mixing in bf16; a
    float64 or half module failed on the data's float32 inputs). Each change is said once in a log line.
    """
    while (attribute := _WRAPPERS.get(type(module).__name__)) and isinstance(getattr(module, attribute, None),
                                                                             nn.Module):
        log.info("%s: using the module it wraps (%s)", type(module).__name__, type(getattr(module, attribute)).__name__)
        module = getattr(module, attribute)
    other = sorted({str(t.dtype).removeprefix("torch.") for t in [*module.parameters(), *module.buffers()]
                    if t.is_floating_point() and t.dtype != torch.float32})
    if other:
        log.info("%s holds %s parameters: converted to float32, as edgekd trains every model", type(module).__name__,
                 "/".join(other))
        module = module.float()
    return module


def check_traceable(module: nn.Module, context: str = "") -> None:
    """Refuse a TorchScript module (:class:`Refused` on ``factory``, the message after ``context``): tracing the
    wrapper around one for export fails with a message naming the object's address, a different line every run."""
    if isinstance(module, torch.jit.ScriptModule):
        raise Refused("factory", f"{context}the module is TorchScript ({type(module).__name__}), which edgekd cannot "
                      "trace for export; give the Python torch.nn.Module it was scripted or traced from")


def wrap(module: nn.Module, kind: str) -> UserModule:
    """``module`` as edgekd calls it for ``kind`` (``image`` or ``text``) data."""
    return ImageModule(module) if kind == "image" else TextModule(module)


def probe_inputs(signature: InputSignature) -> dict[str, torch.Tensor]:
    """A small batch of the data's kind to try a module on (seeded images; token ids up to the vocabulary's last)."""
    if signature.kind == "image":
        generator = torch.Generator().manual_seed(0)
        return {"input": torch.rand(PROBE_BATCH, *signature.image_shape, generator=generator)}
    ids = torch.ones(PROBE_BATCH, PROBE_TOKENS, dtype=torch.long)
    ids[:, -1] = signature.vocab_size - 1  # the largest token id: an embedding table too small fails now
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}


def check_outputs(model: UserModule, signature: InputSignature, num_classes: int) -> None:
    """Refuse a module without trainable parameters, one that fails on the data's inputs or does not return
    floating-point logits ``[batch, classes]``, in eval mode or in training mode."""
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise Refused("factory", f"{type(unwrap(model)).__name__} has no trainable parameters; edgekd trains the "
                      "teacher and the student (a fixed teacher can be an ONNX file: arch: onnx)")
    inputs = probe_inputs(signature)
    shapes = ", ".join(f"{name} {list(value.shape)}" for name, value in inputs.items())
    if signature.kind == "text":
        shapes += f"; token ids up to {signature.vocab_size - 1}, the tokenizer's last"
    expected = [PROBE_BATCH, num_classes]
    for training in (False, True):
        logits = _probe(model, inputs, shapes, training=training)
        mode = " in training mode" if training else ""
        if list(logits.shape) != expected:
            raise Refused("factory", f"the module returns logits of shape {list(logits.shape)}{mode} for inputs "
                          f"{shapes}; expected [batch, classes] = {expected} ({num_classes} classes in the data)")
        if not logits.is_floating_point():
            raise Refused("factory", f"the module returns {logits.dtype} logits{mode}; expected floating-point "
                          "scores (the values before softmax), which the losses differentiate")
        if are_probabilities(logits.float().numpy()):
            raise Refused("factory", f"the module returns probabilities{mode} (every row non-negative, summing to 1); "
                          "edgekd trains on logits, the scores before softmax (its cross-entropy and distillation "
                          "losses apply softmax themselves, and on probabilities the model trains poorly): return "
                          "the scores before the softmax (a log_softmax is fine)")


def _probe(model: UserModule, inputs: dict[str, torch.Tensor], shapes: str, *, training: bool) -> torch.Tensor:
    """The module's logits for ``inputs`` in eval or training mode (dropout, batch statistics: what training
    calls); the random stream, every submodule's mode and the buffers (batch-norm running statistics) are as
    they were after."""
    buffers = [(buffer, buffer.clone()) for buffer in model.buffers()]
    mode = " in training mode" if training else ""
    try:
        with eval_mode(model), torch.no_grad(), torch.random.fork_rng():
            model.train(training)
            return model(**inputs)
    except ModelError as exc:
        raise Refused("factory", f"in training mode, {exc}" if training else str(exc)) from exc
    except Exception as exc:
        raise Refused("factory", f"the module fails on the data's inputs{mode} ({shapes}): {_one_line(exc)}") from exc
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)


def build_user_module(spec: ModuleSpec, signature: InputSignature, num_classes: int) -> UserModule:
    """The wrapped module of ``spec`` for data of ``signature`` (seed torch first: the factory initialises it)."""
    try:
        model = wrap(instantiate(spec), signature.kind)
        check_outputs(model, signature, num_classes)
    except Refused as exc:
        raise ConfigError(f"model.{exc.key}: {exc.message}") from None
    return model


def check_spec(spec: ModuleSpec, state: Any, where: str) -> None:
    """``check_recipe``'s rule for a user's module: it builds and returns logits for the recipe's data; when the
    recipe exports it (an export stage, or a prune or factorize stage timing its steps), exports to ONNX; when a
    prune stage prunes it, prunes and runs once (:func:`edgekd.prune.structured.trial_prune`); and when a factorize
    stage factorizes it, has a layer that stage makes smaller."""
    data = data_shape(state.recipe)
    if data is None:
        return
    signature, num_classes = data
    role = where.partition(".")[0]
    export = _export_of(state.recipe, role)
    changes = [(index, stage) for index, stage in enumerate(state.recipe.stages)
               if stage.stage in ("prune", "factorize") and stage.role == role]
    key = (spec.model_dump_json(), repr(signature), num_classes, export,
           tuple(stage.model_dump_json() for _, stage in changes))
    if key in _CHECKED:
        return
    try:
        with torch.random.fork_rng():  # the factory's initialisation must not shift the run's random stream
            model = wrap(instantiate(spec), signature.kind)
            _check_on_data(model, state.recipe, signature, num_classes)
            if export is not None:
                check_exports(model, signature, *export)
            for index, stage in changes:
                check = _check_prunes if stage.stage == "prune" else _check_factorizes
                check(model, signature, stage, state, f"stages[{index}]", where)
    except Refused as exc:
        raise state.fail(f"{where}.{exc.key}", exc.message) from None
    _CHECKED.add(key)


def _check_prunes(model: UserModule, signature: InputSignature, stage: Any, state: Any, key: str, where: str) -> None:
    """Refuse, before training, a module the prune ``stage`` would refuse after it (see ``trial_prune``)."""
    from edgekd.prune.structured import trial_prune  # Torch-Pruning: only for recipes that prune a module

    try:  # the stage itself warns (nothing removed; Torch-Pruning's notes on the graph)
        with raised_level("edgekd.prune", logging.ERROR), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial_prune(model, probe_inputs(signature), stage)
    except ConfigError as exc:
        raise state.fail(key, f"{where}: {str(exc).removeprefix('prune: ')}") from None


def _check_factorizes(model: UserModule, _signature: InputSignature, stage: Any, state: Any, key: str,
                      where: str) -> None:
    """Refuse a factorize ``stage`` that would leave the module as it was, which it did silently: no layer it
    rewrites (linear layers but the classifier, embedding tables with ``embeddings``; a user's module's convs stay
    dense), or none its rank rule makes smaller (the module's shapes decide it, see
    :func:`edgekd.prune.lowrank.can_shrink`)."""
    from edgekd.prune.lowrank import classifier_skip, considered_layers, shrinkable_layers

    inner = unwrap(model)
    if shrinkable_layers(inner, stage):
        return
    skipped = classifier_skip(inner)
    name, layers = type(inner).__name__, [layer for layer, _ in considered_layers(inner, stage, skip=skipped)]
    if layers:
        rule = "even at rank 1" if stage.param_ratio is None else f"at param_ratio {stage.param_ratio:g}"
        raise state.fail(key, f"{where}: no layer of the module ({name}) gets smaller by factorize, so the stage "
                         f"would change nothing: the factor pairs of {', '.join(map(repr, layers[:3]))} keep more than "
                         f"max_size_ratio {stage.max_size_ratio:g} of their weights {rule}; lower param_ratio, "
                         "raise max_size_ratio or drop the factorize stage")
    tables = "" if stage.embeddings or not any(isinstance(m, nn.Embedding) for m in inner.modules()) \
        else " (or set embeddings: true to factorize its embedding tables)"
    raise state.fail(key, f"{where}: the module ({name}) has no layer factorize rewrites, so the stage would change "
                     "nothing: it factorizes linear layers but the classifier "
                     f"({', '.join(map(repr, skipped)) or 'none here'})"
                     f"{' and embedding tables' if stage.embeddings else ''}, and a user's module's convs stay dense; "
                     f"drop the factorize stage{tables}")


def _check_on_data(model: UserModule, recipe: Any, signature: InputSignature, num_classes: int) -> None:
    """:func:`check_outputs` on the recipe's inputs. A WordPiece the run trains has at most ``vocab_size`` tokens
    (the bound ``signature`` holds): a module failing on the bound is tried again on the exact size of the
    tokenizer the run will train, trained here only then."""
    from edgekd.models.data_fit import trained_tokenizer_size

    try:
        check_outputs(model, signature, num_classes)
    except Refused:
        exact = trained_tokenizer_size(recipe) if signature.kind == "text" else None
        if exact is None or exact >= signature.vocab_size:
            raise
        check_outputs(model, dataclasses.replace(signature, vocab_size=exact), num_classes)


def _export_of(recipe: Any, role: str) -> tuple[str, str] | None:
    """The export target the recipe's model of ``role`` first goes through and which stage exports it: the export
    stage's, else the check target of a prune, factorize or (timed) hybrid stage changing that model; None when
    nothing exports it."""
    for stage in recipe.stages:
        if stage.stage == "export":
            return stage.target, "the recipe exports the model"
        timed = stage.stage in ("prune", "factorize") or (stage.stage == "hybrid" and stage.measure_latency)
        if timed and stage.role == role:
            from edgekd.prune.measure import CHECK_TARGET  # the prune stages' own imports: only when one exports

            return CHECK_TARGET, f"the {stage.stage} stage times each step's ONNX export"
    return None


def check_exports(model: UserModule, signature: InputSignature, target_name: str, why: str) -> None:
    """Refuse a module that could not be exported (``why``: which stage exports it): it is exported once, untrained,
    to a temporary file by that exporter and target (parity with PyTorch included), so the failure comes before
    training."""
    from edgekd.export.config import load_export_target
    from edgekd.export.onnx_export import export_onnx

    try:
        target = load_export_target(target_name)
    except EdgekdError:
        return  # the export stage's own check names its target
    check_traceable(unwrap(model), f"{why}, but ")
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), \
            raised_level("edgekd.export", logging.WARNING):
        warnings.simplefilter("ignore")  # tracer warnings of a trial, not of the run's export
        path = Path(tmp) / "trial.onnx"
        try:
            export_onnx(model, probe_inputs(signature), path, target, extra_dynamic_axes=signature.dynamic_axes())
        except EdgekdError as exc:
            reason = str(exc).removeprefix(f"{path}: ")
            raise Refused("factory", f"{why}, but the module does not export to ONNX ({reason})") from exc


def data_shape(recipe: Any) -> tuple[InputSignature, int] | None:
    """The recipe's input signature and class count; None for hub data. Text: the ids of the tokenizer the run will
    have (a trained WordPiece's ``vocab_size`` as their bound), the first few ids of a hub tokenizer's (validate
    downloads nothing)."""
    from edgekd.data.config import HubData, MemoryData
    from edgekd.data.datasets import load_dataset
    from edgekd.data.task_data import prepare_task_data
    from edgekd.models.data_fit import text_signature

    data = recipe.data
    if isinstance(data, HubData):
        return None  # needs the network: checked when the model is built
    try:
        if data.modality == "image" or isinstance(data, MemoryData):
            prepared = prepare_task_data(data, recipe.seed)
            return prepared.signature, len(prepared.class_names)
        texts = load_dataset(data, data.split_seed if data.split_seed is not None else recipe.seed)
        per_token = texts.task == "token_classification"
        signature = text_signature(recipe, per_token=per_token)
    except EdgekdError:
        return None  # the data's (or tokenizer's) own checks report it
    if signature is None:
        signature = InputSignature(kind="text", vocab_size=PROBE_TOKENS, per_token=per_token)
    return signature, texts.num_classes


def unwrap(module: nn.Module) -> nn.Module:
    """The user's own module inside a :class:`UserModule` (any other module as it is)."""
    return module.module if isinstance(module, UserModule) else module


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
