"""Per patient: tumour quantification in 3-D (SUVmax / mean / peak, TBR), the patient tables and medians, the
fusion gain per patient and the CT ablation (the fused model with a water-filled CT)."""

from __future__ import annotations

import math

import numpy as np

from ctpet_srgan import guidance as gd
from ctpet_srgan import quantification
from ctpet_srgan.evaluation.aggregate import nanmedian, paired_bootstrap, study_summary
from ctpet_srgan.evaluation.data import PET_ONLY
from ctpet_srgan.evaluation.lesions import slice_volume
from ctpet_srgan.evaluation.scoring import BODY_HU
from ctpet_srgan.quantification import TUMOUR_KEYS

PATIENT_KEYS = ("psnr_pet_body", "ssim_pet_body", "nrmse_pet_body")  # per-patient image quality inside the body
ABLATION_SUFFIX = "_water_ct"
PATIENT_CONVENTIONS = dict(
    image="PSNR / SSIM / NRMSE of the PET inside the body (HR CT > -500 HU), per study pooled over its slices;"
          " NRMSE = sqrt(sum (SR - HR)^2 / sum HR^2)",
    tumour_mask="hr_mask of the records (RTSTRUCT contour on the HR grid), 3-D over the study's contiguous slices",
    suvpeak=f"max over tumour voxel centres of the mean SUV over voxels whose centres lie within "
            f"{quantification.SPHERE_1ML_RADIUS_MM:.4f} mm (1 cm^3 sphere, PERCIST/EARL); sphere may leave the tumour;"
            " voxels outside the volume left out",
    background=f"voxels {quantification.BACKGROUND_SHELL_MM[0]:g} < d <= {quantification.BACKGROUND_SHELL_MM[1]:g}"
               " mm from the nearest tumour voxel centre (3-D, anisotropic), inside the body",
    tbr="SUVmean(tumour) / SUVmean(background)",
    errors="relative error (method - HR) / HR per study; medians over studies; abs_*: median of |error|",
    targets="issue 11; PSNR targets on psnr_pet_body",
)


def study_spacing(slices: list[dict]) -> tuple[float, float, float] | None:
    """Voxel size (slice, row, col) in mm of a study's stacked HR slices; None when their indices have gaps."""
    idx = [s["slice_index"] for s in slices]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        return None
    i, j, k = slice_volume(slices[0]["hr_affine"]).spacing_mm
    return (k, j, i)


def tumour_reference(slices: list[dict]) -> dict | None:
    """The HR side of a study's tumour quantification, shared by every method.

    Args:
        slices: the study's slices (all with hr_mask, contiguous).

    Returns:
        None when the study has no usable mask (none, empty, or slices with gaps); else mask, shell (background:
        10-20 mm from the tumour, inside the body), spacing_mm (slice, row, col), the HR PET's tumour_stats,
        tumour_volume_ml, n_background_voxels and peak_sphere_ml (the volume of the voxels the discrete 1 mL sphere
        holds on this grid).
    """
    if not slices or not all("hr_mask" in s for s in slices):
        return None
    mask = np.stack([s["hr_mask"] for s in slices])
    sp = study_spacing(slices)
    if not mask.any() or sp is None:
        return None
    body = np.stack([s["hr_ct"] for s in slices]) > BODY_HU
    shell = quantification.background_shell(mask, sp, body)
    stats = quantification.tumour_stats(np.stack([s["hr_pet"] for s in slices]), mask, sp, shell)
    voxel_ml = float(np.prod(sp)) / 1000.0
    return dict(mask=mask, shell=shell, spacing_mm=sp, stats=stats, tumour_volume_ml=float(mask.sum()) * voxel_ml,
                n_background_voxels=int(shell.sum()), peak_sphere_ml=len(quantification.sphere_offsets(sp)) * voxel_ml)


def tumour_scores(sr_pet: np.ndarray, ref: dict) -> dict:
    """One method's tumour numbers on a study and their relative errors against the HR PET.

    Args:
        sr_pet: [n, H, W] SR PET (SUV) of the study's slices. ref: tumour_reference's output.

    Returns:
        suvmax, suvmean, suvpeak, background_mean (SUV), tbr, <key>_err = (method - HR) / HR for TUMOUR_KEYS and
        abs_<key>_err = its magnitude.
    """
    st = quantification.tumour_stats(np.asarray(sr_pet, np.float64), ref["mask"], ref["spacing_mm"], ref["shell"])
    st.update({f"{k}_err": quantification.relative_error(st[k], ref["stats"][k]) for k in TUMOUR_KEYS})
    st.update({f"abs_{k}_err": abs(st[f"{k}_err"]) for k in TUMOUR_KEYS})
    return st


