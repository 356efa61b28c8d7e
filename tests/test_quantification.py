"""ctpet_srgan.quantification on constructed volumes with known answers (uniform sphere, hot voxel, anisotropy)."""

import math

import numpy as np
import pytest

from ctpet_srgan import quantification as q


def _ball(shape, centre, radius_mm, spacing):
    kk, jj, ii = np.indices(shape)
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip((kk, jj, ii), centre, spacing))
    return d2 <= radius_mm**2


def test_the_1ml_sphere_radius_and_its_voxels():
    assert q.SPHERE_1ML_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)
    assert 4 / 3 * math.pi * q.SPHERE_1ML_RADIUS_MM**3 == pytest.approx(1000.0)
    iso = q.sphere_offsets((1.0, 1.0, 1.0))
    assert abs(len(iso) - 1000) < 30  # 1 mm voxels: ~1000 voxel centres inside 1 cm^3
    assert len(q.sphere_offsets((2.0, 2.0, 2.0), 6.2)) == 123  # integer points with x^2 + y^2 + z^2 <= 9
    # anisotropic (slice 2 mm, pixels 1 mm): the sphere reaches 3 slices each way, the last with a 3x3 patch
    an = q.sphere_offsets((2.0, 1.0, 1.0))
    assert an[:, 0].max() == 3 and an[:, 1].max() == 6 and an[:, 2].max() == 6
    assert np.sum(an[:, 0] == 3) == 9
    assert abs(len(an) * 2.0 - 1000) < 40


def test_uniform_sphere_gives_its_value_for_max_mean_and_peak():
    sp = (3.0, 2.0, 2.0)
    shape = (21, 41, 41)
    tumour = _ball(shape, (10, 20, 20), 15.0, sp)
    pet = np.where(tumour, 5.0, 1.0)
    assert q.suv_max(pet, tumour) == 5.0
    assert q.suv_mean(pet, tumour) == 5.0
    assert q.suv_peak(pet, tumour, sp) == pytest.approx(5.0)  # a 6.2 mm sphere fits inside a 15 mm one
    shell = q.background_shell(tumour, sp)
    st = q.tumour_stats(pet, tumour, sp, shell)
    assert st["background_mean"] == pytest.approx(1.0) and st["tbr"] == pytest.approx(5.0)


def test_hot_voxel_peak_is_its_share_of_the_sphere():
    pet = np.zeros((21, 21, 21))
    pet[10, 10, 10] = 100.0
    mask = np.zeros(pet.shape, bool)
    mask[9:12, 9:12, 9:12] = True
    sp = (2.0, 2.0, 2.0)
    assert q.suv_max(pet, mask) == 100.0
    assert q.suv_mean(pet, mask) == pytest.approx(100.0 / 27)
    assert q.suv_peak(pet, mask, sp, 6.2) == pytest.approx(100.0 / 123)
    # at a corner of the array the sphere keeps only its octant inside: 29 voxel centres
    corner = np.zeros_like(pet)
    corner[0, 0, 0] = 100.0
    assert q.suv_peak(corner, corner > 0, sp, 6.2) == pytest.approx(100.0 / 29)
    # anisotropic voxels: fewer voxels in the sphere along the coarse axis -> a larger share
    an = (4.0, 1.0, 1.0)
    assert q.suv_peak(pet, mask, an) == pytest.approx(100.0 / len(q.sphere_offsets(an)))
    assert math.isnan(q.suv_peak(pet, np.zeros_like(mask), sp)) and math.isnan(q.suv_max(pet, np.zeros_like(mask)))


def test_peak_may_be_centred_off_the_hottest_voxel():
    # a hot spike beside a broad warm plateau: the peak sphere sits on the plateau, not the spike
    sp = (2.0, 2.0, 2.0)
    pet = np.zeros((15, 31, 31))
    plateau = _ball(pet.shape, (7, 15, 22), 10.0, sp)
    pet[plateau] = 4.0
    pet[7, 15, 5] = 50.0
    mask = np.ones(pet.shape, bool)
    assert q.suv_max(pet, mask) == 50.0
    assert q.suv_peak(pet, mask, sp, 6.2) == pytest.approx(4.0)  # 50 / 123 < 4


def test_distance_and_background_shell_are_anisotropic_and_exact():
    sp = (2.0, 1.0, 1.0)
    mask = np.zeros((25, 51, 51), bool)
    mask[12, 25, 25] = True
    shell = q.background_shell(mask, sp)
    assert shell[12 + 6, 25, 25] and not shell[12 + 5, 25, 25]  # 12 mm in, 10 mm out (d > 10 strictly)
    assert shell[12 - 10, 25, 25] and shell[12, 25, 25 + 20] and not shell[12, 25, 25 + 21]
    assert not shell[12, 25, 25]
    body = np.ones_like(mask)
    body[:, :, :25] = False
    assert not q.background_shell(mask, sp, body)[12, 25, 25 - 15]
    # against brute force on a random blob
    rng = np.random.default_rng(0)
    blob = rng.random((6, 9, 8)) > 0.93
    sp = (3.3, 1.7, 2.1)
    d = q.distance_mm(blob, sp)
    pts = np.argwhere(blob) * sp
    grid = np.indices(blob.shape).reshape(3, -1).T * sp
    brute = np.sqrt(((grid[:, None, :] - pts[None]) ** 2).sum(-1)).min(1).reshape(blob.shape)
    assert d == pytest.approx(brute, abs=1e-4)


def test_relative_error():
    assert q.relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert q.relative_error(0.5, 1.0) == pytest.approx(-0.5)
    assert math.isnan(q.relative_error(1.0, 0.0)) and math.isnan(q.relative_error(float("nan"), 1.0))
    with pytest.raises(ValueError, match="spacing"):
        q.sphere_offsets((1.0, 1.0))
