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
