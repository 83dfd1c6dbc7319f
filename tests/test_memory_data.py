"""Data given in Python as Dataset/DataLoader objects: trained on, fingerprinted by content, refused in one line.

Images are scikit-learn's digits as a ``TensorDataset``; text is token ids in dicts (``input_ids``,
``attention_mask``, ``labels``) where one token decides the label, padded to a fixed width or per batch.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

import edgekd
from edgekd import Bundle, Distill, Export, Pipeline, Profile, Teacher
from edgekd.data.config import MemoryData, NpzData
from edgekd.data.memory import held, register_data
from edgekd.data.task_data import prepare_task_data
from edgekd.errors import ConfigError, DataError, EdgekdError

CNN = "tests.user_modules:small_cnn"
WORDS = "tests.user_modules:bag_of_words"
PAD, VOCAB = 0, 60


def _digits(limit: int = 700) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.tensor(bunch.images[:limit] / 16.0, dtype=torch.float32)[:, None]
    return images, torch.tensor(bunch.target[:limit])


def _image_sets(**changes: Any) -> dict[str, Any]:
    images, labels = _digits()
    sets = {"train": TensorDataset(images[:560], labels[:560]), "test": TensorDataset(images[560:], labels[560:])}
    return {**sets, **changes}


def _pipeline(data: dict[str, Any], stages: list[Any] | None = None, **changes: Any) -> Pipeline:
    parts = {"name": "memory", "data": data, "teacher": CNN, "student": CNN, "threads": 1,
             "stages": stages or [Teacher(epochs=3, lr=0.02), Distill(epochs=3, lr=0.02), Export(),
                                  Profile(warmup=2, runs=20)]}
    return Pipeline(**{**parts, **changes})


def test_a_tensor_dataset_trains_exports_and_profiles_and_a_rerun_resumes(tmp_path: Path) -> None:
    images, labels = _digits()
    shuffled = DataLoader(TensorDataset(images[560:], labels[560:]), batch_size=16, shuffle=True)
    pipeline = _pipeline({"train": TensorDataset(images[:560], labels[:560]), "test": shuffled},
                         student={"arch": "module", "factory": CNN, "kwargs": {"width": 8}})
    result = pipeline.run(tmp_path / "run")
    metrics = {record.stage: record.metrics for record in result.stages}
    assert metrics["teacher"]["teacher"]["accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert metrics["distill"]["student"]["accuracy"] > 0.5
    assert metrics["export"]["student"]["parity"]["passed"]
    assert metrics["profile"]["student"]["input_shapes"]["input"][1:] == [1, 8, 8]  # the data's example shape
    again = _pipeline({"train": TensorDataset(images[:560].clone(), labels[:560].clone()),
                       "test": DataLoader(TensorDataset(images[560:], labels[560:]), batch_size=7)},
                      student={"arch": "module", "factory": CNN, "kwargs": {"width": 8}})
    assert [p.status for p in again.plan(tmp_path / "run")] == ["cached"] * 4  # the same content, other objects
    assert all(record.skipped for record in again.run(tmp_path / "run").stages)
    changed = labels[:560].clone()
    changed[3] = (changed[3] + 1) % 10  # one label of 560
    edited = _pipeline({"train": TensorDataset(images[:560], changed), "test": shuffled},
                       student={"arch": "module", "factory": CNN, "kwargs": {"width": 8}})
    assert edited.recipe.data.digest != pipeline.recipe.data.digest
    plans = edited.plan(tmp_path / "run")
    assert [p.status for p in plans] == ["re-runs"] * 4
    assert any("data.digest" in change for change in plans[0].changes), plans[0].changes
    assert edgekd.open_run(tmp_path / "run").recipe.data == pipeline.recipe.data


def test_the_digest_is_the_content_not_the_batching_order_or_object() -> None:
    images, labels = _digits(300)
    base = register_data({"train": TensorDataset(images, labels), "test": TensorDataset(images, labels)}, "t")
    loaders = {"train": DataLoader(TensorDataset(images, labels), batch_size=13, shuffle=True),
               "test": DataLoader(TensorDataset(images.clone(), labels), batch_size=300)}
    assert register_data(loaders, "t") == base
    nudged = images.clone()
    nudged[-1, 0, 0, 0] += 1e-3
    for sets in ({"train": TensorDataset(nudged, labels), "test": TensorDataset(images, labels)},
                 {"train": TensorDataset(images, labels), "test": TensorDataset(nudged, labels)},
                 {"train": TensorDataset(images, labels), "test": TensorDataset(images, labels),
                  "val": TensorDataset(images[:50], labels[:50])}):
        assert register_data(sets, "t")["digest"] != base["digest"]


def test_a_loader_split_by_samplers_is_read_as_its_sampler_reads(caplog: pytest.LogCaptureFixture) -> None:
    """One dataset split by SubsetRandomSampler was read in full for every set: the test set was the training set."""
    from torch.utils.data import BatchSampler, SubsetRandomSampler, WeightedRandomSampler

    images, labels = _digits(400)
    full = TensorDataset(images, labels)
    split = {"train": DataLoader(full, batch_size=32, sampler=SubsetRandomSampler(range(300))),
             "test": DataLoader(full, batch_size=32, sampler=SubsetRandomSampler(range(300, 400)))}
    exact = {"train": TensorDataset(images[:300], labels[:300]), "test": TensorDataset(images[300:], labels[300:])}
    assert register_data(split, "t") == register_data(exact, "t")
    batched = {"train": DataLoader(full, batch_sampler=BatchSampler(SubsetRandomSampler(range(300)), 7, True)),
               "test": DataLoader(full, batch_sampler=[list(range(300, 350)), list(range(350, 400))])}
    assert register_data(batched, "t") == register_data(exact, "t")  # drop_last loses nothing either
    unbatched = {"train": DataLoader(full, batch_size=None, sampler=SubsetRandomSampler(range(300))),
                 "test": exact["test"]}
    assert register_data(unbatched, "t") == register_data(exact, "t")
    weighted = DataLoader(full, batch_size=32, sampler=WeightedRandomSampler([1.0] * 400, 100))
    with caplog.at_level(logging.WARNING, logger="edgekd.data.memory"):
        whole = register_data({"train": weighted, "test": exact["test"]}, "t")
    assert whole == register_data({"train": full, "test": exact["test"]}, "t")
    assert "WeightedRandomSampler draws examples with replacement" in caplog.text


def test_lists_and_generators_of_examples_are_sets_like_a_dataset() -> None:
    """A list of (image, label) pairs was refused as 'not a Dataset', and a mapping of generators was read as a data
    config ('data.source: required key is missing')."""
    images, labels = _digits(300)
    base = register_data({"train": TensorDataset(images, labels), "test": TensorDataset(images, labels)}, "t")
    listed = {"train": list(zip(images, labels, strict=True)),
              "test": ((x, y) for x, y in zip(images, labels, strict=True))}
    assert register_data(listed, "t") == base
    plain = {"train": ((x, int(y)) for x, y in zip(images, labels, strict=True)),
             "test": tuple(zip(images, labels.tolist(), strict=True))}
    pipeline = _pipeline(plain, stages=[Teacher(epochs=1)])
    assert pipeline.recipe.data.digest == base["digest"]


def test_an_npz_file_of_one_class_is_refused(tmp_path: Path) -> None:
    """A single-class npz trained a constant model reported at 100% accuracy, exit 0."""
    import numpy as np

    np.savez(tmp_path / "one.npz", inputs=np.random.default_rng(0).random((40, 1, 4, 4), dtype=np.float32),
             labels=np.zeros(40, dtype=np.int64))
    with pytest.raises(DataError, match=r"one.npz: every training example has class 0; expected at least 2 classes"):
        prepare_task_data(NpzData(source="npz", path=tmp_path / "one.npz"), seed=0)


class WithMetadata(Dataset):
    """``base``'s dict rows with what a ``datasets`` row carries beside them: its text and its index."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {**self.base[index], "sentence": f"row {index}", "idx": index}


