"""``arch: hf`` models: built from a config, loaded with a new head, layer-dropped for every stacked family."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from pydantic import TypeAdapter

from edgekd.data.examples import InputSignature
from edgekd.errors import ConfigError, ModelError
from edgekd.models.architectures import ModelSpec
from edgekd.models.call import call_logits
from edgekd.models.hf import build_hf, drop_layers
from edgekd.models.specs import DropLayersSpec, HFSpec
from tests import hf_families
from tests.hf_families import padded_batch

TEXT = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32)
DIGITS = InputSignature(kind="image", image_shape=(1, 8, 8))
TWO = ("neg", "pos")


def spec(**fields) -> HFSpec:
    return TypeAdapter(ModelSpec).validate_python({"arch": "hf", **fields})


@pytest.mark.parametrize("family", [*hf_families.TEXT, *hf_families.IMAGE])
def test_a_config_mapping_builds_the_family_with_the_datas_sizes(family: str) -> None:
    image = family in hf_families.IMAGE
    sizes = {key: value for key, value in (hf_families.IMAGE if image else hf_families.TEXT)[family].items()
             if key not in ("vocab_size", "pad_token_id", "num_channels", "image_size")}
    model = build_hf(spec(config={"model_type": family, **sizes}), DIGITS if image else TEXT, TWO)
    assert model.config.model_type == family and model.config.id2label == {0: "neg", 1: "pos"}
    batch = {"input": torch.randn(3, 1, 8, 8)} if image else padded_batch()
    assert call_logits(model.eval(), batch).shape == (len(next(iter(batch.values()))), 2)
    if not image:
        assert model.config.vocab_size == TEXT.vocab_size and model.config.pad_token_id == TEXT.pad_id


@pytest.mark.parametrize(("labels", "notice"), [(3, "classifier replaced: 2 labels, checkpoint had 3"),
                                                (2, None)])
def test_a_head_of_another_label_count_is_replaced_with_one_line(labels: int, notice: str | None, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = hf_families.save("llama", tmp_path / "llama", num_labels=labels)
    original = hf_families.build("llama", num_labels=labels)
    with caplog.at_level(logging.DEBUG):
        model = build_hf(spec(pretrained=str(checkpoint)), TEXT, TWO)
    hf_lines = [r.getMessage() for r in caplog.records if r.name.startswith(("edgekd", "transformers"))]
    assert hf_lines == ([notice] if notice else [])
    body = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(model.state_dict()[body], original.state_dict()[body])  # the body is the checkpoint's


def test_a_headless_backbone_gets_a_classifier(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A sentence-transformers-style directory: a bare BertModel."""
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.for_model("bert", **hf_families.TEXT["bert"])
    AutoModel.from_config(config).save_pretrained(tmp_path / "backbone")
    with caplog.at_level(logging.INFO, logger="edgekd.models.hf"):
        model = build_hf(spec(pretrained=str(tmp_path / "backbone")), TEXT, TWO)
    assert caplog.messages == [f"classifier added: 2 labels ({tmp_path / 'backbone'} has no classification head)"]
    assert model.config.num_labels == 2


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
@pytest.mark.parametrize("short", ["vocabulary", "positions"])
def test_a_model_smaller_than_the_tokenizer_is_refused(family: str, short: str, tmp_path: Path) -> None:
    """Token ids beyond the embeddings, or a max_length beyond the positions: one line, checkpoint or config."""
    from transformers import AutoConfig

    positions = AutoConfig.for_model(family, **hf_families.TEXT[family]).max_position_embeddings
    vocab, length = (hf_families.VOCAB + 1, 32) if short == "vocabulary" else (hf_families.VOCAB, positions + 1)
    data = InputSignature(kind="text", vocab_size=vocab, pad_id=hf_families.PAD, max_length=length)
    expected = (f"its vocabulary has {hf_families.VOCAB} tokens, fewer than the tokenizer's {vocab}"
                if short == "vocabulary" else f"it takes at most {positions} tokens, fewer than the tokenizer's "
                f"max_length {length}")
    checkpoint = hf_families.save(family, tmp_path / family)
    with pytest.raises(ModelError, match=f"^pretrained model '{checkpoint}': {expected}"):
        build_hf(spec(pretrained=str(checkpoint)), data, TWO)
    with pytest.raises(ModelError, match=f"^model config \\(model_type {family}\\): {expected}"):
        build_hf(spec(config={"model_type": family, **hf_families.TEXT[family]}), data, TWO)


