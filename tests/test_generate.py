"""generate.py: every output kind on a small phantom study, 2-D inputs, a real PET slice, bad inputs, the demo model."""

import datetime
import json
import subprocess
import sys

import cv2
import numpy as np
import pydicom
import pytest

import generate
from ctpet_srgan import inference
from ctpet_srgan.dicom_io import read_series
from ctpet_srgan.dicom_write import pet_dicom_source
from ctpet_srgan.errors import InputError
from ctpet_srgan.figures import save_fused_png
from ctpet_srgan.geometry import Volume, resample
from ctpet_srgan.nifti_io import read_nifti, write_nifti
from ctpet_srgan.volume_io import read_volume
from tests import _series
from tests._serve_models import passthrough_generator, save_model_dir, tiny_generator
from tests.conftest import REAL_PET_SLICE, ROOT

OPTS = generate.Options(progress=False, tile=12, tile_overlap=4)  # small tiles: the tiling path runs too


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A phantom study as DICOM: PET 3 x 16 x 14 at 4 mm (hot sphere in warm background), CT 5 x 30 x 30 at 2 mm."""
    tmp = tmp_path_factory.mktemp("study")
    pet_aff = _series.grid_affine((10.0, -5.0, 0.0), (3, 16, 14), (4.0, 4.0, 4.0))
    k, j, i = np.mgrid[0:3, 0:16, 0:14]
    xyz = np.stack([i, j, k], -1) @ pet_aff[:3, :3].T + pet_aff[:3, 3]
    r = np.linalg.norm(xyz - [14.0, -1.0, 0.0], axis=-1)
    scale = _series.expected_suv_scale(_series.T0 + datetime.timedelta(minutes=60))
    suv = np.where(r < 8, 8.0, 1.0).astype(np.float32)
    _series.write_pet(tmp, suv / scale, pet_aff)
    ct_aff = _series.grid_affine((10.0, -5.0, 0.0), (5, 30, 30), (2.0, 2.0, 3.0))
    ct = np.full((5, 30, 30), 40.0, np.float32)
    ct[:, :, :10] = -800.0  # "lung" on the right of the image
    _series.write_ct(tmp, ct, ct_aff)
    models_dir = tmp / "models"
    save_model_dir(*passthrough_generator("s2d"), models_dir / "passthrough")
    save_model_dir(*tiny_generator("s2d", seed=7), models_dir / "tiny")
    return tmp


def test_nifti_output_geometry_and_units(study, tmp_path):
    out = tmp_path / "sr.nii.gz"
    written = generate.generate(study / "ct", study / "pet", out, study / "models" / "passthrough", OPTS)
    assert written == [out, tmp_path / "sr_ct.nii.gz"]
    pet_in = read_volume(study / "pet", modality="PT")
    ct_in = read_volume(study / "ct", modality="CT")
    sr_pet = read_nifti(out, modality="PT")
    sr_ct = read_nifti(tmp_path / "sr_ct.nii.gz", modality="CT")
    assert sr_pet.shape == (3, 32, 28) and sr_ct.shape == (3, 32, 28)
    np.testing.assert_allclose(sr_pet.affine, inference.hr_affine(pet_in.affine, 2), atol=1e-4)
    np.testing.assert_allclose(sr_pet.spacing_mm, (2.0, 2.0, 4.0), atol=1e-4)
    # the passthrough model copies each LR pixel: SUV range and mean preserved
    assert abs(sr_pet.array.max() - pet_in.array.max()) < 1e-3 and abs(sr_pet.array.min() - pet_in.array.min()) < 1e-3
    assert abs(sr_pet.array.mean() - pet_in.array.mean()) < 1e-3
    np.testing.assert_allclose(pet_in.array.max(), 8.0, rtol=1e-3)
    # the CT is the input CT resampled onto the HR grid, in HU
    ref = resample(ct_in, sr_ct.affine, sr_ct.shape).array
    np.testing.assert_allclose(sr_ct.array, ref, atol=0.5)
    assert set(np.unique(np.round(sr_ct.array[:, 5:-5, 2:4]))) == {-800.0}


def test_dicom_output_is_a_derived_series_with_matching_suv(study, tmp_path):
    out = tmp_path / "sr_dicom"
    generate.generate(study / "ct", study / "pet", out, study / "models" / "tiny", OPTS)
    sr = read_series(out)  # SUV computed from the written tags by the QIBA reader
    pet_in = read_series(study / "pet")
    assert sr.modality == "PT" and sr.units == "SUVbw" and sr.shape == (3, 32, 28)
    np.testing.assert_allclose(sr.affine, inference.hr_affine(pet_in.affine, 2), atol=1e-3)
    npy = tmp_path / "sr.npy"
    generate.generate(study / "ct", study / "pet", npy, study / "models" / "tiny", OPTS)
    expect = np.maximum(np.load(npy), 0)
    np.testing.assert_allclose(sr.array, expect, atol=expect.max() / 30000 + 1e-4)  # int16 quantisation
    files = sorted(out.iterdir())
    src = pydicom.dcmread(sorted((study / "pet").iterdir())[0])
    ds = pydicom.dcmread(files[0])
    assert len(files) == 3 and ds.Modality == "PT" and list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    assert ds.SeriesInstanceUID != src.SeriesInstanceUID and ds.StudyInstanceUID == src.StudyInstanceUID
    assert ds.SOPInstanceUID not in {pydicom.dcmread(p).SOPInstanceUID for p in (study / "pet").iterdir()}
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID and ds.Units == "BQML"
    assert float(ds.PatientWeight) == float(src.PatientWeight)
    assert ds.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose == \
        src.RadiopharmaceuticalInformationSequence[0].RadionuclideTotalDose
    assert ds.SeriesDescription == "SR PET (ctpet-srgan)"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_png_slice_and_mip(study, tmp_path):
    for name, opts in (("slice.png", generate.Options(progress=False, slice=1)),
                       ("mip.png", generate.Options(progress=False, mip=True))):
        generate.generate(study / "ct", study / "pet", tmp_path / name, study / "models" / "passthrough", opts)
        img = cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100
        hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
        assert (hsv[..., 1] > 100).sum() > 500  # colour (PET map and colour bar), not only grey CT
    with pytest.raises(generate.GenerateError, match="--slice 9 is outside"):
        generate.generate(study / "ct", study / "pet", tmp_path / "bad.png", study / "models" / "passthrough",
                          generate.Options(progress=False, slice=9))
    assert not (tmp_path / "bad.png").exists()


def test_png_title_names_a_model_by_its_folder(study, tmp_path, monkeypatch):
    """A model without a label is named in the figure by its run folder ("tiny"), not by "generator.keras"."""
    from ctpet_srgan import figures

    titles = []
    monkeypatch.setattr(figures, "save_fused_png", lambda path, ct, pet, title, *a, **k: titles.append(title))
    generate.generate(study / "ct", study / "pet", tmp_path / "t.png", study / "models" / "tiny",
                      generate.Options(progress=False))
    assert len(titles) == 1 and titles[0].endswith("\nmodel: tiny"), titles


def test_2d_npy_and_image_inputs(tmp_path):
    model_dir = save_model_dir(*passthrough_generator("s2d"), tmp_path / "m")
    pet = np.zeros((8, 10), np.float32)
    pet[3:5, 4:6] = 6.0
    ct = np.full((16, 20), -1000.0, np.float32)
    ct[4:12, 5:15] = 50.0
    np.save(tmp_path / "pet.npy", pet)
    np.save(tmp_path / "ct.npy", ct)
    out = tmp_path / "sr.npy"
    generate.generate(tmp_path / "ct.npy", tmp_path / "pet.npy", out, model_dir, generate.Options(progress=False))
    np.testing.assert_allclose(np.load(out), pet.repeat(2, 0).repeat(2, 1), atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "sr_ct.npy"), np.clip(ct, -1024, None), atol=0.5)
    # 8-bit images: grey levels need units
    cv2.imwrite(str(tmp_path / "pet.png"), (pet * 40).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "ct.png"), ((ct + 1000) / 5).astype(np.uint8))
    with pytest.raises(InputError, match="--pet_scale"):
        generate.generate(tmp_path / "ct.png", tmp_path / "pet.png", tmp_path / "x.npy", model_dir,
                          generate.Options(progress=False))
    opts = generate.Options(progress=False, pet_scale=1 / 40, ct_scale=5.0, ct_offset=-1000.0)
    generate.generate(tmp_path / "ct.png", tmp_path / "pet.png", tmp_path / "img.npy", model_dir, opts)
    np.testing.assert_allclose(np.load(tmp_path / "img.npy"), pet.repeat(2, 0).repeat(2, 1), atol=1e-5)


def test_dicom_output_keeps_the_source_tracer(study, tmp_path):
    pet = tmp_path / "pet"
    pet.mkdir()
    for f in sorted((study / "pet").iterdir()):  # the phantom's FDG series relabelled as Ga-68 PSMA
        ds = pydicom.dcmread(f)
        rp = ds.RadiopharmaceuticalInformationSequence[0]
        rp.Radiopharmaceutical = "Ga-68 PSMA-11"
        code = rp.RadionuclideCodeSequence[0]
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "C-131A3", "SRT", "^68^Gallium"
        ds.save_as(pet / f.name)
    out = tmp_path / "sr_dicom"
    generate.generate(study / "ct", pet, out, study / "models" / "tiny", OPTS)
    rp = pydicom.dcmread(sorted(out.iterdir())[0]).RadiopharmaceuticalInformationSequence[0]
    assert rp.Radiopharmaceutical == "Ga-68 PSMA-11"
    code = rp.RadionuclideCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("C-131A3", "SRT", "^68^Gallium")


def test_real_pet_slice_smoke(tmp_path):
    """The real ACRIN-FLT PET slice (Units BQML -> SUVbw) with a synthetic CT made on its grid."""
    pet = read_volume(REAL_PET_SLICE, modality="PT")
    assert pet.shape == (1, 168, 168) and pet.units == "SUVbw"
    k, j, i = np.mgrid[0:1, 0:168, 0:168]
    body = (i - 84) ** 2 / 70**2 + (j - 84) ** 2 / 55**2 < 1
    ct = Volume(np.where(body, 20.0, -1000.0).astype(np.float32), pet.affine, "CT", "HU")
    write_nifti(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "sr.nii.gz"
    model_dir = save_model_dir(*tiny_generator("s2d", seed=8), tmp_path / "m")
    generate.generate(tmp_path / "ct.nii.gz", REAL_PET_SLICE, out, model_dir, OPTS)
    sr = read_nifti(out, modality="PT")
    assert sr.shape == (1, 336, 336)
    np.testing.assert_allclose(sr.spacing_mm[:2], np.asarray(pet.spacing_mm[:2]) / 2, rtol=1e-5)
    assert np.all(np.isfinite(sr.array))
    # a near-identity SR keeps the SUV scale: the SR PET's bulk matches the input's within a generous margin
    assert 0.5 < np.percentile(sr.array, 99) / np.percentile(pet.array, 99) < 2.0
    assert 0 < pet.array.max() < 50  # FLT SUVs: a plausibly scaled input


def _no_outputs(folder):
    return sorted(p.name for p in folder.iterdir())


def test_bad_inputs_fail_cleanly(study, tmp_path):
    m = study / "models" / "passthrough"
    # CT far away from the PET in patient space
    ct = read_volume(study / "ct", modality="CT")
    far = ct.affine.copy()
    far[:3, 3] += [0.0, 0.0, 1000.0]
    write_nifti(Volume(ct.array, far, "CT", "HU"), tmp_path / "far_ct.nii.gz")
    (tmp_path / "out").mkdir()
    with pytest.raises(InputError, match="does not overlap the PET"):
        generate.generate(tmp_path / "far_ct.nii.gz", study / "pet", tmp_path / "out" / "a.nii.gz", m, OPTS)
    # a PET without a patient weight is not SUV-convertible
    _series.write_pet(tmp_path, np.ones((2, 8, 8), np.float32) * 1000,
                      _series.grid_affine((10.0, -5.0, 0.0), (2, 8, 8), (4.0, 4.0, 4.0)), name="noweight",
                      study=_series.study(weight_kg=None))
    with pytest.raises(InputError, match="PatientWeight"):
        generate.generate(study / "ct", tmp_path / "noweight", tmp_path / "out" / "b.nii.gz", m, OPTS)
    # an unreadable file
    (tmp_path / "junk.dcm").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(InputError, match="junk.dcm"):
        generate.generate(study / "ct", tmp_path / "junk.dcm", tmp_path / "out" / "c.npy", m, OPTS)
    # a DICOM output needs a DICOM PET
    pet = read_volume(study / "pet", modality="PT")
    write_nifti(pet, tmp_path / "pet.nii.gz")
    with pytest.raises(generate.GenerateError, match="needs a DICOM PET input"):
        generate.generate(study / "ct", tmp_path / "pet.nii.gz", tmp_path / "out" / "series", m, OPTS)
    assert _no_outputs(tmp_path / "out") == []  # nothing half-written
    # an existing output is refused unless overwrite
    (tmp_path / "out" / "d.npy").write_bytes(b"keep")
    with pytest.raises(generate.GenerateError, match="exists"):
        generate.generate(study / "ct", study / "pet", tmp_path / "out" / "d.npy", m, OPTS)
    assert (tmp_path / "out" / "d.npy").read_bytes() == b"keep" and _no_outputs(tmp_path / "out") == ["d.npy"]
    generate.generate(study / "ct", study / "pet", tmp_path / "out" / "d.npy", m,
                      generate.Options(progress=False, overwrite=True))
    assert np.load(tmp_path / "out" / "d.npy").shape == (3, 32, 28)


def test_cli_reports_errors_and_writes_output(study, tmp_path):
    cmd = [sys.executable, str(ROOT / "generate.py"), f"--input_ct={study / 'ct'}", f"--input_pet={study / 'pet'}",
           f"--model={study / 'models' / 'tiny'}"]
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"}
    r = subprocess.run(cmd + [f"--output_path={tmp_path / 'o.nii.gz'}"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "slices" in r.stderr or "batches" in r.stderr  # progress bar
    assert (tmp_path / "o.nii.gz").exists() and (tmp_path / "o_ct.nii.gz").exists()
    r = subprocess.run(cmd + [f"--output_path={tmp_path / 'o.nii.gz'}"], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "o.nii.gz: exists (pass --overwrite" in r.stderr


def test_bundle_script_labels_and_checks_the_model(tmp_path):
    from tools.bundle_demo_model import LABEL, bundle

    run = save_model_dir(*tiny_generator("s2d", seed=9), tmp_path / "run", "best_generator.keras")
    dest = bundle(run, tmp_path / "assets" / "demo_model", scores={"psnr_db": 1.0}, command="python train_keras.py")
    cfg = json.loads((dest / "run_config.json").read_text())
    assert cfg["demo"] is True and cfg["label"] == LABEL and cfg["scores"] == {"psnr_db": 1.0}
    p = inference.load_predictor(dest)
    assert p.is_demo and p.scale == 2
    with pytest.raises(ValueError, match="max_mb"):
        bundle(run, tmp_path / "assets" / "other", max_mb=0.001)
    assert not (tmp_path / "assets" / "other").exists()


def test_bundled_demo_model_loads_with_safe_mode():
    import keras

    import ctpet_srgan.models  # noqa: F401

    demo = inference.DEMO_MODEL_DIR
    cfg = json.loads((demo / "run_config.json").read_text())
    assert cfg["demo"] is True and "not for clinical use" in cfg["label"]
    model = keras.saving.load_model(str(demo / "generator.keras"), safe_mode=True, compile=False)
    assert {"sr_pet"} <= set(model.output_names if hasattr(model, "output_names") else model.output)
    assert (demo / "generator.keras").stat().st_size < 8 * 2**20
    assert inference.load_predictor(None).is_demo


def test_sr_pet_is_non_negative_in_every_output_kind(study, tmp_path):
    """The tiny random generator undershoots below 0 SUV; every output kind clips it at 0 (one rule)."""
    m = study / "models" / "tiny"
    generate.generate(study / "ct", study / "pet", tmp_path / "sr.nii.gz", m, OPTS)
    generate.generate(study / "ct", study / "pet", tmp_path / "sr.npy", m, OPTS)
    generate.generate(study / "ct", study / "pet", tmp_path / "dcm", m, OPTS)
    nii, npy, dcm = read_nifti(tmp_path / "sr.nii.gz"), np.load(tmp_path / "sr.npy"), read_series(tmp_path / "dcm")
    assert nii.array.min() == 0.0 and npy.min() == 0.0 and dcm.array.min() >= 0.0
    assert (nii.array == 0).mean() > 0.01  # the model did undershoot, so the rule was exercised
    np.testing.assert_array_equal(nii.array, npy)


def test_interrupted_dicom_output_is_cleaned_and_never_read(study, tmp_path):
    from ctpet_srgan.dicom_io import scan_dicom_tree
    from data_prep import info

    out = tmp_path / "sr_dicom"
    stale = tmp_path / ".sr_dicom.999999999.abcd1234.tmp"  # a killed run: PID gone, 2 of 3 slices written
    written = _series.write_pet(stale, np.ones((3, 8, 8), np.float32) * 1000,
                                _series.grid_affine((0.0, 0.0, 0.0), (3, 8, 8), (4.0, 4.0, 4.0)), name="series")
    written[-1].unlink()
    assert info.main([str(stale / "series")]) == 2  # never readable as a series
    assert scan_dicom_tree(tmp_path) == []
    generate.generate(study / "ct", study / "pet", out, study / "models" / "passthrough", OPTS)
    assert not stale.exists() and read_series(out).shape == (3, 32, 28)
    assert [p.name for p in tmp_path.iterdir()] == ["sr_dicom"]


def test_different_frames_of_reference_refused_unless_allowed(study, tmp_path, capsys):
    ct = read_series(study / "ct")
    other = _series.StudyInfo(_series.study().study_uid, "1.2.826.0.1.3680043.8.498.999", _series.T0)
    _series.write_ct(tmp_path, ct.array, ct.affine, name="ct_other", study=other)
    m = study / "models" / "passthrough"
    with pytest.raises(InputError, match="different FrameOfReferenceUIDs .* --allow_unregistered"):
        generate.generate(tmp_path / "ct_other", study / "pet", tmp_path / "a.npy", m, OPTS)
    assert not (tmp_path / "a.npy").exists()
    opts = generate.Options(progress=False, allow_unregistered=True)
    generate.generate(tmp_path / "ct_other", study / "pet", tmp_path / "a.npy", m, opts)
    assert (tmp_path / "a.npy").exists() and "--allow_unregistered: assuming" in capsys.readouterr().err


def test_derived_series_description_fits_lo(tmp_path):
    from ctpet_srgan.dicom_write import write_series

    assert len(generate.DEMO_SERIES_DESCRIPTION) <= 64 and "not for clinical use" in generate.DEMO_SERIES_DESCRIPTION
    vol = Volume(np.zeros((1, 4, 4), np.float32), np.eye(4), "CT", "HU")
    [p] = write_series(vol, tmp_path / "s", study=_series.study(), series_number=1, series_description="x" * 70)
    assert pydicom.dcmread(p).SeriesDescription == "x" * 64


def test_fused_png_has_orientation_letters_and_a_scale_bar(tmp_path):
    ct = np.full((64, 64), -1000.0, np.float32)  # black CT, no uptake: only annotations are not black
    pet = np.zeros((64, 64), np.float32)
    save_fused_png(tmp_path / "plain.png", ct, pet, "t", (2.0, 2.0))
    save_fused_png(tmp_path / "axial.png", ct, pet, "t", (2.0, 2.0), direction=np.eye(3))
    plain, axial = (cv2.imread(str(tmp_path / n), cv2.IMREAD_COLOR) for n in ("plain.png", "axial.png"))
    assert plain.shape == axial.shape
    yellow = lambda img: ((img[..., 2] > 200) & (img[..., 1] > 200) & (img[..., 0] < 80)).sum()  # noqa: E731
    assert yellow(axial) > yellow(plain) + 30  # the four letters R, L, A, P
    # the white scale bar (128 mm wide image -> 20 mm bar) in the lower left of the image
    black = plain.max(axis=-1) < 10
    xs = np.flatnonzero(black.mean(axis=0) > 0.5)  # columns of the image area (not the colour bar)
    ys = np.flatnonzero(black[:, xs].mean(axis=1) > 0.5)
    inside = plain[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]  # the image area (black CT)
    white = inside.min(axis=-1) > 240
    bar_rows = np.flatnonzero(white.sum(axis=1) > 0.1 * inside.shape[1])
    assert bar_rows.size > 0 and bar_rows.min() > inside.shape[0] * 0.8  # a horizontal bar near the bottom
    assert white[bar_rows[0]].sum() == pytest.approx(inside.shape[1] * 20 / 128, rel=0.2)  # 20 of 128 mm


def _in_memory_outputs(study, out, opts):
    """What generate wrote before it streamed: predict_volume's whole volumes through write_outputs."""
    import dataclasses

    pet_p, ct_p = study / "pet", study / "ct"
    pet, ct, _ = generate.read_inputs(ct_p, pet_p, opts)
    predictor = inference.load_predictor(study / "models" / "tiny")
    sr_pet, sr_ct = predictor.predict_volume(pet, ct, batch_size=opts.batch_size, tile=opts.tile,
                                             overlap=opts.tile_overlap, progress=False)
    sr_pet = dataclasses.replace(sr_pet, array=np.maximum(sr_pet.array, 0.0))
    kind = generate.output_kind(out)
    src = pet_dicom_source(pet_p) if kind == "dicom" else None
    generate.write_outputs(kind, out, sr_pet, sr_ct, opts, is_2d=False, pet_src=src, label="x", demo=False)


