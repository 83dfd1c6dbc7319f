"""Datasets: loading, splitting and batching. Knows nothing about models."""

from edgekd.data.datasets import DatasetSplits, load_dataset

__all__ = ["DatasetSplits", "load_dataset"]
