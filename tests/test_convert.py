"""data_prep convert: phantom DICOM -> TFRecords + manifest -> pipeline, resume, splits, privacy, bad input."""

import json
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import tensorflow as tf

from ctpet_srgan import records
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume, axial_affine
from data_prep import convert as cv
from data_prep import phantom as ph
from data_prep.__main__ import main as cli
from data_prep.inspect import inspect
from tests.conftest import SHARED

CFG = ph.PhantomConfig(fov_mm=128.0, pet_slices=6)  # PET 32x32x6 @ 4 mm, CT 128x128x12, truth 64x64x12


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("phantom")
    ph.write_phantom_studies(root, 3, 11, nema_every=4, cfg=CFG)  # nema, lesion-free thorax, pelvis with lesions
    return root


@pytest.fixture(scope="module")
def prepared(phantoms, tmp_path_factory):
    out = tmp_path_factory.mktemp("set")
    specs = cv.discover_studies(phantoms)
    manifest = cv.convert(specs, out, cv.ConvertConfig(scale=2, seed=1), shard_size=5, log=lambda s: None)
    return out, manifest, specs


def _records(out: Path, manifest: dict) -> list[dict]:
    exs = []
    for split in records.SPLITS:
        for sh in manifest["splits"][split]["shards"]:
            ds = tf.data.TFRecordDataset(str(out / sh["file"]), compression_type=manifest["compression"])
            for r in ds:
                e = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in records.parse_example(r).items()}
                e["split"] = split
                exs.append(e)
    return exs


def test_discovery_pairs_ct_pet_and_truth(phantoms):
    specs = cv.discover_studies(phantoms)
    assert len(specs) == 3
    for s in specs:
        assert s.truth is not None and all("pet_truth" in f for f in s.truth)
        assert all("/ct/" in f for f in s.ct) and all("/pet/" in f for f in s.pet)
    assert sorted(len(s.lesions) for s in specs)[0] == 0 and max(len(s.lesions) for s in specs) == 6


def test_round_trip_manifest_shapes_and_splits(prepared):
    out, m, specs = prepared
    assert records.read_manifest(out) == m
    assert m["scale"] == 2 and m["hr_spacing_mm"] == [2.0, 2.0, 4.0] and m["lr_spacing_mm"] == [4.0, 4.0, 4.0]
    assert m["degradation"]["extra_fwhm_mm_truth"] == pytest.approx(np.sqrt(32), abs=1e-3)
    assert set(m["splits"]) == set(records.SPLITS)
    assert all(len(m["splits"][s]["studies"]) == 1 for s in records.SPLITS)  # 3 studies: one per split
    assert m["examples"] == 18 and all(st["slices"] == 6 and st["hr_shape"] == [64, 64] for st in m["studies"].values())
    assert all(sh["examples"] <= 5 for s in m["splits"].values() for sh in s["shards"])
    assert all(st["has_truth"] for st in m["studies"].values())
    assert not (out / ".work").exists()
    exs = _records(out, m)
    assert len(exs) == 18
    keys = {(e["study"], int(e["slice_index"])) for e in exs}
    assert len(keys) == 18  # no duplicates
    for h in m["studies"]:  # splits by study, never by slice
        assert {e["split"] for e in exs if e["study"].decode() == h} == {m["studies"][h]["split"]}
    for e in exs:
        assert e["hr_pet"].shape == (64, 64, 1) and e["lr_pet"].shape == (32, 32, 1)
        assert e["hr_ct"].min() >= -1100 and e["hr_ct"].max() < 1200
        assert e["hr_pet"].min() >= 0 and e["lr_pet"].min() >= 0
    for h in m["studies"]:  # LR is the degraded HR: the same activity, within noise and axial blur
        mine = [e for e in exs if e["study"].decode() == h]
        assert sum(e["lr_pet"].sum() for e in mine) * 4 == pytest.approx(sum(e["hr_pet"].sum() for e in mine), rel=0.05)


def test_pipeline_reads_the_set_and_lesions_are_where_the_manifest_says(prepared):
    from ctpet_srgan.pipeline import make_dataset

    out, m, _ = prepared
    for split in records.SPLITS:
        batch = next(iter(make_dataset(out, split, batch_size=2, deterministic=True)))
        assert batch["hr_pet"].shape == (2, 64, 64, 1) and batch["lr_ct"].shape == (2, 32, 32, 1)
        assert -0.013 <= float(tf.reduce_min(batch["hr_ct"]))  # the -1024 HU clip
        assert float(tf.reduce_max(batch["hr_ct"])) <= 1.1
    train = next(iter(make_dataset(out, "train", batch_size=2, patch_size=8, training=True, seed=0)))
    assert train["lr_pet"].shape == (2, 8, 8, 1) and train["hr_pet"].shape == (2, 16, 16, 1)

    exs = _records(out, m)
    checked = 0
    for h, st in m["studies"].items():
        for les in st["lesions"]:
            if les["diameter_mm"] < 8:
                continue
            c = np.asarray(les["center_mm"])
            best = min((e for e in exs if e["study"].decode() == h),
                       key=lambda e: abs(e["hr_affine"][2, 3] - c[2]))  # the slice nearest the centre
            assert abs(best["hr_affine"][2, 3] - c[2]) <= 2.01
            vol = Volume(best["hr_pet"][None, :, :, 0], best["hr_affine"])
            i, j, _ = np.round(vol.patient_to_index(c)).astype(int)
            img = best["hr_pet"][:, :, 0]
            body = np.median(img[img > 0.2])
            assert img[j, i] > 1.8 * body  # hot at the recorded centre
            assert img[j, i] >= 0.85 * img[j - 6:j + 7, i - 6:i + 7].max()  # at the local peak (+-12 mm)
            assert img[j, i] > 1.5 * np.median(img[j - 6:j + 7, i - 6:i + 7])
            checked += 1
    assert checked >= 3


