"""The PET degradation model: Gaussian PSF by FWHM in mm, area downsampling, count-dependent noise."""

import numpy as np
import pytest

from ctpet_srgan import degradation as dg


def _measured_fwhm_mm(profile: np.ndarray, spacing_mm: float) -> float:
    """Full width at half maximum of a 1-D peak, with linear interpolation of the half-max crossings."""
    p = profile / profile.max()
    above = np.flatnonzero(p >= 0.5)
    lo, hi = above[0], above[-1]
    left = lo - 1 + (0.5 - p[lo - 1]) / (p[lo] - p[lo - 1])
    right = hi + (p[hi] - 0.5) / (p[hi] - p[hi + 1])
    return float((right - left) * spacing_mm)


@pytest.mark.parametrize("fwhm,spacing", [(6.0, 0.5), (6.0, 0.25), (2.0, 0.25), (5.0, 1.0 / 3)])
def test_blur_of_a_point_has_the_requested_fwhm_in_mm(fwhm, spacing):
    n = 161
    img = np.zeros((n, n), np.float32)
    img[n // 2, n // 2] = 1.0
    out = dg.gaussian_blur(img, (spacing, spacing), fwhm, mode="constant")
    assert out.sum() == pytest.approx(1.0, rel=1e-4)  # counts are kept
    assert _measured_fwhm_mm(out[n // 2], spacing) == pytest.approx(fwhm, rel=0.03)
    assert _measured_fwhm_mm(out[:, n // 2], spacing) == pytest.approx(fwhm, rel=0.03)


def test_blur_uses_each_axis_spacing_and_per_axis_fwhm():
    img = np.zeros((41, 81, 81), np.float32)
    img[20, 40, 40] = 1.0
    out = dg.gaussian_blur(img, (2.0, 0.5, 0.25), (8.0, 6.0, 4.0), mode="constant")
    assert _measured_fwhm_mm(out[:, 40, 40], 2.0) == pytest.approx(8.0, rel=0.05)
    assert _measured_fwhm_mm(out[20, :, 40], 0.5) == pytest.approx(6.0, rel=0.03)
    assert _measured_fwhm_mm(out[20, 40, :], 0.25) == pytest.approx(4.0, rel=0.03)
    with pytest.raises(ValueError):
        dg.gaussian_blur(img, (1.0, 1.0), 4.0)


def test_extra_fwhm_adds_in_quadrature():
    assert dg.extra_fwhm_mm(6.0, 2.0) == pytest.approx(np.sqrt(32.0))
    assert dg.extra_fwhm_mm(2.0, 6.0) == 0.0
    n, sp = 241, 0.25
    img = np.zeros(n, np.float32)
    img[n // 2] = 1.0
    twice = dg.gaussian_blur(dg.gaussian_blur(img, (sp,), 2.0, mode="constant"), (sp,), dg.extra_fwhm_mm(6.0, 2.0),
                             mode="constant")
    assert _measured_fwhm_mm(twice, sp) == pytest.approx(6.0, rel=0.03)


def test_downsample_area_is_the_block_mean():
    a = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    out = dg.downsample_area(a, 2)
    assert out.shape == (2, 2, 3)
    assert out[1, 1, 2] == pytest.approx(a[1, 2:4, 4:6].mean())
    assert out.mean() == pytest.approx(a.mean())
    out3 = dg.downsample_area(a, (2, 2, 3))
    assert out3.shape == (1, 2, 2) and out3[0, 0, 1] == pytest.approx(a[:, 0:2, 3:6].mean())
    with pytest.raises(ValueError, match="multiple"):
        dg.downsample_area(a, 4)


def test_count_noise_is_poisson_like_and_seeded():
    suv = np.full((200, 200), 2.0, np.float32)
    lo = dg.add_count_noise(suv, 10.0, np.random.default_rng(1))
    hi = dg.add_count_noise(suv, 1000.0, np.random.default_rng(1))
    assert lo.mean() == pytest.approx(2.0, rel=0.02) and hi.mean() == pytest.approx(2.0, rel=0.01)
    # variance of Poisson(c * s) / c is s / c
    assert lo.var() == pytest.approx(2.0 / 10.0, rel=0.05)
    assert hi.var() == pytest.approx(2.0 / 1000.0, rel=0.05)
    # count-dependent: hotter voxels have more absolute noise
    hot = dg.add_count_noise(np.full((200, 200), 8.0, np.float32), 10.0, np.random.default_rng(2))
    assert hot.std() > 1.5 * lo.std()
    again = dg.add_count_noise(suv, 10.0, np.random.default_rng(1))
    other = dg.add_count_noise(suv, 10.0, np.random.default_rng(2))
    assert np.array_equal(lo, again) and not np.array_equal(lo, other)
    assert np.array_equal(dg.add_count_noise(suv, 0.0, np.random.default_rng(1)), suv)
    assert dg.add_count_noise(-suv, 10.0, np.random.default_rng(1)).max() == 0.0


def test_degrade_pet_shapes_means_and_resolution():
    rng = np.random.default_rng(0)
    hr = np.zeros((3, 64, 64), np.float32)
    hr[:, 16:48, 16:48] = 4.0
    lr = dg.degrade_pet(hr, (4.0, 2.0, 2.0), scale=2, fwhm_mm=6.0, counts_per_suv=None, rng=None)
    assert lr.shape == (3, 32, 32)
    assert lr.sum() * 4 == pytest.approx(hr.sum(), rel=1e-3)  # activity is kept
    assert lr.max() == pytest.approx(4.0, abs=1e-3)  # the centre of a large region keeps its value
    assert 0.2 < lr[1, 16, 7] < 2.0 < lr[1, 16, 8] < 3.9  # the edge (between LR columns 7 and 8) is blurred
    noisy = dg.degrade_pet(hr[1], (2.0, 2.0), scale=4, fwhm_mm=6.0, counts_per_suv=50.0, rng=rng)
    assert noisy.shape == (16, 16) and noisy[6:10, 6:10].std() > 0
    with pytest.raises(ValueError, match="Generator"):
        dg.degrade_pet(hr, (4.0, 2.0, 2.0), scale=2, fwhm_mm=6.0, counts_per_suv=10.0, rng=None)
    assert np.array_equal(dg.degrade_ct(np.full((8, 8), 40.0), 2), np.full((4, 4), 40.0, np.float32))
