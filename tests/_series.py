"""Helpers for ingestion tests: small CT/PET volumes written as real DICOM with dicom_write."""

from __future__ import annotations

import datetime as dt

import numpy as np

from ctpet_srgan.dicom_write import PetInfo, StudyInfo, write_series
from ctpet_srgan.geometry import Volume, affine_from_axes

T0 = dt.datetime(2021, 3, 4, 9, 30, 0)
DOSE_BQ = 3.7e8
HALF_LIFE_S = 6586.2
WEIGHT_KG = 72.5


def rotation(deg_x: float = 0.0, deg_y: float = 0.0, deg_z: float = 0.0) -> np.ndarray:
    ax, ay, az = np.radians([deg_x, deg_y, deg_z])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def grid_affine(center_mm, shape_kji, spacing_ijk, rot=np.eye(3)) -> np.ndarray:
    """Affine whose grid of `shape_kji` is centred on `center_mm`, axes = columns of `rot`."""
    rot = np.asarray(rot, float)
    a = affine_from_axes((0, 0, 0), rot[:, 0], rot[:, 1], spacing_ijk[:2], rot[:, 2] * spacing_ijk[2])
    mid = (np.array(shape_kji[::-1], float) - 1) / 2
    a[:3, 3] = np.asarray(center_mm, float) - a[:3, :3] @ mid
    return a


def study(weight_kg: float | None = WEIGHT_KG) -> StudyInfo:
    return StudyInfo("1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2", T0, patient_weight_kg=weight_kg)


def pet_info(**kw) -> PetInfo:
    d = dict(
        injected_dose_bq=DOSE_BQ,
        half_life_s=HALF_LIFE_S,
        injection_datetime=T0,
        series_datetime=T0 + dt.timedelta(minutes=60),
        acquisition_datetime=T0 + dt.timedelta(minutes=60),
    )
    d.update(kw)
    return PetInfo(**d)


def expected_suv_scale(ref: dt.datetime, inj: dt.datetime = T0, weight_kg=WEIGHT_KG, dose=DOSE_BQ) -> float:
    """Hand formula: weight (g) / (dose * 2^(-elapsed / half-life))."""
    elapsed = (ref - inj).total_seconds()
    return weight_kg * 1000.0 / (dose * 0.5 ** (elapsed / HALF_LIFE_S))


def write_ct(tmp, array_hu, affine, name="ct", **kw):
    vol = Volume(np.asarray(array_hu, np.float32), affine, "CT", "HU")
    return write_series(vol, tmp / name, study=kw.pop("study", study()), series_number=kw.pop("series_number", 2),
                        series_description=kw.pop("series_description", "CT WB"), **kw)


def write_pet(tmp, array_bqml, affine, name="pet", pet=None, **kw):
    vol = Volume(np.asarray(array_bqml, np.float32), affine, "PT", "BQML")
    return write_series(vol, tmp / name, study=kw.pop("study", study()), series_number=kw.pop("series_number", 3),
                        series_description=kw.pop("series_description", "PET AC"), pet=pet or pet_info(), **kw)
