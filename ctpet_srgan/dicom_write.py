"""Writes a Volume as a DICOM series (CT Image Storage or PET Image Storage).

Used by the phantom generator (synthetic studies that go through the real reading path), by tests, and by
generate.py: `write_derived_series` writes an SR PET (SUVbw) as a derived PET series carrying the source PET's SUV
tags (`derived_pet_series`), read from the source's header (`pet_dicom_source`). Geometry comes from the Volume's
affine; PET pixels are stored as int16 activity concentration (Bq/mL, Units BQML) with a per-slice RescaleSlope,
CT as int16 HU with RescaleIntercept -1024.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    generate_uid,
)

from ctpet_srgan import suv
from ctpet_srgan.atomic import atomic_dir, atomic_path
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume
from ctpet_srgan.slabs import MappedSlices, clip_suv

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
PET_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.128")


@dataclasses.dataclass
class StudyInfo:
    """Study-level attributes shared by the CT and PET series of one study."""

    study_uid: str
    frame_of_reference_uid: str
    study_datetime: dt.datetime
    patient_name: str = "ANONYMOUS"
    patient_id: str = "ANON"
    patient_weight_kg: float | None = 70.0
    patient_sex: str = "O"


@dataclasses.dataclass
class PetInfo:
    """PET acquisition attributes needed for SUV (QIBA): dose in Bq, half-life in s."""

    injected_dose_bq: float
    half_life_s: float
    injection_datetime: dt.datetime
    series_datetime: dt.datetime
    acquisition_datetime: dt.datetime
    decay_correction: str = "START"  # START, ADMIN or NONE
    units: str = "BQML"
    radionuclide: str = "^18^Fluorine"
    frame_duration_ms: int = 180_000
    radiopharmaceutical: str = "Fluorodeoxyglucose"
    radionuclide_code: tuple[str, str] = ("C-111A1", "SRT")  # (CodeValue, CodingSchemeDesignator) of radionuclide


def _da(t: dt.datetime) -> str:
    return t.strftime("%Y%m%d")


def _tm(t: dt.datetime) -> str:
    return t.strftime("%H%M%S.%f")[:13]


def _ds_float(x: float) -> str:
    """A DS value string of at most 16 characters."""
    s = f"{x:.10g}"
    return s if len(s) <= 16 else f"{x:.8e}"


def _slice_geometry(vol: Volume, k: int) -> tuple[list[str], list[str], list[str], float]:
    a = vol.affine
    si, sj, sk = vol.spacing_mm
    pos = a[:3, :3] @ np.array([0.0, 0.0, float(k)]) + a[:3, 3]
    row_cos = a[:3, 0] / si
    col_cos = a[:3, 1] / sj
    iop = [_ds_float(v) for v in (*row_cos, *col_cos)]
    ipp = [_ds_float(v) for v in pos]
    pixel_spacing = [_ds_float(sj), _ds_float(si)]  # DICOM: row spacing, column spacing
    return ipp, iop, pixel_spacing, sk


def write_series(
    vol: Volume,
    out_dir: str | Path,
    *,
    study: StudyInfo,
    series_number: int,
    series_description: str,
    pet: PetInfo | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_uid: str | None = None,
    image_type: Sequence[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    file_prefix: str = "IM",
) -> list[Path]:
    """Writes one file per slice into `out_dir` and returns their paths.

    vol: CT in HU (`vol.modality == "CT"`) or PET activity in Bq/mL (`vol.modality == "PT"`, `pet` given); its
    slices are read once each, in order. Each file is written atomically; `transfer_syntax` may be a compressed
    syntax pydicom can encode (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless).
    """
    is_pet = vol.modality == "PT"
    if is_pet and pet is None:
        raise ValueError("write_series: a PET volume needs PetInfo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    paths = []
    for k in range(vol.shape[0]):
        ds = _slice_header(vol, k, study, series_uid, series_number, series_description, image_type)
        img = np.asarray(vol.array[k], np.float64)
        stored = _set_pet_pixels(ds, img, pet) if is_pet else _set_ct_pixels(ds, img)
        ds.PixelData = stored.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, stored)
        path = out_dir / f"{file_prefix}{k + 1:05d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


def _slice_header(vol: Volume, k: int, study: StudyInfo, series_uid: str, series_number: int,
                  series_description: str, image_type: Sequence[str]) -> Dataset:
    """Slice k's file meta, patient, study, series and geometry attributes (a new SOPInstanceUID), no pixels."""
    is_pet = vol.modality == "PT"
    sop_class = PET_IMAGE_STORAGE if is_pet else CT_IMAGE_STORAGE
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "PT" if is_pet else "CT"
    ds.ImageType = list(image_type)
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientSex = study.patient_sex
    if study.patient_weight_kg is not None:
        ds.PatientWeight = _ds_float(study.patient_weight_kg)
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.StudyDate, ds.StudyTime = _da(study.study_datetime), _tm(study.study_datetime)
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = k + 1
    ds.SeriesDescription = series_description[:64]  # LO: at most 64 characters
    ds.Manufacturer = "ctpet-srgan"
    ipp, iop, pixel_spacing, sk = _slice_geometry(vol, k)
    ds.ImagePositionPatient = ipp
    ds.ImageOrientationPatient = iop
    ds.PixelSpacing = pixel_spacing
    ds.SliceThickness = _ds_float(sk)
    _, ds.Rows, ds.Columns = vol.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    return ds


