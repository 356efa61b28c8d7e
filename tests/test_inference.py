"""Predictor: physical units, CT grids, tiling, volumes, and loading from each kind of model path."""

import json

import numpy as np
import pytest

from ctpet_srgan import export, inference
from ctpet_srgan.geometry import Volume, axial_affine
from tests._serve_models import (
    SCALE,
    keras_physical,
    passthrough_generator,
    previous_slice_generator,
    save_model_dir,
    tiny_generator,
)

RNG = np.random.default_rng(0)


def _pet(b, h, w):
    return (RNG.random((b, h, w)) * 6).astype(np.float32)


def _ct(b, h, w):
    return (RNG.random((b, h, w)) * 2400 - 1200).astype(np.float32)


def test_units_round_trip_through_the_normalisation():
    model, rc = passthrough_generator("s2d")
    p = inference.predictor_from_keras(model, rc)
    pet, ct = _pet(2, 5, 6), _ct(2, 10, 12)
    out = p.predict(pet, ct, tile=None)
    np.testing.assert_allclose(out["sr_pet"], pet.repeat(2, 1).repeat(2, 2), rtol=1e-5)
    # CT comes back in HU, clipped to the normalisation's range (below -1024 HU -> -1024)
    np.testing.assert_allclose(out["sr_ct"], np.clip(ct, -1024, 3071), atol=1e-3)
    assert p.scale == SCALE and p.ct_input == "hr"


def test_hr_ct_is_block_averaged_for_an_lr_model_and_lr_ct_refused_for_an_hr_model():
    model, rc = passthrough_generator("lr")
    p = inference.predictor_from_keras(model, rc)
    pet, ct = _pet(1, 4, 4), np.clip(_ct(1, 8, 8), -1000, 3000)
    out = p.predict(pet, ct, tile=None)
    lr = ct.reshape(1, 4, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out["sr_ct"], lr.repeat(2, 1).repeat(2, 2), atol=1e-3)
    hr_model, hr_rc = passthrough_generator("s2d")
    with pytest.raises(ValueError, match=r"ct_hu must be \[1, 8, 8\]"):
        inference.predictor_from_keras(hr_model, hr_rc).predict(pet, ct[:, ::2, ::2])
    with pytest.raises(ValueError, match="needs a CT"):
        inference.predictor_from_keras(hr_model, hr_rc).predict(pet)


def test_single_slice_and_pet_only_model():
    model, rc = passthrough_generator("none")
    p = inference.predictor_from_keras(model, rc)
    out = p.predict(_pet(1, 3, 5)[0])
    assert set(out) == {"sr_pet"} and out["sr_pet"].shape == (6, 10)
    assert p.ct_input is None


@pytest.mark.parametrize("ct_mode", ["s2d", "lr"])
def test_tiled_equals_whole_slice(ct_mode):
    model, rc = tiny_generator(ct_mode)
    p = inference.predictor_from_keras(model, rc)
    pet, ct = _pet(3, 45, 38), _ct(3, 90, 76)
    whole = p.predict(pet, ct, tile=None, batch_size=8)
    # the tiny generator's receptive field radius is ~10 LR pixels: overlap 22 leaves >= 11 on each side
    tiled = p.predict(pet, ct, tile=28, overlap=22, batch_size=2)
    model_ct = ct if ct_mode == "s2d" else ct.reshape(3, 45, 2, 38, 2).mean(axis=(2, 4))
    ref = keras_physical(model, pet[..., None], model_ct[..., None], {"s2d": "hr_ct", "lr": "lr_ct"}[ct_mode])
    for k in ("sr_pet", "sr_ct"):
        assert tiled[k].shape == (3, 90, 76)
        np.testing.assert_allclose(tiled[k], whole[k], atol=1e-4 if k == "sr_pet" else 2e-2)
        np.testing.assert_allclose(whole[k], ref[k][..., 0], atol=1e-4 if k == "sr_pet" else 2e-2)


