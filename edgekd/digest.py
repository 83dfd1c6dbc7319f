"""Content digests of files, for fingerprints and records."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


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


def update_with_tensor(hasher: Any, name: str, tensor: torch.Tensor, *, header: bool = True) -> None:
    """Feed ``tensor``'s bytes to ``hasher`` (a ``hashlib`` object), after its name, dtype and shape if ``header``.

    Without the header, tensors fed one after another hash as their concatenation would.
    """
    import torch  # here: the file digests above are used where torch is not loaded

    value = tensor.detach().cpu().contiguous().reshape(-1)
    if header:
        hasher.update(f"{name}:{value.dtype}:{tuple(tensor.shape)};".encode())
    if value.numel():
        hasher.update(value.view(torch.uint8).numpy().tobytes())
