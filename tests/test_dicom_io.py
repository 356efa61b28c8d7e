"""DICOM series reading: HU and SUV values, ordering by position, geometry checks, compressed syntaxes,
bad input (each an InputError naming the file or folder), and the tree scan used for pairing."""

import datetime as dt
import os
import random
import shutil

import numpy as np
import pydicom
import pydicom.data
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from ctpet_srgan.dicom_io import read_series, scan_dicom_tree
from ctpet_srgan.dicom_write import StudyInfo
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import axial_affine
from tests._series import T0, expected_suv_scale, grid_affine, pet_info, rotation, study, write_ct, write_pet

SHAPE = (6, 12, 10)  # (k, j, i)
AFF = axial_affine((-30.0, -40.0, 100.0), (3.0, 2.5, 2.5))


def _ct_array(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(-1000, 1500, size=shape).astype(np.float32)
    a[:, 0, 0] = 100.0 * np.arange(shape[0])  # a per-slice signature
    return a


def _edit(path, fn):
    ds = pydicom.dcmread(str(path))
    fn(ds)
    ds.save_as(str(path))


# ---------------------------------------------------------------- values: HU and SUV


def test_ct_small_real_file_in_hu():
    path = pydicom.data.get_testdata_file("CT_small.dcm")
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    vol = read_series(path)
    assert (vol.modality, vol.units, vol.shape) == ("CT", "HU", (1, 128, 128))
    np.testing.assert_array_equal(vol.array[0], expected.astype(np.float32))
    np.testing.assert_allclose(vol.array[0], pydicom.pixels.apply_modality_lut(ds.pixel_array, ds))
    assert float(expected.min()) < -800  # air present: intercept -1024 was applied
    np.testing.assert_allclose(vol.affine[:3, 3], [float(v) for v in ds.ImagePositionPatient])
    np.testing.assert_allclose(vol.spacing_mm[:2], [float(v) for v in ds.PixelSpacing[::-1]])


def test_ct_series_round_trip(tmp_path):
    a = _ct_array()
    write_ct(tmp_path, a, AFF)
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a)
    np.testing.assert_allclose(vol.affine, AFF, atol=1e-6)
    assert vol.meta["study_uid"] == study().study_uid and vol.meta["series_description"] == "CT WB"


def test_pet_series_suv_with_per_slice_slopes(tmp_path):
    rng = np.random.default_rng(1)
    bq = rng.uniform(0, 1, SHAPE).astype(np.float32) * (1000.0 * 10.0 ** np.arange(SHAPE[0]))[:, None, None]
    pet = pet_info()
    paths = write_pet(tmp_path, bq, AFF, pet=pet)
    slopes = [float(pydicom.dcmread(str(p)).RescaleSlope) for p in paths]
    assert len(set(slopes)) == SHAPE[0]  # every slice has its own RescaleSlope
    vol = read_series(tmp_path / "pet")
    scale = expected_suv_scale(pet.series_datetime)
    assert vol.units == "SUVbw" and vol.meta["suv_scale"] == pytest.approx(scale, rel=1e-9)
    assert vol.meta["suv_reference_time"] == pet.series_datetime.isoformat()
    for k in range(SHAPE[0]):  # int16 quantisation: half a step of that slice's slope
        np.testing.assert_allclose(vol.array[k], bq[k] * scale, atol=0.51 * slopes[k] * scale, rtol=1e-6)


def test_no_patient_identifiers_in_meta(tmp_path):
    s = StudyInfo("1.2.3.4", "1.2.3.5", T0, patient_name="DOE^JANE", patient_id="MRN998877")
    write_pet(tmp_path, np.ones(SHAPE, np.float32), AFF, study=s)
    text = repr(read_series(tmp_path / "pet").meta)
    assert "DOE" not in text and "MRN998877" not in text and "patient" not in text.lower()


# ---------------------------------------------------------------- ordering


