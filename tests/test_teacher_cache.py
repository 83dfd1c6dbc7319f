"""The teacher-output cache: batches rebuilt from disk equal a live teacher pass on the real tokens."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.data.examples import TextExamples
from edgekd.distill.outputs import forward_outputs
from edgekd.distill.teacher_cache import TeacherOutputCache
from edgekd.distill.trainer import predict_logits
from edgekd.errors import StorageError
from edgekd.models.hf import build_bert
from edgekd.models.specs import BertSpec

VOCAB, PAD = 40, 0
LAYERS = {"hidden_states": {0, 2}, "attentions": {1}, "qkv": {0, 1, 2}}


def _bert(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    spec = BertSpec(arch="bert", layers=2, hidden=16, heads=2, ffn=32, dropout=0.0)
    return build_bert(spec, vocab_size=VOCAB, num_classes=3, pad_id=PAD, max_positions=64).eval()


def _examples(count: int = 37) -> TextExamples:
    rng = np.random.default_rng(0)
    encoded = tuple(np.array([2, *rng.integers(5, VOCAB, size=int(rng.integers(1, 14))), 3]) for _ in range(count))
    return TextExamples(encoded=encoded, labels=torch.from_numpy(rng.integers(0, 3, count)), pad_id=PAD)


def _assert_real_tokens_match(cached: torch.Tensor, live: torch.Tensor, mask: torch.Tensor, kind: str) -> None:
    real = mask.bool()
    for row in range(mask.shape[0]):
        keep = real[row]
        want = live[row][keep] if kind != "attentions" else live[row][:, keep][:, :, keep]
        got = cached[row][keep] if kind != "attentions" else cached[row][:, keep][:, :, keep]
        torch.testing.assert_close(got, want, atol=2e-3, rtol=2e-3)  # stored as float16


def test_cached_outputs_equal_a_live_pass_under_any_padding(tmp_path: Path) -> None:
    teacher, examples = _bert(0), _examples()
    cache = TeacherOutputCache.open_or_build([teacher], [1.0], examples, LAYERS, tmp_path)
    generator = torch.Generator().manual_seed(3)
    for idx, inputs, _labels in examples.batches(8, shuffle=True, generator=generator):  # new batch mixes
        mask = inputs["attention_mask"]
        cached = cache.lookup(idx, mask)
        with torch.no_grad():
            live = forward_outputs(teacher, inputs, frozenset(LAYERS))
        torch.testing.assert_close(cached.logits, live.logits)
        for kind, indices in LAYERS.items():
            stored = getattr(cached, kind)
            assert len(stored) == len(getattr(live, kind))
            for i, value in enumerate(stored):
                if i not in indices:
                    assert value is None  # only the layers the losses read are stored
                    continue
                assert value.shape == getattr(live, kind)[i].shape
                _assert_real_tokens_match(value, getattr(live, kind)[i], mask, kind)


def test_cache_is_reused_only_when_teacher_and_data_match(tmp_path: Path) -> None:
    examples = _examples()
    first = TeacherOutputCache.open_or_build([_bert(0)], [1.0], examples, {"hidden_states": {2}}, tmp_path)
    (first.directory / "marker").write_text("reused")
    again = TeacherOutputCache.open_or_build([_bert(0)], [1.0], examples, {"hidden_states": {2}}, tmp_path)
    assert again.directory == first.directory and (again.directory / "marker").is_file()
    other_teacher = TeacherOutputCache.open_or_build([_bert(1)], [1.0], examples, {"hidden_states": {2}}, tmp_path)
    other_data = TeacherOutputCache.open_or_build([_bert(0)], [1.0], _examples(20), {"hidden_states": {2}}, tmp_path)
    other_layers = TeacherOutputCache.open_or_build([_bert(0)], [1.0], examples, {"hidden_states": {1}}, tmp_path)
    assert len({c.directory for c in (first, other_teacher, other_data, other_layers)}) == 4


@pytest.mark.parametrize("damage", ["truncated", "zeroed", "missing", "meta"])
def test_a_damaged_or_changed_cache_is_built_again(damage: str, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A cache shared by runs (``teacher_cache_dir``) or left in a killed stage's directory was read as it was: a
    truncated array failed every later run with 'internal error: ValueError: EOF: reading array header', and an
    array overwritten with other values of its shape was trained on silently."""
    teacher, examples, layers = _bert(0), _examples(), {"hidden_states": {1}}
    cache = TeacherOutputCache.open_or_build([teacher], [1.0], examples, layers, tmp_path)
    want = np.array(cache.logits)
    logits, stored = cache.directory / "logits.npy", cache.directory / "hidden_states-1.npy"
    if damage == "truncated":
        logits.write_bytes(logits.read_bytes()[:50])
    elif damage == "zeroed":
        np.save(logits, np.zeros_like(np.load(logits)))
    elif damage == "missing":
        stored.unlink()
    else:
        (cache.directory / "cache.json").write_text('{"counts": {')
    del cache
    again = TeacherOutputCache.open_or_build([teacher], [1.0], examples, layers, tmp_path)
    np.testing.assert_array_equal(np.asarray(again.logits), want)
    assert stored.is_file()
    assert "not reused" in caplog.text and "running the teacher over the transfer set again" in caplog.text


