"""A causal LM's KV-cache graph given to the one-pass verbs (profile, bench, bundle) is refused in one line saying
what it is and where it is handled, not with a message about a dynamic image size."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from edgekd import api
from edgekd.cli import app
from edgekd.errors import EdgekdError


@pytest.fixture(scope="module")
def cache_graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ids [batch, sequence] and one layer's past key [batch, heads, past, dim]: logits = the key summed, plus ids."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])
    past = helper.make_tensor_value_info("past_key_values.0.key", TensorProto.FLOAT, ["batch", 2, "past", 4])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Cast", ["input_ids"], ["ids_float"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["past_key_values.0.key"], ["total"], keepdims=0),
             helper.make_node("Add", ["ids_float", "total"], ["logits"])]
    graph = helper.make_graph(nodes, "kv", [ids, past], [logits])
    path = tmp_path_factory.mktemp("kv") / "decoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def test_api_profile_and_bundle_refuse_a_cache_graph_naming_it(cache_graph: Path, tmp_path: Path) -> None:
    for call in (lambda: api.profile(cache_graph, runs=10),
                 lambda: api.bundle(cache_graph, device="host-cpu", out=tmp_path / "b")):
        with pytest.raises(EdgekdError) as caught:
            call()
        message = str(caught.value)
        assert "'past_key_values.0.key' is a key/value cache" in message and "data.source: corpus" in message
        assert "image size" not in message and "\n" not in message


def test_cli_profile_of_a_cache_graph_is_one_line_exit_2(cache_graph: Path) -> None:
    result = CliRunner().invoke(app, ["profile", str(cache_graph), "--runs", "10"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "is a key/value cache" in lines[0]
