"""The training loop shared by teacher training and distillation.

AdamW with linear warm-up then linear decay, optional gradient clipping, validation accuracy
after every epoch, the best epoch's weights kept, early stopping, and a checkpoint after every
epoch so an interrupted run resumes where it stopped. Each epoch seeds its own shuffling and
dropout from ``(seed, epoch)``, so a resumed run follows exactly the same path as an
uninterrupted one.

The loop runs on Hugging Face accelerate: mixed precision, and in a data-parallel stage DDP over
the processes of a :class:`~edgekd.distributed.World` (see :mod:`edgekd.distributed` for how
batches are shared). Each batch of ``batch_size`` examples is one optimizer step, computed in
``gradient_accumulation_steps`` parts per process.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from edgekd.atomic import write_with
from edgekd.config.training import TrainingConfig
from edgekd.data.examples import Examples
from edgekd.digest import update_with_tensor
from edgekd.distill.target_scale import unit_scale_targets
from edgekd.distributed import LOCAL, World, accelerator
from edgekd.errors import TrainingError, first_line
from edgekd.models.call import call_logits, parameter_device
from edgekd.task_heads import selection_score, task_metrics

log = logging.getLogger(__name__)

#: ``objective(model, inputs, labels, indices) -> loss``; indices let distillation look up cached teacher outputs.
Objective = Callable[[nn.Module, dict[str, torch.Tensor], torch.Tensor, np.ndarray], torch.Tensor]

CHECKPOINT = "checkpoint.safetensors"
EVAL_BATCH = 256


@dataclass
class TrainHistory:
    """What training did, epoch by epoch."""

    epochs_run: int = 0
    best_epoch: int = 0
    best_val_accuracy: float = -1.0
    """The best epoch's score (accuracy, or a :class:`Validation`'s higher-is-better score)."""
    epochs: list[dict[str, float]] = field(default_factory=list)
    resumed_from_epoch: int = 0
    stopped_early: bool = False


@torch.no_grad()
def predict_logits(model: nn.Module, examples: Examples, batch_size: int = EVAL_BATCH) -> torch.Tensor:
    """Logits of ``model`` (in eval mode) for every example, in the set's order; per-token logits ``[N, T, C]``
    are zero-padded to the set's longest example (``T``: the width of its labels)."""
    model.eval()
    device = parameter_device(model)
    out: torch.Tensor | None = None
    for idx, inputs, _labels in examples.batches(batch_size, shuffle=False):
        logits = call_logits(model, {name: value.to(device) for name, value in inputs.items()}).cpu()
        if out is None:
            width = examples.labels.shape[1:2] if logits.ndim == 3 else ()
            out = torch.zeros(len(examples), *width, logits.shape[-1])
        out[torch.from_numpy(np.asarray(idx)), : logits.shape[1]] = logits.float()
    return out if out is not None else torch.empty(0, 0)


def accuracy(model: nn.Module, examples: Examples) -> float:
    """Top-1 accuracy of ``model`` on ``examples``; for other tasks than single-label, the figure the best
    epoch is kept by (:func:`edgekd.task_heads.selection_score`: micro-F1, −MSE)."""
    return selection_score(predict_logits(model, examples), examples.labels)


