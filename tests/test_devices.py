"""The shipped device profiles: valid, named after their files, documented, with real references."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgekd.catalog import catalog_dir
from edgekd.config.device import DeviceProfile, load_device
from edgekd.config.loading import load_yaml_model
from edgekd.profile.cpu import KNOWN_ISA
from edgekd.profile.references import REFERENCE_MODELS

DEVICE_FILES = sorted(catalog_dir("devices").glob("*.yaml"))
KEY_LINE = re.compile(r"^(\s*)([a-z_0-9]+):")


def test_expected_profiles_ship() -> None:
    assert {"host-cpu", "android-midrange-cpu", "raspberry-pi-4", "x86-server-1core"} <= {p.stem for p in DEVICE_FILES}


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.stem)
def test_profile_validates_and_is_named_after_its_file(path: Path) -> None:
    device = load_yaml_model(path, DeviceProfile)
    assert device.name == path.stem
    assert device.description
    assert load_device(path.stem) == device
    if device.isa != "detect":
        assert set(device.isa) <= set(KNOWN_ISA)


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: p.stem)
def test_every_key_is_explained_by_a_comment(path: Path) -> None:
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if KEY_LINE.match(line):
            previous = next((p for p in reversed(lines[:number]) if p.strip()), "")
            assert previous.lstrip().startswith("#"), f"{path.name}:{number + 1}: '{line.strip()}' has no comment"


@pytest.mark.parametrize("name", ["android-midrange-cpu", "raspberry-pi-4"])
def test_estimated_devices_cite_a_buildable_reference(name: str) -> None:
    device = load_device(name)
    assert device.is_estimate and device.reference is not None
    assert device.reference.model in REFERENCE_MODELS
    assert device.reference.threads == device.threads == 4
    assert len(device.reference.source) > 60


@pytest.mark.parametrize("name", ["host-cpu", "x86-server-1core"])
def test_measured_devices_have_no_reference(name: str) -> None:
    device = load_device(name)
    assert not device.is_estimate and device.isa == "detect"


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(REFERENCE_MODELS))
def test_every_registered_reference_model_builds_a_timeable_onnx_file(key: str, tmp_path: Path) -> None:
    """The reference registry's contract: each entry builds an ONNX model onnxruntime runs at the entry's shape."""
    import onnxruntime as ort

    from edgekd.config.device import InputShape
    from edgekd.profile.inputs import make_feeds

    model = REFERENCE_MODELS[key]
    target = tmp_path / f"{key}.onnx"
    model.build(target)
    session = ort.InferenceSession(str(target), providers=["CPUExecutionProvider"])
    outputs = session.run(None, make_feeds(session, InputShape(**model.shape)))
    assert outputs and outputs[0].shape[0] == model.shape["batch"]
