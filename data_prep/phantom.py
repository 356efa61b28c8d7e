"""Synthetic PET/CT studies written as real DICOM series, with known ground truth.

Each case is built on a fine "model grid" (default 1 mm isotropic) in patient coordinates (LPS mm):
labelled anatomy (body outline, fat, soft tissue, lungs, liver, heart, aorta, spine; or a pelvis with
bladder and hip bones; or a head with skull and brain; or a NEMA IEC-like body phantom with its six
spheres and lung insert) plus hot spherical lesions. Every label has a CT number (HU) and an uptake
(SUVbw). From that model:

- CT: HU block-averaged to `ct_spacing_mm` in-plane x `ct_slice_mm` thick, plus a little noise.
- HR PET truth: SUV seen by a ~`truth_fwhm_mm` (2 mm) system on a `truth_spacing_mm` grid, noise-free.
- clinical PET: SUV blurred to `pet_fwhm_mm` (6 mm FWHM), on a `pet_spacing_mm` (4 mm) grid, with
  count-dependent (Poisson) noise.

PET is written in Bq/mL (Units BQML, DecayCorrection START) with C = SUV * dose_at_scan_start / weight_g,
so a correct SUVbw reader gives the SUV back. One case folder holds:
  ct/        CT Image Storage series,
  pet/       PET Image Storage series (the clinical PET),
  pet_truth/ PET Image Storage series whose SeriesDescription starts with "HR PET truth" (the convention
             `data_prep.convert` uses to recognise a ground-truth PET),
  lesions.json  [{center_mm [x, y, z] LPS, diameter_mm, uptake_ratio, kind, host}].
All three series share one FrameOfReferenceUID; each case has its own StudyInstanceUID (deterministic
from the seed). Case folders appear atomically (written under a temporary name, then renamed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from ctpet_srgan.atomic import write_json_once
from ctpet_srgan.degradation import add_count_noise, downsample_area, extra_fwhm_mm, gaussian_blur
from ctpet_srgan.dicom_write import PetInfo, StudyInfo, write_series
from ctpet_srgan.geometry import Volume, axial_affine

TRUTH_DESCRIPTION = "HR PET truth"  # SeriesDescription prefix of the ground-truth PET series
F18_HALF_LIFE_S = 6586.2
NEMA_SPHERES_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
NEMA_RATIO = 4.0
NEMA_SPHERE_RING_MM = 57.2


@dataclasses.dataclass(frozen=True)
class PhantomConfig:
    """Sizes in mm. Every spacing must be a whole multiple of `model_mm`; fov_mm a multiple of pet_spacing_mm;
    pet_spacing_mm a multiple of truth_spacing_mm."""

    fov_mm: float = 256.0  # square transaxial field of CT and PET
    pet_slices: int = 24  # axial extent = pet_slices * pet_spacing_mm
    pet_spacing_mm: float = 4.0
    truth_spacing_mm: float = 2.0
    ct_spacing_mm: float = 1.0
    ct_slice_mm: float = 2.0
    model_mm: float = 1.0
    pet_fwhm_mm: float = 6.0
    truth_fwhm_mm: float = 2.0
    counts_per_suv: float = 40.0  # detected counts per clinical PET voxel per unit SUV
    ct_noise_hu: float = 8.0
    transfer_syntax: str = ExplicitVRLittleEndian

    def block(self, spacing_mm: float) -> int:
        b = spacing_mm / self.model_mm
        if abs(b - round(b)) > 1e-6 or round(b) < 1:
            raise ValueError(f"spacing {spacing_mm} mm is not a whole multiple of model_mm {self.model_mm}")
        return int(round(b))

    def check(self) -> None:
        for sp in (self.pet_spacing_mm, self.truth_spacing_mm, self.ct_spacing_mm, self.ct_slice_mm):
            self.block(sp)
        n = self.fov_mm / self.pet_spacing_mm
        if abs(n - round(n)) > 1e-6 or n < 4:
            raise ValueError(f"fov_mm {self.fov_mm} must be a multiple (>= 4x) of pet_spacing_mm {self.pet_spacing_mm}")
        if self.pet_spacing_mm % self.truth_spacing_mm:
            raise ValueError("pet_spacing_mm must be a multiple of truth_spacing_mm")
        if self.pet_slices < 2:
            raise ValueError("pet_slices must be >= 2")


@dataclasses.dataclass
class PhantomCase:
    """One synthetic study in memory: volumes in HU / SUVbw with LPS affines, plus acquisition metadata."""

    case_index: int
    variant: str  # "thorax", "pelvis", "head", "nema"
    ct: Volume  # HU
    pet: Volume  # SUVbw, clinical (noisy, pet_fwhm_mm)
    truth: Volume  # SUVbw, noise-free, truth_fwhm_mm
    lesions: list[dict[str, Any]]
    study: StudyInfo
    pet_info: PetInfo
    bqml_per_suv: float  # Bq/mL of one SUV at the scan start


# ----------------------------------------------------------------------------------------- shapes
class _Grid:
    """Voxel-centre coordinates (mm) of the model grid along x (i), y (j), z (k)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray):
        self.x, self.y, self.z = (np.asarray(v, np.float32) for v in (x, y, z))

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.z), len(self.y), len(self.x)

    def ellipsoid(self, c, r) -> np.ndarray:
        return (
            ((self.z - c[2]) / r[2])[:, None, None] ** 2
            + ((self.y - c[1]) / r[1])[None, :, None] ** 2
            + ((self.x - c[0]) / r[0])[None, None, :] ** 2
        ) <= 1.0

    def cylinder(self, cx, cy, rx, ry, z_lo=-np.inf, z_hi=np.inf) -> np.ndarray:
        inplane = (((self.y - cy) / ry)[:, None] ** 2 + ((self.x - cx) / rx)[None, :] ** 2) <= 1.0
        inz = (self.z >= z_lo) & (self.z <= z_hi)
        return inz[:, None, None] & inplane[None, :, :]

    def d_shape(self, half_width, posterior, anterior) -> np.ndarray:
        """IEC body outline: a rectangle on the posterior side (y in [0, posterior]) and a half ellipse anteriorly."""
        y, x = self.y[:, None], self.x[None, :]
        rect = (y >= 0) & (y <= posterior) & (np.abs(x) <= half_width)
        ell = (y < 0) & ((x / half_width) ** 2 + (y / anterior) ** 2 <= 1.0)
        return np.broadcast_to((rect | ell)[None], self.shape)


