"""The "guidance" section of the results (issue 12): CT reliance, the misregistration sweep, CT-only imprint,
PET-only lesion recovery and hallucinations at a matched false-positive rate, per method on a guided
phantom world, pooled over studies; and its targets. The measures themselves: `ctpet_srgan.guidance`."""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ctpet_srgan import guidance as gd
from ctpet_srgan import metrics
from ctpet_srgan.evaluation.aggregate import target_row
from ctpet_srgan.evaluation.data import PET_ONLY
from ctpet_srgan.evaluation.lesions import lesion_on_slice, place_lesions, spacing_rc
from ctpet_srgan.evaluation.scoring import LESION_MARGIN_MM

GUIDANCE_SHIFTS_MM = (0.0, 2.0, 5.0, 10.0)  # CT moved along +col (x) against the PET
GUIDANCE_FP_RATE = 0.5  # false positives per slice of the matched operating point
SMALL_LESION_MM = (6.0, 10.0)
LOW_CONTRAST_RATIO = 3.0
GUIDANCE_TARGETS = dict(reliance_psnr_db=0.5, imprint_over_bicubic=1.25, sensitivity_6_10mm=0.9)
GUIDANCE_CONVENTIONS = dict(
    ct_reliance="the model with the true HR CT minus with guidance.uninformative_ct (body outline filled with water);"
                " PSNR pooled over all body pixels of the split, SSIM mean over slices (body windows), CRC mean over"
                " the scored hot lesions",
    misregistration=f"CT shifted along +col by {', '.join(f'{s:g}' for s in GUIDANCE_SHIFTS_MM)} mm (bilinear, air"
                    " fills); PSNR (body of the unshifted CT), lesion CRC, hot spots per lesion-free slice at the"
                    " method's matched threshold and (_shared) at the shared threshold",
    ct_only_imprint="mean over CT-only structures (lesions.json ct_only, where the CT shows them) of"
                    " |mean(SR) - mean(truth)| / mean(truth) inside them; truth: 0",
    pet_only_crc="NEMA CRC of the hot lesions with has_ct_correlate false, slice nearest the centre",
    detection=f"local maxima >= t SUV in the body; t per method = the lowest threshold with <= {GUIDANCE_FP_RATE:g}"
              " false positives per slice (all slices of the split), a candidate outside the lesions being a false"
              " positive at t when the HR truth's maximum within min_separation_mm of it is < t (a truly hot organ"
              " is no hallucination); hot spots = false positives on slices clear"
              f" of every lesion by {LESION_MARGIN_MM:g} mm; small = {SMALL_LESION_MM[0]:g}-{SMALL_LESION_MM[1]:g} mm,"
              f" low contrast = uptake ratio <= {LOW_CONTRAST_RATIO:g}; sensitivities at t. hot_spots_per_free_slice_"
              "shared: the same hot spots at one absolute threshold for every method, shared_threshold_suv ="
              " det_threshold_suv (the issue-12 hot-spot target compares methods there)",
)


def _lesion_free_slices(lesions: list[dict], slices: list[dict]) -> list[bool]:
    """Per slice: no lesion (any uptake) comes within LESION_MARGIN_MM of it."""
    free = [True] * len(slices)
    for les in lesions:
        r = float(les["diameter_mm"]) / 2
        for k, s in enumerate(slices):
            if abs(lesion_on_slice(les["center_mm"], s["hr_affine"])[0]) < r + LESION_MARGIN_MM:
                free[k] = False
    return free


def _variant_scores(pred: np.ndarray, g: dict, cfg: dict, with_ssim: bool) -> dict:
    """PSNR pieces, SSIM, lesion CRCs and detections of one prediction ([n, H, W] SUV) of a study."""
    sp = g["spacing"]
    parts = gd.image_parts(g["truth"], pred, data_range=cfg["pet_range_suv"], mask=g["body"], with_ssim=with_ssim)
    crc = gd.lesion_crcs(pred, g["per_slice"], sp, background_masks=g["bkg"])
    det = gd.collect_detections(list(pred), g["accept"], sp, min_threshold=cfg["froc_min_suv"],
                                min_separation_mm=cfg["min_separation_mm"], masks=list(g["body"]), free=g["free"],
                                truth_near=g["truth_near"])
    return dict(parts, crc=crc, det=det)