def _dicom_pixels(folder):
    files = sorted(folder.iterdir())
    return [(f.name, (d := pydicom.dcmread(f)).PixelData, str(d.RescaleSlope), list(d.ImagePositionPatient))
            for f in files]


def test_streamed_outputs_equal_the_in_memory_ones(study, tmp_path):
    """A multi-batch volume (3 slices in batches of 2, tiled) streamed to NIfTI, .nii.gz, NPY and DICOM gives the
    same bytes (DICOM: the same pixel data, slopes and positions) as the whole in-memory prediction written once;
    no temporaries are left."""
    import dataclasses

    opts = dataclasses.replace(OPTS, batch_size=2)
    m = study / "models" / "tiny"
    for name in ("sr.nii.gz", "sr.nii", "sr.npy", "dcm"):
        (tmp_path / "a").mkdir(exist_ok=True)
        (tmp_path / "b").mkdir(exist_ok=True)
        generate.generate(study / "ct", study / "pet", tmp_path / "a" / name, m, opts)
        _in_memory_outputs(study, tmp_path / "b" / name, opts)
        if name == "dcm":
            assert _dicom_pixels(tmp_path / "a" / name) == _dicom_pixels(tmp_path / "b" / name)
            continue
        for n in (name, str(generate.sibling(tmp_path / "a" / name, "_ct").name)):
            assert (tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes(), n
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())


