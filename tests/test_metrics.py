"""Metrics checked on constructed cases whose answer is known in closed form or by hand."""

import math

import cv2
import numpy as np
import pytest

from ctpet_srgan import metrics


def _gauss(img, sigma_px):
    return cv2.GaussianBlur(np.asarray(img, np.float64), (0, 0), sigma_px, borderType=cv2.BORDER_REFLECT)


def _smooth_image(shape=(48, 40), seed=0):
    rng = np.random.default_rng(seed)
    return _gauss(rng.uniform(0, 10, shape), 2.0)


# ----------------------------------------------------------------------------- PSNR / SSIM
def test_identical_images_give_infinite_psnr_and_unit_ssim():
    x = _smooth_image()
    mask = np.zeros(x.shape, bool)
    mask[10:30, 8:30] = True
    assert metrics.psnr(x, x, data_range=10.0) == math.inf
    assert metrics.psnr(x, x, data_range=10.0, mask=mask) == math.inf
    assert metrics.ssim(x, x, data_range=10.0) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(x, x, data_range=10.0, mask=mask) == pytest.approx(1.0, abs=1e-5)


def test_psnr_of_a_known_offset_and_known_noise_variance():
    x = _smooth_image()
    assert metrics.psnr(x, x + 0.5, data_range=10.0) == pytest.approx(20 * math.log10(10.0 / 0.5), abs=1e-3)
    # +-sigma noise of random sign has variance exactly sigma^2
    rng = np.random.default_rng(1)
    sigma = 0.3
    noisy = x + sigma * rng.choice([-1.0, 1.0], size=x.shape)
    assert metrics.psnr(x, noisy, data_range=4.0) == pytest.approx(10 * math.log10(16.0 / sigma**2), abs=1e-3)


def test_psnr_of_a_known_one_pixel_shift():
    stripes = np.tile(np.array([0.0, 1.0]), (16, 8))  # period-2 vertical stripes
    shifted = np.roll(stripes, 1, axis=1)  # every pixel changes by exactly 1
    assert metrics.psnr(stripes, shifted, data_range=2.0) == pytest.approx(20 * math.log10(2.0), abs=1e-4)


def test_masked_psnr_only_counts_masked_pixels():
    x = np.zeros((20, 20))
    y = x.copy()
    y[:, 10:] += 2.0  # error only in the right half
    y[:, :10] += 0.1
    left = np.zeros(x.shape, bool)
    left[:, :10] = True
    assert metrics.psnr(x, y, data_range=1.0, mask=left) == pytest.approx(20.0, abs=1e-6)
    assert metrics.psnr(x, y, data_range=1.0, mask=~left) == pytest.approx(20 * math.log10(1 / 2.0), abs=1e-6)
    assert math.isnan(metrics.psnr(x, y, data_range=1.0, mask=np.zeros(x.shape, bool)))


def test_ssim_of_constant_images_matches_the_formula():
    u, v, r = 0.6, 0.3, 1.0
    c1 = (metrics.SSIM_K1 * r) ** 2
    expected = (2 * u * v + c1) / (u * u + v * v + c1)  # variances are 0, so the structure term is 1
    got = metrics.ssim(np.full((16, 16), u), np.full((16, 16), v), data_range=r)
    assert got == pytest.approx(expected, rel=1e-4)
    assert got < 0.9


def test_masked_ssim_averages_the_map_over_window_centres_in_the_mask():
    x = _smooth_image((40, 60))
    y = x.copy()
    y[:, 30:] = 5.0  # right half replaced by a constant
    left = np.zeros(x.shape, bool)
    left[:, :20] = True  # window centres here (radius 5 px) never reach column 30
    assert metrics.ssim(x, y, data_range=10.0, mask=left) == pytest.approx(1.0, abs=1e-5)
    assert metrics.ssim(x, y, data_range=10.0) < 0.9
    assert metrics.ssim(x, y, data_range=10.0, mask=~left) < 0.9


def test_ssim_decreases_with_noise():
    x = _smooth_image()
    rng = np.random.default_rng(2)
    n = rng.normal(size=x.shape)
    s = [metrics.ssim(x, x + a * n, data_range=10.0) for a in (0.1, 0.5, 2.0)]
    assert s[0] > s[1] > s[2]



