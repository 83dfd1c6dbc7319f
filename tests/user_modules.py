"""Small real PyTorch modules a user might bring, named by import path (``tests.user_modules:small_cnn``).

Each factory is a plain function of keyword arguments, as a user's own package would have; some are
broken on purpose, one way each, for the refusal tests.
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Two conv-BN-ReLU blocks, average pooling to 2 × 2 and a linear classifier; returns the logits tensor."""

    def __init__(self, width: int = 16, classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        )
        self.head = nn.Linear(8 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DictMLP(nn.Module):
    """An MLP over the flattened image that returns ``{"logits": ..., "features": ...}``, as many models do."""

    def __init__(self, hidden: int = 32, classes: int = 10, pixels: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(pixels, hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(images)
        return {"logits": self.classifier(features), "features": features}


class Scale(nn.Module):
    """A learned per-channel scale: parameters of its own that Torch-Pruning prunes along with the channels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


def small_cnn(width: int = 16, classes: int = 10) -> SmallCNN:
    """The CNN the end-to-end tests distill, prune and reload."""
    return SmallCNN(width=width, classes=classes)


def dict_mlp(hidden: int = 32, classes: int = 10) -> DictMLP:
    """A student returning a dict with ``logits``."""
    return DictMLP(hidden=hidden, classes=classes)


def scaled_cnn(width: int = 8) -> nn.Module:
    """A CNN with a custom parameterized layer between its convolutions (pruning it cannot be rebuilt)."""
    return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), Scale(width), nn.ReLU(),
                         nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(width, 10))


def raises(width: int = 8) -> nn.Module:
    """A factory that fails, as one with a bug would."""
    raise RuntimeError(f"no weights for width {width}")


def not_a_module() -> dict[str, int]:
    """A factory returning a config instead of a module."""
    return {"width": 8}


def wrong_classes() -> nn.Module:
    """A classifier for 3 classes (the digits have 10)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))


def no_logits() -> nn.Module:
    """A module returning a dict without ``logits``."""
    return _NoLogits()


def wrong_input() -> nn.Module:
    """A module expecting 3-channel images (the digits have 1)."""
    return SmallCNN(channels=3)


def float64_cnn(width: int = 4) -> nn.Module:
    """The small CNN in float64, as a module converted with ``.double()`` comes."""
    return SmallCNN(width=width).double()


def compiled_cnn(width: int = 4) -> nn.Module:
    """The small CNN wrapped by ``torch.compile``."""
    return torch.compile(SmallCNN(width=width))


def scripted_cnn(width: int = 4) -> nn.Module:
    """The small CNN as TorchScript."""
    return torch.jit.script(SmallCNN(width=width))


def no_parameters() -> nn.Module:
    """A module with nothing to train: the first ten pixels as the logits."""
    return nn.Sequential(nn.Flatten(), _FirstTen())


def frozen() -> nn.Module:
    """A classifier whose every parameter is frozen (``requires_grad=False``)."""
    return SmallCNN(width=4).requires_grad_(False)


class _FirstTen(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :10]


def not_exportable() -> nn.Module:
    """A module that trains but has no ONNX export: its forward uses ``torch.histc``."""
    return _Histogram()


class _Histogram(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64 + 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.flatten(1)
        counts = torch.stack([torch.histc(row, bins=8, min=0.0, max=16.0) for row in pixels])
        return self.linear(torch.cat([pixels, counts], 1))


class _NoLogits(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.linear(x.flatten(1))}


#: Not callable: a factory path naming it is refused.
NOT_CALLABLE = 42


class BagOfWords(nn.Module):
    """Token embeddings averaged over the attention mask, then a linear classifier (text, by keyword)."""

    def __init__(self, vocab: int = 256, dim: int = 16, classes: int = 2, residual: bool = False) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.hidden = nn.Linear(dim, dim)
        self.classifier = nn.Linear(dim, classes)
        self.residual = residual

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        hidden = torch.relu(self.hidden(pooled))
        return self.classifier(pooled + hidden if self.residual else hidden)


def bag_of_words(vocab: int = 256, dim: int = 16, residual: bool = False) -> BagOfWords:
    """A text classifier for two classes over a vocabulary of ``vocab`` token ids (``residual``: the pooled
    embedding is added to the hidden layer's output, which couples the embedding's width to it)."""
    return BagOfWords(vocab=vocab, dim=dim, residual=residual)


def integer_logits() -> nn.Module:
    """A classifier that rounds its scores to integers: nothing a loss can differentiate."""
    return _Rounded()


def auxiliary_in_training() -> nn.Module:
    """A classifier that returns (logits, auxiliary logits) in training mode only, as Inception-style nets do."""
    return _Auxiliary()


class _LinearDigits(nn.Module):
    """One linear layer over the flattened 8 × 8 digit: the logits the broken variants below change."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))


class _Rounded(_LinearDigits):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).to(torch.int64)


class _Auxiliary(_LinearDigits):
    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        logits = super().forward(x)
        return (logits, logits.detach()) if self.training else logits


def tied_head() -> nn.Module:
    """An MLP whose output layer shares its weight with the input projection's transpose partner: one
    parameter under two names (``encode.weight`` and ``decode.weight``), as tied embeddings are."""
    return _TiedHead()


class _TiedHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encode = nn.Linear(64, 10)
        self.mix = nn.Linear(10, 64, bias=False)
        self.decode = nn.Linear(64, 10)
        self.decode.weight = self.encode.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        return self.encode(flat) + self.decode(torch.relu(self.mix(self.encode(flat))))


def batchnorm_mlp(hidden: int = 16) -> nn.Module:
    """An MLP with BatchNorm1d, which cannot normalise a training batch of one example."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


class Activated(nn.Module):
    """An MLP whose activation is chosen by name: two objects with equal weights can compute different things."""

    def __init__(self, activation: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden, self.out = nn.Linear(64, 16), nn.Linear(16, 10)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.hidden(x.flatten(1))
        return self.out(torch.relu(h) if self.activation == "relu" else torch.tanh(h))


def layernorm_mlp(hidden: int = 32) -> nn.Module:
    """An MLP whose hidden units feed a LayerNorm (pruned with them)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.LayerNorm(hidden), nn.ReLU(), nn.Linear(hidden, 10))


class _RowsConv1d(nn.Module):
    """The digits' 8 rows as a sequence of 8 steps of 8 features through 1-d convolutions and batch norms."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv1d(8, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(),
                                      nn.Conv1d(width, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(x.shape[0], 8, 8)  # [batch, row features, row]
        return self.head(self.features(rows).mean(-1))


def rows_conv1d(width: int = 16) -> nn.Module:
    """A 1-d CNN over the digits' rows (Conv1d + BatchNorm1d)."""
    return _RowsConv1d(width)


class _RowsGRU(nn.Module):
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gru = nn.GRU(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.gru(x.reshape(x.shape[0], 8, 8))[0][:, -1])


def rows_gru(hidden: int = 16) -> nn.Module:
    """A GRU over the digits' rows: its hidden units are the only prunable channels, and a GRU is kept whole."""
    return _RowsGRU(hidden)


class _RowsAttention(nn.Module):
    """The digits' 8 rows as 8 tokens through torch's own TransformerEncoder (attention + feed-forward)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.embed = nn.Linear(8, width)
        layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x.reshape(x.shape[0], 8, 8))).mean(1))


def rows_attention(width: int = 16) -> nn.Module:
    """A module of ``nn.TransformerEncoder``: without gradients it takes torch's fused fast path."""
    return _RowsAttention(width)


class _NormalisesInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.sub_(0.5).mul_(2).flatten(1))


def normalises_in_place() -> nn.Module:
    """A linear classifier that normalises its input in place (``x.sub_(0.5).mul_(2)``)."""
    return _NormalisesInPlace()


def mlp(hidden: int = 32) -> nn.Module:
    """A plain two-hidden-layer MLP of the digits' 64 pixels."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))


class _FixedFlatten(nn.Module):
    """The PyTorch tutorial's CNN: the flattened size is written into forward (16 channels × 4 × 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 16, 3, padding=1)
        self.head = nn.Linear(16 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).view(-1, 16 * 4 * 4))


def fixed_flatten_cnn() -> nn.Module:
    """A CNN whose forward hard-codes the flattened size: pruning its conv channels breaks it."""
    return _FixedFlatten()


def softmax_mlp(log: bool = False) -> nn.Module:
    """An MLP ending in softmax (probabilities) or, with ``log``, in log_softmax (log-probabilities: logits)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10),
                         nn.LogSoftmax(dim=1) if log else nn.Softmax(dim=1))


class _AliasedHead(nn.Module):
    """An MLP whose output layer is registered twice (``self.classifier = self.head``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(64, 32), nn.Linear(32, 10)
        self.classifier = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.relu(self.hidden(x.flatten(1))))


def aliased_head() -> nn.Module:
    """One output layer under two names."""
    return _AliasedHead()


class _TiedHidden(nn.Module):
    """Two hidden layers computing with one weight (``c.weight = b.weight``)."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c, self.head = nn.Linear(64, 32), nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 10)
        self.c.weight = self.b.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.c(torch.relu(self.b(torch.relu(self.a(x.flatten(1))))))))


def tied_hidden() -> nn.Module:
    """Hidden layers sharing one parameter."""
    return _TiedHidden()


def on_meta_device() -> nn.Module:
    """A CNN built on the 'meta' device: shapes without data."""
    return SmallCNN(width=4).to("meta")


def torch_quantized() -> nn.Module:
    """An MLP whose Linear layers torch quantized to INT8 (packed weights, not parameters)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its eager quantization for torchao's
        return torch.ao.quantization.quantize_dynamic(mlp(), {nn.Linear})


class _ClassPrior(nn.Module):
    """An MLP whose logits add a learnt per-class prior, a parameter of the module itself beside its layers."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.hidden, self.head = nn.Linear(64, hidden), nn.Linear(hidden, 10)
        self.prior = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.hidden(x.flatten(1)))) + self.prior


def class_prior_mlp(hidden: int = 32) -> nn.Module:
    """An MLP with a learnt class prior added to its logits."""
    return _ClassPrior(hidden)


class _ScaledBlock(nn.Module):
    """A hidden layer whose units a learnt layer scale ``[1, hidden]`` of the block itself multiplies."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(64, hidden)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, hidden)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x)) * self.gamma


class _ScaledMLP(nn.Module):
    """Two per-unit scales held by containers, not layers: the block's ``gamma`` and the model's ``scale``."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.block, self.head = _ScaledBlock(hidden), nn.Linear(hidden, 10)
        self.scale = nn.Parameter(torch.linspace(2.0, 1.0, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x.flatten(1)) * self.scale)


def scaled_mlp(hidden: int = 32) -> nn.Module:
    """An MLP whose hidden units are scaled by per-unit parameters of its containers."""
    return _ScaledMLP(hidden)


class _GroupNormCNN(nn.Module):
    """Convs each feeding a GroupNorm, and a linear classifier."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU(),
                                      nn.Conv2d(width, 2 * width, 3, padding=1), nn.GroupNorm(2, 2 * width),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def groupnorm_cnn(width: int = 8) -> nn.Module:
    """A CNN that neither prune nor factorize changes: a GroupNorm (kept whole) holds every conv's channels, its one
    linear layer is the classifier and a user's module's convs stay dense."""
    return _GroupNormCNN(width)


def groupnorm_mlp(hidden: int = 32) -> nn.Module:
    """An MLP whose hidden units feed a GroupNorm (kept whole, so pruning removes nothing); factorize changes it."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.GroupNorm(2, hidden), nn.ReLU(),
                         nn.Linear(hidden, 10))
