"""`python -m data_prep convert`: PET/CT studies -> sharded TFRecords of aligned HR/LR slice pairs + manifest.json.

Per study (a PURE function, `prepare_study`, so it can run in a process pool here or on a Beam runner):
1. Read CT (HU) and PET (SUVbw) with `ctpet_srgan.volume_io` / `dicom_io` (DICOM series folder, file list or
   NIfTI). CT and PET must share the FrameOfReferenceUID unless `allow_unregistered`.
2. Target HR grid: PET orientation (full direction matrix), in-plane spacing = PET spacing / scale (or
   `hr_spacing_mm`), axial slices at the PET's slice positions, covering the part of the PET field that the CT
   also covers, snapped to whole PET voxels (so by default the LR grid IS the PET grid); H, W multiples of scale.
3. HR CT = CT anti-aliased (Gaussian to the target voxel size and slice thickness) and resampled (linear, fill
   -1024 HU). HR PET = the "HR PET truth" series (SeriesDescription prefix, written by data_prep.phantom) when
   present (has_truth=1), else the clinical PET interpolated (has_truth=0); resampled with SimpleITK (linear).
4. LR PET (`degradation.degrade_pet_volume`) = source PET blurred on its own grid by a Gaussian (truth: FWHM
   sqrt(lr_fwhm^2 - truth_fwhm^2), e.g. sqrt(6^2-2^2) = 5.66 mm; clinical PET: `no_truth_fwhm_mm`), resampled
   onto the HR grid and area-averaged by `scale` (a truth PET) or straight onto the LR grid (a clinical PET, whose
   voxels already are LR voxels), then count-dependent Poisson noise (`counts_per_suv` per LR voxel), seeded from
   (seed, study hash). A guided-world study (lesions.json a dict with a `scanner`, data_prep.phantom) uses its own
   scanner's psf_fwhm_mm / truth_fwhm_mm / counts_per_suv instead of the config's, and its summary keeps the
   guided lesion fields and the study's world, ct_only, scanner, misregistration and the degradation it got.
   LR CT = HR CT area-averaged by `scale`.
5. Tumour mask (when the study has an RTSTRUCT): the ROI matching `roi_pattern` (default "GTV_Mass*") rasterised
   onto the HR grid in patient space (ctpet_srgan.rtstruct: a voxel is inside when its centre is inside the contour);
   the summary keeps its volume (tumour_volume_ml) beside the contour's own (contour_volume_ml).
6. One tf.train.Example per axial slice (records.serialize_example), physical units (SUVbw, HU), + hr_mask.

Real clinical sets (no truth PET, e.g. the IBSI STS studies): `--hr_spacing_mm=median_pet` puts every study on one
HR in-plane spacing, the median PET in-plane spacing of the set, so HR = the clinical PET (resampled, has_truth=0)
and LR = its degradation at `scale` x that spacing. A study that fails is reported by its hash and skipped (listed
in the manifest's `skipped`); only when every study fails is the run an error.

Driver (`convert`): each finished study goes to OUT/.work/<hash>.examples (+ .json summary) atomically, written by
the worker that prepared it, so a rerun resumes; then a deterministic split by study (sorted hashes, or a permutation
seeded by `split_seed`, written in the manifest), final shards
`<split>-NNNNN-of-NNNNN.tfrecord[.gz]`, and manifest.json LAST. No patient identifiers or input paths reach OUT:
studies are named by a salted hash.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import gzip
import json
import logging
import math
import multiprocessing
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ctpet_srgan import records
from ctpet_srgan.atomic import atomic_path, write_json_atomic, write_json_once
from ctpet_srgan.degradation import degrade_pet_volume, downsample_area, extra_fwhm_mm, gaussian_blur
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume, resample
from ctpet_srgan.manifest import Manifest
from ctpet_srgan.normalization import DEFAULT, Normalization

_log = logging.getLogger(__name__)

TRUTH_PREFIX = "HR PET truth"  # SeriesDescription prefix of a ground-truth HR PET series (see data_prep.phantom)
WORK = ".work"
SHARD_RE = re.compile(r"^(train|val|test)-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")

PathLike = str | os.PathLike
Source = str | tuple[str, ...]  # a path (DICOM folder/file, NIfTI) or a tuple of DICOM files of one series


@dataclasses.dataclass(frozen=True)
class ConvertConfig:
    """Settings of the preparation. Lengths in mm; counts per LR voxel per unit SUV."""

    scale: int = 2
    hr_spacing_mm: float | None = None  # default: PET in-plane spacing / scale
    lr_fwhm_mm: float = 6.0  # resolution the LR PET should have when HR is a truth PET
    truth_fwhm_mm: float = 2.0  # resolution of the truth PET
    no_truth_fwhm_mm: float = 4.0  # extra blur applied to a clinical PET (no truth) to make its LR
    counts_per_suv: float = 40.0  # Poisson noise of the LR PET; 0 = none
    seed: int = 0
    allow_unregistered: bool = False
    nifti_pet_units: str | None = None  # units of NIfTI PET voxels (default SUVbw)
    normalization: Normalization = DEFAULT
    roi_pattern: str = "GTV_Mass*"  # RTSTRUCT ROI name (fnmatch, case-insensitive) of the tumour mask

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["normalization"] = self.normalization.to_dict()
        return d

    def degradation(self) -> dict[str, Any]:
        """What the manifest records about the LR model."""
        return {
            "model": "gaussian_psf + area_downsample + poisson_counts",
            "scale": self.scale,
            "lr_fwhm_mm": self.lr_fwhm_mm,
            "truth_fwhm_mm": self.truth_fwhm_mm,
            "extra_fwhm_mm_truth": round(extra_fwhm_mm(self.lr_fwhm_mm, self.truth_fwhm_mm), 4),
            "extra_fwhm_mm_no_truth": self.no_truth_fwhm_mm,
            "counts_per_suv": self.counts_per_suv,
            "counts_per": "LR voxel",
            "ct": "area_downsample",
            "seed": self.seed,
        }


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """One study to convert. `key` is its study hash (records.study_hash of the StudyInstanceUID)."""

    key: str
    ct: Source
    pet: Source
    truth: Source | None = None
    lesions: tuple[dict[str, Any], ...] = ()
    rtstruct: str | None = None  # an RTSTRUCT file with the tumour contour (see ConvertConfig.roi_pattern)
    world: dict[str, Any] | None = None  # guided phantom world: lesions.json's world, ct_only, scanner, misregistration


@dataclasses.dataclass
class StudyResult:
    study_hash: str
    examples: list[bytes]
    summary: dict[str, Any]


# --------------------------------------------------------------------------------------------- reading
def _read(src: Source, modality: str, nifti_units: str | None = None) -> Volume:
    from ctpet_srgan import dicom_io
    from ctpet_srgan.volume_io import read_volume

    if isinstance(src, (tuple, list)):
        vol = dicom_io.read_series([Path(f) for f in src])
        if vol.modality != modality:
            raise InputError(Path(src[0]).parent, f"modality is {vol.modality}, expected {modality}")
        return vol
    return read_volume(src, modality=modality, nifti_units=nifti_units if modality == "PT" else None)


def _where(src: Source) -> str:
    return str(Path(src[0]).parent) if isinstance(src, (tuple, list)) else str(src)


# --------------------------------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True)
class TargetGrid:
    hr_affine: np.ndarray  # 4x4, index (i, j, k) -> LPS mm
    hr_shape: tuple[int, int, int]  # (K, H, W)
    lr_affine: np.ndarray
    scale: int

    @property
    def hr_spacing_mm(self) -> list[float]:
        return [float(v) for v in np.linalg.norm(self.hr_affine[:3, :3], axis=0)]

    @property
    def lr_spacing_mm(self) -> list[float]:
        return [float(v) for v in np.linalg.norm(self.lr_affine[:3, :3], axis=0)]


def _field_in_index(vol: Volume, ref: Volume) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box of vol's field (voxel edges) in ref's continuous index coordinates (i, j, k)."""
    k, j, i = vol.shape
    corners = np.array([[a, b, c] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
    idx = ref.patient_to_index(vol.index_to_patient(corners))
    return idx.min(axis=0), idx.max(axis=0)


def target_grid(ct: Volume, pet: Volume, scale: int, hr_spacing_mm: float | None = None) -> TargetGrid:
    """The HR grid (see module doc): PET orientation, PET slices, whole PET voxels covered by the CT."""
    si, sj, _ = pet.spacing_mm
    k_n, j_n, i_n = pet.shape
    lo, hi = _field_in_index(ct, pet)
    lo = np.maximum(lo, [-0.5, -0.5, -0.5])
    hi = np.minimum(hi, [i_n - 0.5, j_n - 0.5, k_n - 0.5])
    lo_e = np.ceil(lo[:2] + 0.5 - 1e-6) - 0.5  # snap to whole PET voxels in-plane
    hi_e = np.floor(hi[:2] + 0.5 + 1e-6) - 0.5
    k0, k1 = int(np.ceil(lo[2] - 1e-6)), int(np.floor(hi[2] + 1e-6))  # PET slices whose centre the CT covers
    h = float(hr_spacing_mm) if hr_spacing_mm else None
    lr_sp = np.array([h * scale, h * scale]) if h else np.array([si, sj])
    width = (hi_e - lo_e) * np.array([si, sj])  # mm along the PET's i and j axes
    n_lr = np.floor(width / lr_sp + 1e-6).astype(int)
    if np.any(n_lr < 1) or k1 < k0:
        raise InputError(None, "CT and PET fields of view do not overlap (not one patient position?)")
    hr_sp = lr_sp / scale
    offset = (width - n_lr * lr_sp) / 2.0  # centre the grid in the common field
    first = lo_e + (offset + hr_sp / 2.0) / np.array([si, sj])  # PET index of the first HR voxel centre
    d = pet.direction
    origin = pet.index_to_patient([first[0], first[1], float(k0)])
    hr = np.eye(4)
    hr[:3, 0], hr[:3, 1], hr[:3, 2], hr[:3, 3] = d[:, 0] * hr_sp[0], d[:, 1] * hr_sp[1], pet.affine[:3, 2], origin
    lr = hr.copy()
    lr[:3, 0], lr[:3, 1] = d[:, 0] * lr_sp[0], d[:, 1] * lr_sp[1]
    lr[:3, 3] = origin + (scale - 1) / 2.0 * (d[:, 0] * hr_sp[0] + d[:, 1] * hr_sp[1])
    shape = (k1 - k0 + 1, int(n_lr[1]) * scale, int(n_lr[0]) * scale)
    return TargetGrid(hr, shape, lr, scale)


def _array_spacing(vol: Volume) -> tuple[float, float, float]:
    si, sj, sk = vol.spacing_mm
    return sk, sj, si


def _antialias(vol: Volume, grid: TargetGrid) -> Volume:
    """Gaussian low-pass of `vol` so that resampling onto the (coarser) grid does not alias."""
    tk, tj, ti = grid.hr_spacing_mm[2], grid.hr_spacing_mm[1], grid.hr_spacing_mm[0]
    sp = _array_spacing(vol)
    fwhm = [extra_fwhm_mm(t, s) for t, s in zip((tk, tj, ti), sp)]
    if max(fwhm) <= 0:
        return vol
    return dataclasses.replace(vol, array=gaussian_blur(vol.array, sp, fwhm))


# --------------------------------------------------------------------------------------------- one study
def study_rng(cfg: ConvertConfig, key: str) -> np.random.Generator:
    """The study's own random stream: a function of (cfg.seed, study hash) only."""
    return np.random.default_rng([int(cfg.seed), int(key, 16) % (2**63)])


def prepare_study(spec: StudySpec, cfg: ConvertConfig) -> StudyResult:
    """One study -> its serialized examples (one per HR axial slice) and a summary. Pure: same inputs, same bytes."""
    ct = _read(spec.ct, "CT")
    pet = _read(spec.pet, "PT", cfg.nifti_pet_units)
    truth = _read(spec.truth, "PT", cfg.nifti_pet_units) if spec.truth else None
    if ct.units != "HU" or pet.units != "SUVbw":
        raise InputError(_where(spec.pet), f"expected CT in HU and PET in SUVbw, got {ct.units} and {pet.units}")
    for other, src in ((ct, spec.ct), (truth, spec.truth)):
        if other is None:
            continue
        f_a, f_b = other.meta.get("frame_of_reference_uid"), pet.meta.get("frame_of_reference_uid")
        if f_a and f_b and f_a != f_b and not cfg.allow_unregistered:
            raise InputError(
                _where(src),
                "its FrameOfReferenceUID differs from the PET's: the two are not registered"
                " (pass --allow_unregistered to pair them anyway)",
            )
    try:
        grid = target_grid(ct, pet, cfg.scale, cfg.hr_spacing_mm)
    except InputError as e:
        raise InputError(_where(spec.pet), e.problem) from None
    K, H, W = grid.hr_shape
    hr_ct = resample(_antialias(ct, grid), grid.hr_affine, grid.hr_shape, fill_value=-1024.0).array
    src = truth if truth is not None else pet
    hr_pet = resample(src, grid.hr_affine, grid.hr_shape, fill_value=0.0).array
    lr_fwhm, truth_fwhm, counts = study_degradation(spec, cfg)
    extra = extra_fwhm_mm(lr_fwhm, truth_fwhm) if truth is not None else cfg.no_truth_fwhm_mm
    lr_pet = degrade_pet_volume(src, grid.hr_affine, grid.hr_shape, scale=cfg.scale, fwhm_mm=extra,
                                counts_per_suv=counts, rng=study_rng(cfg, spec.key))
    lr_ct = downsample_area(hr_ct, cfg.scale)
    mask, mask_summary = _tumour_mask(spec, cfg, pet, grid)
    examples = []
    for k in range(K):
        aff = grid.hr_affine.copy()
        aff[:3, 3] = grid.hr_affine[:3, :3] @ np.array([0.0, 0.0, float(k)]) + grid.hr_affine[:3, 3]
        examples.append(
            records.serialize_example(
                hr_pet=hr_pet[k], hr_ct=hr_ct[k], lr_pet=lr_pet[k], lr_ct=lr_ct[k], scale=cfg.scale,
                study=spec.key, slice_index=k, hr_affine=aff, has_truth=truth is not None,
                hr_mask=None if mask is None else mask[k],
            )
        )
    summary = {
        "slices": K,
        "hr_shape": [H, W],
        "lr_shape": [H // cfg.scale, W // cfg.scale],
        "has_truth": truth is not None,
        "hr_spacing_mm": [round(v, 6) for v in grid.hr_spacing_mm],
        "lr_spacing_mm": [round(v, 6) for v in grid.lr_spacing_mm],
        "lesions": [{k: les[k] for k in LESION_FIELDS if k in les} for les in spec.lesions],
        **mask_summary,
    }
    if spec.world is not None:  # guided phantom world only: the default world's summary stays as it was
        summary.update(world_summary(spec.world))
        summary["degradation"] = {"lr_fwhm_mm": lr_fwhm, "truth_fwhm_mm": truth_fwhm, "counts_per_suv": counts,
                                  "source": "lesions.json scanner" if spec.world.get("scanner") else "config"}
    return StudyResult(spec.key, examples, summary)


# Lesion fields kept in the manifest: the default world's, then the guided world's (data_prep.phantom).
LESION_FIELDS = ("center_mm", "diameter_mm", "uptake_ratio", "kind",
                 "structure", "shape", "has_ct_correlate", "shift_mm", "necrotic_core_mm")
WORLD_KEYS = ("world", "ct_only", "scanner", "misregistration")  # study-level entries of a guided lesions.json


def world_summary(world: dict[str, Any]) -> dict[str, Any]:
    """The study-level entries of a guided world's lesions.json that the manifest keeps (`WORLD_KEYS`)."""
    return {k: world[k] for k in WORLD_KEYS if k in world}


def study_degradation(spec: StudySpec, cfg: ConvertConfig) -> tuple[float, float, float]:
    """(LR PET FWHM mm, truth FWHM mm, counts per LR voxel per SUV) of one study's degradation.

    The guided world's lesions.json `scanner` (psf_fwhm_mm, truth_fwhm_mm, counts_per_suv: the study's own
    scanner) overrides the config's lr_fwhm_mm / truth_fwhm_mm / counts_per_suv, entry by entry.
    """
    sc = (spec.world or {}).get("scanner") or {}
    return (float(sc.get("psf_fwhm_mm", cfg.lr_fwhm_mm)), float(sc.get("truth_fwhm_mm", cfg.truth_fwhm_mm)),
            float(sc.get("counts_per_suv", cfg.counts_per_suv)))


def _tumour_mask(spec: StudySpec, cfg: ConvertConfig, pet: Volume,
                 grid: TargetGrid) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The study's tumour mask on the HR grid (uint8 (K, H, W)) and its summary fields; (None, no mask) without."""
    from ctpet_srgan import rtstruct

    if not spec.rtstruct:
        return None, {"has_mask": False, "tumour_volume_ml": None, "contour_volume_ml": None}
    roi = rtstruct.select_roi(rtstruct.read_rois(spec.rtstruct), cfg.roi_pattern, where=spec.rtstruct)
    f_pet = pet.meta.get("frame_of_reference_uid")
    if roi.frame_of_reference_uid and f_pet and roi.frame_of_reference_uid != f_pet and not cfg.allow_unregistered:
        raise InputError(spec.rtstruct, "the contour's ReferencedFrameOfReferenceUID differs from the PET's")
    mask, _ = rtstruct.rasterize(roi, grid.hr_affine, grid.hr_shape)
    voxel_ml = float(np.prod(grid.hr_spacing_mm)) / 1000.0
    n_planes = len({round(float(p[:, 2].mean()), 2) for p in roi.polygons})
    contour_ml = rtstruct.contour_volume_ml(roi, None if n_planes > 1 else grid.hr_spacing_mm[2])
    tumour_ml = float(mask.sum()) * voxel_ml
    if contour_ml > 0 and abs(tumour_ml - contour_ml) > 0.2 * contour_ml:
        _log.warning("study %s: rasterised tumour %.2f mL vs contour %.2f mL (contour partly outside the grid?)",
                    spec.key, tumour_ml, contour_ml)
    return mask, {"has_mask": True, "tumour_volume_ml": round(tumour_ml, 4), "contour_volume_ml": round(contour_ml, 4)}


# --------------------------------------------------------------------------------------------- discovery
def _load_lesions(path: Path) -> tuple[dict[str, Any], ...]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a readable lesions JSON file ({e})") from None
    if isinstance(data, dict):
        data = data.get("lesions", [])
    if not isinstance(data, list) or not all(isinstance(d, dict) and "center_mm" in d for d in data):
        raise InputError(path, "expected a list of {center_mm, diameter_mm, uptake_ratio}")
    return tuple(data)


def _load_world(path: Path) -> dict[str, Any] | None:
    """The study-level entries (`WORLD_KEYS`) of a guided world's lesions.json; None for a plain lesion list."""
    data = json.loads(path.read_text())  # _load_lesions has already checked it reads
    if not isinstance(data, dict) or not any(k in data for k in WORLD_KEYS if k != "world"):
        return None
    sc = data.get("scanner") or {}
    if not isinstance(sc, dict) or not all(isinstance(sc.get(k, 1.0), (int, float)) and sc.get(k, 1.0) >= 0
                                           for k in ("psf_fwhm_mm", "truth_fwhm_mm", "counts_per_suv")):
        raise InputError(path, "scanner must be {psf_fwhm_mm, truth_fwhm_mm, counts_per_suv} (numbers >= 0)")
    return world_summary(data)


def _find_lesions_file(files: Sequence[str], root: Path) -> Path | None:
    """lesions.json in the nearest common ancestor folder of the study's files (not above root)."""
    common = Path(os.path.commonpath([str(Path(f).parent) for f in files]))
    root = root.resolve()
    p = common.resolve()
    while True:
        if (p / "lesions.json").is_file():
            return p / "lesions.json"
        if p == root or root not in p.parents:
            return None
        p = p.parent


def _uid_of(src: PathLike) -> str:
    """Key material of a single study given by path: the StudyInstanceUID of a DICOM, else the NIfTI's path."""
    import pydicom

    from ctpet_srgan import dicom_io

    p = Path(src)
    if not p.exists():
        raise InputError(p, "does not exist")
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if dicom_io.has_dicom_magic(f) or f.suffix.lower() == ".dcm":
            try:
                ds = pydicom.dcmread(str(f), stop_before_pixels=True, specific_tags=["StudyInstanceUID"])
            except Exception:  # noqa: BLE001 - the reader reports the bad file properly later
                continue
            if ds.get("StudyInstanceUID"):
                return str(ds.StudyInstanceUID)
    return "path:" + str(p.resolve())


def single_study(ct: PathLike, pet: PathLike, truth: PathLike | None = None,
                 lesions: PathLike | None = None, rtstruct: PathLike | None = None) -> StudySpec:
    """A StudySpec for one CT + PET (+ optional truth PET, lesions.json, RTSTRUCT with the tumour) given by path."""
    if rtstruct and not Path(rtstruct).is_file():
        raise InputError(rtstruct, "does not exist (expected an RTSTRUCT file)")
    return StudySpec(
        key=records.study_hash(_uid_of(pet)),
        ct=str(ct),
        pet=str(pet),
        truth=str(truth) if truth else None,
        lesions=_load_lesions(Path(lesions)) if lesions else (),
        rtstruct=str(rtstruct) if rtstruct else None,
        world=_load_world(Path(lesions)) if lesions else None,
    )


def _pick_rtstruct(rts: list[dict[str, Any]], pet: dict[str, Any], ct: dict[str, Any]) -> str | None:
    """The study's RTSTRUCT for the tumour mask: one drawn on the PET series, else on the CT, else any in the PET's
    frame of reference (ties: the first file in path order)."""
    files = sorted(f for r in rts if r["frame_of_reference_uid"] in ("", pet["frame_of_reference_uid"])
                   for f in r["files"])
    if not files:
        return None
    from ctpet_srgan.dicom_io import rtstruct_referenced_series

    known = {f: uids for r in rts for f, uids in r.get("referenced_series", {}).items()}  # read by the scan
    refs = {f: set(known[f] if f in known else rtstruct_referenced_series(f)) for f in files}
    return min(files, key=lambda f: (pet["series_uid"] not in refs[f], ct["series_uid"] not in refs[f], f))


def median_pet_spacing(specs: Sequence[StudySpec]) -> float:
    """Median over the studies of the PET's in-plane voxel size (mean of its column and row spacing), mm.

    Reads DICOM headers only (the first file of each PET series); other sources are read whole.
    """
    import pydicom

    vals = []
    for s in specs:
        if isinstance(s.pet, (tuple, list)):
            ds = pydicom.dcmread(s.pet[0], stop_before_pixels=True, specific_tags=["PixelSpacing"])
            if "PixelSpacing" not in ds:
                raise InputError(s.pet[0], "no PixelSpacing (0028,0030)")
            vals.append(float(np.mean([float(v) for v in ds.PixelSpacing])))
        else:
            vals.append(float(np.mean(_read(s.pet, "PT").spacing_mm[:2])))
    if not vals:
        raise ValueError("median_pet_spacing: no studies")
    return float(np.median(vals))


def with_median_pet_spacing(cfg: ConvertConfig, specs: Sequence[StudySpec],
                            log: Callable[[str], None] = print) -> ConvertConfig:
    """`cfg` with hr_spacing_mm the median PET in-plane spacing (mm) of `specs` (`median_pet_spacing`), logged."""
    hr = median_pet_spacing(specs)
    log(f"HR in-plane spacing: {hr:g} mm, the median PET in-plane spacing of {len(specs)} studies")
    return dataclasses.replace(cfg, hr_spacing_mm=hr)


def discover_studies(root: PathLike, *, allow_unregistered: bool = False,
                     log: Callable[[str], None] = print, map_fn=map) -> list[StudySpec]:
    """Pairs CT and PET series under `root` by StudyInstanceUID and FrameOfReferenceUID (DICOM headers only).

    A PET series whose SeriesDescription starts with "HR PET truth" is the study's truth PET. An RTSTRUCT in the
    study (modality RTSTRUCT, the PET's frame of reference) gives the tumour mask; with several, the one that
    references the PET series is preferred, then the CT's. Studies without a CT or a PET are skipped (reported by
    hash). CT and PET in different frames of reference are refused unless `allow_unregistered`. `map_fn` scans
    the folders' headers (a process pool's map: the workers do it); the studies found do not depend on it.
    """
    from ctpet_srgan.dicom_io import scan_dicom_tree

    by_study: dict[str, list[dict[str, Any]]] = {}
    for s in scan_dicom_tree(root, map_fn=map_fn):
        by_study.setdefault(s["study_uid"], []).append(s)
    specs = [pair_study(series, root, allow_unregistered=allow_unregistered, log=log)
             for _, series in sorted(by_study.items())]
    return [s for s in specs if s is not None]


def pair_study(series: Sequence[dict[str, Any]], root: PathLike, *, allow_unregistered: bool = False,
               log: Callable[[str], None] = print) -> StudySpec | None:
    """One study's StudySpec from its series (`dicom_io.merge_series` order; see discover_studies); None when it
    lacks a CT or a PET (logged by hash). Reads only its lesions.json and RTSTRUCT headers."""
    root = Path(root)
    key = records.study_hash(series[0]["study_uid"])
    cts = [s for s in series if s["modality"] == "CT"]
    pts = [s for s in series if s["modality"] == "PT"]
    truths = [s for s in pts if s["series_description"].startswith(TRUTH_PREFIX)]
    pets = [s for s in pts if s not in truths]
    if not cts or not pets:
        log(f"study {key}: skipped (needs a CT and a PET series; has {len(cts)} CT, {len(pets)} PET)")
        return None
    biggest = lambda ss: max(ss, key=lambda s: (s["n_files"], -(s["series_number"] or 0)))  # noqa: E731
    pet = biggest(pets)
    if len(pets) > 1:
        log(f"study {key}: {len(pets)} PET series; using the one with the most slices")
    same = [c for c in cts if c["frame_of_reference_uid"] == pet["frame_of_reference_uid"]]
    if not same and not allow_unregistered:
        raise InputError(
            Path(cts[0]["files"][0]).parent,
            f"study {key}: no CT series shares the PET's FrameOfReferenceUID (not registered);"
            " pass --allow_unregistered to pair them anyway",
        )
    ct = biggest(same or cts)
    tr = [t for t in truths if t["frame_of_reference_uid"] == pet["frame_of_reference_uid"]]
    truth = biggest(tr) if tr else None
    files = ct["files"] + pet["files"] + (truth["files"] if truth else [])
    rts = _pick_rtstruct([s for s in series if s["modality"] == "RTSTRUCT"], pet, ct)
    les_file = _find_lesions_file(files, root)
    return StudySpec(
        key=key, ct=tuple(ct["files"]), pet=tuple(pet["files"]),
        truth=tuple(truth["files"]) if truth else None, lesions=_load_lesions(les_file) if les_file else (),
        rtstruct=rts, world=_load_world(les_file) if les_file else None,
    )


@dataclasses.dataclass(frozen=True)
class StudyTree:
    """A DICOM tree to convert whose headers the WORKERS scan (convert / convert_beam): the driver only lists its
    folders (`dicom_folders`, no file opened); the studies are those discover_studies(root) finds."""

    root: str
    allow_unregistered: bool = False

    def __post_init__(self):
        if not Path(self.root).is_dir():
            raise InputError(self.root, "is not a folder")

    def nothing_found(self) -> InputError:
        return InputError(self.root, "no study with both a CT and a PET series was found")


# --------------------------------------------------------------------------------------------- driver
def assign_splits(keys: Sequence[str], val_fraction: float = 0.1, test_fraction: float = 0.1,
                  seed: int | None = None, log: Callable[[str], None] = print) -> dict[str, str]:
    """study hash -> split, by study (patient); deterministic.

    Args:
        keys: study hashes. val_fraction, test_fraction: shares of the studies (rounded to whole studies).
        seed: None: the order of the sorted (salted) hashes; an int: a numpy permutation of them seeded by it.
    Returns:
        hash -> "train" | "val" | "test". A positive fraction gets at least one study; a zero fraction gets none.
        While the fractions sum to less than 1, train keeps at least one study (test gives way first, then val);
        fractions summing to 1 may leave train empty. Every empty split is warned about, never silently refilled.
    """
    if not (0 <= val_fraction <= 1 and 0 <= test_fraction <= 1) or val_fraction + test_fraction > 1 + 1e-9:
        raise ValueError(f"split fractions must be in [0, 1] and sum to <= 1 (val {val_fraction},"
                         f" test {test_fraction})")
    keys = sorted(set(keys))
    if seed is not None:
        keys = [keys[i] for i in np.random.default_rng(int(seed)).permutation(len(keys))]
    n = len(keys)
    n_test = max(int(round(n * test_fraction)), 1 if test_fraction > 0 else 0)
    n_val = max(int(round(n * val_fraction)), 1 if val_fraction > 0 else 0)
    keep_train = 1 if val_fraction + test_fraction < 1 - 1e-9 else 0
    while n_test + n_val > n - keep_train and n_test + n_val > 0:
        if n_test >= n_val and n_test > 0:
            n_test -= 1
        else:
            n_val -= 1
    out = {}
    for i, k in enumerate(keys):
        out[k] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    for split in records.SPLITS:
        if n and split not in out.values():
            log(f"warning: the {split} split is empty ({n} studies, val_fraction {val_fraction},"
                f" test_fraction {test_fraction})")
    return out


def _masked_crc32c(data: bytes) -> int:
    import google_crc32c

    c = google_crc32c.value(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def write_tfrecord(path: PathLike, examples, compression: str = "") -> None:
    """A TFRecord file (compression "" or "GZIP"), written atomically (temp + fsync + rename).

    Without TensorFlow when google-crc32c is installed (requirements.txt): importing TensorFlow costs a driver or a
    worker seconds for nothing else. Uncompressed, the bytes are TensorFlow's (the format is fixed: length, masked
    crc32c, data, masked crc32c); GZIP: the same records in a gzip stream of Python's (header mtime 0). Without
    google-crc32c, TensorFlow's writer."""
    try:
        import google_crc32c  # noqa: F401
    except ImportError:
        import tensorflow as tf

        with atomic_path(path) as tmp:
            with tf.io.TFRecordWriter(str(tmp), tf.io.TFRecordOptions(compression_type=compression)) as w:
                for ex in examples:
                    w.write(ex)
        return
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        f = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) if compression == "GZIP" else raw
        for ex in examples:
            head = len(ex).to_bytes(8, "little")
            f.write(head + _masked_crc32c(head).to_bytes(4, "little") + ex + _masked_crc32c(ex).to_bytes(4, "little"))
        if f is not raw:
            f.close()  # the gzip trailer; leaves `raw` open
        raw.flush()
        os.fsync(raw.fileno())


# A study's finished examples in OUT/.work/<hash>.examples: each record is its length (8 bytes, little-endian)
# then its bytes. Internal to a run (the shards are TFRecords); plain Python so that workers write their own
# results without TensorFlow and without sending them back through the process pool.
def _write_examples(path: Path, examples: Sequence[bytes]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for ex in examples:
            f.write(len(ex).to_bytes(8, "little"))
            f.write(ex)


def _read_examples(path: Path):
    with open(path, "rb") as f:
        while head := f.read(8):
            n = int.from_bytes(head, "little")
            ex = f.read(n)
            if len(head) != 8 or len(ex) != n:
                raise InputError(path, "truncated work file; rerun with --overwrite")
            yield ex


_DONE = ".examples"  # a study's finished work file; its presence marks the study done


def _done_marker(work: Path, key: str) -> Path:
    return work / f"{key}{_DONE}"


def prepared_studies(out_dir: PathLike) -> list[str]:
    """Hashes of the studies an unfinished run in OUT_DIR has already prepared (what a rerun will skip)."""
    work = Path(out_dir) / WORK
    return sorted(p.stem for p in work.glob(f"*{_DONE}")) if work.is_dir() else []


def save_prepared(res: StudyResult, work: Path) -> None:
    """A prepared study's summary and examples into `work` (summary first: the examples file marks it done)."""
    write_json_atomic(work / f"{res.study_hash}.json", res.summary)
    _write_examples(_done_marker(work, res.study_hash), res.examples)


def _prepare_and_save(spec: StudySpec, cfg: ConvertConfig, work: Path) -> None:
    """prepare_study, then save_prepared (in the worker: the examples never go back through the pool)."""
    save_prepared(prepare_study(spec, cfg), work)


def load_prepared(work: Path, key: str) -> StudyResult | None:
    """The study an earlier (interrupted) run of either runner prepared into `work`; None when it did not."""
    marker = _done_marker(work, key)
    if not marker.exists():
        return None
    return StudyResult(key, list(_read_examples(marker)), json.loads((work / f"{key}.json").read_text()))


def start_run(out: Path, cfg: ConvertConfig, compression: str, shard_size: int, val_fraction: float,
              test_fraction: float, split_seed: int | None) -> Path:
    """OUT/.work of a run (either runner): created, stale temporaries removed, settings.json written once; an
    unfinished run with other settings is refused (its prepared studies would not fit the new ones)."""
    fingerprint = {k: v for k, v in cfg.to_dict().items() if k != "allow_unregistered"}  # output-neutral
    settings = {"config": fingerprint, "compression": compression, "shard_size": shard_size,
                "val_fraction": val_fraction, "test_fraction": test_fraction}
    if split_seed is not None:
        settings["split_seed"] = int(split_seed)
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    for d in (out, work):  # temporary files of a run that was killed mid-write
        for p in d.glob(".*.tmp"):
            p.unlink(missing_ok=True)
    if not write_json_once(work / "settings.json", settings):
        raise ValueError(f"{out}: an earlier unfinished run used other settings; rerun them or pass --overwrite")
    return work


# Libraries whose thread pools or state do not survive a fork: with any of them loaded the workers are spawned.
FORK_UNSAFE = ("tensorflow", "keras", "torch", "SimpleITK", "cv2")


def pool_start_method() -> str:
    """How the local pool starts its workers: "fork" on Linux while this process has loaded none of FORK_UNSAFE
    (the CLI's driver: numpy and pydicom only), which saves each worker its imports (~0.5 s); else "spawn"."""
    if sys.platform.startswith("linux") and not any(m in sys.modules for m in FORK_UNSAFE):
        return "fork"
    return "spawn"


def _pool_map(pool: cf.Executor, workers: int):
    """A map over `pool` for the header scan: a few folders per task (sent in order, results in order)."""
    def map_fn(fn, folders):
        folders = list(folders)
        return pool.map(fn, folders, chunksize=max(1, len(folders) // (4 * workers)))
    return map_fn


def convert(
    specs: Sequence[StudySpec] | StudyTree,
    out_dir: PathLike,
    cfg: ConvertConfig = ConvertConfig(),
    *,
    workers: int = 1,
    shard_size: int = 256,
    compression: str = "",
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    split_seed: int | None = None,
    strict: bool = False,
    overwrite: bool = False,
    median_pet: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Prepares `specs` into OUT_DIR (resumable; manifest.json last) and returns the manifest.

    `median_pet`: the HR in-plane spacing is the median PET in-plane spacing of the studies found
    (`median_pet_spacing`, after the workers' scan; cfg.hr_spacing_mm is ignored).

    `specs` may be a StudyTree: then the worker processes scan its DICOM headers (discover_studies with the pool's
    map), the driver pairs the series, and the same pool prepares the studies; the set equals that of
    discover_studies(root) given as specs. A study that fails is logged with its hash and skipped (the manifest
    lists it under `skipped`, by hash and problem, without paths). When every study fails, or any fails with
    `strict`, no manifest is written and InputError is raised: fix the input and rerun to resume (the prepared
    studies are kept).
    """
    out = Path(out_dir)
    compression = {"none": "", "": "", "gzip": "GZIP"}.get(str(compression).lower(), None)
    if compression is None:
        raise ValueError("compression must be GZIP or none")
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    manifest_path = out / records.MANIFEST
    if overwrite:
        _clear(out)
    elif manifest_path.exists():
        log(f"{out}: already complete (manifest.json present); nothing to do (use --overwrite to redo)")
        return records.read_manifest(out)
    with contextlib.ExitStack() as stack:
        pool = None
        if workers > 1 and (isinstance(specs, StudyTree) or len(specs) > 1):
            ctx = multiprocessing.get_context(pool_start_method())
            pool = stack.enter_context(cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx))
        if isinstance(specs, StudyTree):
            tree = specs
            specs = discover_studies(tree.root, allow_unregistered=tree.allow_unregistered, log=log,
                                     map_fn=_pool_map(pool, workers) if pool else map)
            if not specs:
                raise tree.nothing_found()
        if median_pet:
            cfg = with_median_pet_spacing(cfg, specs, log)
        return _convert_specs(specs, out, cfg, pool, compression=compression, shard_size=shard_size,
                              val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed,
                              strict=strict, log=log)


def _convert_specs(specs: Sequence[StudySpec], out: Path, cfg: ConvertConfig, pool, *, compression: str,
                   shard_size: int, val_fraction: float, test_fraction: float, split_seed: int | None,
                   strict: bool, log) -> dict[str, Any]:
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("the same study is listed twice")
    if not specs:
        raise ValueError("no studies to convert")
    work = start_run(out, cfg, compression, shard_size, val_fraction, test_fraction, split_seed)
    todo = [s for s in specs if not _done_marker(work, s.key).exists()]
    if len(todo) < len(specs):
        log(f"resuming: {len(specs) - len(todo)} of {len(specs)} studies already prepared")
    failures, skipped = [], []

    def failed(s: StudySpec, e: Exception) -> None:
        failures.append(f"study {s.key}: {e}")
        skipped.append({"study": s.key, "problem": e.problem if isinstance(e, InputError) else str(e)})
        log(f"study {s.key}: FAILED: {e}")

    if pool is None or len(todo) <= 1:
        for s in todo:
            try:
                _prepare_and_save(s, cfg, work)
                log(f"study {s.key}: done")
            except Exception as e:  # noqa: BLE001 - reported below, other studies are kept
                failed(s, e)
    else:  # largest studies first (longest-processing-time order), so the workers finish together
        futs = {pool.submit(_prepare_and_save, s, cfg, work): s for s in sorted(todo, key=study_bytes, reverse=True)}
        for fut in cf.as_completed(futs):
            s = futs[fut]
            try:
                fut.result()
                log(f"study {s.key}: done")
            except Exception as e:  # noqa: BLE001 - reported below, other studies are kept
                failed(s, e)
    if failures and (strict or len(failures) == len(specs)):
        raise InputError(out, f"{len(failures)} of {len(specs)} studies failed, no manifest written"
                              f" (fix them and rerun to resume): " + "; ".join(failures))
    if failures:
        log(f"warning: {len(failures)} of {len(specs)} studies skipped (see the manifest's 'skipped'): "
            + ", ".join(sorted(x["study"] for x in skipped)))
    bad = {x["study"] for x in skipped}
    return _finish(out, sorted(k for k in keys if k not in bad), cfg, compression, shard_size, val_fraction,
                   test_fraction, log, split_seed=split_seed, skipped=sorted(skipped, key=lambda x: x["study"]))


def study_bytes(spec: StudySpec) -> int:
    """Bytes of a study's image files (CT, PET, truth): the pool's estimate of its preparation time (decoding
    dominates it, and compressed CT costs by its bytes). A file that cannot be stat'ed counts 0 (its preparation
    reports it)."""
    total = 0
    for src in (spec.ct, spec.pet, spec.truth):
        for f in (src if isinstance(src, (tuple, list)) else [src] if src else []):
            try:
                total += os.path.getsize(f)
            except OSError:
                pass
    return total


def _clear(out: Path) -> None:
    (out / records.MANIFEST).unlink(missing_ok=True)
    if out.is_dir():
        for p in out.iterdir():
            if SHARD_RE.match(p.name):
                p.unlink()
    shutil.rmtree(out / WORK, ignore_errors=True)


def shard_layout(keys: Sequence[str], slices: dict[str, int], split_of: dict[str, str], shard_size: int,
                 compression: str) -> dict[str, dict[str, Any]]:
    """The final shards of a set (the same for every runner): split -> {studies, examples, shards}.

    Args:
        keys: the prepared studies' hashes; slices: study hash -> its number of examples; split_of: hash -> split.
    Returns:
        Per split: its studies (sorted), its example count and its shards, `{"file": name, "examples": n}` in
        order; shard i holds that split's examples i*shard_size.. in (study hash, slice index) order.
    """
    suffix = ".tfrecord.gz" if compression == "GZIP" else ".tfrecord"
    splits = {}
    for split in records.SPLITS:
        studies = sorted(k for k in keys if split_of[k] == split)
        total = sum(slices[k] for k in studies)
        n_shards = math.ceil(total / shard_size)
        shards = [{"file": f"{split}-{i:05d}-of-{n_shards:05d}{suffix}",
                   "examples": min(shard_size, total - i * shard_size)} for i in range(n_shards)]
        splits[split] = {"studies": studies, "examples": total, "shards": shards}
    return splits


def build_manifest(keys: Sequence[str], summaries: dict[str, dict[str, Any]], split_of: dict[str, str],
                   splits: dict[str, dict[str, Any]], cfg: ConvertConfig, compression: str, shard_size: int,
                   val_fraction: float, test_fraction: float, log, split_seed: int | None = None,
                   skipped: Sequence[dict[str, str]] = ()) -> Manifest:
    """manifest.json of a finished set from the per-study summaries and the shard layout (any runner), checked.

    split_seed: the seed of assign_splits (None: sorted-hash order); skipped: {study, problem} of studies left out.
    """
    keys = sorted(keys)
    first = summaries[keys[0]]
    if len({tuple(round(v, 3) for v in summaries[k]["hr_spacing_mm"]) for k in keys}) > 1:  # to 1 um
        log("warning: studies have different HR voxel sizes (see studies[*].hr_spacing_mm); the manifest's"
            " hr_spacing_mm is the first study's; pass --hr_spacing_mm (a number, or median_pet) to make them equal")
    return Manifest.from_dict({
        "schema_version": records.SCHEMA_VERSION,
        "scale": cfg.scale,
        "hr_spacing_mm": first["hr_spacing_mm"],
        "lr_spacing_mm": first["lr_spacing_mm"],
        "normalization": cfg.normalization.to_dict(),
        "degradation": cfg.degradation(),
        "compression": compression,
        "shard_size": shard_size,
        "split_fractions": {"val": val_fraction, "test": test_fraction},
        "split_seed": split_seed,
        "examples": sum(s["examples"] for s in splits.values()),
        "splits": splits,
        "studies": {k: {"split": split_of[k], **summaries[k]} for k in keys},
        "skipped": list(skipped),
    })


def _finish(out: Path, keys: list[str], cfg: ConvertConfig, compression: str, shard_size: int,
            val_fraction: float, test_fraction: float, log, split_seed: int | None = None,
            skipped: Sequence[dict[str, str]] = ()) -> dict[str, Any]:
    work = out / WORK
    summaries = {k: json.loads((work / f"{k}.json").read_text()) for k in keys}
    split_of = assign_splits(keys, val_fraction, test_fraction, split_seed, log)
    splits = shard_layout(keys, {k: s["slices"] for k, s in summaries.items()}, split_of, shard_size, compression)
    written = set()
    for split in records.SPLITS:
        stream = (ex for k in splits[split]["studies"] for ex in _read_examples(_done_marker(work, k)))
        for shard in splits[split]["shards"]:
            batch = [next(stream) for _ in range(shard["examples"])]
            write_tfrecord(out / shard["file"], batch, compression)
            written.add(shard["file"])
        if next(stream, None) is not None:
            raise RuntimeError(f"{work}: more records than the summaries say; rerun with --overwrite")
    for p in out.iterdir():  # shards of an earlier interrupted run with other counts
        if SHARD_RE.match(p.name) and p.name not in written:
            p.unlink()
    manifest = build_manifest(keys, summaries, split_of, splits, cfg, compression, shard_size, val_fraction,
                              test_fraction, log, split_seed=split_seed, skipped=skipped)
    manifest.save(out)
    shutil.rmtree(work, ignore_errors=True)
    log(f"{out}: {manifest.examples} slices from {len(keys)} studies; "
        + ", ".join(f"{s} {splits[s]['examples']} ({len(splits[s]['studies'])} studies)" for s in records.SPLITS))
    return manifest.to_dict()