def test_a_dict_rows_metadata_is_left_out_and_a_drop_last_loader_gives_every_example(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Hugging Face dataset's rows hold their text and ``idx`` beside the token ids (was: refused, 'input
    'sentence' is list'); a sequential DataLoader with ``drop_last`` lost its last partial batch (a shuffling one
    did not): both give the same content, hence the same digest, as the plain set."""
    tokens = TokenDicts(90, seed=1)
    base = register_data({"train": tokens, "test": TokenDicts(30, seed=2)}, "t")
    with caplog.at_level(logging.INFO, logger="edgekd.data.memory"):
        assert register_data({"train": WithMetadata(tokens), "test": TokenDicts(30, seed=2)}, "t") == base
    assert "data.train: fields idx, sentence left out" in caplog.text
    for shuffle in (False, True):
        loader = DataLoader(tokens, batch_size=16, drop_last=True, shuffle=shuffle)
        assert register_data({"train": loader, "test": TokenDicts(30, seed=2)}, "t") == base
    images, labels = _digits(100)
    pixels = Items([{"pixel_values": image, "labels": label, "idx": i, "path": f"{i}.png"}
                    for i, (image, label) in enumerate(zip(images, labels, strict=True))])
    assert register_data({"train": pixels, "test": TensorDataset(images, labels)}, "t") == register_data(
        {"train": TensorDataset(images, labels), "test": TensorDataset(images, labels)}, "t")


@pytest.mark.parametrize(("fraction", "seed"), [(0.15, 0), (0.3, 0), (0.15, 5)])
def test_validation_is_split_from_train_when_absent_seeded_and_disjoint(fraction: float, seed: int) -> None:
    images, labels = _digits(200)
    ids = torch.arange(200, dtype=torch.float32)[:, None, None, None].expand(-1, 1, 8, 8).contiguous()
    config = MemoryData(val_fraction=fraction, **register_data(
        {"train": TensorDataset(ids, labels), "test": TensorDataset(images[:20], labels[:20])}, "t"))
    data = prepare_task_data(config, seed)
    train, val = data.train.images[:, 0, 0, 0].long(), data.val.images[:, 0, 0, 0].long()
    assert len(val) == round(200 * fraction) and len(train) + len(val) == 200
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert torch.equal(prepare_task_data(config, seed).val.images, data.val.images)  # seeded: the same again
    assert not torch.equal(prepare_task_data(config, seed + 1).val.images, data.val.images)
    given = MemoryData(**register_data({"train": TensorDataset(ids, labels), "test": TensorDataset(ids, labels),
                                        "val": TensorDataset(ids[:9], labels[:9])}, "t"))
    assert len(prepare_task_data(given, seed).train) == 200 and len(prepare_task_data(given, seed).val) == 9


class TokenDicts(Dataset):
    """Dicts of token ids, each padded to ``width`` (as a tokenizer with ``padding='max_length'`` gives)."""

    def __init__(self, count: int, seed: int, width: int = 12) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(0, 2, (count,), generator=generator)
        self.lengths = torch.randint(3, width, (count,), generator=generator)
        self.ids = torch.randint(3, VOCAB, (count, width), generator=generator)
        rows = torch.arange(count)
        self.ids[rows, torch.randint(0, 3, (count,), generator=generator)] = self.labels + 1  # the deciding token
        self.mask = (torch.arange(width)[None] < self.lengths[:, None]).long()
        self.ids[self.mask == 0] = PAD

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": self.mask[index], "labels": self.labels[index]}


def _pad_per_batch(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """A collate_fn padding each batch to its longest row only (as DataCollatorWithPadding does)."""
    width = max(int(row["attention_mask"].sum()) for row in rows)
    return {"input_ids": torch.stack([row["input_ids"][:width] for row in rows]),
            "attention_mask": torch.stack([row["attention_mask"][:width] for row in rows]),
            "labels": torch.stack([row["labels"] for row in rows])}


def test_unpadded_token_ids_and_a_datasets_dataset_are_read_as_the_padded_rows() -> None:
    """Token-id rows of different lengths (a tokenized datasets.Dataset, a Dataset returning unpadded tensors) failed
    in torch.stack with a traceback, and a datasets.Dataset was refused as not a torch Dataset."""
    datasets = pytest.importorskip("datasets")
    padded = TokenDicts(40, seed=3)
    rows = [{"input_ids": padded.ids[i][: int(padded.lengths[i])].tolist(), "label": int(padded.labels[i]),
             "sentence": f"row {i}"} for i in range(40)]
    fixed = register_data({"train": padded, "test": padded}, "t")
    table = datasets.Dataset.from_list(rows)
    assert register_data({"train": table, "test": table}, "t") == fixed
    table.set_format("torch", columns=["input_ids", "label"])
    assert register_data({"train": table, "test": Items([{**row, "input_ids": torch.tensor(row["input_ids"])}
                                                         for row in rows])}, "t") == fixed


class Failing(Dataset):
    """A dataset whose fourth example cannot be read."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if index == 3:
            raise KeyError("image 3.png")
        return IMAGES[index], int(LABELS[index])


