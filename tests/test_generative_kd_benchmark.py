"""The generative KD benchmark runs end to end in --quick mode through edgekd's pipeline and writes its JSON."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from tests.test_kd_benchmark import load_benchmark


def _corpus(path: Path) -> Path:
    """Play-like text (speakers, lines) of about 30,000 characters."""
    rng = random.Random(0)
    words = ["thou", "art", "more", "lovely", "and", "temperate", "rough", "winds", "do", "shake", "the",
             "darling", "buds", "of", "may"]
    lines = [f"{rng.choice(['KING', 'QUEEN', 'FOOL'])}:\n{' '.join(rng.choices(words, k=8))}.\n\n"
             for _ in range(600)]
    path.write_text("".join(lines), encoding="utf-8")
    return path


@pytest.mark.slow  # ~60 s: a teacher, four students and four smaller drafts, exported, profiled and used as drafts
def test_quick_benchmark_trains_every_variant_and_measures_the_drafts(tmp_path: Path) -> None:
    out = tmp_path / "generative_kd.json"
    corpus = _corpus(tmp_path / "play.txt")
    benchmark = load_benchmark("generative_kd")
    command = ["--quick", "--out", str(out), "--work", str(tmp_path / "work"), "--corpus", str(corpus),
               "--threads", "1", "--jobs", "2"]
    assert benchmark.main(command) == 0
    result = json.loads(out.read_text())
    assert result["quick"] is True and result["cpu"]["brand"] and result["seeds"] == [0] and result["jobs"] == 2
    vocabulary = result["teacher"]["vocab_size"]
    assert result["teacher"]["val_loss"] < math.log(vocabulary) and result["teacher"]["train_seconds"] > 0
    assert set(result["students"]) == {"corpus", "token", "sequence", "combined"}
    assert result["losses"]["corpus"] == [{"kind": "token_kl", "alpha": 0.0}]
    for variant, seeds in result["students"].items():
        row = seeds["0"]
        assert row["val_loss"] < math.log(vocabulary) and row["params"] < result["teacher"]["params"]
        assert ("teacher_continuation_loss" in row) == (variant in ("sequence", "combined"))
        record = result["speculative"][variant]["0"]
        assert [entry["gamma"] for entry in record["gammas"]] == [1, 2, 4] and record["lossless"] is True
        assert all(0 <= entry["acceptance_rate"] <= 1 and entry["speedup"] > 0 for entry in record["gammas"])
    speedup = result["timing"]["per_token_speedup"]
    assert speedup["low"] <= speedup["ratio"] <= speedup["high"]
    # the draft size: the student's config with --draft-config's fields (quick: 8 wide), the same four variants
    draft = result["draft"]
    assert draft["config"] == {"n_embd": 8} and set(draft["students"]) == set(result["students"])
    assert draft["students"]["combined"]["0"]["params"] < result["students"]["combined"]["0"]["params"]
    assert draft["speculative"]["combined"]["0"]["lossless"] is True
    assert draft["timing"]["student"]["per_token_p50_ms"] > 0
    summary = result["summary"]
    assert set(summary) == {"student", "draft", "targets"}
    for size, timing in {"student": result["timing"], "draft": draft["timing"]}.items():
        assert summary[size]["per_token_speedup"] == timing["per_token_speedup"]["ratio"]
    assert set(summary["targets"]) == {"teacher_val_loss", "student_per_token_speedup", "distillation_beats_corpus",
                                       "acceptance_gain_points_at_gamma_4", "speculative_speedup"}
    for name, target in summary["targets"].items():
        met = target["met"] if name == "teacher_val_loss" else bool(target["met_by"])
        assert isinstance(met, bool) and set(target.get("met_by", [])) <= {"student", "draft"}
    # a second run reuses every trained stage: nothing is retrained
    student = tmp_path / "work" / "runs" / "generative-kd-token-s0" / "02-distill" / "student" / "model.safetensors"
    stamp = student.stat().st_mtime_ns
    # ... and, with adaptive drafting asked for, measures it beside fixed gamma
    assert benchmark.main(command + ["--draft-stop", "0.5", "--adaptive"]) == 0
    again = json.loads(out.read_text())
    assert again["students"] == result["students"] and again["teacher"] == result["teacher"]
    assert student.stat().st_mtime_ns == stamp
    assert again["speculative_settings"]["draft_stops"] == [0.5] and again["speculative_settings"]["adaptive"]
    record = again["speculative"]["sequence"]["0"]
    assert [entry["policy"] for entry in record["gammas"]] == [
        "gamma 1", "gamma 2", "gamma 2, stop 0.5", "gamma 2, adaptive", "gamma 2, stop 0.5, adaptive",
        "gamma 4", "gamma 4, stop 0.5", "gamma 4, adaptive", "gamma 4, stop 0.5, adaptive"] and record["lossless"]
    for size in ("student", "draft"):
        best, fixed = again["summary"][size]["best_speculative"], again["summary"][size]["best_fixed_speculative"]
        for variant in best:
            assert best[variant]["mean_speedup"] >= fixed[variant]["mean_speedup"]
            assert fixed[variant]["policy"] == f"gamma {fixed[variant]['gamma']}"


def test_bad_draft_stop_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    benchmark = load_benchmark("generative_kd")
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--quick", "--out", str(tmp_path / "o.json"), "--corpus", str(_corpus(tmp_path / "p.txt")),
                        "--draft-stop", "-0.1"])
    assert stop.value.code == 2
    assert "--draft-stop -0.1: a threshold" in capsys.readouterr().err.strip().splitlines()[-1]


def test_variants_train_a_subset_beside_the_corpus_baseline_and_time_a_distilled_one(tmp_path: Path, capsys) -> None:
    benchmark = load_benchmark("generative_kd")
    corpus = _corpus(tmp_path / "p.txt")
    args = benchmark.parse(["--out", str(tmp_path / "o.json"), "--corpus", str(corpus), "--variants", "sequence"])
    assert args.variants == ["corpus", "sequence"]
    base = benchmark.base_recipe(corpus, False, tmp_path)
    size = benchmark.train_size(base, args, tmp_path / "teacher.safetensors", tmp_path / "cache")
    assert size["jobs"] == [("corpus", 0), ("sequence", 0), ("corpus", 1), ("sequence", 1), ("corpus", 2),
                            ("sequence", 2)]
    assert size["profile"]["name"] == "generative-kd-sequence-s0"
    assert [stage["stage"] for stage in size["profile"]["stages"]][-1] == "profile"
    with pytest.raises(SystemExit) as stop:
        benchmark.parse(["--out", str(tmp_path / "o.json"), "--corpus", str(corpus), "--variants", "corpus"])
    assert stop.value.code == 2
    assert "--variants: name at least one distilled variant" in capsys.readouterr().err.strip().splitlines()[-1]
