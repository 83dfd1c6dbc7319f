"""Quantizing a BERT whose attention heads were pruned: the fused graph is one onnxruntime can run.

A head-pruned BERT keeps its hidden size (24) but its attention is narrower (2 heads of 6 = 12 wide).
onnxruntime's Attention fusion needs the attention's own width and head count: given the hidden size
it wrote a fused graph onnxruntime refused to load ("hidden_size should be divisible by num_heads"), and
the quantize stage stopped. Found running a pruned student through export and quantize.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from edgekd.data.examples import InputSignature
from edgekd.models.specs import BertSpec
from edgekd.models.task_model import build_task_model
from edgekd.profile.references import export_encoder
from edgekd.prune.config import PruneConfig
from edgekd.prune.structured import prune_step
from edgekd.quantize.graph import attention_shape, prepare_graphs

pytestmark = pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::DeprecationWarning",
                                        "ignore::UserWarning")


def _exported(tmp_path: Path, *, prune: bool) -> Path:
    torch.manual_seed(0)
    signature = InputSignature("text", vocab_size=100, pad_id=0, max_length=32)
    model = build_task_model(BertSpec(arch="bert", layers=2, hidden=24, heads=4, ffn=48), signature, ("a", "b"))
    if prune:
        prune_step(model, PruneConfig(targets=["heads"], importance="l1"), 0.5, model.example_inputs(3, 12))
        assert model.module.bert.encoder.layer[0].attention.self.all_head_size == 12
    target = tmp_path / "bert.onnx"
    export_encoder(model.module.eval(), target, sequence_length=12, dynamic=True, output="logits")
    return target


def _outputs(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 100, (4, 12), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[1:, 7:] = 0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]


@pytest.mark.parametrize(("prune", "shape"), [(False, (4, 24)), (True, (2, 12))])
def test_the_fused_graph_of_a_head_pruned_bert_runs_and_matches(prune: bool, shape: tuple[int, int],
                                                               tmp_path: Path) -> None:
    source = _exported(tmp_path, prune=prune)
    assert attention_shape(onnx.load(str(source))) == shape
    graphs = prepare_graphs(source, tmp_path, "bert")
    assert graphs.fused is not None and graphs.fusions.get("Attention") == 2
    np.testing.assert_allclose(_outputs(graphs.fused), _outputs(source), atol=1e-4)
