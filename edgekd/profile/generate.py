"""Text generation over onnxruntime with the KV cache (the layout of :mod:`edgekd.export.causal_lm_onnx`).

The prompt runs once with an empty cache; every further token is one call with that token and the cache
the previous call returned. Greedy decoding picks the most likely token; sampling draws from the
softmax at ``temperature`` with a seeded generator. Each call is timed: the first is the time to first
token, the rest are per-token latencies.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgekd.errors import ConfigError, ModelError
from edgekd.ort_options import session_options
from edgekd.stage_record import FullRecord

#: ONNX metadata key holding the model's context length (positions it takes: prompt plus new tokens), written by
#: the exporter (:mod:`edgekd.export.causal_lm_onnx`) and read by :class:`CachedGenerator`.
CONTEXT_KEY = "edgekd.context_length"


@dataclass
class Generation:
    """Generated token ids and the seconds each call took (``seconds[0]``: the prompt, time to first token)."""

    tokens: list[int]
    seconds: list[float] = field(default_factory=list)



class GenerationFigures(FullRecord):
    """How fast a model generated: time to first token (the prompt call), per-token latency over every later
    call, tokens per second at the median per-token latency, and how many calls were timed."""

    time_to_first_token_ms: float
    per_token_p50_ms: float
    per_token_p90_ms: float
    tokens_per_second: float
    tokens_timed: int


class PerTokenSpeedup(FullRecord):
    """How many times faster per token one model generated than another: the median over the runs of the ratio
    of their median per-token latencies, its range, and the runs."""

    ratio: float
    low: float
    high: float
    runs: int


def generation_timing(runs: list[Generation], factor: float = 1.0) -> GenerationFigures:
    """Figures of generations of two or more tokens, their times scaled by ``factor``: time to first token
    (median over runs), per-token p50/p90 over every later call of every run, and tokens per second at
    the median of those calls (the prompt call excluded): on a shared machine one stalled call would
    otherwise set the rate of them all."""
    first = np.array([run.seconds[0] for run in runs]) * 1e3 * factor
    steps = np.concatenate([np.array(run.seconds[1:]) for run in runs]) * 1e3 * factor
    p50 = float(np.percentile(steps, 50))
    return GenerationFigures(time_to_first_token_ms=float(np.median(first)), per_token_p50_ms=p50,
                             per_token_p90_ms=float(np.percentile(steps, 90)),
                             tokens_per_second=1e3 / p50, tokens_timed=int(steps.size))


def generation_figures(runs: list[Generation], factor: float = 1.0) -> dict[str, float]:
    """:func:`generation_timing` as a JSON-ready mapping."""
    return generation_timing(runs, factor).to_json()


class CachedGenerator:
    """Generates from an ONNX causal LM with KV-cache inputs, reusing the cache between tokens."""

    def __init__(self, model: Path, threads: int = 1) -> None:
        options = session_options(threads)
        options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        self.past = [i for i in self.session.get_inputs() if i.name.startswith("past_key_values.")]
        self.past_names = tuple(i.name for i in self.past)
        self.outputs = [o.name for o in self.session.get_outputs()]
        size = next((o.shape[-1] for o in self.session.get_outputs() if o.name == "logits"), None)
        #: Tokens in the vocabulary (the logits' last axis), None when the graph leaves it dynamic.
        self.vocab: int | None = size if isinstance(size, int) else None
        context = self.session.get_modelmeta().custom_metadata_map.get(CONTEXT_KEY)
        #: Positions the model takes (prompt plus new tokens), None when the graph does not say.
        self.context: int | None = int(context) if context is not None else None

    def empty_cache(self, batch: int) -> dict[str, np.ndarray]:
        """A zero-length cache for ``batch`` sequences."""
        return {i.name: np.zeros((batch, i.shape[1], 0, i.shape[3]), np.float32) for i in self.past}

    def feed(self, ids: np.ndarray, cache: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The graph inputs of one call: ``ids`` ``[batch, new]`` after ``cache``, every position attended."""
        total = ids.shape[1] + cache_length(cache)
        feeds = {"input_ids": np.asarray(ids, np.int64), "attention_mask": np.ones((ids.shape[0], total), np.int64)}
        feeds.update(cache)
        return feeds

    def step(self, ids: np.ndarray, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Logits ``[batch, len(ids), vocab]`` for ``ids`` after ``cache``, and the cache extended by them.

        The returned cache holds onnxruntime's own output buffers (no copy); the call copies nothing
        but what the graph itself does.
        """
        logits, *present = self.session.run(self.outputs, self.feed(ids, cache))
        return logits, dict(zip(self.past_names, present, strict=True))

    def generate(self, prompt: list[int], new_tokens: int, temperature: float = 0.0, seed: int = 0,
                 stop: int | None = None) -> Generation:
        """``new_tokens`` tokens after ``prompt``: greedy when ``temperature`` is 0, else sampled from a generator
        seeded with ``seed``; with ``stop`` (e.g. the tokenizer's end-of-text id) fewer when that token comes
        first (it is then the last token returned). Bad arguments are a :class:`ConfigError` naming the first
        (:func:`check_request`)."""
        check_request(prompt, new_tokens, temperature, vocab=self.vocab, context=self.context, stop=stop, seed=seed)
        rng = np.random.default_rng(seed)
        tokens, state, result = TokenBuffer(prompt, new_tokens), DecodeState(self), Generation([])
        for _ in range(new_tokens):
            start = time.perf_counter()
            logits = state.advance(tokens)
            result.seconds.append(time.perf_counter() - start)
            tokens.append(_pick(logits[0, -1], temperature, rng))
            if tokens.cut_after(stop, tokens.length - 1):
                break
        result.tokens = tokens.new()
        return result


def check_request(prompt: Sequence[int], new_tokens: int, temperature: float, *, vocab: int | None,
                  context: int | None, least: int = 0, who: str = "generation", stop: int | None = None,
                  seed: int = 0) -> None:
    """Raise :class:`ConfigError` (one line starting with ``who``) naming the first bad argument of a generation:
    a temperature that is not a finite number >= 0, a ``seed`` that is not an integer >= 0, ``new_tokens`` not an
    integer >= ``least``, an empty prompt, a prompt token or ``stop`` outside ``0 .. vocab - 1``, or a prompt plus
    new tokens longer than ``context`` (when known)."""
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or not 0 <= temperature < math.inf:
        raise ConfigError(f"{who}: temperature must be >= 0, got {temperature!r} (0: greedy)")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"{who}: seed must be an integer >= 0, got {seed!r}")
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int | np.integer) or new_tokens < least:
        raise ConfigError(f"{who}: new_tokens must be an integer >= {least}, got {new_tokens!r}")
    if len(prompt) == 0:
        raise ConfigError(f"{who}: the prompt is empty; give at least one token")
    bad = [t for t in prompt if isinstance(t, bool) or not isinstance(t, int | np.integer) or t < 0
           or (vocab is not None and t >= vocab)]
    if bad:
        known = f" (0..{vocab - 1})" if vocab is not None else ""
        raise ConfigError(f"{who}: prompt token {bad[0]!r} is outside the vocabulary{known}")
    if stop is not None and (isinstance(stop, bool) or not isinstance(stop, int | np.integer) or stop < 0
                             or (vocab is not None and stop >= vocab)):
        raise ConfigError(f"{who}: stop must be a token id of the vocabulary or None, got {stop!r}")
    if context is not None and len(prompt) + new_tokens > context:
        raise ConfigError(f"{who}: a {len(prompt)}-token prompt plus {new_tokens} new tokens exceeds the context of "
                          f"{context} tokens; shorten the prompt or generate fewer")


class TokenBuffer:
    """A sequence of token ids growing in place: ``prompt`` then up to ``new_tokens`` more, held in one
    preallocated int64 array so a model call takes a slice of it (a view) instead of a new array."""

    def __init__(self, prompt: Sequence[int], new_tokens: int) -> None:
        self.ids = np.empty((1, len(prompt) + new_tokens), np.int64)
        self.ids[0, :len(prompt)] = prompt
        self.prompt = self.length = len(prompt)

    def append(self, token: int) -> None:
        """Add one token at the end."""
        self.ids[0, self.length] = token
        self.length += 1

    def extend(self, tokens: Sequence[int]) -> None:
        """Add ``tokens`` at the end."""
        self.ids[0, self.length:self.length + len(tokens)] = tokens
        self.length += len(tokens)

    def truncate(self, length: int) -> None:
        """Keep the first ``length`` tokens."""
        self.length = length

    def cut_after(self, token: int | None, start: int) -> bool:
        """Keep the tokens up to the first ``token`` from position ``start`` on (it included); whether there was
        one (never for ``token`` None)."""
        if token is None:
            return False
        found = np.flatnonzero(self.ids[0, start:self.length] == token)
        if found.size:
            self.length = start + int(found[0]) + 1
        return bool(found.size)

    def new(self) -> list[int]:
        """The tokens after the prompt."""
        return self.ids[0, self.prompt:self.length].tolist()


class DecodeState:
    """One model's KV cache over a prefix of a :class:`TokenBuffer`, and how many positions it holds.

    :meth:`advance` feeds the model exactly the tokens its cache does not hold yet (the whole prompt at
    first, one token per step afterwards, several after a speculative round); :meth:`rollback` drops
    positions past a length, copying only when there is something to drop.
    """

    def __init__(self, generator: CachedGenerator) -> None:
        self.generator, self.cache, self.length = generator, generator.empty_cache(1), 0

    def advance(self, tokens: TokenBuffer, upto: int | None = None) -> np.ndarray:
        """Logits ``[1, n, vocab]`` for the tokens from the cache's length to ``upto`` (default: all of them);
        the cache then holds ``upto`` positions."""
        upto = tokens.length if upto is None else upto
        logits, self.cache = self.generator.step(tokens.ids[:, self.length:upto], self.cache)
        self.length = upto
        return logits

    def rollback(self, length: int) -> None:
        """Keep the cache of the first ``length`` positions (a no-op when it holds no more than that)."""
        if length < self.length:
            self.cache, self.length = crop_cache(self.cache, length), length


def cache_length(cache: dict[str, np.ndarray]) -> int:
    """How many positions ``cache`` holds (its sequence axis, 2); 0 for a model without cache inputs."""
    return next(iter(cache.values())).shape[2] if cache else 0


def crop_cache(cache: dict[str, np.ndarray], length: int) -> dict[str, np.ndarray]:
    """The cache of the first ``length`` positions: rolls ``cache`` back, e.g. past rejected draft tokens.

    Keys and values of a position depend only on the positions before it, so the cropped cache is
    exactly the cache a run over those ``length`` tokens alone would have returned.
    """
    if not 0 <= length <= cache_length(cache):
        raise ValueError(f"cannot crop a {cache_length(cache)}-position cache to {length} positions")
    return {name: np.ascontiguousarray(tensor[:, :, :length]) for name, tensor in cache.items()}


def probabilities(logits: np.ndarray, temperature: float) -> np.ndarray:
    """The softmax of ``logits`` (last axis) at ``temperature`` (> 0), in float64."""
    scaled = (logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)) / temperature
    weights = np.exp(scaled)
    return weights / weights.sum(axis=-1, keepdims=True)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(logits.argmax())
    probs = probabilities(logits, temperature)
    return int(rng.choice(probs.size, p=probs))


def interleaved_generations(generators: dict[str, CachedGenerator], prompt: list[int], new_tokens: int, *,
                            warmup: int, runs: int) -> dict[str, list[Generation]]:
    """Greedy generations of ``new_tokens`` after ``prompt`` by every generator: ``warmup`` untimed ones each,
    then ``runs`` timed rounds of one generation each, interleaved so the models are timed side by side."""
    for generator in generators.values():
        for _ in range(warmup):
            generator.generate(prompt, new_tokens)
    timed: dict[str, list[Generation]] = {name: [] for name in generators}
    for _ in range(runs):
        for name, generator in generators.items():
            timed[name].append(generator.generate(prompt, new_tokens))
    return timed


def generation_memory_mb(model: Path, prompt_tokens: int, new_tokens: int, threads: int) -> float:
    """Resident MiB a fresh process adds by opening ``model`` and generating ``new_tokens`` after a prompt.

    Runs ``python -m edgekd.profile.generate`` in a new process, so what this process already holds
    (torch, other sessions) is not counted; the prompt is token id 0 repeated (memory does not depend on
    the ids).
    """
    import json
    import subprocess
    import sys

    request = json.dumps({"model": str(model), "prompt_tokens": prompt_tokens, "new_tokens": new_tokens,
                          "threads": threads})
    done = subprocess.run([sys.executable, "-m", "edgekd.profile.generate"], input=request, capture_output=True,
                          text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        detail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"{model}: onnxruntime could not generate with it in a fresh process: {detail}")
    return float(json.loads(lines[-1])["peak_memory_mb"])


def _measure_memory() -> None:
    """The worker of :func:`generation_memory_mb`: a JSON request on stdin, one JSON line on stdout."""
    import json
    import sys

    from edgekd.profile.worker import memory_kb, reset_peak

    request = json.loads(sys.stdin.read())
    reset_peak()
    baseline_kb, _ = memory_kb()
    CachedGenerator(Path(request["model"]), threads=request["threads"]).generate(
        [0] * request["prompt_tokens"], request["new_tokens"])
    _, peak_kb = memory_kb()
    print(json.dumps({"peak_memory_mb": max(peak_kb - baseline_kb, 0) / 1024}))


if __name__ == "__main__":
    _measure_memory()