def test_sorted_by_position_not_name_or_instance_number(tmp_path):
    a = _ct_array()
    paths = write_ct(tmp_path, a, AFF)
    names = [f"{random.Random(3).getrandbits(40):x}" for _ in paths]
    rng = random.Random(7)
    order = list(range(len(paths)))
    rng.shuffle(order)
    for n, p in enumerate(paths):  # InstanceNumber reversed, names random (and in shuffled order)
        _edit(p, lambda ds, n=n: setattr(ds, "InstanceNumber", len(paths) - n))
        os.rename(p, p.parent / f"{order[n]:02d}_{names[n]}{n}.dcm")
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a)
    np.testing.assert_allclose(vol.affine, AFF, atol=1e-6)


def test_stack_written_against_the_normal_is_reordered(tmp_path):
    """Slices stored head-to-feet (slice step -z while the normal row x col is +z) come back along +z."""
    rev = axial_affine((0.0, 0.0, 50.0), (2.0, 2.0, 4.0))
    rev[:3, 2] = (0, 0, -4.0)
    a = _ct_array()
    write_ct(tmp_path, a, rev)
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a[::-1])
    np.testing.assert_allclose(vol.affine[:3, 2], [0, 0, 4.0], atol=1e-6)
    np.testing.assert_allclose(vol.affine[:3, 3], [0, 0, 50.0 - 4.0 * (SHAPE[0] - 1)], atol=1e-6)


def test_oblique_series_geometry(tmp_path):
    aff = grid_affine((5.0, -3.0, 20.0), SHAPE, (2.0, 2.5, 3.0), rotation(25, -20, 5))
    a = _ct_array()
    paths = write_ct(tmp_path, a, aff)
    for p in paths:
        os.rename(p, p.parent / f"x{random.Random(str(p)).random():.6f}.dcm")
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a)
    np.testing.assert_allclose(vol.affine, aff, atol=1e-5)


# ---------------------------------------------------------------- compressed transfer syntaxes


@pytest.mark.parametrize("ts", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=["rle", "jpegls", "j2k"])
def test_compressed_series_written_by_us(tmp_path, ts):
    shape = (3, 32, 36)
    a = _ct_array(shape)
    paths = write_ct(tmp_path, a, AFF, transfer_syntax=ts)
    assert pydicom.dcmread(str(paths[0]), stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a)
    assert vol.meta["transfer_syntax"] == ts


def test_jpeg_lossless_process14_encoded_by_gdcm(tmp_path):
    """JPEG Lossless SV1 (1.2.840.10008.1.2.4.70), the usual PACS export: pydicom cannot encode it, so
    GDCM (through SimpleITK) encodes each slice and the encapsulated stream replaces the pixel data."""
    import SimpleITK as sitk

    a = _ct_array((3, 16, 20))
    paths = write_ct(tmp_path, a, AFF)
    for p in paths:
        ds = pydicom.dcmread(str(p))
        w = sitk.ImageFileWriter()
        w.SetImageIO("GDCMImageIO")
        w.SetFileName(str(tmp_path / "gdcm.dcm"))
        w.SetUseCompression(True)
        w.SetCompressor("JPEG")
        w.Execute(sitk.GetImageFromArray(ds.pixel_array[None]))
        enc = pydicom.dcmread(str(tmp_path / "gdcm.dcm"))
        assert enc.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.70"
        ds["PixelData"] = enc["PixelData"]
        ds.file_meta.TransferSyntaxUID = enc.file_meta.TransferSyntaxUID
        ds.save_as(str(p))
    (tmp_path / "gdcm.dcm").unlink()
    vol = read_series(tmp_path / "ct")
    assert vol.meta["transfer_syntax"] == "1.2.840.10008.1.2.4.70"
    np.testing.assert_array_equal(vol.array, a)


