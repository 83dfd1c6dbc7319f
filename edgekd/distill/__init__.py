"""Distillation: losses, the training loop, and the ``teacher`` and ``distill`` stages."""
