"""Conv-channel pruning of Hugging Face image CNN families (issue 18): ResNet, MobileNetV2, EfficientNet,
ConvNeXt and MobileViT, and RegNet, BiT, MobileNetV1, ConvNeXt-V2 and PoolFormer by the same mechanism, each a
tiny random config; Swin refused.

Pruning half the channels shrinks the model; its directory (``config.json``'s ``edgekd_structure``
and safetensors) reloads through ``TaskModel.load`` with the same weights and outputs, and exports
to ONNX with parity. A layer whose pruned state the directory cannot hold is refused by name;
``validate`` accepts ``channels`` on these families and refuses other targets with the key path;
and a recipe trains an HF CNN teacher on an image folder, prunes it with recovery, exports,
quantizes, profiles and bundles it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
import yaml
from torch import nn
from typer.testing import CliRunner

import edgekd
from edgekd.cli import app
from edgekd.config.loading import validate_model
from edgekd.config.recipe import Recipe
from edgekd.data.examples import InputSignature
from edgekd.errors import ModelError
from edgekd.export.config import load_export_target
from edgekd.export.onnx_export import export_onnx
from edgekd.models import families
from edgekd.models.call import call_logits
from edgekd.models.task_model import TaskModel
from edgekd.prune.config import FactorizeConfig, PruneConfig
from edgekd.prune.lowrank import factorize_layer, factorize_task_model
from edgekd.prune.measure import count_macs
from edgekd.prune.structure import CONFIG_KEY, LowRankConv2d, dense_weight
from edgekd.prune.structured import prune_step
from edgekd.threads import training_threads
from tests.test_config_errors import _assert_one_line_error
from tests.test_image_data import colour_sets  # noqa: F401 - the image folders of three colours (a fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning",
                                        "ignore::torch.jit.TracerWarning")
runner = CliRunner()


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread, as the recipes here run with (``threads: 1``): on busy shared cores two threads meeting
    at a barrier after every operation make these tiny models' forwards many times slower."""
    with training_threads(1):
        yield

#: family → (config sizes, image side): tiny but with each family's coupled structures (bottleneck residuals,
#: inverted residuals with depthwise convs, squeeze-and-excitation, layer norms and layer scales, transformer
#: blocks); EfficientNet's 5 × 5 kernels need 32 pixels after its downsampling.
ISSUE: dict[str, tuple[dict[str, Any], int]] = {
    "resnet": (dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck"), 16),
    "mobilenet_v2": (dict(image_size=16, depth_multiplier=0.1, min_depth=4, finegrained_output=False), 16),
    "efficientnet": (dict(image_size=32, width_coefficient=0.1, depth_coefficient=0.1, hidden_dim=128), 32),
    "convnext": (dict(patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=16), 16),
    "mobilevit": (dict(image_size=16, hidden_sizes=[8, 8, 8], neck_hidden_sizes=[8, 8, 8, 8, 8, 8, 16],
                       num_attention_heads=2), 16),
}
#: More CNN families the same mechanism prunes and rebuilds (grouped convolutions, weight-standardised convs,
#: ConvNeXt-V2's GRN parameters, PoolFormer's pooling token mixer).
MORE: dict[str, tuple[dict[str, Any], int]] = {
    "regnet": (dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], groups_width=4), 16),
    "bit": (dict(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck", num_groups=2), 16),
    "mobilenet_v1": (dict(image_size=16, depth_multiplier=0.1, min_depth=4), 16),
    "convnextv2": (dict(patch_size=2, hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=16), 16),
    "poolformer": (dict(hidden_sizes=[8, 16], depths=[1, 1], num_encoder_blocks=2, patch_sizes=[2, 2],
                        strides=[2, 2], padding=[0, 0]), 16),
}
FAMILIES = {**ISSUE, **MORE}
SWIN = (dict(image_size=16, patch_size=2, embed_dim=8, depths=[1, 1], num_heads=[2, 2], window_size=2), 16)
CLASSES = ("blue", "green", "red")


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Every weight, bias, norm scale and running statistic drawn at random: several families initialise their
    classifier or last norms to zero, and a pruned layer's rebuilt copy must differ visibly if it is wrong."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=generator) * (2 / p[0].numel()) ** 0.5)  # He init
            else:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.1 if name.endswith("bias")
                        else torch.rand(p.shape, generator=generator) + 0.5)
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=generator) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=generator) + 0.5)
    return module.eval()


