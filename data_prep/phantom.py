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

The default world above is the one every CT edge is a PET edge in. `PhantomConfig(world="guided")` (CLI
`--world guided`) builds a world where CT guidance can be right or wrong, on top of the same case (the default
case's random draws are kept; the guided parts draw from their own streams, so switching one part off leaves
the others unchanged):
- uptake heterogeneity: a smooth random field (relative SD `heterogeneity`) on the SUV of every tissue, its own
  field inside lesions, and necrotic (cold) cores in large lesions: PET detail the CT does not explain;
- CT-only structures (cysts, calcifications, fat planes, contrast-filled vessels): HU only, the PET is unchanged;
- lesions with and without a CT correlate, extra PET-only lesions in tissue, one of them straddling a CT boundary;
- PET/CT misregistration: the CT series is written displaced against the PET (and its truth) by a small global
  offset plus, in the thorax, a respiratory shift along y and z that peaks at the liver dome (diaphragm) and
  fades with distance along z (Gaussian, sigma `resp_sigma_mm`): CT(p + shift(p)) shows the anatomy at p;
- scanner variety: the clinical PET's PSF FWHM and count level are drawn per study from `psf_choices_mm` and
  `counts_choices`.
Its lesions.json is a dict: {world, lesions: [hot lesions], ct_only: [structures], scanner: {psf_fwhm_mm,
counts_per_suv, truth_fwhm_mm}, misregistration: {global_shift_mm, respiratory_shift_mm, ...}}; every
structure has structure, shape, center_mm (PET frame), diameter_mm, has_ct_correlate and shift_mm (where the CT
shows its centre: center_mm + shift_mm). The geometry of a record is `ctpet_srgan.guidance.inside_structure`.
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
from ctpet_srgan.guidance import inside_structure, structure_extent_mm

TRUTH_DESCRIPTION = "HR PET truth"  # SeriesDescription prefix of the ground-truth PET series
F18_HALF_LIFE_S = 6586.2
NEMA_SPHERES_MM = (10.0, 13.0, 17.0, 22.0, 28.0, 37.0)
NEMA_RATIO = 4.0
NEMA_SPHERE_RING_MM = 57.2
WORLDS = ("default", "guided")


@dataclasses.dataclass(frozen=True)
class GuidedOptions:
    """Knobs of the guided world (see the module doc). Lengths in mm; counts per clinical PET voxel per SUV."""

    heterogeneity: float = 0.15  # relative SD of the smooth uptake field in every tissue
    lesion_heterogeneity: float = 0.2  # relative SD of the field inside lesions
    texture_fwhm_mm: float = 12.0  # smoothness of both fields
    necrosis_min_mm: float = 14.0  # lesions at least this large may get a cold core
    ct_only: bool = True  # cysts, calcifications, fat planes, contrast vessels (HU only)
    pet_only_lesions: int = 2  # extra hot lesions with no CT contrast; the last one straddles a CT boundary
    ct_correlate_fraction: float = 0.5  # chance that a (non-lung) lesion has a CT correlate
    max_global_shift_mm: float = 2.0  # |global CT offset| per axis, uniform
    max_resp_shift_mm: float = 10.0  # respiratory shift at the diaphragm, uniform 0..max (thorax only)
    resp_sigma_mm: float = 25.0  # how far along z from the diaphragm the respiratory shift reaches
    global_shift_mm: tuple[float, float, float] | None = None  # fixed global offset (x, y, z) instead of random
    resp_shift_mm: tuple[float, float] | None = None  # fixed respiratory (y, z) shift at the diaphragm
    psf_choices_mm: tuple[float, ...] = (5.0, 6.0, 7.5)  # clinical PET FWHM, one drawn per study
    counts_choices: tuple[float, ...] = (15.0, 40.0, 120.0)  # clinical PET counts per voxel per SUV


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
    world: str = "default"  # "default" | "guided" (see the module doc)
    guided: GuidedOptions = GuidedOptions()

    def settings(self) -> dict[str, Any]:
        """The settings as JSON-able dict; the default world's has no world keys (its phantom.json is unchanged)."""
        d = dataclasses.asdict(self)
        if self.world == "default":
            d.pop("world"), d.pop("guided")
        return d

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
        if self.world not in WORLDS:
            raise ValueError(f"unknown phantom world {self.world!r}; expected one of {WORLDS}")


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
    world: str = "default"
    ct_only: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # guided world: CT-only structures
    scanner: dict[str, Any] = dataclasses.field(default_factory=dict)  # guided world: psf_fwhm_mm, counts_per_suv
    misregistration: dict[str, Any] = dataclasses.field(default_factory=dict)  # guided world: the CT's shift

    def lesions_json(self) -> list[dict[str, Any]] | dict[str, Any]:
        """What lesions.json holds: the lesion list (default world) or the guided world's dict (module doc)."""
        if self.world == "default":
            return self.lesions
        return {"world": self.world, "lesions": self.lesions, "ct_only": self.ct_only, "scanner": self.scanner,
                "misregistration": self.misregistration}


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
        shapes += [("csf", g.ellipsoid((0.08 * a * s, -0.05 * b, zc), (0.1 * a, 0.3 * b, 0.25 * zext)))
                   for s in (-1, 1)]
        return shapes, suv
    a, b = 0.46 * fov * j(0.92, 1.0), 0.35 * fov * j(0.92, 1.05)
    shapes += [("fat", g.cylinder(0, 0, a, b)), ("soft", g.cylinder(0, 0, a - 0.05 * fov, b - 0.05 * fov))]
    spine = ("bone", g.cylinder(0, 0.62 * b, 0.07 * fov, 0.07 * fov))
    if variant == "thorax":
        zl = zc + 0.2 * zext  # lungs in the upper part, liver in the lower part
        shapes += [("liver", g.ellipsoid((-0.35 * a, 0.0, zc - 0.35 * zext), (0.5 * a, 0.7 * b, 0.45 * zext)))]
        shapes += [("lung", g.ellipsoid((s * 0.45 * a, 0.05 * b, zl), (0.32 * a, 0.62 * b, 0.55 * zext)))
                   for s in (-1, 1)]
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