_LABELS = {  # name: (HU, default SUV)
    "air": (-1000.0, 0.0),
    "fat": (-100.0, 0.4),
    "soft": (40.0, 1.0),
    "lung": (-850.0, 0.35),
    "liver": (60.0, 2.3),
    "heart": (40.0, 5.0),
    "blood": (45.0, 1.7),
    "bone": (700.0, 1.5),
    "bladder": (10.0, 15.0),
    "bowel": (20.0, 1.6),
    "skull": (1000.0, 0.6),
    "brain": (35.0, 7.5),
    "white": (28.0, 3.0),
    "csf": (5.0, 0.3),
    "water": (0.0, 1.0),
    "pmma": (120.0, 0.0),
    "lung_insert": (-800.0, 0.0),
}
_LESION_HOSTS = {
    "thorax": ("liver", "lung", "soft", "bone"),
    "pelvis": ("soft", "bone", "bowel"),
    "head": ("brain", "white"),
}


def _anatomy(variant: str, g: _Grid, fov: float, zc: float, zext: float, rng: np.random.Generator):
    """Ordered list of (label, mask) to paint, and per-label SUV overrides for this case."""
    j = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731  (per-case jitter)
    suv = {
        "liver": j(1.9, 2.6), "heart": j(3.0, 8.0), "bladder": j(8.0, 20.0), "brain": j(6.0, 9.0),
        "soft": j(0.8, 1.1), "blood": j(1.4, 2.0),
    }
    shapes = []
    if variant == "head":
        a, b = 0.30 * fov * j(0.9, 1.05), 0.37 * fov * j(0.9, 1.05)
        shapes += [("skull", g.cylinder(0, 0, a, b)), ("brain", g.cylinder(0, 0, a - 0.03 * fov, b - 0.03 * fov))]
        shapes += [("white", g.ellipsoid((0, 0, zc), (0.6 * a, 0.65 * b, 0.45 * zext)))]
        shapes += [("csf", g.ellipsoid((0.08 * a * s, -0.05 * b, zc), (0.1 * a, 0.3 * b, 0.25 * zext))) for s in (-1, 1)]
        return shapes, suv
    a, b = 0.46 * fov * j(0.92, 1.0), 0.35 * fov * j(0.92, 1.05)
    shapes += [("fat", g.cylinder(0, 0, a, b)), ("soft", g.cylinder(0, 0, a - 0.05 * fov, b - 0.05 * fov))]
    spine = ("bone", g.cylinder(0, 0.62 * b, 0.07 * fov, 0.07 * fov))
    if variant == "thorax":
        zl = zc + 0.2 * zext  # lungs in the upper part, liver in the lower part
        shapes += [("liver", g.ellipsoid((-0.35 * a, 0.0, zc - 0.35 * zext), (0.5 * a, 0.7 * b, 0.45 * zext)))]
        shapes += [("lung", g.ellipsoid((s * 0.45 * a, 0.05 * b, zl), (0.32 * a, 0.62 * b, 0.55 * zext))) for s in (-1, 1)]
        shapes += [("heart", g.ellipsoid((0.15 * a, -0.25 * b, zc), (0.3 * a, 0.42 * b, 0.3 * zext)))]
        shapes += [("blood", g.cylinder(0.1 * a, 0.35 * b, 0.05 * fov, 0.05 * fov, zc - 0.1 * zext, np.inf))]
        shapes += [spine]
    elif variant == "pelvis":
        shapes += [("bowel", g.ellipsoid((0.1 * a, -0.3 * b, zc + 0.35 * zext), (0.45 * a, 0.45 * b, 0.3 * zext)))]
        shapes += [("bladder", g.ellipsoid((0, -0.35 * b, zc - 0.1 * zext), (0.3 * a, 0.35 * b, 0.3 * zext)))]
        shapes += [("bone", g.cylinder(s * 0.72 * a, 0.1 * b, 0.1 * fov, 0.12 * fov)) for s in (-1, 1)]
        shapes += [spine]
    else:
        raise ValueError(f"unknown phantom variant {variant!r}")
    return shapes, suv