def task_scores(model: nn.Module, examples: Examples, class_names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Every metric of the examples' task (:func:`edgekd.task_heads.task_metrics`) for ``model``."""
    return task_metrics(predict_logits(model, examples), examples.labels, class_names)


@dataclass(frozen=True)
class Validation:
    """How each epoch is judged when not by :func:`accuracy` on a validation set: a named figure of the
    model (``val_loss`` of a language model...) and whether lower is better."""

    name: str
    measure: Callable[[nn.Module], float]
    lower_is_better: bool = False

    def score(self, model: nn.Module) -> tuple[float, float]:
        """The figure and its higher-is-better score (negated when lower is better)."""
        value = self.measure(model)
        return value, -value if self.lower_is_better else value


def fit(
    model: nn.Module,
    train: Examples,
    val: Examples | Validation,
    config: TrainingConfig,
    objective: Objective,
    *,
    seed: int,
    checkpoint_dir: Path,
    description: str = "training",
    show_progress: bool = True,
    extra: nn.Module | None = None,
    world: World = LOCAL,
) -> TrainHistory:
    """Train ``model`` in place and leave it holding the weights of its best validation epoch.

    Epochs are judged by accuracy on ``val`` (the task's figure, :func:`accuracy`), or by a
    :class:`Validation`'s figure, recorded in the history under its name.

    ``extra`` holds trainable parameters outside the model (e.g. a distillation loss's
    projections); they are optimised and checkpointed with it. If ``checkpoint_dir`` holds a
    checkpoint from an earlier, interrupted call with the same settings, training continues
    after its last finished epoch. With a ``world`` of several processes every process calls
    ``fit`` alike: each computes its share of every batch, DDP averages the gradients, rank 0
    validates and writes the checkpoints. Training runs on ``world.device``; the model is
    returned on the CPU. Regression targets far from unit scale are learnt at unit scale
    (:mod:`edgekd.distill.target_scale`).
    """
    with unit_scale_targets(model, train):
        return _fit(model, train, val, config, objective, seed=seed, checkpoint_dir=checkpoint_dir,
                    description=description, show_progress=show_progress, extra=extra, world=world)


def _fit(model: nn.Module, train: Examples, val: Examples | Validation, config: TrainingConfig, objective: Objective,
         *, seed: int, checkpoint_dir: Path, description: str, show_progress: bool, extra: nn.Module | None,
         world: World) -> TrainHistory:
    modules = nn.ModuleDict({"model": model, **({"extra": extra} if extra is not None else {})})
    optimizer = torch.optim.AdamW(modules.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, _warmup_then_linear_decay(config.warmup_ratio, steps_per_epoch * config.epochs)
    )
    history = TrainHistory()
    best_state = copy.deepcopy(model.state_dict())
    start_epoch = 1
    checkpoint = checkpoint_dir / CHECKPOINT
    saved = _read_checkpoint(checkpoint) if world.broadcast(checkpoint.is_file()) else None
    if saved is not None:
        history, best_state = _load_checkpoint(saved, modules, optimizer, scheduler)
        start_epoch = history.epochs_run + 1
        history.resumed_from_epoch = history.epochs_run
        log.info("%s: resuming after epoch %d", description, history.epochs_run)
    steps = _Steps(modules, objective, optimizer, config, world, description)
    # batch norm cannot normalise one example in training mode: a last batch of one is left out of the epoch
    singles_trainable = len(train) == 1 or not any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                                   for m in modules.modules())
    if not isinstance(val, Validation):
        val = Validation("val_accuracy", partial(accuracy, examples=val))

    with _progress(show_progress) as progress:
        task = progress.add_task(description, total=config.epochs, completed=start_epoch - 1, status="")
        for epoch in range(start_epoch, config.epochs + 1):
            if history.stopped_early:
                break
            started = time.perf_counter()
            torch.manual_seed((seed * 1_000_003 + epoch) * world.size + world.rank)  # dropout differs by process
            generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)  # batches are the same in all
            modules.train()
            total_loss, seen = 0.0, 0
            for batch in train.batches(config.batch_size, shuffle=True, generator=generator):
                if len(batch[0]) == 1 and not singles_trainable:
                    continue
                loss_sum, count = steps.step(batch)
                if not steps.skipped:
                    scheduler.step()
                total_loss += loss_sum
                seen += count
            total_loss, seen = world.total([total_loss, seen])
            value, score = world.broadcast(val.score(model) if world.is_main else None)
            history.epochs.append({
                "epoch": epoch,
                "train_loss": total_loss / max(seen, 1),
                val.name: value,
                "seconds": time.perf_counter() - started,
            })
            history.epochs_run = epoch
            if score > history.best_val_accuracy or history.best_epoch == 0:
                history.best_val_accuracy, history.best_epoch = score, epoch
                best_state = copy.deepcopy(model.state_dict())
            elif config.patience is not None and epoch - history.best_epoch >= config.patience:
                history.stopped_early = True
                log.info("%s: no better %s for %d epochs; stopping", description, val.name, config.patience)
            if world.is_main:
                _save_checkpoint(checkpoint_dir, modules, optimizer, scheduler, best_state, history)
            best = -history.best_val_accuracy if val.lower_is_better else history.best_val_accuracy
            progress.update(task, advance=1, status=f"{val.name} {value:.4f} (best {best:.4f})")
    steps.close()
    modules.cpu()
    model.load_state_dict(best_state)
    model.eval()
    return history


class _Objective(nn.Module):
    """The trained modules and the objective as one module, so that DDP sees every trained
    parameter (the model's and ``extra``'s) in one forward pass while the objective still gets the
    model itself (losses read its config and hook its layers)."""

    def __init__(self, modules: nn.ModuleDict, objective: Objective) -> None:
        super().__init__()
        self.trained = modules
        self.objective = objective

    def forward(self, inputs: dict[str, torch.Tensor], labels: torch.Tensor, idx: np.ndarray) -> torch.Tensor:
        """The objective on one part of a batch; zero, with zero gradients, on an empty part (which
        still runs forward and backward so that its process joins DDP's gradient averaging)."""
        if len(labels) == 0:
            return sum(p.sum() for p in self.trained.parameters() if p.requires_grad) * 0.0
        return self.objective(self.trained["model"], inputs, labels, idx)


