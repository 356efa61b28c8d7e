"""RTSTRUCT contours -> voxel masks on any grid in patient space (pydicom + numpy; no rt-utils).

Conventions:
- Contours are CLOSED_PLANAR polygons of (x, y, z) points in LPS mm (DICOM ContourData). Other geometric types
  (POINT, OPEN_PLANAR, ...) enclose no area and are ignored with a warning.
- A grid is a 4x4 affine (index (i=col, j=row, k=slice) -> LPS mm) and a shape (K, H, W), as `geometry.Volume`.
- Slice assignment: each polygon lies at one continuous slice index k_c of the grid (mean of its points). A grid
  slice k takes the polygons of the contour plane nearest to it when that plane is within half a slice
  (|k_c - k| <= 0.5); several planes inside one slice (a grid coarser than the contours) are never merged.
- In-plane: a voxel is inside when its CENTRE is inside (crossing-number test at voxel centres). Several polygons
  of one plane combine by even-odd (XOR): a polygon inside another is a hole.
- Check: per slice, the rasterised area is compared with the polygons' own (shoelace) area. For a correct
  rasteriser they can differ only through voxels that straddle the boundary, so the difference is bounded by
  perimeter x voxel diagonal; a larger difference (self-intersecting or mis-assigned contours) is reported.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import logging
import os
from pathlib import Path

import numpy as np

from ctpet_srgan.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_ROI_PATTERN = "GTV_Mass*"


@dataclasses.dataclass(frozen=True)
class Roi:
    """One region of interest: its polygons (each (N, 3) float64, LPS mm)."""

    number: int
    name: str
    frame_of_reference_uid: str
    polygons: tuple[np.ndarray, ...]
    source: str = ""  # the file it came from (for error messages; never written to outputs)


@dataclasses.dataclass(frozen=True)
class SliceCheck:
    """Per-slice comparison of the rasterised area with the polygons' even-odd area (mm^2)."""

    slice_index: int
    raster_mm2: float
    polygon_mm2: float
    bound_mm2: float  # the largest difference a correct rasteriser can give (perimeter x voxel diagonal)

    @property
    def ok(self) -> bool:
        return abs(self.raster_mm2 - self.polygon_mm2) <= self.bound_mm2


# --------------------------------------------------------------------------------------------- reading
def read_rois(path: str | os.PathLike) -> list[Roi]:
    """All ROIs of an RTSTRUCT file with their CLOSED_PLANAR polygons.

    Args:
      path: an RTSTRUCT DICOM file.
    Returns:
      ROIs in StructureSetROISequence order (ROIs without contours have no polygons).
    Raises:
      InputError naming the file when it is unreadable, not an RTSTRUCT, or its contours are malformed.
    """
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(str(p))
    except Exception as e:  # noqa: BLE001 - pydicom raises many types for a bad file
        raise InputError(p, f"not a readable DICOM file ({e})") from None
    if str(ds.get("Modality", "")).upper() != "RTSTRUCT":
        raise InputError(p, f"modality {ds.get('Modality')!r} is not RTSTRUCT")
    if "StructureSetROISequence" not in ds:
        raise InputError(p, "RTSTRUCT without StructureSetROISequence (3006,0020)")
    contours: dict[int, list[np.ndarray]] = {}
    for rc in ds.get("ROIContourSequence", []):
        num = int(rc.get("ReferencedROINumber", -1))
        polys = contours.setdefault(num, [])
        for c in rc.get("ContourSequence", []):
            kind = str(c.get("ContourGeometricType", "")).upper()
            if kind != "CLOSED_PLANAR":
                log.warning("%s: ROI %d: %s contour ignored (encloses no area)", p, num, kind or "untyped")
                continue
            try:
                values = _contour_values(c)
            except (TypeError, ValueError):
                raise InputError(p, f"ROI {num}: ContourData is not numeric") from None
            if values is None or len(values) < 9 or len(values) % 3:
                raise InputError(p, f"ROI {num}: ContourData must hold >= 3 (x, y, z) points")
            pts = values.reshape(-1, 3)
            if not np.all(np.isfinite(pts)):
                raise InputError(p, f"ROI {num}: ContourData has non-finite values")
            polys.append(pts)
    out = []
    for r in ds.StructureSetROISequence:
        num = int(r.get("ROINumber", -1))
        out.append(Roi(num, str(r.get("ROIName", "")), str(r.get("ReferencedFrameOfReferenceUID", "")),
                       tuple(contours.get(num, [])), str(p)))
    return out


_CONTOUR_DATA = 0x30060050


