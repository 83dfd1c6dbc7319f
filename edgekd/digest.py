"""Content digests of files, for fingerprints and records."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digest(path: Path) -> str | None:
    """The SHA-256 of the file at ``path`` in hex; None when there is no such file."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
