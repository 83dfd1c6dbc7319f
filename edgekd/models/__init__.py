"""Model adapters and builders: architectures named in recipes, built through one registry."""

from edgekd.models.builders import build_model, count_params
from edgekd.models.weights import load_weights, save_weights

__all__ = ["build_model", "count_params", "load_weights", "save_weights"]