def _contour_values(item) -> np.ndarray | None:
    """ContourData (3006,0050) of a ContourSequence item as float64 (mm), None when absent or empty.

    A still-raw element is parsed by numpy from its bytes (backslash-separated decimal strings): pydicom's own
    conversion builds one validated DSfloat object per coordinate, which took a third of a real study's
    preparation for ~1e5 coordinates. Same numbers (both round the decimal string to the nearest double).
    """
    elem = item.get_item(_CONTOUR_DATA)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(raw, (bytes, bytearray)):
        text = bytes(raw).strip(b" \x00")
        return np.array(text.split(b"\\"), dtype=np.float64) if text else None
    if raw is None or isinstance(raw, str) and not raw.strip():  # converted already: a DSfloat or a MultiValue
        return None
    values = [raw] if isinstance(raw, (str, float, int)) else list(raw)
    return np.asarray([float(v) for v in values], dtype=np.float64)


def select_roi(rois: list[Roi], pattern: str = DEFAULT_ROI_PATTERN, where: str | os.PathLike | None = None) -> Roi:
    """The ROI whose name matches `pattern` (fnmatch, case-insensitive) and has polygons.

    Args:
      rois: from read_rois.
      pattern: e.g. "GTV_Mass*". Several matches: the lowest ROI number is used (and a warning logged).
      where: the file, for the error message.
    Raises:
      InputError when no ROI with contours matches.
    """
    hits = [r for r in rois if fnmatch.fnmatch(r.name.lower(), pattern.lower()) and r.polygons]
    if not hits:
        names = sorted(r.name for r in rois)
        raise InputError(where or (rois[0].source if rois else None),
                         f"no ROI with contours matches {pattern!r} (ROIs: {names})")
    hits.sort(key=lambda r: r.number)
    if len(hits) > 1:
        log.warning("%s: %d ROIs match %r; using ROI %d", where or hits[0].source, len(hits), pattern,
                    hits[0].number)
    return hits[0]


# --------------------------------------------------------------------------------------------- geometry
def shoelace_area(xy: np.ndarray) -> float:
    """Signed area of a closed polygon given as (N, 2) points (positive when counter-clockwise)."""
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def planar_area_mm2(points: np.ndarray) -> float:
    """Unsigned area (mm^2) of a planar 3-D polygon (N, 3) in its own plane (vector shoelace)."""
    c = points - points.mean(axis=0)
    return 0.5 * float(np.linalg.norm(np.cross(c, np.roll(c, -1, axis=0)).sum(axis=0)))


_PAIRS_PER_CHUNK = 1 << 22  # point-edge pairs evaluated at once by `inside`


