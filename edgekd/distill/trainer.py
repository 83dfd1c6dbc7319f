"""The training loop shared by teacher training and distillation.

AdamW over shuffled mini-batches, validation accuracy after every epoch, the best epoch's
weights kept, and a checkpoint after every epoch so an interrupted run resumes where it
stopped. Each epoch seeds its own shuffling and dropout from ``(seed, epoch)``, so a resumed
run follows exactly the same path as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from edgekd.atomic import write_with
from edgekd.config import TrainingConfig

log = logging.getLogger(__name__)

#: ``objective(logits, labels, batch_indices) -> loss``; indices let distillation look up cached teacher outputs.
Objective = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

CHECKPOINT = "checkpoint.safetensors"


@dataclass
class TrainHistory:
    """What training did, epoch by epoch."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    epochs: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0


@torch.no_grad()
def predict_logits(model: nn.Module, inputs: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for all ``inputs``."""
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def accuracy(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` on ``inputs``."""
    correct = (predict_logits(model, inputs).argmax(dim=-1) == labels).sum().item()
    return correct / len(labels)


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    config: TrainingConfig,
    objective: Objective,
    *,
    seed: int,
    checkpoint_dir: Path,
    description: str = "training",
    show_progress: bool = True,
) -> TrainHistory:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    If ``checkpoint_dir`` holds a checkpoint from an earlier, interrupted call with the same
    settings, training continues after its last finished epoch.
    """
    x_train, y_train = train
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    history = TrainHistory()
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 1
    if (checkpoint_dir / CHECKPOINT).is_file():
        history, best_state = _load_checkpoint(checkpoint_dir, model, optimizer)
        start_epoch = history.epochs_run + 1
        history.resumed_from_epoch = history.epochs_run
        log.info("%s: resuming after epoch %d", description, history.epochs_run)

    with _progress(show_progress) as progress:
        task = progress.add_task(description, total=config.epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, config.epochs + 1):
            started = time.perf_counter()
            torch.manual_seed(seed * 1_000_003 + epoch)
            order = torch.randperm(len(x_train))
            model.train()
            total_loss = 0.0
            for begin in range(0, len(order), config.batch_size):
                idx = order[begin : begin + config.batch_size]
                loss = objective(model(x_train[idx]), y_train[idx], idx)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += loss.item() * len(idx)
            val_acc = accuracy(model, *val)
            history.epochs.append({
                "epoch": epoch,
                "train_loss": total_loss / len(order),
                "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started,
            })
            history.epochs_run = epoch
            if val_acc > history.best_val_accuracy:
                history.best_val_accuracy, history.best_epoch = val_acc, epoch
                best_state = copy.deepcopy(model.state_dict())
            _save_checkpoint(checkpoint_dir, model, optimizer, best_state, history)
            progress.update(task, advance=1, status=f"val acc {val_acc:.4f} (best {history.best_val_accuracy:.4f})")
    model.load_state_dict(best_state)
    model.eval()
    return history


def clear_checkpoint(checkpoint_dir: Path) -> None:
    """Remove the epoch checkpoint once the stage's result is saved."""
    (checkpoint_dir / CHECKPOINT).unlink(missing_ok=True)


def _progress(show: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("epochs"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
        disable=not show,
        transient=False,
    )


def _save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    best_state: dict[str, torch.Tensor],
    history: TrainHistory,
) -> None:
    """Write one safetensors file: current weights, best weights, optimizer tensors, and the
    history and optimizer scalars as JSON metadata — one atomic write, so never half a checkpoint."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensors[f"model.{name}"] = tensor.detach().contiguous().clone()
    for name, tensor in best_state.items():
        tensors[f"best.{name}"] = tensor.detach().contiguous().clone()
    scalars: dict[str, dict[str, float]] = {}
    for param_id, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optim.{param_id}.{key}"] = value.contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = float(value)
    metadata = {
        "history": json.dumps(asdict(history)),
        "optimizer_scalars": json.dumps(scalars),
        "param_groups": json.dumps(opt_state["param_groups"]),
    }
    write_with(directory / CHECKPOINT, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _load_checkpoint(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[TrainHistory, dict[str, torch.Tensor]]:
    path = directory / CHECKPOINT
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    history = TrainHistory(**json.loads(metadata["history"]))
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")})
    best = {k.removeprefix("best."): v for k, v in tensors.items() if k.startswith("best.")}
    opt_state: dict[str, Any] = {"state": {}, "param_groups": json.loads(metadata["param_groups"])}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            opt_state["state"].setdefault(int(param_id), {})[name] = value
    for param_id, values in json.loads(metadata["optimizer_scalars"]).items():
        for name, value in values.items():
            opt_state["state"].setdefault(int(param_id), {})[name] = torch.tensor(value)
    optimizer.load_state_dict(opt_state)
    return history, best