def test_nema_ct_and_pet_are_aligned_on_the_hr_grid(prepared):
    out, m, _ = prepared
    exs = _records(out, m)
    nema = [h for h, st in m["studies"].items() if len(st["lesions"]) == 6][0]
    e = [x for x in exs if x["study"].decode() == nema and int(x["slice_index"]) == 2][0]
    vol = Volume(e["hr_ct"][None, :, :, 0], e["hr_affine"])
    i, j, _ = np.round(vol.patient_to_index([0.0, 0.0, e["hr_affine"][2, 3]])).astype(int)
    assert e["hr_ct"][j, i, 0] == pytest.approx(-800, abs=60)  # lung insert on the axis
    assert e["hr_pet"][j, i, 0] < 0.1
    assert e["hr_ct"][j - 20, i, 0] == pytest.approx(0, abs=60)  # warm water 40 mm anterior
    assert e["hr_pet"][j - 20, i, 0] == pytest.approx(1.0, abs=0.15)


def test_no_patient_identifiers_in_the_output(prepared, phantoms):
    out, m, _ = prepared
    secrets = set()
    for f in phantoms.rglob("*.dcm"):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        secrets |= {str(ds.PatientName), str(ds.PatientID), ds.StudyInstanceUID, ds.SeriesInstanceUID,
                    ds.FrameOfReferenceUID, ds.SOPInstanceUID}
    assert len(secrets) > 10
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files
    blob = b"".join(p.read_bytes() for p in files) + " ".join(str(p) for p in files).encode()
    for s in secrets | {str(phantoms)}:
        assert s.encode() not in blob, s


def test_rerun_is_a_no_op_and_prepare_is_pure(prepared):
    out, m, specs = prepared
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    logs = []
    assert cv.convert(specs, out, cv.ConvertConfig(scale=2, seed=1), shard_size=5, log=logs.append) == m
    assert "nothing to do" in logs[0]
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before
    spec = specs[-1]
    a = cv.prepare_study(spec, cv.ConvertConfig(scale=2, seed=1))
    b = cv.prepare_study(spec, cv.ConvertConfig(scale=2, seed=1))
    c = cv.prepare_study(spec, cv.ConvertConfig(scale=2, seed=2))
    assert a.examples == b.examples and a.examples != c.examples
    assert a.study_hash == spec.key and len(a.examples) == a.summary["slices"] == 6


def test_interrupted_run_resumes_without_loss_or_duplicates(prepared, tmp_path, monkeypatch):
    _, m_ref, specs = prepared
    broken = cv.StudySpec(key=specs[1].key, ct=str(tmp_path / "nowhere"), pet=specs[1].pet)
    out = tmp_path / "set"
    cfg = cv.ConvertConfig(scale=2, seed=1)
    with pytest.raises(InputError, match="nowhere"):
        cv.convert([specs[0], broken, specs[2]], out, cfg, shard_size=5, strict=True, log=lambda s: None)
    assert not (out / records.MANIFEST).exists()
    assert sorted(p.name for p in (out / ".work").glob("*.examples")) == sorted(
        f"{s.key}.examples" for s in (specs[0], specs[2]))
    assert inspect(out)["complete"] is False and inspect(out)["prepared_studies"] == 2
    with pytest.raises(FileNotFoundError):
        records.read_manifest(out)
    calls = []
    real = cv.prepare_study
    monkeypatch.setattr(cv, "prepare_study", lambda s, c: calls.append(s.key) or real(s, c))
    m = cv.convert(specs, out, cfg, shard_size=5, log=lambda s: None)
    assert calls == [specs[1].key]  # only the missing study was prepared again
    assert m["splits"] == m_ref["splits"] and m["studies"] == m_ref["studies"]
    exs = _records(out, m)
    assert sorted((e["study"], int(e["slice_index"])) for e in exs) == sorted(
        (s.key.encode(), k) for s in specs for k in range(6))
    with pytest.raises(ValueError, match="other settings"):  # a half-done set is not mixed with other settings
        (out / records.MANIFEST).unlink()
        (out / ".work").mkdir()
        (out / ".work" / "settings.json").write_text("{}")
        cv.convert(specs, out, cfg, shard_size=5, log=lambda s: None)