def build(family: str, *, randomize: bool = True) -> tuple[nn.Module, int]:
    """A random ``family`` classifier of three classes and its image side (``randomize=False``: transformers' own
    initialisation, as a checkpoint to train starts)."""
    from transformers import AutoConfig, AutoModelForImageClassification

    sizes, side = {**FAMILIES, "swin": SWIN}[family]
    torch.manual_seed(0)
    config = AutoConfig.for_model(family, num_channels=3, num_labels=len(CLASSES), **sizes)
    module = AutoModelForImageClassification.from_config(config)
    return (randomized(module) if randomize else module.eval()), side


def task_model(module: nn.Module, side: int) -> TaskModel:
    return TaskModel(module=module, spec={"arch": "hf"}, signature=InputSignature(kind="image",
                     image_shape=(3, side, side)), class_names=CLASSES)


def images(side: int, batch: int = 4, seed: int = 1) -> dict[str, torch.Tensor]:
    return {"input": torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(seed))}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_half_the_channels_pruned_reloads_identically_and_exports_with_parity(family: str, tmp_path: Path) -> None:
    module, side = build(family)
    model, batch = task_model(module, side), images(side)
    before = model.params
    prune_step(model, PruneConfig(targets=["channels"]), 0.5, batch)
    assert model.params < 0.75 * before, (before, model.params)
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    assert expected.shape == (4, len(CLASSES)) and expected.std(0).max() > 0  # the inputs still matter

    model.save(tmp_path / "pruned")
    structure = json.loads((tmp_path / "pruned" / "config.json").read_text())[CONFIG_KEY]
    assert structure["channels"] and structure["low_rank"] == {}
    convs = [change for change in structure["channels"].values() if "out_channels" in change["attributes"]]
    assert convs and all(change["tensors"]["weight"][0] == change["attributes"]["out_channels"] for change in convs)

    again = TaskModel.load(tmp_path / "pruned")
    assert type(again.module).__name__ == f"Pruned{type(module).__name__}" and again.params == model.params
    for (name, mine), (_, theirs) in zip(model.module.state_dict().items(), again.module.state_dict().items(),
                                         strict=True):
        assert torch.equal(mine, theirs), name
    with torch.no_grad():
        assert (call_logits(again.module, batch) - expected).abs().max() <= 1e-5
    result = export_onnx(again.module, batch, tmp_path / "pruned.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed
    session = ort.InferenceSession(str(tmp_path / "pruned.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {result.input_names[0]: batch["input"].numpy()})
    np.testing.assert_allclose(logits, expected.numpy(), atol=1e-4)


@pytest.mark.parametrize(("family", "importance", "scope"), [("convnext", "taylor", "layer"),
                                                            ("mobilenet_v2", "l1", "global")])
def test_two_steps_prune_the_pruned_model_again_and_reload(family: str, importance: str, scope: str,
                                                           tmp_path: Path) -> None:
    module, side = build(family)
    model, batch = task_model(module, side), images(side)
    labels = torch.arange(4) % len(CLASSES)
    sizes = []

    def gradients(m: nn.Module) -> None:
        nn.functional.cross_entropy(call_logits(m, batch), labels).backward()

    for _ in range(2):
        prune_step(model, PruneConfig(targets=["channels"], importance=importance, scope=scope), 0.3, batch,
                   gradients=gradients)
        sizes.append(model.params)
    assert sizes[1] < sizes[0] < count_of(build(family)[0])
    model.save(tmp_path / "pruned")
    again = TaskModel.load(tmp_path / "pruned")
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again.module, batch), call_logits(model.module.eval(), batch))


#: BiT's convs standardise their weights in the forward pass: not factorized (refused at validate).
FACTORIZED = [f if f in ISSUE else pytest.param(f, marks=pytest.mark.slow) for f in FAMILIES if f != "bit"]


@pytest.mark.parametrize("family", FACTORIZED)
def test_hybrid_steps_factorize_convs_prune_the_pairs_and_reload_identically(family: str, tmp_path: Path) -> None:
    """LadaBERT's order on an image CNN, twice: prune channels, then factorize every dense conv (and linear layer
    but the classifier) into a factor pair, then prune again through the pairs and factorize the pairs again."""
    module, side = build(family)
    model, batch = task_model(module, side), images(side)
    macs, factorized = [count_macs(model, batch)], []
    for _ in range(2):
        prune_step(model, PruneConfig(targets=["channels"]), 0.3, batch)
        factorized.append([d.name for d in factorize_task_model(model, FactorizeConfig(param_ratio=0.4)) if d.rank])
        macs.append(count_macs(model, batch))
    assert factorized[0] and any(isinstance(m, LowRankConv2d) for m in model.module.modules()), factorized
    assert macs[2] < macs[1] < macs[0], macs
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch)
    model.save(tmp_path / "hybrid")
    structure = json.loads((tmp_path / "hybrid" / "config.json").read_text())[CONFIG_KEY]
    assert set(structure["low_rank"]) >= {name for name, m in model.module.named_modules()
                                          if isinstance(m, LowRankConv2d)}
    again = TaskModel.load(tmp_path / "hybrid")
    assert again.params == model.params
    with torch.no_grad():
        assert (call_logits(again.module, batch) - expected).abs().max() <= 1e-5
    result = export_onnx(again.module, batch, tmp_path / "hybrid.onnx", load_export_target("onnx-fp32"))
    assert result.parity.passed


