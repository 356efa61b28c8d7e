"""tools/export_case.py: a prepared study exported as DICOM series that read back to the records' values and grids."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from ctpet_srgan import dicom_io
from ctpet_srgan.degradation import lr_grid_affine
from ctpet_srgan.evaluation import iter_studies
from ctpet_srgan.nifti_io import read_nifti
from tests._tiny_set import write_tiny_set
from tests.conftest import SHARED
from tools import export_case as ec

REAL = SHARED / "data" / "real" / "ibsi_sts"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    m = write_tiny_set(d, studies=3, slices=4, lr=12, scale=2)
    return d, m


def _records_of(data_dir, study):
    m = json.loads((data_dir / "manifest.json").read_text())
    sp = m["studies"][study]["split"]
    return next(sl for h, sl in iter_studies(data_dir, sp) if h == study)


def _check_against_records(out, slices, scale):
    lr = dicom_io.read_series(out / "lr_pet")
    ct = dicom_io.read_series(out / "ct")
    hr_aff = np.asarray(slices[0]["hr_affine"], float)
    rec_lr = np.stack([s["lr_pet"] for s in slices])
    rec_ct = np.stack([s["hr_ct"] for s in slices])
    assert lr.units == "SUVbw" and ct.units == "HU"
    assert lr.shape == rec_lr.shape and ct.shape == rec_ct.shape
    # SUV through the int16 rescale: at most half a stored step (slice max / 32767) off, per slice (+ float32 round-off)
    step = np.abs(rec_lr).reshape(len(slices), -1).max(1) / 32767.0
    assert np.all(np.abs(lr.array - rec_lr) <= step[:, None, None] * 0.5 + np.abs(rec_lr) * 1e-6 + 1e-6)
    assert np.max(np.abs(ct.array - rec_ct)) <= 0.5 + 1e-4  # HU stored as integers
    hr_sp = np.linalg.norm(hr_aff[:3, :3], axis=0)
    np.testing.assert_allclose(lr.spacing_mm, [hr_sp[0] * scale, hr_sp[1] * scale, hr_sp[2]], atol=1e-4)
    np.testing.assert_allclose(ct.spacing_mm, hr_sp, atol=1e-4)
    np.testing.assert_allclose(ct.affine, hr_aff, atol=1e-3)
    np.testing.assert_allclose(lr.affine, lr_grid_affine(hr_aff, scale), atol=1e-3)
    # every LR voxel centre is the centre of its scale x scale block of HR voxels, on every slice
    for s in (slices[0], slices[-1]):
        k = s["slice_index"] - slices[0]["slice_index"]
        a = np.asarray(s["hr_affine"], float)
        hr_block = a[:3, :3] @ np.array([(scale - 1) / 2, (scale - 1) / 2, 0]) + a[:3, 3]
        np.testing.assert_allclose(lr.index_to_patient([0, 0, k]), hr_block, atol=1e-3)
    return lr, ct


def test_exported_lr_pet_and_ct_read_back_as_the_records(tiny, tmp_path):
    d, m = tiny
    info = ec.export_case(d, tmp_path / "case", split="test", index=0)
    h = m["splits"]["test"]["studies"][0]
    assert info["study"] == h and info["split"] == "test" and info["lr_spacing_mm"][:2] == [4.0, 4.0]
    slices = _records_of(d, h)
    _check_against_records(tmp_path / "case", slices, 2)
    hr = read_nifti(tmp_path / "case" / "hr_pet.nii.gz")
    np.testing.assert_allclose(hr.array, np.stack([s["hr_pet"] for s in slices]), rtol=1e-6)
    np.testing.assert_allclose(hr.affine, slices[0]["hr_affine"], atol=1e-4)
    assert not (tmp_path / "case" / "hr_mask.nii.gz").exists()  # the tiny set has no masks
    pt = pydicom.dcmread(sorted((tmp_path / "case" / "lr_pet").iterdir())[0])
    c = pydicom.dcmread(sorted((tmp_path / "case" / "ct").iterdir())[0])
    assert "degraded LR PET" in pt.SeriesDescription and "HR CT" in c.SeriesDescription
    assert pt.FrameOfReferenceUID == c.FrameOfReferenceUID and pt.StudyInstanceUID == c.StudyInstanceUID
    assert pt.SeriesInstanceUID != c.SeriesInstanceUID
    assert str(pt.PatientName) == "ANONYMOUS" and pt.PatientID == "ANON" and pt.ImageType[0] == "DERIVED"
    text = "".join(str(e.value) for f in (pt, c) for e in f.iterall())
    assert h not in text and str(d) not in text  # neither the study hash nor the set's path lands in the tags


def test_a_second_export_gets_new_uids(tiny, tmp_path):
    d, _ = tiny
    ec.export_case(d, tmp_path / "a", split="test", index=0)
    ec.export_case(d, tmp_path / "b", split="test", index=0)
    a, b = (pydicom.dcmread(sorted((tmp_path / n / "lr_pet").iterdir())[0]) for n in "ab")
    assert a.StudyInstanceUID != b.StudyInstanceUID and a.SOPInstanceUID != b.SOPInstanceUID
    np.testing.assert_array_equal(a.pixel_array, b.pixel_array)


def test_study_by_hash_and_clear_refusals(tiny, tmp_path, capsys):
    d, m = tiny
    h = m["splits"]["train"]["studies"][0]
    assert ec.main(["--data_dir", str(d), "--study", h, "--out", str(tmp_path / "c")]) == 0
    info = json.loads((tmp_path / "c" / "case.json").read_text())
    assert info["study"] == h and info["split"] == "train" and info["index"] == 0
    _check_against_records(tmp_path / "c", _records_of(d, h), 2)
    capsys.readouterr()
    assert ec.main(["--data_dir", str(d), "--study", h, "--out", str(tmp_path / "c")]) == 2  # exists
    assert "exists" in capsys.readouterr().err
    assert ec.main(["--data_dir", str(d), "--study", "STS_001", "--out", str(tmp_path / "x")]) == 2
    assert "not a study hash" in capsys.readouterr().err
    assert ec.main(["--data_dir", str(d), "--split", "test", "--index", "5", "--out", str(tmp_path / "x")]) == 2
    assert "outside the 1 studies" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    v = m["splits"]["val"]["studies"][0]
    assert ec.main(["--data_dir", str(d), "--study", v, "--out", str(tmp_path / "c"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "c" / "case.json").read_text())["study"] == v
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temporary folder left beside it


def test_gapped_records_are_refused():
    a = np.eye(4)
    with pytest.raises(ec.InputError, match="gaps"):
        ec.volume_affine([{"slice_index": 0, "hr_affine": a}, {"slice_index": 2, "hr_affine": a}], "set")
    b = a.copy()
    b[2, 3] = 5.0  # second slice 5 mm away, the grid says 1 mm
    with pytest.raises(ec.InputError, match="not on the grid"):
        ec.volume_affine([{"slice_index": 0, "hr_affine": a}, {"slice_index": 1, "hr_affine": b}], "set")


def test_a_real_study_exports_and_generate_takes_it_without_a_spacing_warning(tmp_path, capsys):
    """One IBSI STS study prepared as docs/real_data.md does (HR 5.47 mm, the bundled real model's grid), exported,
    then super-resolved by generate.py with bundled:real: the LR PET is on the model's 10.94 mm input grid."""
    from data_prep.__main__ import main as cli

    name = "STS_019"
    if not (REAL / name).is_dir():
        pytest.skip(f"{REAL / name} is absent (the real IBSI studies live in ../shared)")
    root = tmp_path / "real"
    shutil.copytree(REAL / name, root / name)
    prep = tmp_path / "prep"
    assert cli(["convert", "--studies", str(root), "--out", str(prep), "--hr_spacing_mm=5.46875",
                "--no_truth_fwhm_mm=8", "--counts_per_suv=200", "--val_fraction=0", "--test_fraction=1"]) == 0
    out = tmp_path / "case"
    info = ec.export_case(prep, out, split="test", index=0)
    assert info["lr_spacing_mm"][:2] == [10.9375, 10.9375] and info["has_mask"] and not info["has_truth"]
    slices = _records_of(prep, info["study"])
    lr, ct = _check_against_records(out, slices, 2)
    # the exported LR PET sits where the clinical PET is: same uptake at the LR voxels' positions (blurred, noisy)
    clinical = dicom_io.read_series(_pet_folder(root / name))
    from ctpet_srgan.geometry import resample

    ref = resample(clinical, lr.affine, lr.shape, fill_value=np.nan).array
    ok = np.isfinite(ref)
    assert ok.mean() > 0.9 and np.corrcoef(ref[ok], lr.array[ok])[0, 1] > 0.9
    assert name not in (out / "case.json").read_text()
    import generate

    capsys.readouterr()
    generate.generate(str(out / "ct"), str(out / "lr_pet"), str(tmp_path / "sr.nii.gz"), "bundled:real",
                      generate.Options(progress=False))
    err = capsys.readouterr().err
    assert "warning: PET pixels" not in err, err
    sr = read_nifti(tmp_path / "sr.nii.gz")
    hr = read_nifti(out / "hr_pet.nii.gz")
    assert sr.shape == hr.shape and np.allclose(sr.affine, hr.affine, atol=1e-3)
    # generate on the exported series = the model on the records (what evaluate.py scores), up to the DICOM rescale
    from ctpet_srgan.inference import load_predictor

    case = ec.load_case(prep, split="test", index=0)
    ref = load_predictor("bundled:real").predict(case.lr_pet.array, case.hr_ct.array, batch_size=8)["sr_pet"]
    np.testing.assert_allclose(sr.array, np.maximum(np.asarray(ref), 0.0), atol=2e-3)


def _pet_folder(study_dir):
    """The folder holding the study's PET image series (not the RTSTRUCT), found by reading headers."""
    for f in sorted(study_dir.rglob("*.dcm")):
        ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        if ds.get("Modality") == "PT":
            return f.parent
    raise AssertionError(f"{study_dir}: no PET series")