def test_tiles_cover_the_axis_once():
    for n, tile, ov in [(100, 32, 8), (33, 32, 8), (64, 16, 15), (10, 32, 8)]:
        t = inference._tiles(n, tile, ov)
        owned = np.concatenate([np.arange(a, b) for _, _, a, b in t])
        np.testing.assert_array_equal(owned, np.arange(n))
        for start, stop, a, b in t:
            assert 0 <= start <= a < b <= stop <= n
            assert (a == 0 or a - start >= ov // 2) and (b == n or stop - b >= ov // 2)


def test_hr_affine_splits_each_lr_pixel():
    lr = axial_affine((10.0, -20.0, 5.0), (4.0, 3.0, 5.0))
    hr = inference.hr_affine(lr, 2)
    np.testing.assert_allclose(np.linalg.norm(hr[:3, :3], axis=0), [2.0, 1.5, 5.0])
    # the mean of HR pixel centres 0 and 1 is LR pixel centre 0
    np.testing.assert_allclose((hr @ [0, 0, 0, 1] + hr @ [1, 1, 0, 1]) / 2, lr @ [0, 0, 0, 1])


def test_predict_volume_resamples_ct_onto_the_hr_grid():
    model, rc = passthrough_generator("s2d")
    p = inference.predictor_from_keras(model, rc)
    pet = Volume(_pet(3, 6, 5), axial_affine((0, 0, 0), (4.0, 4.0, 3.0)), "PT", "SUVbw")
    # CT: a linear ramp in x (HU = 10 * x_mm) on a finer, shifted grid covering the PET
    ct_aff = axial_affine((-6.0, -6.0, -3.0), (1.0, 1.0, 1.5))
    x = ct_aff[0, 3] + np.arange(40) * 1.0
    ct = Volume(np.broadcast_to(10.0 * x, (7, 40, 40)).astype(np.float32), ct_aff, "CT", "HU")
    sr_pet, sr_ct = p.predict_volume(pet, ct, progress=False)
    assert sr_pet.shape == (3, 12, 10) and sr_pet.units == "SUVbw" and sr_ct.units == "HU"
    np.testing.assert_allclose(sr_pet.affine, inference.hr_affine(pet.affine, 2))
    xs = sr_ct.index_to_patient(np.stack([np.arange(10), np.zeros(10), np.zeros(10)], 1))[:, 0]
    np.testing.assert_allclose(sr_ct.array[1, 4], 10.0 * xs, atol=0.05)


def test_load_predictor_from_dir_file_and_savedmodel(tmp_path):
    model, rc = tiny_generator("s2d", seed=1)
    other, _ = tiny_generator("s2d", seed=2)
    d = save_model_dir(model, rc, tmp_path / "run", "best_generator.keras")
    other.save(d / "generator.keras")
    pet, ct = _pet(2, 8, 8), _ct(2, 16, 16)
    ref = keras_physical(model, pet[..., None], ct[..., None], "hr_ct")
    by_dir = inference.load_predictor(d)  # prefers best_generator.keras
    np.testing.assert_allclose(by_dir.predict(pet, ct)["sr_pet"], ref["sr_pet"][..., 0], atol=1e-4)
    by_file = inference.load_predictor(d / "generator.keras")
    assert not np.allclose(by_file.predict(pet, ct)["sr_pet"], ref["sr_pet"][..., 0], atol=1e-3)
    assert by_dir.metadata["git_commit"] == "0123abc" and by_dir.metadata["format"] == "keras"
    export.export_savedmodel(other, rc, tmp_path / "exp", "m", 1)
    export.export_savedmodel(model, rc, tmp_path / "exp", "m", 3)
    sm = inference.load_predictor(tmp_path / "exp" / "m")  # highest version: 3
    assert sm.metadata["format"] == "saved_model" and sm.metadata["source"].endswith("3")
    out = sm.predict(pet, ct, tile=None)
    np.testing.assert_allclose(out["sr_pet"], ref["sr_pet"][..., 0], atol=1e-4)
    np.testing.assert_allclose(out["sr_ct"], ref["sr_ct"][..., 0], atol=2e-2)


def test_load_predictor_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model"):
        inference.load_predictor(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a model"):
        inference.load_predictor(tmp_path / "empty")
    model, rc = passthrough_generator()
    model.save(tmp_path / "lonely.keras")
    with pytest.raises(ValueError, match="no run_config.json"):
        inference.load_predictor(tmp_path / "lonely.keras")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "run_config.json").write_text(json.dumps(rc))
    (tmp_path / "bad" / "generator.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot load the Keras model"):
        inference.load_predictor(tmp_path / "bad")


@pytest.mark.parametrize("ct_int16", [True, False])
def test_slab_resampler_equals_the_whole_resample(ct_int16):
    """Slabs of the HR grid (odd spacings and origins) are exactly the slices of geometry.resample, whether the
    resampler keeps an int16 copy (integer HU) or a float32 one."""
    from ctpet_srgan.geometry import resample

    arr = RNG.integers(-1000, 1500, (11, 23, 21)).astype(np.float32) if ct_int16 else _ct(11, 23, 21)
    ct = Volume(arr, axial_affine((-13.7, -11.9, 1.1), (1.37, 1.37, 2.61)), "CT", "HU")
    aff = inference.hr_affine(axial_affine((-12.1, -10.3, 3.3), (3.3, 3.3, 3.27)), 2)
    whole = resample(ct, aff, (9, 16, 14)).array
    r = inference.SlabResampler(ct, aff, (9, 16, 14))
    assert (r._src.GetPixelIDValue() == 2) == ct_int16  # sitkInt16 only when lossless
    np.testing.assert_array_equal(np.concatenate([r(k, k + 4) for k in range(0, 9, 4)]), whole)




def _predict_volume_before(p, pet, ct, **kw):
    """predict_volume as it was written before it became stream_volume's collected slabs: the whole CT resampled
    at once (geometry.resample), the whole PET through Predictor.predict."""
    from ctpet_srgan.geometry import resample

    nk, nj, ni = pet.shape
    aff = inference.hr_affine(pet.affine, p.scale)
    ct_arr = None
    if p.ct_input == "hr":
        ct_arr = resample(ct, aff, (nk, nj * p.scale, ni * p.scale)).array
    elif p.ct_input == "lr":
        ct_arr = resample(ct, pet.affine, pet.shape).array
    out = p.predict(pet.array, ct_arr, **kw)
    return out["sr_pet"], out.get("sr_ct"), aff


@pytest.mark.parametrize("mode", ["s2d", "lr", "none"])
def test_stream_volume_equals_predict_volume(mode):
    """The streamed slabs (several batches, tiles) and predict_volume (their collected whole) are exactly the
    volumes predict_volume gave before it was written on stream_volume, for every CT input."""
    model, rc = tiny_generator(mode, seed=3)
    p = inference.predictor_from_keras(model, rc)
    pet = Volume(_pet(7, 10, 9), axial_affine((-12.1, -10.3, 3.3), (3.3, 3.3, 3.27)), "PT", "SUVbw")
    ct = Volume(_ct(11, 30, 28), axial_affine((-13.7, -11.9, 1.1), (1.37, 1.37, 2.61)), "CT", "HU")
    kw = dict(batch_size=3, tile=6, overlap=2, progress=False)
    ref_pet, ref_ct, ref_aff = _predict_volume_before(p, pet, ct, **kw)
    sr_pet, sr_ct = p.predict_volume(pet, ct, **kw)
    np.testing.assert_array_equal(sr_pet.array, ref_pet)
    np.testing.assert_array_equal(sr_pet.affine, ref_aff)
    assert sr_pet.units == "SUVbw" and sr_pet.array.dtype == np.float32
    if mode == "none":
        assert sr_ct is None and ref_ct is None
    else:
        np.testing.assert_array_equal(sr_ct.array, ref_ct)
        assert sr_ct.units == "HU" and sr_ct.affine is not sr_pet.affine
    stream = p.stream_volume(pet, ct, **kw)
    starts = []
    for k0, a, b in stream.batches():
        starts.append(k0)
        np.testing.assert_array_equal(a, ref_pet[k0 : k0 + a.shape[0]])
        if ref_ct is None:
            assert b is None
        else:
            np.testing.assert_array_equal(b, ref_ct[k0 : k0 + a.shape[0]])
    assert starts == [0, 3, 6] and stream.shape == sr_pet.shape
    np.testing.assert_array_equal(stream.affine, sr_pet.affine)
    if mode == "none":  # collect() by default shows a PET-only model's output over the input CT on the HR grid
        _, shown = stream.collect()
        np.testing.assert_array_equal(shown.array, stream.hr_ct(0, 7))


def test_model_label_is_meaningful():
    """A figure names the model by its label, else by the meaningful part of its path (not an export's version
    folder "1", not "generator.keras", not a checkpoint)."""
    model, rc = passthrough_generator("s2d")
    for source, want in (("exports/ctpet_srgan/1", "ctpet_srgan"), ("/r/runs/demo/ckpt/ckpt-12", "demo"),
                         ("runs/x/best_generator.keras", "x"), ("runs/x/mine.keras", "mine.keras"),
                         ("exp/m/3/", "m"), ("1", "model"), ("", "model")):
        assert inference.predictor_from_keras(model, rc, source).label == want, source
    labelled = inference.predictor_from_keras(model, dict(rc, label="my run"), "exports/m/1")
    assert labelled.label == "my run"


def test_context_stack_repeats_the_edge_slices():
    vol = np.arange(4, dtype=np.float32)[:, None, None] * np.ones((4, 2, 3), np.float32)
    st = inference.context_stack(vol, 3)
    assert st.shape == (4, 2, 3, 3)
    np.testing.assert_array_equal(st[:, 0, 0], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]])
    np.testing.assert_array_equal(inference.context_stack(vol, 5)[0, 0, 0], [0, 0, 0, 1, 2])
    np.testing.assert_array_equal(inference.context_stack(vol, 1)[..., 0], vol)