def test_a_factorized_conv_is_the_truncated_svd_of_its_reshaped_kernel() -> None:
    conv = nn.Conv2d(6, 10, 3, stride=2, padding=1, bias=True).double()
    pair = factorize_layer(conv, 4)
    assert isinstance(pair, LowRankConv2d) and pair.rank == 4 and pair[0].stride == (2, 2)
    singular = torch.linalg.svdvals(conv.weight.detach().flatten(1))
    error = torch.linalg.matrix_norm(dense_weight(pair) - conv.weight.detach().flatten(1)).item()
    assert error == pytest.approx(singular[4:].pow(2).sum().sqrt().item(), rel=1e-6)  # Eckart–Young
    full = factorize_layer(conv, 10)
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(full(x), conv(x))  # at full rank the pair is the conv


def test_edgekd_export_of_a_pruned_directory_rebuilds_it(tmp_path: Path) -> None:
    """``edgekd export DIR`` of a pruned model directory (was: a mismatched-sizes error from transformers)."""
    from edgekd.config.device import load_device
    from edgekd.export.source import export_source

    module, side = build("convnext")
    model = task_model(module, side)
    prune_step(model, PruneConfig(targets=["channels"]), 0.5, images(side))
    model.save(tmp_path / "pruned")
    exported = export_source(str(tmp_path / "pruned"), load_export_target("onnx-fp32"), load_device("host-cpu"),
                             tmp_path / "out", warmup=1, runs=10)
    assert exported.onnx.parity.passed and not exported.notes  # every weight read: nothing re-initialised
    session = ort.InferenceSession(str(exported.onnx.path), providers=["CPUExecutionProvider"])
    batch = images(side)
    with torch.no_grad():
        expected = call_logits(model.module.eval(), batch).numpy()
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: batch["input"].numpy()})[0],
                               expected, atol=1e-4)