def test_images_of_other_channels_are_refused(tmp_path: Path) -> None:
    checkpoint = hf_families.save("vit", tmp_path / "vit", num_channels=3)
    with pytest.raises(ConfigError, match=f"^pretrained model '{checkpoint}': takes 3-channel images, the data has 1$"):
        build_hf(spec(pretrained=str(checkpoint)), DIGITS, TWO)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta", "gpt2", "llama", "qwen2", "vit"])
def test_drop_layers_copies_the_kept_layers_and_reloads(family: str, tmp_path: Path) -> None:
    teacher = hf_families.build(family, num_labels=2)
    student = drop_layers(teacher, DropLayersSpec(arch="drop_layers", keep=[1]))
    assert student.config.num_hidden_layers == 1
    teacher_layer_1 = {k.replace(".1.", ".0.", 1): v for k, v in teacher.state_dict().items() if ".1." in k}
    copied = {k: v for k, v in student.state_dict().items() if k in teacher_layer_1}
    assert copied and all(torch.equal(v, teacher_layer_1[k]) for k, v in copied.items())
    student.save_pretrained(tmp_path / "student")
    again = type(student).from_pretrained(tmp_path / "student").eval()
    batch = {"input": torch.randn(2, 1, 8, 8)} if family in hf_families.IMAGE else padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again, batch), call_logits(student.eval(), batch))


