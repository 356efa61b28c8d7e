"""NIfTI reading/writing: RAS <-> LPS, axis order, units stated by the caller, bad input refused."""

import nibabel as nib
import numpy as np
import pytest

from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume
from ctpet_srgan.nifti_io import read_nifti, write_nifti
from ctpet_srgan.volume_io import read_volume
from tests._series import grid_affine, rotation


def _save(path, data, affine_ras):
    nib.save(nib.Nifti1Image(np.asarray(data), affine_ras), str(path))
    return path


def test_ras_to_lps_and_axis_order(tmp_path):
    data = np.zeros((5, 4, 3), np.float32)  # nibabel order (i, j, k)
    data[4, 1, 2] = 7.0
    ras = np.diag([2.0, 3.0, 4.0, 1.0])
    ras[:3, 3] = (10.0, 20.0, 30.0)
    vol = read_nifti(_save(tmp_path / "a.nii", data, ras), modality="PT")
    assert vol.shape == (3, 4, 5) and vol.array[2, 1, 4] == 7.0
    assert (vol.modality, vol.units) == ("PT", "SUVbw")
    # voxel (i=4, j=1, k=2): RAS (18, 23, 38) -> LPS (-18, -23, 38)
    np.testing.assert_allclose(vol.index_to_patient([4, 1, 2]), [-18.0, -23.0, 38.0])
    np.testing.assert_allclose(vol.spacing_mm, [2.0, 3.0, 4.0])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_write_read_round_trip_oblique(tmp_path, suffix):
    aff = grid_affine((4.0, -7.0, 12.0), (4, 5, 6), (1.5, 2.0, 3.0), rotation(20, -30, 10))
    a = np.random.default_rng(0).normal(size=(4, 5, 6)).astype(np.float32)
    path = write_nifti(Volume(a, aff, "CT", "HU"), tmp_path / f"v{suffix}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"v{suffix}"]  # no temp file left
    back = read_nifti(path, modality="CT")
    np.testing.assert_array_equal(back.array, a)
    np.testing.assert_allclose(back.affine, aff, atol=1e-5)
    img = nib.load(str(path))  # nibabel sees RAS: x and y negated
    np.testing.assert_allclose(img.affine, np.diag([-1, -1, 1, 1]) @ aff, atol=1e-5)
    assert img.header.get_xyzt_units()[0] == "mm" and int(img.header["sform_code"]) == 1


def test_trailing_singleton_time_axis_accepted(tmp_path):
    vol = read_nifti(_save(tmp_path / "t.nii.gz", np.ones((3, 4, 5, 1), np.float32), np.eye(4)), modality="CT")
    assert vol.shape == (5, 4, 3) and vol.units == "HU"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_refused(tmp_path, bad):
    data = np.ones((3, 4, 5), np.float32)
    data[1, 2, 3] = bad
    path = _save(tmp_path / "nan.nii.gz", data, np.eye(4))
    with pytest.raises(InputError, match=f"^{path}: 1 voxels are NaN or infinite"):
        read_nifti(path, modality="PT")


def test_4d_refused(tmp_path):
    path = _save(tmp_path / "d.nii", np.ones((3, 4, 5, 2), np.float32), np.eye(4))
    with pytest.raises(InputError, match="expected a 3-D image, got 4-D"):
        read_nifti(path, modality="CT")


def test_units_and_modality_must_be_stated(tmp_path):
    path = _save(tmp_path / "u.nii", np.ones((3, 4, 5), np.float32), np.eye(4))
    with pytest.raises(InputError, match="say CT or PT"):
        read_nifti(path)
    with pytest.raises(InputError, match="PT NIfTI in units 'BQML' is not supported"):
        read_nifti(path, modality="PT", units="BQML")
    with pytest.raises(InputError, match="no modality tag"):
        read_volume(path)
    assert read_volume(path, modality="PT", nifti_units="SUVbw").units == "SUVbw"


def test_corrupt_and_missing(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match=f"^{bad}: not a readable NIfTI"):
        read_nifti(bad, modality="CT")
    with pytest.raises(InputError, match="does not exist"):
        read_nifti(tmp_path / "none.nii", modality="CT")


def test_write_nifti_refuses_other_suffix(tmp_path):
    with pytest.raises(ValueError, match=".nii or .nii.gz"):
        write_nifti(Volume(np.zeros((2, 2, 2), np.float32), np.eye(4), "CT", "HU"), tmp_path / "x.img")


def test_zero_length_axis_refused(tmp_path):
    path = _save(tmp_path / "z.nii.gz", np.ones((80, 80, 0), np.float32), np.eye(4))
    with pytest.raises(InputError, match=f"^{path}: image of shape \\(80, 80, 0\\) is empty"):
        read_nifti(path, modality="PT")


@pytest.mark.parametrize("pixdim", [0.0, 1e30, float("inf")])
def test_no_sform_no_qform_with_absurd_pixdim_refused(tmp_path, pixdim):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), None)
    img.header["sform_code"] = img.header["qform_code"] = 0
    img.header["pixdim"][1:4] = (2.0, pixdim, 2.0)
    nib.save(img, str(tmp_path / "p.nii"))
    with pytest.raises(InputError, match="pixdim \\(no sform/qform\\) .* must be finite and between"):
        read_nifti(tmp_path / "p.nii", modality="CT")


def test_no_sform_no_qform_with_sane_pixdim_read(tmp_path):
    img = nib.Nifti1Image(np.ones((4, 5, 6), np.float32), None)
    img.header["sform_code"] = img.header["qform_code"] = 0
    img.header["pixdim"][1:4] = (2.0, 3.0, 4.0)
    nib.save(img, str(tmp_path / "p.nii"))
    np.testing.assert_allclose(read_nifti(tmp_path / "p.nii", modality="CT").spacing_mm, [2.0, 3.0, 4.0])


def test_absurd_affine_spacing_refused(tmp_path):
    path = _save(tmp_path / "big.nii", np.ones((3, 3, 3), np.float32), np.diag([1e30, 1.0, 1.0, 1.0]))
    with pytest.raises(InputError, match="voxel spacing"):
        read_nifti(path, modality="CT")


def test_project_marker_says_the_modality(tmp_path):
    path = write_nifti(Volume(np.ones((3, 4, 5), np.float32), np.eye(4), "PT", "SUVbw"), tmp_path / "sr.nii.gz")
    vol = read_nifti(path)
    assert (vol.modality, vol.units) == ("PT", "SUVbw")
    with pytest.raises(InputError, match="its header says 'PT SUVbw'"):
        read_nifti(path, modality="CT")
    other = _save(tmp_path / "o.nii", np.ones((3, 3, 3), np.float32), np.eye(4))
    with pytest.raises(InputError, match="a NIfTI has no modality tag"):
        read_nifti(other)
