"""Ops torch's TorchScript ONNX exporter gets wrong or lacks, made exportable while a model is traced.

:func:`exportable_ops` is entered around every ``torch.onnx.export`` edgekd runs (classifiers and causal LMs with
their KV cache), whatever the family, as Optimum's exporter patches unsupported ops for the duration of an export:

- ``repeat_interleave`` with a whole-number repeat along one axis (rotary embeddings that interleave their
  frequencies: GLM, GLM-4, Helium, Cohere, Cohere 2): the exporter's own symbolic loses the tensors' ranks
  (``All tensors must have the same rank``); while tracing it is computed as unsqueeze → expand → flatten,
  the same values in ops every opset has.
- ``rms_norm`` (torch's own ``nn.RMSNorm``: DiffLlama's per-head norm) and ``expm1`` (the xIELU activation:
  Apertus), which the exporter has no symbolic for: computed from elementary ops.
- ``Tensor.bfloat16`` (Falcon with ``alibi``, whose slopes are multiplied in bfloat16): the exporter casts it to
  ``complex128``, which onnxruntime refuses; kept in float32 while tracing. The slopes are powers of two, so
  the products are the same below 256 positions; beyond, the parity gate on the real data says whether the
  graph still matches.
- ``aten::_upsample_bicubic2d_aa`` (antialiased bicubic interpolation, DINOv2 with registers resizing its
  position embeddings): the exporter has no symbolic for it; it becomes ONNX ``Resize`` in cubic mode with
  the Keys coefficient ``a = -0.5`` and weights renormalised inside the image, as PyTorch's antialiased kernel
  (PIL's) computes it, plus ``antialias`` from opset 18, which a smaller output needs. Tested at the model's own
  image size (the resize keeps the size); any other size is left to the parity gate.
- ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` (a user's own module): without gradients they take
  torch's fused fast path (``aten::_native_multi_head_attention``, ``_transformer_encoder_layer_fwd``), which the
  exporter has no symbolic for; the fast path is switched off while tracing, so they export as the same
  matrix products they compute in training.

Every export is still checked against PyTorch by the parity gate, so a patch that did not compute the same
values could not pass unnoticed. Outside the context manager nothing is changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

_ORIGINAL_FUNCTION = torch.repeat_interleave
_BICUBIC_AA = "aten::_upsample_bicubic2d_aa"
_SYMBOLIC_OPSETS = range(11, 22)


def _whole_repeats(repeats: Any) -> int | None:
    """``repeats`` when it is a Python int (a tensor of repeats goes to torch's own)."""
    if isinstance(repeats, int) and not isinstance(repeats, bool):
        return repeats
    return None


def traceable_repeat_interleave(input: torch.Tensor, repeats: Any = None, dim: int | None = None,
                                **options: Any) -> torch.Tensor:
    """``torch.repeat_interleave`` computed as unsqueeze → expand → flatten when ``repeats`` is one whole number
    and ``dim`` is given (the values are the same); any other call goes to torch's own."""
    count = _whole_repeats(repeats)
    if count is None or dim is None or not isinstance(input, torch.Tensor) or input.dim() == 0:
        return _ORIGINAL_FUNCTION(input, repeats, dim, **options)
    axis = dim % input.dim()
    sizes = [-1] * (input.dim() + 1)
    sizes[axis + 1] = count
    return input.unsqueeze(axis + 1).expand(*sizes).flatten(axis, axis + 1)


def _traceable_method(self: torch.Tensor, repeats: Any = None, dim: int | None = None, **options: Any) -> torch.Tensor:
    return traceable_repeat_interleave(self, repeats, dim, **options)


def _bicubic_aa_symbolic(g: Any, input: Any, output_size: Any, *args: Any) -> Any:
    """ONNX ``Resize`` for PyTorch's antialiased bicubic interpolation (Keys ``a = -0.5``, weights renormalised
    inside the image; ``antialias`` from opset 18)."""
    from torch.onnx._internal.torchscript_exporter import symbolic_helper

    resize = symbolic_helper._interpolate_helper("upsample_bicubic2d", 4, "cubic")(g, input, output_size, *args)
    node = resize.node()
    node.f_("cubic_coeff_a", -0.5)
    node.i_("exclude_outside", 1)
    if g.opset >= 18:
        node.i_("antialias", 1)
    return resize


def traceable_rms_norm(input: torch.Tensor, normalized_shape: Any, weight: torch.Tensor | None = None,
                       eps: float | None = None) -> torch.Tensor:
    """``torch.rms_norm`` in elementary ops: ``x / sqrt(mean(x², last dims) + eps) × weight``."""
    dims = tuple(range(-len(tuple(normalized_shape)), 0))
    eps = torch.finfo(input.dtype).eps if eps is None else eps
    normed = input * torch.rsqrt(input.pow(2).mean(dims, keepdim=True) + eps)
    return normed if weight is None else normed * weight


def _expm1(input: torch.Tensor) -> torch.Tensor:
    return torch.exp(input) - 1


def _keep_float(self: torch.Tensor, memory_format: Any = torch.preserve_format) -> torch.Tensor:
    return self


@contextmanager
def _symbolic(name: str, function: Any) -> Iterator[None]:
    """Register ``function`` as the exporter's symbolic of ``name`` for every opset, and remove it afterwards."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic
    from torch.onnx._internal.torchscript_exporter.registration import registry

    known = registry.get_function_group(name) is not None
    for opset in _SYMBOLIC_OPSETS:
        register_custom_op_symbolic(name, function, opset)
    try:
        yield
    finally:
        for opset in _SYMBOLIC_OPSETS:
            unregister_custom_op_symbolic(name, opset)
        if not known:  # an emptied entry would make the exporter fail differently ("min() arg is an empty sequence")
            registry._registry.pop(name, None)


@contextmanager
def _patched(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    original = getattr(owner, name)
    setattr(owner, name, replacement)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextmanager
def exportable_ops() -> Iterator[None]:
    """Within this context, the ops above trace and export as the module docstring says."""
    with ExitStack() as stack:
        stack.enter_context(_patched(torch, "repeat_interleave", traceable_repeat_interleave))
        stack.enter_context(_patched(torch.Tensor, "repeat_interleave", _traceable_method))
        stack.enter_context(_symbolic(_BICUBIC_AA, _bicubic_aa_symbolic))
        stack.enter_context(_patched(torch.Tensor, "bfloat16", _keep_float))
        stack.enter_context(_patched(torch, "rms_norm", traceable_rms_norm))
        stack.enter_context(_patched(torch, "expm1", _expm1))
        stack.enter_context(_patched(torch.Tensor, "expm1", _expm1))
        stack.enter_context(_mha_fast_path_off())
        yield


@contextmanager
def _mha_fast_path_off() -> Iterator[None]:
    enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(enabled)
