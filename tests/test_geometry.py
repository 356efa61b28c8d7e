"""A point source placed at known LPS coordinates in PET lands at the same mm position on the CT grid
after DICOM write -> read_series -> geometry.resample, for axial and oblique orientations."""

import numpy as np
import pytest

from ctpet_srgan.dicom_io import read_series
from ctpet_srgan.geometry import Volume, overlap_mm, resample
from tests._series import grid_affine, rotation, write_ct, write_pet

POINT = np.array([12.3, -20.7, 35.2])  # LPS mm, deliberately not on a voxel centre


def _blob(shape_kji, affine, center, sigma_mm, peak):
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk = np.stack([i, j, k], -1).astype(float)
    xyz = ijk @ affine[:3, :3].T + affine[:3, 3]
    r2 = np.sum((xyz - center) ** 2, -1)
    return (peak * np.exp(-r2 / (2 * sigma_mm**2))).astype(np.float32)


def _centroid_mm(vol: Volume, frac=0.05):
    a = vol.array.astype(np.float64)
    w = np.where(a > frac * a.max(), a, 0.0)
    k, j, i = np.nonzero(w)
    ijk = np.stack([i, j, k], -1).astype(float)
    return (vol.index_to_patient(ijk) * w[k, j, i][:, None]).sum(0) / w.sum()


@pytest.mark.parametrize(
    "pet_rot,ct_rot",
    [
        (np.eye(3), np.eye(3)),  # axial PET, axial CT (different spacings and origins)
        (rotation(25, 20, 0), np.eye(3)),  # oblique PET onto axial CT
        (rotation(-20, 30, 10), rotation(10, -25, 0)),  # both oblique, differently
    ],
    ids=["axial", "oblique_pet", "both_oblique"],
)
def test_point_source_lands_on_ct_grid(tmp_path, pet_rot, ct_rot):
    pet_shape, pet_sp = (14, 18, 20), (4.0, 3.5, 3.0)  # (k, j, i), (i, j, k) mm: anisotropic on purpose
    ct_shape, ct_sp = (22, 30, 34), (1.9, 1.6, 2.5)
    pet_aff = grid_affine(POINT + [3.0, -2.0, 4.0], pet_shape, pet_sp, pet_rot)
    ct_aff = grid_affine(POINT + [-2.5, 1.5, -3.0], ct_shape, ct_sp, ct_rot)
    pet_bq = _blob(pet_shape, pet_aff, POINT, sigma_mm=5.0, peak=20000.0) + 50.0
    write_pet(tmp_path, pet_bq, pet_aff)
    write_ct(tmp_path, np.zeros(ct_shape, np.float32), ct_aff)

    pet = read_series(tmp_path / "pet")
    ct = read_series(tmp_path / "ct")
    # The reader recovers both grids from the DICOM tags alone (k may flip only if sorting were wrong).
    np.testing.assert_allclose(pet.affine, pet_aff, atol=1e-4)
    np.testing.assert_allclose(ct.affine, ct_aff, atol=1e-4)
    assert overlap_mm(pet, ct) is not None

    on_ct = resample(pet, ct.affine, ct.shape)
    on_ct.array -= np.median(on_ct.array)  # remove the flat background
    err = np.linalg.norm(_centroid_mm(on_ct) - POINT)
    assert err < 0.5 * min(ct.spacing_mm), f"centroid {err:.3f} mm from the source"
    # The brightest CT voxel is the one nearest to the source.
    kji = np.unravel_index(np.argmax(on_ct.array), on_ct.shape)
    assert np.linalg.norm(on_ct.index_to_patient(np.array(kji[::-1])) - POINT) <= 0.5 * np.linalg.norm(ct.spacing_mm)


