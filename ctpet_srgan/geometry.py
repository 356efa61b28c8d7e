"""Volumes in patient space: the array, its voxel-to-patient affine, and resampling between grids.

Conventions used everywhere in the project:
- `Volume.array` is float32 with shape (slices, rows, cols) = (k, j, i).
- `Volume.affine` is a 4x4 matrix mapping the index vector (i=col, j=row, k=slice, 1) to DICOM
  patient coordinates in mm (LPS: +x to the patient's left, +y posterior, +z head).
  NIfTI's RAS affines are converted on reading (first two rows negated).
- Resampling uses SimpleITK (linear by default) with the full direction matrix, so oblique grids work.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclasses.dataclass
class Volume:
    """A 3-D image in patient space. `units` is "HU" for CT and "SUVbw" for PET."""

    array: np.ndarray  # (k, j, i) float32
    affine: np.ndarray  # 4x4, index (i, j, k) -> LPS mm
    modality: str = ""  # "CT" or "PT"
    units: str = ""  # "HU", "SUVbw", ...
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)  # no patient identifiers

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size (i, j, k) in mm: the column, row and slice steps."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix of unit column vectors: the i, j, k axes in LPS."""
        return self.affine[:3, :3] / np.asarray(self.spacing_mm)[None, :]

    def index_to_patient(self, ijk: np.ndarray) -> np.ndarray:
        """(..., 3) indices (i, j, k) -> (..., 3) LPS mm."""
        ijk = np.asarray(ijk, dtype=np.float64)
        return ijk @ self.affine[:3, :3].T + self.affine[:3, 3]

    def patient_to_index(self, xyz: np.ndarray) -> np.ndarray:
        """(..., 3) LPS mm -> (..., 3) continuous indices (i, j, k)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return xyz @ inv[:3, :3].T + inv[:3, 3]


def affine_from_axes(
    origin_mm, row_cosine, col_cosine, spacing_ij_mm, slice_vector_mm
) -> np.ndarray:
    """Builds the affine from DICOM terms.

    origin_mm: ImagePositionPatient of the first slice; row_cosine: direction of increasing column
    index (first 3 of ImageOrientationPatient); col_cosine: direction of increasing row index;
    spacing_ij_mm: (column spacing, row spacing) = PixelSpacing[1], PixelSpacing[0];
    slice_vector_mm: position step from one slice to the next (mm, with direction).
    """
    a = np.eye(4)
    a[:3, 0] = np.asarray(row_cosine, float) * float(spacing_ij_mm[0])
    a[:3, 1] = np.asarray(col_cosine, float) * float(spacing_ij_mm[1])
    a[:3, 2] = np.asarray(slice_vector_mm, float)
    a[:3, 3] = np.asarray(origin_mm, float)
    return a


def axial_affine(origin_mm, spacing_mm) -> np.ndarray:
    """Affine of an axial grid with identity orientation. spacing_mm = (i, j, k) in mm."""
    return affine_from_axes(origin_mm, (1, 0, 0), (0, 1, 0), spacing_mm[:2], (0, 0, spacing_mm[2]))


def _to_sitk(vol_array: np.ndarray, affine: np.ndarray):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(vol_array, dtype=np.float32))
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    img.SetSpacing(tuple(float(s) for s in spacing))
    img.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    img.SetDirection(tuple(float(v) for v in (affine[:3, :3] / spacing[None, :]).ravel()))
    return img


def resample(
    vol: Volume,
    target_affine: np.ndarray,
    target_shape: tuple[int, int, int],
    *,
    interpolation: str = "linear",
    fill_value: float | None = None,
) -> Volume:
    """Resamples `vol` onto the grid (target_affine, target_shape=(k, j, i)) in patient space.

    `interpolation` is "linear", "nearest" or "bspline". Points outside `vol` get `fill_value`
    (default: -1024 HU for CT, 0 otherwise). The result carries `vol`'s modality, units and meta.
    """
    import SimpleITK as sitk

    if fill_value is None:
        fill_value = -1024.0 if vol.units == "HU" else 0.0
    interp = {
        "linear": sitk.sitkLinear,
        "nearest": sitk.sitkNearestNeighbor,
        "bspline": sitk.sitkBSpline,
    }[interpolation]
    src = _to_sitk(vol.array, vol.affine)
    ref = _to_sitk(np.zeros(target_shape, np.float32), target_affine)
    out = sitk.Resample(src, ref, sitk.Transform(), interp, float(fill_value), sitk.sitkFloat32)
    return Volume(
        sitk.GetArrayFromImage(out).astype(np.float32),
        np.asarray(target_affine, float).copy(),
        vol.modality,
        vol.units,
        dict(vol.meta),
    )


def bounding_box_mm(vol: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Min and max LPS coordinates (mm) of the voxel centres' corners of `vol`."""
    k, j, i = vol.shape
    corners = np.array([[a, b, c] for a in (0, i - 1) for b in (0, j - 1) for c in (0, k - 1)], float)
    pts = vol.index_to_patient(corners)
    return pts.min(axis=0), pts.max(axis=0)


def overlap_mm(a: Volume, b: Volume) -> tuple[np.ndarray, np.ndarray] | None:
    """Intersection of the two volumes' bounding boxes in LPS mm, or None if they do not overlap."""
    lo_a, hi_a = bounding_box_mm(a)
    lo_b, hi_b = bounding_box_mm(b)
    lo, hi = np.maximum(lo_a, lo_b), np.minimum(hi_a, hi_b)
    if np.any(hi < lo):
        return None
    return lo, hi
