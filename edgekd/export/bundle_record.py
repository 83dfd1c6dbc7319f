"""The typed record a bundle stage writes into its ``stage.json`` metrics, and ``report.json`` repeats as ``bundle``."""

from __future__ import annotations

from typing import Any, Literal

from edgekd.stage_record import FullRecord, read_stage_record


class BundleFile(FullRecord):
    """One file of the bundle directory, as its manifest lists it."""

    sha256: str
    bytes: int


class BundleRecord(FullRecord):
    """What a bundle stage packed: the model's role and format, where the directory and zip are, and every file."""

    role: str
    format: Literal["onnx", "ort"]
    directory: str
    zip: str
    zip_bytes: int
    files: dict[str, BundleFile]

    @property
    def model_file(self) -> str:
        """The bundle's model file name (``model.ort`` or ``model.onnx``)."""
        return f"model.{self.format}"


def read_bundle_record(record: dict[str, Any]) -> BundleRecord:
    """The bundle stage ``record``'s metrics as a :class:`BundleRecord`; a malformed one raises a one-line
    :class:`StorageError` naming the stage's ``stage.json`` and the first bad field."""
    return read_stage_record(BundleRecord, record)
