"""A small text student starting from its teacher's word embeddings (``embeddings: teacher``).

Tang et al. (2019) gave their BiLSTM pretrained word vectors (GloVe), and that is why it reached 86.7%
on SST-2 before any distillation. A student that reads the same vocabulary as a pretrained teacher can
take the teacher's own table instead: the same width is copied as it is; a narrower student gets the
table's coordinates on its top principal directions (truncated SVD, ``E V_k``), the rank-``k`` table
whose dot products are closest to the teacher's. The result is scaled to the standard deviation of
the student's own initial table (1 for PyTorch's default embedding, 0.02 for a fresh BERT's), the
scale the student's other layers (and a BERT's position embeddings) were sized for, and the padding
row is zero as before. The same holds for a fresh BERT student (``arch: bert`` with sizes), whose
table is ``hidden`` wide: TinyBERT and MiniLM students start from pretrained knowledge too. A student
wider than the teacher's table is refused: there is nothing to fill the extra columns with.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd.errors import ConfigError

#: Config keys that hold a Hugging Face model's word-embedding width, most specific first
#: (ALBERT's ``embedding_size`` is narrower than its ``hidden_size``).
WIDTH_KEYS = ("embedding_size", "hidden_size", "n_embd", "d_model", "dim")


def input_embeddings(module: nn.Module) -> nn.Embedding | None:
    """The word-embedding table of a Hugging Face model or of an edgekd text student, else None."""
    getter = getattr(module, "get_input_embeddings", None)
    table = getter() if callable(getter) else getattr(module, "embedding", None)
    return table if isinstance(table, nn.Embedding) else None


def embedding_width(spec: Any) -> int | None:
    """The word-embedding width of the model ``spec`` describes, when it is known without building it.

    Read from the sizes of edgekd's own text models and from a checkpoint's or an ``hf`` spec's config;
    None when the spec does not say (the build checks it then).
    """
    if isinstance(getattr(spec, "embedding_dim", None), int):
        return spec.embedding_dim
    pretrained = getattr(spec, "pretrained", None)
    if pretrained is not None:
        from edgekd.models.families import read_config

        try:
            config = read_config(pretrained)
        except ValueError:
            return None  # named by the check of the spec itself
    elif getattr(spec, "arch", None) == "bert":
        return spec.hidden
    else:
        config = getattr(spec, "config", None) or {}
    return next((config[key] for key in WIDTH_KEYS if isinstance(config.get(key), int)), None)


def check_embedding_width(student: Any, teacher: Any, fail: Any, where: str) -> None:
    """Raise ``fail(key, message)`` when ``student`` asks for the teacher's embeddings but is wider than them."""
    if getattr(student, "embeddings", "random") != "teacher":
        return
    width, wanted = embedding_width(teacher), embedding_width(student)
    if width is not None and wanted is not None and wanted > width:
        key = "embedding_dim" if hasattr(student, "embedding_dim") else "hidden"
        raise fail(f"{where}.{key}", _too_wide(wanted, width))


def _too_wide(wanted: int, width: int) -> str:
    return f"{wanted} is wider than the teacher's word embeddings ({width}); expected at most {width} " \
           "with embeddings: teacher"


def inherit_embeddings(student: nn.Module, teacher: nn.Module, *, where: str) -> None:
    """Replace ``student``'s word embeddings with ``teacher``'s, projected to the student's width.

    ``where`` is the recipe key the student's model is at (``student.model``), for the messages.
    """
    target, source = input_embeddings(student), input_embeddings(teacher)
    if target is None:
        raise ConfigError(f"{where}.embeddings: 'teacher' needs a student with a word-embedding table")
    if source is None:
        raise ConfigError(f"{where}.embeddings: 'teacher' needs a teacher with a word-embedding table; "
                          f"{type(teacher).__name__} has none")
    table = source.weight.detach().float()
    (rows, width), (vocabulary, wanted) = table.shape, target.weight.shape
    if rows != vocabulary:
        raise ConfigError(f"{where}.embeddings: the teacher's table has {rows} rows, the student's vocabulary "
                          f"{vocabulary}; they must share the tokenizer")
    if wanted > width:
        key = "embedding_dim" if target is getattr(student, "embedding", None) else "hidden"
        raise ConfigError(f"{where}.{key}: {_too_wide(wanted, width)}")
    with torch.no_grad():
        target.weight.copy_(scaled_like(project(table, wanted), target.weight.detach(), target.padding_idx))
        if target.padding_idx is not None:
            target.weight[target.padding_idx].zero_()


def project(table: torch.Tensor, width: int) -> torch.Tensor:
    """``table`` ``[rows, d]`` on its ``width`` leading right-singular directions (itself when ``width == d``)."""
    if width == table.shape[1]:
        return table.clone()
    _, _, vh = torch.linalg.svd(table, full_matrices=False)
    return table @ vh[:width].T


def scaled_like(table: torch.Tensor, initial: torch.Tensor, padding_idx: int | None) -> torch.Tensor:
    """``table`` times one scalar so its entries have the standard deviation of ``initial``'s (the student's
    freshly initialised table, its padding row left out); the geometry is unchanged."""
    rows = torch.ones(initial.shape[0], dtype=torch.bool)
    if padding_idx is not None:
        rows[padding_idx] = False
    std, wanted = table[rows].std(), initial[rows].float().std()
    return table * (wanted / std) if std > 0 else table
