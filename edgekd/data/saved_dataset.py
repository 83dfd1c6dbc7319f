"""Opening a ``datasets.save_to_disk`` directory, with every way it can fail as one line naming it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.errors import DataError, first_line


def load_saved_dataset(path: Path, expected: str = "a dataset saved with save_to_disk") -> Any:
    """The ``Dataset`` or ``DatasetDict`` saved at ``path``.

    ``datasets.load_from_disk`` fails in many ways: a folder that is no saved dataset (``FileNotFoundError``), a
    split saved with no rows (an ``IndexError`` deep in Arrow), a damaged ``dataset_info.json`` or Arrow file.
    Each is a :class:`DataError` naming ``path`` (``data.path``) and saying it is not ``expected``.
    """
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception as exc:  # noqa: BLE001 - datasets and pyarrow raise many types for a bad directory
        detail = first_line(exc) if not isinstance(exc, IndexError) else "a split with no rows cannot be read back"
        raise DataError(f"{path}: not {expected} (data.path): {detail}") from None
