"""Settings of the ``prune``, ``factorize`` and ``hybrid`` stages and their recovery distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgekd.config.base import Epochs, Fraction, PositiveFloat, PositiveInt, StrictModel
from edgekd.config.training import TrainingConfig
from edgekd.distill.losses.hinton import HintonLoss
from edgekd.distill.losses.registry import LossConfig
from edgekd.models.specs import spec_of
from edgekd.stage_kind import PlanState, StageKind, check_losses_fit, measuring_host

#: The energy a factorization keeps when neither ``energy`` nor ``param_ratio`` is given.
DEFAULT_ENERGY = 0.9


class RecoveryConfig(TrainingConfig):
    """Short distillation from the teacher after a prune/factorize step (LadaBERT's recovery); a causal LM's
    distils from the unpruned model (:mod:`edgekd.prune.causal_lm`)."""

    epochs: Epochs = 1
    losses: list[LossConfig] = Field(
        default_factory=lambda: [HintonLoss(kind="hinton")], min_length=1,
        description="Classifiers: hinton unless given; causal LMs: generation losses, token_kl unless given.")


class PruneConfig(StrictModel):
    """Structured pruning with Torch-Pruning's dependency graph (Fang et al., DepGraph, 2023).

    ``ratio`` is the fraction of attention heads, FFN channels or conv/MLP channels removed (of
    the model's current ones). A transformer's hidden (model) width is never pruned.
    """

    ratio: Fraction = 0.5
    targets: list[Literal["heads", "ffn", "channels"]] = Field(
        default=["heads", "ffn", "channels"], min_length=1,
        description="heads/ffn: a transformer's attention heads (whole KV groups under grouped-query attention) "
        "and feed-forward channels; channels: CNN/MLP widths.")
    importance: Literal["l1", "l2", "taylor", "random"] = Field(
        default="l2", description="Magnitude (L1/L2 norm), first-order Taylor, or random as a control.")
    scope: Literal["layer", "global"] = Field(
        default="layer", description="layer: every layer loses `ratio`; global: ranked across layers.")


class FactorizeConfig(StrictModel):
    """Low-rank factorization: each ``nn.Linear`` → two thinner ones from a truncated SVD.

    The rank of a layer keeps ``energy`` of its squared singular values, or gives ``param_ratio`` of
    its parameters; layers whose factorized form would keep more than ``max_size_ratio`` of their
    parameters (too high a rank to be smaller and faster) are left dense.
    """

    energy: Fraction | None = Field(default=None, description=f"Share of the squared singular values each rank "
                                    f"keeps; {DEFAULT_ENERGY} unless param_ratio is given.")
    param_ratio: Fraction | None = Field(default=None, description="Set to choose ranks by size instead of energy.")
    max_size_ratio: Fraction = 0.8
    embeddings: bool = Field(
        default=False, description="Also factorize embedding tables (ALBERT-style thin table + projection): "
        "the word embeddings are a quarter of a small BERT's parameters."
    )

    @model_validator(mode="after")
    def _one_rank_rule(self) -> FactorizeConfig:
        if self.param_ratio is not None and self.energy is not None:
            raise ValueError("give either 'energy' or 'param_ratio', not both")
        if self.param_ratio is None and self.energy is None:  # stated, so that a dumped config validates again
            object.__setattr__(self, "energy", DEFAULT_ENERGY)
        return self


class _CompressStage(StrictModel):
    """What the prune, factorize and hybrid stages share: the model they change and its recovery."""

    role: Literal["student", "teacher", "assistant"] = "student"
    recovery: RecoveryConfig | None = Field(
        default=None, description="Distil from the teacher after each step to recover accuracy (a causal LM: "
        "from the model before the stage, to recover validation loss).")


class PruneStage(_CompressStage, PruneConfig):
    """Physically remove heads/channels in ``steps`` iterative steps (recovery after each)."""

    stage: Literal["prune"] = "prune"
    steps: PositiveInt = 1


class FactorizeStage(_CompressStage, FactorizeConfig):
    """Replace linear layers by truncated-SVD factor pairs."""

    stage: Literal["factorize"] = "factorize"


class HybridStage(_CompressStage):
    """LadaBERT-style (Mao et al., 2020) schedule: prune and factorize a little, recover by distillation, repeat.

    Stops once every target given is met (parameters or MACs as a ratio of the input model's, p50
    ONNX latency on the device profile) or after ``max_steps``.
    """

    stage: Literal["hybrid"] = "hybrid"
    prune: PruneConfig = PruneConfig(ratio=0.2)
    factorize: FactorizeConfig = FactorizeConfig(energy=0.95)
    target_params_ratio: Fraction | None = None
    target_macs_ratio: Fraction | None = None
    target_latency_ms: PositiveFloat | None = None
    max_steps: PositiveInt = 10
    measure_latency: bool = Field(default=True, description="Time each step's ONNX export on the device profile.")

    @model_validator(mode="after")
    def _has_target(self) -> HybridStage:
        if (self.target_params_ratio, self.target_macs_ratio, self.target_latency_ms) == (None, None, None):
            raise ValueError("give a target: target_params_ratio, target_macs_ratio or target_latency_ms")
        if self.target_latency_ms is not None and not self.measure_latency:
            raise ValueError("target_latency_ms needs measure_latency: true")
        return self


CompressStage = PruneStage | FactorizeStage | HybridStage


def _check_compress(config: CompressStage, state: PlanState, where: str) -> None:
    """It changes a model an earlier stage made, before export; pruning asks only what that model has."""
    if config.role not in state.trained:
        raise state.fail(f"{where}.role", f"'{config.role}' needs a 'teacher' or 'distill' stage making it before this")
    if "export" in state.seen:
        raise state.fail(f"{where}.stage", f"'{config.stage}' must come before 'export' (it changes the PyTorch model)")
    prune = {"prune": config, "hybrid": getattr(config, "prune", None)}.get(config.stage)
    spec = spec_of(state.recipe, config.role)
    family = getattr(spec, "family", None)  # arch: hf: the checkpoint's family says why a step does not apply
    why = f" ({family.why_not})" if family is not None and family.why_not else ""
    if config.stage in ("factorize", "hybrid") and not spec.factorizable:
        raise state.fail(f"{where}.stage", f"a {spec.label} {config.role} cannot be factorized{why}")
    if prune is not None:
        key = f"{where}.prune.targets" if config.stage == "hybrid" else f"{where}.targets"
        if not spec.prune_targets:
            raise state.fail(f"{where}.stage", f"a {spec.label} {config.role} has nothing structured pruning "
                             f"removes{why}")
        if family is not None and family.alike_in_every_layer and prune.scope != "layer":
            raise state.fail(f"{key.rpartition('.')[0]}.scope", f"a {spec.label} {config.role} is pruned alike in "
                             "every layer (its config states one head count and one MLP width); use scope: layer")
        # a Hugging Face family's targets, when the recipe names them, must all be ones it has (the default
        # names every kind, each model taking its own)
        lacking = [t for t in prune.targets if t not in spec.prune_targets]
        if not spec.prune_targets & set(prune.targets) or (family is not None and lacking
                                                            and "targets" in prune.model_fields_set):
            raise state.fail(key, f"a {spec.label} model prunes {' or '.join(sorted(spec.prune_targets))}, "
                             f"not {', '.join(lacking)}{why}")
    if config.recovery is not None:
        check_losses_fit(config.recovery.losses, config.role, "teacher", state, f"{where}.recovery.losses")


_COMPRESS = {"reads": ("seed", "data"), "uses_device": True, "device_ignores": ("description", "budget"),
             "extra_inputs": measuring_host, "check": _check_compress,
             "record": "edgekd.prune.record:read_compression_stage"}
PRUNE = StageKind(PruneStage, "edgekd.prune.stage:run_prune", **_COMPRESS)
FACTORIZE = StageKind(FactorizeStage, "edgekd.prune.stage:run_factorize", **_COMPRESS)
HYBRID = StageKind(HybridStage, "edgekd.prune.stage:run_hybrid", **_COMPRESS)
KINDS = (PRUNE, FACTORIZE, HYBRID)