def test_drop_layers_cuts_every_per_layer_list_of_the_config(tmp_path: Path) -> None:
    """SmolLM3 lists which layers skip the rotary embedding (``no_rope_layers``) beside ``layer_types``: only the
    latter was cut, so a student keeping layers 0 and 3 reloaded its layer 1 with the teacher's layer-1 flag."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    torch.manual_seed(0)
    config = AutoConfig.for_model("smollm3", num_labels=2, **{**hf_families.TEXT["llama"], "num_hidden_layers": 4},
                                  no_rope_layers=[1, 1, 1, 0], image_size=[8, 8, 8, 8])  # not per layer: kept
    teacher = AutoModelForSequenceClassification.from_config(config).eval()
    student = drop_layers(teacher, DropLayersSpec(arch="drop_layers", keep=[0, 3]))
    assert student.config.no_rope_layers == [1, 0] and len(student.config.layer_types) == 2
    assert student.config.image_size == [8, 8, 8, 8]
    student.save_pretrained(tmp_path / "student")
    again = type(student).from_pretrained(tmp_path / "student").eval()
    batch = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again, batch), call_logits(student.eval(), batch))


@pytest.mark.parametrize("family", list(hf_families.BACKBONE_IMAGE))
@pytest.mark.parametrize(("keep", "stages", "outputs"), [
    ([0, 2], ["stem", "stage1", "stage2"], [1, 2]),  # the layers of both output stages kept: still output
    ([1], ["stem", "stage1"], [1]),  # neither kept: the last stage, transformers' default
])
def test_drop_layers_of_a_backbone_config_cuts_its_stages_and_reloads(family: str, keep: list[int], stages: list[str],
                                                                      outputs: list[int], tmp_path: Path) -> None:
    """BEiT's and DINOv2's configs derive stage names and output stages from the depth: a student keeping the
    teacher's (out_features beyond its stages) was saved, then refused by transformers when the next stage loaded it."""
    from transformers import AutoModelForImageClassification

    teacher = hf_families.build(family)
    student = drop_layers(teacher, DropLayersSpec(arch="drop_layers", keep=keep))
    assert (student.config.stage_names, student.config.out_indices) == (stages, outputs)
    student.save_pretrained(tmp_path / "student")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "student").eval()
    images = {"input": torch.randn(2, 1, 8, 8)}
    with torch.no_grad():
        torch.testing.assert_close(call_logits(again, images), call_logits(student.eval(), images))


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("family", ["bert", "llama", "vit"])
def test_a_half_precision_checkpoint_loads_in_float32(stored: torch.dtype, family: str, tmp_path: Path) -> None:
    """Weights saved in fp16/bf16 train and export in float32: half-precision training overflows to NaN and
    onnxruntime has no CPU kernels for bf16 adds. The values are the checkpoint's, cast."""
    saved = hf_families.build(family, num_labels=2).to(stored)
    saved.save_pretrained(tmp_path / family)
    image = family in hf_families.IMAGE
    model = build_hf(spec(pretrained=str(tmp_path / family)), DIGITS if image else TEXT, TWO)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}
    name, tensor = next(iter(saved.state_dict().items()))
    torch.testing.assert_close(model.state_dict()[name], tensor.float())
    batch = {"input": torch.randn(3, 1, 8, 8)} if image else padded_batch()
    assert call_logits(model.eval(), batch).dtype == torch.float32


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_a_half_precision_causal_lm_loads_in_float32(stored: torch.dtype, tmp_path: Path) -> None:
    from edgekd.data.corpus import build_char_tokenizer
    from edgekd.models.causal_lm import build_causal_lm, causal_lm_from_spec

    tokenizer = build_char_tokenizer("hello world")
    saved = build_causal_lm("llama", vocab_size=len(tokenizer), context=16, layers=1, width=16, heads=2).to(stored)
    saved.save_pretrained(tmp_path)
    model = causal_lm_from_spec(spec(pretrained=str(tmp_path)), tokenizer, 16, "teacher.model")
    assert {parameter.dtype for parameter in model.parameters()} == {torch.float32}


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "distilbert", "vit"])
def test_a_head_naming_the_datas_classes_in_another_order_is_reordered(family: str, tmp_path: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint fine-tuned with {0: 'POS ', 1: 'neg'} on data whose classes are ('neg', 'pos'): output 0 must
    still mean 'neg', so the head's rows are swapped (names compared without case and spaces)."""
    image = family in hf_families.IMAGE
    labels = {"id2label": {0: "POS ", 1: "neg"}, "label2id": {"POS ": 0, "neg": 1}}
    original = hf_families.build(family, num_labels=2, **labels).eval()
    original.save_pretrained(tmp_path / family)
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / family)), DIGITS if image else TEXT, TWO).eval()
    assert caplog.messages == [f"classifier rows reordered to the data's classes ['neg', 'pos'] "
                               f"({tmp_path / family} had ['POS ', 'neg'])"]
    batch = {"input": torch.randn(3, 1, 8, 8)} if image else padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model, batch), call_logits(original, batch)[:, [1, 0]])


def test_a_head_naming_other_classes_is_taken_in_order_with_one_line(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    labels = {"id2label": {0: "BAD", 1: "GOOD"}, "label2id": {"BAD": 0, "GOOD": 1}}
    original = hf_families.build("bert", num_labels=2, **labels).eval()
    original.save_pretrained(tmp_path / "bert")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, TWO).eval()
    assert caplog.messages == [f"{tmp_path / 'bert'} labels its outputs ['BAD', 'GOOD'], not the data's "
                               "classes: taken in order ('neg' ← 'BAD', 'pos' ← 'GOOD')"]
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model, padded_batch()), call_logits(original, padded_batch()))


@pytest.mark.parametrize(("saved", "columns"), [(("positive", "negative"), [1, 0]), (("Negative", "Positive"), [0, 1])])
def test_a_head_naming_the_datas_classes_in_full_is_matched_by_name(saved: tuple[str, str], columns: list[int],
                                                                    tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The data says 'neg'/'pos', the checkpoint 'positive'/'negative': taken in order, output 0 ('neg') was the
    checkpoint's 'positive' (every prediction inverted). Each class is matched to the label it starts."""
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    original = hf_families.build("bert", num_labels=2, **labels).eval()
    original.save_pretrained(tmp_path / "bert")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, TWO).eval()
    assert "taken in order" not in " ".join(caplog.messages)
    with torch.no_grad():
        expected = call_logits(original, padded_batch())[:, columns]
        torch.testing.assert_close(call_logits(model, padded_batch()), expected)


