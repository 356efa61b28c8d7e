"""`data_prep info`: one JSON object describing what the readers make of a path, or one error line."""

import json
import subprocess
import sys

import numpy as np
import pydicom
import pydicom.data
import pytest

from ctpet_srgan.geometry import axial_affine
from data_prep import info
from tests._series import expected_suv_scale, pet_info, write_ct, write_pet
from tests.conftest import REAL_PET_SLICE, ROOT


def test_real_pet_slice(capsys):
    assert info.main([str(REAL_PET_SLICE)]) == 0
    out = json.loads(capsys.readouterr().out)
    ds = pydicom.dcmread(str(REAL_PET_SLICE))
    assert out["modality"] == "PT" and out["units"] == "SUVbw"
    assert out["shape"] == [1, int(ds.Rows), int(ds.Columns)]
    np.testing.assert_allclose(out["spacing_mm"][:2], [float(v) for v in ds.PixelSpacing])
    assert out["suv_reference_time"].endswith("T15:23:16.921000")  # SeriesTime 152316.921
    bq_max = float(ds.pixel_array.max()) * float(ds.RescaleSlope)
    assert out["max"] == pytest.approx(bq_max * out["suv_scale"], rel=1e-5)
    assert out["min"] <= out["mean"] <= out["max"]
    text = json.dumps(out)
    assert "1.3.6.1.4" not in text and str(ds.PatientID) not in text  # no UIDs, no patient ID


def test_ct_series_folder(tmp_path, capsys):
    a = np.full((4, 8, 6), -1000.0, np.float32)
    a[2] = 40.0
    write_ct(tmp_path, a, axial_affine((0, 0, 0), (0.8, 0.9, 2.0)))
    assert info.main([str(tmp_path / "ct")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["modality"], out["units"], out["shape"]) == ("CT", "HU", [4, 8, 6])
    np.testing.assert_allclose(out["spacing_mm"], [0.8, 0.9, 2.0])
    assert (out["min"], out["max"]) == (-1000.0, 40.0)
    assert out["mean"] == pytest.approx(a.mean())
    assert "suv_scale" not in out


def test_pet_series_has_suv_fields(tmp_path):
    pet = pet_info()
    write_pet(tmp_path, np.full((3, 8, 8), 2000.0, np.float32), axial_affine((0, 0, 0), (2, 2, 2)), pet=pet)
    out = info.describe(str(tmp_path / "pet"))
    assert out["suv_scale"] == pytest.approx(expected_suv_scale(pet.series_datetime), rel=1e-9)
    assert out["suv_reference_time"] == pet.series_datetime.isoformat()
    assert out["mean"] == pytest.approx(2000.0 * out["suv_scale"], rel=1e-4)


def test_bad_input_one_line_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "junk.dcm"
    bad.write_bytes(b"\x00" * 50)
    assert info.main([str(bad)]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.count("\n") == 1 and cap.err.startswith(f"{bad}: ")
    nan = tmp_path / "n.nii"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.full((2, 2, 2), np.nan, np.float32), np.eye(4)), str(nan))
    assert info.main([str(nan), "--modality", "PT"]) == 2
    assert capsys.readouterr().err == f"{nan}: 8 voxels are NaN or infinite\n"


def test_module_entry_point(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "data_prep.info", pydicom.data.get_testdata_file("CT_small.dcm")],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["units"] == "HU"
    bad = subprocess.run([sys.executable, "-m", "data_prep.info", str(tmp_path / "missing")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == f"{tmp_path / 'missing'}: does not exist"


def test_project_nifti_needs_no_modality_flag(tmp_path, capsys):
    from ctpet_srgan.geometry import Volume
    from ctpet_srgan.nifti_io import write_nifti

    path = write_nifti(Volume(np.full((3, 4, 5), 1.5, np.float32), np.eye(4), "PT", "SUVbw"), tmp_path / "sr.nii.gz")
    assert info.main([str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["modality"], out["units"], out["max"]) == ("PT", "SUVbw", 1.5)


def test_pet_without_weight_in_stored_units_only_when_asked(tmp_path, capsys):
    from tests._series import study

    write_pet(tmp_path, np.full((3, 8, 8), 2000.0, np.float32), axial_affine((0, 0, 0), (2, 2, 2)),
              study=study(weight_kg=None))
    assert info.main([str(tmp_path / "pet")]) == 2
    assert "missing PatientWeight" in capsys.readouterr().err
    assert info.main([str(tmp_path / "pet"), "--pet_units", "stored"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["units"] == "BQML" and "suv_scale" not in out
    assert out["mean"] == pytest.approx(2000.0, rel=1e-3)


def test_unfinished_generate_folder_is_not_a_series(tmp_path, capsys):
    part = tmp_path / ".sr_dicom.x1y2.tmp" / "series"
    write_pet(part.parent, np.full((3, 8, 8), 2000.0, np.float32), axial_affine((0, 0, 0), (2, 2, 2)),
              name="series")
    assert info.main([str(part)]) == 2
    assert "unfinished write" in capsys.readouterr().err