def count_of(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_mobilevit_transformer_blocks_stay_whole() -> None:
    module, side = build("mobilevit")
    transformers_before = {name: count_of(m) for name, m in module.named_modules()
                           if type(m).__name__ == "MobileViTTransformer"}
    model = task_model(module, side)
    prune_step(model, PruneConfig(targets=["channels"]), 0.5, images(side))
    after = {name: count_of(m) for name, m in model.module.named_modules() if name in transformers_before}
    assert transformers_before and after == transformers_before
    assert model.params < 0.75 * count_of(build("mobilevit")[0])  # the convolutions around them are pruned


class ChannelScale(nn.Module):
    """A per-channel scale kept as a plain tensor attribute: neither a parameter nor a buffer, so pruning cannot
    narrow it and a saved directory cannot hold it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.scale = torch.linspace(0.5, 1.5, channels)[None, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def test_a_layer_whose_pruned_state_cannot_be_saved_is_refused_by_name() -> None:
    module, side = build("resnet")
    stem = module.resnet.embedder.embedder
    stem.normalization = nn.Sequential(stem.normalization, ChannelScale(stem.normalization.num_features))
    model = task_model(module, side)
    with pytest.raises(ModelError, match=r"layer 'resnet\.embedder\.embedder\.normalization\.1' \(ChannelScale\)"):
        prune_step(model, PruneConfig(targets=["channels"]), 0.5, images(side))


def test_swin_is_refused_and_its_patch_merging_would_be_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swin stays unpruned: its patch merging concatenates 2 × 2 neighbourhoods along the channels. Were it taken
    as a CNN, the rebuild check names the layer pruning breaks rather than saving a model that does not run."""
    module, side = build("swin")
    with pytest.raises(ModelError, match="a swin model cannot be pruned .*patch merging"):
        prune_step(task_model(module, side), PruneConfig(targets=["channels"]), 0.5, images(side))
    monkeypatch.setitem(families.FAMILIES, "swin", families.FAMILIES["resnet"])
    with pytest.raises(ModelError, match=r"layer 'swin\.encoder\.layers\.0\.downsample\.norm' \(LayerNorm\) does not "
                       "run after channel pruning"):
        prune_step(task_model(build("swin")[0], side), PruneConfig(targets=["channels"]), 0.5, images(side))


def test_a_heads_target_on_a_cnn_is_refused_when_pruning() -> None:
    module, side = build("resnet")
    with pytest.raises(Exception, match="targets: a resnet model prunes 'channels', not heads"):
        prune_step(task_model(module, side), PruneConfig(targets=["heads"]), 0.5, images(side))


# --------------------------------------------------------------------------- validate and a whole recipe


@pytest.fixture(scope="module")
def folders(colour_sets: Path) -> Path:  # noqa: F811 - test_image_data's fixture
    """train/ and test/ image folders of three colour classes (the image-folder source's tests' set)."""
    return colour_sets


def saved(family: str, directory: Path) -> Path:
    build(family, randomize=False)[0].save_pretrained(directory)
    return directory


def recipe_dict(root: Path, checkpoint: Path, side: int, stages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "hf-cnn", "threads": 1,
            "data": {"source": "imagefolder", "train": str(root / "train"), "test": str(root / "test"),
                     "image_size": side},
            "teacher": {"model": {"arch": "hf", "pretrained": str(checkpoint)}},
            "student": {"model": {"arch": "cnn", "channels": [8], "hidden": 16}}, "stages": stages}


TEACHER = {"stage": "teacher", "epochs": 1, "lr": 0.01, "batch_size": 16}


def _validate(tmp_path: Path, recipe: dict[str, Any]) -> Any:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return runner.invoke(app, ["validate", str(path)])


PRUNE_STAGES = {"channels-global": {"stage": "prune", "role": "teacher", "targets": ["channels"], "scope": "global"},
                "default-targets": {"stage": "prune", "role": "teacher"}}


@pytest.mark.parametrize("stage", list(PRUNE_STAGES))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_validate_accepts_channel_pruning_of_every_cnn_family(family: str, stage: str, folders: Path,
                                                             tmp_path: Path) -> None:
    stages = [TEACHER, PRUNE_STAGES[stage], {"stage": "export"}]
    recipe = recipe_dict(folders, saved(family, tmp_path / family), FAMILIES[family][1], stages)
    result = _validate(tmp_path, recipe)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("stage", "key", "fragments"), [
    ({"stage": "prune", "role": "teacher", "targets": ["heads"]}, "stages[1].targets",
     ("a 'hf' (resnet) model prunes channels, not heads",)),
    ({"stage": "prune", "role": "teacher", "targets": ["channels", "ffn"]}, "stages[1].targets",
     ("a 'hf' (resnet) model prunes channels, not ffn",)),
    ({"stage": "hybrid", "role": "teacher", "target_params_ratio": 0.5, "prune": {"targets": ["heads"]}},
     "stages[1].prune.targets", ("prunes channels, not heads",)),
], ids=["heads", "channels-and-ffn", "hybrid-heads"])
def test_validate_refuses_what_a_cnn_family_cannot_take_with_the_key(stage: dict[str, Any], key: str,
                                                                     fragments: tuple[str, ...], folders: Path,
                                                                     tmp_path: Path) -> None:
    recipe = recipe_dict(folders, saved("resnet", tmp_path / "resnet"), 16, [TEACHER, stage, {"stage": "export"}])
    _assert_one_line_error(_validate(tmp_path, recipe), key, *fragments)


def test_validate_refuses_factorizing_bit_with_the_reason(folders: Path, tmp_path: Path) -> None:
    stage = {"stage": "factorize", "role": "teacher"}
    recipe = recipe_dict(folders, saved("bit", tmp_path / "bit"), 16, [TEACHER, stage, {"stage": "export"}])
    _assert_one_line_error(_validate(tmp_path, recipe), "stages[1].stage", "cannot be factorized",
                           "standardise their weights")