def test_ssim_matches_scikit_image_on_a_textured_noisy_pair():
    """An independent reference (scikit-image, Wang et al.'s settings: Gaussian window sigma 1.5 px, population
    covariances) on texture plus noise, where the window's sigma matters (sigma 1.0 moves this mean from 0.859
    to 0.822)."""
    skm = pytest.importorskip("skimage.metrics", reason="scikit-image (test-only dependency) is not installed")
    rng = np.random.default_rng(7)
    x = _gauss(rng.uniform(0, 10, (64, 56)), 1.2) + 2.0 * _gauss(rng.uniform(0, 1, (64, 56)), 0.6)
    y = x + rng.normal(0.0, 0.35, x.shape)
    r = 10.0
    ref_mean, ref_map = skm.structural_similarity(x, y, data_range=r, gaussian_weights=True, sigma=1.5,
                                                  use_sample_covariance=False, full=True)
    h = metrics.SSIM_FILTER_SIZE // 2
    ours = metrics.ssim_map(x, y, data_range=r)
    assert ours.shape == (x.shape[0] - 2 * h, x.shape[1] - 2 * h)
    np.testing.assert_allclose(ours, ref_map[h:-h, h:-h], atol=2e-4)
    assert metrics.ssim(x, y, data_range=r) == pytest.approx(float(ref_mean), abs=2e-4)
    assert 0.5 < ref_mean < 0.98  # the pair is neither trivial nor unrelated
    mask = np.zeros(x.shape, bool)
    mask[20:40, 10:30] = True
    assert metrics.ssim(x, y, data_range=r, mask=mask) == pytest.approx(
        float(ref_map[20:40, 10:30].mean()), abs=2e-4)


# ----------------------------------------------------------------------------- NEMA contrast
def _blurred_disk_fraction(radius, sigma):
    """Mean, over a disk of `radius`, of the disk's indicator blurred by an isotropic Gaussian."""

    def inside(rho):
        # P(|rho + N(0, sigma^2 I)| <= radius): non-central chi-square CDF with 2 dof, written as a
        # Poisson(lam/2) mixture of central chi-square CDFs with 2 + 2j dof (closed form each).
        lam, x = (np.asarray(rho, float) / sigma) ** 2 / 2, (radius / sigma) ** 2 / 2
        total = np.zeros_like(lam)
        for j in range(80):
            chi2_cdf = 1 - math.exp(-x) * sum(x**i / math.factorial(i) for i in range(j + 1))
            total += np.exp(-lam) * lam**j / math.factorial(j) * chi2_cdf
        return total

    rho = np.linspace(0, radius, 4001)
    f = rho * inside(rho)
    val = float(np.sum((f[1:] + f[:-1]) / 2 * np.diff(rho)))  # trapezoid rule
    return 2 * val / radius**2, inside


def test_crc_of_a_blurred_disk_matches_the_analytic_recovery():
    sp, radius, sigma, bkg, ratio = 0.2, 5.0, 2.0, 1.0, 4.0
    n = 281
    c = (n - 1) / 2
    rr, cc = np.mgrid[:n, :n]
    rho = np.hypot(rr - c, cc - c) * sp
    frac, inside = _blurred_disk_fraction(radius, sigma)
    img = bkg + bkg * (ratio - 1) * inside(rho)  # the disk of uptake `ratio` blurred exactly
    out = metrics.sphere_contrast(img, (c, c), 2 * radius, (sp, sp), ratio)
    assert 0.3 < frac < 0.9  # the blur matters at this size
    assert out["crc"] == pytest.approx(frac, abs=0.01)
    assert out["n_background"] == 12
    assert out["bv"] == pytest.approx(0.0, abs=1e-6)  # background untouched by the blur

    # The same with a rasterised disk blurred numerically (OpenCV), coarser agreement.
    disk = bkg + bkg * (ratio - 1) * (rho <= radius)
    blurred = _gauss(disk, sigma / sp)
    out2 = metrics.sphere_contrast(blurred, (c, c), 2 * radius, (sp, sp), ratio)
    assert out2["crc"] == pytest.approx(frac, abs=0.02)
    # An unblurred disk (ROI == sphere) recovers all of its contrast.
    assert metrics.sphere_contrast(disk, (c, c), 2 * radius, (sp, sp), ratio)["crc"] == pytest.approx(1.0, abs=1e-9)


def test_crc_tends_to_one_for_a_large_sphere_and_falls_for_small_ones():
    sp, sigma, ratio = 1.0, 2.0, 4.0
    n = 161
    c = (n - 1) / 2
    rho = np.hypot(*(np.mgrid[:n, :n] - c)) * sp
    crcs = []
    for d in (6.0, 12.0, 40.0):
        img = _gauss(1.0 + (ratio - 1) * (rho <= d / 2), sigma / sp)
        crcs.append(metrics.sphere_contrast(img, (c, c), d, (sp, sp), ratio)["crc"])
    assert crcs[0] < crcs[1] < crcs[2]
    assert crcs[2] > 0.9