def guidance_study(slices: list[dict], info: dict, run: Callable[[str, np.ndarray | None], np.ndarray],
                   takes_ct: dict[str, bool], cfg: dict) -> dict[str, dict]:
    """One study's raw guidance numbers per method, pooled over studies by `guidance_summary`.

    Args:
        slices: the study's slices (iter_studies; a true HR PET). info: its manifest entry (lesions with
            has_ct_correlate, ct_only structures). run: run(method, ct_hu) -> SR PET [n, H, W] SUV of the study with
            that HR CT (HU, [n, H, W]); ct_hu None = the study's own CT. takes_ct: method -> whether it reads a CT
            (a method that does not is run once: its CT variants are the same image). cfg: scoring_config.
    Returns:
        method -> {variant ("true", "uninformative", "shift_<mm>") -> _variant_scores, "imprint": per-structure
        relative changes, "pet_only_crc": CRCs of PET-only lesions}.
    """
    truth = np.stack([s["hr_pet"] for s in slices]).astype(np.float64)
    ct = np.stack([s["hr_ct"] for s in slices])
    body = gd.body_mask(ct)
    sp = spacing_rc(slices[0]["hr_affine"])
    lesions = info.get("lesions") or []
    per_slice, _ = place_lesions(lesions, slices)
    bkg = body.copy()
    for k, ls in enumerate(per_slice):
        for les in ls:
            les["has_ct_correlate"] = lesions[les["id"]].get("has_ct_correlate")
            bkg[k] &= ~metrics.disk_mask(body.shape[1:], les["center_rc"], les["radius_mm"] + LESION_MARGIN_MM, sp)
    g = dict(truth=truth, body=body, bkg=bkg, spacing=sp, per_slice=per_slice,
             truth_near=[gd.local_max(t, cfg["min_separation_mm"], sp) for t in truth],
             free=_lesion_free_slices(lesions, slices),
             accept=[[dict(les, radius_mm=max(les["radius_mm"], max(sp))) for les in ls] for ls in per_slice])
    masks = []
    for rec in info.get("ct_only") or []:
        m = np.stack([gd.structure_mask_on_slice(rec, s["hr_affine"], truth.shape[1:], at_ct=True) for s in slices])
        if m.sum() >= 4:
            masks.append(m)
    cts = {"uninformative": gd.uninformative_ct(ct)}
    shifted = gd.misregistered_cts(ct, sp, [s for s in GUIDANCE_SHIFTS_MM if s])  # along +col; 0 mm is "true"
    cts.update({f"shift_{s:g}": c for s, c in shifted.items()})
    out = {}
    for m, uses_ct in takes_ct.items():
        pred = np.asarray(run(m, None), np.float64)
        row = {"true": _variant_scores(pred, g, cfg, with_ssim=True)}
        for v, c in cts.items():
            row[v] = (_variant_scores(np.asarray(run(m, c), np.float64), g, cfg, with_ssim=v == "uninformative")
                      if uses_ct else row["true"])
        row["imprint"] = gd.ct_only_imprint(pred, truth, masks)["per_structure"]
        row["pet_only_crc"] = gd.lesion_crcs(pred, per_slice, sp, background_masks=bkg, pet_only=True)
        out[m] = row
    return out


def _pool(parts: list[dict], cfg: dict) -> dict:
    """`_variant_scores` of several studies pooled: PSNR / SSIM (`guidance.pool_image_parts`), CRC, detections."""
    return dict(gd.pool_image_parts(parts, cfg["pet_range_suv"]), crc=gd.nanmean([x for p in parts for x in p["crc"]]),
                det=gd.merge_detections([p["det"] for p in parts]))