def _label_maps(g: _Grid, shapes, suv_over: dict[str, float]):
    """Paints the shapes (later ones over earlier) as labels on the model grid, and their HU and SUV.

    Returns:
        (label names, label map, SUV per label, HU map, SUV map).
    """
    names = list(_LABELS)
    label = np.zeros(g.shape, np.uint8)
    for name, mask in shapes:
        label[mask] = names.index(name)
    hu_of = np.array([_LABELS[n][0] for n in names], np.float32)
    suv_of = np.array([suv_over.get(n, _LABELS[n][1]) for n in names], np.float32)
    return names, label, suv_of, hu_of[label], suv_of[label]


def _scan(cfg: PhantomConfig, hu: np.ndarray, suv: np.ndarray, scanner: dict[str, Any], rng: np.random.Generator):
    """Images the model-grid phantom: the CT (HU block-averaged to the CT grid, plus noise), the truth PET (SUV on
    the truth grid, truth PSF) and the clinical PET (scanner PSF, PET grid, count noise).

    Args:
        hu, suv: the model grid (HU, SUV); scanner: the guided world's PSF/counts overrides ({} for none).
    Returns:
        (ct, ct spacing, truth, truth spacing, clinical PET, PET spacing); spacings (x, y, z) in mm.
    """
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
    pet_fwhm, counts = scanner.get("psf_fwhm_mm", cfg.pet_fwhm_mm), scanner.get("counts_per_suv", cfg.counts_per_suv)
    clin = gaussian_blur(act, tsp, extra_fwhm_mm(pet_fwhm, box_fwhm), mode="nearest")
    r = int(round(cfg.pet_spacing_mm / cfg.truth_spacing_mm))
    clin = add_count_noise(downsample_area(clin, (r, r, r)), counts, rng)
    psp = (cfg.pet_spacing_mm,) * 3
    return ct, ct_sp, truth, tsp, clin, psp


def _acquisition(rng: np.random.Generator, seed: int, case_index: int, variant: str):
    """The case's acquisition metadata (deterministic from seed and case).

    Returns:
        (StudyInfo, PetInfo, Bq/mL per SUV at the series time).
    """
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
    return study, pet_info, dose * decay / (weight * 1000.0)


