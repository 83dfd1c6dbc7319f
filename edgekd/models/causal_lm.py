"""Hugging Face causal language models built from sizes or loaded from a local directory.

Any family ``transformers`` can build from a config (``gpt2``, ``llama``, ``mistral``, ``qwen2``...)
is built through ``AutoConfig.for_model`` with the generic size names (``hidden_size``,
``num_hidden_layers``, ``num_attention_heads``, ``max_position_embeddings``); each config's
``attribute_map`` translates them to the family's own spelling (GPT-2's ``n_embd``...), so edgekd
never names a family's attributes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from edgekd.atomic import atomic_dir
from edgekd.data.saved_tokenizer import read_tokenizer, write_tokenizer
from edgekd.errors import ConfigError, ModelError
from edgekd.models.hf import LOAD_DTYPE, frozen_as_built, quiet_transformers, refuse_misfits
from edgekd.prune.structure import CONFIG_KEY as STRUCTURE_KEY
from edgekd.prune.structure import pruned_class

if TYPE_CHECKING:
    from edgekd.models.specs import HFSpec

log = logging.getLogger(__name__)

#: The file that marks a directory as an edgekd causal LM (beside config.json and the tokenizer).
MANIFEST = "edgekd_model.json"


@dataclass
class CausalLM:
    """A causal language model and the tokenizer it reads, saved together in one directory."""

    module: nn.Module
    tokenizer: Any = field(repr=False)

    @property
    def params(self) -> int:
        """Number of parameters."""
        return sum(p.numel() for p in self.module.parameters())

    def save(self, directory: Path) -> Path:
        """Write ``save_pretrained`` weights (safetensors), the tokenizer and the marker file, atomically."""
        with atomic_dir(Path(directory)) as tmp:
            self.module.save_pretrained(tmp, safe_serialization=True)
            write_tokenizer(self.tokenizer, tmp)
            (tmp / MANIFEST).write_text(json.dumps({"format": 1, "task": "causal_lm",
                                                    "model_type": self.module.config.model_type}, indent=2) + "\n")
        return Path(directory)

    @classmethod
    def load(cls, directory: Path) -> CausalLM:
        """Reload a directory written by :meth:`save`."""
        return cls(module=load_causal_lm(directory), tokenizer=load_tokenizer(directory))


def is_causal_lm_dir(directory: Path) -> bool:
    """Whether ``directory`` holds a causal LM saved by :meth:`CausalLM.save` (its marker file says so)."""
    try:
        return json.loads((Path(directory) / MANIFEST).read_text()).get("task") == "causal_lm"
    except (OSError, ValueError, AttributeError):
        return False


def load_tokenizer(directory: Path) -> Any:
    """The tokenizer saved beside a causal LM (by :meth:`CausalLM.save`), read as it was saved
    (:func:`read_tokenizer`)."""
    try:
        return read_tokenizer(Path(directory))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: no readable tokenizer saved with the model: "
                         f"{str(exc).splitlines()[0]}") from None


def causal_lm_from_spec(spec: HFSpec, tokenizer: Any, context: int, where: str) -> nn.Module:
    """The causal LM an ``arch: hf`` spec names: its checkpoint loaded, or its ``config`` built for this data.

    A model built from a config gets the tokenizer's vocabulary, ``context`` positions and the end-of-text
    token unless the config sets them. Refused with one line (naming ``where``, e.g. ``student.model``) when
    the tokenizer's vocabulary differs from the model's or the model's context is shorter than ``context``.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from edgekd.models.checkpoint_files import load_options
    from edgekd.models.packaged import resolve_pretrained

    quiet_transformers()
    if spec.pretrained is not None:
        source = resolve_pretrained(spec.pretrained)
        try:
            module, info = AutoModelForCausalLM.from_pretrained(
                source, attn_implementation="eager", trust_remote_code=spec.trust_remote_code, dtype=LOAD_DTYPE,
                ignore_mismatched_sizes=True, output_loading_info=True, **load_options(source))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{where}.pretrained: cannot load '{spec.pretrained}' as a causal LM: "
                             f"{str(exc).splitlines()[0]}") from None
        refuse_misfits(module, info, spec.pretrained, classes=None)  # transformers raised a RuntimeError after a table
        frozen_as_built(module)
    else:
        end = tokenizer.eos_token_id
        sizes = {"vocab_size": len(tokenizer), "max_position_embeddings": context, "bos_token_id": end,
                 "eos_token_id": end, "pad_token_id": end}
        given = {key: value for key, value in (spec.config or {}).items() if key != "model_type"}
        try:
            config = AutoConfig.for_model(spec.model_type, **{**sizes, **given})
            module = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
        except ValueError as exc:
            raise ConfigError(f"{where}.config: model_type '{spec.model_type}' cannot build a causal LM: "
                              f"{str(exc).splitlines()[0]}") from None
    check_tokenizer_fits(module, tokenizer, f"{where}")
    fit_vocabulary(module, tokenizer, where)
    if context_length(module) < context:
        raise ConfigError(f"{where}: the model takes {context_length(module)} positions, fewer than "
                          f"data.context {context}; lower data.context")
    return module


