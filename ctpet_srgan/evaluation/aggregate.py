"""Per-study accumulators -> per-study and per-method numbers, paired bootstrap CIs, and the issue-11
targets on the patient medians."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ctpet_srgan import metrics
from ctpet_srgan.guidance import nanmean  # one NaN-ignoring mean for every section

N_BOOT = 2000
IMAGE_METRICS = ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body",
                 "psnr_ct", "ssim_ct", "psnr_ct_body", "ssim_ct_body")
GAIN_METRICS = ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body", "crc_mean")
FUSION_KEYS = ("mi_pet", "mi_ct", "ssim_pet", "ssim_ct", "qabf")


def nanmedian(v) -> float:
    """Median ignoring NaN / None (NaN when nothing is left)."""
    v = [x for x in v if x is not None and not np.isnan(x)]
    return float(np.median(v)) if v else float("nan")


def study_summary(sc: dict, cfg: dict) -> dict:
    """Per-study image-quality numbers from score_study's accumulators.

    Returns:
        psnr_{pet,ct}[_body] (dB), ssim_{pet,ct}[_body], nrmse_pet_body (sqrt(sum (out - truth)^2 / sum truth^2)
        over the study's body pixels) and crc_mean (mean CRC over the study's lesions).
    """
    a, R, ct_r = sc["acc"], cfg["pet_range_suv"], cfg["ct_range_hu"][1] - cfg["ct_range_hu"][0]
    out = {}
    for key, rng in (("pet", R), ("ct", ct_r)):
        for suf in ("", "_body"):
            n = a[f"{key}_n{suf}"]
            out[f"psnr_{key}{suf}"] = metrics.psnr_from_mse(a[f"{key}_se{suf}"] / n, rng) if n else float("nan")
            out[f"ssim_{key}{suf}"] = nanmean(a[f"{key}_ssim{suf}"])
    tt = a["pet_tt_body"]
    out["nrmse_pet_body"] = math.sqrt(a["pet_se_body"] / tt) if tt > 0 else float("nan")
    les = [row["crc"] for row in sc["lesions"]]
    out["crc_mean"] = nanmean(les)
    return out


def _lesion_summary(per_study: dict[str, dict]) -> dict:
    """NEMA CRC / BV / CNR per lesion diameter (mean over lesions of that diameter) and the lesion count."""
    rows = [row for sc in per_study.values() for row in sc["lesions"]]
    sizes = sorted({row["diameter_mm"] for row in rows})
    res = {key: {f"{d:g}": nanmean([row[key] for row in rows if row["diameter_mm"] == d]) for d in sizes}
           for key in ("crc", "bv", "cnr")}
    res["n_lesions_scored"] = len(rows)
    return res


def _detection_summary(per_study: dict[str, dict], cfg: dict) -> dict:
    """Sensitivity (overall and per diameter), FP / slice, hallucinations / lesion-free slice and the FROC."""
    det = {k: [] for k in ("lesion_scores", "diameters", "fp_scores", "halluc")}
    n_sl = n_free = 0
    for sc in per_study.values():
        for k in det:
            det[k] += sc["det"][k]
        n_sl += sc["det"]["n_slices"]
        n_free += sc["det"]["n_free"]
    summ = metrics.detection_summary(det["lesion_scores"], det["diameters"], det["fp_scores"], n_sl,
                                     cfg["det_threshold_suv"])
    halluc = int(np.sum(np.asarray(det["halluc"]) >= cfg["det_threshold_suv"])) / n_free if n_free else None
    return dict(sensitivity=summ["sensitivity"], sensitivity_per_size=summ["sensitivity_per_size"],
                fp_per_slice=summ["fp_per_slice"], n_lesions=summ["n_lesions"], n_detection_slices=n_sl,
                n_lesion_free_slices=n_free, hallucinations_per_slice=halluc,
                froc=metrics.froc(det["lesion_scores"], det["fp_scores"], n_sl) if n_sl else [])


def summarize_method(per_study: dict[str, dict], cfg: dict) -> dict:
    """A method's results over all studies (see the module docstring); "_per_study" holds study_summary's."""
    sums = {h: study_summary(sc, cfg) for h, sc in per_study.items()}
    res: dict[str, Any] = {key: nanmean([s[key] for s in sums.values()]) for key in IMAGE_METRICS}
    res["n_studies"] = len(per_study)
    res["n_slices"] = int(sum(sc["acc"]["n_slices"] for sc in per_study.values()))
    res.update(_lesion_summary(per_study))
    res.update(_detection_summary(per_study, cfg))
    fus = [f for sc in per_study.values() for f in sc["acc"]["fusion"]]
    res["fusion"] = {k: nanmean([f[k] for f in fus]) for k in FUSION_KEYS}
    res["_per_study"] = sums
    return res


def paired_bootstrap(a: dict[str, dict], b: dict[str, dict], keys, seed: int) -> dict:
    """Per-study differences a - b of each key with a percentile bootstrap 95% CI of their mean.

    Args:
        a, b: study -> {key: value}. keys: the keys to compare. seed: bootstrap seed.

    Returns:
        key -> {"mean", "ci95": [lo, hi], "n_studies" (finite differences)}.
    """
    out = {}
    for key in keys:
        diffs = [a[h].get(key, math.nan) - b[h].get(key, math.nan) for h in a if h in b]
        m, lo, hi = metrics.bootstrap_ci(diffs, n_boot=N_BOOT, seed=seed)
        out[key] = dict(mean=m, ci95=[lo, hi], n_studies=int(np.sum(np.isfinite(diffs))))
    return out


def fusion_gain(fused: dict, base: dict, seed: int) -> dict:
    """Per-study fused minus baseline (PSNR/SSIM of PET, whole and body; mean CRC) with bootstrap CIs."""
    return paired_bootstrap(fused, base, GAIN_METRICS, seed)


TARGETS = dict(psnr_over_bicubic_db=1.5, suvmax_fraction_of_bicubic=0.5, suvmean_abs_error=0.02,
               real_over_water_ct_db=0.3)


def target_row(name: str, value: float, limit: float | None, margin: float, met: bool | None = None) -> dict:
    """One target row; margin > 0: met by that much, < 0: missed by that much; met None: not measurable."""
    if met is None and np.isfinite(margin):
        met = bool(margin >= 0)
    return dict(target=name, value=value, limit=limit, met=met if np.isfinite(value) else None, margin=margin)


def targets(med: dict[str, dict], gain: dict | None, ablation: dict | None, fused: str) -> list[dict]:
    """The issue's targets on the split (medians over patients; PSNR inside the body), each met / missed with
    its margin (in the target's units: dB, or a fraction for SUV errors).

    Args:
        med: method -> medians. gain: the fusion_gain section. ablation: the ct_ablation section. fused: model name.

    Returns:
        A list of {target, value, limit, met (True / False / None = not measurable here), margin}.
    """
    nan = float("nan")
    f, b = med.get(fused, {}), med.get("bicubic", {})
    t = TARGETS
    d_psnr = f.get("psnr_pet_body", nan) - b.get("psnr_pet_body", nan)
    out = [target_row(f"{fused}: median PSNR (body) - bicubic's >= {t['psnr_over_bicubic_db']:g} dB", d_psnr,
                      t["psnr_over_bicubic_db"], d_psnr - t["psnr_over_bicubic_db"])]
    lim = t["suvmax_fraction_of_bicubic"] * b.get("abs_suvmax_err", nan)
    v = f.get("abs_suvmax_err", nan)
    out.append(target_row(f"{fused}: median |SUVmax error| <= {t['suvmax_fraction_of_bicubic']:g} x bicubic's", v, lim,
                          lim - v))
    v = f.get("abs_suvmean_err", nan)
    out.append(target_row(f"{fused}: median |SUVmean error| <= {t['suvmean_abs_error']:g}", v, t["suvmean_abs_error"],
                          t["suvmean_abs_error"] - v))
    g = (gain or {}).get("metrics", {}).get("psnr_pet_body", {})
    lo = (g.get("ci95") or [nan, nan])[0]
    lo = nan if lo is None else lo
    out.append(target_row(f"{fused} - pet_only: mean PSNR (body) gain > 0 with its 95% CI above 0",
                          g.get("mean", nan) if g.get("mean") is not None else nan, 0.0, lo,
                          met=bool(lo > 0) if np.isfinite(lo) else None))
    v = (ablation or {}).get("median_diff", {}).get("psnr_pet_body", nan)
    out.append(target_row(f"{fused}: real CT - water CT median PSNR (body) >= {t['real_over_water_ct_db']:g} dB", v,
                          t["real_over_water_ct_db"], v - t["real_over_water_ct_db"]))
    return out