def test_background_variability_and_cnr_on_a_two_level_background():
    sp, d, n = 0.5, 10.0, 121
    c = (n - 1) / 2
    img = np.ones((n, n))
    img[:, : int(c)] = 0.9
    img[:, int(c) + 1 :] = 1.1
    rho = np.hypot(*(np.mgrid[:n, :n] - c)) * sp
    img[rho <= d / 2] = 4.0
    out = metrics.sphere_contrast(img, (c, c), d, (sp, sp), 4.0)
    # 12 ROIs at 15, 45, ... degrees: 6 entirely in 0.9, 6 entirely in 1.1
    sd = 0.1 * math.sqrt(12 / 11)
    assert out["n_background"] == 12
    assert out["c_bkg"] == pytest.approx(1.0)
    assert out["sd_bkg"] == pytest.approx(sd)
    assert out["bv"] == pytest.approx(sd)
    assert out["cnr"] == pytest.approx(3.0 / sd)
    assert out["crc"] == pytest.approx(1.0)
    # a background mask keeping only rows below the lesion keeps only the 6 ROIs there
    mask = np.zeros((n, n), bool)
    mask[int(c) + 1 :, :] = True
    half = metrics.sphere_contrast(img, (c, c), d, (sp, sp), 4.0, background_mask=mask)
    assert half["n_background"] == 6
    # too few background ROIs -> NaN rather than a number
    tiny = metrics.sphere_contrast(img[40:80, 40:80], (c - 40, c - 40), d, (sp, sp), 4.0)
    assert math.isnan(tiny["crc"])


# ----------------------------------------------------------------------------- detection
def _blob(shape, center, sigma_px, amp):
    rr, cc = np.mgrid[: shape[0], : shape[1]]
    return amp * np.exp(-((rr - center[0]) ** 2 + (cc - center[1]) ** 2) / (2 * sigma_px**2))


def _noisy_background(shape, seed):
    rng = np.random.default_rng(seed)
    return 1.0 + rng.uniform(-0.3, 0.3, shape)


def test_detector_on_a_slice_with_planted_lesions():
    shape, sp = (96, 96), (2.0, 2.0)
    img = _noisy_background(shape, 3)
    lesions = [  # (row, col), diameter mm, peak above background
        ((20, 20), 10.0, 4.0),  # detected
        ((20, 70), 10.0, 1.2),  # too faint: 2.2 +- 0.3 < 2.5
        ((70, 30), 20.0, 3.0),  # detected
    ]
    for (r, c), d, amp in lesions:
        img += _blob(shape, (r, c), d / 2 / sp[0] / 1.5, amp)
    img += _blob(shape, (75, 80), 2.0, 3.0)  # a hot spot that is no lesion: one false positive
    dets = metrics.detect_hot_spots(img, threshold=2.5, spacing_mm=sp, min_separation_mm=6.0)
    assert len(dets) == 3
    les = [dict(center_rc=rc, radius_mm=d / 2) for rc, d, _ in lesions]
    scores, fps = metrics.match_detections(dets, les, sp)
    assert [s > -math.inf for s in scores] == [True, False, True]
    assert len(fps) == 1
    for (r, c, _s), (rc, _d, _a) in zip(sorted(dets), sorted([lesions[0], lesions[2]])):
        assert abs(r - rc[0]) <= 1 and abs(c - rc[1]) <= 1
    summ = metrics.detection_summary(scores, [d for _, d, _ in lesions], fps, n_slices=2, threshold=2.5)
    assert summ["sensitivity"] == pytest.approx(2 / 3)
    assert summ["sensitivity_per_size"] == {"10": 0.5, "20": 1.0}
    assert summ["n_false_positives"] == 1
    assert summ["fp_per_slice"] == pytest.approx(0.5)
    # a mask that excludes the false positive's region removes it
    mask = np.ones(shape, bool)
    mask[60:, 60:] = False
    assert len(metrics.detect_hot_spots(img, threshold=2.5, spacing_mm=sp, mask=mask)) == 2


def test_detector_threshold_is_inclusive_and_a_flat_top_is_one_detection():
    """A peak of exactly the threshold counts (value >= threshold, as the FROC's operating points assume); one a
    hair below does not; a flat-topped maximum (two equal pixels) is one detection at their centroid."""
    img = np.zeros((32, 32))
    img[8, 8] = 2.5
    img[20, 20:22] = 3.0
    dets = metrics.detect_hot_spots(img, threshold=2.5, spacing_mm=(2.0, 2.0))
    assert [(r, c, s) for r, c, s in dets] == [(20.0, 20.5, 3.0), (8.0, 8.0, 2.5)]
    img[8, 8] = np.nextafter(2.5, 0.0)
    assert len(metrics.detect_hot_spots(img, threshold=2.5, spacing_mm=(2.0, 2.0))) == 1

def test_lesion_free_slice_has_no_detections_above_threshold():
    img = _noisy_background((64, 64), 4)
    assert metrics.detect_hot_spots(img, threshold=2.5, spacing_mm=(2.0, 2.0)) == []
    # the same detector does find the noise peaks when the threshold is inside the noise
    assert len(metrics.detect_hot_spots(img, threshold=1.2, spacing_mm=(2.0, 2.0))) > 3


