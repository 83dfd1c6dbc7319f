"""Sequence-level KD (Kim & Rush 2016): prompts from the training ids, the teacher's own greedy or beam
continuations generated once and cached on disk, and training windows whose mask covers only what the
teacher generated — and training on them teaches the student the teacher's outputs."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import pytest
import torch

from edgekd.distill.sequence_kd import (
    ContinuationWindows,
    cache_file,
    cached_continuations,
    choose_prompts,
    continuation_cache_key,
    continuation_loss,
    generated_tokens,
    masked_cross_entropy,
    stop_ids,
    teacher_continuations,
    whole_sequences,
)
from edgekd.errors import ConfigError
from edgekd.models.causal_lm import build_causal_lm
from tests.char_lm import IDS, VOCAB, char_lm, stepwise_greedy, trained_char_lm

FAMILIES = ["gpt2", "llama"]


@pytest.fixture(scope="module", params=FAMILIES)
def teacher(request):
    return trained_char_lm(request.param, steps=40, seed=1)


def _rows_are_slices(prompts, ids):
    """The start of each prompt row in ``ids`` (every row must be a contiguous slice)."""
    slices = ids.unfold(0, prompts.shape[1], 1)
    starts = []
    for row in prompts:
        hits = (slices == row).all(1).nonzero().flatten()
        assert hits.numel() > 0, "a prompt is not a slice of the training ids"
        starts.append(hits)
    return starts


@pytest.mark.parametrize("count, length", [(1, 5), (7, 3), (20, 12), (3, IDS.numel())])
def test_prompts_are_seeded_slices_of_the_training_ids(count, length):
    prompts = choose_prompts(IDS, count, length, seed=4)
    assert prompts.shape == (count, length) and prompts.dtype == torch.long
    _rows_are_slices(prompts, IDS)
    assert torch.equal(prompts, choose_prompts(IDS, count, length, seed=4))
    if count > 1 and length < IDS.numel() // 2:
        assert not torch.equal(prompts, choose_prompts(IDS, count, length, seed=5))


def test_greedy_continuations_equal_the_teachers_stepwise_argmax(teacher):
    prompts = choose_prompts(IDS, 7, 6, seed=2)
    greedy = teacher_continuations(teacher, prompts, 20, batch=3)
    assert greedy.shape == (7, 26) and greedy.dtype == torch.long
    assert torch.equal(greedy[:, :6], prompts)
    assert torch.equal(greedy, stepwise_greedy(teacher, prompts, 20, stop_ids(teacher), 0))
    assert torch.equal(greedy, teacher_continuations(teacher, prompts, 20, num_beams=1, batch=7))


def test_generation_leaves_the_teacher_in_its_mode_without_gradients(teacher):
    prompts = choose_prompts(IDS, 2, 4)
    teacher.train()
    try:
        out = teacher_continuations(teacher, prompts, 5)
        assert teacher.training and not out.requires_grad
    finally:
        teacher.eval()


def test_a_teacher_that_stops_is_padded_after_its_end_of_text_token(teacher):
    prompts = choose_prompts(IDS, 8, 6, seed=3)
    free = teacher_continuations(teacher, prompts, 16)
    # make a token the teacher emits mid-continuation in some rows (not all) its end-of-text token
    token = next(int(t) for t in free[:, 7:].flatten().unique()
                 if 0 < (free[:, 7:] == t).any(1).sum() < len(free))
    stopping = copy.deepcopy(teacher)
    stopping.generation_config.eos_token_id = token
    stopped = teacher_continuations(stopping, prompts, 16, batch=3)
    assert torch.equal(stopped, stepwise_greedy(stopping, prompts, 16, (token,), 0))
    keep = generated_tokens(stopped, 6, (token,))
    for row, free_row, kept in zip(stopped, free, keep, strict=True):
        hits = (free_row[6:] == token).nonzero().flatten()
        end = 6 + (int(hits[0]) + 1 if hits.numel() else 16)
        assert torch.equal(row[:end], free_row[:end]) and (row[end:] == 0).all()
        assert kept.tolist() == [6 <= i < end for i in range(22)]


@pytest.mark.parametrize("family", FAMILIES)
def test_beam_search_over_every_token_finds_the_most_likely_two_token_continuation(family):
    """With as many beams as tokens, beam search over 2 new tokens is exhaustive: it must return the pair with
    the highest summed log-probability, which greedy decoding need not."""
    model = char_lm(family, seed=5)
    model.generation_config.eos_token_id = None
    prompts = choose_prompts(IDS, 4, 5, seed=6)
    beam = teacher_continuations(model, prompts, 2, num_beams=VOCAB)
    with torch.no_grad():
        first = model(input_ids=prompts).logits[:, -1].log_softmax(-1)  # [N, V]
        extended = torch.cat([prompts.repeat_interleave(VOCAB, 0), torch.arange(VOCAB).repeat(len(prompts))[:, None]],
                             1)
        second = model(input_ids=extended).logits[:, -1].log_softmax(-1).view(len(prompts), VOCAB, VOCAB)
    best = (first.unsqueeze(2) + second).flatten(1).argmax(1)
    assert torch.equal(beam[:, 5:], torch.stack([best // VOCAB, best % VOCAB], 1))


@pytest.mark.parametrize("kwargs, expected", [
    ({"count": 0}, r"^sequence_kd.prompts: need at least 1 prompt, got 0$"),
    ({"count": -2}, r"^sequence_kd.prompts: need at least 1 prompt"),
    ({"length": 0}, r"^sequence_kd.prompt_tokens: a prompt needs at least 1 token"),
    ({"length": IDS.numel() + 1}, rf"^sequence_kd.prompt_tokens: a {IDS.numel() + 1}-token prompt is longer"),
])
def test_bad_prompt_choices_are_one_line_config_errors(kwargs, expected):
    args = {"count": 3, "length": 4} | kwargs
    with pytest.raises(ConfigError, match=expected) as info:
        choose_prompts(IDS, args.pop("count"), args.pop("length"), **args)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prompt, new, beams, expected", [
    (40, 9, 1, r"^distill.seq.prompt_tokens: a 40-token prompt plus 9 new tokens exceeds .* context of 48 tokens"),
    (49, 1, 2, r"^distill.seq.prompt_tokens: a 49-token prompt"),
    (4, 0, 1, r"^distill.seq.new_tokens: must be at least 1, got 0$"),
    (4, 3, 0, r"^distill.seq.num_beams: must be at least 1, got 0$"),
    (0, 3, 1, r"^distill.seq.prompts: expected a \[prompts >= 1, tokens >= 1\] tensor"),
])
def test_prompts_beyond_the_teachers_context_are_refused(teacher, tmp_path, prompt, new, beams, expected):
    prompts = torch.zeros(2, prompt, dtype=torch.long)
    for call in (lambda: teacher_continuations(teacher, prompts, new, num_beams=beams, where="distill.seq"),
                 lambda: cached_continuations(tmp_path, "k", teacher, prompts, new, num_beams=beams,
                                              where="distill.seq")):
        with pytest.raises(ConfigError, match=expected) as info:
            call()
        assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())


def test_zero_prompts_are_refused_before_generating(teacher):
    with pytest.raises(ConfigError, match=r"^sequence_kd.prompts: expected .* got shape \[0, 5\]"):
        teacher_continuations(teacher, torch.zeros(0, 5, dtype=torch.long), 3)


class CountingGenerate:
    """Wraps a model's ``generate`` to count the calls."""

    def __init__(self, model):
        self.calls, self.inner = 0, model.generate
        model.generate = self

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_continuations_are_generated_once_then_reloaded(teacher, tmp_path):
    model = copy.deepcopy(teacher)
    counter = CountingGenerate(model)
    prompts = choose_prompts(IDS, 5, 6, seed=7)
    settings = {"prompts": 5, "prompt_tokens": 6, "new_tokens": 12, "num_beams": 1, "seed": 7}
    key = continuation_cache_key(teacher.state_dict(), settings)
    first = cached_continuations(tmp_path, key, model, prompts, 12, batch=2)
    assert counter.calls == 3  # 5 prompts in batches of 2
    path = cache_file(tmp_path, key)
    stamp = path.stat().st_mtime_ns
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    again = cached_continuations(tmp_path, key, model, prompts, 12, batch=2)
    assert counter.calls == 3 and path.stat().st_mtime_ns == stamp
    assert torch.equal(first, again) and torch.equal(first, teacher_continuations(teacher, prompts, 12))


