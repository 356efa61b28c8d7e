"""Does the CT help, and can it hurt? Metrics of CT guidance on PET slices/volumes (pure NumPy).

Conventions: PET in SUVbw, CT in HU, arrays (rows, cols) for a slice or (slices, rows, cols) for a volume,
`spacing_mm` one value per array axis in that order, masks boolean arrays of the image's shape.

- Structures of the guided phantom world (`data_prep.phantom`, lesions.json): `inside_structure`,
  `structure_mask_on_slice` (the geometry of spheres, cylinders and slabs given in LPS mm).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


# ----------------------------------------------------------------------------- structure geometry
def structure_extent_mm(rec: Mapping[str, Any]) -> float:
    """Radius (mm) of a sphere about `rec["center_mm"]` that holds the whole structure.

    Args:
        rec: a structure record (shape "sphere" | "cylinder" | "slab"; see `inside_structure`).
    Returns:
        the bounding radius in mm.
    """
    r = float(rec["diameter_mm"]) / 2.0
    shape = rec.get("shape", "sphere")
    if shape == "cylinder":
        return float(np.hypot(r, float(rec["length_mm"]) / 2.0))
    if shape == "slab":
        return float(np.hypot(r, float(rec["thickness_mm"]) / 2.0))
    return r


def inside_structure(rec: Mapping[str, Any], xyz_mm: np.ndarray,
                     offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Which points lie inside a structure of the phantom world.

    Args:
        rec: dict with center_mm [x, y, z] (LPS mm), diameter_mm and shape: "sphere" (the default); "cylinder"
            (axis: unit vector, length_mm; diameter across the axis); "slab" (a disk of diameter_mm and
            thickness_mm across its unit `normal`).
        xyz_mm: (..., 3) points in LPS mm.
        offset_mm: added to the centre first (e.g. the record's shift_mm, to find it where the CT shows it).
    Returns:
        boolean array of shape xyz_mm.shape[:-1].
    """
    d = np.asarray(xyz_mm, np.float64) - (np.asarray(rec["center_mm"], np.float64) + np.asarray(offset_mm, np.float64))
    r = float(rec["diameter_mm"]) / 2.0
    shape = rec.get("shape", "sphere")
    if shape == "sphere":
        return np.einsum("...i,...i->...", d, d) <= r * r
    if shape in ("cylinder", "slab"):
        a = np.asarray(rec["axis"] if shape == "cylinder" else rec["normal"], np.float64)
        a = a / np.linalg.norm(a)
        t = d @ a
        across = d - t[..., None] * a
        half = float(rec["length_mm"] if shape == "cylinder" else rec["thickness_mm"]) / 2.0
        return (np.abs(t) <= half) & (np.einsum("...i,...i->...", across, across) <= r * r)
    raise ValueError(f"unknown structure shape {shape!r}")


def structure_mask_on_slice(rec: Mapping[str, Any], hr_affine: np.ndarray, shape: Sequence[int], *,
                            at_ct: bool = False) -> np.ndarray:
    """The pixels of one axial slice whose centres lie inside a structure.

    Args:
        rec: a structure record (see `inside_structure`); lesions.json of the guided world.
        hr_affine: 4x4 index (i = column, j = row, 0) -> LPS mm affine of the slice (the manifest's hr_affine).
        shape: (rows, cols) of the slice.
        at_ct: where the CT shows the structure (centre + rec["shift_mm"]) instead of where the PET has it.
    Returns:
        (rows, cols) boolean mask.
    """
    a = np.asarray(hr_affine, np.float64)
    rows, cols = int(shape[0]), int(shape[1])
    jj, ii = np.mgrid[0:rows, 0:cols]
    ijk = np.stack([ii, jj, np.zeros_like(ii)], -1).astype(np.float64)
    xyz = ijk @ a[:3, :3].T + a[:3, 3]
    off = rec.get("shift_mm", (0.0, 0.0, 0.0)) if at_ct else (0.0, 0.0, 0.0)
    return inside_structure(rec, xyz, off)
