"""The synthetic PET/CT phantom: anatomy, NEMA IEC variant, DICOM output read back through the real reader."""

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from ctpet_srgan.geometry import bounding_box_mm
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


# ----------------------------------------------------------------------------------------- guided world
GUIDED = ph.PhantomConfig(fov_mm=128.0, pet_slices=12, world="guided")
_NO_SHIFT = ph.GuidedOptions(global_shift_mm=(0.0, 0.0, 0.0), resp_shift_mm=(0.0, 0.0))


def _cfg(**opts):
    import dataclasses

    return dataclasses.replace(GUIDED, guided=dataclasses.replace(GUIDED.guided, **opts))


def _points(vol, sl=None):
    """LPS mm of every voxel centre of `vol` as (k, j, i, 3)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in vol.shape), indexing="ij")
    return vol.index_to_patient(np.stack([i, j, k], -1))


def _centroid(vol, rec, weights_of, pad, pts):
    """Weighted centroid (mm) of vol near rec (a window of the structure's radius + pad around where it should be);
    pts: `_points(vol)`."""
    from ctpet_srgan.guidance import inside_structure

    win = inside_structure({"center_mm": rec["center_mm"], "diameter_mm": rec["diameter_mm"] + 2 * pad}, pts,
                           rec.get("shift_mm", (0, 0, 0)))
    w = weights_of(vol.array[win])
    return (pts[win] * w[:, None]).sum(0) / w.sum()


def test_guided_world_is_opt_in_and_leaves_the_default_settings_alone():
    assert "world" not in ph.PhantomConfig().settings() and "guided" not in ph.PhantomConfig().settings()
    assert GUIDED.settings()["world"] == "guided" and "heterogeneity" in GUIDED.settings()["guided"]
    with pytest.raises(ValueError, match="world"):
        ph.make_phantom_case(ph.PhantomConfig(world="nope"), 0, 0)
    default = ph.make_phantom_case(SMALL, 1, 2, "thorax")
    assert default.lesions_json() == default.lesions and not default.ct_only and not default.scanner


def test_each_structure_type_is_where_lesions_json_says(tmp_path):
    from ctpet_srgan.guidance import inside_structure

    cfg = _cfg(global_shift_mm=(0.0, 0.0, 0.0), resp_shift_mm=(0.0, 0.0))
    seen = set()
    for i, variant in enumerate(("thorax", "pelvis", "head")):
        d = ph.write_phantom_study(ph.make_phantom_case(cfg, 2, i, variant), tmp_path / variant, cfg)
        info = json.loads((d / "lesions.json").read_text())
        ct, truth = read_volume(d / "ct"), read_volume(d / "pet_truth")
        assert info["world"] == "guided" and set(info["scanner"]) >= {"psf_fwhm_mm", "counts_per_suv"}
        ct_pts, tr_pts = _points(ct), _points(truth)
        for rec in info["ct_only"]:
            seen.add(rec["structure"])
            assert rec["has_ct_correlate"] and rec["uptake_ratio"] == 1.0
            inside = ct.array[inside_structure(rec, ct_pts, rec["shift_mm"])]
            host_hu = ph._LABELS[rec["host"]][0]
            if rec["structure"] == "calcification":
                assert inside.max() > host_hu + 300, rec
            else:  # cysts are water, fat planes fat, vessels contrast-filled: clearly off the host's HU
                assert abs(np.median(inside) - rec["hu"]) < 0.35 * abs(rec["hu"] - host_hu), rec
        # lesions: hot in the PET; where there is no CT correlate the CT is the default world's CT (anatomy only)
        plain = ph.make_phantom_case(dataclasses_replace(cfg, world="default"), 2, i, variant)
        bare = ph.make_phantom_case(_cfg(ct_only=False, global_shift_mm=(0.0, 0.0, 0.0), resp_shift_mm=(0.0, 0.0)),
                                    2, i, variant)
        assert bare.lesions == info["lesions"]
        for les in info["lesions"]:
            seen.add(les["structure"] + ("" if les["has_ct_correlate"] else "/pet_only"))
            hosts = les["host"].split("|")
            host_suv = max(ph._LABELS[h][1] for h in hosts)
            assert np.mean(truth.array[inside_structure(les, tr_pts)]) > 1.3 * host_suv * 0.8, les  # hot in the PET
            core = inside_structure({"center_mm": les["center_mm"], "diameter_mm": les["diameter_mm"] / 2}, ct_pts)
            changed = np.abs(bare.ct.array[core] - plain.ct.array[core]).mean()
            if les["has_ct_correlate"] and les["host"] != "lung":  # (lung lesions show in the default world too)
                assert changed > 15, les
            elif not les["has_ct_correlate"]:
                assert changed == 0, les
            assert les["structure"] != "boundary_lesion" or len(hosts) == 2
    assert seen >= {"cyst", "calcification", "fat_plane", "vessel", "lesion", "lesion/pet_only",
                    "boundary_lesion/pet_only"}


def test_guided_uptake_is_heterogeneous_where_the_default_is_flat():
    plain = ph.make_phantom_case(dataclasses_replace(GUIDED, world="default"), 3, 1, "thorax", with_lesions=False)
    guided = ph.make_phantom_case(_cfg(ct_only=False), 3, 1, "thorax", with_lesions=False)
    body = plain.truth.array > 0.3
    ratio = guided.truth.array[body] / plain.truth.array[body]
    assert 0.06 < ratio.std() < 0.3 and abs(np.median(ratio) - 1) < 0.1
    assert guided.lesions == [] and guided.ct_only == []


def dataclasses_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_necrotic_cores_are_cold_and_scanner_variety_is_used():
    found = 0
    psfs, counts = set(), set()
    cfg = dataclasses_replace(GUIDED, fov_mm=96.0, pet_slices=10)
    for i in range(8):
        case = ph.make_phantom_case(cfg, 5, i, "thorax")
        psfs.add(case.scanner["psf_fwhm_mm"]), counts.add(case.scanner["counts_per_suv"])
        c = case.scanner["counts_per_suv"]
        assert np.abs(case.pet.array * c - np.round(case.pet.array * c)).max() < 1e-3  # Poisson at that count level
        for les in case.lesions:
            if les["necrotic_core_mm"] >= 6:
                found += 1
                centre = _at(case.truth, les["center_mm"])
                assert centre < 0.7 * les["uptake_ratio"] * ph._LABELS[les["host"].split("|")[0]][1], les
    assert found >= 1 and len(psfs) >= 2 and len(counts) >= 2


def test_ct_only_structures_leave_the_pet_truth_unchanged():
    with_, without = (ph.make_phantom_case(_cfg(ct_only=flag), 4, 2, "thorax") for flag in (True, False))
    assert with_.ct_only and not without.ct_only
    assert np.array_equal(with_.truth.array, without.truth.array)
    assert np.array_equal(with_.pet.array, without.pet.array)
    assert with_.lesions == without.lesions
    diff = np.abs(with_.ct.array - without.ct.array)
    assert diff.max() > 100  # the CT does show them


def test_a_known_shift_moves_the_ct_against_the_pet():
    case = ph.make_phantom_case(_cfg(global_shift_mm=(4.0, -3.0, 2.0), resp_shift_mm=(0.0, 0.0)), 6, 1, "thorax")
    assert case.misregistration["global_shift_mm"] == [4.0, -3.0, 2.0]

    def body_xy(vol, m):
        pts = _points(vol)[m]
        return pts[:, :2].mean(0)

    assert body_xy(case.ct, case.ct.array > -950) - body_xy(case.truth, case.truth.array > 0.1) == pytest.approx(
        [4.0, -3.0], abs=0.4)
    aligned = ph.make_phantom_case(_cfg(global_shift_mm=(0.0, 0.0, 0.0), resp_shift_mm=(0.0, 0.0)), 6, 1, "thorax")
    assert body_xy(aligned.ct, aligned.ct.array > -950) - body_xy(aligned.truth, aligned.truth.array > 0.1) == \
        pytest.approx([0.0, 0.0], abs=0.4)
    # calcifications (CT only) sit in the CT at centre + shift_mm, also under a respiratory shift
    moved = 0
    for cfg in (_cfg(global_shift_mm=(4.0, -3.0, 2.0), resp_shift_mm=(0.0, 0.0)),
                _cfg(global_shift_mm=(0.0, 0.0, 0.0), resp_shift_mm=(3.0, 8.0))):
        for i in range(2):
            case = ph.make_phantom_case(cfg, 6, i, "thorax")
            bare = ph.make_phantom_case(dataclasses_replace(cfg, guided=dataclasses_replace(cfg.guided, ct_only=False)),
                                        6, i, "thorax")
            only = dataclasses_replace(case.ct, array=case.ct.array - bare.ct.array)  # the structures alone, as written
            pts = _points(only)
            for rec in case.ct_only:
                if rec["structure"] != "calcification":  # small and bright: its HU-weighted centroid is its centre
                    continue
                want = np.add(rec["center_mm"], rec["shift_mm"])
                lo, hi = bounding_box_mm(case.ct)
                if np.any(want - rec["diameter_mm"] / 2 - 1 < lo) or np.any(want + rec["diameter_mm"] / 2 + 1 > hi):
                    continue  # shifted out of the CT's field
                got = _centroid(only, rec, np.abs, pad=2.0, pts=pts)
                assert got == pytest.approx(want, abs=0.75), rec
                moved += 1
    assert moved >= 3


def test_cli_writes_a_guided_world_that_convert_reads(tmp_path):
    from data_prep.__main__ import main
    from data_prep.convert import _load_lesions

    assert main(["phantom", "--out", str(tmp_path / "g"), "--cases", "2", "--fov_mm", "64", "--pet_slices", "4",
                 "--nema_every", "0", "--world", "guided"]) == 0
    info = json.loads((tmp_path / "g" / "case_000" / "lesions.json").read_text())
    assert info["world"] == "guided" and info["lesions"]
    assert list(_load_lesions(tmp_path / "g" / "case_000" / "lesions.json")) == info["lesions"]
    assert json.loads((tmp_path / "g" / "phantom.json").read_text())["config"]["world"] == "guided"
