"""The ``bundle`` stage: the final model packed for an Android/iOS app.

Writes ``RUN_DIR/bundle/`` (model files, ``manifest.json``, ``README.md``, a ``tokenizer/``
folder for text models) and ``RUN_DIR/bundle.zip``. It runs after ``profile``. The bundled model is
the one the profile stage judged against the budget (the student, else the only model); the manifest
carries the latency, size and verdict of the file that ships (an ``.ort`` file timed again here, else the
profile stage's figures of the ONNX model), measured (or estimated) for the device. Its files are the
ones the export target marked for shipping (``deploy_files``: the ``.ort`` model, its
reduced-operator configuration and, with ``keep_onnx``, the ONNX file), or the ONNX file alone.
When a stage after ``export`` replaced the ONNX file (``quantize`` keeping an INT8 variant), the
current file is converted to ``.ort`` here, the same way and with the same parity check.
Packing is :func:`edgekd.export.bundle.pack_model`, which ``edgekd bundle`` shares. A causal language
model is packed with its KV-cache layout and generation loop instead (:mod:`edgekd.export.causal_lm_bundle`).
"""

from __future__ import annotations

from pathlib import Path

from edgekd.artifacts import Artifact, ModelArtifact, StageContext, StageOutput
from edgekd.config.base import MIN_RUNS
from edgekd.errors import ConfigError
from edgekd.export.bundle import converted_files, pack_model
from edgekd.export.bundle_record import BundleRecord
from edgekd.export.causal_lm_bundle import run_causal_lm_bundle
from edgekd.export.config import BUNDLE_DIR, BUNDLE_ZIP, BundleStage
from edgekd.export.manifest import TOKENIZER_FILES, recipe_preprocessing
from edgekd.export.record import recorded_target
from edgekd.models.task_model import MANIFEST as MODEL_MANIFEST
from edgekd.models.task_model import ModelDescription, read_description
from edgekd.profile.budget import judge, judged_role
from edgekd.profile.record import LMProfileRecord, read_profile_record
from edgekd.profile.runner import ProfileResult, profile_onnx
from edgekd.profile.verdict_record import BudgetVerdict
from edgekd.task_heads import task_postprocessing

#: Untimed runs before the shipped file's timed ones (as ``edgekd bundle``'s default).
SHIPPED_WARMUP = 20


def run_bundle(_config: BundleStage, artifact: Artifact, ctx: StageContext) -> StageOutput:
    """Pack the judged model with its manifest and README into ``bundle/`` and ``bundle.zip``."""
    role = judged_role([r for r, m in artifact.models.items() if m.onnx is not None])
    stage = next((r for r in reversed(ctx.previous) if r["stage"] == "profile"), None)
    profile = read_profile_record(stage) if stage is not None else None
    if profile is None or role not in profile.models:
        raise ConfigError(f"the {role} was not profiled; the 'bundle' stage needs a 'profile' stage before it")
    if isinstance(profile, LMProfileRecord):
        return run_causal_lm_bundle(artifact, ctx, role, profile)
    model = artifact.get(role)
    deploy = _deploy_files(model, ctx)
    model_dir = ctx.resolve(model.weights) if model.weights else None
    info = read_description(model_dir) if model_dir is not None and (model_dir / MODEL_MANIFEST).is_file() else None
    onnx_path = ctx.resolve(model.onnx)
    labels = list(info.class_names) if info is not None else []
    figures, verdict = _shipped_figures(deploy, profile.models[role], profile.budget, ctx)
    manifest = pack_model(
        ctx.output(BUNDLE_DIR), ctx.output(BUNDLE_ZIP),
        onnx_path=onnx_path,
        deploy=deploy,
        name=f"{ctx.recipe.name}-{role}",
        opset=model.metrics.opset,
        labels=labels,
        preprocessing=recipe_preprocessing(onnx_path, ctx.recipe.data,
                                           info.signature.to_json() if info is not None else {}, labels),
        tokenizer=_tokenizer_files(model_dir, info),
        device=ctx.device,
        profile=figures,
        budget=verdict,
        accuracy=model.metrics.accuracy,
        **task_postprocessing(model.metrics.figures(), tuple(labels)),
    )
    fmt = manifest["model"]["format"]
    ctx.log.info("bundle of the %s (%s) written to %s and %s", role, fmt, BUNDLE_DIR, BUNDLE_ZIP)
    record = BundleRecord(role=role, format=fmt, directory=BUNDLE_DIR, zip=BUNDLE_ZIP,
                          zip_bytes=(ctx.run_dir / BUNDLE_ZIP).stat().st_size, files=manifest["files"])
    return StageOutput(artifact=artifact, metrics=record.model_dump())


def _shipped_figures(deploy: dict[str, Path], profiled: ProfileResult, verdict: BudgetVerdict | None,
                     ctx: StageContext) -> tuple[ProfileResult, BudgetVerdict | None]:
    """The latency, size and budget verdict the manifest gives: of the file that ships. The profile stage timed the
    ONNX model; an ``.ort`` file (its graph optimised and saved at the export target's level) is timed here as
    ``edgekd bundle`` times it, as many runs, and judged against the device's budget (a verdict other than the
    profile stage's is warned about)."""
    shipped = deploy.get("ort")
    if shipped is None:
        return profiled, verdict
    timed = profile_onnx(shipped, ctx.device, warmup=SHIPPED_WARMUP, runs=max(MIN_RUNS, len(profiled.times_ms)))
    judged = judge(timed, ctx.device.budget)
    if verdict is not None and judged.verdict != verdict.verdict:
        ctx.log.warning("bundle: the shipped %s is judged '%s' against the budget, the profiled ONNX model '%s' "
                        "(p90 %.3f vs %.3f ms, %.3f vs %.3f MB): the manifest gives the shipped file's figures",
                        shipped.name, judged.verdict, verdict.verdict, timed.p90_ms, profiled.p90_ms, timed.size_mb,
                        profiled.size_mb)
    return timed, judged


def _deploy_files(model: ModelArtifact, ctx: StageContext) -> dict[str, Path]:
    """The files to ship by kind: as exported, or converted anew from an ONNX file replaced after export."""
    deploy = model.deploy_files or {"onnx": model.onnx}
    converted = deploy.get("ort")
    if converted is None or Path(converted).with_suffix(".onnx") == Path(model.onnx):
        return {kind: ctx.resolve(ref) for kind, ref in deploy.items()}
    export = next(r for r in reversed(ctx.previous) if r["stage"] in ("export", "search"))  # both record the target
    target = recorded_target(export)
    files, _parity = converted_files(ctx.resolve(model.onnx), target, ctx.device, ctx.work_dir)
    return files


def _tokenizer_files(model_dir: Path | None, info: ModelDescription | None) -> list[Path]:
    """A text model's tokenizer files, as saved beside its weights."""
    if model_dir is None or info is None or info.signature.kind != "text":
        return []
    return [model_dir / name for name in TOKENIZER_FILES if (model_dir / name).is_file()]
