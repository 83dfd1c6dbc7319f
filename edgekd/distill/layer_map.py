"""Layer maps: which teacher layer each student layer learns from.

Layers are counted from 1 as in Hugging Face ``hidden_states`` (index 0 is the embedding output,
index ``i`` the output of encoder layer ``i``); attention maps of layer ``i`` are ``attentions[i - 1]``.
A map is a list of ``(student_layer, teacher_layer)`` pairs.

With ``S`` student and ``T`` teacher layers:

- ``uniform`` (TinyBERT, Jiao et al. 2020): student layer ``i`` ← teacher layer ``⌊i·T/S⌋``, so the
  student's last layer always learns from the teacher's last one. Needs ``T ≥ S``.
- ``skip`` (PKD-Skip, Sun et al. 2019): student layer ``i`` ← teacher layer ``i·k``. Needs ``S·k ≤ T``.
- ``last`` (PKD-Last, Sun et al. 2019): the student's top ``k`` layers (default ``k = S``) ← the
  teacher's top ``k`` layers, in order: student ``S−k+j`` ← teacher ``T−k+j`` for ``j = 1..k``.
  Needs ``k ≤ S`` and ``k ≤ T``.
- ``explicit``: the given pairs, each within ``0..S`` and ``0..T`` (0 pairs embedding outputs).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekd.distill.layer_map_config import LayerMap
from edgekd.errors import ConfigError

LayerPairs = list[tuple[int, int]]


def map_layers(config: LayerMap, student_layers: int, teacher_layers: int) -> LayerPairs:
    """The ``(student_layer, teacher_layer)`` pairs ``config`` describes for these depths.

    Raises :class:`ConfigError` when the map cannot fit the two models, saying which layer is out
    of range and what would fit.
    """
    if student_layers < 1 or teacher_layers < 1:
        raise ConfigError(
            f"layer map '{config.kind}' needs encoder layers in both models, "
            f"got {student_layers} student and {teacher_layers} teacher layers"
        )
    return _KINDS[config.kind](config, student_layers, teacher_layers)


def _uniform(config: LayerMap, s: int, t: int) -> LayerPairs:
    if t < s:
        raise ConfigError(
            f"layer map 'uniform' needs at least as many teacher layers as student layers, "
            f"got {s} student and {t} teacher layers; use kind 'explicit'"
        )
    return [(i, i * t // s) for i in range(1, s + 1)]


def _skip(config: LayerMap, s: int, t: int) -> LayerPairs:
    k = config.k
    assert k is not None  # LayerMap's validator requires k for 'skip'
    if s * k > t:
        raise ConfigError(
            f"layer map 'skip' with k={k} maps student layer {s} to teacher layer {s * k}, "
            f"but the teacher has {t} layers; with {s} student layers k must be at most {t // s}"
        )
    return [(i, i * k) for i in range(1, s + 1)]


def _last(config: LayerMap, s: int, t: int) -> LayerPairs:
    k = config.k if config.k is not None else s
    if k > min(s, t):
        raise ConfigError(
            f"layer map 'last' with k={k} pairs the top {k} layers of each model, "
            f"but the student has {s} and the teacher {t} layers; k must be at most {min(s, t)}"
        )
    return [(s - k + j, t - k + j) for j in range(1, k + 1)]


def _explicit(config: LayerMap, s: int, t: int) -> LayerPairs:
    pairs = [(int(a), int(b)) for a, b in config.pairs or ()]
    for student_layer, teacher_layer in pairs:
        if student_layer > s or teacher_layer > t:
            raise ConfigError(
                f"layer map 'explicit' pair [{student_layer}, {teacher_layer}] is out of range: "
                f"student layers are 0..{s} and teacher layers 0..{t} (0 = embeddings)"
            )
    return pairs


_KINDS: dict[str, Callable[[LayerMap, int, int], LayerPairs]] = {
    "uniform": _uniform,
    "skip": _skip,
    "last": _last,
    "explicit": _explicit,
}
