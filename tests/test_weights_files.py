"""``teacher.weights`` files saved from a model inside a training wrapper (DistributedDataParallel's ``module.``,
torch.compile's ``_orig_mod.``, a Lightning module's ``model.``) load into the recipe's model."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from edgekd.errors import ModelError
from edgekd.models.weights import load_weights


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(144, 10))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "model."])
def test_a_wrappers_prefix_is_stripped_with_one_line(prefix: str, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    trained = _net(1)
    path = tmp_path / "teacher.safetensors"
    save_file({prefix + name: tensor.contiguous() for name, tensor in trained.state_dict().items()}, str(path))
    model = _net(2)
    with caplog.at_level(logging.INFO, logger="edgekd"):
        load_weights(model, path)
    assert caplog.messages == [f"{path}: tensor names start with '{prefix}' (a training wrapper's); loaded "
                               "without it"]
    for name, tensor in trained.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


@pytest.mark.parametrize("case", ["one name prefixed", "a stripped name the model lacks"])
def test_names_that_still_do_not_fit_are_refused_in_one_line(case: str, tmp_path: Path) -> None:
    """Only a prefix on every name, whose removal leaves names the model has, is taken off."""
    state = {name: tensor.contiguous() for name, tensor in _net(1).state_dict().items()}
    if case == "one name prefixed":
        state["module.0.weight"] = state.pop("0.weight")
    else:
        state = {f"module.{name}": tensor for name, tensor in (state | {"9.bias": torch.zeros(2)}).items()}
    path = tmp_path / "teacher.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError, match=r"weights do not fit the recipe's model \(.*(missing|unexpected)"):
        load_weights(_net(2), path)


def test_a_tensor_of_another_shape_is_named_with_both_shapes(tmp_path: Path) -> None:
    state = {name: tensor.contiguous() for name, tensor in _net(1).state_dict().items()}
    state["3.weight"] = torch.zeros(7, 144)  # a head for 7 classes, the model has 10
    path = tmp_path / "teacher.safetensors"
    save_file(state, str(path))
    with pytest.raises(ModelError) as refused:
        load_weights(_net(2), path)
    assert str(refused.value) == (
        f"{path}: weights do not fit the recipe's model (size mismatch for 3.weight: copying a param with shape "
        "torch.Size([7, 144]) from checkpoint, the shape in current model is torch.Size([10, 144]))")


def test_a_module_with_tied_weights_is_saved_once_and_loads_tied(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from edgekd.models.weights import save_weights

    def tied() -> nn.Module:
        model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
        model[2].weight = model[0].weight
        return model

    torch.manual_seed(0)
    trained = tied()
    save_weights(trained, tmp_path / "w.safetensors")
    assert set(load_file(str(tmp_path / "w.safetensors"))) == {"0.weight", "0.bias", "2.bias"}
    loaded = load_weights(tied(), tmp_path / "w.safetensors")
    assert loaded[2].weight is loaded[0].weight and torch.equal(loaded[0].weight, trained[0].weight)
    assert torch.equal(loaded[2].bias, trained[2].bias)