def _nema(g: _Grid, fov: float, zc: float):
    """IEC body phantom (outline and ring reduced by fov/256 when the field is smaller), background 1 SUV,
    six spheres at 4:1 in one transverse plane through zc, a cold lung insert along the axis."""
    s = min(1.0, fov / 256.0)
    shapes = [("pmma", g.d_shape(120 * s, 70 * s, 120 * s)), ("water", g.d_shape(117 * s, 67 * s, 117 * s))]
    shapes.append(("lung_insert", g.cylinder(0, 0, 25.5 * s, 25.5 * s)))
    lesions = []
    for n, d in enumerate(NEMA_SPHERES_MM):
        ang = math.radians(60.0 * n)
        c = (NEMA_SPHERE_RING_MM * s * math.cos(ang), NEMA_SPHERE_RING_MM * s * math.sin(ang), zc)
        lesions.append({"center_mm": [float(v) for v in c], "diameter_mm": d * s, "uptake_ratio": NEMA_RATIO,
                        "kind": "sphere", "host": "water"})
    return shapes, lesions


def make_phantom_case(cfg: PhantomConfig, seed: int, case_index: int, variant: str | None = None,
                      with_lesions: bool = True) -> PhantomCase:
    """Builds one case in memory (a pure function of cfg, seed, case_index, variant)."""
    cfg.check()
    rng = np.random.default_rng([int(seed), int(case_index), 20240611])
    m = cfg.model_mm
    n_xy = int(round(cfg.fov_mm / m))
    zext = cfg.pet_slices * cfg.pet_spacing_mm
    n_z = int(round(zext / m))
    x0 = y0 = -cfg.fov_mm / 2.0
    z0 = -zext / 2.0 + float(rng.integers(-40, 41)) * cfg.pet_spacing_mm  # a table offset
    zc = z0 + zext / 2.0
    g = _Grid(x0 + m * (np.arange(n_xy) + 0.5), y0 + m * (np.arange(n_xy) + 0.5), z0 + m * (np.arange(n_z) + 0.5))

    variant = variant or "thorax"
    if variant == "nema":
        shapes, lesions, suv_over = *_nema(g, cfg.fov_mm, zc), {}
    else:
        (shapes, suv_over), lesions = _anatomy(variant, g, cfg.fov_mm, zc, zext, rng), []
    names = list(_LABELS)
    label = np.zeros(g.shape, np.uint8)
    for name, mask in shapes:
        label[mask] = names.index(name)
    hu_of = np.array([_LABELS[n][0] for n in names], np.float32)
    suv_of = np.array([suv_over.get(n, _LABELS[n][1]) for n in names], np.float32)
    hu, suv = hu_of[label], suv_of[label]

    if variant != "nema" and with_lesions:
        lesions = _place_lesions(rng, g, label, names, suv_of, _LESION_HOSTS[variant], zext, z0)
    for les in lesions:  # paint lesions (spheres) on the model grid
        mask = g.ellipsoid(les["center_mm"], [les["diameter_mm"] / 2.0] * 3)
        host_suv = suv_of[names.index(les["host"])]
        suv[mask] = les["uptake_ratio"] * host_suv
        if les["host"] == "lung":
            hu[mask] = 30.0

    # CT: HU block-averaged to the CT grid, plus noise
    bct = (cfg.block(cfg.ct_slice_mm), cfg.block(cfg.ct_spacing_mm), cfg.block(cfg.ct_spacing_mm))
    ct = downsample_area(hu, bct)
    ct = ct + rng.normal(0.0, cfg.ct_noise_hu, ct.shape).astype(np.float32) if cfg.ct_noise_hu > 0 else ct
    ct_sp = (cfg.ct_spacing_mm, cfg.ct_spacing_mm, cfg.ct_slice_mm)
    # PET: SUV on the truth grid (box of truth_spacing), then the two systems' PSFs
    bt = cfg.block(cfg.truth_spacing_mm)
    act = downsample_area(suv, (bt, bt, bt))
    box_fwhm = cfg.truth_spacing_mm * math.sqrt(8 * math.log(2) / 12.0)  # FWHM of the box average
    tsp = (cfg.truth_spacing_mm,) * 3
    truth = gaussian_blur(act, tsp, extra_fwhm_mm(cfg.truth_fwhm_mm, box_fwhm), mode="nearest")
    clin = gaussian_blur(act, tsp, extra_fwhm_mm(cfg.pet_fwhm_mm, box_fwhm), mode="nearest")
    r = int(round(cfg.pet_spacing_mm / cfg.truth_spacing_mm))
    clin = add_count_noise(downsample_area(clin, (r, r, r)), cfg.counts_per_suv, rng)
    psp = (cfg.pet_spacing_mm,) * 3

    def aff(sp):
        return axial_affine((x0 + sp[0] / 2, y0 + sp[1] / 2, z0 + sp[2] / 2), sp)

    # acquisition metadata (deterministic from seed and case)
    ent = ["ctpet-srgan phantom", str(seed), str(case_index)]
    start = dt.datetime(2024, 1, 8, 8, 0) + dt.timedelta(days=case_index, minutes=int(rng.integers(0, 480)))
    inj = start - dt.timedelta(minutes=float(rng.uniform(55, 70)))
    weight = 70.0 if variant == "nema" else float(np.round(rng.uniform(55, 95), 1))
    dose = float(np.round(370e6 * rng.uniform(0.85, 1.1), -5))
    study = StudyInfo(
        study_uid=generate_uid(entropy_srcs=ent + ["study"]),
        frame_of_reference_uid=generate_uid(entropy_srcs=ent + ["frame"]),
        study_datetime=start - dt.timedelta(minutes=2),
        patient_name=f"PHANTOM^CASE{seed:04d}X{case_index:03d}",
        patient_id=f"PHID{seed:04d}X{case_index:03d}",
        patient_weight_kg=weight,
    )
    pet_info = PetInfo(injected_dose_bq=dose, half_life_s=F18_HALF_LIFE_S, injection_datetime=inj,
                       series_datetime=start, acquisition_datetime=start)
    decay = 2.0 ** (-(start - inj).total_seconds() / F18_HALF_LIFE_S)
    bqml_per_suv = dose * decay / (weight * 1000.0)
    meta = {"study_uid": study.study_uid, "frame_of_reference_uid": study.frame_of_reference_uid}
    return PhantomCase(
        case_index=case_index,
        variant=variant,
        ct=Volume(ct.astype(np.float32), aff(ct_sp), "CT", "HU", dict(meta)),
        pet=Volume(clin, aff(psp), "PT", "SUVbw", dict(meta)),
        truth=Volume(truth, aff(tsp), "PT", "SUVbw", dict(meta)),
        lesions=lesions,
        study=study,
        pet_info=pet_info,
        bqml_per_suv=bqml_per_suv,
    )


