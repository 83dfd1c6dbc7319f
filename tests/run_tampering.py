"""Seeded damage to run directories for the fuzz test: foreign ``--out`` directories and tampered runs.

A foreign directory is one a user could point ``--out`` at by mistake: their own files under names
edgekd also uses (``NN-<stage>/``, ``.NN-<stage>.partial/``, ``bundle/``, ``report.md``,
``run.json`` that edgekd did not write). A tampered run is a finished run with one thing broken: a
file a stage wrote deleted, truncated or edited, a ``stage.json`` of the wrong shape, a record
pointing outside the run directory, a model's figure of the wrong type, a ``run.json`` that is not a run
record. Each tamper knows which stage must run again (the damaged one; every stage after it follows).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Names a user's own directory may hold that edgekd writes too (files, or directories with a file in them).
FOREIGN_NAMES = ("01-intro/text.md", "02-chapter/text.md", "03-export/notes.txt", ".04-profile.partial/draft.txt",
                 "bundle/asset.bin", "bundle.zip", "report.md", "report.json", "notes.txt", "10-appendix/a/b.md")
#: ``run.json`` contents edgekd never writes.
BAD_RUN_RECORDS: tuple[Any, ...] = ([], {}, "run", None, 7, {"recipe": []}, {"edgekd_version": "0", "recipe": {}},
                                    {"recipe": {}, "device": {}})
#: ``stage.json`` contents of the wrong shape (the record's own fingerprint is kept where a dict is left).
BAD_SHAPES: tuple[Callable[[dict[str, Any]], Any], ...] = (
    lambda r: [], lambda r: {}, lambda r: "stage", lambda r: None, lambda r: [r],
    lambda r: {"fingerprint": r["fingerprint"]},
    lambda r: {**r, "index": str(r["index"])},
    lambda r: {**r, "artifact": []},
    lambda r: {**r, "artifact": {"student": "01-teacher"}},
    lambda r: {**r, "metrics": None},
    lambda r: {**r, "files": []},
    lambda r: {k: v for k, v in r.items() if k != "files"},
    lambda r: {**r, "files": {name: {"bytes": str(e["bytes"])} for name, e in r["files"].items()}},
)


@dataclass(frozen=True)
class Tamper:
    """One kind of damage to a finished run: ``apply(run_dir, rng)`` returns the stage index that must re-run."""

    name: str
    apply: Callable[[Path, random.Random], int]


def foreign_directory(root: Path, rng: random.Random) -> dict[Path, bytes]:
    """Fill the new directory ``root`` with a user's files under names edgekd uses; returns path → content."""
    names = rng.sample(FOREIGN_NAMES, rng.randint(1, 4))
    files = {root / name: rng.randbytes(rng.randint(0, 64)) for name in names}
    if rng.random() < 0.5:  # a run.json edgekd did not write
        files[root / "run.json"] = json.dumps(rng.choice(BAD_RUN_RECORDS)).encode()
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every entry below ``root``: files by content, directories as None."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def _records(run_dir: Path) -> list[tuple[int, Path, dict[str, Any]]]:
    """(stage index, record path, record) of every finished stage of ``run_dir``."""
    paths = sorted(run_dir.glob("[0-9][0-9]-*/stage.json"))
    return [(int(p.parent.name[:2]), p, json.loads(p.read_text())) for p in paths]


def _stage_file(run_dir: Path, rng: random.Random, hashed: bool = False) -> tuple[int, Path]:
    """A random file some stage wrote (``hashed``: one small enough to carry a sha256 in its record)."""
    files = [(index, path.parent / name) for index, path, record in _records(run_dir)
             for name, entry in record["files"].items() if not hashed or "sha256" in entry]
    return rng.choice(sorted(files))


def _deleted(run_dir: Path, rng: random.Random) -> int:
    index, path = _stage_file(run_dir, rng)
    path.unlink()
    return index


def _truncated(run_dir: Path, rng: random.Random) -> int:
    index, path = _stage_file(run_dir, rng)
    data = path.read_bytes()
    path.write_bytes(data[:rng.randrange(len(data))])
    return index


def _edited(run_dir: Path, rng: random.Random) -> int:
    """One byte of a small file changed, its size kept: only the hash tells."""
    index, path = _stage_file(run_dir, rng, hashed=True)
    data = bytearray(path.read_bytes())
    at = rng.randrange(len(data))
    data[at] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))
    return index


def _bad_shape(run_dir: Path, rng: random.Random) -> int:
    index, path, record = rng.choice(_records(run_dir))
    shapes = [shape(record) for shape in BAD_SHAPES]
    path.write_text(json.dumps(rng.choice([shape for shape in shapes if shape != record])))  # a no-op is no tamper
    return index


def _points_outside(run_dir: Path, rng: random.Random) -> int:
    """A model reference or a listed file that leaves the run directory (absolute, or through ``..``)."""
    outside = run_dir.parent / "secret.txt"
    outside.write_text("not for the bundle\n")
    escapes = [str(outside), f"../{outside.name}", f"01-teacher/../../{outside.name}"]
    candidates = [(i, p, r) for i, p, r in _records(run_dir) if r["files"] or any(
        m.get("onnx") or m.get("weights") for m in r["artifact"].values())]
    index, path, record = rng.choice(candidates)
    escape = rng.choice(escapes)
    role = rng.choice(sorted(record["artifact"]))
    model = record["artifact"][role]
    if record["files"] and rng.random() < 0.5:
        record["files"][escape] = {"bytes": outside.stat().st_size}
    elif model.get("onnx") and rng.random() < 0.5:
        model["onnx"] = escape
    else:
        model["weights"] = escape
    path.write_text(json.dumps(record))
    return index


def _damaged_figure(run_dir: Path, rng: random.Random) -> int:
    """A model's measured figure (accuracy, params, ...) in the ``stage.json`` of a stage that is reused when it
    finished (a bundle always runs again) replaced by a value of another type."""
    from edgekd.model_metrics import ModelMetrics
    from edgekd.stages import DEFAULT_REGISTRY as STAGES

    figures = [(index, path, record, role, key) for index, path, record in _records(run_dir)
               if STAGES[record["stage"]].cacheable
               for role, model in sorted(record["artifact"].items()) for key, value in sorted(model["metrics"].items())
               if key in ModelMetrics.model_fields and isinstance(value, int | float) and not isinstance(value, bool)]
    index, path, record, role, key = rng.choice(figures)
    record["artifact"][role]["metrics"][key] = rng.choice(["high", [1.0], {"value": 1}])
    path.write_text(json.dumps(record))
    return index


TAMPERS = (Tamper("deleted file", _deleted), Tamper("truncated file", _truncated), Tamper("edited file", _edited),
           Tamper("stage.json of the wrong shape", _bad_shape), Tamper("record pointing outside", _points_outside),
           Tamper("figure of the wrong type", _damaged_figure))


def bad_run_record(run_dir: Path, rng: random.Random) -> Any:
    """Replace ``run_dir``'s ``run.json`` by something edgekd never writes; returns it."""
    content = rng.choice(BAD_RUN_RECORDS)
    (run_dir / "run.json").write_text(json.dumps(content))
    return content