@pytest.mark.parametrize("family", ["bert", "vit", "convnext"])
def test_a_head_of_more_named_classes_keeps_the_datas_rows(family: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint fine-tuned on four classes, data of two of them: the head keeps those two outputs (in the
    data's order) instead of being replaced by a random one, and the model reloads with two labels."""
    saved = ["owl", "POS", "cat", "neg"]
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    original = hf_families.build(family, num_labels=4, **labels).eval()
    original.save_pretrained(tmp_path / family)
    image = family in hf_families.IMAGE
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / family)), DIGITS if image else TEXT, TWO).eval()
    assert caplog.messages == [f"classifier kept for the data's 2 classes of the checkpoint's 4 ({tmp_path / family})"
                               ": 'neg' ← 'neg', 'pos' ← 'POS'"]
    batch = {"input": torch.randn(3, 1, 8, 8)} if image else padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model, batch), call_logits(original, batch)[:, [3, 1]])
    model.save_pretrained(tmp_path / "kept")
    reloaded = build_hf(spec(pretrained=str(tmp_path / "kept")), DIGITS if image else TEXT, TWO).eval()
    assert reloaded.config.id2label == {0: "neg", 1: "pos"}
    with torch.no_grad():
        torch.testing.assert_close(call_logits(reloaded, batch), call_logits(model, batch))


@pytest.mark.parametrize("per_token", [True, False], ids=["sentence-head-per-token", "token-head-per-sentence"])
def test_a_head_of_another_kind_is_not_loaded_into_the_added_one(per_token: bool, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """BERT's sentence and token classifiers are both 'classifier' of the same shape: the log said 'classifier
    added' while the checkpoint's other head was loaded into it, its rows meaning other classes."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    torch.manual_seed(0)
    config = AutoConfig.for_model("bert", num_labels=2, **hf_families.TEXT["bert"])
    auto = AutoModelForSequenceClassification if per_token else AutoModelForTokenClassification
    saved = auto.from_config(config)
    with torch.no_grad():
        saved.classifier.weight.fill_(0.5)
    saved.save_pretrained(tmp_path / "bert")
    signature = InputSignature(kind="text", vocab_size=hf_families.VOCAB, pad_id=hf_families.PAD, max_length=32,
                               per_token=per_token)
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / "bert")), signature, TWO)
    kind = "token classification" if per_token else "classification"
    assert caplog.messages == [f"classifier added: 2 labels ({tmp_path / 'bert'} has no {kind} head)"]
    assert not torch.equal(model.classifier.weight, saved.classifier.weight)
    embeddings = model.bert.embeddings.word_embeddings.weight
    torch.testing.assert_close(embeddings, saved.bert.embeddings.word_embeddings.weight)
    assert 0.005 < model.classifier.weight.std().item() < 0.05


@pytest.mark.parametrize("problem_type", ["regression", "multi_label_classification"])
def test_a_checkpoints_problem_type_is_not_kept_for_the_datas_task(problem_type: str, tmp_path: Path) -> None:
    """A checkpoint fine-tuned for another task would make transformers' pipelines read the distilled model's
    saved config with its old post-processing (identity or sigmoid instead of softmax)."""
    hf_families.build("bert", num_labels=2, problem_type=problem_type).save_pretrained(tmp_path / "bert")
    model = build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, TWO)
    assert model.config.problem_type is None
    model.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text()).get("problem_type") is None


@pytest.mark.parametrize(("saved", "classes", "columns"), [
    (("2", "10"), ("1", "2"), None),  # '1' is not '10': a digit continues it
    (("class_2", "class_10"), ("class_1", "class_2"), None),
    (("postal", "positive"), ("pos", "postal"), [1, 0]),  # 'postal' is its own class: 'pos' is 'positive'
    (("v2", "u"), ("u", "v"), None),
])
def test_a_start_of_a_name_continued_by_a_digit_or_claimed_names_no_class(
        saved: tuple[str, str], classes: tuple[str, str], columns: list[int] | None, tmp_path: Path) -> None:
    """Class '1' started by the checkpoint's '10' would take that output for '1' (rows swapped): numbers are not
    abbreviated, so nothing is matched and the outputs are taken in order; a label equal to a class is not also
    the start of another's name."""
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    original = hf_families.build("bert", num_labels=2, **labels).eval()
    original.save_pretrained(tmp_path / "bert")
    model = build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, classes).eval()
    with torch.no_grad():
        expected = call_logits(original, padded_batch())[:, columns or [0, 1]]
        torch.testing.assert_close(call_logits(model, padded_batch()), expected)


