"""BiLSTM and TextCNN students: shapes, padding invariance, learning, ONNX export with dynamic axes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekd.data.batching import collate
from edgekd.models.architectures import build_text_student
from edgekd.models.call import call_model
from edgekd.models.specs import BiLSTMSpec, TextCNNSpec
from edgekd.models.text_students import BiLSTMClassifier, TextCNNClassifier

VOCAB, PAD, CLASSES = 30, 0, 3
SPECS = {
    "bilstm": BiLSTMSpec(arch="bilstm", embedding_dim=16, hidden=12, layers=2, fc_hidden=16, dropout=0.1),
    "textcnn": TextCNNSpec(arch="textcnn", embedding_dim=16, filters=8, kernel_sizes=[2, 3, 5], dropout=0.1),
}
INPUTS = ("input_ids", "attention_mask")


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: fastest for these tiny models, and unaffected by a busy CPU.

    On a loaded 2-core machine two threads made a tiny BiLSTM's forward pass ~300× slower (they
    wait for each other at every time step).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(arch: str, num_classes: int = CLASSES, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_text_student(SPECS[arch], vocab_size=VOCAB, num_classes=num_classes, pad_id=PAD)


def sentences(count: int, seed: int = 0, longest: int = 12) -> list[np.ndarray]:
    """Token ids like a tokenizer's: [CLS]=2 … [SEP]=3 around 1–``longest`` word ids from 5 up."""
    rng = np.random.default_rng(seed)
    return [np.array([2, *rng.integers(5, VOCAB, size=int(rng.integers(1, longest + 1))), 3]) for _ in range(count)]


@pytest.mark.parametrize("arch", SPECS)
def test_builder_and_forward_shapes(arch: str) -> None:
    model = build(arch).eval()
    assert isinstance(model, {"bilstm": BiLSTMClassifier, "textcnn": TextCNNClassifier}[arch])
    encoded = sentences(5) + [np.array([2, 3])]  # the last is shorter than the largest kernel
    batch = collate(encoded, range(len(encoded)), PAD)
    with torch.no_grad():
        logits = call_model(model, batch)
        assert logits.shape == (6, CLASSES) and torch.isfinite(logits).all()
        assert torch.equal(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]), logits)


@pytest.mark.parametrize("arch", SPECS)
def test_padding_does_not_change_logits(arch: str) -> None:
    model = build(arch).eval()
    encoded = sentences(8, seed=1, longest=20)
    with torch.no_grad():
        together = call_model(model, collate(encoded, range(len(encoded)), PAD))
        alone = torch.cat([call_model(model, collate(encoded, [i], PAD)) for i in range(len(encoded))])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", SPECS)
def test_learns_a_separable_toy_task(arch: str) -> None:
    """Label 1 when token 7 occurs anywhere in the sentence (max-pooling over time finds it)."""
    encoded = sentences(256, seed=2)
    for i, ids in enumerate(encoded):
        ids[ids == 7] = 8
        if i % 2:
            ids[1 + i % (len(ids) - 2)] = 7
    labels = torch.tensor([i % 2 for i in range(len(encoded))])
    model = build(arch, num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for idx in torch.randperm(len(encoded), generator=generator).split(32):
            loss = nn.functional.cross_entropy(call_model(model, collate(encoded, idx.tolist(), PAD)), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predictions = call_model(model, collate(encoded, range(len(encoded)), PAD)).argmax(dim=1)
    assert (predictions == labels).float().mean() >= 0.95


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("arch", SPECS)
def test_onnx_export_with_dynamic_batch_and_sequence(arch: str, tmp_path: Path) -> None:
    model = build(arch).eval()
    encoded = sentences(12, seed=3, longest=30)
    sample = collate(encoded, [0, 1, 2], PAD)
    path = tmp_path / f"{arch}.onnx"
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
            "logits": {0: "batch"}}
    torch.onnx.export(model, tuple(sample[name] for name in INPUTS), str(path), dynamo=False, opset_version=17,
                      input_names=list(INPUTS), output_names=["logits"], dynamic_axes=axes)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    widths = set()
    for rows in ([4], list(range(12))):  # a short single sentence, then a batch padded to the longest
        batch = collate(encoded, rows, PAD)
        widths.add(batch["input_ids"].shape[1])
        (logits,) = session.run(None, {name: batch[name].numpy() for name in INPUTS})
        with torch.no_grad():
            expected = call_model(model, batch).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert len(widths) == 2 and sample["input_ids"].shape[1] not in widths