def test_workers_and_gzip_give_the_same_records(prepared, tmp_path):
    out, m, specs = prepared
    out2 = tmp_path / "gz"
    m2 = cv.convert(specs, out2, cv.ConvertConfig(scale=2, seed=1), workers=2, shard_size=100,
                    compression="GZIP", log=lambda s: None)
    assert m2["compression"] == "GZIP" and all(sh["file"].endswith(".tfrecord.gz")
                                              for s in m2["splits"].values() for sh in s["shards"])
    a = {(e["study"], int(e["slice_index"])): e for e in _records(out, m)}
    b = {(e["study"], int(e["slice_index"])): e for e in _records(out2, m2)}
    assert a.keys() == b.keys()
    for k in a:
        for img in records.IMAGE_KEYS:
            assert np.array_equal(a[k][img], b[k][img])
    info = inspect(out2, verify=True)
    assert info["complete"] and info["examples"] == 18 and info["studies"] == 3 and info["problems"] == []
    assert info["with_truth"] == 3 and info["lesion_free_studies"] == 1


def test_the_pool_gets_the_largest_studies_first(prepared, tmp_path, monkeypatch):
    """Longest-processing-time order: the pool is handed studies by their image bytes, largest first (so two
    workers finish together); the set written does not depend on it."""
    import concurrent.futures as cf

    out, m, specs = prepared
    sizes = {s.key: cv.study_bytes(s) for s in specs}
    assert sizes[specs[0].key] == sum(Path(f).stat().st_size for f in specs[0].ct + specs[0].pet + specs[0].truth)
    assert max(sizes.values()) > sizes[specs[0].key]  # the NEMA phantom is larger: the order must change
    order = []

    class InlinePool:  # runs each task when submitted, in the order given
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def submit(self, fn, spec, *args):
            order.append(spec.key)
            fut = cf.Future()
            fut.set_result(fn(spec, *args))
            return fut

    monkeypatch.setattr(cv.cf, "ProcessPoolExecutor", InlinePool)
    m2 = cv.convert(specs, tmp_path / "lpt", cv.ConvertConfig(scale=2, seed=1), workers=2, shard_size=5,
                    log=lambda s: None)
    assert order == sorted(sizes, key=sizes.get, reverse=True) and order != [s.key for s in specs]
    assert m2 == m
    assert cv.study_bytes(cv.StudySpec(key="x", ct=("/nonexistent/a.dcm",), pet="/nonexistent/p.nii")) == 0


def test_splits_are_by_study_and_deterministic():
    keys = [f"{i:016x}" for i in range(10)]
    s = cv.assign_splits(keys)
    assert s == cv.assign_splits(list(reversed(keys)))
    assert sorted(s.values()).count("train") == 8 and list(s.values()).count("val") == 1
    assert set(cv.assign_splits(keys[:3]).values()) == {"train", "val", "test"}
    assert set(cv.assign_splits(keys[:1]).values()) == {"train"}


def _one_case(phantoms, tmp_path, name="case_002") -> Path:
    d = tmp_path / "study"
    shutil.copytree(phantoms / name, d)
    return d


def _cli_fails(capsys, argv, out, *needles):
    assert cli(argv) == 2
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, err
    assert not (out / records.MANIFEST).exists()
    return err


def test_frame_of_reference_mismatch_is_refused(phantoms, tmp_path, capsys):
    d = _one_case(phantoms, tmp_path)
    for f in (d / "ct").iterdir():
        ds = pydicom.dcmread(f)
        ds.FrameOfReferenceUID = "1.2.3.4.5"
        ds.save_as(f)
    with pytest.raises(InputError, match="FrameOfReferenceUID"):
        cv.discover_studies(tmp_path)
    assert len(cv.discover_studies(tmp_path, allow_unregistered=True, log=lambda s: None)) == 1
    out = tmp_path / "out"
    _cli_fails(capsys, ["convert", "--ct", str(d / "ct"), "--pet", str(d / "pet"), "--out", str(out)], out,
               "FrameOfReferenceUID", "--allow_unregistered")
    assert cli(["convert", "--ct", str(d / "ct"), "--pet", str(d / "pet"), "--out", str(out),
                "--allow_unregistered"]) == 0
    m = records.read_manifest(out)
    assert m["examples"] == 6 and list(m["studies"].values())[0]["has_truth"] is False


@pytest.mark.parametrize("damage", ["corrupt", "mixed", "missing"])
def test_bad_input_gives_a_clear_error_and_no_manifest(phantoms, tmp_path, capsys, damage):
    d = _one_case(phantoms, tmp_path)
    files = sorted((d / "ct").iterdir())
    if damage == "corrupt":
        files[3].write_bytes(files[3].read_bytes()[:700])
        needle = files[3].name
    elif damage == "mixed":
        shutil.copy(next((d / "pet").iterdir()), d / "ct" / "PT00001.dcm")
        needle = "series in one folder"
    else:
        files[5].unlink()
        needle = "missing slice"
    out = tmp_path / "out"
    _cli_fails(capsys, ["convert", "--ct", str(d / "ct"), "--pet", str(d / "pet"), "--out", str(out)], out, needle)


def test_nifti_input_without_truth(phantoms, tmp_path):
    from ctpet_srgan.nifti_io import write_nifti
    from ctpet_srgan.volume_io import read_volume

    d = phantoms / "case_001"
    ct = write_nifti(read_volume(d / "ct"), tmp_path / "ct.nii.gz")
    pet = write_nifti(read_volume(d / "pet"), tmp_path / "pet.nii.gz")
    spec = cv.single_study(ct, pet)
    res = cv.prepare_study(spec, cv.ConvertConfig(scale=4, counts_per_suv=0))
    assert res.summary["has_truth"] is False and res.summary["hr_shape"] == [128, 128]
    assert res.summary["hr_spacing_mm"] == pytest.approx([1.0, 1.0, 4.0])
    e = records.parse_example(res.examples[2])
    assert e["lr_pet"].shape == (32, 32, 1) and int(e["has_truth"]) == 0