def inside(xy: np.ndarray, px: np.ndarray, py: np.ndarray) -> np.ndarray:
    """Crossing-number (even-odd) test: whether points (px, py) lie inside the polygon xy (N, 2).

    Points exactly on an edge follow the half-open convention (left/bottom edges inside, right/top outside),
    so two polygons sharing an edge never both claim a point.
    """
    px, py = np.broadcast_arrays(np.asarray(px, np.float64), np.asarray(py, np.float64))
    shape = px.shape
    px, py = px.reshape(1, -1), py.reshape(1, -1)
    x1, y1 = xy[:, 0], xy[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    keep = y1 != y2  # horizontal edges never cross
    a, b, c, d = (v[keep, None] for v in (x1, y1, x2, y2))
    count = np.zeros(px.shape[1], dtype=np.int64)
    step = max(1, _PAIRS_PER_CHUNK // max(1, px.shape[1]))  # edges per chunk (bounded memory)
    for e in range(0, len(a), step):  # one row per edge, all points at once; the parity of the crossings
        sa, sb, sc, sd = a[e:e + step], b[e:e + step], c[e:e + step], d[e:e + step]
        crosses = (sb > py) != (sd > py)
        xint = sa + (py - sb) * (sc - sa) / (sd - sb)
        count += (crosses & (px < xint)).sum(axis=0)
    return (count % 2 == 1).reshape(shape)


def _even_odd_area(polys: list[np.ndarray]) -> float:
    """Area of the even-odd union of non-crossing polygons (N, 2): sum of +-|area| by nesting depth."""
    total = 0.0
    for n, p in enumerate(polys):
        depth = sum(bool(inside(q, p[:1, 0], p[:1, 1])[0]) for m, q in enumerate(polys) if m != n)
        total += (-1) ** depth * abs(shoelace_area(p))
    return total


def _planes(polygons: tuple[np.ndarray, ...], inv: np.ndarray) -> dict[float, list[np.ndarray]]:
    """Polygons mapped to continuous grid index (i, j), grouped by their slice position k_c (rounded to 1e-3)."""
    planes: dict[float, list[np.ndarray]] = {}
    for pts in polygons:
        idx = pts @ inv[:3, :3].T + inv[:3, 3]
        spread = float(np.ptp(idx[:, 2]))
        if spread > 0.1:
            log.warning("a contour spans %.2f slices of the grid (not parallel to its slices); using its mean", spread)
        planes.setdefault(round(float(idx[:, 2].mean()), 3), []).append(idx[:, :2])
    return planes


def rasterize(roi: Roi | tuple[np.ndarray, ...], affine: np.ndarray, shape: tuple[int, int, int],
              *, strict: bool = False) -> tuple[np.ndarray, list[SliceCheck]]:
    """Mask of the ROI on the grid (see the module doc for the conventions).

    Args:
      roi: a Roi or its polygons ((N, 3) LPS mm each).
      affine: 4x4 index (i, j, k) -> LPS mm of the target grid.
      shape: (K, H, W) of the target grid.
      strict: raise instead of warn when a slice's area check fails.
    Returns:
      (mask uint8 (K, H, W), 1 inside; the per-slice area checks of the slices that took contours).
    """
    polygons = roi.polygons if isinstance(roi, Roi) else tuple(roi)
    where = roi.source if isinstance(roi, Roi) else None
    K, H, W = (int(s) for s in shape)
    affine = np.asarray(affine, dtype=np.float64)
    inv = np.linalg.inv(affine)
    si, sj, _ = np.linalg.norm(affine[:3, :3], axis=0)
    diag = float(np.hypot(si, sj))
    planes = _planes(polygons, inv)
    positions = np.array(sorted(planes))
    mask = np.zeros((K, H, W), dtype=np.uint8)
    checks = []
    if not len(positions):
        return mask, checks
    for k in range(K):
        near = positions[np.argmin(np.abs(positions - k))]
        if abs(near - k) > 0.5 + 1e-6:
            continue
        polys = planes[float(near)]
        allp = np.concatenate(polys)
        j0, j1 = max(0, int(np.floor(allp[:, 1].min()))), min(H - 1, int(np.ceil(allp[:, 1].max())))
        i0, i1 = max(0, int(np.floor(allp[:, 0].min()))), min(W - 1, int(np.ceil(allp[:, 0].max())))
        if j0 <= j1 and i0 <= i1:
            py, px = np.mgrid[j0 : j1 + 1, i0 : i1 + 1].astype(np.float64)
            m = np.zeros(px.shape, dtype=bool)
            for p in polys:
                m ^= inside(p, px, py)
            mask[k, j0 : j1 + 1, i0 : i1 + 1] = m
        mm = [p * np.array([si, sj]) for p in polys]
        perim = sum(float(np.linalg.norm(q - np.roll(q, -1, axis=0), axis=1).sum()) for q in mm)
        chk = SliceCheck(k, float(mask[k].sum()) * si * sj, _even_odd_area(mm), perim * diag + np.pi * diag**2 / 4)
        checks.append(chk)
        if not chk.ok:
            msg = (f"slice {k}: rasterised area {chk.raster_mm2:.1f} mm2 differs from the contour's own area"
                   f" {chk.polygon_mm2:.1f} mm2 by more than {chk.bound_mm2:.1f} mm2 (self-intersecting contour?)")
            if strict:
                raise InputError(where, msg)
            log.warning("%s: %s", where or "contour", msg)
    return mask, checks


def contour_volume_ml(roi: Roi | tuple[np.ndarray, ...], slice_spacing_mm: float | None = None) -> float:
    """The contour's own volume: per plane the even-odd polygon area (in the polygons' plane) x slice spacing.

    Args:
      roi: a Roi or its polygons ((N, 3) LPS mm).
      slice_spacing_mm: distance between contour planes; default the median gap between the distinct planes.
    Returns:
      volume in mL (cm^3); 0 for an ROI without polygons.
    """
    polygons = roi.polygons if isinstance(roi, Roi) else tuple(roi)
    if not polygons:
        return 0.0
    c = polygons[0] - polygons[0].mean(axis=0)
    n = np.cross(c, np.roll(c, -1, axis=0)).sum(axis=0)  # Newell normal of the first polygon
    n = n / (np.linalg.norm(n) or 1.0)
    u = np.cross(n, [1.0, 0.0, 0.0] if abs(n[0]) < 0.9 else [0.0, 1.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(n, u)
    planes: dict[float, list[np.ndarray]] = {}
    for p in polygons:
        planes.setdefault(round(float(p.mean(axis=0) @ n), 2), []).append(np.stack([p @ u, p @ v], axis=1))
    if slice_spacing_mm is None:
        pos = np.array(sorted(planes))
        if len(pos) < 2:
            raise ValueError("one contour plane: pass slice_spacing_mm")
        slice_spacing_mm = float(np.median(np.diff(pos)))
    return sum(_even_odd_area(ps) for ps in planes.values()) * float(slice_spacing_mm) / 1000.0
