"""RTSTRUCT rasteriser: hand-made contours of known area on an oblique, anisotropic grid; holes; slice assignment;
the area check; reading and bad files; one real IBSI study from ../shared."""

import logging

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctpet_srgan import rtstruct as rs
from ctpet_srgan.errors import InputError
from tests.conftest import SHARED

REAL = SHARED / "data" / "real" / "ibsi_sts"


def _oblique_affine() -> np.ndarray:
    """Index -> LPS: rotated about all three axes, 0.7 x 1.1 mm pixels, 2.5 mm slices, odd origin."""
    a, b, c = np.radians([25.0, 10.0, -7.0])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    aff = np.eye(4)
    aff[:3, :3] = rz @ rx @ ry @ np.diag([0.7, 1.1, 2.5])
    aff[:3, 3] = [-31.3, 12.9, -400.2]
    return aff


AFF = _oblique_affine()
SHAPE = (10, 70, 60)  # K, H, W: 60 x 70 pixels of 0.7 x 1.1 mm = 42 x 77 mm


def _in_plane_frame(k: float):
    """Centre of the grid's slice k in LPS and two orthonormal in-plane axes (mm)."""
    centre = AFF[:3, :3] @ np.array([30.0, 35.0, k]) + AFF[:3, 3]
    u = AFF[:3, 0] / np.linalg.norm(AFF[:3, 0])
    v = AFF[:3, 1] / np.linalg.norm(AFF[:3, 1])
    return centre, u, v


def _polygon(k: float, xy_mm: np.ndarray, rot_deg: float = 0.0) -> np.ndarray:
    """In-plane (x, y) mm around the slice centre -> (N, 3) LPS points on slice k, rotated in-plane by rot_deg."""
    t = np.radians(rot_deg)
    xy = xy_mm @ np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    c, u, v = _in_plane_frame(k)
    return c + xy[:, :1] * u + xy[:, 1:] * v


def square(side: float) -> np.ndarray:
    h = side / 2
    return np.array([[-h, -h], [h, -h], [h, h], [-h, h]])


def circle(r: float, n: int = 720) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _centres_in_frame(k: int) -> tuple[np.ndarray, np.ndarray]:
    """In-plane (x, y) mm of every voxel centre of slice k, in the frame of _polygon (before its rotation)."""
    c, u, v = _in_plane_frame(k)
    jj, ii = np.mgrid[0 : SHAPE[1], 0 : SHAPE[2]]
    p = np.stack([ii, jj, np.full_like(ii, k)], axis=-1) @ AFF[:3, :3].T + AFF[:3, 3] - c
    return p @ u, p @ v


def test_square_and_circle_match_their_area_and_an_independent_inside_test():
    sq = _polygon(3, square(20.0), rot_deg=17.0)
    ci = _polygon(6, circle(12.0))
    mask, checks = rs.rasterize((sq, ci), AFF, SHAPE, strict=True)
    px = 0.7 * 1.1
    assert set(np.nonzero(mask.sum(axis=(1, 2)))[0]) == {3, 6}
    assert abs(mask[3].sum() * px - 400.0) / 400.0 < 0.03
    assert abs(mask[6].sum() * px - np.pi * 144.0) / (np.pi * 144.0) < 0.03
    assert [c.slice_index for c in checks] == [3, 6] and all(c.ok for c in checks)
    # centre convention: the square's voxels are exactly those whose centre is inside it (rotated frame)
    x, y = _centres_in_frame(3)
    t = np.radians(17.0)
    xr, yr = x * np.cos(t) + y * np.sin(t), -x * np.sin(t) + y * np.cos(t)  # undo the in-plane rotation
    expected = (np.abs(xr) < 10.0) & (np.abs(yr) < 10.0)
    assert np.array_equal(mask[3].astype(bool), expected)
    x, y = _centres_in_frame(6)
    r = np.hypot(x, y)
    far = np.abs(r - 12.0) > 0.01  # away from the 720-gon's chord error
    assert np.array_equal(mask[6].astype(bool)[far], (r < 12.0)[far])


def test_a_polygon_inside_another_is_a_hole():
    outer, hole = _polygon(4, square(30.0)), _polygon(4, square(10.0))
    mask, checks = rs.rasterize((outer, hole), AFF, SHAPE, strict=True)
    assert abs(mask[4].sum() * 0.77 - 800.0) / 800.0 < 0.05
    assert mask[4, 35, 30] == 0  # the slice centre is in the hole
    assert checks[0].ok and checks[0].polygon_mm2 == pytest.approx(800.0)
    one, _ = rs.rasterize((outer,), AFF, SHAPE)
    assert mask[4].sum() < one[4].sum()