def test_target_grid_follows_an_oblique_pet_and_the_common_field():
    ang = np.deg2rad(20.0)
    rot = np.array([[np.cos(ang), -np.sin(ang), 0], [np.sin(ang), np.cos(ang), 0], [0, 0, 1.0]])
    pet_aff = np.eye(4)
    pet_aff[:3, :3] = rot * 4.0
    pet_aff[:3, 3] = [-40.0, -40.0, 0.0]
    pet = Volume(np.zeros((5, 20, 20), np.float32), pet_aff, "PT", "SUVbw")
    ct = Volume(np.zeros((20, 300, 300), np.float32), axial_affine((-150, -150, -10), (1.0, 1.0, 2.0)), "CT", "HU")
    g = cv.target_grid(ct, pet, 2)
    assert g.hr_shape == (5, 40, 40)
    assert np.allclose(g.hr_affine[:3, :2], pet_aff[:3, :2] / 2) and np.allclose(g.lr_affine, pet_aff)
    small_ct = Volume(np.zeros((4, 40, 40), np.float32), axial_affine((-20, -20, 2.0), (1.0, 1.0, 2.0)), "CT", "HU")
    g2 = cv.target_grid(small_ct, Volume(np.zeros((5, 20, 20), np.float32), axial_affine((-40, -40, 0), (4, 4, 4))), 4)
    # CT field x, y in [-20.5, 19.5] mm = PET index [4.875, 14.875]: whole PET voxels 6..14 (9 x 4 mm);
    # z in [1, 9] mm covers the centres of PET slices 1 and 2
    assert g2.hr_shape == (2, 36, 36)
    assert g2.hr_affine[0, 3] == pytest.approx(-40 + 6 * 4 - 1.5)  # first HR centre: PET voxel 6's corner + 0.5 mm
    g3 = cv.target_grid(small_ct, Volume(np.zeros((5, 20, 20), np.float32), axial_affine((-40, -40, 0), (4, 4, 4))), 4,
                        hr_spacing_mm=2.0)
    assert g3.hr_shape == (2, 16, 16) and g3.lr_spacing_mm[:2] == pytest.approx([8.0, 8.0])
    with pytest.raises(InputError, match="overlap"):
        far = Volume(np.zeros((4, 8, 8), np.float32), axial_affine((500, 500, 500), (1, 1, 1)), "CT", "HU")
        cv.target_grid(far, pet, 2)


