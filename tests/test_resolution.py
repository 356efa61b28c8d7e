"""Effective resolution and noise texture on constructed cases with known answers."""

import math

import numpy as np
import pytest
from scipy import ndimage

from ctpet_srgan import resolution as rs

SP = (2.0, 2.0)  # mm
FINE = 8  # sub-pixels per pixel for the partial-volume objects
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # the test's own, not the library's


def _fine_to_coarse(fine: np.ndarray) -> np.ndarray:
    n = fine.shape[0] // FINE
    return fine.reshape(n, FINE, n, FINE).mean(axis=(1, 3))


def _sphere_pair(fwhm_mm: float, diameter_mm: float = 16.0, n: int = 41):
    """Truth = a disk sampled with partial volume; SR = the disk blurred on the fine grid, then sampled (the blur is
    applied before sampling, unlike the fit, which blurs the sampled truth)."""
    fs = SP[0] / FINE
    c = (n * FINE - 1) / 2.0
    yy, xx = np.mgrid[: n * FINE, : n * FINE]
    disk = (np.hypot(yy - c, xx - c) * fs <= diameter_mm / 2).astype(float) * 3.0 + 1.0
    sr_fine = ndimage.gaussian_filter(disk, fwhm_mm / FWHM_PER_SIGMA / fs, mode="nearest")
    return _fine_to_coarse(sr_fine), _fine_to_coarse(disk)


def _edge_pair(fwhm_mm: float, n: int = 32):
    """An edge off the pixel grid, both images pixel-averaged over FINE sub-samples: truth = the step (partial volume
    at the edge), SR = the analytic edge-spread function of a Gaussian PSF, 2 + 3 * Phi(x / sigma)."""
    x = ((np.arange(n * FINE) + 0.5) / FINE - n / 2 + 0.3) * SP[1]
    sigma = fwhm_mm / FWHM_PER_SIGMA
    esf = 2.0 + 3.0 * 0.5 * (1.0 + np.vectorize(math.erf)(x / (sigma * math.sqrt(2.0))))
    step = np.where(x > 0, 5.0, 2.0)
    row = lambda v: v.reshape(n, FINE).mean(1)[None, :] * np.ones((n, 1))  # noqa: E731
    return row(esf), row(step)


@pytest.mark.parametrize("fwhm", [4.0, 6.0, 9.0])
def test_blurred_sphere_fwhm_recovered(fwhm):
    sr, truth = _sphere_pair(fwhm)
    r = rs.excess_fwhm(sr, truth, SP)
    assert r["fwhm_mm"] == pytest.approx(fwhm, rel=0.04)
    assert r["gain"] == pytest.approx(1.0, abs=0.03)


@pytest.mark.parametrize("fwhm", [5.0, 8.0])
def test_analytic_edge_spread_fwhm_recovered(fwhm):
    sr, truth = _edge_pair(fwhm)
    assert rs.excess_fwhm(sr, truth, SP)["fwhm_mm"] == pytest.approx(fwhm, rel=0.05)


def test_fit_ignores_gain_offset_and_noise():
    sr, truth = _sphere_pair(6.0)
    noisy = 0.8 * sr + 0.5 + np.random.default_rng(0).normal(0, 0.05, sr.shape)
    r = rs.excess_fwhm(noisy, truth, SP)
    assert r["fwhm_mm"] == pytest.approx(6.0, rel=0.06)
    assert r["gain"] == pytest.approx(0.8, abs=0.03)
    assert r["rms"] == pytest.approx(0.05, rel=0.2)


def test_exact_copy_is_zero_and_sharper_than_truth_is_negative():
    sr, truth = _sphere_pair(5.0)
    assert abs(rs.excess_fwhm(truth, truth, SP)["fwhm_mm"]) < 0.2
    # The truth is now the blurred image: the "SR" (the sharp disk) is 5 mm sharper than it.
    assert rs.excess_fwhm(truth, sr, SP)["fwhm_mm"] == pytest.approx(-5.0, rel=0.05)


def test_excess_fwhm_rejects_mismatched_rois():
    with pytest.raises(ValueError, match="one shape"):
        rs.excess_fwhm(np.zeros((5, 5)), np.zeros((5, 6)), SP)


def test_roi_around_inside_and_at_the_border():
    sl = rs.roi_around((10.2, 20.6), 6.0, SP, (64, 64))
    assert sl == (slice(7, 14), slice(18, 25))
    assert rs.roi_around((1.0, 20.0), 6.0, SP, (64, 64)) is None


def _noise(kind: str, n: int = 128, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(0.0, 1.0, (n, n))
    return x if kind == "white" else ndimage.gaussian_filter(x, 1.5, mode="wrap")


def test_white_noise_nps_is_flat_with_mean_frequency_half_nyquist_and_parseval():
    x = _noise("white")
    rois = [x[r:r + 32, c:c + 32] for r in range(0, 128, 32) for c in range(0, 128, 32)]
    nps = rs.noise_power_spectrum(rois, SP)
    nyquist, df = 0.25, 1 / 64  # cycles/mm at 2 mm pixels, 32 px ROIs
    assert nps["freq"][0] == pytest.approx(df) and nps["freq"][-1] == pytest.approx(nyquist)
    assert nps["f_mean"] == pytest.approx((df + nyquist) / 2, rel=0.05)  # the mean of the bins: flat
    radial = nps["nps"]
    assert radial[-4:].mean() / radial[1:5].mean() == pytest.approx(1.0, abs=0.25)  # flat
    assert nps["variance"] == pytest.approx(np.mean([np.var(r) for r in rois]), rel=1e-9)
    assert radial.mean() == pytest.approx(1.0 * SP[0] * SP[1], rel=0.15)  # NPS of unit white noise = dx dy


def test_correlated_noise_has_a_lower_mean_frequency_than_white():
    white, corr = (rs.noise_power_spectrum([_noise(k, seed=s)[:32, :32] for s in range(12)], SP)
                   for k in ("white", "correlated"))
    assert corr["f_mean"] < 0.5 * white["f_mean"]
    assert corr["nps"][-1] < 0.01 * corr["nps"][1]
    # Gaussian-filtered white noise: NPS ~ exp(-(2 pi f sigma)^2), so it falls by e^-1 at f = 1 / (2 pi sigma).
    f = corr["freq"]
    sigma_mm = 1.5 * SP[0]
    expected = np.exp(-((2 * np.pi * f * sigma_mm) ** 2))
    got = corr["nps"] / corr["nps"][0] * expected[0]
    assert np.allclose(got[:8], expected[:8], atol=0.08)


def test_nps_rejects_empty_and_non_square():
    with pytest.raises(ValueError, match="no ROI"):
        rs.noise_power_spectrum([], SP)
    with pytest.raises(ValueError, match="square"):
        rs.noise_power_spectrum([np.zeros((4, 5))], SP)


def test_uniform_mask_keeps_flat_region_away_from_edges_and_body_border():
    truth = np.ones((64, 64))
    truth[:, 40:] = 3.0  # an edge at column 40
    body = np.zeros((64, 64), bool)
    body[4:60, 4:60] = True
    m = rs.uniform_mask(truth, body, SP, max_gradient_per_mm=0.05, margin_mm=6.0)
    assert m[30, 20] and not m[30, 38] and not m[30, 42] and not m[5, 20] and not m[30, 2]
    assert m[30, 50]  # the far side of the edge is uniform too
    rois = rs.square_rois(m, 8)
    assert rois and all(m[r].all() for r in rois)