def test_a_set_that_fails_while_read_is_one_line_naming_it() -> None:
    """An exception in the user's __getitem__ or collate_fn came out of edgekd as a traceback."""
    with pytest.raises(DataError, match=r"^data.train: reading its examples failed: KeyError: 'image 3.png'$"):
        register_data({"train": Failing(), "test": GOOD}, "t")
    ragged = DataLoader(Items([(torch.zeros(3), 1), (torch.zeros(4), 0)]), batch_size=2)
    with pytest.raises(DataError, match=r"^data.test: reading its examples failed: RuntimeError: stack expects"):
        register_data({"train": GOOD, "test": ragged}, "t")


def test_token_id_dicts_train_a_text_module_and_export_with_parity(tmp_path: Path) -> None:
    train = TokenDicts(400, seed=1)
    sets = {"train": train, "test": DataLoader(TokenDicts(80, seed=2), batch_size=16, collate_fn=_pad_per_batch)}
    fixed = register_data({"train": train, "test": TokenDicts(80, seed=2)}, "t")
    assert register_data(sets, "t") == fixed  # padding is dropped: the same content, the same digest
    assert fixed["kind"] == "text"
    pipeline = Pipeline(name="memory-text", data=sets, threads=1,
                        teacher={"arch": "module", "factory": WORDS, "kwargs": {"dim": 32, "vocab": VOCAB}},
                        student={"arch": "module", "factory": WORDS, "kwargs": {"dim": 8, "vocab": VOCAB}},
                        stages=[Teacher(epochs=8, lr=0.05), Distill(epochs=8, lr=0.05), Export(), Profile(runs=10),
                                Bundle()])
    result = pipeline.run(tmp_path / "run")
    metrics = {record.stage: record.metrics for record in result.stages}
    assert metrics["teacher"]["teacher"]["accuracy"] > 0.8  # one token decides the label
    assert metrics["distill"]["student"]["accuracy"] > 0.7
    assert metrics["export"]["student"]["parity"]["passed"]
    signature = held(pipeline.recipe.data)
    assert (signature.pad_id, signature.vocab_size) == (PAD, VOCAB)
    # the bundle's manifest told apps to strip the text and use the bundled tokenizer: there is neither
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["tokenizer"] is None and not (tmp_path / "run" / "bundle" / "tokenizer").exists()
    assert manifest["preprocessing"]["pad_id"] == PAD and "strip" not in manifest["preprocessing"]
    assert manifest["preprocessing"]["note"].startswith("token ids, as the sets given in Python held them (edgekd "
                                                        "saw no text and bundles no tokenizer)")
    with pytest.raises(ConfigError, match=r"stages\[1\]\.augment: augmentation makes new sentences from raw text"):
        Pipeline(name="memory-text", data=sets, teacher=WORDS, student=WORDS,
                 stages=[Teacher(epochs=1), Distill(epochs=1, augment={"copies": 1})]).plan(tmp_path / "aug")