def water_ct(slices: list[dict]) -> np.ndarray:
    """The uninformative CT of the ablation (`guidance.uninformative_ct`, the same CT as the guidance section's and
    as training's CT dropout): the body outline (HR CT > -500 HU and the holes it encloses) filled with water.

    Returns:
        [n, H, W] float32 HU: 0 inside the body, -1000 outside.
    """
    return gd.uninformative_ct(np.stack([s["hr_ct"] for s in slices]))



def patient_rows(sums: dict[str, dict], tumour: dict[str, dict]) -> dict[str, dict]:
    """Per study: PATIENT_KEYS from study_summary's output and, where scored, the tumour numbers."""
    return {h: dict({k: sums[h][k] for k in PATIENT_KEYS}, **tumour.get(h, {})) for h in sums}


def medians(rows: dict[str, dict]) -> dict:
    """Medians over studies (NaN ignored) of PATIENT_KEYS and the tumour numbers; |error| medians as abs_<key>_err.

    Returns:
        key -> median, plus n_studies and n_tumours (studies with tumour numbers).
    """
    med = nanmedian
    vals = list(rows.values())
    out = {k: med([r[k] for r in vals]) for k in PATIENT_KEYS}
    tum = [r for r in vals if "suvmax" in r]
    for k in TUMOUR_KEYS:
        out[k] = med([r[k] for r in tum])
        out[f"{k}_err"] = med([r[f"{k}_err"] for r in tum])
        out[f"abs_{k}_err"] = med([abs(r[f"{k}_err"]) for r in tum])
    out.update(n_studies=len(vals), n_tumours=len(tum))
    return out


def ct_ablation(real: dict[str, dict], water: dict[str, dict], model: str, seed: int) -> dict:
    """The fused model with its real CT against the same model with water_ct, per study.

    Returns:
        model, ablated (the water-CT entry's name), median_diff (median over studies of real - water of PATIENT_KEYS
        and the |tumour errors|; negative |error| differences: the real CT helps), paired (mean difference with its
        bootstrap 95% CI), and the water-CT entry's medians.
    """
    return dict(model=model, ablated=model + ABLATION_SUFFIX,
                ct="body (HR CT > -500 HU and the holes it encloses) = 0 HU, outside = -1000 HU",
                **compare_patients(real, water, seed), medians=medians(water))


def compare_patients(a: dict[str, dict], b: dict[str, dict], seed: int) -> dict:
    """Paired per-patient differences a - b of PATIENT_KEYS and the |tumour errors| (where either has them).

    Returns:
        {"median_diff": key -> median over patients, "paired": paired_bootstrap's mean and 95% CI}.
    """
    keys = PATIENT_KEYS + tuple(f"abs_{k}_err" for k in TUMOUR_KEYS)
    keys = tuple(k for k in keys if any(k in r for r in list(a.values()) + list(b.values())))
    diffs = {k: [a[h].get(k, math.nan) - b[h].get(k, math.nan) for h in a if h in b] for k in keys}
    return dict(median_diff={k: nanmedian(v) for k, v in diffs.items()}, paired=paired_bootstrap(a, b, keys, seed))



def patients_section(st: dict, sums: dict[str, dict], cfg: dict, fused: str, seed: int) -> tuple[dict, dict | None]:
    """The per-patient tables, their medians and the CT ablation.

    Args:
        st: score_split's output. sums: method -> study -> study_summary. cfg: scoring settings.
        fused: the CT-guided model's name. seed: bootstrap seed.

    Returns:
        ({"per_study": method -> study -> row, "median": method -> medians, "reference": study -> HR numbers},
        the ct_ablation section or None).
    """
    rows = {m: patient_rows(sums[m], st["tumour"][m]) for m in sums}
    patients = dict(conventions=PATIENT_CONVENTIONS, n_studies_with_tumour_mask=len(st["references"]),
                    per_study=rows, median={m: medians(r) for m, r in rows.items()}, reference=st["references"])
    if fused in rows and PET_ONLY in rows and fused != PET_ONLY:  # the fusion gain per patient, tumours included
        patients["fusion_gain"] = dict(fused=fused, baseline=PET_ONLY, **compare_patients(rows[fused], rows[PET_ONLY],
                                                                                          seed))
    if not st["ablation"] or fused not in rows:
        return patients, None
    water = patient_rows({h: study_summary(sc, cfg) for h, sc in st["ablation"].items()}, st["ablation_tumour"])
    abl = ct_ablation(rows[fused], water, fused, seed)
    abl["per_study"] = water
    return patients, abl
