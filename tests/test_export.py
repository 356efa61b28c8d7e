"""SavedModel export: layout, signature, built-in ops only, saved_model_cli, fresh-process load = Keras model."""

import ast
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.framework import op_def_registry

from ctpet_srgan import export
from tests._serve_models import keras_physical, save_model_dir, tiny_generator
from tests.conftest import ROOT

CLI = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
RNG = np.random.default_rng(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny s2d generator exported by export_savedmodel.py (the CLI), plus inputs and the Keras reference."""
    tmp = tmp_path_factory.mktemp("export")
    model, rc = tiny_generator("s2d", seed=3)
    run_dir = save_model_dir(model, rc, tmp / "run", "best_generator.keras")
    r = subprocess.run([sys.executable, str(ROOT / "export_savedmodel.py"), f"--model={run_dir}",
                        f"--export_dir={tmp / 'exp'}", "--model_name=ctpet_srgan", "--version=7"],
                       capture_output=True, text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    pet = (RNG.random((2, 12, 10, 1)) * 8).astype(np.float32)
    ct = (RNG.random((2, 24, 20, 1)) * 2000 - 1000).astype(np.float32)
    np.save(tmp / "pet.npy", pet)
    np.save(tmp / "ct.npy", ct)
    return tmp, tmp / "exp" / "ctpet_srgan" / "7", pet, ct, keras_physical(model, pet, ct, "hr_ct")


def test_layout_and_metadata(exported):
    tmp, d, *_ = exported
    assert (d / "saved_model.pb").is_file() and (d / "variables").is_dir()
    assert os.listdir(d.parent) == ["7"]  # no temporary folder left beside it
    meta = json.loads((d / "assets" / "metadata.json").read_text())
    assert meta["scale"] == 2 and meta["ct_input"] == "hr"
    assert meta["lr_spacing_mm"] == [4.0, 4.0, 3.0] and meta["hr_spacing_mm"] == [2.0, 2.0, 3.0]
    assert meta["normalization"]["pet_scale_suv"] == 10.0 and meta["git_commit"] == "0123abc"
    assert meta["steps"] == {"pretrain": 10, "gan": 5} and meta["data_dir"] == "data/phantom"
    assert set(meta["inputs"]) == {"pet", "ct"} and set(meta["outputs"]) == {"sr_pet", "sr_ct"}


def test_saved_model_cli_show_signature_and_builtin_ops(exported):
    _, d, *_ = exported
    show = subprocess.run(CLI + ["show", "--dir", str(d), "--all"], capture_output=True, text=True, env=ENV)
    assert show.returncode == 0, show.stderr[-2000:]
    sig = show.stdout.split("signature_def['serving_default']")[1].split("signature_def[")[0]
    inputs, outputs = sig.split("The given SavedModel SignatureDef contains the following output(s):")
    for name in ("pet", "ct"):
        assert f"inputs['{name}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, -1, 1)" in inputs
    for name in ("sr_pet", "sr_ct"):
        assert f"outputs['{name}'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, -1, -1, 1)" in outputs
    listed = re.search(r"contains the following ops: (\{.*?\})", show.stdout)  # --all lists the ops
    names = ast.literal_eval(listed.group(1))
    assert "Conv2D" in names and "ResizeBilinear" in names
    assert [n for n in names if op_def_registry.get(n) is None] == []  # every op is built into TensorFlow


def test_saved_model_cli_run_equals_keras(exported):
    tmp, d, pet, ct, ref = exported
    out = tmp / "cli_out"
    r = subprocess.run(CLI + ["run", "--dir", str(d), "--tag_set", "serve", "--signature_def", "serving_default",
                              "--inputs", f"pet={tmp / 'pet.npy'};ct={tmp / 'ct.npy'}", "--outdir", str(out)],
                       capture_output=True, text=True, env=ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(out / "sr_pet.npy"), ref["sr_pet"], atol=1e-4)
    np.testing.assert_allclose(np.load(out / "sr_ct.npy"), ref["sr_ct"], atol=2e-2)


FRESH = """
import sys, numpy as np, tensorflow as tf
fn = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = fn(pet=tf.constant(np.load(sys.argv[2])), ct=tf.constant(np.load(sys.argv[3])))
np.save(sys.argv[4], out["sr_pet"].numpy()); np.save(sys.argv[5], out["sr_ct"].numpy())
try:
    fn(pet=tf.constant(np.load(sys.argv[2])), ct=tf.constant(np.load(sys.argv[3])[:, :-1]))
except tf.errors.InvalidArgumentError as e:
    print("REJECTED:", [line for line in e.message.splitlines() if "must be" in line][0].strip())
"""


def test_fresh_process_load_equals_keras_and_rejects_bad_shape(exported):
    tmp, d, pet, ct, ref = exported
    outs = [tmp / "fresh_pet.npy", tmp / "fresh_ct.npy"]
    r = subprocess.run([sys.executable, "-c", FRESH, str(d), str(tmp / "pet.npy"), str(tmp / "ct.npy"),
                        *map(str, outs)], capture_output=True, text=True, env={**ENV, "PYTHONPATH": ""}, cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    np.testing.assert_allclose(np.load(outs[0]), ref["sr_pet"], atol=1e-4)
    np.testing.assert_allclose(np.load(outs[1]), ref["sr_ct"], atol=2e-2)
    assert "ct must be [batch, h*2, w*2, 1] float32 HU" in r.stdout.split("REJECTED:")[1]


def test_bad_dtype_and_rank_rejected_in_process(exported):
    _, d, pet, ct, _ = exported
    fn = tf.saved_model.load(str(d)).signatures["serving_default"]
    rejected = (TypeError, ValueError, tf.errors.InvalidArgumentError)
    with pytest.raises(rejected, match="float"):
        fn(pet=tf.constant(pet.astype(np.int32)), ct=tf.constant(ct))
    with pytest.raises(rejected, match=r"pet \[2,12,10\] is not compatible with expected shape \[\?,\?,\?,1\]"):
        fn(pet=tf.constant(pet[..., 0]), ct=tf.constant(ct))  # a wrong rank must not reach (and abort) a kernel
    with pytest.raises(rejected, match="pet must be"):
        fn(pet=tf.constant(pet[:, :0]), ct=tf.constant(ct[:, :0]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="ct must be"):
        fn(pet=tf.constant(pet), ct=tf.constant(ct[:1]))


@pytest.mark.parametrize("ct_mode", ["lr", "none"])
def test_other_ct_modes_have_matching_signatures(tmp_path, ct_mode):
    model, rc = tiny_generator(ct_mode, seed=4)
    d = export.export_savedmodel(model, rc, tmp_path, "m", 1)
    fn = tf.saved_model.load(str(d)).signatures["serving_default"]
    assert set(fn.structured_input_signature[1]) == ({"pet", "ct"} if ct_mode == "lr" else {"pet"})
    assert set(fn.structured_outputs) == ({"sr_pet", "sr_ct"} if ct_mode == "lr" else {"sr_pet"})
    pet = (RNG.random((1, 9, 7, 1)) * 4).astype(np.float32)
    ct = (RNG.random((1, 9, 7, 1)) * 1000 - 500).astype(np.float32)
    kw = {"pet": tf.constant(pet)} | ({"ct": tf.constant(ct)} if ct_mode == "lr" else {})
    ref = keras_physical(model, pet, ct, "lr_ct" if ct_mode == "lr" else None)
    np.testing.assert_allclose(fn(**kw)["sr_pet"].numpy(), ref["sr_pet"], atol=1e-4)


def test_existing_version_refused_unless_overwrite(tmp_path):
    model, rc = tiny_generator("none", seed=5)
    d = export.export_savedmodel(model, rc, tmp_path, "m", 2)
    stamp = (d / "saved_model.pb").stat().st_mtime_ns
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.export_savedmodel(model, rc, tmp_path, "m", 2)
    assert (d / "saved_model.pb").stat().st_mtime_ns == stamp
    export.export_savedmodel(model, rc, tmp_path, "m", 2, overwrite=True)
    assert sorted(os.listdir(tmp_path / "m")) == ["2"]
    with pytest.raises(ValueError, match="ct_mode"):
        export.export_savedmodel(model, {**rc, "generator": {**rc["generator"], "ct_mode": "s2d"}}, tmp_path, "m", 3)
    assert sorted(os.listdir(tmp_path / "m")) == ["2"]


def test_documented_rest_request_matches_the_signature(tmp_path):
    """The request body in docs/serving.md, fed as TF Serving's row format does (instances stacked per input)."""
    doc = (ROOT / "docs" / "serving.md").read_text()
    body = json.loads(doc.split("```json\n", 1)[1].split("```", 1)[0])
    model, rc = tiny_generator("s2d", seed=6)
    fn = tf.saved_model.load(str(export.export_savedmodel(model, rc, tmp_path, "m", 1))).signatures["serving_default"]
    inputs = {k: np.asarray([inst[k] for inst in body["instances"]], np.float32) for k in body["instances"][0]}
    assert set(inputs) == set(fn.structured_input_signature[1])
    out = fn(**{k: tf.constant(v) for k, v in inputs.items()})
    assert out["sr_pet"].shape == (1, 4, 4, 1) and out["sr_ct"].shape == (1, 4, 4, 1)
    ref = keras_physical(model, inputs["pet"], inputs["ct"], "hr_ct")
    np.testing.assert_allclose(out["sr_pet"].numpy(), ref["sr_pet"], atol=1e-4)


@pytest.mark.parametrize("which,bad,match", [
    ("pet", np.nan, "pet has NaN or Inf values"), ("pet", np.inf, "pet has NaN or Inf values"),
    ("ct", np.nan, "ct has NaN or Inf values"), ("ct", -np.inf, "ct has NaN or Inf values"),
    ("pet", -5.0, "pet has values below 0 SUVbw"), ("pet", 1e30, "pet has values above 10000 SUVbw"),
    ("ct", 1e7, "ct has values above 100000 HU"),
])
def test_non_finite_negative_or_implausible_values_rejected(exported, which, bad, match):
    """One bad voxel fails the request with InvalidArgument naming the input, never NaN outputs."""
    _, d, pet, ct, _ = exported
    fn = tf.saved_model.load(str(d)).signatures["serving_default"]
    inputs = {"pet": pet.copy(), "ct": ct.copy()}
    inputs[which][1, 3, 4, 0] = bad
    with pytest.raises(tf.errors.InvalidArgumentError, match=match):
        fn(pet=tf.constant(inputs["pet"]), ct=tf.constant(inputs["ct"]))
    out = fn(pet=tf.constant(pet), ct=tf.constant(ct))  # the same signature still serves good requests
    assert np.all(np.isfinite(out["sr_pet"].numpy()))


def test_batch_zero_rejected_clearly(exported):
    _, d, pet, ct, _ = exported
    fn = tf.saved_model.load(str(d)).signatures["serving_default"]
    with pytest.raises(tf.errors.InvalidArgumentError, match="pet: batch is 0; send at least one image"):
        fn(pet=tf.constant(pet[:0]), ct=tf.constant(ct[:0]))


def test_a_2p5d_model_is_refused_not_exported_wrong(tmp_path, capsys):
    import export_savedmodel
    from ctpet_srgan import models
    from tests._serve_models import run_config

    cfg = models.GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="s2d", context_slices=3)
    model, rc = models.build_generator(cfg), run_config(cfg)
    with pytest.raises(ValueError, match=r"context_slices > 1 cannot be exported yet \(this model takes 3"):
        export.export_savedmodel(model, rc, tmp_path / "e", "m", 1)
    flat = {**rc, "generator": {**rc["generator"], "context_slices": 1}}  # a run_config that hides the stacks
    with pytest.raises(ValueError, match="context_slices > 1 cannot be exported yet"):
        export.export_savedmodel(model, flat, tmp_path / "e", "m", 1)
    assert not (tmp_path / "e").exists()
    src = save_model_dir(model, rc, tmp_path / "run")
    assert export_savedmodel.main([f"--model={src}", f"--export_dir={tmp_path / 'e'}", "--version=1"]) == 2
    assert "context_slices > 1 cannot be exported yet" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