# 62 lines: what stays is the order of the case's random draws (rng) between the steps, which are helpers.
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
    names, label, suv_of, hu, suv = _label_maps(g, shapes, suv_over)

    if variant != "nema" and with_lesions:
        lesions = _place_lesions(rng, g, label, names, suv_of, _LESION_HOSTS[variant], zext, z0)
    guided = cfg.world == "guided"
    if guided:
        gw = _GuidedWorld(cfg, g, seed, case_index, variant, label, names, zext, z0)
        lesions = gw.lesions(lesions, with_lesions)
        suv = gw.texture(suv)
    for les in lesions:  # paint lesions (spheres) on the model grid
        mask = g.ellipsoid(les["center_mm"], [les["diameter_mm"] / 2.0] * 3)
        host_suv = max(suv_of[names.index(h)] for h in les["host"].split("|"))
        suv[mask] = les["uptake_ratio"] * host_suv
        if guided:
            gw.paint_lesion(les, mask, suv, hu, host_suv)
        elif les["host"] == "lung":
            hu[mask] = 30.0
    if guided:
        hu = gw.ct_only_and_shift(hu, lesions)

    scanner = gw.scanner() if guided else {}
    ct, ct_sp, truth, tsp, clin, psp = _scan(cfg, hu, suv, scanner, rng)

    def aff(sp):
        return axial_affine((x0 + sp[0] / 2, y0 + sp[1] / 2, z0 + sp[2] / 2), sp)

    study, pet_info, bqml_per_suv = _acquisition(rng, seed, case_index, variant)
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
        world=cfg.world,
        ct_only=gw.structures if guided else [],
        scanner=scanner,
        misregistration=gw.misregistration if guided else {},
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


# ----------------------------------------------------------------------------------------- guided world
_CT_ONLY = {  # variant: (structure, host labels, how many)
    "thorax": (("cyst", ("liver",), 2), ("calcification", ("soft", "liver", "blood"), 3), ("fat_plane", ("soft",), 1),
               ("vessel", ("liver", "soft"), 1)),
    "pelvis": (("cyst", ("soft", "bowel"), 1), ("calcification", ("soft",), 3), ("fat_plane", ("soft",), 1),
               ("vessel", ("soft",), 2)),
    "head": (("cyst", ("brain",), 1), ("calcification", ("brain", "white"), 2), ("vessel", ("brain",), 1)),
}
_STREAMS = {"texture": 1, "lesions": 2, "ct_only": 3, "shift": 4, "scanner": 5, "lesion_texture": 6}


