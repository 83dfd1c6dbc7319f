"""Finished stages shared between run directories, so an identical teacher is trained once per machine.

A stage kind marked ``shareable`` (the teacher) is copied, once finished, into
``<store>/<NN-stage>-<fingerprint>/``, where the store is ``$EDGEKD_STAGE_STORE`` if set (``off``
turns sharing off), else ``${EDGEKD_CACHE:-~/.cache/edgekd}/stages``. When a run directory does not
hold a finished stage with the same fingerprint — another ``--out``, or ``edgekd compress`` after
``edgekd run`` of the same recipe — the pipeline copies the stored one in instead of running it.

The key is the stage's directory name and fingerprint (its config, the recipe fields it reads, its
extra inputs such as given weight files, the previous stage's fingerprint and edgekd's version), so
a stored stage is reused exactly where the run directory's own cache would have been. A stored stage
is trusted only when its record and files verify as a run directory's do
(:func:`edgekd.rundir.cached_record`) and every file, weights included, still has the SHA-256 it was kept with
(``<NN-stage>-<fingerprint>.sha256.json`` beside it: a run directory checks large files by size only, but a
damaged stored teacher would be copied into every new run); ``--fresh`` neither reads nor trusts it. Copies, not
links: nothing a user does to a run directory can change the store.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.atomic import write_json
from edgekd.cache import cache_root, env_path
from edgekd.errors import ConfigError
from edgekd.rundir import cached_record, inventory

if TYPE_CHECKING:
    from edgekd.stage_kind import StageKind

log = logging.getLogger(__name__)


def store_dir() -> Path | None:
    """Where shared stages are kept; None when sharing is off (``EDGEKD_STAGE_STORE=off``)."""
    configured = os.environ.get("EDGEKD_STAGE_STORE")
    if configured == "off":
        return None
    try:
        return env_path("EDGEKD_STAGE_STORE", "") if configured else cache_root() / "stages"
    except ConfigError as exc:  # a store that cannot be used is no reason to stop a run
        log.warning("shared stage store off: %s", exc)
        return None


def stored_stage(name: str, fingerprint: str) -> Path | None:
    """The store's directory for stage directory ``name`` with ``fingerprint`` (None when sharing is off)."""
    store = store_dir()
    return None if store is None else store / f"{name}-{fingerprint[:32]}"


def fetch_stage(name: str, fingerprint: str, target: Path, kind: StageKind) -> dict[str, Any] | None:
    """Copy the stored stage (of ``kind``) into ``target`` (a fresh working directory) and return its record, if it
    verifies."""
    source = stored_stage(name, fingerprint)
    record = cached_record(source, fingerprint, kind) if source is not None and source.is_dir() else None
    if record is None or not _intact(source):
        return None
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    log.info("stage %s: reused from the shared stage store (%s), trained by an earlier run", name, source)
    return record


def keep_stage(stage_dir: Path, fingerprint: str) -> None:
    """Store a finished stage directory (best effort: a store that cannot be written only costs a re-run)."""
    target = stored_stage(stage_dir.name, fingerprint)
    if target is None or target.is_dir():
        return
    staging: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        shutil.copytree(stage_dir, staging, dirs_exist_ok=True)
        digests = inventory(staging, hash_below=math.inf)
        os.replace(staging, target)
        write_json(_digests_file(target), digests)
    except OSError as exc:
        log.warning("stage %s: not kept in the shared stage store (%s)", stage_dir.name, exc)
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _digests_file(stored: Path) -> Path:
    """Where the SHA-256 of every file of the ``stored`` stage is kept."""
    return stored.with_name(f"{stored.name}.sha256.json")


def _intact(stored: Path) -> bool:
    """Whether every file of the ``stored`` stage has the SHA-256 it was kept with (a store kept before digests
    were recorded is trusted as its record verifies). A damaged one is removed, with a warning, so the stage runs
    and is kept again."""
    try:
        kept = json.loads(_digests_file(stored).read_text())
    except FileNotFoundError:
        return True
    except (OSError, ValueError):
        kept = None
    if kept == inventory(stored, hash_below=math.inf):
        return True
    log.warning("%s: the shared stage store's copy changed since it was kept (damaged on disk?): not reused, removed",
                stored)
    shutil.rmtree(stored, ignore_errors=True)
    _digests_file(stored).unlink(missing_ok=True)
    return False
