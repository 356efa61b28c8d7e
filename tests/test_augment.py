"""CT misregistration and CT dropout augmentations: the shift is right, the dropout rate is p, the PET is untouched."""

import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan import augment, guidance
from ctpet_srgan.normalization import DEFAULT

LEVELS = augment.ct_levels(DEFAULT)
N = 40


def _disk(c, r, n=N):
    yy, xx = np.mgrid[:n, :n]
    return (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r


def _ct_hu():
    ct = np.full((N, N), -1000.0, np.float32)
    ct[_disk((20, 20), 16)] = 40.0
    ct[_disk((20, 20), 16) & (np.mgrid[:N, :N][1] > 30)] = -1000.0  # a concave notch open to the outside
    ct[_disk((14, 14), 4)] = -850.0  # a lung: a hole in the body
    ct[_disk((26, 22), 3)] = 300.0  # a bright structure to follow
    return ct


def _ex(ct_hu, scale=2):
    hr = DEFAULT.ct_to_norm(ct_hu)[..., None].astype(np.float32)
    lr = tf.nn.avg_pool2d(hr[None], scale, scale, "VALID")[0]
    rng = np.random.default_rng(0)
    return {"hr_ct": tf.constant(hr), "lr_ct": lr, "hr_pet": tf.constant(rng.random((N, N, 1), np.float32)),
            "lr_pet": tf.constant(rng.random((N // scale, N // scale, 1), np.float32))}


def _centroid(img):
    w = np.asarray(img, np.float64)[..., 0]
    rr, cc = np.mgrid[: w.shape[0], : w.shape[1]]
    return np.array([(w * rr).sum() / w.sum(), (w * cc).sum() / w.sum()])


def test_levels_are_air_water_and_the_body_threshold():
    assert LEVELS == pytest.approx({"air": 0.0, "water": 0.5, "threshold": 0.25})


def test_shift_image_moves_by_the_right_number_of_pixels():
    blob = np.zeros((N, N, 1), np.float32)
    blob[_disk((20, 20), 5)] = 1.0
    whole = augment.shift_image(blob, tf.constant([2.0, -3.0]), 0.0).numpy()
    assert np.array_equal(whole[2:, :-3], blob[:-2, 3:]) and (whole[:2] == 0).all() and (whole[:, -3:] == 0).all()
    frac = augment.shift_image(blob, tf.constant([1.5, 0.25]), 0.0).numpy()
    assert _centroid(frac) - _centroid(blob) == pytest.approx([1.5, 0.25], abs=1e-3)
    filled = augment.shift_image(blob, tf.constant([0.0, 4.0]), 7.0).numpy()
    assert (filled[:, :4] == 7.0).all()
    # the same as the NumPy helper of the evaluation (mm on a 2 mm grid)
    np.testing.assert_allclose(frac[..., 0], guidance.shift_image_mm(blob[..., 0], (3.0, 0.5), (2.0, 2.0), fill=0.0),
                               atol=1e-5)


def test_body_mask_and_uninformative_ct_match_the_evaluation_rule():
    ct = _ct_hu()
    got = augment.body_mask(tf.constant(DEFAULT.ct_to_norm(ct)[..., None]), LEVELS["threshold"]).numpy()[..., 0]
    assert np.array_equal(got, guidance.body_mask(ct))
    assert got[14, 14] and not got[20, 36]  # the lung is body, the notch is outside
    u = augment.uninformative_ct(tf.constant(DEFAULT.ct_to_norm(ct)[..., None]), **LEVELS).numpy()[..., 0]
    np.testing.assert_allclose(DEFAULT.ct_from_norm(u), guidance.uninformative_ct(ct), atol=1e-3)


def test_misregistration_shifts_the_ct_by_the_drawn_mm_and_leaves_the_pet_alone():
    ex = _ex(_ct_hu())
    spacing = tf.constant([2.0, 2.0])
    dists = []
    for k in range(12):
        seed = tf.constant([5, k], tf.int64)
        out = augment.augment_ct(ex, seed, scale=2, spacing_mm=spacing, max_shift_mm=8.0, levels=LEVELS)
        shift_mm, dropped = augment.draw(seed, 8.0, 0.0)
        assert not bool(dropped)
        want = augment.shift_image(ex["hr_ct"], shift_mm / spacing, LEVELS["air"]).numpy()
        np.testing.assert_allclose(out["hr_ct"].numpy(), want, atol=1e-6)
        bright = lambda a: np.maximum(DEFAULT.ct_from_norm(a) - 200.0, 0.0)  # noqa: E731  (the 300 HU disk)
        moved = (_centroid(bright(out["hr_ct"].numpy())) - _centroid(bright(ex["hr_ct"].numpy()))) * 2.0
        assert moved == pytest.approx(shift_mm.numpy(), abs=0.35)
        np.testing.assert_allclose(out["lr_ct"].numpy(), tf.nn.avg_pool2d(out["hr_ct"][None], 2, 2, "VALID")[0],
                                   atol=1e-6)
        for key in ("hr_pet", "lr_pet"):
            assert out[key] is ex[key]
        dists.append(float(np.linalg.norm(shift_mm.numpy())))
    assert max(dists) <= 8.0 and max(dists) > 4.0 and len({round(d, 3) for d in dists}) == len(dists)
    same = augment.augment_ct(ex, tf.constant([5, 0], tf.int64), scale=2, spacing_mm=spacing, levels=LEVELS)
    assert np.array_equal(same["hr_ct"].numpy(), ex["hr_ct"].numpy())  # off: nothing changes


def test_ct_dropout_rate_is_p_for_a_fixed_seed():
    ex = _ex(_ct_hu())
    water = DEFAULT.ct_to_norm(guidance.uninformative_ct(_ct_hu()))
    n, hits = 300, 0
    for k in range(n):
        seed = tf.constant([11, k], tf.int64)
        out = augment.augment_ct(ex, seed, scale=2, spacing_mm=tf.constant([2.0, 2.0]), dropout=0.3, levels=LEVELS)
        dropped = bool(augment.draw(seed, 0.0, 0.3)[1])
        if dropped:
            np.testing.assert_allclose(out["hr_ct"].numpy()[..., 0], water, atol=1e-6)
        else:
            assert np.array_equal(out["hr_ct"].numpy(), ex["hr_ct"].numpy())
        hits += dropped
        assert out["hr_pet"] is ex["hr_pet"] and out["lr_pet"] is ex["lr_pet"]
    assert hits / n == pytest.approx(0.3, abs=0.06)


def test_train_config_has_the_augmentation_fields_off_by_default():
    from ctpet_srgan.training import TrainConfig

    cfg = TrainConfig()
    assert cfg.ct_shift_max_mm == 0.0 and cfg.ct_dropout == 0.0
    assert TrainConfig(ct_shift_max_mm=10.0, ct_dropout=0.2).to_dict()["ct_dropout"] == 0.2
    with pytest.raises(ValueError, match="ct_dropout"):
        TrainConfig(ct_dropout=1.5)
    with pytest.raises(ValueError, match="ct_shift_max_mm"):
        TrainConfig(ct_shift_max_mm=-1.0)