def _ids(count: int = 8, **extra: torch.Tensor) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": torch.tensor([5, 6, 7]), "labels": torch.tensor(1), **extra} for _ in range(count)]


class Items(Dataset):
    """Whatever ``items`` holds, one per index."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Any:
        return self.items[index]


IMAGES, LABELS = torch.rand(12, 1, 8, 8), torch.arange(12) % 3
GOOD = TensorDataset(IMAGES, LABELS)

BAD_DATA: list[tuple[str, dict[str, Any], type[EdgekdError], tuple[str, ...]]] = [
    ("no-test", {"train": GOOD}, ConfigError, ("data: expected the sets 'train' and 'test'", "'train'")),
    ("unknown-set", {"train": GOOD, "test": GOOD, "dev": GOOD}, ConfigError, ("'dev'",)),
    ("not-a-dataset", {"train": GOOD, "test": 5}, ConfigError, ("data.test", "expected a torch Dataset", "int")),
    ("generators-only", {"train": iter([]), "test": iter([])}, DataError, ("data.train: no examples",)),
    ("nan-input", {"train": TensorDataset(torch.where(torch.arange(12)[:, None, None, None] == 7, torch.nan, IMAGES),
                                          LABELS), "test": GOOD}, DataError,
     ("data.train", "input 'input' holds NaN or infinity (example 7)",)),
    ("one-value-per-example", {"train": TensorDataset(IMAGES[:, 0, 0, 0], LABELS), "test": GOOD}, DataError,
     ("data.train", "is [12] for 12 labels: one value per example", "x[:, None]")),
    ("one-class", {"train": TensorDataset(IMAGES, LABELS * 0), "test": GOOD}, DataError,
     ("data.train: every training example has class 0; expected at least 2 classes",)),
    ("float-labels", {"train": TensorDataset(IMAGES, LABELS.float()), "test": GOOD}, DataError,
     ("data.train", "labels of dtype torch.float32", "class index")),
    ("string-labels", {"train": [(image, str(int(label))) for image, label in zip(IMAGES, LABELS, strict=True)],
                       "test": GOOD},
     DataError, ("data.train: labels such as '", "are not class indices", "number them first")),
    ("string-label-column", {"train": (IMAGES.numpy(), LABELS.numpy().astype(str)), "test": GOOD}, DataError,
     ("data.train: its columns cannot be read as tensors", "integer class labels")),
    ("negative-labels", {"train": GOOD, "test": TensorDataset(IMAGES, LABELS - 1)}, DataError,
     ("data.test", "class index")),
    ("int-images", {"train": TensorDataset((IMAGES * 255).long(), LABELS), "test": GOOD}, DataError,
     ("data.train", "input 'input' is torch.int64", "'input_ids'")),
    ("two-inputs", {"train": Items([{"a": IMAGES[0], "b": IMAGES[0], "labels": 1}] * 4), "test": GOOD}, DataError,
     ("data.train", "inputs a, b", "expected one input tensor")),
    ("no-labels-key", {"train": Items([{"pixel_values": IMAGES[0]}] * 4), "test": GOOD}, DataError,
     ("data.train", "without 'labels'", "pixel_values")),
    ("triples", {"train": TensorDataset(IMAGES, LABELS, LABELS), "test": GOOD}, DataError,
     ("data.train", "yields list", "(inputs, label) pairs")),
    ("not-a-tensor", {"train": Items([("some text", 1)] * 4), "test": GOOD}, DataError,
     ("data.train", "input 'input' is tuple", "expected a tensor")),
    ("shapes-differ", {"train": GOOD, "test": TensorDataset(torch.rand(4, 1, 7, 7), LABELS[:4])}, DataError,
     ("different shapes", "train [1, 8, 8]", "test [1, 7, 7]")),
    ("kinds-differ", {"train": GOOD, "test": Items(_ids())}, DataError, ("train is image", "test is text")),
    ("sentence-pairs", {"train": Items(_ids(token_type_ids=torch.tensor([0, 1, 1]))), "test": Items(_ids())},
     DataError, ("data.train", "token_type_ids", "sentence pairs")),
    ("text-extra-key", {"train": Items(_ids(pixel_values=torch.zeros(3))), "test": Items(_ids())}, DataError,
     ("data.train", "pixel_values [8, 3]", "integer input_ids")),
    ("empty", {"train": TensorDataset(IMAGES[:0], LABELS[:0]), "test": GOOD}, DataError, ("data.train: no examples",)),
    ("too-few-to-split", {"train": TensorDataset(IMAGES[:1], LABELS[:1]), "test": GOOD}, DataError,
     ("data.train: 1 examples cannot give a validation set",)),
]


@pytest.mark.parametrize(("data", "kind", "fragments"), [pytest.param(*case[1:], id=case[0]) for case in BAD_DATA])
def test_bad_data_is_refused_in_one_line_naming_the_set(data: dict[str, Any], kind: type[EdgekdError],
                                                        fragments: tuple[str, ...], tmp_path: Path) -> None:
    with pytest.raises(kind) as raised:
        _pipeline(data, stages=[Teacher(epochs=1)]).run(tmp_path / "run")
    message = str(raised.value)
    assert "\n" not in message and all(fragment in message for fragment in fragments), message


def test_in_memory_data_is_not_serializable_and_not_in_another_process() -> None:
    pipeline = _pipeline(_image_sets(), stages=[Teacher(epochs=1)])
    with pytest.raises(ConfigError, match=r"to_yaml\(\): data: the sets given as Dataset/DataLoader objects are not "
                                          r"serializable; save them as files \(images: \.npz"):
        pipeline.to_yaml()
    with pytest.raises(ConfigError, match=r"Pipeline\(\.\.\.\): tokenizer: the data given as Dataset/DataLoader "
                                          r"objects is fed as given"):
        _pipeline({"train": Items(_ids()), "test": Items(_ids())}, stages=[Teacher(epochs=1)],
                  tokenizer={"vocab_size": 200})
    elsewhere = pipeline.recipe.data.model_copy(update={"digest": "sha256:" + "0" * 64})
    with pytest.raises(DataError, match=r"not in this process; give them again"):
        held(elsewhere)


def test_whole_columns_are_sets_like_a_tensor_dataset() -> None:
    """data={'train': (x_train, y_train), ...} failed in torch.stack, and {'input': x, 'labels': y} was read as a
    data config ('data.source: required key is missing')."""
    images, labels = _digits(300)
    base = register_data({"train": TensorDataset(images, labels), "test": TensorDataset(images, labels)}, "t")
    pairs = {"train": (images.numpy(), labels.numpy()), "test": [images, labels]}
    assert register_data(pairs, "t") == base
    assert _pipeline({"train": {"input": images, "labels": labels}, "test": (images, labels)},
                     stages=[Teacher(epochs=1)]).recipe.data.digest == base["digest"]
    with pytest.raises(DataError, match=r"^data.train: inputs of 300 rows and labels of 10; expected one label per"):
        register_data({"train": (images, labels[:10]), "test": GOOD}, "t")  # unequal lengths: not columns
