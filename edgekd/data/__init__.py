"""Datasets: loading, splitting and batching. Knows nothing about models."""

from edgekd.data.datasets import DatasetSplits, load_dataset
from edgekd.data.text import TextSet, TextSplits, load_text_dataset

__all__ = ["DatasetSplits", "TextSet", "TextSplits", "load_dataset", "load_text_dataset"]