class _Steps:
    """Optimizer steps through accelerate: autocast, DDP across the world's processes, clipping."""

    def __init__(self, modules: nn.ModuleDict, objective: Objective, optimizer: torch.optim.Optimizer,
                 config: TrainingConfig, world: World, description: str) -> None:
        self.engine = accelerator(world, config.mixed_precision)
        # evaluation_mode only leaves out the DDP wrapper, which one process (or rank 0 alone) does not need.
        self.module = self.engine.prepare_model(_Objective(modules, objective), evaluation_mode=not world.distributed)
        self.optimizer = self.engine.prepare_optimizer(optimizer)
        self.parameters = list(modules.parameters())
        self.config, self.world, self.description = config, world, description
        self.taken = 0

    def step(self, batch: tuple[np.ndarray, dict[str, torch.Tensor], torch.Tensor]) -> tuple[float, int]:
        """Forward and backward this process's parts of ``batch``, then step; returns (summed loss, examples)."""
        idx, inputs, labels = batch
        device = self.engine.device
        self.optimizer.zero_grad(set_to_none=True)
        parts = self.world.share(len(idx), self.config.gradient_accumulation_steps)
        loss_sum, count = 0.0, 0
        for number, rows in enumerate(parts):
            size = rows.stop - rows.start
            last = number == len(parts) - 1  # DDP averages the gradients over the processes here
            with contextlib.nullcontext() if last else self.engine.no_sync(self.module):
                loss = self.module({name: value[rows].to(device) for name, value in inputs.items()},
                                   labels[rows].to(device), idx[rows])
                value = loss.item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"{self.description}: the training loss became {value} after {self.taken} optimizer "
                        "step(s); training stopped. Lower the learning rate (lr) or check the loss weights, "
                        "temperature and input data")
                # A part's mean loss counts by its share of the batch; × processes undoes DDP's averaging.
                self.engine.backward(loss * (size * self.world.size / len(idx)))
            loss_sum += value * size
            count += size
        if self.config.max_grad_norm is not None:
            self.engine.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        self.optimizer.step()
        self.taken += 1
        return loss_sum, count

    def close(self) -> None:
        """Free the DDP wrapper now: one left for the interpreter's shutdown can abort the process."""
        if not self.world.distributed:
            return  # no wrapper; garbage collection would only cost time
        self.module = self.optimizer = None
        self.engine.free_memory()  # accelerate's own references to them
        gc.collect()  # DDP's reference cycles

    @property
    def skipped(self) -> bool:
        """True when the last step was skipped (fp16 gradients overflowed): the learning rate must not move."""
        return self.engine.optimizer_step_was_skipped


def _warmup_then_linear_decay(warmup_ratio: float, total_steps: int) -> Callable[[int], float]:
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    return factor


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
    modules: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    best_state: dict[str, torch.Tensor],
    history: TrainHistory,
) -> None:
    """Write one safetensors file: current weights (model and extra modules), the best model
    weights, optimizer tensors, and the history, optimizer scalars and scheduler state as JSON
    metadata — one atomic write, so never half a checkpoint."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in modules.state_dict().items():
        tensors[f"modules.{name}"] = tensor.detach().cpu().contiguous().clone()
    for name, tensor in best_state.items():
        tensors[f"best.{name}"] = tensor.detach().cpu().contiguous().clone()
    scalars: dict[str, dict[str, float]] = {}
    for param_id, state in opt_state["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"optim.{param_id}.{key}"] = value.cpu().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = float(value)
    metadata = {
        "history": json.dumps(asdict(history)),
        "optimizer_scalars": json.dumps(scalars),
        "param_groups": json.dumps(opt_state["param_groups"]),
        "scheduler": json.dumps(scheduler.state_dict()),
        "tensors_sha256": _tensors_digest(tensors),
    }
    write_with(directory / CHECKPOINT, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def _tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """The SHA-256 of a checkpoint's tensors (names, dtypes, shapes and bytes, in name order): a file damaged in
    place after it was written (same size, other bytes) still parses, and would be resumed from."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        update_with_tensor(hasher, name, tensors[name])
    return hasher.hexdigest()


def _read_checkpoint(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]] | None:
    """The metadata and tensors of the checkpoint at ``path``; None, with a warning, when it cannot be read (a
    file truncated or damaged after it was written: training then starts from the first epoch)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata()
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        json.loads(metadata["history"])
        if metadata.get("tensors_sha256", _tensors_digest(tensors)) != _tensors_digest(tensors):
            raise ValueError("its tensors changed since it was written (SHA-256 differs)")
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own types for a damaged file
        log.warning("%s: cannot resume from it (%s); training from the first epoch", path, first_line(exc))
        return None
    return metadata, tensors


def _load_checkpoint(
    saved: tuple[dict[str, str], dict[str, torch.Tensor]],
    modules: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
) -> tuple[TrainHistory, dict[str, torch.Tensor]]:
    metadata, tensors = saved
    history = TrainHistory(**json.loads(metadata["history"]))
    modules.load_state_dict({k.removeprefix("modules."): v for k, v in tensors.items() if k.startswith("modules.")})
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
    scheduler.load_state_dict(json.loads(metadata["scheduler"]))
    return history, best