@pytest.mark.parametrize(
    "name", ["MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"]
)
def test_pydicom_real_compressed_files_match_uncompressed_twin(tmp_path, name):
    """pydicom's bundled real compressed files decode to the same pixels as MR_small.dcm.
    (Relabelled as CT with rescale 1/0 so the CT reader accepts them.)"""
    out = []
    for src in ("MR_small.dcm", name):
        ds = pydicom.dcmread(pydicom.data.get_testdata_file(src))
        ds.Modality, ds.RescaleSlope, ds.RescaleIntercept = "CT", "1", "0"
        ds.save_as(str(tmp_path / src))
        out.append(read_series(tmp_path / src))
    assert out[1].meta["transfer_syntax"] != out[0].meta["transfer_syntax"]
    np.testing.assert_array_equal(out[1].array, out[0].array)
    assert out[0].array.std() > 0


# ---------------------------------------------------------------- bad input


def test_missing_slice(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    paths[3].unlink()
    with pytest.raises(InputError, match=r"missing slice between z=105\.00 and z=110\.00 mm \(1 slice") as e:
        read_series(tmp_path / "ct")
    assert str(e.value).startswith(str(tmp_path / "ct") + ": ")


def test_non_uniform_spacing_refused(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _edit(paths[-1], lambda ds: setattr(ds, "ImagePositionPatient", [-30.0, -40.0, 100.0 + 2.5 * 4 + 3.8]))
    with pytest.raises(InputError, match="non-uniform slice spacing"):
        read_series(tmp_path / "ct")


def test_duplicate_position_refused(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    dup = tmp_path / "ct" / "dup.dcm"
    shutil.copy(paths[2], dup)
    _edit(dup, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    with pytest.raises(InputError, match="duplicate slice position z=105.000"):
        read_series(tmp_path / "ct")


def test_gantry_tilt_refused(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    for k, p in enumerate(paths):
        _edit(p, lambda ds, k=k: setattr(ds, "ImagePositionPatient", [-30.0, -40.0 + 0.8 * k, 100.0 + 2.5 * k]))
    with pytest.raises(InputError, match="not along the slice normal"):
        read_series(tmp_path / "ct")


def test_orientation_mismatch_names_the_file(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _edit(paths[4], lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0.8, 0.6]))
    with pytest.raises(InputError, match=f"{paths[4].name}: ImageOrientationPatient .* differs"):
        read_series(tmp_path / "ct")


def test_mixed_series_in_one_folder(tmp_path):
    write_ct(tmp_path, _ct_array(), AFF, name="mix", file_prefix="CT")
    write_pet(tmp_path, np.ones(SHAPE, np.float32), AFF, name="mix", file_prefix="PT")
    with pytest.raises(InputError) as e:
        read_series(tmp_path / "mix")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'mix'}: 2 series in one folder")
    assert "'CT WB' (series number 2): 6 files" in msg and "'PET AC' (series number 3): 6 files" in msg
    assert "1.2.826" not in msg  # no UIDs


def test_truncated_file_named(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=f"^{paths[2]}: "):
        read_series(tmp_path / "ct")


def test_truncated_header_named(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    paths[1].write_bytes(paths[1].read_bytes()[:300])
    with pytest.raises(InputError, match=f"^{paths[1]}: "):
        read_series(tmp_path / "ct")


def test_corrupt_file_named(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    paths[0].write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    with pytest.raises(InputError, match=f"^{paths[0]}: not a"):
        read_series(tmp_path / "ct")


def test_missing_suv_tag(tmp_path):
    write_pet(tmp_path, np.ones(SHAPE, np.float32), AFF, study=study(weight_kg=None))
    with pytest.raises(InputError, match=r"\.dcm: missing PatientWeight \(0010,1030\)"):
        read_series(tmp_path / "pet")


def test_unconvertible_units(tmp_path):
    write_pet(tmp_path, np.ones(SHAPE, np.float32), AFF, pet=pet_info(units="CNTS"))
    with pytest.raises(InputError, match="PET Units 'CNTS' cannot be converted to SUVbw"):
        read_series(tmp_path / "pet")


def test_pet_decay_none_and_series_after_acquisition(tmp_path):
    acq = T0 + dt.timedelta(minutes=55)
    write_pet(tmp_path, np.full(SHAPE, 5000.0, np.float32), AFF, name="late",
              pet=pet_info(series_datetime=T0 + dt.timedelta(minutes=90), acquisition_datetime=acq))
    vol = read_series(tmp_path / "late")
    assert vol.meta["suv_reference_time"] == acq.isoformat()
    np.testing.assert_allclose(vol.array, 5000.0 * expected_suv_scale(acq), rtol=1e-4)
    write_pet(tmp_path, np.full(SHAPE, 5000.0, np.float32), AFF, name="none",
              pet=pet_info(decay_correction="NONE", acquisition_datetime=acq))
    vol = read_series(tmp_path / "none")
    assert vol.meta["decay_correction"] == "NONE"
    np.testing.assert_allclose(vol.array, 5000.0 * expected_suv_scale(acq), rtol=1e-4)


def test_other_modality_and_missing_path(tmp_path):
    with pytest.raises(InputError, match="modality 'MR' is not CT or PT"):
        read_series(pydicom.data.get_testdata_file("MR_small.dcm"))
    with pytest.raises(InputError, match="does not exist"):
        read_series(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no DICOM files"):
        read_series(tmp_path / "empty")


def test_non_dicom_side_files_ignored(tmp_path):
    a = _ct_array()
    write_ct(tmp_path, a, AFF)
    (tmp_path / "ct" / "README.txt").write_text("export notes")
    (tmp_path / "ct" / "VERSION").write_text("1")
    np.testing.assert_array_equal(read_series(tmp_path / "ct").array, a)


# ---------------------------------------------------------------- scan for pairing


def test_scan_dicom_tree(tmp_path):
    root = tmp_path / "export"
    write_ct(root / "p1", _ct_array(), AFF, name="s2")
    write_pet(root / "p1", np.ones((4, 12, 10), np.float32), AFF, name="deep" + os.sep + "s3")
    (root / "notes.txt").write_text("x")
    (root / "p1" / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00")
    series = scan_dicom_tree(root)
    assert [(s["modality"], s["n_files"], s["series_number"]) for s in series] == [("CT", 6, 2), ("PT", 4, 3)]
    ct, pt = series
    assert ct["study_uid"] == pt["study_uid"] == study().study_uid
    assert ct["frame_of_reference_uid"] == pt["frame_of_reference_uid"]
    assert ct["series_description"] == "CT WB" and all(f.endswith(".dcm") for f in ct["files"])
    np.testing.assert_array_equal(read_series(pt["files"]).array.shape, (4, 12, 10))
    with pytest.raises(InputError, match="broken.dcm"):
        scan_dicom_tree(root, on_error="raise")


# ---------------------------------------------------------------- read_volume dispatch


def test_read_volume_dispatch(tmp_path):
    from ctpet_srgan.volume_io import read_volume

    a = _ct_array()
    paths = write_ct(tmp_path, a, AFF)
    np.testing.assert_array_equal(read_volume(tmp_path / "ct", modality="CT").array, a)
    noext = tmp_path / "slice0"
    shutil.copy(paths[0], noext)  # DICOM magic, no suffix: a one-slice series
    one = read_volume(noext)
    np.testing.assert_array_equal(one.array, a[:1])
    assert one.spacing_mm[2] == pytest.approx(2.5)  # from SliceThickness
    with pytest.raises(InputError, match="modality is CT, expected PT"):
        read_volume(tmp_path / "ct", modality="PT")
    other = tmp_path / "scan.png"
    other.write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match=f"^{other}: unknown format"):
        read_volume(other)


def test_philips_cnts_series(tmp_path):
    bq = np.full(SHAPE, 3000.0, np.float32)
    paths = write_pet(tmp_path, bq, AFF, pet=pet_info(units="CNTS"))

    def add(ds, f=2.5e-4):
        ds.private_block(0x7053, "Philips PET Private Group", create=True).add_new(0x00, "DS", str(f))

    for p in paths:
        _edit(p, add)
    vol = read_series(tmp_path / "pet")
    assert vol.meta["units_source"] == "CNTS"
    np.testing.assert_allclose(vol.array, 3000.0 * 2.5e-4, rtol=1e-4)
    _edit(paths[2], lambda ds: setattr(ds.private_block(0x7053, "Philips PET Private Group")[0x00], "value", "3e-4"))
    with pytest.raises(InputError, match=f"{paths[2].name}: Philips private scale factors .* differ"):
        read_series(tmp_path / "pet")


# ---------------------------------------------------------------- hostile headers (the fuzzer's findings)


def _one_slice_ct(tmp_path, **tags):
    paths = write_ct(tmp_path, _ct_array((1, 12, 10)), AFF)

    def edit(ds):
        for k, v in tags.items():
            if v is None:
                delattr(ds, k)
            else:
                setattr(ds, k, v)
    _edit(paths[0], edit)
    return paths[0]


@pytest.mark.parametrize("keyword,value", [
    ("Rows", [12, 12]), ("Columns", "abc"), ("NumberOfFrames", "nan"), ("SeriesNumber", ["1", "2"]),
])
def test_multivalued_or_unparsable_integer_tags_name_the_file(tmp_path, keyword, value):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    target = paths[0] if keyword == "SeriesNumber" else paths[3]

    def edit(ds):
        tag = pydicom.datadict.tag_for_keyword(keyword)
        if tag in ds:
            del ds[tag]
        ds.add_new(tag, "LO" if keyword in ("Columns", "NumberOfFrames") else "IS", value)
    _edit(target, edit)
    with pytest.raises(InputError, match=f"^{target}: {keyword} "):
        read_series(tmp_path / "ct")


def test_negative_dimensions_refused(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)

    def edit(ds):
        del ds[0x00280010]
        ds.add_new(0x00280010, "IS", "-12")
    _edit(paths[0], edit)
    with pytest.raises(InputError, match=f"^{paths[0]}: image size Rows x Columns = -12 x 10"):
        read_series(tmp_path / "ct")


def _bad_vr(path, elem: bytes) -> None:
    raw = path.read_bytes()
    assert raw.count(elem) == 1
    path.write_bytes(raw.replace(elem, elem[:4] + b"QQ"))


def test_unknown_vr_raised_lazily_names_the_file(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _bad_vr(paths[2], b"\x20\x00\x32\x00DS")  # ImagePositionPatient (read for every slice), explicit VR LE
    with pytest.raises(InputError, match=f"^{paths[2]}: invalid header value .*QQ"):
        read_series(tmp_path / "ct")


def test_unknown_vr_in_a_tag_never_read(tmp_path):
    """A later slice's SeriesDescription is never read by read_series (the first file's is): the series reads, and
    equals the intact one. The header scan converts it (a pairing tag) and skips the file."""
    paths = write_ct(tmp_path, _ct_array(), AFF)
    intact = read_series(tmp_path / "ct")
    _bad_vr(paths[2], b"\x08\x00\x3e\x10LO")  # SeriesDescription
    vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, intact.array)
    with pytest.raises(InputError, match=str(paths[2])):
        scan_dicom_tree(tmp_path, on_error="raise")
    assert [s["n_files"] for s in scan_dicom_tree(tmp_path)] == [SHAPE[0] - 1]  # skipped with a warning


@pytest.mark.parametrize("thickness", ["inf", "1e308", "1e-320", "0", "nan"])
def test_single_slice_with_absurd_thickness_refused(tmp_path, thickness):
    path = _one_slice_ct(tmp_path, SliceThickness=thickness)
    with pytest.raises(InputError, match=f"^{path}: single slice with implausible SliceThickness"):
        read_series(path)


def test_single_slice_spacing_sources(tmp_path):
    path = _one_slice_ct(tmp_path, SliceThickness="2.5")
    vol = read_series(path)
    assert vol.meta["slice_spacing_from"] == "SliceThickness" and vol.spacing_mm[2] == pytest.approx(2.5)
    _edit(path, lambda ds: delattr(ds, "SliceThickness"))
    vol = read_series(path)
    assert vol.meta["slice_spacing_from"].startswith("assumed 1 mm") and vol.spacing_mm[2] == pytest.approx(1.0)


@pytest.mark.parametrize("keyword,value,problem", [
    ("PixelSpacing", [1e-320, 2.5], "PixelSpacing"), ("PixelSpacing", [1e308, 2.5], "PixelSpacing"),
    ("ImagePositionPatient", [0, 0, 1e300], "ImagePositionPatient"), ("RescaleSlope", "nan", "RescaleSlope"),
    ("RescaleSlope", "1e308", "pixel values are not finite"),
])
def test_absurd_geometry_and_rescale_refused(tmp_path, keyword, value, problem):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _edit(paths[0], lambda ds: setattr(ds, keyword, value))
    with pytest.raises(InputError, match=f"{paths[0].name}: .*{problem}|{paths[0].name}: {problem}"):
        read_series(tmp_path / "ct")


def test_empty_image_refused(tmp_path):
    path = _one_slice_ct(tmp_path, Rows=0)
    with pytest.raises(InputError, match=f"^{path}: image size Rows x Columns = 0 x 10"):
        read_series(path)


# ---------------------------------------------------------------- de-identified data, stored PET units


def _deidentify(paths, series_number=None):
    for p in paths:
        def edit(ds):
            del ds.SeriesInstanceUID
            ds.SOPInstanceUID = ""
            ds.file_meta.MediaStorageSOPInstanceUID = ""
            if series_number is not None:
                ds.SeriesNumber = series_number
        _edit(p, edit)


def test_series_without_series_uid_read_by_its_other_tags(tmp_path, caplog):
    a = _ct_array()
    paths = write_ct(tmp_path, a, AFF)
    _deidentify(paths)
    with caplog.at_level("WARNING"):
        vol = read_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.array, a)
    assert "6 files have no SeriesInstanceUID" in caplog.text
    [s] = scan_dicom_tree(tmp_path)
    assert s["n_files"] == SHAPE[0] and s["series_uid"].startswith("derived:")


def test_uidless_files_of_two_series_numbers_are_refused_as_two_series(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _deidentify(paths[:3], series_number=2)
    _deidentify(paths[3:], series_number=7)
    with pytest.raises(InputError, match="2 series in one folder \\(6 files without SeriesInstanceUID"):
        read_series(tmp_path / "ct")
    assert sorted(s["n_files"] for s in scan_dicom_tree(tmp_path)) == [3, 3]


def test_one_uidless_file_among_uid_files_is_named(tmp_path):
    paths = write_ct(tmp_path, _ct_array(), AFF)
    _deidentify(paths[4:5])
    with pytest.raises(InputError, match=f"^{paths[4]}: no SeriesInstanceUID .* other files of the series have one"):
        read_series(tmp_path / "ct")


def test_pet_in_stored_units_when_asked(tmp_path):
    bq = np.full(SHAPE, 4000.0, np.float32)
    write_pet(tmp_path, bq, AFF, study=study(weight_kg=None))
    with pytest.raises(InputError, match="missing PatientWeight"):
        read_series(tmp_path / "pet")
    vol = read_series(tmp_path / "pet", pet_units="stored")
    assert vol.units == "BQML" and "suv_scale" not in vol.meta
    np.testing.assert_allclose(vol.array, bq, rtol=1e-3)


def test_unfinished_write_folder_is_not_read(tmp_path):
    from ctpet_srgan.volume_io import read_volume

    write_ct(tmp_path / ".out.ab12cd.tmp", _ct_array(), AFF, name="series")
    with pytest.raises(InputError, match="temporary"):
        read_series(tmp_path / ".out.ab12cd.tmp" / "series")
    with pytest.raises(InputError, match="unfinished write"):
        read_volume(tmp_path / ".out.ab12cd.tmp" / "series")
    assert scan_dicom_tree(tmp_path) == []
