"""Tumour quantification on 3-D PET volumes: SUVmax, SUVmean, SUVpeak (1 mL sphere), background shell and TBR.

Pure functions on NumPy arrays in physical units. Arrays are 3-D (slices, rows, cols) = (k, j, i) on one grid;
`spacing_mm` is the voxel size in the same axis order (slice, row, col), in mm, and may be anisotropic.
Masks are boolean (or 0/1) arrays of the same shape. The definitions are collected in docs/metrics.md.

SUVpeak follows PERCIST 1.0 / EARL (Wahl et al. 2009; Boellaard et al. 2015): the highest mean SUV within a
sphere of 1 cm^3 (radius 6.2 mm, diameter 1.24 cm) positioned anywhere within the tumour. Here its centre is any
voxel centre inside the tumour mask (no sub-voxel search), the sphere holds the voxels whose centres lie within
the radius (equal weights, no partial-voxel weighting), it may reach outside the tumour, and voxels outside the
array are left out of the mean.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

SPHERE_1ML_RADIUS_MM = 10.0 * (3.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 6.2035 mm: (4/3) pi r^3 = 1000 mm^3
TUMOUR_KEYS = ("suvmax", "suvmean", "suvpeak", "tbr")  # the quantities compared between images (tumour_stats)
BACKGROUND_SHELL_MM = (10.0, 20.0)  # the background: voxels 10 < d <= 20 mm from the tumour, inside the body
_CHUNK = 4096  # sphere centres evaluated at once (memory: chunk x sphere voxels x 3 indices)


def _spacing(spacing_mm: Sequence[float]) -> np.ndarray:
    sp = np.asarray(spacing_mm, float)
    if sp.shape != (3,) or np.any(sp <= 0):
        raise ValueError(f"spacing_mm must be 3 positive values (slice, row, col) in mm, got {spacing_mm}")
    return sp


def sphere_offsets(spacing_mm: Sequence[float], radius_mm: float = SPHERE_1ML_RADIUS_MM) -> np.ndarray:
    """The voxels of a sphere centred on a voxel centre.

    Args:
        spacing_mm: voxel size (slice, row, col) in mm. radius_mm: sphere radius in mm.

    Returns:
        (n, 3) int offsets (dk, dj, di) of the voxels whose centres lie within radius_mm of the centre voxel's.
    """
    sp = _spacing(spacing_mm)
    reach = np.floor(radius_mm / sp + 1e-9).astype(int)
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in reach], indexing="ij")
    off = np.stack([g.ravel() for g in grids], axis=1)
    return off[((off * sp) ** 2).sum(axis=1) <= radius_mm**2 * (1 + 1e-9)]


def sphere_means(pet: np.ndarray, centres: np.ndarray, spacing_mm: Sequence[float],
                 radius_mm: float = SPHERE_1ML_RADIUS_MM) -> np.ndarray:
    """Mean SUV within a sphere around each centre voxel (voxels outside the array left out).

    Args:
        pet: 3-D PET (SUV). centres: (m, 3) int voxel indices (k, j, i). spacing_mm: (slice, row, col) mm.
        radius_mm: sphere radius (mm).

    Returns:
        (m,) float64 mean SUV per centre.
    """
    pet = np.asarray(pet, np.float64)
    off = sphere_offsets(spacing_mm, radius_mm)
    shape = np.asarray(pet.shape)
    c = np.asarray(centres, int).reshape(-1, 3)
    out = np.empty(len(c), np.float64)
    for a in range(0, len(c), _CHUNK):
        idx = c[a:a + _CHUNK, None, :] + off[None, :, :]
        inside = np.all((idx >= 0) & (idx < shape), axis=2)
        idx = np.clip(idx, 0, shape - 1)
        vals = pet[idx[..., 0], idx[..., 1], idx[..., 2]]
        out[a:a + _CHUNK] = (vals * inside).sum(axis=1) / inside.sum(axis=1)
    return out


def suv_max(pet: np.ndarray, mask: np.ndarray) -> float:
    """Highest voxel SUV inside `mask` (NaN for an empty mask)."""
    m = np.asarray(mask, bool)
    return float(np.asarray(pet, np.float64)[m].max()) if m.any() else float("nan")


def suv_mean(pet: np.ndarray, mask: np.ndarray) -> float:
    """Mean voxel SUV inside `mask` (NaN for an empty mask)."""
    m = np.asarray(mask, bool)
    return float(np.asarray(pet, np.float64)[m].mean()) if m.any() else float("nan")


def suv_peak(pet: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float],
             radius_mm: float = SPHERE_1ML_RADIUS_MM) -> float:
    """SUVpeak: the highest 1 mL sphere mean centred on any voxel of the tumour (see the module docstring).

    Args:
        pet: 3-D PET (SUV). mask: the tumour. spacing_mm: (slice, row, col) mm. radius_mm: sphere radius (mm).

    Returns:
        SUVpeak (SUV); NaN for an empty mask.
    """
    m = np.asarray(mask, bool)
    if not m.any():
        return float("nan")
    return float(sphere_means(pet, np.argwhere(m), spacing_mm, radius_mm).max())


def distance_mm(mask: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """Euclidean distance (mm) from every voxel centre to the nearest voxel centre of `mask` (0 inside).

    Exact, anisotropic (SimpleITK's Maurer distance map with the image spacing). An empty mask gives +inf.
    """
    import SimpleITK as sitk

    sp = _spacing(spacing_mm)
    m = np.asarray(mask, bool)
    if not m.any():
        return np.full(m.shape, np.inf)
    img = sitk.GetImageFromArray(m.astype(np.uint8))
    img.SetSpacing(tuple(float(v) for v in sp[::-1]))  # SimpleITK orders (i, j, k)
    d = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(img, insideIsPositive=False, squaredDistance=False,
                                                            useImageSpacing=True))
    return np.where(m, 0.0, np.maximum(d, 0.0)).astype(np.float64)


def background_shell(mask: np.ndarray, spacing_mm: Sequence[float], body: np.ndarray | None = None,
                     inner_mm: float = BACKGROUND_SHELL_MM[0], outer_mm: float = BACKGROUND_SHELL_MM[1]) -> np.ndarray:
    """The tumour's background: voxels whose distance to the tumour is in (inner_mm, outer_mm], inside the body.

    Args:
        mask: the tumour. spacing_mm: (slice, row, col) mm. body: voxels in the body (None: all).
        inner_mm, outer_mm: the shell's distances from the nearest tumour voxel centre (mm).

    Returns:
        Boolean shell mask (never overlapping the tumour).
    """
    d = distance_mm(mask, spacing_mm)
    shell = (d > inner_mm) & (d <= outer_mm)
    return shell & np.asarray(body, bool) if body is not None else shell


def tumour_stats(pet: np.ndarray, mask: np.ndarray, spacing_mm: Sequence[float], shell: np.ndarray) -> dict:
    """SUVmax, SUVmean, SUVpeak of the tumour, the background mean and the tumour-to-background ratio.

    Args:
        pet: 3-D PET (SUV). mask: the tumour. spacing_mm: (slice, row, col) mm. shell: the background voxels
            (background_shell).

    Returns:
        suvmax, suvmean, suvpeak, background_mean (SUV) and tbr = suvmean / background_mean (NaN when
        undefined: empty tumour or background, or a background mean <= 0).
    """
    bkg = suv_mean(pet, shell)
    mean = suv_mean(pet, mask)
    return dict(suvmax=suv_max(pet, mask), suvmean=mean, suvpeak=suv_peak(pet, mask, spacing_mm),
                background_mean=bkg, tbr=mean / bkg if np.isfinite(bkg) and bkg > 0 else float("nan"))


def relative_error(value: float, reference: float) -> float:
    """(value - reference) / reference; NaN when the reference is 0 or either value is NaN."""
    if not (np.isfinite(reference) and reference != 0) or np.isnan(value):
        return float("nan")
    return float((value - reference) / reference)
