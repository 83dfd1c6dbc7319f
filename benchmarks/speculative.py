"""Speculative decoding on Tiny Shakespeare: a distilled and an undistilled draft for a character-level teacher.

A GPT-2-style character teacher is trained from scratch (AdamW, nanoGPT's random windows), then two drafts of
one smaller size for the same steps and seed: one on the corpus alone (next-token cross-entropy), one with
token-level KD from the teacher (edgekd's ``TokenKLLoss``; ``--alpha 1`` is pure forward KL, DistillSpec's
choice). All three are exported with a KV cache and each draft is measured against the teacher with
:func:`edgekd.profile.speculative_bench.measure_speculative` (γ = 1…8, greedy, interleaved with the teacher
alone, one thread) on prompts cut from the validation text. Validation losses are on the first
``--eval-chars`` characters of the validation split.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speculative.py --out benchmarks/results/speculative-<cpu>.json
    [--quick] [--work DIR] [--corpus FILE]

``--quick`` trains tiny models for a few steps (a smoke run for the test, under a minute); its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
FULL = {"teacher": (4, 256, 8), "draft": (1, 64, 4), "teacher_steps": 600, "draft_steps": 600, "batch": 12,
        "context": 128, "prompts": 8, "prompt_chars": 32, "new_tokens": 64, "gammas": list(range(1, 9))}
QUICK = {"teacher": (2, 32, 2), "draft": (1, 16, 2), "teacher_steps": 20, "draft_steps": 20, "batch": 4,
         "context": 48, "prompts": 2, "prompt_chars": 8, "new_tokens": 12, "gammas": [1, 2, 4]}

log = logging.getLogger("speculative")

Loss = Callable[[nn.Module, Tensor, Tensor], Tensor]


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON result file")
    parser.add_argument("--corpus", type=Path, default=CORPUS, help="a text file (default: Tiny Shakespeare)")
    parser.add_argument("--work", type=Path, help="where the ONNX files go (default: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="tiny models, few steps: a smoke run")
    parser.add_argument("--alpha", type=float, default=1.0, help="TokenKL weight of the KL term (1: pure KD)")
    parser.add_argument("--temperature", type=float, default=1.0, help="TokenKL temperature")
    parser.add_argument("--eval-chars", type=int, default=20000, help="validation characters for the losses")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def train(model: nn.Module, ids: Tensor, loss: Loss, *, steps: int, batch: int, context: int, seed: int) -> float:
    """Train ``model`` for ``steps`` AdamW steps on random windows of ``ids``; the seconds it took."""
    from edgekd.models.causal_lm import windows

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        inputs, targets = windows(ids, context, batch, generator)
        value = loss(model, inputs, targets)
        optimizer.zero_grad()
        value.backward()
        optimizer.step()
        if (step + 1) % 100 == 0:
            log.info("step %d/%d: loss %.3f", step + 1, steps, value.item())
    model.eval()
    return time.perf_counter() - start


def corpus_loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
    """Next-token cross-entropy on the corpus."""
    return nn.functional.cross_entropy(model(input_ids=inputs).logits.flatten(0, 1), targets.flatten())


def distillation_loss(teacher: nn.Module, alpha: float, temperature: float) -> Loss:
    """Token-level KD from ``teacher`` (edgekd's TokenKLLoss) as a training loss."""
    from edgekd.distill.losses.token_kl import TokenKLLoss
    from edgekd.distill.outputs import ModelOutputs

    kd = TokenKLLoss(temperature, alpha)

    def loss(model: nn.Module, inputs: Tensor, targets: Tensor) -> Tensor:
        with torch.no_grad():
            teacher_logits = teacher(input_ids=inputs).logits
        return kd(ModelOutputs(model(input_ids=inputs).logits), ModelOutputs(teacher_logits), targets)

    return loss


def main(argv: list[str] | None = None) -> int:
    """Train, export, measure, write the JSON; 0 on success."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse(argv)
    torch.set_num_threads(1)
    from edgekd.atomic import write_json
    from edgekd.data.corpus import build_char_tokenizer, encode, read_corpus
    from edgekd.export.causal_lm_onnx import export_causal_lm
    from edgekd.models.causal_lm import build_causal_lm, validation_loss
    from edgekd.profile.cpu import detect_cpu
    from edgekd.profile.generate import CachedGenerator
    from edgekd.profile.speculative_bench import measure_speculative

    sizes = QUICK if args.quick else FULL
    split = read_corpus(args.corpus)
    tokenizer = build_char_tokenizer(split.train + split.validation)
    train_ids, valid_ids = encode(tokenizer, split.train, "train"), encode(tokenizer, split.validation, "validation")
    evaluation = valid_ids[:args.eval_chars]
    context, batch = sizes["context"], sizes["batch"]

    def build(role: str) -> nn.Module:
        layers, width, heads = sizes[role]
        return build_causal_lm("gpt2", vocab_size=len(tokenizer), context=context, layers=layers, width=width,
                               heads=heads, seed=args.seed)

    models, rows = {"teacher": build("teacher")}, {}
    seconds = train(models["teacher"], train_ids, corpus_loss, steps=sizes["teacher_steps"], batch=batch,
                    context=context, seed=args.seed)
    rows["teacher"] = {"train_seconds": seconds}
    losses = {"corpus": corpus_loss, "distilled": distillation_loss(models["teacher"], args.alpha, args.temperature)}
    for name, loss in losses.items():
        models[name] = build("draft")
        seconds = train(models[name], train_ids, loss, steps=sizes["draft_steps"], batch=batch, context=context,
                        seed=args.seed)
        rows[name] = {"train_seconds": seconds}
    for name, model in models.items():
        rows[name] |= {"params": sum(p.numel() for p in model.parameters()),
                       "validation_loss": validation_loss(model, evaluation, context)}
        log.info("%s: validation loss %.3f", name, rows[name]["validation_loss"])

    work = args.work or Path(tempfile.mkdtemp(prefix="speculative-"))
    generators = {name: CachedGenerator(export_causal_lm(model, work / f"{name}.onnx"), threads=1)
                  for name, model in models.items()}
    step = (valid_ids.numel() - sizes["prompt_chars"]) // sizes["prompts"]
    prompts = [valid_ids[k * step:k * step + sizes["prompt_chars"]].tolist() for k in range(sizes["prompts"])]
    for name in losses:
        log.info("measuring the %s draft", name)
        rows[name]["speculative"] = measure_speculative(
            generators[name], generators["teacher"], prompts, sizes["new_tokens"], context, gammas=sizes["gammas"])
    at4 = {name: next((g for g in rows[name]["speculative"]["gammas"] if g["gamma"] == 4), None) for name in losses}
    write_json(args.out, {
        "benchmark": "speculative", "quick": args.quick, "cpu": detect_cpu().to_json(), "corpus": str(args.corpus),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "sizes": {"teacher": sizes["teacher"], "draft": sizes["draft"], "context": context, "batch": batch,
                  "teacher_steps": sizes["teacher_steps"], "draft_steps": sizes["draft_steps"]},
        "distillation": {"loss": "token_kl", "alpha": args.alpha, "temperature": args.temperature},
        "models": rows,
        "at_gamma_4": {name: None if entry is None else
                       {key: entry[key] for key in ("acceptance_rate", "speedup", "lossless")}
                       for name, entry in at4.items()},
        "lossless": all(rows[name]["speculative"]["lossless"] for name in losses),
    })
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
