"""volume_io.read_volume: one entry point that dispatches on the path (DICOM folder or file, NIfTI), checks the
modality asked for, and refuses missing paths, unknown formats and the temporaries of unfinished writes."""

import numpy as np
import pytest
from _series import grid_affine, write_ct

from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume
from ctpet_srgan.nifti_io import write_nifti
from ctpet_srgan.volume_io import read_volume


def _ct(tmp_path):
    arr = np.arange(4 * 6 * 5, dtype=np.float32).reshape(4, 6, 5) - 100.0
    aff = grid_affine((0.0, 0.0, 0.0), arr.shape, (1.5, 1.5, 3.0))
    write_ct(tmp_path, arr, aff)  # writes the series into tmp_path/ct
    return arr, aff, tmp_path / "ct"


def test_dicom_folder_and_file_read_as_hu(tmp_path):
    arr, aff, folder = _ct(tmp_path)
    vol = read_volume(folder, "CT")
    assert vol.modality == "CT" and vol.units == "HU"
    np.testing.assert_allclose(vol.array, arr, atol=0.5)
    np.testing.assert_allclose(vol.spacing_mm, (1.5, 1.5, 3.0))
    one = sorted(p for p in folder.iterdir() if p.is_file())[0]
    assert read_volume(one).array.shape[0] == 1  # a single DICOM file is a one-slice series


def test_modality_is_checked_against_the_file(tmp_path):
    _, _, folder = _ct(tmp_path)
    with pytest.raises(InputError, match="modality is CT, expected PT"):
        read_volume(folder, "pet")
    with pytest.raises(ValueError, match="modality must be CT or PT"):
        read_volume(folder, "MR")


def test_nifti_round_trip(tmp_path):
    arr = np.linspace(0, 5, 2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    aff = np.diag([2.0, 2.0, 4.0, 1.0])
    path = write_nifti(Volume(arr, aff, "PT", "SUVbw"), tmp_path / "pet.nii.gz")
    vol = read_volume(path)  # the project's own NIfTI carries its modality
    assert vol.modality == "PT" and vol.units == "SUVbw"
    np.testing.assert_allclose(vol.array, arr, rtol=1e-6)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-6)


def test_bad_paths_name_the_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_volume(tmp_path / "missing")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: unknown format"):
        read_volume(other)
    tmp = tmp_path / ".out.nii.gz.1234.tmp"
    tmp.mkdir()
    (tmp / "x.dcm").write_bytes(b"")
    with pytest.raises(InputError, match="unfinished write"):
        read_volume(tmp / "x.dcm")
