"""A recipe's data made ready for a model: split, tokenized (text) and wrapped as example sets."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from edgekd.data.batching import encode
from edgekd.data.class_coverage import classes_without_training_examples, split_labels
from edgekd.data.config import DataConfig, MemoryData, NpzData, SklearnData, TokenizerConfig
from edgekd.data.datasets import DatasetSplits, load_dataset
from edgekd.data.examples import Examples, ImageExamples, InputSignature, TextExamples
from edgekd.data.image_files import is_image_data
from edgekd.data.memory import held
from edgekd.data.text import TextSplits
from edgekd.data.token_tags import token_examples
from edgekd.data.tokenizer import end_token_id, load_or_train_tokenizer
from edgekd.errors import DataError
from edgekd.log_level import warn_once

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskData:
    """Train/validation/test example sets, the class names and what models are fed."""

    train: Examples
    val: Examples
    test: Examples
    class_names: tuple[str, ...]
    signature: InputSignature
    tokenizer: Any | None = None
    texts: TextSplits | None = None
    train_targets: torch.Tensor | None = None
    """Class probabilities to train on instead of the hard labels, a row per training example (or None)."""


def prepare_task_data(
    config: DataConfig,
    seed: int,
    *,
    tokenizer_config: TokenizerConfig | None = None,
    tokenizer: Any | None = None,
    trust_remote_code: bool = False,
) -> TaskData:
    """Load ``config``'s data; text is tokenized with ``tokenizer`` or one from ``tokenizer_config``.

    Without a given tokenizer, text data gets the recipe's tokenizer (a pretrained one, or WordPiece
    trained on the training split — deterministic, so every stage that trains one gets the same).
    ``seed`` (the recipe's) seeds the split unless the data config fixes ``split_seed``.
    """
    if config.split_seed is not None:
        seed = config.split_seed
    if isinstance(config, MemoryData) and config.kind == "text":
        return _memory_text(config, seed)
    if isinstance(config, SklearnData | NpzData | MemoryData) or is_image_data(config):
        splits = load_dataset(config, seed)  # type: ignore[call-overload]
        if splits.soft_train is None:  # soft labels (a distilled set's) carry every class whatever the hard ones
            _check_classes(splits.y_train, str(getattr(config, "path", "data.train")))
            _warn_of_untrained_classes(splits, config)
        return TaskData(
            train=ImageExamples(splits.x_train, splits.y_train),
            val=ImageExamples(splits.x_val, splits.y_val),
            test=ImageExamples(splits.x_test, splits.y_test),
            class_names=splits.class_names,
            signature=InputSignature(kind="image", image_shape=splits.input_shape, preprocessing=splits.preprocessing),
            train_targets=splits.soft_train,
        )
    texts = load_dataset(config, seed)
    _warn_of_untrained_classes(texts, config)
    if tokenizer is None:
        tokenizer = load_or_train_tokenizer(tokenizer_config, texts.train.texts, trust_remote_code=trust_remote_code)
    max_length = tokenizer.model_max_length if tokenizer_config is None else tokenizer_config.max_length
    per_token = texts.task == "token_classification"
    signature = InputSignature(kind="text", vocab_size=len(tokenizer), pad_id=int(tokenizer.pad_token_id),
                               max_length=int(max_length), per_token=per_token, end_id=end_token_id(tokenizer))
    examples = token_examples if per_token else text_examples
    return TaskData(
        train=examples(tokenizer, texts.train.texts, texts.train.labels, max_length),
        val=examples(tokenizer, texts.val.texts, texts.val.labels, max_length),
        test=examples(tokenizer, texts.test.texts, texts.test.labels, max_length),
        class_names=texts.class_names,
        signature=signature,
        tokenizer=tokenizer,
        texts=texts,
    )


def _memory_text(config: MemoryData, seed: int) -> TaskData:
    """Token ids given in Python (:mod:`edgekd.data.memory`): already tokenized, so no tokenizer is used."""
    sets = held(config)
    train, val = sets.train_val(config.val_fraction, seed)
    _check_classes(train.labels, "data.train")
    test = sets.splits["test"]
    longest = max(len(row) for split in (train, val, test) for row in split.inputs)
    signature = InputSignature(kind="text", vocab_size=sets.vocab_size, pad_id=sets.pad_id, max_length=longest)
    return TaskData(
        train=TextExamples(train.inputs, train.labels, sets.pad_id),  # type: ignore[arg-type]
        val=TextExamples(val.inputs, val.labels, sets.pad_id),  # type: ignore[arg-type]
        test=TextExamples(test.inputs, test.labels, sets.pad_id),  # type: ignore[arg-type]
        class_names=tuple(map(str, range(sets.num_classes))),
        signature=signature,
    )


def _check_classes(labels: torch.Tensor, where: str) -> None:
    """Refuse class labels with one class in the training split: the models would learn a constant, and every
    accuracy after it be that class's share (text and image files are refused as they are read, naming the
    column or folders; this covers arrays: npz files and sets given in Python)."""
    if labels.ndim == 1 and not labels.is_floating_point() and len(labels) and len(torch.unique(labels)) < 2:
        raise DataError(f"{where}: every training example has class {int(labels[0])}; expected at least 2 classes")


def _warn_of_untrained_classes(splits: DatasetSplits | TextSplits, config: DataConfig) -> None:
    """Warn (once a process: every stage reads the data) of classes the training split lacks
    (:func:`~edgekd.data.class_coverage.classes_without_training_examples`): no model learns them, and each of their
    test examples counts as wrong."""
    labels = split_labels(splits, "train")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":  # multi-label, regression and token targets: no class
        return
    missing = classes_without_training_examples(splits, config)
    if missing is not None:
        warn_once(log, f"data: {missing}; no model learns it, and each of its test examples counts as wrong")


def text_examples(tokenizer: Any, texts: Any, labels: Any, max_length: int) -> TextExamples:
    """Tokenize ``texts`` into a :class:`TextExamples` set with ``labels`` (−1 = unlabelled; float arrays, as
    multi-label and regression labels are, keep their dtype)."""
    values = np.array(labels)
    return TextExamples(encoded=tuple(encode(tokenizer, texts, max_length)),
                        labels=torch.from_numpy(values if values.dtype.kind == "f" else values.astype(np.int64)),
                        pad_id=int(tokenizer.pad_token_id))
