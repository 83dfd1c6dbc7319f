"""Tiny random Hugging Face classifiers of every family the tests exercise, saved with ``save_pretrained``.

No hub is reachable here, so each family is a random-init config a few kilobytes in size; the
sizes are deliberately odd (3 heads of 12, FFN 37) so a rule that only holds for BERT's shapes fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.data.batching import collate

VOCAB = 120
PAD = 0
TEXT: dict[str, dict[str, Any]] = {
    "bert": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                 max_position_embeddings=160, pad_token_id=PAD),
    "distilbert": dict(vocab_size=VOCAB, dim=24, n_layers=2, n_heads=3, hidden_dim=37, max_position_embeddings=160,
                       pad_token_id=PAD),
    "roberta": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                    intermediate_size=37, max_position_embeddings=162, pad_token_id=1, type_vocab_size=1),
    "gpt2": dict(vocab_size=VOCAB, n_embd=24, n_layer=2, n_head=3, n_positions=160, pad_token_id=PAD,
                 bos_token_id=2, eos_token_id=3),
    "llama": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=37, max_position_embeddings=160, pad_token_id=PAD, bos_token_id=2, eos_token_id=3),
    "qwen2": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=37, max_position_embeddings=160, pad_token_id=PAD, bos_token_id=2, eos_token_id=3),
}
_DECODER = dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=37, max_position_embeddings=160, pad_token_id=PAD, bos_token_id=2, eos_token_id=3)
#: More Llama-layout decoder families (grouped-query attention, gated MLPs), for the pruning tests only.
DECODERS: dict[str, dict[str, Any]] = {
    "mistral": _DECODER,
    "qwen3": {**_DECODER, "head_dim": 6},
    "gemma": {**_DECODER, "head_dim": 6},
}
#: More families whose plain MLP channels are pruned (Phi's fc1/fc2), for the pruning tests only.
PLAIN_MLP: dict[str, dict[str, Any]] = {
    "phi": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                max_position_embeddings=160, pad_token_id=PAD, bos_token_id=2, eos_token_id=3),
}
#: More encoder families (DeBERTa-v2's disentangled attention, ALBERT's shared layers), for validate's checks.
MORE_ENCODERS: dict[str, dict[str, Any]] = {
    "deberta-v2": dict(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                       intermediate_size=37, max_position_embeddings=160, pad_token_id=PAD),
    "albert": dict(vocab_size=VOCAB, embedding_size=16, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                   intermediate_size=37, max_position_embeddings=160, pad_token_id=PAD),
}
#: Image families at scikit-learn digits' shape (1 × 8 × 8).
IMAGE: dict[str, dict[str, Any]] = {
    "vit": dict(image_size=8, patch_size=2, num_channels=1, hidden_size=24, num_hidden_layers=2,
                num_attention_heads=3, intermediate_size=37),
    "convnext": dict(num_channels=1, patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2,
                     image_size=8),
    "resnet": dict(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"),
}

#: Image transformers whose configs are also backbones' (transformers' ``BackboneConfigMixin``: ``stage_names`` and
#: ``out_indices`` derived from the depth), at scikit-learn digits' shape; the first stage and the last are output.
_BACKBONE = dict(image_size=8, patch_size=2, num_channels=1, hidden_size=24, num_hidden_layers=3, num_attention_heads=3,
                 out_indices=[1, 3])
BACKBONE_IMAGE: dict[str, dict[str, Any]] = {
    "beit": {**_BACKBONE, "intermediate_size": 37},
    "dinov2": {**_BACKBONE, "mlp_ratio": 2},
    "dinov2_with_registers": {**_BACKBONE, "mlp_ratio": 2, "num_register_tokens": 2},
}


def build(family: str, num_labels: int = 3, seed: int = 0, **overrides: Any) -> torch.nn.Module:
    """A randomly initialised classifier of ``family`` (eval mode); ``overrides`` change config fields."""
    from transformers import AutoConfig, AutoModelForImageClassification, AutoModelForSequenceClassification

    torch.manual_seed(seed)
    sizes = {**(TEXT.get(family) or DECODERS.get(family) or PLAIN_MLP.get(family) or MORE_ENCODERS.get(family)
                or IMAGE.get(family) or BACKBONE_IMAGE[family]), **overrides}
    config = AutoConfig.for_model(family, num_labels=num_labels, **sizes)
    images = family in IMAGE or family in BACKBONE_IMAGE
    auto = AutoModelForImageClassification if images else AutoModelForSequenceClassification
    return auto.from_config(config).eval()


#: Larger sizes of some families, for the slow-marked runs of the matrix.
LARGER: dict[str, dict[str, Any]] = {
    "bert": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512),
    "llama": dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                  intermediate_size=344),
    "vit": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, intermediate_size=384),
}


def save(family: str, directory: Path, num_labels: int = 3, seed: int = 0, tokenizer: Any = None,
         **sizes: Any) -> Path:
    """:func:`build`, saved with ``save_pretrained`` into ``directory`` (safetensors).

    With a ``tokenizer`` the model gets its vocabulary size and padding id, and the tokenizer is saved beside it.
    """
    overrides = dict(sizes)
    if tokenizer is not None:
        overrides |= {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id}
        tokenizer.save_pretrained(directory)
    build(family, num_labels, seed, **overrides).save_pretrained(directory)
    return directory


def padded_batch(rows: int = 6, seed: int = 0, longest: int = 14) -> dict[str, torch.Tensor]:
    """A right-padded text batch of sentences 2–``longest`` tokens long (non-trivial attention masks)."""
    rng = np.random.default_rng(seed)
    lengths = rng.permutation(np.linspace(2, longest, rows))
    encoded = [rng.integers(4, VOCAB, size=int(length)) for length in lengths]
    batch = collate(encoded, range(rows), PAD)
    assert not batch["attention_mask"].all()
    return batch


def sentiment_files(root: Path, train: int = 400, dev: int = 80) -> dict[str, Any]:
    """Synthetic sentiment TSVs (``train.tsv``, ``dev.tsv``) in ``root`` and a WordPiece tokenizer trained on them,
    saved as ``root/tokenizer``: ``{"root": root, "tokenizer": tokenizer}``."""
    from edgekd.data.config import TokenizerConfig
    from edgekd.data.tokenizer import load_or_train_tokenizer
    from tests.test_text_pipeline import _write_tsv

    _write_tsv(root / "train.tsv", train, seed=1)
    _write_tsv(root / "dev.tsv", dev, seed=2)
    texts = [line.split("\t")[0] for line in (root / "train.tsv").read_text().splitlines()[1:]]
    tokenizer = load_or_train_tokenizer(TokenizerConfig(vocab_size=200, max_length=32), texts)
    tokenizer.save_pretrained(root / "tokenizer")
    return {"root": root, "tokenizer": tokenizer}