@pytest.mark.parametrize("change", ["new_tokens", "prompts", "num_beams", "stop_ids", "corrupt", "truncated"])
def test_a_cache_file_that_does_not_match_is_regenerated(teacher, tmp_path, change):
    model = copy.deepcopy(teacher)
    prompts, new, beams = choose_prompts(IDS, 4, 6, seed=8), 10, 1
    cached_continuations(tmp_path, "same-key", model, prompts, new)
    path = cache_file(tmp_path, "same-key")
    if change == "new_tokens":
        new = 7
    elif change == "prompts":
        prompts = choose_prompts(IDS, 4, 6, seed=9)
    elif change == "num_beams":
        beams = 3
    elif change == "stop_ids":
        model.generation_config.eos_token_id = 5
    elif change == "corrupt":
        path.write_bytes(b"not a safetensors file")
    else:
        path.write_bytes(path.read_bytes()[:-8])
    counter = CountingGenerate(model)
    out = cached_continuations(tmp_path, "same-key", model, prompts, new, num_beams=beams)
    assert counter.calls == 1
    assert torch.equal(out, teacher_continuations(model, prompts, new, num_beams=beams))
    assert torch.equal(cached_continuations(tmp_path, "same-key", model, prompts, new, num_beams=beams), out)
    assert counter.calls == 2  # the line above generated once more (teacher_continuations), the reload did not


