"""dicom_write: series written and read back (HU, Bq/mL), and the derived SR PET series: SUV kept, identity kept or
anonymized, tracer kept, missing tags refused, written atomically."""

import copy
import datetime as dt

import numpy as np
import pydicom
import pytest

from ctpet_srgan import dicom_write
from ctpet_srgan.dicom_io import read_series
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume
from ctpet_srgan.slabs import SlabSlices
from tests import _series

AFF = _series.grid_affine((10.0, -5.0, 0.0), (3, 8, 6), (4.0, 4.0, 4.0))
SR_AFF = _series.grid_affine((10.0, -5.0, 0.0), (3, 16, 12), (2.0, 2.0, 4.0))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A source PET series (SUVbw 1..5 by slice and row) and the header generate.py reads from it."""
    tmp = tmp_path_factory.mktemp("src")
    suv = (1.0 + np.arange(3)[:, None, None] + np.linspace(0, 2, 8)[None, :, None] * np.ones((3, 8, 6)))
    scale = _series.expected_suv_scale(_series.T0 + dt.timedelta(minutes=60))
    who = dicom_write.StudyInfo("1.2.826.0.1.3680043.8.498.71", "1.2.826.0.1.3680043.8.498.72", _series.T0,
                                patient_name="DOE^JANE", patient_id="PID12345", patient_weight_kg=_series.WEIGHT_KG,
                                patient_sex="F")
    _series.write_pet(tmp, (suv / scale).astype(np.float32), AFF, study=who)
    (tmp / "pet" / "notes.txt").write_text("not DICOM")  # a stray file in the folder is skipped
    return tmp / "pet", dicom_write.pet_dicom_source(tmp / "pet")


def _sr(seed=0):
    """An SR PET in SUV with a few undershoots below 0 (clipped in the written series)."""
    return np.random.default_rng(seed).uniform(-0.5, 9.0, (3, 16, 12)).astype(np.float32)


def test_series_round_trip_in_hu_and_bq_per_ml(tmp_path):
    hu = np.random.default_rng(1).uniform(-1000, 2000, (3, 8, 6)).round().astype(np.float32)
    _series.write_ct(tmp_path, hu, AFF)
    ct = read_series(tmp_path / "ct")
    assert ct.units == "HU" and ct.modality == "CT"
    np.testing.assert_array_equal(ct.array, hu)
    np.testing.assert_allclose(ct.affine, AFF, atol=1e-6)
    bq = np.random.default_rng(2).uniform(0, 3e4, (3, 8, 6)).astype(np.float32)
    files = _series.write_pet(tmp_path, bq, AFF)
    ds = pydicom.dcmread(files[1])
    np.testing.assert_allclose(ds.pixel_array * float(ds.RescaleSlope), bq[1], atol=bq[1].max() / 32767)
    assert ds.pixel_array.max() == 32767 and ds.Units == "BQML" and ds.InstanceNumber == 2


def test_pet_dicom_source_finds_the_pet_header_or_none(source, tmp_path):
    folder, src = source
    assert src is not None and src.Modality == "PT" and "PixelData" not in src
    _series.write_ct(tmp_path, np.zeros((2, 4, 4), np.float32), AFF)
    assert dicom_write.pet_dicom_source(tmp_path / "ct") is None  # a CT series is no PET source
    (tmp_path / "pet.nii").write_bytes(b"\x00" * 400)
    assert dicom_write.pet_dicom_source(tmp_path / "pet.nii") is None


def test_derived_series_keeps_suv_and_the_source_identity(source, tmp_path):
    folder, src = source
    sr = _sr()
    dicom_write.write_derived_series(tmp_path / "sr", Volume(sr, SR_AFF, "PT", "SUVbw"), src, "SR PET (test)")
    back = read_series(tmp_path / "sr")  # SUV from the written tags, by the QIBA reader
    assert back.units == "SUVbw" and back.shape == sr.shape
    np.testing.assert_allclose(back.affine, SR_AFF, atol=1e-3)
    clipped = np.maximum(sr, 0)
    np.testing.assert_allclose(back.array, clipped, atol=clipped.max() / 30000 + 1e-5)
    ds = pydicom.dcmread(sorted((tmp_path / "sr").iterdir())[0])
    assert ds.PatientName == src.PatientName == "DOE^JANE" and ds.PatientID == src.PatientID == "PID12345"
    assert ds.PatientSex == "F"
    assert ds.StudyInstanceUID == src.StudyInstanceUID and ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.StudyDate == src.StudyDate
    assert ds.SeriesNumber == int(src.SeriesNumber) + 1000 and ds.SeriesDescription == "SR PET (test)"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "AXIAL"] and ds.Units == "BQML"
    assert [p.name for p in tmp_path.iterdir()] == ["sr"]


def test_anonymized_series_has_no_identity_and_the_same_suv(source, tmp_path):
    folder, src = source
    sr = _sr(3)
    for name in ("a", "b"):
        dicom_write.write_derived_series(tmp_path / name, Volume(sr, SR_AFF, "PT", "SUVbw"), src, "x",
                                         anonymize=True)
    a = [pydicom.dcmread(p) for p in sorted((tmp_path / "a").iterdir())]
    b = pydicom.dcmread(sorted((tmp_path / "b").iterdir())[0])
    ds = a[0]
    assert str(ds.PatientName) == "ANONYMOUS" and ds.PatientID == "ANON" and ds.PatientSex == "O"
    assert ds.StudyInstanceUID != src.StudyInstanceUID and ds.FrameOfReferenceUID != src.FrameOfReferenceUID
    assert (ds.StudyInstanceUID, ds.FrameOfReferenceUID) == (b.StudyInstanceUID, b.FrameOfReferenceUID)  # hashed
    assert ds.StudyDate == "20000101" and ds.StudyTime == src.StudyTime  # whole days shifted, time of day kept
    rp, src_rp = ds.RadiopharmaceuticalInformationSequence[0], src.RadiopharmaceuticalInformationSequence[0]
    assert rp.RadionuclideTotalDose == src_rp.RadionuclideTotalDose and ds.PatientWeight == src.PatientWeight
    assert rp.RadiopharmaceuticalStartDateTime.startswith("20000101")
    np.testing.assert_allclose(read_series(tmp_path / "a").array, read_series(tmp_path / "b").array)
    clipped = np.maximum(sr, 0)
    np.testing.assert_allclose(read_series(tmp_path / "a").array, clipped, atol=clipped.max() / 30000 + 1e-5)
    assert all("PID12345" not in str(d) and "DOE" not in str(d) for d in a)


def test_derived_series_keeps_the_source_tracer(source):
    _, src = source
    src = copy.deepcopy(src)  # a copy relabelled as Ga-68 PSMA
    rp = src.RadiopharmaceuticalInformationSequence[0]
    rp.Radiopharmaceutical = "Ga-68 PSMA-11"
    code = pydicom.Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-131A3", "SRT", "^68^Gallium"
    rp.RadionuclideCodeSequence = pydicom.Sequence([code])
    pet, weight = dicom_write.source_pet_info(src, "out")
    assert (pet.radiopharmaceutical, pet.radionuclide, pet.radionuclide_code) == (
        "Ga-68 PSMA-11", "^68^Gallium", ("C-131A3", "SRT"))
    assert weight == pytest.approx(_series.WEIGHT_KG) and pet.units == "BQML"


def test_a_source_without_suv_tags_is_refused_naming_the_output(source, tmp_path):
    _, src = source
    src = copy.deepcopy(src)
    del src.PatientWeight
    with pytest.raises(InputError, match=r"sr: the PET input lacks .* tags .*PatientWeight"):
        dicom_write.write_derived_series(tmp_path / "sr", Volume(_sr(), SR_AFF, "PT", "SUVbw"), src, "x")
    assert list(tmp_path.iterdir()) == []


def test_a_series_failing_midway_leaves_the_old_one_whole(source, tmp_path):
    """The third slice never comes (the model died): no partial series replaces the existing one."""
    _, src = source
    sr = _sr()
    out = tmp_path / "sr"
    dicom_write.write_derived_series(out, Volume(sr, SR_AFF, "PT", "SUVbw"), src, "first")

    def slabs():
        yield 0, sr[:2]
        raise RuntimeError("model died")

    with pytest.raises(RuntimeError, match="model died"):
        dicom_write.write_derived_series(out, Volume(SlabSlices(sr.shape, slabs()), SR_AFF, "PT", "SUVbw"), src,
                                         "second")
    assert [p.name for p in tmp_path.iterdir()] == ["sr"] and len(list(out.iterdir())) == 3
    assert pydicom.dcmread(sorted(out.iterdir())[0]).SeriesDescription == "first"
