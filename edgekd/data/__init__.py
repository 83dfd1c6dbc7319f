"""Datasets: loading, splitting and batching. Knows nothing about models."""