def _place_lesions(rng, g: _Grid, label, names, suv_of, hosts, zext, z0) -> list[dict[str, Any]]:
    lesions = []
    n = int(rng.integers(1, 5))
    for _ in range(n):
        host = str(rng.choice([h for h in hosts if np.any(label == names.index(h))]))
        d_lo = min(6.0, 0.3 * zext)
        d = float(np.round(rng.uniform(d_lo, max(d_lo, min(20.0, 0.4 * zext))), 1))
        kk, jj, ii = np.nonzero(label == names.index(host))
        zmask = (g.z[kk] - z0 >= d / 2 + 2) & (g.z[kk] - z0 <= zext - d / 2 - 2)
        if not np.any(zmask):
            continue
        p = int(rng.choice(np.flatnonzero(zmask)))
        ratio = float(np.round(rng.uniform(6.0, 20.0) if host == "lung" else rng.uniform(2.0, 6.0), 2))
        c = [float(g.x[ii[p]]), float(g.y[jj[p]]), float(g.z[kk[p]])]
        lesions.append({"center_mm": c, "diameter_mm": d, "uptake_ratio": ratio, "kind": "sphere", "host": host})
    return lesions


# ----------------------------------------------------------------------------------------- writing
def write_phantom_study(case: PhantomCase, out_dir: str | Path, cfg: PhantomConfig = PhantomConfig()) -> Path:
    """Writes `case` as OUT_DIR/{ct,pet,pet_truth}/*.dcm + lesions.json; the folder appears atomically."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir}: already exists")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        ent = ["ctpet-srgan phantom series", case.study.study_uid]
        write_series(case.ct, tmp / "ct", study=case.study, series_number=1, series_description="CT phantom",
                     transfer_syntax=cfg.transfer_syntax, series_uid=generate_uid(entropy_srcs=ent + ["ct"]))
        for vol, sub, num, desc in (
            (case.pet, "pet", 2, f"PET phantom ({cfg.pet_fwhm_mm:g} mm FWHM)"),
            (case.truth, "pet_truth", 3, f"{TRUTH_DESCRIPTION} ({cfg.truth_fwhm_mm:g} mm FWHM, noise-free)"),
        ):
            bq = Volume(vol.array * np.float32(case.bqml_per_suv), vol.affine, "PT", "BQML", {})
            write_series(bq, tmp / sub, study=case.study, series_number=num, series_description=desc,
                         pet=case.pet_info, transfer_syntax=cfg.transfer_syntax,
                         series_uid=generate_uid(entropy_srcs=ent + [sub]))
        (tmp / "lesions.json").write_text(json.dumps(case.lesions, indent=2) + "\n")
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def case_plan(cases: int, nema_every: int = 4) -> list[tuple[str, bool]]:
    """(variant, with_lesions) per case: case i with i % nema_every == 0 is the NEMA IEC variant (nema_every
    0: none), the case right after it is lesion-free, the others cycle thorax / pelvis / thorax / head."""
    plan, a = [], 0
    for i in range(cases):
        if nema_every and i % nema_every == 0:
            plan.append(("nema", True))
            continue
        variant = ("thorax", "pelvis", "thorax", "head")[a % 4]
        plan.append((variant, not (nema_every and i % nema_every == 1) if nema_every else a != 1))
        a += 1
    return plan


def write_phantom_studies(out_dir: str | Path, cases: int, seed: int, *, nema_every: int = 4,
                          cfg: PhantomConfig = PhantomConfig()) -> list[Path]:
    """Writes `cases` studies as OUT_DIR/case_NNN/ (see module doc) and OUT_DIR/phantom.json (the settings).
    Cases already present are kept (resume); a folder made with other settings is refused."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {"seed": int(seed), "nema_every": int(nema_every), "config": dataclasses.asdict(cfg)}
    marker = out_dir / "phantom.json"
    if not write_json_once(marker, settings):
        raise ValueError(f"{marker}: this folder holds phantoms made with other settings; use another --out")
    paths = []
    for i, (variant, with_lesions) in enumerate(case_plan(cases, nema_every)):
        path = out_dir / f"case_{i:03d}"
        if not path.exists():
            case = make_phantom_case(cfg, seed, i, variant, with_lesions)
            write_phantom_study(case, path, cfg)
        paths.append(path)
    return paths