def guidance_summary(per_study: dict[str, dict[str, dict]], cfg: dict) -> dict:
    """The guidance section from `guidance_study` outputs (study -> method -> raw), pooled over studies.

    Returns:
        {conventions, n_studies, methods: method -> {reliance, misregistration, ct_only_imprint, pet_only_lesions,
        detection}, targets: per CT-reading model the issue-12 targets (see guidance_targets)}.
    """
    methods = list(next(iter(per_study.values()))) if per_study else []
    res: dict[str, Any] = {}
    for m in methods:
        rows = [per_study[h][m] for h in per_study]
        v = {k: _pool([r[k] for r in rows], cfg) for k in rows[0] if k not in ("imprint", "pet_only_crc")}
        d0 = v["true"]["det"]
        t = max(gd.threshold_at_fp_rate(d0["fp_scores"], d0["n_slices"], GUIDANCE_FP_RATE, d0["fp_truth"]),
                cfg["froc_min_suv"])
        shared = cfg["det_threshold_suv"]  # one absolute SUV threshold for every method's hot spots
        keys = ("psnr", "ssim", "crc")
        rel = gd.ct_reliance({k: v["true"][k] for k in keys}, {k: v["uninformative"][k] for k in keys})
        sweep = gd.misregistration_sweep({
            s: dict(psnr=v[key]["psnr"], crc=v[key]["crc"],
                    hot_spots_per_free_slice=gd.operating_point(v[key]["det"], t)["hot_spots_per_free_slice"],
                    hot_spots_per_free_slice_shared=gd.operating_point(v[key]["det"], shared)[
                        "hot_spots_per_free_slice"])
            for s in GUIDANCE_SHIFTS_MM for key in ["true" if s == 0 else f"shift_{s:g}"]})
        imp = [abs(x) for r in rows for x in r["imprint"] if math.isfinite(x)]
        crcs = [x for r in rows for x in r["pet_only_crc"]]
        det = v["true"]["det"]
        op = gd.operating_point(det, t)
        small = gd.operating_point(det, t, diameter_range_mm=SMALL_LESION_MM)
        low = gd.operating_point(det, t, diameter_range_mm=SMALL_LESION_MM, max_uptake_ratio=LOW_CONTRAST_RATIO)
        res[m] = dict(
            reliance=rel, misregistration=sweep,
            ct_only_imprint=dict(imprint=float(np.mean(imp)) if imp else float("nan"), n_structures=len(imp)),
            pet_only_lesions=gd.pet_only_recovery(crcs),
            detection=dict(threshold_suv=t, fp_per_slice=op["fp_per_slice"], sensitivity=op["sensitivity"],
                           n_lesions=op["n_lesions"], hot_spots_per_free_slice=op["hot_spots_per_free_slice"],
                           n_free_slices=det["n_free"], sensitivity_6_10mm=small["sensitivity"],
                           n_6_10mm=small["n_lesions"], sensitivity_6_10mm_low_contrast=low["sensitivity"],
                           n_6_10mm_low_contrast=low["n_lesions"], shared_threshold_suv=shared,
                           hot_spots_per_free_slice_shared=gd.operating_point(det, shared)["hot_spots_per_free_slice"]),
        )
    for m in res:  # the imprint against the two references
        for ref in ("bicubic", PET_ONLY):
            b = res.get(ref, {}).get("ct_only_imprint", {}).get("imprint", float("nan"))
            a = res[m]["ct_only_imprint"]["imprint"]
            res[m]["ct_only_imprint"][f"over_{ref}"] = a / b if b > 0 else math.inf if a > 0 else math.nan
    return dict(conventions=GUIDANCE_CONVENTIONS, n_studies=len(per_study), methods=res)


def guidance_targets(g: dict, models: list[str]) -> list[dict]:
    """The issue-12 targets of each CT-reading model in the guidance section (`target_row` rows; margin > 0 met).

    Args:
        g: guidance_summary's output. models: the CT-reading models to judge (bicubic and pet_only are references).
    """
    nan, t, out = float("nan"), GUIDANCE_TARGETS, []
    ms, bic, po = g["methods"], g["methods"].get("bicubic"), g["methods"].get(PET_ONLY)
    for m in models:
        r = ms[m]
        v = r["reliance"]["reliance_psnr"]
        out.append(target_row(f"{m}: CT reliance (true - uninformative CT PSNR) >= {t['reliance_psnr_db']:g} dB", v,
                              t["reliance_psnr_db"], v - t["reliance_psnr_db"]))
        v = r["ct_only_imprint"]["imprint"]
        lim = t["imprint_over_bicubic"] * bic["ct_only_imprint"]["imprint"] if bic else nan
        out.append(target_row(f"{m}: CT-only imprint <= {t['imprint_over_bicubic']:g} x bicubic's", v, lim, lim - v))
        v = r["misregistration"][-1]["psnr"]
        lim = r["reliance"]["uninformative_psnr"]
        out.append(target_row(f"{m}: PSNR with a {GUIDANCE_SHIFTS_MM[-1]:g} mm misregistered CT >= with the"
                              " uninformative CT", v, lim, v - lim))
        v = r["pet_only_lesions"]["crc"]
        lim = po["pet_only_lesions"]["crc"] if po else nan
        out.append(target_row(f"{m}: PET-only lesion CRC >= pet_only's", v, lim, v - lim))
        d = r["detection"]  # hot spots at the shared absolute threshold, the same for bicubic and the model
        lim = bic["detection"]["hot_spots_per_free_slice_shared"] if bic else nan
        v = d["hot_spots_per_free_slice_shared"]
        out.append(target_row(f"{m}: hot spots per lesion-free slice at {d['shared_threshold_suv']:g} SUV (every"
                              " method) <= bicubic's", v, lim, lim - v))
        v = r["detection"]["sensitivity_6_10mm"]
        out.append(target_row(f"{m}: {SMALL_LESION_MM[0]:g}-{SMALL_LESION_MM[1]:g} mm lesion sensitivity >= "
                              f"{t['sensitivity_6_10mm']:g} at {GUIDANCE_FP_RATE:g} FP/slice", v,
                              t["sensitivity_6_10mm"], v - t["sensitivity_6_10mm"]))
    return out