def test_cache_key_follows_weights_and_settings():
    model = char_lm("gpt2", seed=1)
    settings = {"prompts": 4, "new_tokens": 8, "num_beams": 1}
    key = continuation_cache_key(model.state_dict(), settings)
    assert key == continuation_cache_key(char_lm("gpt2", seed=1).state_dict(), dict(reversed(settings.items())))
    assert key != continuation_cache_key(model.state_dict(), settings | {"num_beams": 2})
    assert key != continuation_cache_key(char_lm("gpt2", seed=2).state_dict(), settings)
    with torch.no_grad():
        next(model.parameters()).view(-1)[3] += 1e-3
    assert key != continuation_cache_key(model.state_dict(), settings)
    with pytest.raises(ConfigError, match="cache key '../x'"):
        cache_file(Path("cache"), "../x")


def _reference_keep(row, prompt, stops):
    keep, stopped = [], False
    for i, token in enumerate(row.tolist()):
        keep.append(i >= prompt and not stopped)
        stopped = stopped or (i >= prompt and token in stops)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_generated_token_mask_stops_after_the_first_end_of_text(seed):
    generator = torch.Generator().manual_seed(seed)
    sequences = torch.randint(6, (12, 15), generator=generator)  # ids 0..5: stop tokens common, also in prompts
    prompt = 1 + seed
    for stops in [(), (0,), (0, 3)]:
        keep = generated_tokens(sequences, prompt, stops)
        assert keep.tolist() == [_reference_keep(row, prompt, stops) for row in sequences]


@pytest.mark.parametrize("prompt, new, context", [(6, 10, 8), (6, 10, 15), (6, 10, 40), (3, 20, 5), (10, 4, 2)])
def test_windows_are_slices_whose_mask_is_exactly_the_generated_targets(prompt, new, context):
    generator = torch.Generator().manual_seed(prompt * new + context)
    sequences = torch.randint(1, 9, (6, prompt + new), generator=generator)
    sequences[1, prompt + 2:] = 0  # row 1 stops after 3 generated tokens (its end-of-text at prompt + 2)
    windows = ContinuationWindows(sequences, prompt, context, stops=(0,))
    keep = generated_tokens(sequences, prompt, (0,))
    seen = set()
    for _ in range(30):
        batch = windows.sample(8, generator)
        width = min(context, prompt + new - 1)
        assert batch.inputs.shape == batch.targets.shape == batch.mask.shape == (8, width)
        for inputs, targets, mask in zip(batch.inputs, batch.targets, batch.mask, strict=True):
            matches = [(r, s) for r, s in itertools.product(range(6), range(prompt + new - width))
                       if torch.equal(sequences[r, s:s + width], inputs)
                       and torch.equal(sequences[r, s + 1:s + 1 + width], targets)]
            assert matches, "a window is not a next-token-shifted slice of one sequence"
            assert any(torch.equal(mask, keep[r, s + 1:s + 1 + width]) for r, s in matches)
            assert mask.any(), "a window without a single generated target"
            seen.update(matches)
    assert len({r for r, _ in seen}) == 6  # every sequence is drawn


