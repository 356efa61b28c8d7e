"""PHI audit: markers planted in every identifying tag of a study are searched in every byte the project writes
(TFRecords, manifest, work files, logs and printed output, NIfTI, PNG, NPY). The derived DICOM series carries the
source's identity by design (so viewers fuse it), and `generate --anonymize` removes it."""

import logging

import numpy as np
import pydicom
import pytest

import generate
from data_prep.__main__ import main as cli
from tests._serve_models import passthrough_generator, save_model_dir

MARK = "PHIMARK"
# every identifying attribute of the DICOM basic confidentiality profile a scanner commonly fills in
PLANTED = {
    "PatientName": f"{MARK}^NAME", "PatientID": f"{MARK}ID1", "OtherPatientIDs": f"{MARK}ID2",
    "PatientBirthDate": "19230405", "PatientAddress": f"{MARK} STREET 1", "AccessionNumber": f"{MARK}ACC",
    "StudyID": f"{MARK}SID", "InstitutionName": f"{MARK} HOSPITAL", "InstitutionAddress": f"{MARK} ROAD",
    "ReferringPhysicianName": f"{MARK}^REF", "PerformingPhysicianName": f"{MARK}^PERF",
    "OperatorsName": f"{MARK}^OP", "StationName": f"{MARK}ST", "DeviceSerialNumber": f"{MARK}SN",
    "StudyDescription": f"{MARK} STUDY", "PatientComments": f"{MARK} COMMENT", "MedicalRecordLocator": f"{MARK}MRL",
}
NEEDLES = [MARK.encode(), b"19230405", MARK.lower().encode()]


def _plant(root):
    uids = set()
    for p in sorted(root.rglob("*.dcm")):
        ds = pydicom.dcmread(str(p))
        for k, v in PLANTED.items():
            setattr(ds, k, v)
        uids |= {str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)}
        ds.save_as(str(p))
    return uids


def _leaks(folder, needles):
    found = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            found += [f"{p.relative_to(folder)}: {n!r}" for n in needles if n in data]
    return found


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("phi")
    ph = tmp / "ph"
    assert cli(["phantom", "--out", str(ph), "--cases", "1", "--seed", "5", "--fov_mm", "64", "--pet_slices", "3"]) == 0
    uids = _plant(ph)
    assert len(_leaks(ph, NEEDLES[:2])) >= 2 * len(list(ph.rglob("*.dcm")))  # the markers are there to be found
    model = save_model_dir(*passthrough_generator("s2d"), tmp / "model")
    return tmp, ph / "case_000", uids, model


def test_no_identifier_in_prepared_data_or_logs(planted, capsys, caplog):
    tmp, case, uids, _ = planted
    out = tmp / "set"
    with caplog.at_level(logging.DEBUG):
        assert cli(["convert", "--studies", str(case.parent), "--out", str(out), "--scale", "2"]) == 0
    printed = capsys.readouterr()
    text = (printed.out + printed.err + caplog.text).encode()
    needles = NEEDLES + [u.encode() for u in uids]
    assert [n for n in needles if n in text] == []
    assert (out / "manifest.json").exists() and _leaks(out, needles) == []


def test_no_identifier_in_nifti_png_npy_or_output(planted, tmp_path, capsys):
    _, case, uids, model = planted
    opts = generate.Options(progress=False)
    for name in ("sr.nii.gz", "sr.png", "sr.npy"):
        generate.generate(case / "ct", case / "pet", tmp_path / name, model, opts)
    printed = capsys.readouterr()
    needles = NEEDLES + [u.encode() for u in uids]
    assert [n for n in needles if n in (printed.out + printed.err).encode()] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr.nii.gz", "sr.npy", "sr.png", "sr_ct.nii.gz",
                                                          "sr_ct.npy"]
    assert _leaks(tmp_path, needles) == []


def test_derived_dicom_carries_identity_unless_anonymized(planted, tmp_path):
    from ctpet_srgan.dicom_io import read_series

    _, case, _, model = planted
    generate.generate(case / "ct", case / "pet", tmp_path / "keep", model, generate.Options(progress=False))
    generate.generate(case / "ct", case / "pet", tmp_path / "anon", model,
                      generate.Options(progress=False, anonymize=True))
    src = pydicom.dcmread(str(sorted((case / "pet").iterdir())[0]))
    keep = pydicom.dcmread(str(sorted((tmp_path / "keep").iterdir())[0]))
    assert keep.PatientName == src.PatientName and keep.StudyInstanceUID == src.StudyInstanceUID  # the choice
    # only the name and ID are carried, not the other planted attributes
    assert [n for n in (b"19230405", b"HOSPITAL", b"ACC", b"STREET") if n in
            (tmp_path / "keep" / sorted(p.name for p in (tmp_path / "keep").iterdir())[0]).read_bytes()] == []
    needles = NEEDLES + [str(src.StudyInstanceUID).encode(), str(src.FrameOfReferenceUID).encode(),
                         str(src.StudyDate).encode()]
    assert _leaks(tmp_path / "anon", needles) == []
    anon = pydicom.dcmread(str(sorted((tmp_path / "anon").iterdir())[0]))
    assert (str(anon.PatientName), anon.PatientID, anon.StudyDate) == ("ANONYMOUS", "ANON", "20000101")
    assert anon.SeriesTime == keep.SeriesTime  # times of day kept; only dates shifted
    np.testing.assert_allclose(read_series(tmp_path / "anon").array, read_series(tmp_path / "keep").array,
                               rtol=1e-6)  # SUV unchanged
    again = tmp_path / "anon2"
    generate.generate(case / "ct", case / "pet", again, model, generate.Options(progress=False, anonymize=True))
    assert pydicom.dcmread(str(sorted(again.iterdir())[0])).StudyInstanceUID == anon.StudyInstanceUID  # stable
