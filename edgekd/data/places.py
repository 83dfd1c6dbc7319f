"""Where a recipe's data key points: the one-line refusal of a missing path, or of a file where a directory is
expected (or the reverse), saying what the path is and what was expected."""

from __future__ import annotations

from pathlib import Path

from edgekd.errors import DataError


def check_place(path: Path, key: str, kind: str, expected: str = "") -> None:
    """Refuse ``path`` (named by recipe key ``key``) unless it is a ``kind``: ``"directory"``, or a kind of file
    (``"CSV file"``). A missing path is ``<kind's last word> not found``; a directory where a file is expected is
    ``a directory, not a CSV file``, and the reverse ``a file, not a directory``; ``expected`` is added to say
    what should be there."""
    wanted_dir = kind == "directory"
    if path.is_dir() if wanted_dir else path.is_file():
        return
    if path.exists():
        what = f"a {'directory' if path.is_dir() else 'file'}, not a {kind}"
    else:
        what = f"{kind.split()[-1]} not found"
    raise DataError(f"{path}: {what} ({key}){f'; expected {expected}' if expected else ''}")
