"""Where the manifest's lesions (LPS mm) lie on a study's HR slices (pixels, cross-section radii)."""

from __future__ import annotations

import math

import numpy as np

from ctpet_srgan.geometry import Volume


def slice_volume(hr_affine: np.ndarray) -> Volume:
    """The HR grid of a slice as a `geometry.Volume` (index (i, j, k) -> LPS mm; k along the slice axis)."""
    return Volume(np.zeros((1, 1, 1), np.float32), np.asarray(hr_affine, float))


def spacing_rc(hr_affine: np.ndarray) -> tuple[float, float]:
    """(row, col) pixel spacing in mm of a slice grid."""
    i, j, _ = slice_volume(hr_affine).spacing_mm
    return (j, i)


def lesion_on_slice(center_mm, hr_affine) -> tuple[float, tuple[float, float]]:
    """Where a point lies relative to a slice.

    Args:
        center_mm: LPS point (mm). hr_affine: the slice grid (index (i, j, 0) -> LPS mm).

    Returns:
        (signed distance in mm from the slice plane along the slice axis, (row, col) in pixels of the point).
    """
    v = slice_volume(hr_affine)
    i, j, k = v.patient_to_index(np.asarray(center_mm, float))
    return float(k * v.spacing_mm[2]), (float(j), float(i))


def place_lesions(lesions: list[dict], slices: list[dict]) -> tuple[list[list[dict]], int]:
    """The hot lesions (uptake_ratio > 1) of a study on its slices.

    Args:
        lesions: manifest lesions (center_mm LPS, diameter_mm, uptake_ratio). slices: the study's slices.

    Returns:
        (per slice: the hot lesions crossing it as dicts of id, center_rc (px), radius_mm (cross-section radius),
        diameter_mm, uptake_ratio and scored (this is the slice nearest the centre); the number of hot lesions
        that cross none of the slices).
    """
    per_slice: list[list[dict]] = [[] for _ in slices]
    missing = 0
    for lid, les in enumerate(lesions):
        if float(les.get("uptake_ratio", 0)) <= 1:
            continue
        r = float(les["diameter_mm"]) / 2
        geo = [lesion_on_slice(les["center_mm"], s["hr_affine"]) for s in slices]
        k0 = int(np.argmin([abs(dz) for dz, _ in geo])) if geo else -1
        if k0 < 0 or abs(geo[k0][0]) >= r:
            missing += 1
            continue
        for k, (dz, rc) in enumerate(geo):
            if abs(dz) < r:
                per_slice[k].append(dict(id=lid, center_rc=rc, radius_mm=math.sqrt(r * r - dz * dz),
                                         diameter_mm=float(les["diameter_mm"]), uptake_ratio=float(les["uptake_ratio"]),
                                         scored=k == k0))
    return per_slice, missing
