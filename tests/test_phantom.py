"""The synthetic PET/CT phantom: anatomy, NEMA IEC variant, DICOM output read back through the real reader."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctpet_srgan.volume_io import read_volume
from data_prep import phantom as ph

SMALL = ph.PhantomConfig(fov_mm=96.0, pet_slices=6)


def _at(vol, xyz):
    i, j, k = np.round(vol.patient_to_index(np.asarray(xyz, float))).astype(int)
    return float(vol.array[k, j, i])


def test_case_is_a_pure_function_of_seed_and_index():
    a = ph.make_phantom_case(SMALL, 3, 2, "thorax")
    b = ph.make_phantom_case(SMALL, 3, 2, "thorax")
    c = ph.make_phantom_case(SMALL, 4, 2, "thorax")
    assert np.array_equal(a.pet.array, b.pet.array) and np.array_equal(a.ct.array, b.ct.array)
    assert a.study.study_uid == b.study.study_uid and a.lesions == b.lesions
    assert not np.array_equal(a.pet.array, c.pet.array) and a.study.study_uid != c.study.study_uid


def test_grids_and_organ_values():
    case = ph.make_phantom_case(SMALL, 0, 1, "thorax")
    assert case.ct.spacing_mm == pytest.approx((1.0, 1.0, 2.0))
    assert case.pet.spacing_mm == pytest.approx((4.0, 4.0, 4.0))
    assert case.truth.spacing_mm == pytest.approx((2.0, 2.0, 2.0))
    assert case.ct.shape == (12, 96, 96) and case.pet.shape == (6, 24, 24) and case.truth.shape == (12, 48, 48)
    ct = case.ct.array
    assert np.median(ct[:, :3, :3]) == pytest.approx(-1000, abs=30)  # air outside the body
    assert (ct < -700).mean() > 0.02 and (ct > 500).mean() > 0.002  # lungs and bone are there
    truth = case.truth.array
    assert truth[:, :2, :2].max() < 0.05  # no activity in air
    assert truth.max() > 2.5  # heart / liver / lesions are hotter than soft tissue (~1 SUV)
    # the truth is noise-free; the clinical PET is noisy and blurred (a hot spot loses peak value)
    assert np.abs(case.pet.array - np.round(case.pet.array * SMALL.counts_per_suv) / SMALL.counts_per_suv).max() < 1e-4


def test_nema_variant_has_iec_spheres_4_to_1_and_a_cold_lung_insert():
    cfg = ph.PhantomConfig(pet_slices=4)  # full 256 mm field: true IEC sizes
    case = ph.make_phantom_case(cfg, 0, 0, "nema")
    assert [les["diameter_mm"] for les in case.lesions] == list(ph.NEMA_SPHERES_MM)
    assert all(les["uptake_ratio"] == 4.0 for les in case.lesions)
    radii = [np.hypot(*les["center_mm"][:2]) for les in case.lesions]
    assert radii == pytest.approx([57.2] * 6)
    zc = case.lesions[0]["center_mm"][2]
    big = case.lesions[-1]["center_mm"]
    assert _at(case.truth, big) == pytest.approx(4.0, rel=0.03)  # 37 mm sphere centre: 4 x background
    assert _at(case.truth, (0.0, -90.0, zc)) == pytest.approx(1.0, rel=0.03)  # warm background
    assert _at(case.truth, (0.0, 0.0, zc)) < 0.1  # lung insert: no activity
    assert _at(case.ct, (0.0, 0.0, zc)) == pytest.approx(-800, abs=40)
    assert _at(case.ct, (0.0, -90.0, zc)) == pytest.approx(0, abs=40)
    # 6 mm clinical PSF: the 10 mm sphere's peak is well below the truth's
    small = case.lesions[0]["center_mm"]
    assert _at(case.pet, small) < 0.8 * 4.0


def test_lesions_sit_in_the_field_and_are_hot():
    case = ph.make_phantom_case(SMALL, 0, 3, "thorax")
    assert case.lesions
    lo = case.pet.index_to_patient([-0.5, -0.5, -0.5])
    hi = case.pet.index_to_patient(np.array(case.pet.shape[::-1]) - 0.5)
    for les in case.lesions:
        assert np.all(np.asarray(les["center_mm"]) > lo) and np.all(np.asarray(les["center_mm"]) < hi)
        assert set(les) >= {"center_mm", "diameter_mm", "uptake_ratio", "kind"}
    assert ph.make_phantom_case(SMALL, 0, 3, "thorax", with_lesions=False).lesions == []


def test_case_plan_has_nema_and_a_lesion_free_case():
    plan = ph.case_plan(6, nema_every=4)
    assert plan[0] == ("nema", True) and plan[4] == ("nema", True)
    assert plan[1][1] is False  # lesion-free, for hallucination scoring
    assert {v for v, _ in plan} >= {"nema", "thorax", "pelvis"}
    assert all(v != "nema" for v, _ in ph.case_plan(5, nema_every=0))


def test_written_dicom_reads_back_as_the_same_hu_and_suv(tmp_path):
    case = ph.make_phantom_case(SMALL, 7, 2, "pelvis")
    d = ph.write_phantom_study(case, tmp_path / "case", SMALL)
    ct, pet, truth = (read_volume(d / s) for s in ("ct", "pet", "pet_truth"))
    assert (ct.modality, ct.units, pet.modality, pet.units) == ("CT", "HU", "PT", "SUVbw")
    assert np.abs(ct.array - case.ct.array).max() <= 0.51  # int16 HU
    for got, ref in ((pet, case.pet), (truth, case.truth)):  # SUVbw from Bq/mL, dose, decay and weight
        assert np.allclose(got.affine, ref.affine, atol=1e-3)
        assert np.abs(got.array - ref.array).max() <= 2e-4 * ref.array.max() + 1e-6
    ds = {s: pydicom.dcmread(next((d / s).iterdir())) for s in ("ct", "pet", "pet_truth")}
    assert ds["ct"].SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    assert ds["pet"].SOPClassUID == "1.2.840.10008.5.1.4.1.1.128"
    assert float(ds["ct"].PixelSpacing[0]) == pytest.approx(1.0)
    assert float(ds["pet"].PixelSpacing[0]) == pytest.approx(4.0)
    p = ds["pet"]
    assert (p.Units, p.DecayCorrection) == ("BQML", "START") and float(p.PatientWeight) > 0
    rp = p.RadiopharmaceuticalInformationSequence[0]
    assert float(rp.RadionuclideTotalDose) > 1e8 and float(rp.RadionuclideHalfLife) == pytest.approx(6586.2)
    assert rp.RadiopharmaceuticalStartTime < p.SeriesTime == p.AcquisitionTime
    assert len({x.FrameOfReferenceUID for x in ds.values()}) == 1
    assert len({x.StudyInstanceUID for x in ds.values()}) == 1
    assert ds["pet_truth"].SeriesDescription.startswith(ph.TRUTH_DESCRIPTION)
    assert not ds["pet"].SeriesDescription.startswith(ph.TRUTH_DESCRIPTION)
    assert json.loads((d / "lesions.json").read_text()) == case.lesions


def test_write_phantom_studies_distinct_studies_and_resume(tmp_path):
    cfg = ph.PhantomConfig(fov_mm=64.0, pet_slices=3)
    paths = ph.write_phantom_studies(tmp_path, 2, 5, cfg=cfg)
    assert [p.name for p in paths] == ["case_000", "case_001"]
    uids = {pydicom.dcmread(next((p / "ct").iterdir())).StudyInstanceUID for p in paths}
    assert len(uids) == 2
    before = {f: f.stat().st_mtime_ns for f in Path(tmp_path).rglob("*.dcm")}
    ph.write_phantom_studies(tmp_path, 3, 5, cfg=cfg)  # resume: the two are kept, one is added
    assert all(f.stat().st_mtime_ns == t for f, t in before.items())
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["case_000", "case_001", "case_002", "phantom.json"]
    with pytest.raises(ValueError, match="other settings"):
        ph.write_phantom_studies(tmp_path, 3, 6, cfg=cfg)
