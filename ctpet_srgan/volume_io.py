"""One entry point for reading a CT or PET volume from disk, whatever the format.

A folder -> DICOM series; *.nii / *.nii.gz -> NIfTI; a file with the DICOM magic or a .dcm suffix ->
a one-file DICOM series. CT comes back in HU, PET in SUVbw.
"""

from __future__ import annotations

import os
from pathlib import Path

from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume


def _norm_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    m = modality.strip().upper()
    m = {"PET": "PT"}.get(m, m)
    if m not in ("CT", "PT"):
        raise ValueError(f"modality must be CT or PT, got {modality!r}")
    return m


def read_volume(path: str | os.PathLike, modality: str | None = None, nifti_units: str | None = None, *,
                pet_units: str = "SUVbw") -> Volume:
    """Reads PATH (DICOM series folder, DICOM file, or NIfTI) as a Volume in HU (CT) or SUVbw (PT).

    modality: required for NIfTI (it has no modality tag) unless this project wrote it; for DICOM, checked
    against the file's Modality.
    nifti_units: units of a NIfTI's voxels (default HU for CT, SUVbw for PT).
    pet_units: "SUVbw", or "stored" to read a DICOM PET in its stored units without SUV conversion.
    The temporary folders and files of unfinished writes (hidden ".*.tmp") are refused.
    """
    from ctpet_srgan import dicom_io, nifti_io

    p = Path(path)
    modality = _norm_modality(modality)
    if not p.exists():
        raise InputError(p, "does not exist")
    tmp = dicom_io.unfinished_write(p)
    if tmp is not None:
        raise InputError(p, f"lies in {tmp.name}, the temporary output of an unfinished write (an interrupted run): "
                            "not an input; rerun the job that wrote it")
    if p.is_dir():
        vol = dicom_io.read_series(p, pet_units=pet_units)
    elif nifti_io.is_nifti_path(p):
        return nifti_io.read_nifti(p, modality=modality, units=nifti_units)
    elif p.suffix.lower() in (".dcm", ".dicom", ".ima") or dicom_io.has_dicom_magic(p):
        vol = dicom_io.read_series(p, pet_units=pet_units)
    else:
        raise InputError(p, "unknown format: expected a DICOM series folder, a DICOM file, or .nii/.nii.gz")
    if modality is not None and vol.modality != modality:
        raise InputError(p, f"modality is {vol.modality}, expected {modality}")
    return vol