def _set_pet_pixels(ds: Dataset, img: np.ndarray, pet: PetInfo) -> np.ndarray:
    """PET tags of `pet` and the slice's rescale into `ds`; returns `img` (Bq/mL) as stored int16 (peak 32767)."""
    set_pet_attributes(ds, pet)
    peak = float(max(img.max(), 1e-6))
    slope = peak / 32767.0
    ds.RescaleSlope, ds.RescaleIntercept = _ds_float(slope), "0"
    ds.RescaleType = "BQML"
    return np.clip(np.round(img / slope), -32768, 32767).astype(np.int16)


def _set_ct_pixels(ds: Dataset, img: np.ndarray) -> np.ndarray:
    """CT series/acquisition times and rescale into `ds`; returns `img` (HU) stored as int16 HU + 1024."""
    ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
    ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
    ds.KVP = "120"
    ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
    ds.RescaleType = "HU"
    return np.clip(np.round(img + 1024.0), -32768, 32767).astype(np.int16)


def set_pet_attributes(ds: Dataset, pet: PetInfo) -> None:
    """Writes the PET timing, units and radiopharmaceutical tags of `pet` into `ds` (SUV stays computable)."""
    ds.SeriesDate, ds.SeriesTime = _da(pet.series_datetime), _tm(pet.series_datetime)
    ds.AcquisitionDate, ds.AcquisitionTime = _da(pet.acquisition_datetime), _tm(pet.acquisition_datetime)
    ds.Units = pet.units
    ds.DecayCorrection = pet.decay_correction
    ds.CorrectedImage = ["ATTN", "DECY"] if pet.decay_correction != "NONE" else ["ATTN"]
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.ActualFrameDuration = int(pet.frame_duration_ms)
    ds.FrameReferenceTime = "0"
    ds.DecayFactor = "1"
    rp = Dataset()
    rp.Radiopharmaceutical = pet.radiopharmaceutical
    rp.RadionuclideTotalDose = _ds_float(pet.injected_dose_bq)
    rp.RadionuclideHalfLife = _ds_float(pet.half_life_s)
    rp.RadiopharmaceuticalStartTime = _tm(pet.injection_datetime)
    rp.RadiopharmaceuticalStartDateTime = _da(pet.injection_datetime) + _tm(pet.injection_datetime)
    nuc = Dataset()
    nuc.CodeValue, nuc.CodingSchemeDesignator = pet.radionuclide_code
    nuc.CodeMeaning = pet.radionuclide
    rp.RadionuclideCodeSequence = DicomSequence([nuc])
    ds.RadiopharmaceuticalInformationSequence = DicomSequence([rp])


# ------------------------------------------------------------------------------ a derived SR PET series

ANONYMOUS_EPOCH = dt.datetime(2000, 1, 1)  # the study day of an anonymized derived series


def pet_dicom_source(pet_path: Path) -> Dataset | None:
    """Header (no pixels) of one slice of a DICOM PET input (a file or a series folder), or None if it is not
    DICOM PET."""
    from ctpet_srgan import dicom_io

    files = dicom_io.series_files(pet_path) if pet_path.is_dir() else [pet_path]
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 (non-DICOM files in the folder)
            continue
        if str(ds.get("Modality", "")).upper() == "PT":
            return ds
    return None


def _tracer(rp: Dataset) -> dict:
    """The source's tracer and radionuclide (PetInfo fields), so a derived FLT or Ga-68 series is not labelled FDG."""
    out = {}
    if rp.get("Radiopharmaceutical"):
        out["radiopharmaceutical"] = str(rp.Radiopharmaceutical)
    codes = rp.get("RadionuclideCodeSequence")
    if codes:
        c = codes[0]
        if c.get("CodeValue") and c.get("CodingSchemeDesignator"):
            out["radionuclide_code"] = (str(c.CodeValue), str(c.CodingSchemeDesignator))
        if c.get("CodeMeaning"):
            out["radionuclide"] = str(c.CodeMeaning)
    return out


def source_pet_info(src: Dataset, where: Path) -> tuple[PetInfo, float]:
    """The SUV-relevant tags of a source PET header: (PetInfo in Bq/mL, PatientWeight in kg).

    Raises InputError naming `where` (the output) when the dose, times or weight a derived SUV series needs are
    missing or unreadable.
    """
    try:
        rp = src.RadiopharmaceuticalInformationSequence[0]
        series_t = suv.parse_da_tm(src.get("SeriesDate"), src.get("SeriesTime"))
        if series_t is None:
            raise ValueError("missing SeriesDate/SeriesTime")
        inj, _ = suv.injection_datetime(src, rp, series_t)
        acq = suv.acquisition_datetime(src) or series_t
        pet = PetInfo(
            injected_dose_bq=float(rp.RadionuclideTotalDose), half_life_s=float(rp.RadionuclideHalfLife),
            injection_datetime=inj, series_datetime=series_t, acquisition_datetime=acq,
            decay_correction=str(src.get("DecayCorrection", "START")).upper(), units="BQML",
            frame_duration_ms=int(src.get("ActualFrameDuration") or 180_000), **_tracer(rp))
        if None in (inj, series_t, acq):
            raise ValueError("missing dates/times")
        weight = float(src.PatientWeight)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise InputError(where, f"the PET input lacks the dose/time/weight tags a derived SUV series needs ({e})")
    return pet, weight


