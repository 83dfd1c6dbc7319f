"""Non-transformer text students: a BiLSTM (Tang et al., 2019) and a CNN (Kim, 2014).

Both take the batch a text tokenizer and :func:`edgekd.data.batching.collate` make —
``input_ids`` and ``attention_mask`` of shape ``[batch, sequence]``, right-padded — and return
logits ``[batch, classes]``, or, built ``per_token`` (token classification), ``[batch, sequence, tags]``: the
same features read at every position instead of pooled over the sentence. They are called by keyword
(:mod:`edgekd.models.call`), so a batch's ``token_type_ids`` never reach them. Padding never changes the logits
of a sentence or of its real tokens, and both export to ONNX with dynamic batch and sequence axes (no packed
sequences, no shape-dependent Python branches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgekd.models.specs import BiLSTMSpec, TextCNNSpec


class BiLSTMClassifier(nn.Module):
    """Embeddings → bidirectional LSTM → masked max-pooling over time → FC-ReLU-dropout-FC.

    ``per_token``: the FC head reads each token's two directions instead of their maximum over time, the usual
    BiLSTM tagger (each position sees the whole sentence, one direction each way).

    Deviation from Tang et al., who classify the concatenated final states of the two directions:
    those need packed sequences (or per-sentence indexing) to skip padding, which ONNX export
    with dynamic axes handles badly. Max-pooling the outputs over the real tokens needs neither.
    The backward direction reads each sentence reversed *within its length*, so it starts at the
    last real token rather than at the padding; this is why each direction is its own ``nn.LSTM``.
    With ``layers`` > 1, dropout is applied between layers.
    """

    def __init__(self, spec: BiLSTMSpec, vocab_size: int, num_classes: int, pad_id: int, *,
                 per_token: bool = False) -> None:
        super().__init__()
        self.per_token = per_token
        self.embedding = nn.Embedding(vocab_size, spec.embedding_dim, padding_idx=pad_id)
        widths = [spec.embedding_dim] + [2 * spec.hidden] * (spec.layers - 1)
        self.forward_lstms = nn.ModuleList(nn.LSTM(width, spec.hidden, batch_first=True) for width in widths)
        self.backward_lstms = nn.ModuleList(nn.LSTM(width, spec.hidden, batch_first=True) for width in widths)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Sequential(
            nn.Linear(2 * spec.hidden, spec.fc_hidden),
            nn.ReLU(),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.fc_hidden, num_classes),
        )

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[batch, classes]`` (``per_token``: ``[batch, sequence, classes]``) for right-padded
        ``input_ids`` and ``attention_mask`` ``[batch, sequence]``."""
        states = self.embedding(input_ids)
        for layer, (ahead, behind) in enumerate(zip(self.forward_lstms, self.backward_lstms, strict=True)):
            if layer:
                states = self.dropout(states)
            forward_states, _ = ahead(states)
            backward_states, _ = behind(reverse_within_length(states, attention_mask))
            states = torch.cat([forward_states, reverse_within_length(backward_states, attention_mask)], dim=-1)
        return self.head(states if self.per_token else masked_max(states, attention_mask))


class TextCNNClassifier(nn.Module):
    """Embeddings → parallel Conv1d (one per kernel size) → ReLU → masked max-pooling → dropout → linear.

    Each convolution has a window starting at every real token; windows running past the end of
    a sentence see zeros (the padding's embeddings are zeroed, and the model appends
    ``max(kernel_sizes) - 1`` zero positions itself), so a sentence shorter than the largest
    kernel still gives features, and padding does not change them.

    ``per_token``: each convolution's window is centred on every token (zeros past either end, as Collobert
    et al.'s window tagger) and the linear layer tags each token from its windows' features, unpooled.
    """

    def __init__(self, spec: TextCNNSpec, vocab_size: int, num_classes: int, pad_id: int, *,
                 per_token: bool = False) -> None:
        super().__init__()
        self.per_token = per_token
        self.embedding = nn.Embedding(vocab_size, spec.embedding_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(spec.embedding_dim, spec.filters, size) for size in spec.kernel_sizes)
        self.tail = max(spec.kernel_sizes) - 1
        self.dropout = nn.Dropout(spec.dropout)
        self.classifier = nn.Linear(spec.filters * len(spec.kernel_sizes), num_classes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Logits ``[batch, classes]`` (``per_token``: ``[batch, sequence, classes]``) for right-padded
        ``input_ids`` and ``attention_mask`` ``[batch, sequence]``."""
        mask = attention_mask.unsqueeze(1)
        embedded = self.embedding(input_ids).transpose(1, 2) * mask.to(self.embedding.weight.dtype)
        if self.per_token:
            return self._tag(embedded)
        embedded = F.pad(embedded, (0, self.tail))
        pooled = []
        for conv in self.convs:
            features = torch.relu(conv(embedded))  # [batch, filters, sequence + tail - kernel + 1]
            starts = F.pad(mask, (0, self.tail - conv.kernel_size[0] + 1)).squeeze(1)  # windows at real tokens
            pooled.append(masked_max(features.transpose(1, 2), starts))
        return self.classifier(self.dropout(torch.cat(pooled, dim=1)))

    def _tag(self, embedded: Tensor) -> Tensor:
        """Per-token logits from ``embedded`` ``[batch, features, sequence]`` (padding zeroed): each kernel's window
        centred on each token (one more token after than before it for an even size)."""
        features = []
        for conv in self.convs:
            before = (conv.kernel_size[0] - 1) // 2
            windows = F.pad(embedded, (before, conv.kernel_size[0] - 1 - before))
            features.append(torch.relu(conv(windows)))  # [batch, filters, sequence]
        return self.classifier(self.dropout(torch.cat(features, dim=1).transpose(1, 2)))


def masked_max(values: Tensor, mask: Tensor) -> Tensor:
    """Maximum over time of ``values`` ``[batch, time, features]`` at the steps ``mask`` ``[batch, time]`` keeps."""
    hidden = (mask == 0).unsqueeze(-1)
    return values.masked_fill(hidden, torch.finfo(values.dtype).min).amax(dim=1)


def reverse_within_length(values: Tensor, mask: Tensor) -> Tensor:
    """``values`` ``[batch, time, features]`` with each row's real steps (right-padded ``mask``) reversed.

    Padding stays where it is, so a recurrent layer reading the result starts at the last real
    token. Applying it twice gives ``values`` back.
    """
    mask = mask.to(torch.int64)
    steps = torch.ones_like(mask).cumsum(dim=1) - 1
    lengths = mask.sum(dim=1, keepdim=True)
    source = torch.where(mask != 0, lengths - 1 - steps, steps)
    return values.gather(1, source.unsqueeze(-1).expand_as(values))
