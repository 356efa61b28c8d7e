"""Bundled models: `bundled:demo` / `bundled:real` resolution, the bundling tool, and the SavedModel export of a
bundled model (`export_savedmodel.py --bundled real|demo`)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ctpet_srgan import inference
from tests._serve_models import save_model_dir, tiny_generator
from tests.conftest import ROOT

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}


def test_bundle_real_labels_it_and_records_what_it_was_trained_on(tmp_path):
    from tools.bundle_demo_model import bundle

    data = tmp_path / "data"
    data.mkdir()
    split_of = {f"{i:016x}": "train" if i < 4 else "val" if i == 4 else "test" for i in range(6)}
    studies = {h: {"has_mask": i != 3, "split": split_of[h], "slices": 0} for i, h in enumerate(split_of)}
    (data / "manifest.json").write_text(json.dumps({
        "scale": 2, "normalization": {},
        "splits": {s: {"studies": [h for h in split_of if split_of[h] == s], "examples": 0, "shards": []}
                   for s in ("train", "val", "test")},
        "studies": studies, "split_seed": 0, "hr_spacing_mm": [5.0, 5.0, 3.0], "lr_spacing_mm": [10.0, 10.0, 3.0],
        "degradation": {"extra_fwhm_mm_no_truth": 8.0}}))
    model, rc = tiny_generator("s2d", seed=4)
    run = save_model_dir(model, {**rc, "data_dir": str(data)}, tmp_path / "run", "best_generator.keras")
    dest = bundle(run, tmp_path / "assets" / "real_model", name="real", command="python train_keras.py ...")
    cfg = json.loads((dest / "run_config.json").read_text())
    assert cfg["label"] == inference.REAL_LABEL and "not for clinical use" in cfg["label"]
    assert cfg["demo"] is False and cfg["bundled"] == "real" and cfg["clinical_use"] is False
    t = cfg["trained_on"]
    assert (t["train_studies"], t["val_studies"], t["test_studies"], t["with_tumour_masks"]) == (4, 1, 1, 5)
    assert t["split_seed"] == 0 and "IBSI" in t["data"] and t["degradation"] == {"extra_fwhm_mm_no_truth": 8.0}
    assert "research use only" in (dest / "README.md").read_text()
    p = inference.load_predictor(dest)
    assert not p.is_demo and p.metadata["label"] == inference.REAL_LABEL
    with pytest.raises(ValueError, match="--name"):
        bundle(run, tmp_path / "x", name="other")


def test_bundled_names_resolve_and_unknown_names_are_refused():
    assert inference.load_predictor("bundled:demo").is_demo
    assert inference.load_predictor(None).is_demo
    with pytest.raises(ValueError, match="bundled:demo, bundled:real"):
        inference.load_predictor("bundled:nope")


def test_bundled_real_model_loads_with_safe_mode_and_runs():
    import keras

    import ctpet_srgan.models  # noqa: F401 (registers the custom layers)

    real = inference.REAL_MODEL_DIR
    cfg = json.loads((real / "run_config.json").read_text())
    assert cfg["label"] == "trained on 20 IBSI STS patients, research use only, not for clinical use"
    assert cfg["clinical_use"] is False and cfg["demo"] is False and cfg["trained_on"]["train_studies"] == 20
    assert (real / "generator.keras").stat().st_size < 8 * 2**20
    model = keras.saving.load_model(str(real / "generator.keras"), safe_mode=True, compile=False)
    assert "hr_ct" in [t.name for t in model.inputs] or len(model.inputs) == 2  # the fused (CT-guided) model
    p = inference.load_predictor("bundled:real")
    assert not p.is_demo and p.scale == 2 and p.ct_input == "hr"
    assert p.metadata["hr_spacing_mm"][:2] == pytest.approx([5.46875, 5.46875])
    assert p.metadata["lr_spacing_mm"][:2] == pytest.approx([10.9375, 10.9375])
    rng = np.random.default_rng(0)
    pet = (rng.random((2, 12, 14)) * 5).astype(np.float32)
    ct = (rng.random((2, 24, 28)) * 400 - 200).astype(np.float32)
    out = p.predict(pet, ct)
    sr_pet, sr_ct = out["sr_pet"], out["sr_ct"]
    assert sr_pet.shape == (2, 24, 28) and np.isfinite(sr_pet).all() and sr_ct.shape == (2, 24, 28)
    lr_mean = pet.mean()
    assert abs(float(sr_pet.mean()) - lr_mean) < 0.25 * lr_mean  # SR keeps the activity level (SUV)


def _export(tmp_path, *args):
    return subprocess.run([sys.executable, str(ROOT / "export_savedmodel.py"), *args,
                           f"--export_dir={tmp_path / 'exp'}", "--model_name=ctpet_srgan", "--version=1"],
                          capture_output=True, text=True, env=ENV, cwd=ROOT)


def test_export_of_the_bundled_real_model_has_the_documented_signature(tmp_path):
    import tensorflow as tf

    r = _export(tmp_path, "--bundled=real")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "exp" / "ctpet_srgan" / "1"
    meta = json.loads((out / "assets" / "metadata.json").read_text())
    assert meta["scale"] == 2 and meta["lr_spacing_mm"][:2] == pytest.approx([10.9375, 10.9375])
    assert meta["hr_spacing_mm"][:2] == pytest.approx([5.46875, 5.46875])
    assert meta["label"] == inference.REAL_LABEL and meta["trained_on"]["train_studies"] == 20
    assert meta["ct_input"] == "hr" and meta["clinical_use"] is False
    sig = tf.saved_model.load(str(out)).signatures["serving_default"]
    _, ins = sig.structured_input_signature
    assert {k: (v.dtype, v.shape.as_list()) for k, v in ins.items()} == {
        "pet": (tf.float32, [None, None, None, 1]), "ct": (tf.float32, [None, None, None, 1])}
    assert set(sig.structured_outputs) == {"sr_pet", "sr_ct"}
    rng = np.random.default_rng(1)
    pet = (rng.random((1, 12, 14, 1)) * 5).astype(np.float32)
    ct = (rng.random((1, 24, 28, 1)) * 400 - 200).astype(np.float32)
    got = sig(pet=tf.constant(pet), ct=tf.constant(ct))["sr_pet"].numpy()
    ref = inference.load_predictor("bundled:real").predict(pet[..., 0], ct[..., 0])["sr_pet"]
    np.testing.assert_allclose(got[..., 0], ref, rtol=1e-4, atol=1e-4)


def test_export_bundled_demo_and_flag_conflicts(tmp_path):
    r = _export(tmp_path, "--bundled=demo")
    assert r.returncode == 0, r.stderr[-2000:]
    meta = json.loads((tmp_path / "exp" / "ctpet_srgan" / "1" / "assets" / "metadata.json").read_text())
    assert meta["demo"] is True and meta["label"] == inference.DEMO_LABEL
    r = _export(tmp_path, "--bundled=real", f"--checkpoint={inference.DEMO_MODEL_DIR}")
    assert r.returncode == 2 and "not both" in r.stderr
