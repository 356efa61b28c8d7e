"""Normalisation: HU and SUV to the network's range and back, the same on NumPy arrays and TF tensors."""

import numpy as np
import tensorflow as tf

from ctpet_srgan.normalization import DEFAULT, Normalization


def test_anchor_values_and_round_trip():
    n = DEFAULT
    assert n.ct_to_norm(np.float32(-1000.0)) == 0.0  # air
    assert n.ct_to_norm(np.float32(0.0)) == 0.5  # water
    assert n.pet_to_norm(10.0) == 1.0  # SUV 10
    hu = np.array([-1000.0, -50.0, 0.0, 40.0, 1500.0], np.float32)
    suv = np.array([0.0, 0.7, 2.5, 25.0], np.float32)
    np.testing.assert_allclose(n.ct_from_norm(n.ct_to_norm(hu)), hu, atol=1e-3)
    np.testing.assert_allclose(n.pet_from_norm(n.pet_to_norm(suv)), suv, rtol=1e-6)


def test_ct_is_clipped_to_the_stored_range_but_pet_is_not():
    n = DEFAULT
    assert n.ct_from_norm(n.ct_to_norm(np.float32(-3000.0))) == n.ct_clip_min_hu
    assert n.ct_from_norm(n.ct_to_norm(np.float32(9000.0))) == n.ct_clip_max_hu
    assert n.pet_to_norm(80.0) == 8.0  # hot lesions survive: no upper clip


def test_tensorflow_tensors_with_tf_clip_match_numpy():
    n = Normalization(ct_offset_hu=-1024.0, ct_scale_hu=4095.0, pet_scale_suv=5.0)
    hu = np.array([-2000.0, -1024.0, 0.0, 3071.0, 5000.0], np.float32)
    want = n.ct_to_norm(hu)
    got = n.ct_to_norm(tf.constant(hu), clip_fn=tf.clip_by_value).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert float(n.pet_to_norm(tf.constant(2.5))) == 0.5


def test_dict_round_trip_ignores_unknown_keys():
    n = Normalization(pet_scale_suv=7.0)
    d = {**n.to_dict(), "schema": 3}
    assert Normalization.from_dict(d) == n