@pytest.mark.parametrize("ct_mode", ["s2d", "lr"])
def test_2p5d_model_on_a_volume_gets_each_slice_with_its_neighbours(ct_mode):
    """The previous-slice model returns slice k-1 (slice 0: itself, the repeated edge), across batch boundaries."""
    model, rc = previous_slice_generator(ct_mode)
    p = inference.predictor_from_keras(model, rc)
    assert p.context_slices == 3
    n = 5
    aff = axial_affine((0, 0, 0), (4.0, 4.0, 3.0))
    pet = Volume(np.arange(1, n + 1, dtype=np.float32)[:, None, None] * np.ones((n, 4, 3), np.float32), aff, "PT",
                 "SUVbw")
    ct = Volume(100.0 * np.arange(n, dtype=np.float32)[:, None, None] * np.ones((n, 4, 3), np.float32), aff, "CT",
                "HU")
    sr_pet, sr_ct = p.predict_volume(pet, ct, batch_size=2, tile=None, progress=False)
    assert sr_pet.shape == (n, 8, 6)
    prev = np.maximum(np.arange(n) - 1, 0)
    np.testing.assert_allclose(sr_pet.array[:, 3, 2], prev + 1.0, rtol=1e-5)
    np.testing.assert_allclose(sr_ct.array[:, 3, 2], 100.0 * prev, atol=0.05)
    with pytest.raises(ValueError, match=r"context_slices=3 neighbouring slices.*\[B, h, w, 3\]"):
        p.predict(pet.array, ct.array)