def test_whole_sequences_mask_targets_after_the_prompt():
    sequences = torch.arange(1, 21).view(2, 10)
    batch = whole_sequences(sequences, 4)
    assert torch.equal(batch.targets, sequences[:, 1:])
    assert batch.mask.tolist() == [[False] * 3 + [True] * 6] * 2


def test_padding_and_prompt_do_not_count_in_the_loss():
    generator = torch.Generator().manual_seed(0)
    sequences = torch.randint(1, VOCAB, (3, 12), generator=generator)
    batch = whole_sequences(sequences, 5)
    logits = torch.randn(3, 11, VOCAB, generator=generator)
    garbage = logits.clone()
    garbage[~batch.mask] = 1e3 * torch.randn_like(garbage[~batch.mask])
    torch.testing.assert_close(masked_cross_entropy(garbage, batch.targets, batch.mask),
                               masked_cross_entropy(logits, batch.targets, batch.mask))
    direct = torch.nn.functional.cross_entropy(logits[:, 4:].flatten(0, 1), sequences[:, 5:].flatten())
    torch.testing.assert_close(masked_cross_entropy(logits, batch.targets, batch.mask), direct)


@pytest.mark.parametrize("student_family", ["llama", pytest.param("gpt2", marks=pytest.mark.slow)])
def test_training_on_the_teachers_greedy_outputs_teaches_the_student_those_outputs(teacher, tmp_path,
                                                                                   student_family):
    prompts = choose_prompts(IDS, 24, 8, seed=4)
    key = continuation_cache_key(teacher.state_dict(), {"prompts": 24, "prompt_tokens": 8, "new_tokens": 24})
    sequences = cached_continuations(tmp_path, key, teacher, prompts, 24)
    stops = stop_ids(teacher)
    student = char_lm(student_family, width=32, seed=3)
    before = continuation_loss(student, sequences, 8, stops)
    windows = ContinuationWindows(sequences, 8, context=20, stops=stops)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    student.train()
    for _ in range(80):
        batch = windows.sample(16, generator)
        loss = masked_cross_entropy(student(input_ids=batch.inputs).logits, batch.targets, batch.mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = continuation_loss(student, sequences, 8, stops)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_checkpoint_with_more_rows_than_the_tokenizer_generates_only_the_tokenizers_ids(family):
    """Checkpoints pad their embedding tables (Qwen2: 151,936 rows for about 151,650 tokens), and a config may name an
    end-of-text id of another tokenizer; rows no tokenizer id stands for must never be generated or padded with
    (the student's embeddings have no such rows: an IndexError in the distill stage)."""
    from edgekd.distill.on_policy import sample_continuations

    model = build_causal_lm(family, vocab_size=VOCAB + 16, context=48, layers=1, width=32, heads=2).eval()
    model.generation_config.eos_token_id, model.generation_config.pad_token_id = VOCAB + 3, None
    model.get_output_embeddings().register_forward_hook(  # the padded rows win every arg-max and most samples
        lambda _module, _inputs, logits: logits + 50.0 * (torch.arange(logits.shape[-1]) >= VOCAB))
    prompts = choose_prompts(IDS, 4, 6, seed=1)
    assert (teacher_continuations(model, prompts, 8) >= VOCAB).any()  # what the distill stage used to get
    greedy = teacher_continuations(model, prompts, 8, vocab=VOCAB)
    sampled = sample_continuations(model, prompts, 8, generator=torch.Generator().manual_seed(0), vocab=VOCAB)
    for sequences in (greedy, sampled):
        assert sequences.shape == (4, 14) and torch.equal(sequences[:, :6], prompts)
        assert int(sequences.max()) < VOCAB
