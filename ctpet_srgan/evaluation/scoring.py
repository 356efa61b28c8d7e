"""One method on one study: image quality (whole and body), fusion quality, NEMA lesion contrast and the
detector's hits and false positives, accumulated per study for `aggregate`."""

from __future__ import annotations

import numpy as np

from ctpet_srgan import guidance as gd
from ctpet_srgan import metrics
from ctpet_srgan.evaluation.lesions import spacing_rc

BODY_HU = gd.BODY_THRESHOLD_HU  # one body threshold for scoring, the ablation's CT and the guidance section
LESION_MARGIN_MM = 5.0
MI_BINS = 64


def new_acc() -> dict:
    """Empty per-study accumulators of image quality (squared errors, SSIM windows) and fusion rows."""
    keys = ("pet_se", "pet_n", "pet_se_body", "pet_n_body", "ct_se", "ct_n", "ct_se_body", "ct_n_body",
            "pet_tt_body", "ct_tt_body")
    acc = {k: 0.0 for k in keys}
    acc.update(pet_ssim=[], ct_ssim=[], pet_ssim_body=[], ct_ssim_body=[], fusion=[], n_slices=0)
    return acc


def accumulate_image(acc: dict, key: str, truth: np.ndarray, out: np.ndarray, body: np.ndarray,
                      data_range: float) -> None:
    """Adds one slice's squared errors and SSIM windows (whole and body) of one modality to `acc`."""
    se, n = metrics.masked_mse(truth, out)
    acc[f"{key}_se"] += se
    acc[f"{key}_n"] += n
    smap = metrics.ssim_map(truth, out, data_range=data_range)
    acc[f"{key}_ssim"].append(float(smap.mean()))
    if body.any():
        se, n = metrics.masked_mse(truth, out, body)
        acc[f"{key}_se_body"] += se
        acc[f"{key}_n_body"] += n
        acc[f"{key}_tt_body"] += float(np.square(truth[body], dtype=np.float64).sum())
        acc[f"{key}_ssim_body"].extend(smap[metrics.crop_to_ssim_map(body)].tolist())


def fusion_quality(s: dict, out: np.ndarray, cfg: dict) -> dict[str, float]:
    """The SR PET `out` (SUV) against its sources (bicubic LR PET, HR CT), all mapped to [0, 1].

    Returns:
        mi_pet, mi_ct (bits), ssim_pet, ssim_ct and qabf.
    """
    R, (ct_lo, ct_hi) = cfg["pet_range_suv"], cfg["ct_range_hu"]
    src_pet = metrics.to_unit_range(s["bicubic_pet"], 0.0, R)
    src_ct = metrics.to_unit_range(s["hr_ct"], ct_lo, ct_hi)
    f = metrics.to_unit_range(out, 0.0, R)
    return dict(
        mi_pet=metrics.mutual_information(f, src_pet, bins=MI_BINS, range_a=(0, 1), range_b=(0, 1)),
        mi_ct=metrics.mutual_information(f, src_ct, bins=MI_BINS, range_a=(0, 1), range_b=(0, 1)),
        ssim_pet=metrics.ssim(src_pet, f, data_range=1.0),
        ssim_ct=metrics.ssim(src_ct, f, data_range=1.0),
        qabf=metrics.qabf(src_pet, src_ct, f),
    )


def _score_lesion_slice(out: np.ndarray, s: dict, body: np.ndarray, les: list[dict], cfg: dict,
                        lesion_rows: list, det: dict, lesion_free: bool) -> None:
    """NEMA contrast of the lesions centred on this slice and the detector's hits / false positives on it."""
    sp = spacing_rc(s["hr_affine"])
    mask = body if body.any() else np.ones_like(body)
    bkg = mask.copy()
    for lesion in les:
        bkg &= ~metrics.disk_mask(body.shape, lesion["center_rc"], lesion["radius_mm"] + LESION_MARGIN_MM, sp)
    for lesion in les:
        if lesion["scored"]:
            c = metrics.sphere_contrast(out, lesion["center_rc"], 2 * lesion["radius_mm"], sp, lesion["uptake_ratio"],
                                        background_mask=bkg)
            lesion_rows.append(dict(id=lesion["id"], diameter_mm=lesion["diameter_mm"], **c))
    dets = metrics.detect_hot_spots(out, threshold=cfg["froc_min_suv"], spacing_mm=sp,
                                    min_separation_mm=cfg["min_separation_mm"], mask=mask)
    accept = [dict(lesion, radius_mm=max(lesion["radius_mm"], max(sp))) for lesion in les]
    scores, fps = metrics.match_detections(dets, accept, sp)
    det["lesion_scores"] += scores
    det["diameters"] += [lesion["diameter_mm"] for lesion in les if lesion["scored"]]
    det["fp_scores"] += fps
    det["n_slices"] += 1
    if lesion_free:  # no lesions: every detection is a false positive; hallucinated if the truth is not hot there
        truth, sep = s["hr_pet"], cfg["min_separation_mm"]
        det["halluc"] += [sc for r, c, sc in dets
                          if truth[metrics.disk_mask(truth.shape, (r, c), sep, sp)].max() < cfg["det_threshold_suv"]]
        det["n_free"] += 1


def score_study(pred: dict, slices: list[dict], lesions_per_slice: list[list[dict]], cfg: dict, *,
                with_truth: bool, lesion_free: bool) -> dict:
    """All per-study numbers of one method.

    Args:
        pred: run_method's output. slices: the study's slices (with bicubic_pet added).
        lesions_per_slice: place_lesions' first output. cfg: scoring settings (scoring_config).
        with_truth: the HR PET is a true HR PET (lesions and detection are scored). lesion_free: no lesions.

    Returns:
        {"acc": image-quality accumulators and fusion rows, "lesions": NEMA rows, "det": detection scores}.
    """
    ct_lo, ct_hi = cfg["ct_range_hu"]
    acc = new_acc()
    lesion_rows, det = [], dict(lesion_scores=[], diameters=[], fp_scores=[], halluc=[], n_slices=0, n_free=0)
    for k, s in enumerate(slices):
        out = pred["sr_pet"][k]
        body = s["hr_ct"] > BODY_HU
        acc["n_slices"] += 1
        accumulate_image(acc, "pet", s["hr_pet"], out, body, cfg["pet_range_suv"])
        if pred.get("sr_ct") is not None:
            accumulate_image(acc, "ct", np.clip(s["hr_ct"], ct_lo, ct_hi), np.clip(pred["sr_ct"][k], ct_lo, ct_hi),
                              body, ct_hi - ct_lo)
        acc["fusion"].append(fusion_quality(s, out, cfg))
        if with_truth:
            _score_lesion_slice(out, s, body, lesions_per_slice[k], cfg, lesion_rows, det, lesion_free)
    return dict(acc=acc, lesions=lesion_rows, det=det)

def score_image_only(pred: dict, slices: list[dict], cfg: dict) -> dict:
    """PET image-quality accumulators of one method on a study (whole and body), without lesions or fusion."""
    acc = new_acc()
    for k, s in enumerate(slices):
        acc["n_slices"] += 1
        accumulate_image(acc, "pet", s["hr_pet"], pred["sr_pet"][k], s["hr_ct"] > BODY_HU, cfg["pet_range_suv"])
    return dict(acc=acc, lesions=[], det={})