class _GuidedWorld:
    """The guided world's additions to one case (module doc). Each part draws from its own random stream."""

    def __init__(self, cfg: PhantomConfig, g: _Grid, seed: int, case_index: int, variant: str, label, names,
                 zext: float, z0: float):
        self.cfg, self.o, self.g, self.variant = cfg, cfg.guided, g, variant
        self.seed, self.case_index, self.label, self.names = seed, case_index, label, names
        self.zext, self.z0 = zext, z0
        self.structures: list[dict[str, Any]] = []
        self._masks: dict[str, np.ndarray] = {}
        self._voxels: dict[Any, tuple[np.ndarray, ...]] = {}
        self._lesion_field = None
        rng, o = self._rng("shift"), self.o
        nema = variant == "nema"
        gs = o.global_shift_mm if o.global_shift_mm is not None else (
            (0.0, 0.0, 0.0) if nema else rng.uniform(-o.max_global_shift_mm, o.max_global_shift_mm, 3))
        if o.resp_shift_mm is not None:
            ry, rz = o.resp_shift_mm
        elif variant == "thorax":
            mag, th = rng.uniform(0.0, o.max_resp_shift_mm), rng.uniform(0.0, math.pi / 3)
            ry, rz = mag * math.sin(th) * rng.choice([-1.0, 1.0]), mag * math.cos(th) * rng.choice([-1.0, 1.0])
        else:
            ry = rz = 0.0
        liver = np.flatnonzero(np.any(label == names.index("liver"), axis=(1, 2)))
        self.diaphragm_z = float(g.z[liver.max()]) if liver.size else None
        self.global_shift = [round(float(v), 2) for v in gs]
        self.resp = [0.0, round(float(ry), 2), round(float(rz), 2)] if self.diaphragm_z is not None else [0.0] * 3
        self.misregistration = {
            "global_shift_mm": self.global_shift, "respiratory_shift_mm": self.resp,
            "diaphragm_z_mm": self.diaphragm_z, "resp_sigma_mm": o.resp_sigma_mm,
            "convention": "the CT shows the PET-frame point p at p + shift(p); shift(p) = global_shift_mm + "
                          "exp(-(z - diaphragm_z_mm)^2 / (2 resp_sigma_mm^2)) * respiratory_shift_mm",
        }

    def _rng(self, part: str) -> np.random.Generator:
        return np.random.default_rng([int(self.seed), int(self.case_index), 20261201, _STREAMS[part]])

    def _u(self, z: float) -> list[float]:
        """The displacement field (x, y, z) mm of the CT slice at height z (mm): out(q) = model(q - u(q_z))."""
        w = 0.0 if self.diaphragm_z is None else math.exp(-0.5 * ((z - self.diaphragm_z) / self.o.resp_sigma_mm) ** 2)
        return [a + w * b for a, b in zip(self.global_shift, self.resp)]

    def shift_at(self, z: float) -> list[float]:
        """Where the CT shows the PET-frame point at height z (mm): the s with s = u(z + s_z), in mm."""
        s = self._u(z)
        for _ in range(20):  # a contraction: |du/dz| <= max_resp / (sigma sqrt(e)) < 1
            s = self._u(z + s[2])
        return [round(v, 2) for v in s]

    def _field(self, part: str) -> np.ndarray:
        """Smooth Gaussian random field on the model grid, mean 0, SD 1 (FWHM texture_fwhm_mm)."""
        n = self._rng(part).standard_normal(self.g.shape).astype(np.float32)
        f = gaussian_blur(n, (self.cfg.model_mm,) * 3, self.o.texture_fwhm_mm, mode="nearest")
        return (f - f.mean()) / max(float(f.std()), 1e-12)

    def _is(self, host: str) -> np.ndarray:
        """Boolean mask of one label (cached)."""
        if host not in self._masks:
            self._masks[host] = self.label == self.names.index(host)
        return self._masks[host]

    def _pick_voxel(self, rng, mask: np.ndarray | str, margin: float) -> list[float] | None:
        """Centre (mm) of a random voxel of `mask` (or of the label named so) at least `margin` from the z ends."""
        key = mask if isinstance(mask, str) else id(mask)
        if key not in self._voxels:
            self._voxels[key] = np.nonzero(self._is(mask) if isinstance(mask, str) else mask)
        kk, jj, ii = self._voxels[key]
        ok = (self.g.z[kk] - self.z0 >= margin) & (self.g.z[kk] - self.z0 <= self.zext - margin)
        if not np.any(ok):
            return None
        p = int(rng.choice(np.flatnonzero(ok)))
        return [float(self.g.x[ii[p]]), float(self.g.y[jj[p]]), float(self.g.z[kk[p]])]

    def lesions(self, base: list[dict[str, Any]], with_lesions: bool) -> list[dict[str, Any]]:
        """The default case's lesions annotated (CT correlate, necrotic core), plus PET-only ones."""
        rng, o = self._rng("lesions"), self.o
        out = [dict(les, structure="lesion") for les in base]
        if with_lesions and self.variant != "nema":
            soft = [h for h in _LESION_HOSTS[self.variant] if h not in ("lung", "bone") and np.any(self._is(h))]
            air = self.names.index("air")
            a, b = self.label[:, :, 1:], self.label[:, :, :-1]
            edge = np.zeros_like(self.label, bool)
            edge[:, :, 1:] = (a != b) & (a != air) & (b != air)
            for n in range(o.pet_only_lesions):
                straddle = n == o.pet_only_lesions - 1
                d_lo = min(6.0, 0.3 * self.zext)
                d = float(np.round(rng.uniform(d_lo, max(d_lo, min(16.0, 0.4 * self.zext))), 1))
                mask = edge if straddle else (str(rng.choice(soft)) if soft else None)
                c = self._pick_voxel(rng, mask, d / 2 + 2) if mask is not None else None
                if c is None:
                    continue
                k, j, i = (int(np.argmin(np.abs(ax - v))) for ax, v in zip((self.g.z, self.g.y, self.g.x), c[::-1]))
                hosts = sorted({self.names[self.label[k, j, i]], self.names[self.label[k, j, max(i - 1, 0)]]}
                               if straddle else {self.names[self.label[k, j, i]]})
                out.append({"center_mm": c, "diameter_mm": d, "uptake_ratio": float(np.round(rng.uniform(2.5, 5.0), 2)),
                            "kind": "sphere", "host": "|".join(hosts),
                            "structure": "boundary_lesion" if straddle else "lesion", "pet_only": True})
        for les in out:
            corr = rng.random() < o.ct_correlate_fraction
            core = rng.uniform(0.35, 0.6) * les["diameter_mm"] if rng.random() < 0.5 else 0.0
            les["shape"] = "sphere"
            les["has_ct_correlate"] = bool(les["host"] == "lung" or (corr and self.variant != "nema"
                                                                      and not les.pop("pet_only", False)))
            les.pop("pet_only", None)
            big = les["diameter_mm"] >= o.necrosis_min_mm and self.variant != "nema"
            les["necrotic_core_mm"] = float(np.round(core, 1)) if big else 0.0
            les["shift_mm"] = self.shift_at(les["center_mm"][2])
        return out

    def texture(self, suv: np.ndarray) -> np.ndarray:
        """SUV times (1 + heterogeneity * field) inside the body (not in the NEMA phantom)."""
        if self.variant == "nema" or self.o.heterogeneity <= 0:
            return suv
        f = np.maximum(1.0 + self.o.heterogeneity * self._field("texture"), 0.2)
        return np.where(self.label != self.names.index("air"), suv * f, suv).astype(np.float32)

    def paint_lesion(self, les: dict[str, Any], mask: np.ndarray, suv: np.ndarray, hu: np.ndarray,
                     host_suv: float) -> None:
        """Texture and necrotic core of a lesion (SUV); its CT correlate, if it has one (HU)."""
        if self.variant == "nema":
            return
        if self.o.lesion_heterogeneity > 0:
            if self._lesion_field is None:
                self._lesion_field = self._field("lesion_texture")
            suv[mask] *= np.maximum(1.0 + self.o.lesion_heterogeneity * self._lesion_field[mask], 0.2)
        if les["necrotic_core_mm"] > 0:
            suv[self.g.ellipsoid(les["center_mm"], [les["necrotic_core_mm"] / 2.0] * 3)] = 0.3 * host_suv
        if les["has_ct_correlate"]:
            host = les["host"].split("|")[0]
            hu[mask] = {"lung": 30.0, "bone": 250.0}.get(host, _LABELS[host][0] - 30.0)

    def _block(self, rec: dict[str, Any], pad: float = 0.0):
        """(slices into the model grid, boolean inside-mask of that block) of a structure record."""
        r, c, g = structure_extent_mm(rec) + pad, rec["center_mm"], self.g
        sl = tuple(slice(int(np.searchsorted(ax, v - r)), int(np.searchsorted(ax, v + r, "right")))
                   for ax, v in ((g.z, c[2]), (g.y, c[1]), (g.x, c[0])))
        zz, yy, xx = np.meshgrid(g.z[sl[0]], g.y[sl[1]], g.x[sl[2]], indexing="ij")
        grown = dict(rec, diameter_mm=rec["diameter_mm"] + 2 * pad)
        return sl, inside_structure(grown, np.stack([xx, yy, zz], -1))

    def _structure(self, rng, kind: str, c: list[float]) -> dict[str, Any]:
        u = lambda lo, hi: float(np.round(rng.uniform(lo, hi), 1))  # noqa: E731
        rec: dict[str, Any] = {"structure": kind, "kind": kind, "center_mm": c}
        if kind == "cyst":
            rec.update(shape="sphere", diameter_mm=u(6.0, min(16.0, max(6.0, 0.4 * self.zext))), hu=u(0.0, 15.0))
        elif kind == "calcification":
            rec.update(shape="sphere", diameter_mm=u(3.0, 5.0), hu=u(800.0, 1200.0))
        elif kind == "fat_plane":
            a = rng.uniform(0.0, math.pi)
            rec.update(shape="slab", diameter_mm=u(25.0, 45.0), thickness_mm=u(2.5, 4.0),
                       normal=[round(math.cos(a), 4), round(math.sin(a), 4), 0.0], hu=-100.0)
        else:  # vessel: a contrast-filled tube running roughly along z
            t, p = rng.uniform(0.0, math.radians(25.0)), rng.uniform(0.0, 2 * math.pi)
            rec.update(shape="cylinder", diameter_mm=u(4.0, 8.0), length_mm=u(30.0, 60.0), hu=u(180.0, 300.0),
                       axis=[round(math.sin(t) * math.cos(p), 4), round(math.sin(t) * math.sin(p), 4),
                             round(math.cos(t), 4)])
        return rec

    def ct_only_and_shift(self, hu: np.ndarray, lesions: list[dict[str, Any]]) -> np.ndarray:
        """Paints the CT-only structures into the HU model, then displaces it by the misregistration."""
        if self.o.ct_only and self.variant in _CT_ONLY:
            rng = self._rng("ct_only")
            keep_out = np.zeros(self.g.shape, bool)
            for les in lesions:
                sl, m = self._block({"center_mm": les["center_mm"], "diameter_mm": les["diameter_mm"]}, pad=3.0)
                keep_out[sl] |= m
            for kind, hosts, count in _CT_ONLY[self.variant]:
                hosts = [h for h in hosts if np.any(self._is(h))]
                placed = 0
                for _ in range(30 * count if hosts else 0):
                    if placed == count:
                        break
                    host = str(rng.choice(hosts))
                    rec = self._structure(rng, kind, [0.0, 0.0, 0.0])
                    margin = rec["diameter_mm"] / 2 + 2 if rec["shape"] == "sphere" else 2.0
                    c = self._pick_voxel(rng, host, margin)
                    if c is None:
                        break
                    rec["center_mm"] = c
                    sl, m = self._block(rec)
                    in_host = self._is(host)[sl][m]
                    need = 0.9 if rec["shape"] == "sphere" else 0.8
                    if not m.any() or keep_out[sl][m].any() or in_host.mean() < need:
                        continue
                    hu[sl][m] = rec["hu"]
                    sl, m = self._block(rec, pad=3.0)  # structures stay apart: each can be found on its own
                    keep_out[sl] |= m
                    rec.update(host=host, has_ct_correlate=True, uptake_ratio=1.0, shift_mm=self.shift_at(c[2]))
                    self.structures.append(rec)
                    placed += 1
        return self._displace(hu)

    def _displace(self, hu: np.ndarray) -> np.ndarray:
        """out(x, y, z) = hu(x - ux, y - uy, z - uz), u = _u(z): linear in z, bilinear in-plane (edges continue)."""
        import cv2

        u = np.array([self._u(float(z)) for z in self.g.z], np.float64) / self.cfg.model_mm
        if not np.any(u):
            return hu
        n = hu.shape[0]
        out = np.empty_like(hu)
        for k in range(n):
            f = min(max(k - u[k, 2], 0.0), n - 1.0)
            k0 = int(math.floor(f))
            k1, t = min(k0 + 1, n - 1), f - k0
            s = ((1.0 - t) * hu[k0] + t * hu[k1]).astype(np.float32)
            m = np.float32([[1, 0, u[k, 0]], [0, 1, u[k, 1]]])
            out[k] = cv2.warpAffine(s, m, (s.shape[1], s.shape[0]), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        return out

    def scanner(self) -> dict[str, Any]:
        """This study's clinical PET system: psf_fwhm_mm, counts_per_suv (and the truth's resolution)."""
        rng = self._rng("scanner")
        return {"psf_fwhm_mm": float(rng.choice(self.o.psf_choices_mm)),
                "counts_per_suv": float(rng.choice(self.o.counts_choices)),
                "truth_fwhm_mm": self.cfg.truth_fwhm_mm}


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
            (case.pet, "pet", 2, f"PET phantom ({case.scanner.get('psf_fwhm_mm', cfg.pet_fwhm_mm):g} mm FWHM)"),
            (case.truth, "pet_truth", 3, f"{TRUTH_DESCRIPTION} ({cfg.truth_fwhm_mm:g} mm FWHM, noise-free)"),
        ):
            bq = Volume(vol.array * np.float32(case.bqml_per_suv), vol.affine, "PT", "BQML", {})
            write_series(bq, tmp / sub, study=case.study, series_number=num, series_description=desc,
                         pet=case.pet_info, transfer_syntax=cfg.transfer_syntax,
                         series_uid=generate_uid(entropy_srcs=ent + [sub]))
        (tmp / "lesions.json").write_text(json.dumps(case.lesions_json(), indent=2) + "\n")
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
    settings = {"seed": int(seed), "nema_every": int(nema_every), "config": cfg.settings()}
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