def test_ensemble_cache_holds_weighted_average_probabilities(tmp_path: Path) -> None:
    members, weights, examples = [_bert(0), _bert(1)], [0.25, 0.75], _examples()
    cache = TeacherOutputCache.open_or_build(members, weights, examples, {}, tmp_path)
    idx = np.arange(len(examples))
    probs = sum(w * predict_logits(m, examples).softmax(-1) for m, w in zip(members, weights, strict=True))
    torch.testing.assert_close(cache.lookup(idx, None).logits.exp(), probs, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="averaged logits only"):
        TeacherOutputCache.open_or_build(members, weights, examples, {"hidden_states": {1}}, tmp_path)


def test_a_full_disk_while_reserving_the_cache_is_one_storage_error_and_leaves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reserved: list[int] = []

    def full_after(allowed: int):
        def fallocate(fd: int, offset: int, length: int) -> None:
            if len(reserved) >= allowed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            reserved.append(length)
        return fallocate

    for allowed in range(4):  # the disk fills up at the first, second, ... array
        reserved.clear()
        monkeypatch.setattr(os, "posix_fallocate", full_after(allowed))
        with pytest.raises(StorageError, match="cannot write it: no space left on device; free some space"):
            TeacherOutputCache.open_or_build([_bert(0)], [1.0], _examples(), LAYERS, tmp_path)
        assert len(reserved) == allowed and list(tmp_path.iterdir()) == []


_BUILD_CACHES = """
import shutil, sys
from pathlib import Path
from edgekd.errors import StorageError
from tests.test_teacher_cache import LAYERS, _bert, _examples
from edgekd.distill.teacher_cache import TeacherOutputCache
root = Path(sys.argv[1])
for count in map(int, sys.argv[2:]):
    try:
        TeacherOutputCache.open_or_build([_bert(0)], [1.0], _examples(count), LAYERS, root)
        print(count, "built", flush=True)
    except StorageError as exc:
        print(count, "error", exc, flush=True)
    for leftover in root.iterdir():
        print(count, "left", leftover.name, flush=True)
        shutil.rmtree(leftover)
"""


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 256 KB tmpfs (mounting needs root; skipped otherwise)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_cache_larger_than_the_filesystem_is_an_error_not_sigbus(small_filesystem: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    counts = {20: "built", 600: "error", 2000: "error", 30: "built"}  # fits; a little too large; far too large
    result = subprocess.run([sys.executable, "-c", _BUILD_CACHES, str(small_filesystem), *map(str, counts)],
                            capture_output=True, text=True, cwd=root,
                            env={**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr[-2000:])  # SIGBUS: -7
    lines = result.stdout.splitlines()
    words = [line.split() for line in lines]
    outcomes = {int(w[0]): w[1] for w in words if w[1] != "left"}
    assert outcomes == counts, result.stdout
    assert all("no space left on device" in line for line in lines if line.split()[1] == "error"), result.stdout
    left_by_failures = [w for w in words if w[1] == "left" and counts[int(w[0])] == "error"]
    assert not left_by_failures, result.stdout  # a failed build leaves no directory behind