def test_detections_in_unscored_lesion_cross_sections_are_not_false_positives():
    les = [dict(center_rc=(10, 10), radius_mm=4.0, scored=False), dict(center_rc=(30, 30), radius_mm=4.0)]
    scores, fps = metrics.match_detections([(11, 10, 3.0), (30, 31, 2.0), (50, 50, 1.0)], les, (1.0, 1.0))
    assert scores == [2.0]
    assert fps == [1.0]


def test_froc_points_by_hand():
    pts = metrics.froc([5.0, -math.inf, 3.0], [4.0, 1.0], n_slices=2)
    assert [p["threshold"] for p in pts] == [5.0, 4.0, 3.0, 1.0]
    assert [p["sensitivity"] for p in pts] == pytest.approx([1 / 3, 1 / 3, 2 / 3, 2 / 3])
    assert [p["fp_per_slice"] for p in pts] == pytest.approx([0.0, 0.5, 0.5, 1.0])


def test_froc_keeps_the_corners_of_the_full_staircase():
    rng = np.random.default_rng(3)
    les, fps, n = list(rng.random(5) * 10), list(rng.random(400) * 10), 50
    full = []  # every distinct threshold, written out directly
    for t in sorted(set(les) | set(fps), reverse=True):
        full.append((t, np.mean(np.array(les) >= t), np.sum(np.array(fps) >= t) / n))
    pts = [(p["threshold"], p["sensitivity"], p["fp_per_slice"]) for p in metrics.froc(les, fps, n)]
    assert len(pts) <= 2 * (len(les) + 1) < len(full)
    corners = [full[i] for i in range(len(full))
               if i in (0, len(full) - 1) or full[i - 1][1] != full[i][1] or full[i + 1][1] != full[i][1]]
    np.testing.assert_allclose(np.array(pts), np.array(corners))
    assert metrics.froc([], [], 3) == []


# ----------------------------------------------------------------------------- fusion
def test_mutual_information_of_an_image_with_itself_is_its_entropy():
    a = np.tile(np.arange(4.0), (8, 2)).T  # 4 equally frequent levels -> 2 bits
    assert metrics.entropy(a, bins=4) == pytest.approx(2.0)
    assert metrics.mutual_information(a, a, bins=4) == pytest.approx(2.0)
    x = _smooth_image()
    assert metrics.mutual_information(x, x, bins=32) == pytest.approx(metrics.entropy(x, bins=32), rel=1e-9)
    # a monotone remapping keeps all the information; an independent pattern has none
    assert metrics.mutual_information(a, 3 * a + 1, bins=4) == pytest.approx(2.0)
    rows = np.repeat(np.arange(4.0), 4)[:, None] * np.ones((1, 16))
    cols = rows.T.copy()
    assert metrics.mutual_information(rows, cols, bins=4) == pytest.approx(0.0, abs=1e-12)


def test_qabf_prefers_a_fused_image_that_keeps_the_source_edges():
    n = 64
    rr, cc = np.mgrid[:n, :n]
    a = _gauss(((rr - 30) ** 2 + (cc - 30) ** 2 < 15**2).astype(float), 1.0)
    b = _gauss(((abs(rr - 40) < 10) & (abs(cc - 20) < 12)).astype(float), 1.0)
    unrelated = _gauss(np.random.default_rng(5).uniform(size=(n, n)), 1.0)
    q_copy = metrics.qabf(a, b, a)
    q_mean = metrics.qabf(a, b, 0.5 * (a + b))
    q_unrel = metrics.qabf(a, b, unrelated)
    assert q_copy > q_unrel
    assert q_mean > q_unrel
    perfect = (
        metrics.QABF_GAMMA_G / (1 + math.exp(metrics.QABF_KAPPA_G * (1 - metrics.QABF_SIGMA_G)))
        * metrics.QABF_GAMMA_A / (1 + math.exp(metrics.QABF_KAPPA_A * (1 - metrics.QABF_SIGMA_A)))
    )
    assert metrics.qabf(a, a, a) == pytest.approx(perfect, rel=1e-9)
    assert math.isnan(metrics.qabf(np.ones((8, 8)), np.ones((8, 8)), a[:8, :8]))


def test_bootstrap_ci_brackets_the_mean_and_is_reproducible():
    v = [0.1, 0.5, 0.3, 0.9, 0.2, 0.4]
    m, lo, hi = metrics.bootstrap_ci(v, seed=3)
    assert m == pytest.approx(np.mean(v))
    assert min(v) < lo < m < hi < max(v)
    assert metrics.bootstrap_ci(v, seed=3) == (m, lo, hi)
    assert metrics.bootstrap_ci([2.0]) == (2.0, 2.0, 2.0)
    assert all(math.isnan(x) for x in metrics.bootstrap_ci([]))