def test_contours_between_grid_slices_go_to_the_nearest_slice_within_half_a_slice():
    mask, _ = rs.rasterize((_polygon(5.3, square(20.0)),), AFF, SHAPE)
    assert list(np.nonzero(mask.sum(axis=(1, 2)))[0]) == [5]
    mask, _ = rs.rasterize((_polygon(5.7, square(20.0)),), AFF, SHAPE)
    assert list(np.nonzero(mask.sum(axis=(1, 2)))[0]) == [6]
    mask, _ = rs.rasterize((_polygon(10.6, square(20.0)),), AFF, SHAPE)  # beyond the last slice + 1/2
    assert mask.sum() == 0
    # two planes inside one slice (a coarse grid): the nearer one only, never their XOR
    mask, checks = rs.rasterize((_polygon(2.1, square(20.0)), _polygon(2.4, square(10.0))), AFF, SHAPE)
    alone, _ = rs.rasterize((_polygon(2.1, square(20.0)),), AFF, SHAPE)
    assert np.array_equal(mask, alone) and mask[2, 35, 30] == 1 and len(checks) == 1


def test_area_check_flags_a_self_intersecting_contour(caplog):
    bowtie = _polygon(2, np.array([[-10.0, -10.0], [10.0, 10.0], [10.0, -10.0], [-10.0, 10.0]]))
    with pytest.raises(InputError, match="differs from the contour's own area"):
        rs.rasterize((bowtie,), AFF, SHAPE, strict=True)
    with caplog.at_level(logging.WARNING):
        mask, checks = rs.rasterize((bowtie,), AFF, SHAPE)
    assert not checks[0].ok and mask[2].sum() > 0 and "differs" in caplog.text


def test_contour_volume_is_polygon_area_times_slice_spacing():
    polys = tuple(_polygon(k, square(20.0)) for k in (2, 3, 4)) + (_polygon(3, square(10.0)),)
    assert rs.contour_volume_ml(polys) == pytest.approx((3 * 400 - 100) * 2.5 / 1000)
    assert rs.contour_volume_ml(polys, 5.0) == pytest.approx((3 * 400 - 100) * 5.0 / 1000)
    assert rs.contour_volume_ml(()) == 0.0
    assert rs.planar_area_mm2(_polygon(0, circle(5.0, 2000))) == pytest.approx(np.pi * 25, rel=1e-4)


