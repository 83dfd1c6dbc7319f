"""Checkpoints holding only PyTorch weights (``pytorch_model.bin``, single or sharded), as many hub models are.

They load through torch's restricted ``weights_only`` loader, with the checkpoint's own values (was: refused
as pickled weights). A ``.bin`` holding anything but tensors (an object whose unpickling calls a function) is
refused by validate in one line, and the function never runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter, ValidationError

from edgekd.models.architectures import ModelSpec
from edgekd.models.call import call_logits
from edgekd.models.hf import build_hf
from tests import hf_families
from tests.test_hf_models import DIGITS, TEXT, TWO

CALLED: list[str] = []


def _called(what: str) -> str:
    CALLED.append(what)
    return what


class _RunsCode:
    """Unpickling this calls :func:`_called`, as a malicious file would call anything."""

    def __reduce__(self) -> tuple:
        return _called, ("unpickled",)


def _spec(directory: Path) -> object:
    return TypeAdapter(ModelSpec).validate_python({"arch": "hf", "pretrained": str(directory)})


def _save_as_torch_weights(model: torch.nn.Module, directory: Path, shards: int) -> None:
    """``model`` saved as transformers did before safetensors: config.json and ``pytorch_model.bin`` (or shards
    named by ``pytorch_model.bin.index.json``)."""
    model.save_pretrained(directory)
    (directory / "model.safetensors").unlink()
    state = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    if shards == 1:
        torch.save(state, directory / "pytorch_model.bin")
        return
    names = list(state)
    weight_map = {}
    for index in range(shards):
        file = f"pytorch_model-{index + 1:05d}-of-{shards:05d}.bin"
        part = names[index::shards]
        torch.save({name: state[name] for name in part}, directory / file)
        weight_map |= dict.fromkeys(part, file)
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("shards", [1, 2], ids=["single", "sharded"])
@pytest.mark.parametrize("family", ["bert", "llama", "vit"])
def test_a_checkpoint_of_pytorch_weights_loads_its_values(family: str, shards: int, tmp_path: Path) -> None:
    saved = hf_families.build(family, num_labels=2)
    _save_as_torch_weights(saved, tmp_path / family, shards)
    image = family in hf_families.IMAGE
    model = build_hf(_spec(tmp_path / family), DIGITS if image else TEXT, TWO).eval()
    batch = {"input": torch.randn(3, 1, 8, 8)} if image else hf_families.padded_batch()
    torch.testing.assert_close(call_logits(model, batch), call_logits(saved, batch))


def test_a_causal_lm_of_pytorch_weights_loads_its_values(tmp_path: Path) -> None:
    from edgekd.data.corpus import build_char_tokenizer
    from edgekd.models.causal_lm import build_causal_lm, causal_lm_from_spec

    tokenizer = build_char_tokenizer("hello world")
    saved = build_causal_lm("llama", vocab_size=len(tokenizer), context=16, layers=1, width=16, heads=2).eval()
    _save_as_torch_weights(saved, tmp_path, shards=1)
    model = causal_lm_from_spec(_spec(tmp_path), tokenizer, 16, "teacher.model").eval()
    ids = torch.tensor([[1, 2, 3, 4]])
    torch.testing.assert_close(model(input_ids=ids).logits, saved(input_ids=ids).logits)


@pytest.mark.parametrize("shards", [1, 2], ids=["single", "sharded"])
def test_pytorch_weights_holding_an_object_are_refused_before_it_runs(shards: int, tmp_path: Path) -> None:
    _save_as_torch_weights(hf_families.build("bert", num_labels=2), tmp_path, shards)
    victim = tmp_path / ("pytorch_model.bin" if shards == 1 else "pytorch_model-00002-of-00002.bin")
    torch.save({"classifier.weight": torch.zeros(2, 24), "hook": _RunsCode()}, victim)
    with pytest.raises(ValidationError) as refused:
        _spec(tmp_path)
    message = str(refused.value)
    assert f"'{victim}' is not PyTorch weights torch's weights_only loader reads" in message
    assert CALLED == []
    assert "\x1b" not in message  # torch colours its refusal; a one-line error carries no terminal escapes


def test_edgekd_export_of_pytorch_weights_holding_an_object_is_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from edgekd.cli import app

    checkpoint = tmp_path / "checkpoint"
    _save_as_torch_weights(hf_families.build("bert", num_labels=2), checkpoint, 1)
    torch.save({"classifier.weight": torch.zeros(2, 24), "hook": _RunsCode()}, checkpoint / "pytorch_model.bin")
    result = CliRunner().invoke(app, ["export", str(checkpoint), "--target", "onnx-fp32",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "pytorch_model.bin' is not PyTorch weights torch's weights_only loader reads" in message, message
    assert "internal error" not in message and "Traceback" not in result.output and "\x1b" not in result.output
    assert CALLED == []