def test_a_hybrid_recipe_lands_an_image_cnn_on_its_mac_target(folders: Path, tmp_path: Path) -> None:
    """teacher → hybrid (channels + conv factorization + recovery) → export → profile on a ResNet checkpoint."""
    stages = [TEACHER,
              {"stage": "hybrid", "role": "teacher", "target_macs_ratio": 0.5, "max_steps": 3,
               "prune": {"ratio": 0.3, "targets": ["channels"]}, "factorize": {"param_ratio": 0.5},
               "recovery": {"epochs": 1, "lr": 0.005, "batch_size": 16}},
              {"stage": "export"}, {"stage": "profile", "warmup": 2, "runs": 10}]
    recipe = validate_model(recipe_dict(folders, saved("resnet", tmp_path / "resnet"), 16, stages), Recipe,
                            source="test")
    result = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    hybrid = result.stages[1].metrics["teacher"]
    assert hybrid["target_reached"] and 0.3 < hybrid["macs_ratio"] <= 0.5, hybrid["macs_ratio"]
    teacher = result.artifact.get("teacher")
    reloaded = TaskModel.load(result.run_dir / teacher.weights)
    assert any(isinstance(m, LowRankConv2d) for m in reloaded.module.modules())
    session = ort.InferenceSession(str(result.run_dir / teacher.onnx), providers=["CPUExecutionProvider"])
    batch = images(16, seed=3)
    with torch.no_grad():
        expected = call_logits(reloaded.module, batch).numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch["input"].numpy()})
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


#: The default suite runs ResNet through teacher → prune → export → profile; the slow runs take every family on
#: through quantize and bundle.
E2E = [pytest.param("resnet", False, id="resnet"),
       *(pytest.param(f, True, id=f"{f}-bundled", marks=pytest.mark.slow) for f in ISSUE)]


@pytest.mark.parametrize(("family", "bundled"), E2E)
def test_recipe_trains_prunes_with_recovery_exports_and_profiles(family: str, bundled: bool, folders: Path,
                                                                 tmp_path: Path) -> None:
    side = FAMILIES[family][1]
    stages = [TEACHER,
              {"stage": "prune", "role": "teacher", "ratio": 0.5, "targets": ["channels"],
               "recovery": {"epochs": 1, "lr": 0.005, "batch_size": 16}},
              {"stage": "export"}, *([{"stage": "quantize", "roles": ["teacher"]}] if bundled else []),
              {"stage": "profile", "warmup": 2, "runs": 10}, *([{"stage": "bundle"}] if bundled else [])]
    recipe = validate_model(recipe_dict(folders, saved(family, tmp_path / family), side, stages), Recipe,
                            source="test")
    result = edgekd.run(recipe, out=tmp_path / "run", show_progress=False)
    pruned = result.stages[1].metrics["teacher"]
    assert pruned["params_ratio"] < 0.75 and pruned["accuracy"] is not None
    if family == "resnet":  # one epoch teaches it the colours (chance: 1/3); the slower learners are not judged
        assert pruned["before"]["accuracy"] > 0.5
    teacher = result.artifact.get("teacher")
    assert teacher.metrics.p50_ms is not None and teacher.metrics.params == pruned["params"]
    reloaded = TaskModel.load(result.run_dir / teacher.weights)
    assert reloaded.params == pruned["params"] and CONFIG_KEY in reloaded.module.config.to_dict()
    session = ort.InferenceSession(str(result.run_dir / teacher.onnx), providers=["CPUExecutionProvider"])
    batch = images(side, seed=3)
    with torch.no_grad():
        expected = call_logits(reloaded.module, batch).numpy()
    (logits,) = session.run(None, {session.get_inputs()[0].name: batch["input"].numpy()})
    # float32 rounding grows with the logits' scale (the export's parity gate scales its bound the same way)
    np.testing.assert_allclose(logits, expected, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    if bundled:
        assert teacher.metrics.quantization_reason  # the quantize stage judged the pruned export
        manifest = json.loads((result.run_dir / "bundle" / "manifest.json").read_text())
        assert manifest["labels"] == list(CLASSES) and manifest["model"]["format"] == "onnx"
        assert (result.run_dir / "bundle" / manifest["model"]["file"]).is_file()


def test_validate_refuses_pruning_swin_with_the_reason(folders: Path, tmp_path: Path) -> None:
    stage = {"stage": "prune", "role": "teacher", "targets": ["channels"]}
    recipe = recipe_dict(folders, saved("swin", tmp_path / "swin"), 16, [TEACHER, stage, {"stage": "export"}])
    _assert_one_line_error(_validate(tmp_path, recipe), "stages[1].stage",
                           "a 'hf' (swin) teacher has nothing structured pruning removes", "patch merging")