def test_index_patient_round_trip_on_an_asymmetric_oblique_affine():
    """patient_to_index inverts index_to_patient for an oblique, anisotropic, non-symmetric affine (a rotation
    about all three axes, so the matrix differs from its transpose), and maps known points to known indices."""
    rot = rotation(25, -40, 15)
    assert not np.allclose(rot, rot.T)
    aff = grid_affine([10.0, -30.0, 55.0], (9, 11, 13), (3.0, 1.5, 4.5), rot)
    vol = Volume(np.zeros((9, 11, 13), np.float32), aff, "PT", "SUVbw")
    ijk = np.random.default_rng(0).uniform(-2, 15, size=(50, 3))
    xyz = vol.index_to_patient(ijk)
    np.testing.assert_allclose(vol.patient_to_index(xyz), ijk, atol=1e-9)
    np.testing.assert_allclose(xyz[0], aff[:3, :3] @ ijk[0] + aff[:3, 3], atol=1e-9)  # the affine's meaning
    # one step along i is one column spacing along the rotation's first axis
    step = vol.patient_to_index(aff[:3, 3] + 3.0 * rot[:, 0])
    np.testing.assert_allclose(step, [1.0, 0.0, 0.0], atol=1e-9)


def test_target_grid_of_an_oblique_pet_lies_inside_a_smaller_ct():
    """An oblique PET (a rotation about all three axes) and a smaller, shifted CT in the same orientation (one
    scanner): the HR grid follows the PET's axes and slices, lies inside the CT's field (no HR CT is fill), its LR
    voxels are whole PET voxels, and it leaves less than one PET voxel of the CT unused on each in-plane side."""
    from ctpet_srgan.degradation import lr_grid_affine
    from data_prep import convert as cv

    rot = rotation(12, -8, 30)
    pet = Volume(np.zeros((20, 30, 34), np.float32), grid_affine([5.0, -10.0, 20.0], (20, 30, 34), (4.0, 3.0, 5.0),
                                                                   rot), "PT", "SUVbw")
    ct_centre = pet.index_to_patient([14.3, 12.6, 9.0])  # off the PET's centre, so a wrong inverse shows
    ct = Volume(np.zeros((30, 50, 60), np.float32), grid_affine(ct_centre, (30, 50, 60), (1.0, 1.2, 2.0), rot),
                "CT", "HU")
    g = cv.target_grid(ct, pet, 2)
    k, h, w = g.hr_shape
    hr = Volume(np.zeros(g.hr_shape, np.float32), g.hr_affine, "PT", "SUVbw")
    corners = np.array([[a, b, c] for a in (-0.5, w - 0.5) for b in (-0.5, h - 0.5) for c in (0, k - 1)], float)
    in_ct = ct.patient_to_index(hr.index_to_patient(corners))
    lo, hi = np.full(3, -0.5 - 1e-6), np.array(ct.shape[::-1]) - 0.5 + 1e-6
    assert np.all(in_ct >= lo) and np.all(in_ct <= hi), in_ct
    # the grid: PET axes, PET slice positions, LR voxels = PET voxels
    np.testing.assert_allclose(g.hr_affine[:3, :2], pet.affine[:3, :2] / 2, atol=1e-9)
    np.testing.assert_allclose(g.hr_affine[:3, 2], pet.affine[:3, 2], atol=1e-9)
    np.testing.assert_allclose(g.lr_affine, lr_grid_affine(g.hr_affine, 2), atol=1e-9)
    lr0 = pet.patient_to_index(g.lr_affine[:3, 3])
    np.testing.assert_allclose(lr0, np.round(lr0), atol=1e-6)
    # as large as the CT allows: the CT's field in PET voxels, less than one PET voxel left on each side
    ct_corners = np.array([[a, b, c] for a in (-0.5, 59.5) for b in (-0.5, 49.5) for c in (-0.5, 29.5)])
    in_pet = pet.patient_to_index(ct.index_to_patient(ct_corners))
    grid_lo = lr0[:2] - 0.5
    grid_hi = grid_lo + np.array([w, h]) / 2
    assert np.all(grid_lo - in_pet.min(0)[:2] < 1.0) and np.all(in_pet.max(0)[:2] - grid_hi < 1.0)
    assert k == int(np.floor(in_pet.max(0)[2] + 1e-6)) - int(np.ceil(in_pet.min(0)[2] - 1e-6)) + 1