def _write_rtstruct(path, rois, modality="RTSTRUCT", frame=None, study_uid=None):
    """rois: list of (number, name, [polygons (N, 3)]). Returns the frame of reference UID written."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.3"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    frame = frame or generate_uid()
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    for num, name, polys in rois:
        r = Dataset()
        r.ROINumber, r.ROIName, r.ReferencedFrameOfReferenceUID = num, name, frame
        ds.StructureSetROISequence.append(r)
        rc = Dataset()
        rc.ReferencedROINumber = num
        rc.ContourSequence = Sequence()
        for p in polys:
            c = Dataset()
            c.ContourGeometricType = "CLOSED_PLANAR"
            c.NumberOfContourPoints = len(p)
            c.ContourData = [f"{v:.6g}" for v in p.ravel()]
            rc.ContourSequence.append(c)
        ds.ROIContourSequence.append(rc)
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return frame


def test_read_select_and_rasterise_a_written_rtstruct(tmp_path):
    f = tmp_path / "RS.dcm"
    frame = _write_rtstruct(f, [(1, "Body", [_polygon(4, square(40.0))]),
                                (7, "GTV_Mass_PET", [_polygon(4, square(20.0))]), (9, "GTV_Mass_empty", [])])
    rois = rs.read_rois(f)
    assert [(r.number, r.name, len(r.polygons)) for r in rois] == [(1, "Body", 1), (7, "GTV_Mass_PET", 1),
                                                                   (9, "GTV_Mass_empty", 0)]
    roi = rs.select_roi(rois)
    assert roi.number == 7 and roi.frame_of_reference_uid == frame
    mask, _ = rs.rasterize(roi, AFF, SHAPE)
    direct, _ = rs.rasterize((_polygon(4, square(20.0)),), AFF, SHAPE)
    assert mask.sum() > 400 and np.array_equal(mask, direct)
    assert rs.select_roi(rois, "body").number == 1
    with pytest.raises(InputError, match="no ROI with contours matches 'CTV\\*'") as e:
        rs.select_roi(rois, "CTV*", where=f)
    assert str(f) in str(e.value)


def test_bad_files_name_the_file(tmp_path):
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 10)
    with pytest.raises(InputError) as e:
        rs.read_rois(junk)
    assert str(junk) in str(e.value)
    ct = tmp_path / "ct.dcm"
    _write_rtstruct(ct, [(1, "GTV_Mass", [_polygon(1, square(5.0))])], modality="CT")
    with pytest.raises(InputError, match="is not RTSTRUCT"):
        rs.read_rois(ct)


def test_a_real_ibsi_contour_on_its_pet_grid():
    study = REAL / "STS_001"
    if not study.is_dir():
        pytest.skip(f"{study} is absent (the real IBSI studies live in ../shared)")
    from ctpet_srgan.dicom_io import read_series

    pet = read_series(study / "PET" / "image")
    roi = rs.select_roi(rs.read_rois(study / "PET" / "mask" / "RS.dcm"))
    assert roi.name.startswith("GTV_Mass") and roi.frame_of_reference_uid == pet.meta["frame_of_reference_uid"]
    mask, checks = rs.rasterize(roi, pet.affine, pet.shape, strict=True)
    voxel_ml = np.prod(pet.spacing_mm) / 1000
    contour_ml = rs.contour_volume_ml(roi, pet.spacing_mm[2])
    assert contour_ml > 5 and abs(mask.sum() * voxel_ml - contour_ml) / contour_ml < 0.1
    assert len(checks) == len({round(float(p[:, 2].mean()), 1) for p in roi.polygons})
    suv = pet.array
    assert suv[mask > 0].mean() > 2 * suv[mask == 0].mean()  # the contour is on the FDG-avid tumour


def _reference_inside(xy: np.ndarray, x: float, y: float) -> bool:
    """The crossing-number rule for one point, edge by edge in plain Python (what `inside` vectorises)."""
    odd = False
    n = len(xy)
    for e in range(n):
        (a, b), (c, d) = xy[e], xy[(e + 1) % n]
        if b != d and (b > y) != (d > y) and x < a + (y - b) * (c - a) / (d - b):
            odd = not odd
    return odd


def test_inside_equals_the_per_point_rule_on_edges_vertices_and_chunks(monkeypatch):
    rng = np.random.default_rng(3)
    star = np.array([[np.cos(t) * r, np.sin(t) * r] for t, r in
                     zip(np.linspace(0, 2 * np.pi, 14, endpoint=False), [5, 2] * 7)]) + 6.0
    poly = np.vstack([star, [[6.0, 11.0], [6.0, 11.0]]])  # a repeated vertex and a horizontal (zero) edge
    py, px = np.mgrid[0:13, 0:13].astype(np.float64)  # integer points: many lie exactly on edges and vertices
    px = np.concatenate([px.ravel(), rng.uniform(0, 12, 301)])
    py = np.concatenate([py.ravel(), rng.uniform(0, 12, 301)])
    want = np.array([_reference_inside(poly, x, y) for x, y in zip(px, py)])
    assert 20 < want.sum() < len(want) - 20
    np.testing.assert_array_equal(rs.inside(poly, px, py), want)
    np.testing.assert_array_equal(rs.inside(poly, px.reshape(2, -1), py.reshape(2, -1)), want.reshape(2, -1))
    monkeypatch.setattr(rs, "_PAIRS_PER_CHUNK", 3 * len(px))  # the chunked path: three edges per chunk
    np.testing.assert_array_equal(rs.inside(poly, px, py), want)
    sq = np.array([[2.0, 2.0], [8.0, 2.0], [8.0, 8.0], [2.0, 8.0]])  # grid points on all four edges
    np.testing.assert_array_equal(rs.inside(sq, px, py), [_reference_inside(sq, x, y) for x, y in zip(px, py)])
    # half-open: the bottom and left edges are inside, the top and right ones outside
    assert rs.inside(sq, np.array([5.0, 2.0, 5.0, 8.0]), np.array([2.0, 5.0, 8.0, 5.0])).tolist() == [
        True, True, False, False]


def test_contour_data_parsed_from_raw_bytes_equals_pydicom(tmp_path):
    f = tmp_path / "RS.dcm"
    pts = _polygon(4, circle(7.3, n=50)) + 1e-7  # many digits per coordinate
    _write_rtstruct(f, [(7, "GTV_Mass", [pts])])
    ds = pydicom.dcmread(f)
    item = ds.ROIContourSequence[0].ContourSequence[0]
    assert isinstance(item.get_item(0x30060050).value, bytes)  # still raw: the numpy path
    fast = rs._contour_values(item)
    slow = np.array([float(v) for v in item.ContourData])  # pydicom's DS conversion (now converted)
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(rs._contour_values(item), slow)  # the converted path gives the same
    del item.ContourData
    assert rs._contour_values(item) is None
    bad = tmp_path / "bad.dcm"
    _write_rtstruct(bad, [(7, "GTV_Mass", [pts])])
    raw = bad.read_bytes()
    i = raw.index(b"\x06\x30\x50\x00DS")
    bad.write_bytes(raw[: i + 8] + raw[i + 8:].replace(b"-", b"q", 1))
    with pytest.raises(InputError, match=f"^{bad}: ROI 7: ContourData is not numeric"):
        rs.read_rois(bad)
