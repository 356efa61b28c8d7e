"""Evaluation metrics on 2-D slices: image quality, NEMA-style lesion contrast, detection, fusion.

All functions take NumPy arrays (rows, cols) in physical units (PET in SUVbw, CT in HU) unless a
docstring says otherwise; pixel spacing is (row, col) in mm. The exact definitions are written in
each docstring and collected in docs/metrics.md.

- Image quality: `psnr`, `ssim` (TensorFlow's tf.image.psnr / tf.image.ssim; a mask restricts the
  pixels that are averaged).
- Lesions: `sphere_contrast` (NEMA NU 2 hot-sphere contrast recovery coefficient, background
  variability, contrast-to-noise ratio), `disk_mask`.
- Detection: `detect_hot_spots` (local maxima above an SUV threshold), `match_detections`,
  `detection_summary`, `froc`.
- Fusion: `entropy`, `mutual_information`, `qabf` (Xydeas & Petrovic edge transfer).
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

# SSIM settings (Wang et al. 2004, as in tf.image.ssim): Gaussian window 11x11, sigma 1.5 px.
SSIM_FILTER_SIZE = 11
SSIM_FILTER_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ----------------------------------------------------------------------------- image quality
def masked_mse(truth: np.ndarray, test: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, int]:
    """Sum of squared differences and the number of pixels summed (inside `mask` if given).

    Returned as (sum, count) so callers can pool several slices before forming a PSNR.
    """
    t = np.asarray(truth, np.float64)
    x = np.asarray(test, np.float64)
    if t.shape != x.shape:
        raise ValueError(f"shape mismatch: truth {t.shape}, test {x.shape}")
    d2 = (t - x) ** 2
    if mask is not None:
        m = np.asarray(mask, bool)
        return float(d2[m].sum()), int(m.sum())
    return float(d2.sum()), int(d2.size)


def psnr_from_mse(mse: float, data_range: float) -> float:
    """PSNR = 10 log10(R^2 / MSE) in dB; +inf when MSE == 0, NaN when MSE is NaN."""
    if not np.isfinite(mse):
        return float("nan")
    if mse <= 0:
        return float("inf")
    return 10.0 * math.log10(float(data_range) ** 2 / mse)


def psnr(truth: np.ndarray, test: np.ndarray, *, data_range: float, mask: np.ndarray | None = None) -> float:
    """Peak signal-to-noise ratio in dB.

    PSNR = 10 log10(R^2 / MSE), R = `data_range` (e.g. 10 SUV for PET, 4095 HU for CT), MSE the mean
    squared difference over the whole slice (tf.image.psnr) or over the pixels where `mask` is
    true. Values are not clipped: R only sets the reference peak. Identical images give +inf;
    an empty mask gives NaN.
    """
    if mask is None:
        import tensorflow as tf

        t = np.asarray(truth, np.float32)[None, ..., None]
        x = np.asarray(test, np.float32)[None, ..., None]
        if t.shape != x.shape:
            raise ValueError(f"shape mismatch: truth {t.shape[1:3]}, test {x.shape[1:3]}")
        return float(tf.image.psnr(t, x, max_val=float(data_range))[0])
    s, n = masked_mse(truth, test, mask)
    return psnr_from_mse(s / n if n else float("nan"), data_range)


def ssim_map(truth: np.ndarray, test: np.ndarray, *, data_range: float) -> np.ndarray:
    """Local SSIM map (tf.image.ssim, return_index_map=True).

    SSIM = (2 mu_x mu_y + C1)(2 sigma_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(sigma_x^2 + sigma_y^2 + C2)),
    local statistics under an 11x11 Gaussian window (sigma 1.5 px), C1 = (0.01 R)^2,
    C2 = (0.03 R)^2, R = `data_range`. The map is 'valid': shape (rows - 10, cols - 10); entry
    (r, c) belongs to the window centred on pixel (r + 5, c + 5). Needs rows, cols >= 11.
    """
    import tensorflow as tf

    t = np.asarray(truth, np.float32)
    x = np.asarray(test, np.float32)
    if t.shape != x.shape:
        raise ValueError(f"shape mismatch: truth {t.shape}, test {x.shape}")
    if min(t.shape) < SSIM_FILTER_SIZE:
        raise ValueError(f"SSIM needs images of at least {SSIM_FILTER_SIZE} px a side, got {t.shape}")
    m = tf.image.ssim(
        t[None, ..., None],
        x[None, ..., None],
        max_val=float(data_range),
        filter_size=SSIM_FILTER_SIZE,
        filter_sigma=SSIM_FILTER_SIGMA,
        k1=SSIM_K1,
        k2=SSIM_K2,
        return_index_map=True,
    )
    return np.asarray(m)[0].astype(np.float64)


def crop_to_ssim_map(mask: np.ndarray) -> np.ndarray:
    """The part of a full-size mask that lines up with `ssim_map` (window centres)."""
    h = SSIM_FILTER_SIZE // 2
    return np.asarray(mask, bool)[h:-h, h:-h]


def ssim(truth: np.ndarray, test: np.ndarray, *, data_range: float, mask: np.ndarray | None = None) -> float:
    """Mean SSIM (see `ssim_map`); with `mask`, the mean of the SSIM map over the windows whose
    centre pixel lies inside the mask (NaN if there are none). Identical images give 1."""
    m = ssim_map(truth, test, data_range=data_range)
    if mask is None:
        return float(m.mean())
    sel = crop_to_ssim_map(mask)
    return float(m[sel].mean()) if sel.any() else float("nan")


# ----------------------------------------------------------------------------- lesions (NEMA)
def disk_mask(shape: Sequence[int], center_rc: Sequence[float], radius_mm: float,
              spacing_mm: Sequence[float]) -> np.ndarray:
    """Boolean mask of the pixels whose centres lie within `radius_mm` of `center_rc` (row, col
    in pixels, may be fractional); `spacing_mm` = (row, col) pixel size in mm."""
    rows, cols = np.ogrid[: shape[0], : shape[1]]
    dy = (rows - center_rc[0]) * spacing_mm[0]
    dx = (cols - center_rc[1]) * spacing_mm[1]
    return dy**2 + dx**2 <= radius_mm**2


def background_roi_centres(center_rc, ring_mm: float, spacing_mm, n: int = 12) -> list[tuple[float, float]]:
    """`n` ROI centres (row, col px) evenly spaced on a circle of radius `ring_mm` around the lesion,
    starting at angle 360/(2n) degrees (so for n = 12: 15, 45, ... degrees from the +col axis)."""
    out = []
    for k in range(n):
        a = 2 * math.pi * (k + 0.5) / n
        out.append((center_rc[0] + ring_mm * math.sin(a) / spacing_mm[0],
                    center_rc[1] + ring_mm * math.cos(a) / spacing_mm[1]))
    return out


def _background_means(img: np.ndarray, center_rc: Sequence[float], r: float, ring: float,
                      spacing_mm: Sequence[float], n_background: int,
                      background_mask: np.ndarray | None) -> list[float]:
    """The means C_B,k of the background ROIs of `sphere_contrast` that can be placed.

    Args:
        r: ROI radius (mm); ring: radius (mm) of the ring of ROI centres around `center_rc` (row, col pixels).
    Returns:
        One mean per ROI kept: fully inside the image and, if given, inside `background_mask`.
    """
    bkg_means = []
    for c in background_roi_centres(center_rc, ring, spacing_mm, n_background):
        # fully inside the image: the circle's bounding box must lie within the pixel grid
        if not (
            c[0] - r / spacing_mm[0] >= -0.5
            and c[1] - r / spacing_mm[1] >= -0.5
            and c[0] + r / spacing_mm[0] <= img.shape[0] - 0.5
            and c[1] + r / spacing_mm[1] <= img.shape[1] - 0.5
        ):
            continue
        roi = disk_mask(img.shape, c, r, spacing_mm)
        if not roi.any() or (background_mask is not None and not np.all(np.asarray(background_mask, bool)[roi])):
            continue
        bkg_means.append(float(img[roi].mean()))
    return bkg_means


def sphere_contrast(
    image: np.ndarray,
    center_rc: Sequence[float],
    diameter_mm: float,
    spacing_mm: Sequence[float],
    true_ratio: float,
    *,
    background_mask: np.ndarray | None = None,
    ring_mm: float | None = None,
    n_background: int = 12,
    min_background: int = 3,
) -> dict[str, float]:
    """NEMA NU 2-style hot-sphere contrast on one transverse slice through the sphere centre.

    Definitions (NEMA NU 2-2018 section 7, adapted to one slice):
    - C_H: mean value in a circular ROI of diameter `diameter_mm` centred on the sphere
      (pixels whose centres are inside the circle).
    - Background ROIs: `n_background` circles of the same diameter, centres on a ring of radius
      `ring_mm` (default: diameter + 10 mm, i.e. 10 mm + D/2 clear of the sphere edge) around
      the sphere; a ROI is kept only if all its pixels are inside the image and inside
      `background_mask` (if given; pass the body minus all lesions). C_B,k: the kept ROIs' means.
    - C_B = mean_k C_B,k;  SD_B = sqrt(sum_k (C_B,k - C_B)^2 / (K - 1)).
    - CRC (hot) = (C_H / C_B - 1) / (a_H / a_B - 1), with a_H / a_B = `true_ratio` (> 1).
    - BV (background variability) = SD_B / C_B.
    - CNR = (C_H - C_B) / SD_B  (inf when SD_B == 0 and C_H > C_B).
    Returns dict(c_hot, c_bkg, sd_bkg, crc, bv, cnr, n_background); all NaN when fewer than
    `min_background` background ROIs could be placed.
    """
    if true_ratio <= 1:
        raise ValueError(f"true_ratio must be > 1 for a hot sphere, got {true_ratio}")
    img = np.asarray(image, np.float64)
    r = diameter_mm / 2.0
    hot = disk_mask(img.shape, center_rc, r, spacing_mm)
    nan = float("nan")
    if not hot.any():
        return dict(c_hot=nan, c_bkg=nan, sd_bkg=nan, crc=nan, bv=nan, cnr=nan, n_background=0)
    c_hot = float(img[hot].mean())
    ring = diameter_mm + 10.0 if ring_mm is None else float(ring_mm)
    bkg_means = _background_means(img, center_rc, r, ring, spacing_mm, n_background, background_mask)
    k = len(bkg_means)
    if k < max(2, min_background):
        return dict(c_hot=c_hot, c_bkg=nan, sd_bkg=nan, crc=nan, bv=nan, cnr=nan, n_background=k)
    c_bkg = float(np.mean(bkg_means))
    sd_bkg = float(np.std(bkg_means, ddof=1))
    crc = (c_hot / c_bkg - 1.0) / (true_ratio - 1.0) if c_bkg != 0 else nan
    bv = sd_bkg / c_bkg if c_bkg != 0 else nan
    if sd_bkg > 0:
        cnr = (c_hot - c_bkg) / sd_bkg
    else:
        cnr = math.copysign(float("inf"), c_hot - c_bkg) if c_hot != c_bkg else nan
    return dict(c_hot=c_hot, c_bkg=c_bkg, sd_bkg=sd_bkg, crc=float(crc), bv=float(bv), cnr=float(cnr), n_background=k)


# ----------------------------------------------------------------------------- detection
def detect_hot_spots(
    image: np.ndarray,
    *,
    threshold: float,
    spacing_mm: Sequence[float],
    min_separation_mm: float = 5.0,
    mask: np.ndarray | None = None,
) -> list[tuple[float, float, float]]:
    """The detector: local maxima of the SUV image above `threshold`.

    A pixel is a candidate when its value is >= `threshold`, equals the maximum of the image over
    the rectangular neighbourhood reaching `min_separation_mm` each way (rounded to whole pixels
    per axis, at least 1), and lies inside `mask` (if given). 8-connected candidates (a
    flat-topped maximum) are merged into one detection at their centroid, so a flat region above
    the threshold is one detection. Returns a list of (row, col, score), score = the peak SUV,
    highest score first.
    """
    import cv2

    img = np.asarray(image, np.float64)
    half = [max(1, int(round(min_separation_mm / s))) for s in spacing_mm]
    neighbourhood_max = cv2.dilate(img, np.ones((2 * half[0] + 1, 2 * half[1] + 1), np.uint8))  # border ignored
    cand = (img == neighbourhood_max) & (img >= threshold)
    if mask is not None:
        cand &= np.asarray(mask, bool)
    n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
    out = []
    for lab in range(1, n):
        rr, cc = np.nonzero(labels == lab)
        out.append((float(rr.mean()), float(cc.mean()), float(img[rr, cc].max())))
    out.sort(key=lambda d: -d[2])
    return out


def match_detections(
    detections: Iterable[tuple[float, float, float]],
    lesions: Sequence[dict],
    spacing_mm: Sequence[float],
) -> tuple[list[float], list[float]]:
    """Matches one slice's detections to the lesions crossing that slice.

    `lesions`: dicts with center_rc (row, col px of the lesion centre projected on the slice),
    radius_mm (acceptance radius: the lesion's cross-section radius on this slice; use at least
    about one pixel) and scored (True for the slice on which this lesion counts for sensitivity,
    i.e. the slice nearest its centre). A detection is a true positive for the lesion it lies
    within (distance <= radius_mm; nearest lesion centre if several); detections inside no
    lesion are false positives. Returns (lesion_scores, fp_scores): for each lesion with
    scored=True (in order) the highest matching detection score (-inf if none), and the scores
    of the false positives.
    """
    lesion_scores = [-math.inf] * len(lesions)
    fps = []
    for r, c, s in detections:
        best, best_d = None, math.inf
        for i, les in enumerate(lesions):
            d = math.hypot((r - les["center_rc"][0]) * spacing_mm[0], (c - les["center_rc"][1]) * spacing_mm[1])
            if d <= les["radius_mm"] and d < best_d:
                best, best_d = i, d
        if best is None:
            fps.append(s)
        else:
            lesion_scores[best] = max(lesion_scores[best], s)
    return [s for s, les in zip(lesion_scores, lesions) if les.get("scored", True)], fps


def detection_summary(
    lesion_scores: Sequence[float],
    lesion_diameters_mm: Sequence[float],
    fp_scores: Sequence[float],
    n_slices: int,
    threshold: float,
) -> dict:
    """Sensitivity and false positives at one operating point (detections with score >= threshold).

    sensitivity = detected lesions / lesions; sensitivity_per_size maps each diameter (mm, as
    "%g" text) to the same ratio over the lesions of that size; fp_per_slice = false positives /
    `n_slices` (all slices scored, lesion-free ones included). NaN where a denominator is 0.
    """
    ls = np.asarray(lesion_scores, float)
    ds = np.asarray(lesion_diameters_mm, float)
    hit = ls >= threshold
    per_size = {f"{d:g}": float(hit[ds == d].mean()) for d in sorted(set(ds.tolist()))}
    n_fp = int(np.sum(np.asarray(fp_scores, float) >= threshold))
    return dict(
        threshold=float(threshold),
        n_lesions=int(ls.size),
        n_detected=int(hit.sum()),
        sensitivity=float(hit.mean()) if ls.size else float("nan"),
        sensitivity_per_size=per_size,
        n_false_positives=n_fp,
        fp_per_slice=n_fp / n_slices if n_slices else float("nan"),
    )


def froc(lesion_scores: Sequence[float], fp_scores: Sequence[float], n_slices: int) -> list[dict]:
    """Free-response ROC as the corners of its staircase: operating points "detections with score >= t" for the
    distinct detection scores t (descending), dict(threshold=t, sensitivity, fp_per_slice). Of each run of points
    with the same sensitivity only the first and the last are kept (the ones between add false positives only
    and lie on the segment joining them), so the curve costs O(lesions) points, not O(candidates).
    Sensitivity is over all lesions (NaN if none); fp_per_slice over `n_slices`."""
    ls = np.asarray(lesion_scores, float)
    fs = np.asarray(fp_scores, float)
    ts = np.unique(np.concatenate([ls[np.isfinite(ls)], fs[np.isfinite(fs)]]))[::-1]
    if ts.size == 0:
        return []
    ls_sorted, fs_sorted = np.sort(ls), np.sort(fs)
    n_les = np.searchsorted(ls_sorted, ts, side="left")  # lesions with score < t
    n_fp = np.searchsorted(fs_sorted, ts, side="left")
    sens = (ls.size - n_les) / ls.size if ls.size else np.full(ts.shape, np.nan)
    fpps = (fs.size - n_fp) / n_slices if n_slices else np.full(ts.shape, np.nan)
    level = ls.size - n_les  # lesions found: the sensitivity level, exact in integers
    keep = np.ones(ts.size, bool)
    keep[1:-1] = (level[1:-1] != level[:-2]) | (level[1:-1] != level[2:])
    return [dict(threshold=float(t), sensitivity=float(a), fp_per_slice=float(b))
            for t, a, b in zip(ts[keep], sens[keep], fpps[keep])]


# ----------------------------------------------------------------------------- fusion
def _hist_range(a: np.ndarray, value_range):
    if value_range is not None:
        return float(value_range[0]), float(value_range[1])
    lo, hi = float(np.min(a)), float(np.max(a))
    return (lo, hi) if hi > lo else (lo - 0.5, lo + 0.5)


def entropy(a: np.ndarray, *, bins: int = 64, value_range=None) -> float:
    """Shannon entropy in bits of the grey-level histogram: H = -sum_i p_i log2 p_i, with `bins`
    equal bins over `value_range` (default: the image's min..max; values outside are clipped in)."""
    a = np.asarray(a, np.float64).ravel()
    lo, hi = _hist_range(a, value_range)
    p, _ = np.histogram(np.clip(a, lo, hi), bins=bins, range=(lo, hi))
    p = p[p > 0] / a.size
    return float(-(p * np.log2(p)).sum())


def mutual_information(a: np.ndarray, b: np.ndarray, *, bins: int = 64, range_a=None, range_b=None) -> float:
    """Mutual information in bits from the joint grey-level histogram:
    MI(A;B) = sum_ij p_ij log2(p_ij / (p_i p_j)), `bins` x `bins` equal bins over each image's
    range (default min..max; values outside are clipped in). MI(A;A) = entropy(A)."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"size mismatch: {a.size} vs {b.size}")
    ra, rb = _hist_range(a, range_a), _hist_range(b, range_b)
    j, _, _ = np.histogram2d(np.clip(a, *ra), np.clip(b, *rb), bins=bins, range=(ra, rb))
    p = j / a.size
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log2(p[nz] / (pa @ pb)[nz])).sum())


# Xydeas & Petrovic (2000) constants.
QABF_GAMMA_G, QABF_KAPPA_G, QABF_SIGMA_G = 0.9994, -15.0, 0.5
QABF_GAMMA_A, QABF_KAPPA_A, QABF_SIGMA_A = 0.9879, -22.0, 0.8


def _sobel(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    gx = cv2.Sobel(img, cv2.CV_64F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)  # d/dcol
    gy = cv2.Sobel(img, cv2.CV_64F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)  # d/drow
    return np.hypot(gx, gy), np.arctan(gy / np.where(gx == 0, 1e-12, gx))


def _edge_preservation(ga, aa, gf, af):
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.where(ga > gf, gf / ga, ga / gf)
    g = np.where((ga == 0) & (gf == 0), 1.0, np.nan_to_num(g, nan=0.0))
    d = np.abs(aa - af) % np.pi
    d = np.minimum(d, np.pi - d)  # angle between the edge lines, in [0, pi/2]
    a = 1.0 - d / (np.pi / 2)
    qg = QABF_GAMMA_G / (1.0 + np.exp(QABF_KAPPA_G * (g - QABF_SIGMA_G)))
    qa = QABF_GAMMA_A / (1.0 + np.exp(QABF_KAPPA_A * (a - QABF_SIGMA_A)))
    return qg * qa


def qabf(a: np.ndarray, b: np.ndarray, fused: np.ndarray) -> float:
    """Edge-information transfer Q^{AB/F} of Xydeas & Petrovic (Electron. Lett. 36(4), 2000).

    Inputs must share one intensity scale (e.g. each mapped to [0, 1] over a stated range).
    For each image X: 3x3 Sobel gradients (OpenCV, replicated border) sx (along columns), sy (along rows); edge strength
    g_X = sqrt(sx^2 + sy^2), orientation alpha_X = arctan(sy / sx) in [-pi/2, pi/2].
    For source S in {A, B} against F, per pixel:
      G^SF = g_F / g_S if g_S > g_F else g_S / g_F  (1 where both are 0),
      A^SF = 1 - d / (pi/2), d = the angle between the two edge lines (|alpha_S - alpha_F| taken
             modulo pi and folded into [0, pi/2]),
      Q^SF = Gamma_g / (1 + exp(k_g (G^SF - s_g))) * Gamma_a / (1 + exp(k_a (A^SF - s_a))),
      with Gamma_g = 0.9994, k_g = -15, s_g = 0.5, Gamma_a = 0.9879, k_a = -22, s_a = 0.8.
    Q^{AB/F} = sum(Q^AF w^A + Q^BF w^B) / sum(w^A + w^B), weights w^S = g_S (L = 1).
    Range [0, ~0.975] (a perfect copy scores Q_g(1) Q_a(1) ~ 0.975 with these constants);
    NaN if both sources are flat.
    """
    imgs = [np.asarray(x, np.float64) for x in (a, b, fused)]
    if not (imgs[0].shape == imgs[1].shape == imgs[2].shape):
        raise ValueError(f"shape mismatch: {[x.shape for x in imgs]}")
    (ga, aa), (gb, ab), (gf, af) = (_sobel(x) for x in imgs)
    num = (_edge_preservation(ga, aa, gf, af) * ga + _edge_preservation(gb, ab, gf, af) * gb).sum()
    den = (ga + gb).sum()
    return float(num / den) if den > 0 else float("nan")


def to_unit_range(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Clips `x` to [lo, hi] (physical units) and maps it linearly to [0, 1]."""
    return (np.clip(np.asarray(x, np.float64), lo, hi) - lo) / (hi - lo)


# ----------------------------------------------------------------------------- statistics
def bootstrap_ci(values: Sequence[float], *, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of `values` (NaNs dropped) and its percentile bootstrap (1 - alpha) CI:
    resample the values with replacement `n_boot` times (numpy default_rng(seed)), take the
    alpha/2 and 1 - alpha/2 quantiles of the resampled means. One value gives (v, v, v); none NaN."""
    v = np.asarray([x for x in values if np.isfinite(x)], float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    return float(v.mean()), float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))
