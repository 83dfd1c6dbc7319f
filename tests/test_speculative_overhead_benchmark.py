"""The speculative-overhead benchmark trains its pair once, times every draft per gamma under a label, and
compares the ``before`` and ``after`` runs by their medians."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_generative_kd_benchmark import _corpus
from tests.test_kd_benchmark import load_benchmark


@pytest.mark.slow  # ~30 s: a 4 x 256 teacher and two drafts trained a few steps, then three timed runs
def test_runs_share_one_trained_pair_and_are_compared_by_label(tmp_path: Path) -> None:
    benchmark = load_benchmark("speculative_overhead")
    out, pair, corpus = tmp_path / "overhead.json", tmp_path / "pair", _corpus(tmp_path / "play.txt")
    common = ["--out", str(out), "--pair", str(pair), "--corpus", str(corpus), "--teacher-steps", "3",
              "--draft-steps", "3", "--gammas", "1", "3", "--prompts", "2", "--prompt-tokens", "8",
              "--new-tokens", "10", "--repeats", "1"]
    assert benchmark.main(common + ["--label", "before"]) == 0
    trained = (pair / "teacher.onnx").stat().st_mtime_ns
    assert "comparison" not in json.loads(out.read_text())
    assert benchmark.main(common + ["--label", "after-1"]) == 0
    # adaptive drafting beside fixed gamma in one run, timed in thread CPU: the comparison reads the fixed entries
    assert benchmark.main(common + ["--label", "after-2", "--draft-stop", "0.4", "0.8", "--adaptive",
                                    "--clock", "thread"]) == 0
    assert (pair / "teacher.onnx").stat().st_mtime_ns == trained  # the pair was reused, not retrained
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"before", "after-1", "after-2"}
    assert set(result["pair"]["drafts"]) == {"draft-sequence", "draft-corpus"}
    assert all(result["pair"]["teacher"][key] for key in ("val_loss", "steps", "seconds"))
    adaptive = result["runs"]["after-2"]["drafts"]
    for record in adaptive.values():
        assert record["clock"] == "thread" and record["lossless"]
        assert [e["policy"] for e in record["gammas"]] == [
            "gamma 1", "gamma 3", "gamma 3, stop 0.4", "gamma 3, stop 0.8", "gamma 3, adaptive",
            "gamma 3, stop 0.4, adaptive", "gamma 3, stop 0.8, adaptive"]
        best = record["best"]
        assert not best["fixed"]["draft_stop"] and not best["fixed"]["adaptive"]
        assert best["adaptive"]["draft_stop"] or best["adaptive"]["adaptive"]
        speedups = {e["policy"]: e["speedup"] for e in record["gammas"]}
        assert best["fixed"]["speedup"] == max(speedups["gamma 1"], speedups["gamma 3"])
        assert best["adaptive_over_fixed"] == pytest.approx(best["adaptive"]["speedup"] / best["fixed"]["speedup"])
    assert "best" in result["runs"]["after-1"]["drafts"]["draft-corpus"]
    assert result["runs"]["after-1"]["drafts"]["draft-corpus"]["best"]["adaptive"] is None
    for name, rows in result["comparison"].items():
        assert [row["gamma"] for row in rows] == [1, 3]
        for row in rows:
            runs = [result["runs"][label]["drafts"][name] for label in ("after-1", "after-2")]
            speedups = sorted(next(e for e in run["gammas"] if e["gamma"] == row["gamma"])["speedup"] for run in runs)
            assert row["speedups_after"] and sorted(row["speedups_after"]) == speedups
            assert row["median_speedup_after"] == pytest.approx(sum(speedups) / 2)
            assert len(row["speedups_before"]) == 1 and row["median_speedup_before"] == row["speedups_before"][0]
            assert row["lossless"] and 0 <= row["acceptance_rate"] <= 1


@pytest.mark.parametrize("extra, message", [
    (["--corpus", "none.txt"], "--corpus"),
    (["--draft-stop", "0.5", "1.2"], "--draft-stop 1.2: a threshold on the draft's top-token probability must be in"),
    (["--clock", "cpu"], "--clock: invalid choice: 'cpu'"),
])
def test_bad_arguments_are_one_line_exit_2(tmp_path: Path, capsys, extra, message) -> None:
    benchmark = load_benchmark("speculative_overhead")
    extra = [str(tmp_path / item) if item.endswith(".txt") else item for item in extra]
    corpus = tmp_path / "corpus.txt"  # the default corpus is shared data, absent from a fresh clone
    corpus.write_text("a few words of text\n")
    given = [] if "--corpus" in extra else ["--corpus", str(corpus)]
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--out", str(tmp_path / "o.json"), "--label", "x", *given, *extra])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
