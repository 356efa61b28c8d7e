"""data_prep.demo.ensure_demo_data: writes the phantom set of the asked world once, reuses it, and refuses a set of
another world or scale instead of training on it."""

import pytest

from ctpet_srgan.manifest import Manifest
from data_prep.demo import ensure_demo_data


def test_guided_demo_set_is_written_once_and_another_world_is_refused(tmp_path):
    out = tmp_path / "demo"
    ensure_demo_data(str(out), cases=2, seed=0, world="guided", log=lambda *a: None)
    m = Manifest.load(out)
    assert m.is_guided and len(m.studies) == 2
    before = (out / "manifest.json").read_bytes()
    ensure_demo_data(str(out), cases=2, seed=0, world="guided", log=lambda *a: None)  # reused as it is
    assert (out / "manifest.json").read_bytes() == before
    with pytest.raises(ValueError, match="guided-world phantom set, the default world was asked"):
        ensure_demo_data(str(out), cases=2, seed=0, world="default", log=lambda *a: None)
    with pytest.raises(ValueError, match="scale-2 set, scale 4"):
        ensure_demo_data(str(out), cases=2, seed=0, scale=4, world="guided", log=lambda *a: None)


def test_default_demo_set_is_not_guided(tmp_path):
    out = tmp_path / "demo"
    ensure_demo_data(str(out), cases=2, seed=0, log=lambda *a: None)
    assert not Manifest.load(out).is_guided
    with pytest.raises(ValueError, match="default-world phantom set, the guided world was asked"):
        ensure_demo_data(str(out), cases=2, seed=0, world="guided", log=lambda *a: None)