def derived_identity(src: Dataset, pet: PetInfo, weight_kg: float, anonymize: bool) -> tuple[StudyInfo, PetInfo]:
    """The patient / study identity of a derived series, and its PET times.

    By default (a choice) the source's: PatientName, PatientID, PatientSex, StudyInstanceUID, FrameOfReferenceUID
    and real dates, so a viewer or PACS files the series beside the source and fuses it. `anonymize`: PatientName
    ANONYMOUS, PatientID ANON, sex O, new Study and FrameOfReference UIDs (one-way hashes of the source's, so the
    outputs of one study still fuse with each other), and every date shifted by whole days so the study falls on
    ANONYMOUS_EPOCH (times of day and intervals kept: SUV is unchanged). Weight, dose and half-life stay.
    """
    study_t = suv.parse_da_tm(src.get("StudyDate"), src.get("StudyTime")) or pet.series_datetime
    if not anonymize:  # the derived series belongs to the source's patient and study (what lets a viewer fuse it)
        return StudyInfo(str(src.get("StudyInstanceUID", "")), str(src.get("FrameOfReferenceUID", "")), study_t,
                         patient_name=str(src.get("PatientName", "")), patient_id=str(src.get("PatientID", "")),
                         patient_weight_kg=weight_kg, patient_sex=str(src.get("PatientSex", "") or "O")), pet
    shift = dt.datetime.combine(study_t.date(), dt.time()) - ANONYMOUS_EPOCH
    pet = dataclasses.replace(pet, injection_datetime=pet.injection_datetime - shift,
                              series_datetime=pet.series_datetime - shift,
                              acquisition_datetime=pet.acquisition_datetime - shift)
    hashed = lambda uid: generate_uid(entropy_srcs=["ctpet-srgan anonymize", str(uid)])  # noqa: E731
    return StudyInfo(hashed(src.get("StudyInstanceUID", "")), hashed(src.get("FrameOfReferenceUID", "")),
                     study_t - shift, patient_name="ANONYMOUS", patient_id="ANON", patient_weight_kg=weight_kg,
                     patient_sex="O"), pet


def derived_pet_series(sr_pet: Volume, src: Dataset, out_dir: Path, description: str,
                       anonymize: bool = False) -> None:
    """Writes the SR PET (SUVbw) as a derived DICOM PET series in Bq/mL carrying the source's SUV tags.

    The Bq/mL values are SR SUV / the SUV factor that the written tags give (computed with the same QIBA rules
    a reader uses), so SUV read from the new series equals the SR SUV (clipped at 0). Identity: see
    `derived_identity`. `sr_pet.array` may be a read-once view (slabs.SlabSlices): slices are read once, in order.

    Args:
        sr_pet: SR PET in SUVbw on the HR grid. src: the source PET's header (`pet_dicom_source`).
        out_dir: the series folder. description: SeriesDescription (at most 64 characters are kept).
        anonymize: replace the patient and study identity (see `derived_identity`).
    """
    pet, weight = source_pet_info(src, out_dir)
    study, pet = derived_identity(src, pet, weight, anonymize)
    template = Dataset()
    template.PatientWeight = weight
    set_pet_attributes(template, pet)
    factor, _, _ = suv.suv_scale_factor(template, [pet.acquisition_datetime] * sr_pet.shape[0])
    factor = np.broadcast_to(np.asarray(factor, np.float64), (sr_pet.shape[0],))
    # slice by slice (sr_pet.array may be a read-once SlabSlices): the same values as the whole-volume expression
    bqml = MappedSlices(sr_pet.array, lambda k, a: (clip_suv(a) / factor[k : k + 1, None]).astype(np.float32))
    vol = Volume(bqml, sr_pet.affine, "PT", "BQML")
    number = int(src.get("SeriesNumber") or 0) + 1000
    write_series(vol, out_dir, study=study, series_number=number, series_description=description, pet=pet,
                 image_type=("DERIVED", "SECONDARY", "AXIAL"), file_prefix="SR")


def write_derived_series(out: Path, sr_pet: Volume, src: Dataset, description: str, anonymize: bool = False) -> None:
    """`derived_pet_series` into a hidden temporary folder beside `out`, renamed onto `out` (replacing an existing
    folder) only when every slice is written (`atomic.atomic_dir`). Args as `derived_pet_series`."""
    with atomic_dir(out) as tmp:
        derived_pet_series(sr_pet, src, tmp, description, anonymize=anonymize)


def read_back(path: str | Path) -> Dataset:
    """Convenience for tests: reads one written file."""
    return pydicom.dcmread(str(path))