def test_nifti_slab_writer_writes_write_nifti_bytes(tmp_path):
    from ctpet_srgan.geometry import axial_affine
    from ctpet_srgan.nifti_io import NiftiSlabWriter

    arr = np.random.default_rng(1).normal(0, 100, (7, 5, 9)).astype(np.float32)
    aff = axial_affine((-3.2, 7.1, 11.0), (0.7, 0.9, 2.5))
    for ext in (".nii", ".nii.gz"):
        write_nifti(Volume(arr, aff, "PT", "SUVbw"), tmp_path / f"a{ext}")
        w = NiftiSlabWriter(tmp_path / f"b{ext}", arr.shape, aff, "PT", "SUVbw")
        for k in range(0, 7, 3):
            w.write(arr[k : k + 3])
        w.close()
        assert (tmp_path / f"a{ext}").read_bytes() == (tmp_path / f"b{ext}").read_bytes()
    w = NiftiSlabWriter(tmp_path / "c.nii", arr.shape, aff, "PT", "SUVbw")
    w.write(arr[:3])
    with pytest.raises(ValueError, match="3 of 7 slices"):
        w.close()


@pytest.mark.parametrize("name", ["sr.nii.gz", "sr.npy", "dcm"])
def test_a_stream_failing_midway_leaves_no_output(study, tmp_path, monkeypatch, name):
    """The model fails after the first batch: no output, no temporary is left (partial outputs never look done)."""
    import dataclasses

    real = inference.Predictor.predict
    calls = []

    def failing(self, *a, **k):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("model died")
        return real(self, *a, **k)

    monkeypatch.setattr(inference.Predictor, "predict", failing)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="model died"):
        generate.generate(study / "ct", study / "pet", tmp_path / "out" / name, study / "models" / "tiny",
                          dataclasses.replace(OPTS, batch_size=1))
    assert len(calls) == 2 and _no_outputs(tmp_path / "out") == []