def build_causal_lm(family: str, *, vocab_size: int, context: int, layers: int, width: int, heads: int,
                    end_of_text_id: int = 0, seed: int = 0) -> nn.Module:
    """A freshly initialised causal LM of ``family`` with these sizes (feed-forward 4 × ``width``).

    Raises :class:`ConfigError` for a family ``transformers`` does not know or sizes it refuses
    (e.g. a width not divisible by the number of heads).
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    if width % heads:
        raise ConfigError(f"width {width} is not divisible by heads {heads}")
    try:
        config = AutoConfig.for_model(
            family, vocab_size=vocab_size, hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
            max_position_embeddings=context, bos_token_id=end_of_text_id, eos_token_id=end_of_text_id,
            pad_token_id=end_of_text_id, tie_word_embeddings=True)
    except ValueError as exc:
        raise ConfigError(f"family '{family}': {str(exc).splitlines()[0]}") from None
    if hasattr(config, "intermediate_size"):
        config.intermediate_size = 4 * width
    if hasattr(config, "num_key_value_heads"):
        config.num_key_value_heads = heads
    torch.manual_seed(seed)
    try:
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    except ValueError as exc:
        raise ConfigError(f"family '{family}' cannot build a causal LM: {str(exc).splitlines()[0]}") from None


def load_causal_lm(directory: Path) -> nn.Module:
    """The causal LM saved in ``directory`` (``save_pretrained`` layout, safetensors weights only); a pruned one
    reloads from its rewritten config, a factorized one through :func:`~edgekd.prune.structure.pruned_class`
    (its ``config.edgekd_structure`` lists the low-rank layers)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    quiet_transformers()
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ModelError(f"pretrained '{directory}': no config.json there; expected a save_pretrained directory")
    try:
        loader: Any = AutoModelForCausalLM
        config = AutoConfig.from_pretrained(directory)
        if hasattr(config, STRUCTURE_KEY):  # factorized layers (edgekd.prune): rebuilt before the weights load
            loader = pruned_class(AutoModelForCausalLM._model_mapping[type(config)])
        return frozen_as_built(loader.from_pretrained(directory, use_safetensors=True, attn_implementation="eager",
                                                      dtype=LOAD_DTYPE))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"pretrained '{directory}': {str(exc).splitlines()[0]}") from None


def context_length(model: nn.Module) -> int:
    """How many positions the model takes (its ``max_position_embeddings``)."""
    return int(model.config.max_position_embeddings)


def check_tokenizer_fits(model: nn.Module, tokenizer: Any, key: str) -> None:
    """Refuse a tokenizer with more tokens than the model has embedding rows, naming the recipe ``key``.

    More rows than tokens is fine: checkpoints pad their vocabulary (Qwen2: 151,936 rows for about
    151,650 tokens); :func:`fit_vocabulary` cuts the rows no token id reaches.
    """
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise ConfigError(f"{key}: the tokenizer has {len(tokenizer)} tokens but the model's vocabulary has only "
                          f"{rows}; use the tokenizer saved with the model or set vocab_size to {len(tokenizer)}")


def fit_vocabulary(model: nn.Module, tokenizer: Any, where: str) -> None:
    """Cut a checkpoint's vocabulary rows beyond the tokenizer's largest id (said in one log line).

    Checkpoints pad their vocabulary (Qwen2: 151,936 rows for about 151,650 tokens), and a checkpoint fine-tuned on
    a smaller tokenizer keeps rows no token id reaches. Losses compare logits over the tokenizer's ids only, so
    nothing trains those rows' logits down: sampling from the exported graph drew ids the tokenizer cannot decode
    (a third of the tokens of a student with 80 rows on a 56-token tokenizer), and a draft and target over one
    tokenizer looked like different vocabularies. Cut, the graph's logits are exactly the tokenizer's ids.
    """
    rows = model.get_input_embeddings().num_embeddings
    needed = max(tokenizer.get_vocab().values()) + 1
    if rows > needed:
        model.resize_token_embeddings(needed)
        log.info("%s: the model's %d vocabulary rows cut to the tokenizer's %d token ids (the rest are never fed "
                 "and would only be sampled)", where, rows, needed)


def check_prompt_fits(model: nn.Module, prompt_tokens: int, new_tokens: int, key: str) -> None:
    """Refuse a prompt (plus tokens to generate) longer than the model's context, naming the recipe ``key``."""
    limit = context_length(model)
    if prompt_tokens + new_tokens > limit:
        raise ConfigError(f"{key}: a {prompt_tokens}-token prompt plus {new_tokens} new tokens exceeds the model's "
                          f"context of {limit} tokens; shorten the prompt or generate fewer tokens")


def windows(ids: Tensor, context: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """A batch of random ``context``-long windows of ``ids`` and their next-token targets (nanoGPT's sampling)."""
    if ids.numel() <= context:
        raise ConfigError(f"context {context} is not shorter than the {ids.numel()}-token text")
    starts = torch.randint(ids.numel() - context, (batch,), generator=generator)
    inputs = torch.stack([ids[s:s + context] for s in starts.tolist()])
    targets = torch.stack([ids[s + 1:s + 1 + context] for s in starts.tolist()])
    return inputs, targets


@torch.no_grad()
def validation_loss(model: nn.Module, ids: Tensor, context: int, batch: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over consecutive ``context``-long windows covering ``ids``."""
    model.eval()
    ids = ids.to(next(model.parameters()).device)
    pieces = [ids[s:s + context + 1] for s in range(0, ids.numel() - 1, context)]
    groups = [pieces[i:i + batch] for i in range(0, len(pieces), batch)]
    total, count = 0.0, 0
    for group in groups:
        full = [piece for piece in group if piece.numel() == context + 1]
        tail = [piece.unsqueeze(0) for piece in group if piece.numel() != context + 1]
        for rows in ([torch.stack(full)] if full else []) + tail:
            logits = model(input_ids=rows[:, :-1]).logits
            total += nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten(), reduction="sum").item()
            count += rows[:, 1:].numel()
    return total / count
