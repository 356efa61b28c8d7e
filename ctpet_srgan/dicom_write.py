"""Writes a Volume as a DICOM series (CT Image Storage or PET Image Storage).

Used by the phantom generator (synthetic studies that go through the real reading path), by tests, and by
generate.py (a derived SR PET series). Geometry comes from the Volume's affine; PET pixels are stored as
int16 activity concentration (Bq/mL, Units BQML) with a per-slice RescaleSlope, CT as int16 HU with
RescaleIntercept -1024.
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

from ctpet_srgan.atomic import atomic_path
from ctpet_srgan.geometry import Volume

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

    vol: CT in HU (`vol.modality == "CT"`) or PET activity in Bq/mL (`vol.modality == "PT"`, `pet` given).
    Each file is written atomically; `transfer_syntax` may be a compressed syntax pydicom can encode
    (RLE Lossless, JPEG-LS Lossless, JPEG 2000 Lossless).
    """
    is_pet = vol.modality == "PT"
    if is_pet and pet is None:
        raise ValueError("write_series: a PET volume needs PetInfo")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    sop_class = PET_IMAGE_STORAGE if is_pet else CT_IMAGE_STORAGE
    nk, nj, ni = vol.shape
    paths = []
    for k in range(nk):
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
        ds.Rows, ds.Columns = nj, ni
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        img = np.asarray(vol.array[k], np.float64)
        if is_pet:
            set_pet_attributes(ds, pet)
            peak = float(max(img.max(), 1e-6))
            slope = peak / 32767.0
            stored = np.clip(np.round(img / slope), -32768, 32767).astype(np.int16)
            ds.RescaleSlope, ds.RescaleIntercept = _ds_float(slope), "0"
            ds.RescaleType = "BQML"
        else:
            ds.SeriesDate, ds.SeriesTime = ds.StudyDate, ds.StudyTime
            ds.AcquisitionDate, ds.AcquisitionTime = ds.StudyDate, ds.StudyTime
            ds.KVP = "120"
            stored = np.clip(np.round(img + 1024.0), -32768, 32767).astype(np.int16)
            ds.RescaleSlope, ds.RescaleIntercept = "1", "-1024"
            ds.RescaleType = "HU"
        ds.PixelData = stored.tobytes()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, stored)
        path = out_dir / f"{file_prefix}{k + 1:05d}.dcm"
        with atomic_path(path) as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        paths.append(path)
    return paths


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


def read_back(path: str | Path) -> Dataset:
    """Convenience for tests: reads one written file."""
    return pydicom.dcmread(str(path))
