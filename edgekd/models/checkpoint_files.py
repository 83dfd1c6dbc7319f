"""What a local checkpoint directory must hold before anything trains: a readable source to load.

A truncated download, a checkpoint that has only pickled weights (``pytorch_model.bin``: edgekd loads
safetensors only, since unpickling can run code) or a path that does not exist would otherwise fail
after the stages before it have run. These checks read file names and safetensors headers only.
"""

from __future__ import annotations

import json
from pathlib import Path

#: Weight files edgekd refuses to load (pickles and other frameworks' formats), named in the message.
_OTHER_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")


def looks_local(name: str) -> bool:
    """Whether ``name`` is written as a filesystem path (``/…``, ``./…``, ``../…``, ``~…``), never a hub id."""
    return name.startswith(("/", "./", "../", "~")) or name in (".", "..")


def check_local_path(name: str) -> None:
    """Raise ``ValueError`` when ``name`` is written as a path and is not a directory."""
    if looks_local(name) and not Path(name).is_dir():
        raise ValueError(f"'{name}' is not a directory (a path was given, so it is not read as a hub id)")


def check_safetensors_weights(directory: Path) -> None:
    """Raise ``ValueError`` (one line naming the file) unless ``directory`` holds safetensors weights whose
    headers parse: ``model.safetensors``, or every shard ``model.safetensors.index.json`` names."""
    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        files = [directory / name for name in sorted(set(_index_map(index).values()))]
    else:
        others = sorted(path.name for path in directory.iterdir() if path.suffix in _OTHER_WEIGHTS)
        hint = (f"; it has {', '.join(others)}, which edgekd does not load (pickled weights can run code): save "
                "the model with save_pretrained(..., safe_serialization=True)") if others else ""
        raise ValueError(f"'{directory}' has no model.safetensors{hint}")
    for path in files:
        _check_header(path)


def _index_map(index: Path) -> dict[str, str]:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"'{index}' is unreadable: expected JSON with a 'weight_map' ({type(exc).__name__})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(name, str) for name in weight_map.values()):
        raise ValueError(f"'{index}': 'weight_map' must map tensor names to shard file names")
    return weight_map


def _check_header(path: Path) -> None:
    from safetensors import safe_open

    if not path.is_file():
        raise ValueError(f"'{path}' is missing (named by the checkpoint's safetensors index)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as exc:  # SafetensorError, OSError, … : the header does not parse or the file is short
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"'{path}' is not a readable safetensors file ({reason}); re-download or re-save it") \
            from None
