"""The PET degradation model: Gaussian PSF by FWHM in mm, area downsampling, count-dependent noise."""

import numpy as np
import pytest

from ctpet_srgan import degradation as dg
from ctpet_srgan.geometry import Volume


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


# ------------------------------------------------------------------ the LR model that preparation runs
def _moment_var_mm2(profile: np.ndarray, spacing_mm: float) -> float:
    """Second central moment (mm^2) of a non-negative 1-D profile sampled every `spacing_mm`."""
    p = np.asarray(profile, np.float64)
    x = np.arange(len(p)) * spacing_mm
    mu = (p * x).sum() / p.sum()
    return float((p * (x - mu) ** 2).sum() / p.sum())


def _marginals(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(K, H, W) -> the profiles along rows (j) and along columns (i), summed over the other axes."""
    return a.sum(axis=(0, 2)), a.sum(axis=(0, 1))


def _uniform_lr(scale: int, counts: float, suv: float, seed: int) -> np.ndarray:
    hr = np.full((2, 192, 192), suv, np.float32)
    return dg.degrade_pet(hr, (2.0, 1.0, 1.0), scale=scale, fwhm_mm=4.0, counts_per_suv=counts,
                          rng=np.random.default_rng(seed))


@pytest.mark.parametrize("scale", [2, 3])
def test_degrade_pet_noise_is_counts_per_lr_voxel(scale):
    """On a uniform region the LR variance is SUV / counts_per_suv (Poisson counts in each LR voxel); noise drawn
    per HR voxel before the area average would be scale^2 times smaller."""
    lr = _uniform_lr(scale, 10.0, 3.0, 0)
    assert lr.shape == (2, 192 // scale, 192 // scale)
    assert lr.mean() == pytest.approx(3.0, rel=0.01)
    assert lr.var() == pytest.approx(3.0 / 10.0, rel=0.06)
    assert np.array_equal(lr, _uniform_lr(scale, 10.0, 3.0, 0))  # seeded


def _uniform_volume(suv: float, spacing=(2.0, 2.0, 4.0), shape=(6, 48, 48)) -> Volume:
    from ctpet_srgan.geometry import axial_affine

    return Volume(np.full(shape, suv, np.float32), axial_affine((-40.0, -40.0, 0.0), spacing), "PT", "SUVbw")


def test_degrade_pet_volume_noise_is_counts_per_lr_voxel():
    from ctpet_srgan.geometry import axial_affine

    src = _uniform_volume(2.5)
    hr_aff = axial_affine((-40.5, -40.5, 0.0), (1.0, 1.0, 4.0))  # the HR grid of the PET grid at scale 2
    lr = dg.degrade_pet_volume(src, hr_aff, (6, 96, 96), scale=2, fwhm_mm=4.0, counts_per_suv=8.0,
                               rng=np.random.default_rng(3))
    assert lr.shape == (6, 48, 48)
    assert lr.mean() == pytest.approx(2.5, rel=0.01)
    assert lr.var() == pytest.approx(2.5 / 8.0, rel=0.06)
    with pytest.raises(ValueError, match="Generator"):
        dg.degrade_pet_volume(src, hr_aff, (6, 96, 96), scale=2, fwhm_mm=4.0, counts_per_suv=8.0, rng=None)


def _write_study(tmp_path, pet: Volume, truth: Volume | None = None):
    """NIfTI CT (uniform water, covering the PET) + PET (+ truth) -> a StudySpec."""
    from ctpet_srgan.geometry import axial_affine
    from ctpet_srgan.nifti_io import write_nifti
    from data_prep import convert as cv

    ct = Volume(np.zeros((40, 80, 80), np.float32), axial_affine((-80.0, -80.0, -20.0), (2.0, 2.0, 2.0)), "CT", "HU")
    paths = [write_nifti(v, tmp_path / f"{n}.nii.gz") for n, v in (("ct", ct), ("pet", pet), ("truth", truth)) if v]
    return cv.single_study(*paths)


def _lr_of(spec, cfg) -> np.ndarray:
    from ctpet_srgan import records
    from data_prep import convert as cv

    res = cv.prepare_study(spec, cfg)
    return np.stack([records.parse_example(e)["lr_pet"].numpy()[..., 0] for e in res.examples])


@pytest.mark.parametrize("with_truth", [False, True], ids=["clinical_pet", "truth_pet"])
def test_prepared_lr_noise_is_counts_per_lr_voxel(tmp_path, with_truth):
    """What prepare_study writes: LR variance = SUV / counts_per_suv on a uniform region."""
    from data_prep import convert as cv

    pet = _uniform_volume(2.0, (2.0, 2.0, 4.0), (6, 48, 48))
    truth = _uniform_volume(2.0, (1.0, 1.0, 4.0), (6, 96, 96)) if with_truth else None
    if truth is not None:
        truth.affine[:2, 3] -= 0.5  # its voxel centres on the HR grid
    lr = _lr_of(_write_study(tmp_path, pet, truth), cv.ConvertConfig(scale=2, counts_per_suv=5.0, seed=1))
    assert lr.shape == (6, 48, 48)
    assert lr.mean() == pytest.approx(2.0, rel=0.01)
    assert lr.var() == pytest.approx(2.0 / 5.0, rel=0.06)


def _point(shape, spacing, affine_origin, centre_ijk, fwhm_mm) -> Volume:
    """A Gaussian point source of FWHM `fwhm_mm` (all axes) centred on voxel `centre_ijk` (SUV, peak 10)."""
    from ctpet_srgan.geometry import axial_affine

    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    s = dg.fwhm_to_sigma_mm(fwhm_mm)
    d2 = sum(((idx - c) * sp) ** 2 for idx, c, sp in zip((i, j, k), centre_ijk, spacing))
    return Volume((10.0 * np.exp(-d2 / (2 * s * s))).astype(np.float32), axial_affine(affine_origin, spacing),
                  "PT", "SUVbw")


def test_prepared_lr_resolution_from_a_truth_pet(tmp_path):
    """Truth path: a 2 mm point in the truth PET comes out of prepare_study with the stated 6 mm LR resolution
    (the Gaussian sqrt(6^2 - 2^2) = 5.66 mm on top of the truth's 2 mm; the LR voxel's area average, a known
    [1/2, 1/2] kernel of HR voxels, is taken out). Moments of marginal profiles: exact for discrete kernels."""
    from data_prep import convert as cv

    pet = _point((8, 32, 32), (2.0, 2.0, 2.0), (-32.0, -32.0, 0.0), (15, 16, 4), 6.0)  # not used for the LR
    truth = _point((8, 64, 64), (1.0, 1.0, 2.0), (-32.5, -32.5, 0.0), (31, 33, 4), 2.0)  # on the HR grid
    cfg = cv.ConvertConfig(scale=2, counts_per_suv=0.0)
    lr = _lr_of(_write_study(tmp_path, pet, truth), cfg)
    assert lr.shape == (8, 32, 32)
    box = 0.5**2  # variance (mm^2) of the [1/2, 1/2] area average of 1 mm HR voxels
    for lr_prof, t_prof in zip(_marginals(lr), _marginals(truth.array)):
        var_lr = _moment_var_mm2(lr_prof, 2.0) - box
        fwhm_truth = dg.FWHM_PER_SIGMA * np.sqrt(_moment_var_mm2(t_prof, 1.0))
        assert fwhm_truth == pytest.approx(cfg.truth_fwhm_mm, rel=0.02)
        assert dg.FWHM_PER_SIGMA * np.sqrt(var_lr) == pytest.approx(cfg.lr_fwhm_mm, rel=0.03)
        extra = dg.FWHM_PER_SIGMA * np.sqrt(var_lr - _moment_var_mm2(t_prof, 1.0))
        assert extra == pytest.approx(dg.extra_fwhm_mm(cfg.lr_fwhm_mm, cfg.truth_fwhm_mm), rel=0.03)


def test_prepared_lr_resolution_from_a_clinical_pet(tmp_path):
    """No-truth path: the LR PET is the clinical PET blurred by `no_truth_fwhm_mm` more (on the default grid the
    LR grid is the PET's own, so nothing else may blur it): a 6 mm point comes out at sqrt(6^2 + 4^2) mm."""
    from data_prep import convert as cv

    pet = _point((8, 32, 32), (2.0, 2.0, 2.0), (-32.0, -32.0, 0.0), (15, 16, 4), 6.0)
    cfg = cv.ConvertConfig(scale=2, counts_per_suv=0.0, no_truth_fwhm_mm=4.0)
    lr = _lr_of(_write_study(tmp_path, pet), cfg)
    assert lr.shape == (8, 32, 32)
    for lr_prof, p_prof in zip(_marginals(lr), _marginals(pet.array)):
        var_lr, var_pet = _moment_var_mm2(lr_prof, 2.0), _moment_var_mm2(p_prof, 2.0)
        assert dg.FWHM_PER_SIGMA * np.sqrt(var_pet) == pytest.approx(6.0, rel=0.02)
        assert dg.FWHM_PER_SIGMA * np.sqrt(var_lr) == pytest.approx(np.hypot(6.0, 4.0), rel=0.03)
        assert dg.FWHM_PER_SIGMA * np.sqrt(var_lr - var_pet) == pytest.approx(cfg.no_truth_fwhm_mm, rel=0.03)