def test_a_2p5d_model_gets_each_pet_slice_with_its_neighbours(tmp_path):
    """generate.py with a K = 3 model that returns the previous slice: SR slice k is input slice k - 1 (k = 0:
    itself, the edge repeated), so the volume was fed slice by slice with its neighbours in z order."""
    from ctpet_srgan.geometry import axial_affine
    from tests._serve_models import previous_slice_generator

    m = save_model_dir(*previous_slice_generator("s2d"), tmp_path / "m")
    n = 4
    ramp = (np.arange(n, dtype=np.float32) + 1.0)[:, None, None]
    pet = Volume(ramp * np.ones((n, 6, 5), np.float32), axial_affine((0, 0, 0), (4.0, 4.0, 3.0)), "PT", "SUVbw")
    ct = Volume(100.0 * ramp * np.ones((n, 12, 10), np.float32), axial_affine((-1, -1, 0), (2.0, 2.0, 3.0)), "CT",
                "HU")
    write_nifti(pet, tmp_path / "pet.nii.gz")
    write_nifti(ct, tmp_path / "ct.nii.gz")
    out = tmp_path / "sr.npy"
    generate.generate(tmp_path / "ct.nii.gz", tmp_path / "pet.nii.gz", out, m, OPTS)
    sr = np.load(out)
    assert sr.shape == (n, 12, 10)
    np.testing.assert_allclose(sr[:, 5, 4], [1.0, 1.0, 2.0, 3.0], rtol=1e-4)