def test_2p5d_generator_on_a_volume_equals_the_model_on_the_stacks():
    import keras

    from ctpet_srgan import models
    from ctpet_srgan.evaluation.data import run_method
    from tests._serve_models import run_config

    keras.utils.set_random_seed(1)
    cfg = models.GeneratorConfig(scale=SCALE, filters=8, num_blocks=1, ct_mode="s2d", context_slices=3)
    model = models.build_generator(cfg)
    for v in model.weights:  # the zero head gets random values, so neighbours change the output
        if "kernel" in v.path and not np.any(v.numpy()):
            v.assign(RNG.normal(0.0, 0.05, v.shape).astype("float32"))
    p = inference.predictor_from_keras(model, run_config(cfg))
    pet = Volume(_pet(4, 6, 5), axial_affine((0, 0, 0), (4.0, 4.0, 3.0)), "PT", "SUVbw")
    ct = Volume(_ct(4, 12, 10), axial_affine((0, 0, 0), (2.0, 2.0, 3.0)), "CT", "HU")
    stream = p.stream_volume(pet, ct, batch_size=3, tile=None, progress=False)
    sr_pet, _ = stream.collect()
    hr_ct = stream.hr_ct(0, 4)  # the CT on the HR grid, as the model got it
    ref = keras_physical(model, inference.context_stack(pet.array, 3), inference.context_stack(hr_ct, 3), "hr_ct")
    np.testing.assert_allclose(sr_pet.array, ref["sr_pet"][..., 0], atol=1e-4)
    slices = [{"lr_pet": pet.array[k], "hr_ct": hr_ct[k]} for k in range(4)]  # evaluate.py's path
    np.testing.assert_allclose(run_method(p, slices, SCALE, 2)["sr_pet"], ref["sr_pet"][..., 0], atol=1e-4)
    flat = models.build_generator(models.GeneratorConfig(scale=SCALE, filters=8, num_blocks=1, ct_mode="s2d"))
    assert inference.predictor_from_keras(flat, run_config(flat_cfg := models.GeneratorConfig(
        scale=SCALE, filters=8, num_blocks=1, ct_mode="s2d"))).context_slices == 1 and flat_cfg.context_slices == 1