def test_a_killed_run_leaves_no_manifest_and_resumes(prepared, phantoms, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    _, m_ref, specs = prepared
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "data_prep", "convert", "--studies", str(phantoms), "--out", str(out),
            "--seed", "1", "--shard_size", "5"]
    proc = subprocess.Popen(argv, cwd=Path(__file__).resolve().parents[1], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((out / ".work").glob("*.examples")) and proc.poll() is None:
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    done = list((out / ".work").glob("*.examples"))
    if proc.returncode == 0:  # it finished before the kill (a very fast machine): still a valid complete set
        assert records.read_manifest(out)["splits"] == m_ref["splits"]
        return
    assert done and not (out / records.MANIFEST).exists()
    assert cli(["convert", "--studies", str(phantoms), "--out", str(out), "--seed", "1", "--shard_size", "5"]) == 0
    m = records.read_manifest(out)
    assert m["splits"] == m_ref["splits"] and m["studies"] == m_ref["studies"]
    got = sorted((e["study"], int(e["slice_index"])) for e in _records(out, m))
    assert got == sorted((s.key.encode(), k) for s in specs for k in range(6))
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_full_orientation_matrix_is_honoured(phantoms, tmp_path):
    """The same study with the PET stored transposed (columns along y): the HR grid follows the PET's axes, so
    every HR/LR image is the transpose of the standard one, and the CT lands on it the same way."""
    from ctpet_srgan.nifti_io import write_nifti
    from ctpet_srgan.volume_io import read_volume

    d = phantoms / "case_000"
    paths = {}
    for name, sub in (("ct", "ct"), ("pet", "pet"), ("truth", "pet_truth")):
        vol = read_volume(d / sub)
        paths[name] = write_nifti(vol, tmp_path / f"{name}.nii.gz")
        if name != "ct":
            aff = vol.affine.copy()
            aff[:, [0, 1]] = aff[:, [1, 0]]
            t = Volume(np.ascontiguousarray(vol.array.transpose(0, 2, 1)), aff, vol.modality, vol.units)
            paths[name + "_t"] = write_nifti(t, tmp_path / f"{name}_t.nii.gz")
    cfg = cv.ConvertConfig(scale=2, counts_per_suv=0)
    std = cv.prepare_study(cv.single_study(paths["ct"], paths["pet"], paths["truth"]), cfg)
    rot = cv.prepare_study(cv.single_study(paths["ct"], paths["pet_t"], paths["truth_t"]), cfg)
    assert std.summary["has_truth"] and rot.summary["has_truth"]
    for a, b in zip(std.examples, rot.examples):
        ea, eb = records.parse_example(a), records.parse_example(b)
        for k in records.IMAGE_KEYS:
            np.testing.assert_allclose(ea[k].numpy()[..., 0].T, eb[k].numpy()[..., 0], atol=2e-3, rtol=1e-4)
        np.testing.assert_allclose(ea["hr_affine"].numpy()[:, [1, 0, 2, 3]], eb["hr_affine"].numpy(), atol=1e-4)


REAL = SHARED / "data" / "real" / "ibsi_sts"


def test_explicit_split_fractions_are_honoured_and_the_seed_permutes():
    keys = [f"{i:016x}" for i in range(30)]
    said = []
    s = cv.assign_splits(keys, 0.134, 0.2, seed=0, log=said.append)
    assert [list(s.values()).count(x) for x in ("train", "val", "test")] == [20, 4, 6] and not said
    assert s == cv.assign_splits(list(reversed(keys)), 0.134, 0.2, seed=0, log=said.append)
    assert s != cv.assign_splits(keys, 0.134, 0.2, log=said.append)  # hash order differs from the permutation
    two = cv.assign_splits(keys[:2], val_fraction=0, test_fraction=1, log=said.append)
    assert set(two.values()) == {"test"}  # as asked, not refilled into train and val
    assert any("train split is empty" in m for m in said) and any("val split is empty" in m for m in said)
    assert set(cv.assign_splits(keys[:2], log=lambda m: None).values()) == {"train", "val"}
    with pytest.raises(ValueError, match="sum to <= 1"):
        cv.assign_splits(keys, 0.6, 0.6)


def test_a_failing_study_is_skipped_and_listed_by_hash_only(prepared, tmp_path):
    _, _, specs = prepared
    broken = cv.StudySpec(key=specs[1].key, ct=str(tmp_path / "nowhere_STS_007"), pet=specs[1].pet)
    said = []
    m = cv.convert([specs[0], broken, specs[2]], tmp_path / "set", cv.ConvertConfig(scale=2, seed=1),
                   shard_size=5, log=said.append)
    assert sorted(m["studies"]) == sorted([specs[0].key, specs[2].key]) and m["examples"] == 12
    assert [x["study"] for x in m["skipped"]] == [specs[1].key] and m["skipped"][0]["problem"]
    assert "nowhere" not in json.dumps(m) and any("1 of 3 studies skipped" in x for x in said)
    assert m["split_seed"] is None and all(s["has_mask"] is False for s in m["studies"].values())


def test_an_rtstruct_gives_the_tumour_mask_on_the_hr_grid(phantoms, tmp_path, capsys):
    from ctpet_srgan.volume_io import read_volume
    from tests.test_rtstruct import _write_rtstruct

    d = _one_case(phantoms, tmp_path)
    pet = read_volume(d / "pet")
    centre = pet.index_to_patient(np.array([15.5, 15.5, 0.0]))
    polys = []
    for k in (2, 3):  # a 24 mm square on PET slices 2 and 3
        z = pet.index_to_patient(np.array([0.0, 0.0, float(k)]))[2]
        polys.append(np.array([[centre[0] + dx, centre[1] + dy, z] for dx, dy in
                               ((-12, -12), (12, -12), (12, 12), (-12, 12))]))
    rs = tmp_path / "RS.dcm"
    _write_rtstruct(rs, [(3, "GTV_Mass_test", polys)], frame=pet.meta["frame_of_reference_uid"])
    out = tmp_path / "out"
    assert cli(["convert", "--ct", str(d / "ct"), "--pet", str(d / "pet"), "--rtstruct", str(rs), "--out", str(out),
                "--hr_spacing_mm", "median_pet"]) == 0
    m = records.read_manifest(out)
    (st,) = m["studies"].values()
    assert st["has_mask"] is True and st["hr_spacing_mm"][:2] == [4.0, 4.0]  # median PET spacing: HR = PET grid
    assert st["contour_volume_ml"] == pytest.approx(2 * 24 * 24 * 4.0 / 1000, rel=1e-3)
    assert st["tumour_volume_ml"] == pytest.approx(st["contour_volume_ml"], rel=0.15)
    exs = sorted(_records(out, m), key=lambda e: int(e["slice_index"]))
    assert all(int(e["has_mask"]) == 1 for e in exs)
    per_slice = [float(e["hr_mask"].sum()) for e in exs]
    assert [k for k, v in enumerate(per_slice) if v] == [2, 3]
    assert sum(per_slice) * 4.0 * 4.0 * 4.0 / 1000 == pytest.approx(st["tumour_volume_ml"])
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(b"junk" * 50)
    out2 = tmp_path / "out2"
    _cli_fails(capsys, ["convert", "--ct", str(d / "ct"), "--pet", str(d / "pet"), "--rtstruct", str(bad), "--out",
                        str(out2)], out2, "bad.dcm")


def test_median_pet_spacing_reads_headers(phantoms):
    specs = cv.discover_studies(phantoms, log=lambda s: None)
    assert cv.median_pet_spacing(specs) == pytest.approx(4.0)


def test_median_pet_spacing_after_the_workers_scan_equals_the_driver_scan(phantoms, tmp_path):
    """convert(StudyTree, median_pet=True) (the CLI's local runner: the workers scan, then the median is taken) writes
    the set that the driver-side scan with the same median spacing writes."""
    said = []
    a = cv.convert(cv.StudyTree(str(phantoms)), tmp_path / "a", cv.ConvertConfig(scale=2, seed=1), workers=2,
                   shard_size=5, median_pet=True, log=said.append)
    specs = cv.discover_studies(phantoms, log=lambda s: None)
    b = cv.convert(specs, tmp_path / "b", cv.ConvertConfig(scale=2, seed=1, hr_spacing_mm=cv.median_pet_spacing(specs)),
                   shard_size=5, log=lambda s: None)
    assert a == b and a["hr_spacing_mm"][:2] == [4.0, 4.0]
    assert "HR in-plane spacing: 4 mm, the median PET in-plane spacing of 3 studies" in said
    for sh in (tmp_path / "a").glob("*.tfrecord"):
        assert sh.read_bytes() == (tmp_path / "b" / sh.name).read_bytes()


def _copy_real(tmp_path, names):
    root = tmp_path / "real"
    for n in names:
        if not (REAL / n).is_dir():
            pytest.skip(f"{REAL / n} is absent (the real IBSI studies live in ../shared)")
        shutil.copytree(REAL / n, root / n)
    return root


def test_two_real_ibsi_studies_convert_with_their_tumour_masks(tmp_path):
    root = _copy_real(tmp_path, ["STS_001", "STS_019"])  # 4.69 mm PET pixels both; 59 and 47 slices
    specs = cv.discover_studies(root, log=lambda s: None)
    assert len(specs) == 2 and all(s.rtstruct and s.rtstruct.endswith("PET/mask/RS.dcm") for s in specs)
    out = tmp_path / "out"
    assert cli(["convert", "--studies", str(root), "--out", str(out), "--hr_spacing_mm=median_pet",
                "--no_truth_fwhm_mm=8", "--counts_per_suv=200", "--split_seed=0"]) == 0
    m = records.read_manifest(out)
    assert m["split_seed"] == 0 and m["skipped"] == [] and m["hr_spacing_mm"][:2] == [4.6875, 4.6875]
    assert m["lr_spacing_mm"][:2] == [9.375, 9.375]
    for st in m["studies"].values():
        assert st["has_truth"] is False and st["has_mask"] is True
        assert st["tumour_volume_ml"] == pytest.approx(st["contour_volume_ml"], rel=0.05)
        assert st["contour_volume_ml"] > 5
    exs = _records(out, m)
    assert len(exs) == m["examples"] and 100 <= len(exs) <= 59 + 47  # PET slices whose centre the CT covers
    assert all(int(e["has_truth"]) == 0 and int(e["has_mask"]) == 1 for e in exs)
    inside = np.concatenate([e["hr_pet"][e["hr_mask"] > 0] for e in exs])
    outside = np.concatenate([e["hr_pet"][e["hr_mask"] == 0] for e in exs])
    assert inside.mean() > 2 * outside.mean()  # the mask sits on the FDG-avid tumour
    for k, st in m["studies"].items():
        n = sum(float(e["hr_mask"].sum()) for e in exs if e["study"] == k.encode())
        assert n * 4.6875 * 4.6875 * 3.27 / 1000 == pytest.approx(st["tumour_volume_ml"], rel=1e-3)
    blob = (out / records.MANIFEST).read_text() + "".join(p.name for p in out.iterdir())
    assert "STS" not in blob and str(root) not in blob
    for e in exs[:5]:
        assert b"STS" not in e["study"]


def test_the_scan_reads_rtstruct_references_so_the_driver_pairs_without_reading(tmp_path, monkeypatch):
    """An IBSI study has an RTSTRUCT drawn on the PET and one on the CT: the workers' scan records which series
    each references, and pairing picks the PET's from that alone (no file read on the driver)."""
    from ctpet_srgan import dicom_io

    root = _copy_real(tmp_path, ["STS_001"])
    series = dicom_io.scan_dicom_tree(root)
    rts = [s for s in series if s["modality"] == "RTSTRUCT"]
    pet = next(s for s in series if s["modality"] == "PT")
    assert len(rts) == 2 and all(len(r["referenced_series"]) == 1 for r in rts)
    refs = {Path(f).parts[-3]: uids for r in rts for f, uids in r["referenced_series"].items()}
    assert refs["PET"] == [pet["series_uid"]] and refs["CT"] != refs["PET"]

    def no_reads(path):
        raise AssertionError(f"the driver read {path}")
    monkeypatch.setattr(dicom_io, "rtstruct_referenced_series", no_reads)
    spec = cv.pair_study(series, root, log=lambda s: None)
    assert spec.rtstruct.endswith("PET/mask/RS.dcm")


def test_a_fine_ct_is_low_passed_before_it_is_resampled_onto_the_coarser_hr_grid(tmp_path):
    """CT columns alternating +-500 HU every 1 mm, HR grid at 2 mm with its voxel centres on CT voxel centres:
    plain resampling would keep one phase (all +500 or all -500 HU); the anti-aliasing Gaussian to the HR voxel
    size (FWHM sqrt(2^2 - 1^2) mm, sampled at 1 mm: 14% left at this frequency) leaves about 0 +- 70 HU."""
    from ctpet_srgan.nifti_io import write_nifti

    ct_arr = np.where(np.arange(96) % 2 == 0, 500.0, -500.0)[None, None, :].repeat(24, 0).repeat(96, 1)
    ct = Volume(ct_arr.astype(np.float32), axial_affine((-47.0, -47.0, -2.0), (1.0, 1.0, 2.0)), "CT", "HU")
    pet = Volume(np.ones((8, 20, 20), np.float32), axial_affine((-38.0, -38.0, 4.0), (4.0, 4.0, 4.0)), "PT", "SUVbw")
    spec = cv.single_study(write_nifti(ct, tmp_path / "ct.nii.gz"), write_nifti(pet, tmp_path / "pet.nii.gz"))
    res = cv.prepare_study(spec, cv.ConvertConfig(scale=2, counts_per_suv=0))
    hr_ct = np.stack([records.parse_example(e)["hr_ct"].numpy()[..., 0] for e in res.examples])
    assert res.summary["hr_spacing_mm"][:2] == [2.0, 2.0] and hr_ct.shape[1:] == (40, 40)
    assert float(np.abs(hr_ct).max()) < 0.2 * 500.0


# --------------------------------------------------------------------------------------------- guided world
@pytest.fixture(scope="module")
def guided(tmp_path_factory):
    root = tmp_path_factory.mktemp("guided")
    ph.write_phantom_studies(root, 2, 5, nema_every=0, cfg=ph.PhantomConfig(fov_mm=128.0, pet_slices=6,
                                                                           world="guided"))
    return root


def test_a_guided_study_keeps_its_world_in_the_manifest(guided, tmp_path):
    specs = cv.discover_studies(guided, log=lambda s: None)
    m = cv.convert(specs, tmp_path / "set", cv.ConvertConfig(scale=2), log=lambda s: None)
    by_scanner = {}
    for d in sorted(p for p in guided.iterdir() if p.is_dir()):
        info = json.loads((d / "lesions.json").read_text())
        by_scanner[json.dumps(info["misregistration"], sort_keys=True)] = info
    assert len(m["studies"]) == 2
    for st in m["studies"].values():
        info = by_scanner[json.dumps(st["misregistration"], sort_keys=True)]  # every study found its own world
        assert st["world"] == "guided" and st["ct_only"] == info["ct_only"] and st["scanner"] == info["scanner"]
        assert st["degradation"] == {"lr_fwhm_mm": info["scanner"]["psf_fwhm_mm"], "truth_fwhm_mm": 2.0,
                                     "counts_per_suv": info["scanner"]["counts_per_suv"],
                                     "source": "lesions.json scanner"}
        assert len(st["lesions"]) == len(info["lesions"])
        for got, les in zip(st["lesions"], info["lesions"]):
            for k in ("center_mm", "diameter_mm", "structure", "shape", "has_ct_correlate", "shift_mm",
                      "necrotic_core_mm"):
                assert got[k] == les[k], k
            assert "host" not in got
    assert sum(len(st["lesions"]) for st in m["studies"].values()) > 0


def test_the_default_world_summary_has_no_guided_entries(prepared):
    _, m, _ = prepared
    for st in m["studies"].values():
        assert not set(st) & {"world", "ct_only", "scanner", "misregistration", "degradation"}
        assert all(set(les) <= {"center_mm", "diameter_mm", "uptake_ratio", "kind"} for les in st["lesions"])


def test_the_lr_pet_follows_the_studys_scanner(guided):
    import dataclasses

    spec = cv.discover_studies(guided, log=lambda s: None)[0]
    cfg = cv.ConvertConfig(scale=2)

    def lr_and_hr(**scanner):
        world = dict(spec.world, scanner=scanner) if scanner else None
        res = cv.prepare_study(dataclasses.replace(spec, world=world), cfg)
        ex = [records.parse_example(e) for e in res.examples]
        return (np.stack([np.asarray(e["lr_pet"])[..., 0] for e in ex]),
                np.stack([np.asarray(e["hr_pet"])[..., 0] for e in ex]), res.examples)

    *_, plain = lr_and_hr()
    *_, same = lr_and_hr(psf_fwhm_mm=6.0, truth_fwhm_mm=2.0, counts_per_suv=40.0)  # the config's own values
    assert same == plain
    sharp, hr_a, _ = lr_and_hr(psf_fwhm_mm=5.0, counts_per_suv=0.0)
    blurred, hr_b, _ = lr_and_hr(psf_fwhm_mm=7.5, counts_per_suv=0.0)
    noisy, _, _ = lr_and_hr(psf_fwhm_mm=5.0, counts_per_suv=15.0)
    np.testing.assert_array_equal(hr_a, hr_b)  # the scanner changes the LR PET only
    tv = lambda a: float(np.abs(np.diff(a, axis=-1)).sum())  # noqa: E731
    assert tv(blurred) < 0.9 * tv(sharp)  # a wider PSF
    assert sharp.sum() == pytest.approx(blurred.sum(), rel=0.02)  # blur keeps the counts
    assert np.abs(noisy - sharp).mean() > 0.02 * sharp.mean()  # counts 0: no noise; 15: Poisson noise


def test_a_bad_scanner_entry_is_refused_naming_the_file(tmp_path):
    f = tmp_path / "lesions.json"
    f.write_text(json.dumps({"world": "guided", "lesions": [], "scanner": {"psf_fwhm_mm": "wide"}}))
    with pytest.raises(InputError, match="scanner"):
        cv.single_study(tmp_path, tmp_path, lesions=f)


def test_a_tree_scanned_by_the_workers_gives_the_discovered_set_and_the_driver_opens_no_dicom(
        prepared, phantoms, tmp_path, monkeypatch):
    from ctpet_srgan import dicom_io

    ref_out, m_ref, _ = prepared

    def no_dicom_here(path, **kw):
        raise AssertionError(f"the driver opened {path}")

    monkeypatch.setattr(dicom_io, "_dcmread", no_dicom_here)  # the driver's only: spawned workers import their own
    out = tmp_path / "tree"
    m = cv.convert(cv.StudyTree(str(phantoms)), out, cv.ConvertConfig(scale=2, seed=1), workers=2, shard_size=5,
                   log=lambda s: None)
    assert m == m_ref  # splits (from the studies' hashes), summaries, shard layout
    for sh in (sh for s in m["splits"].values() for sh in s["shards"]):
        assert (out / sh["file"]).read_bytes() == (ref_out / sh["file"]).read_bytes(), sh["file"]
    with pytest.raises(InputError, match="no study with both a CT and a PET"):
        cv.convert(cv.StudyTree(str(tmp_path / "tree")), tmp_path / "none", log=lambda s: None)  # no DICOM there
    with pytest.raises(InputError, match="is not a folder"):
        cv.StudyTree(str(tmp_path / "nowhere"))


def test_a_series_split_over_folders_is_joined_as_a_whole_tree_scan_does(phantoms, tmp_path):
    import concurrent.futures as cf
    import multiprocessing

    from ctpet_srgan import dicom_io

    root = tmp_path / "tree"
    shutil.copytree(phantoms, root)
    ct = sorted((root / "case_001" / "ct").iterdir())
    (root / "case_001" / "a_ct_part").mkdir()  # walked before ct/: its files are the series' first folder
    for f in ct[::2]:
        f.rename(root / "case_001" / "a_ct_part" / f.name)
    whole = dicom_io.scan_dicom_tree(root)
    with cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        pooled = dicom_io.scan_dicom_tree(root, map_fn=lambda f, xs: pool.map(f, list(xs), chunksize=1))
    assert pooled == whole and len(whole) == 9  # 3 studies x (CT, PET, truth): the split CT is one series
    [split_ct] = [s for s in whole if s["files"][0].startswith(str(root / "case_001")) and s["modality"] == "CT"]
    assert split_ct["n_files"] == len(ct) and split_ct["files"] == sorted(split_ct["files"])
    specs = cv.discover_studies(root, log=lambda s: None)
    assert [len(s.ct) for s in specs] == [len(ct)] * 3
    m1 = cv.convert(specs, tmp_path / "specs", cv.ConvertConfig(scale=2, seed=1), shard_size=5, log=lambda s: None)
    m2 = cv.convert(cv.StudyTree(str(root)), tmp_path / "tree_out", cv.ConvertConfig(scale=2, seed=1), workers=2,
                    shard_size=5, log=lambda s: None)
    assert m1 == m2


def test_the_light_tfrecord_writer_writes_tensorflows_bytes(tmp_path, monkeypatch):
    import sys

    exs = [b"", b"x", bytes(range(256)) * 40]
    cv.write_tfrecord(tmp_path / "light.tfrecord", exs)
    cv.write_tfrecord(tmp_path / "light.tfrecord.gz", exs, "GZIP")
    monkeypatch.setitem(sys.modules, "google_crc32c", None)  # as if not installed: TensorFlow's writer
    cv.write_tfrecord(tmp_path / "tf.tfrecord", exs)
    assert (tmp_path / "light.tfrecord").read_bytes() == (tmp_path / "tf.tfrecord").read_bytes()
    got = [r.numpy() for r in tf.data.TFRecordDataset(str(tmp_path / "light.tfrecord.gz"), compression_type="GZIP")]
    assert got == exs


def test_conversion_never_imports_tensorflow_and_forks_its_workers(prepared, phantoms, tmp_path):
    import subprocess
    import sys

    ref_out, m_ref, _ = prepared
    out = tmp_path / "out"
    code = ("import sys; from data_prep.__main__ import main; from data_prep.convert import pool_start_method; "
            f"rc = main(['convert', '--studies', {str(phantoms)!r}, '--out', {str(out)!r}, '--workers', '2',"
            " '--seed', '1', '--shard_size', '5']); "
            "print(rc, pool_start_method(), sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    got = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                         text=True, timeout=300)
    want = "0 fork []" if sys.platform.startswith("linux") else "0 spawn []"
    assert got.stdout.strip().splitlines()[-1] == want, got.stdout + got.stderr  # scan, prepare, shards, manifest
    assert records.read_manifest(out) == m_ref
    for sh in (sh for s in m_ref["splits"].values() for sh in s["shards"]):
        assert (out / sh["file"]).read_bytes() == (ref_out / sh["file"]).read_bytes(), sh["file"]
    assert cv.pool_start_method() == "spawn"  # this process has TensorFlow: its pools spawn