def test_a_partly_named_head_taken_in_order_is_warned_of_in_one_line(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """'neg' is the checkpoint's output 1 ('negative') but 'neutral' names none: the outputs are taken in order,
    so 'neg' gets 'positive'; one warning says so, naming the output that does name it."""
    labels = {"id2label": {0: "positive", 1: "negative"}, "label2id": {"positive": 0, "negative": 1}}
    hf_families.build("bert", num_labels=2, **labels).save_pretrained(tmp_path / "bert")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, ("neg", "neutral"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [(
        "WARNING", f"{tmp_path / 'bert'} labels its outputs ['positive', 'negative'], naming only some of the data's "
        "classes: taken in order ('neg' ← 'positive', 'neutral' ← 'negative'), though by name 'neg' is its output 1 "
        "'negative'")]


def test_a_larger_head_is_not_cut_to_labels_that_only_start_like_a_class(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Among many labels another word starts like a class ('cat' starts 'catamaran'): a larger head keeps rows only
    for labels equal to the classes, else it is replaced."""
    saved = ["catamaran", "dogsled", "owl", "tabby"]
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    hf_families.build("vit", num_labels=4, **labels).save_pretrained(tmp_path / "vit")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = build_hf(spec(pretrained=str(tmp_path / "vit")), DIGITS, ("cat", "dog"))
    assert model.config.num_labels == 2 and "kept" not in " ".join(caplog.messages)
    assert caplog.messages == ["classifier replaced: 2 labels, checkpoint had 4"]


@pytest.mark.parametrize(("saved", "note"), [
    (["owl", "neg", "cat"], " (its labels name 'neg' but not 'pos')"),  # more outputs, one class missing
    (["LABEL_0", "LABEL_1", "LABEL_2"], ""),  # placeholders name nothing
])
def test_a_replaced_head_says_which_classes_its_labels_name(saved: list[str], note: str, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A head of three labels naming 'neg' but not 'pos' cannot keep rows for both: it is replaced, and the one
    line says which class was found and which was not (the user may have a misspelt folder)."""
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    hf_families.build("bert", num_labels=3, **labels).save_pretrained(tmp_path / "bert")
    with caplog.at_level(logging.INFO, logger="edgekd"):
        build_hf(spec(pretrained=str(tmp_path / "bert")), TEXT, TWO)
    assert caplog.messages == [f"classifier replaced: 2 labels, checkpoint had 3{note}"]


def test_a_larger_head_keeps_rows_of_labels_listing_the_class_among_synonyms(tmp_path: Path) -> None:
    """ImageNet's labels list synonyms ('tabby, tabby cat'; 'goldfish, Carassius auratus'): folders 'tabby_cat' and
    'goldfish' keep those outputs."""
    saved = ["goldfish, Carassius auratus", "tabby, tabby cat", "tiger cat", "catamaran"]
    labels = {"id2label": dict(enumerate(saved)), "label2id": {name: i for i, name in enumerate(saved)}}
    original = hf_families.build("vit", num_labels=4, **labels).eval()
    original.save_pretrained(tmp_path / "vit")
    model = build_hf(spec(pretrained=str(tmp_path / "vit")), DIGITS, ("goldfish", "tabby_cat")).eval()
    batch = {"input": torch.randn(3, 1, 8, 8)}
    with torch.no_grad():
        torch.testing.assert_close(call_logits(model, batch), call_logits(original, batch)[:, [0, 1]])


def test_labels_in_another_order_without_a_head_layer_to_permute_are_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint whose labels name the data's classes in another order, in a model with no linear head of that
    width to permute, starts with every output mapped to another class: said as a warning, not an info line."""
    from edgekd.models.head_labels import match_head_labels

    module = torch.nn.Sequential(torch.nn.Conv1d(4, 2, 1))
    with caplog.at_level("INFO", logger="edgekd"):
        match_head_labels(module, {0: "positive", 1: "negative"}, ("negative", "positive"), "ckpt")
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and "head layer was not found" in warned[0].getMessage()
    assert "wrong classes until trained" in warned[0].getMessage()


def test_a_checkpoint_loads_with_the_tables_its_class_freezes_frozen_and_its_heads_prune(tmp_path: Path) -> None:
    """transformers loads every saved tensor as trainable: RoFormer's sinusoidal position table (frozen when its class
    builds it) was trained, and Torch-Pruning, seeing it trainable beside every head's query and key, pruned no
    head of a RoFormer loaded from a checkpoint (one built from a config lost half its heads)."""
    from edgekd.models.task_model import TaskModel
    from edgekd.prune.config import PruneConfig
    from edgekd.prune.structured import prune_step

    config = {"model_type": "roformer", **hf_families.TEXT["bert"], "num_attention_heads": 2, "hidden_size": 32}
    module = build_hf(spec(config=config), TEXT, TWO)
    module.save_pretrained(tmp_path / "roformer")
    loaded = build_hf(spec(pretrained=str(tmp_path / "roformer")), TEXT, TWO)
    table = loaded.roformer.encoder.embed_positions.weight
    assert not table.requires_grad and not module.roformer.encoder.embed_positions.weight.requires_grad
    model = TaskModel(module=loaded, spec={"arch": "hf"}, signature=TEXT, class_names=TWO)
    again = TaskModel.load(model.save(tmp_path / "saved"))
    assert not again.module.roformer.encoder.embed_positions.weight.requires_grad
    prune_step(again, PruneConfig(targets=["heads"], importance="l2"), 0.5, padded_batch())
    assert [layer.attention.self.query.out_features for layer in again.module.roformer.encoder.layer] == [16, 16]


def test_a_model_edgekd_pruned_loads_as_pruned_and_a_misfit_checkpoint_is_refused(tmp_path: Path) -> None:
    """Both were loaded with transformers' ignore_mismatched_sizes (meant for the classification head): a directory
    edgekd pruned came back at its original widths with the pruned layers drawn at random (a teacher at chance), and
    a checkpoint whose config.json gives other widths than its weights (a BERT pruned by transformers 4's prune_heads
    records pruned_heads, which the model class does not rebuild) got those layers drawn at random."""
    from edgekd.models.task_model import TaskModel
    from edgekd.prune.config import PruneConfig
    from edgekd.prune.structured import prune_step

    teacher = TaskModel(module=hf_families.build("bert", num_labels=2), spec={"arch": "hf"}, signature=TEXT,
                        class_names=TWO)
    prune_step(teacher, PruneConfig(targets=["heads", "ffn"], importance="l2"), 0.5, padded_batch())
    directory = teacher.save(tmp_path / "pruned")
    loaded = build_hf(spec(pretrained=str(directory)), TEXT, TWO).eval()
    assert sum(p.numel() for p in loaded.parameters()) == teacher.params
    with torch.no_grad():
        torch.testing.assert_close(call_logits(loaded, padded_batch()), call_logits(teacher.module.eval(),
                                                                                    padded_batch()))
    hf_families.build("bert", num_labels=2).save_pretrained(tmp_path / "edited")
    config = json.loads((tmp_path / "edited" / "config.json").read_text())
    (tmp_path / "edited" / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    with pytest.raises(ModelError, match=r"^pretrained model '.*edited': its weights do not fit its config.json: "
                                         r"bert.encoder.layer.0.intermediate.dense.bias is \[37\] in the weights but "
                                         r"\[40\] by config.json"):
        build_hf(spec(pretrained=str(tmp_path / "edited")), TEXT, TWO)
    three = build_hf(spec(pretrained=str(directory)), TEXT, ("neg", "pos", "new"))  # a replaced head is no misfit
    assert call_logits(three.eval(), padded_batch()).shape[-1] == 3
