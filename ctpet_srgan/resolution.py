"""Effective resolution and noise texture of an SR image against its truth (issue 12: what the GAN phase changes).

- Effective resolution (`excess_fwhm`): the FWHM of the isotropic 2-D Gaussian that, applied to the truth, best
  explains the SR image around an object (a lesion): SR ~ a * (truth * G_fwhm) + b, with a, b by linear least
  squares for each trial FWHM and the FWHM by bounded scalar minimisation (scipy.optimize.minimize_scalar). This is
  the "sphere convolved with a Gaussian PSF of unknown FWHM" fit with the truth sphere as the object, so it needs no
  model of the sphere's sampling or of the truth's own PSF: 0 mm = as sharp as the truth. An image SHARPER than
  its truth (edge overshoot) is fitted the other way round (truth ~ a * (SR * G) + b) and gets a negative FWHM.
- Noise texture (`noise_power_spectrum`): the radially averaged noise power spectrum (NPS) of the residual
  SR - truth in square ROIs that lie inside a uniform region (`uniform_mask`: inside the body, away from the
  truth's edges), as in AAPM TG-233 / ICRU 87: NPS(f) = |DFT(ROI - mean)|^2 * dx dy / (Nx Ny), averaged over ROIs;
  its integral over the 2-D frequency plane is the residual variance. Summaries: the NPS-weighted mean frequency
  f_av = sum f NPS(f) / sum NPS(f) over the radial bins up to Nyquist, the peak frequency and the residual SD.
  Smoother (correlated) noise has a lower f_av; white noise has a flat NPS and f_av ~ Nyquist / 2.

Units: images in any one unit (SUV here); distances in mm; frequencies in cycles/mm.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, optimize

from ctpet_srgan.degradation import fwhm_to_sigma_mm


def gaussian_blur_mm(image: np.ndarray, fwhm_mm: float, spacing_mm: tuple[float, float]) -> np.ndarray:
    """2-D Gaussian blur of a given FWHM.

    Args:
        image: [H, W]. fwhm_mm: FWHM of the Gaussian (mm; 0: unchanged). spacing_mm: (row, col) pixel size (mm).
    Returns:
        [H, W] float64 (scipy.ndimage.gaussian_filter, mode "nearest").
    """
    img = np.asarray(image, np.float64)
    if fwhm_mm <= 0:
        return img.copy()
    sigma = [fwhm_to_sigma_mm(fwhm_mm) / float(s) for s in spacing_mm]
    return ndimage.gaussian_filter(img, sigma, mode="nearest")


def _blur_fit(target: np.ndarray, source: np.ndarray, spacing_mm, weights: np.ndarray | None,
              max_fwhm_mm: float) -> tuple[float, float]:
    """(FWHM, residual RMS) of target ~ a * blur(source, FWHM) + b, FWHM in [0, max_fwhm_mm]."""
    t = np.asarray(target, np.float64).ravel()
    w = np.ones_like(t) if weights is None else np.asarray(weights, np.float64).ravel()

    def rss(fwhm: float) -> float:
        x = gaussian_blur_mm(source, fwhm, spacing_mm).ravel()
        a_mat = np.stack([x, np.ones_like(x)], 1) * w[:, None]
        coef, *_ = np.linalg.lstsq(a_mat, t * w, rcond=None)
        return float(np.sum((a_mat @ coef - t * w) ** 2))

    res = optimize.minimize_scalar(rss, bounds=(0.0, max_fwhm_mm), method="bounded", options={"xatol": 1e-3})
    fwhm = float(res.x)
    if rss(0.0) <= res.fun:  # the bounded search never evaluates the end point itself
        fwhm = 0.0
    return fwhm, math.sqrt(rss(fwhm) / max(float(np.sum(w**2)), 1e-12))


def excess_fwhm(sr: np.ndarray, truth: np.ndarray, spacing_mm: tuple[float, float], *,
                max_fwhm_mm: float = 30.0) -> dict[str, float]:
    """Effective resolution of `sr` relative to `truth` on one ROI (e.g. a square around a lesion).

    Args:
        sr, truth: [h, w] ROI of the SR image and of the truth (same unit, e.g. SUV). spacing_mm: (row, col) mm.
        max_fwhm_mm: upper bound of the fit (mm).
    Returns:
        {"fwhm_mm": the FWHM (mm) of the Gaussian blur of the truth that best explains sr (> 0: blurrier than the
        truth; < 0: sharper than the truth, fitted as truth ~ blur(sr)), "gain": the fitted a, "rms": residual RMS
        (the image's unit)}.
    """
    sr, truth = np.asarray(sr, np.float64), np.asarray(truth, np.float64)
    if sr.shape != truth.shape or sr.ndim != 2:
        raise ValueError(f"sr and truth must be 2-D ROIs of one shape, got {sr.shape} and {truth.shape}")
    fwhm, rms = _blur_fit(sr, truth, spacing_mm, None, max_fwhm_mm)
    if fwhm == 0.0:
        back, rms_back = _blur_fit(truth, sr, spacing_mm, None, max_fwhm_mm)
        if back > 0.0:
            fwhm, rms = -back, rms_back
    x = gaussian_blur_mm(truth, max(fwhm, 0.0), spacing_mm).ravel()
    a, _ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), sr.ravel(), rcond=None)[0]
    return {"fwhm_mm": fwhm, "gain": float(a), "rms": rms}


def roi_around(center_rc: tuple[float, float], half_mm: float, spacing_mm: tuple[float, float],
               shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """Square ROI of half-side `half_mm` around a (row, col) pixel position, or None where it leaves the image."""
    hr, hc = (int(math.ceil(half_mm / float(s))) for s in spacing_mm)
    r, c = (int(round(v)) for v in center_rc)
    if r - hr < 0 or c - hc < 0 or r + hr + 1 > shape[0] or c + hc + 1 > shape[1]:
        return None
    return slice(r - hr, r + hr + 1), slice(c - hc, c + hc + 1)


def uniform_mask(truth: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, float], *,
                 max_gradient_per_mm: float, margin_mm: float = 6.0) -> np.ndarray:
    """Pixels of a uniform region: inside the body, at least `margin_mm` from the body's border and from every
    pixel where the truth's gradient magnitude exceeds `max_gradient_per_mm` (the image's unit per mm).

    Args:
        truth: [H, W] truth image. body: [H, W] bool. spacing_mm: (row, col) mm.
        max_gradient_per_mm: edge threshold on |grad truth| (Sobel, per mm). margin_mm: distance kept (mm).
    Returns:
        [H, W] bool.
    """
    t = np.asarray(truth, np.float64)
    gr = ndimage.sobel(t, axis=0, mode="nearest") / (8.0 * float(spacing_mm[0]))
    gc = ndimage.sobel(t, axis=1, mode="nearest") / (8.0 * float(spacing_mm[1]))
    bad = (np.hypot(gr, gc) > max_gradient_per_mm) | ~np.asarray(body, bool)
    dist = ndimage.distance_transform_edt(~bad, sampling=[float(s) for s in spacing_mm])
    return dist >= margin_mm


def square_rois(mask: np.ndarray, size: int) -> list[tuple[slice, slice]]:
    """Non-overlapping size x size squares (on a grid from the origin) lying wholly inside `mask`."""
    m = np.asarray(mask, bool)
    out = []
    for r in range(0, m.shape[0] - size + 1, size):
        for c in range(0, m.shape[1] - size + 1, size):
            if m[r:r + size, c:c + size].all():
                out.append((slice(r, r + size), slice(c, c + size)))
    return out


def noise_power_spectrum(rois: list[np.ndarray], spacing_mm: tuple[float, float]) -> dict[str, object]:
    """Radially averaged NPS of noise ROIs (each has its own mean removed).

    Args:
        rois: square [n, n] noise images (e.g. SR - truth), all of one size. spacing_mm: (row, col) pixel size (mm).
    Returns:
        {"freq": radial bin centres k / (n d), k = 1 .. n // 2 (cycles/mm; d = the larger spacing; the last is
        Nyquist; DC, removed with the mean, is left out), "nps": radial NPS (unit^2 mm^2), "f_mean": NPS-weighted
        mean frequency of the radial bins, "f_peak": frequency of the largest bin (cycles/mm), "variance": the 2-D
        NPS integrated over the frequency plane (= the mean ROI variance, unit^2), "sd": its square root, "n_rois"}.
    Raises:
        ValueError: no ROI, or ROIs that are not square and of one size.
    """
    if not rois:
        raise ValueError("noise_power_spectrum: no ROI")
    stack = np.stack([np.asarray(r, np.float64) for r in rois])
    if stack.ndim != 3 or stack.shape[1] != stack.shape[2] or stack.shape[1] < 4:
        raise ValueError(f"noise_power_spectrum: ROIs must be square, of one size and >= 4 px, got {stack.shape[1:]}")
    n = stack.shape[1]
    dr, dc = (float(s) for s in spacing_mm)
    stack = stack - stack.mean(axis=(1, 2), keepdims=True)
    nps2d = (np.abs(np.fft.fft2(stack)) ** 2).mean(0) * dr * dc / (n * n)
    fr, fc = np.meshgrid(np.fft.fftfreq(n, dr), np.fft.fftfreq(n, dc), indexing="ij")
    df = 1.0 / (n * max(dr, dc))
    idx = np.rint(np.hypot(fr, fc).ravel() / df).astype(int)  # bin k holds |f| in [(k - 1/2) df, (k + 1/2) df)
    bins = n // 2
    keep = (idx >= 1) & (idx <= bins)
    counts = np.bincount(idx[keep], minlength=bins + 1)[1:]
    sums = np.bincount(idx[keep], weights=nps2d.ravel()[keep], minlength=bins + 1)[1:]
    radial = sums / np.maximum(counts, 1)
    centres = df * np.arange(1, bins + 1)
    total = float(radial.sum())
    variance = float(nps2d.sum() / (n * n * dr * dc))
    return {"freq": centres, "nps": radial,
            "f_mean": float(np.sum(centres * radial) / total) if total > 0 else math.nan,
            "f_peak": float(centres[np.argmax(radial)]), "variance": variance, "sd": math.sqrt(variance),
            "n_rois": len(rois)}
