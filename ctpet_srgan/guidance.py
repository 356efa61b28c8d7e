"""Does the CT help, and can it hurt? Metrics of CT guidance on PET slices/volumes (pure NumPy).

Conventions: PET in SUVbw, CT in HU, arrays (rows, cols) for a slice or (slices, rows, cols) for a volume,
`spacing_mm` one value per array axis in that order, masks boolean arrays of the image's shape.

- Structures of the guided phantom world (`data_prep.phantom`, lesions.json): `inside_structure`,
  `structure_mask_on_slice` (the geometry of spheres, cylinders and slabs given in LPS mm).
- CT reliance: `body_mask`, `uninformative_ct` (the body outline filled with water), `image_parts` /
  `pool_image_parts` (PSNR, SSIM pooled over slices or studies), `ct_reliance` (a model's scores with the true CT
  minus with the uninformative CT).
- Misregistration: `shift_image_mm` (an in-plane shift by mm, bilinear), `misregistered_cts`,
  `misregistration_sweep`.
- CT-only imprint: `ct_only_imprint` (relative PET change inside structures the CT has and the PET has not).
- Lesion contrast: `lesion_crcs` (NEMA CRC of the scored lesions); PET-only lesions: `is_pet_only`,
  `pet_only_recovery` (the lesions with no CT correlate).
- Hallucinations at a matched false-positive rate: `collect_detections`, `merge_detections`,
  `threshold_at_fp_rate`, `operating_point`, `hot_spots_per_slice`.
These are the functions the evaluation's "guidance" section calls on a prepared guided-world set, per method and
study, pooled over studies (`ctpet_srgan.evaluation.guidance_section`: `guidance_study`, `guidance_summary`).
Definitions are also written in each docstring.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from ctpet_srgan import metrics

AIR_HU = -1000.0
BODY_THRESHOLD_HU = -500.0


# ----------------------------------------------------------------------------- structure geometry
def structure_extent_mm(rec: Mapping[str, Any]) -> float:
    """Radius (mm) of a sphere about `rec["center_mm"]` that holds the whole structure.

    Args:
        rec: a structure record (shape "sphere" | "cylinder" | "slab"; see `inside_structure`).
    Returns:
        the bounding radius in mm.
    """
    r = float(rec["diameter_mm"]) / 2.0
    shape = rec.get("shape", "sphere")
    if shape == "cylinder":
        return float(np.hypot(r, float(rec["length_mm"]) / 2.0))
    if shape == "slab":
        return float(np.hypot(r, float(rec["thickness_mm"]) / 2.0))
    return r


def inside_structure(rec: Mapping[str, Any], xyz_mm: np.ndarray,
                     offset_mm: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Which points lie inside a structure of the phantom world.

    Args:
        rec: dict with center_mm [x, y, z] (LPS mm), diameter_mm and shape: "sphere" (the default); "cylinder"
            (axis: unit vector, length_mm; diameter across the axis); "slab" (a disk of diameter_mm and
            thickness_mm across its unit `normal`).
        xyz_mm: (..., 3) points in LPS mm.
        offset_mm: added to the centre first (e.g. the record's shift_mm, to find it where the CT shows it).
    Returns:
        boolean array of shape xyz_mm.shape[:-1].
    """
    d = np.asarray(xyz_mm, np.float64) - (np.asarray(rec["center_mm"], np.float64) + np.asarray(offset_mm, np.float64))
    r = float(rec["diameter_mm"]) / 2.0
    shape = rec.get("shape", "sphere")
    if shape == "sphere":
        return np.einsum("...i,...i->...", d, d) <= r * r
    if shape in ("cylinder", "slab"):
        a = np.asarray(rec["axis"] if shape == "cylinder" else rec["normal"], np.float64)
        a = a / np.linalg.norm(a)
        t = d @ a
        across = d - t[..., None] * a
        half = float(rec["length_mm"] if shape == "cylinder" else rec["thickness_mm"]) / 2.0
        return (np.abs(t) <= half) & (np.einsum("...i,...i->...", across, across) <= r * r)
    raise ValueError(f"unknown structure shape {shape!r}")


def structure_mask_on_slice(rec: Mapping[str, Any], hr_affine: np.ndarray, shape: Sequence[int], *,
                            at_ct: bool = False) -> np.ndarray:
    """The pixels of one axial slice whose centres lie inside a structure.

    Args:
        rec: a structure record (see `inside_structure`); lesions.json of the guided world.
        hr_affine: 4x4 index (i = column, j = row, 0) -> LPS mm affine of the slice (the manifest's hr_affine).
        shape: (rows, cols) of the slice.
        at_ct: where the CT shows the structure (centre + rec["shift_mm"]) instead of where the PET has it.
    Returns:
        (rows, cols) boolean mask.
    """
    a = np.asarray(hr_affine, np.float64)
    rows, cols = int(shape[0]), int(shape[1])
    jj, ii = np.mgrid[0:rows, 0:cols]
    ijk = np.stack([ii, jj, np.zeros_like(ii)], -1).astype(np.float64)
    xyz = ijk @ a[:3, :3].T + a[:3, 3]
    off = rec.get("shift_mm", (0.0, 0.0, 0.0)) if at_ct else (0.0, 0.0, 0.0)
    return inside_structure(rec, xyz, off)


# ----------------------------------------------------------------------------- CT reliance
def body_mask(ct_hu: np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """The body: pixels above `threshold_hu` plus the holes they enclose (lungs, bowel gas), per 2-D slice.

    Args:
        ct_hu: CT in HU, (rows, cols) or (..., rows, cols).
        threshold_hu: tissue threshold (HU).
    Returns:
        boolean mask of ct_hu's shape: True inside the body outline (a background region that does not touch
        the slice border is a hole, so it counts as body).
    """
    import cv2

    ct = np.asarray(ct_hu, np.float32)
    flat = ct.reshape((-1,) + ct.shape[-2:])
    out = np.empty(flat.shape, bool)
    for n, sl in enumerate(flat):
        tissue = sl > threshold_hu
        _, lab = cv2.connectedComponents((~tissue).astype(np.uint8), connectivity=4)
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        outside = np.isin(lab, border[border > 0]) & ~tissue
        out[n] = ~outside
    return out.reshape(ct.shape)


def uninformative_ct(ct_hu: np.ndarray, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """The CT that tells nothing inside the body: its outline filled with water.

    Args:
        ct_hu: CT in HU, (rows, cols) or (..., rows, cols) (HR or LR: apply it to each CT input of a model).
        threshold_hu: body threshold (HU); see `body_mask`.
    Returns:
        float32 HU array of the same shape: 0 HU inside `body_mask`, -1000 HU outside.
    """
    return np.where(body_mask(ct_hu, threshold_hu), 0.0, AIR_HU).astype(np.float32)


def nanmean(values: Sequence[float | None]) -> float:
    """Mean ignoring NaN / None (an infinite value, e.g. the PSNR of an exact output, stays infinite; NaN if empty)."""
    v = [x for x in values if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def image_parts(truth: np.ndarray, pred: np.ndarray, *, data_range: float, mask: np.ndarray | None = None,
                with_ssim: bool = False) -> dict[str, Any]:
    """The poolable pieces of PSNR and SSIM of one prediction (a slice, a study): pool them with `pool_image_parts`.

    Args:
        truth, pred: SUV, (rows, cols) or (slices, rows, cols).
        data_range: PSNR peak / SSIM range (SUV, e.g. 10).
        mask: pixels scored (e.g. the body); None = all.
        with_ssim: also each slice's SSIM (`metrics.ssim`, windows centred in the mask; TensorFlow; needs rows, cols
            >= 11); slices with an empty mask are left out.
    Returns:
        dict(se: sum of squared errors (SUV^2) over the scored pixels, n: their number, ssim: per-slice SSIMs or []).
    """
    t, p = np.asarray(truth, np.float64), np.asarray(pred, np.float64)
    m = np.ones(t.shape, bool) if mask is None else np.asarray(mask, bool)
    se, n = metrics.masked_mse(t, p, m)
    ssim = []
    if with_ssim:
        t3, p3, m3 = (a.reshape((-1,) + t.shape[-2:]) for a in (t, p, m))
        ssim = [metrics.ssim(a, b, data_range=data_range, mask=c if mask is not None else None)
                for a, b, c in zip(t3, p3, m3) if c.any()]
    return dict(se=se, n=n, ssim=ssim)


def pool_image_parts(parts: Sequence[Mapping[str, Any]], data_range: float) -> dict[str, float]:
    """PSNR and SSIM of several `image_parts` together (e.g. every study of a split).

    Returns:
        dict(psnr: dB from the MSE pooled over every scored pixel (NaN for none), ssim: mean of the per-slice SSIMs
        (NaN ignored; NaN for none)).
    """
    se, n = sum(p["se"] for p in parts), sum(p["n"] for p in parts)
    return dict(psnr=metrics.psnr_from_mse(se / n, data_range) if n else float("nan"),
                ssim=nanmean([x for p in parts for x in p["ssim"]]))


def ct_reliance(with_true: Mapping[str, float], with_uninformative: Mapping[str, float]) -> dict[str, float]:
    """How much a model takes from the CT: its scores with the true CT minus with `uninformative_ct`.

    Args:
        with_true, with_uninformative: the same scores (e.g. psnr dB, ssim, crc; `pool_image_parts`,
            `lesion_crcs`) of the model run with the true HR CT and with the uninformative CT, on the same slices
            and pixels (the body of the true CT).
    Returns:
        dict(true_<k>, uninformative_<k>, reliance_<k>) for each key k of with_true, in its order; reliance = true -
        uninformative: > 0 the CT helps, 0 the model ignores the CT inside the body, < 0 the CT hurts.
    """
    out: dict[str, float] = {}
    for k in with_true:
        out[f"true_{k}"], out[f"uninformative_{k}"] = with_true[k], with_uninformative[k]
        out[f"reliance_{k}"] = with_true[k] - with_uninformative[k]
    return out


# ----------------------------------------------------------------------------- misregistration
def shift_image_mm(img: np.ndarray, shift_rc_mm: Sequence[float], spacing_mm: Sequence[float], *,
                   fill: float = AIR_HU) -> np.ndarray:
    """Moves the content of a slice (or of each slice of a stack) in-plane by a distance in mm.

    Args:
        img: (rows, cols) or (..., rows, cols), e.g. a CT in HU.
        shift_rc_mm: (d_row, d_col) mm: the content moves toward +row by d_row and toward +col by d_col.
        spacing_mm: (row, col) pixel size in mm.
        fill: value of what enters from outside the slice (air, -1000 HU, for a CT).
    Returns:
        float32 array of img's shape: out(r, c) = img(r - d_row / s_row, c - d_col / s_col), bilinear between
        pixel centres (exact for whole-pixel shifts).
    """
    import cv2

    a = np.asarray(img, np.float32)
    dr, dc = (float(d) / float(s) for d, s in zip(shift_rc_mm, spacing_mm))
    if dr == 0 and dc == 0:
        return a.copy()
    flat = a.reshape((-1,) + a.shape[-2:])
    m = np.float32([[1, 0, dc], [0, 1, dr]])
    out = np.stack([cv2.warpAffine(sl, m, (sl.shape[1], sl.shape[0]), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=float(fill)) for sl in flat])
    return out.reshape(a.shape)


def misregistered_cts(hr_ct: np.ndarray, spacing_mm: Sequence[float], shifts_mm: Sequence[float] = (0, 2, 5, 10),
                      direction_rc: Sequence[float] = (0.0, 1.0)) -> dict[float, np.ndarray]:
    """The CTs of a misregistration sweep: the CT moved in-plane against the PET by each of `shifts_mm`.

    Args:
        hr_ct: HU, (rows, cols) or a stack; spacing_mm: (row, col) pixel size (mm).
        shifts_mm: distances (mm) along `direction_rc` (a (row, col) direction, normalised here; default +col, x).
    Returns:
        shift (mm, float) -> `shift_image_mm` of the CT (bilinear, air fills; 0 mm: a copy of the CT).
    """
    d = np.asarray(direction_rc, np.float64)
    d = d / np.linalg.norm(d)
    return {float(s): shift_image_mm(hr_ct, d * float(s), spacing_mm) for s in shifts_mm}


def misregistration_sweep(scores_by_shift: Mapping[float, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The sweep's rows: the same model's scores with each CT of `misregistered_cts`.

    Args:
        scores_by_shift: shift (mm) -> the scores of the model run with that CT (e.g. psnr on the body of the
            unshifted CT, so every shift is scored on the same pixels; lesion CRC; hot spots), in sweep order.
    Returns:
        one dict per shift: shift_mm first, then that shift's scores.
    """
    return [{"shift_mm": float(s), **row} for s, row in scores_by_shift.items()]


# ----------------------------------------------------------------------------- CT-only imprint
def ct_only_imprint(pred: np.ndarray, truth: np.ndarray, masks: Sequence[np.ndarray]) -> dict[str, Any]:
    """How much of the CT-only structures a PET image shows (the truth has none of them: its change is 0).

    Args:
        pred: PET (SUV) to test, (rows, cols) or a stack; truth: the HR PET truth (SUV), same shape.
        masks: one boolean mask per CT-only structure (where the model's CT shows it, e.g.
            `structure_mask_on_slice(rec, affine, shape, at_ct=True)`), same shape as pred.
    Returns:
        dict(imprint, per_structure, n): per_structure[i] = (mean(pred in mask_i) - mean(truth in mask_i)) /
        mean(truth in mask_i) (signed, NaN for an empty mask or a truth mean <= 0); imprint = the mean of
        |per_structure| over the finite ones (a fraction: 0.1 = 10 %; NaN if none). Compare a model's imprint
        with bicubic's (noise and blur alone).
    """
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    rel = []
    for m in masks:
        m = np.asarray(m, bool)
        if not m.any() or t[m].mean() <= 0:
            rel.append(float("nan"))
            continue
        rel.append(float((p[m].mean() - t[m].mean()) / t[m].mean()))
    fin = [abs(r) for r in rel if math.isfinite(r)]
    return {"imprint": float(np.mean(fin)) if fin else float("nan"), "per_structure": rel, "n": len(fin)}


# ----------------------------------------------------------------------------- PET-only lesions
def is_pet_only(lesion: Mapping[str, Any]) -> bool:
    """A lesion with no CT correlate: lesions.json's has_ct_correlate is false (a lesion without the key is not)."""
    return lesion.get("has_ct_correlate") is False


def lesion_crcs(images: Sequence[np.ndarray], lesions_per_slice: Sequence[Sequence[Mapping[str, Any]]],
                spacing_mm: Sequence[float], *, background_masks: Sequence[np.ndarray | None] | None = None,
                pet_only: bool = False) -> list[float]:
    """NEMA contrast recovery (`metrics.sphere_contrast`) of the scored hot lesions, each on its slice.

    Args:
        images: PET slices (SUV). lesions_per_slice: per slice, the lesions crossing it (center_rc (row, col px),
            radius_mm (cross-section radius on that slice), uptake_ratio (> 1), scored (default True: the slice
            nearest the centre), has_ct_correlate; as `ctpet_srgan.evaluation.place_lesions` gives them).
        spacing_mm: (row, col) pixel size (mm). background_masks: per slice, where background ROIs may lie (the
            body minus every lesion).
        pet_only: only the lesions with no CT correlate (`is_pet_only`).
    Returns:
        the CRC of each scored lesion (ROI: its cross-section diameter 2 radius_mm), slice by slice; compare the
        fused model's PET-only CRC with pet_only's (`pet_only_recovery`).
    """
    return [metrics.sphere_contrast(images[k], les["center_rc"], 2 * les["radius_mm"], spacing_mm, les["uptake_ratio"],
                                    background_mask=None if background_masks is None else background_masks[k])["crc"]
            for k, ls in enumerate(lesions_per_slice) for les in ls
            if les.get("scored", True) and (not pet_only or is_pet_only(les))]


def pet_only_recovery(crcs: Sequence[float]) -> dict[str, Any]:
    """PET-only lesion recovery from `lesion_crcs(..., pet_only=True)` (of one study, or pooled over several).

    Returns:
        dict(crc: mean CRC (NaN ignored; NaN for none), n_lesions: the finite ones). Below pet_only's, the CT
        suppresses what it does not show.
    """
    return dict(crc=nanmean(crcs), n_lesions=int(np.sum(np.isfinite(crcs))))


# ----------------------------------------------------------------------------- hallucinations
def collect_detections(images: Sequence[np.ndarray], lesions_per_slice: Sequence[Sequence[Mapping[str, Any]]],
                       spacing_mm: Sequence[float], *, min_threshold: float, min_separation_mm: float = 5.0,
                       masks: Sequence[np.ndarray | None] | None = None,
                       free: Sequence[bool] | None = None,
                       truth_near: Sequence[np.ndarray] | None = None) -> dict[str, Any]:
    """Every candidate hot spot of a set of slices, matched to the lesions (`metrics.detect_hot_spots`,
    `metrics.match_detections`), so that any higher threshold can be applied afterwards.

    Args:
        images: PET slices (SUV). lesions_per_slice: per slice, the lesions crossing it (center_rc,
            radius_mm, scored, diameter_mm, optional uptake_ratio; see `metrics.match_detections`); [] on a
            lesion-free slice.
        spacing_mm: (row, col) mm. min_threshold: the lowest SUV a candidate needs. masks: per-slice body masks.
        free: per slice, whether it counts as lesion-free (default: no lesion crosses it); e.g. clear of every
            lesion by a margin, so that a lesion's blurred edge is no hallucination.
        truth_near: per slice, the HR truth's local maximum (`local_max`, SUV): a candidate outside the lesions
            is then a false positive only at thresholds above the truth there (a truly hot organ is no
            hallucination); default: at every threshold up to its score.
    Returns:
        dict(lesion_scores, diameters, uptake_ratios, fp_scores, fp_truth, free_fp_scores, free_fp_truth, n_slices,
        n_free): per scored lesion its best detection score (-inf if none), diameter (mm) and uptake ratio (NaN if
        not given); the false-positive candidates' scores and the truth's local maximum at each (-inf without
        truth_near), on all slices and on lesion-free slices only. A candidate counts as a false positive at
        threshold t when fp_truth < t <= fp_score (`fp_count`).
    """
    out: dict[str, Any] = dict(lesion_scores=[], diameters=[], uptake_ratios=[], fp_scores=[], fp_truth=[],
                               free_fp_scores=[], free_fp_truth=[], n_slices=0, n_free=0)
    for n, (img, les) in enumerate(zip(images, lesions_per_slice)):
        det = metrics.detect_hot_spots(img, threshold=min_threshold, spacing_mm=spacing_mm,
                                       min_separation_mm=min_separation_mm, mask=None if masks is None else masks[n])
        scores, fps = metrics.match_detections(det, list(les), spacing_mm)
        fp_rc = [(r, c) for r, c, _ in det if not any(
            math.hypot((r - x["center_rc"][0]) * spacing_mm[0], (c - x["center_rc"][1]) * spacing_mm[1])
            <= x["radius_mm"] for x in les)]  # the false positives, in match_detections' order
        near = ([float(truth_near[n][int(round(r)), int(round(c))]) for r, c in fp_rc] if truth_near is not None
                else [-math.inf] * len(fps))
        scored = [x for x in les if x.get("scored", True)]
        out["lesion_scores"] += scores
        out["diameters"] += [float(x["diameter_mm"]) for x in scored]
        out["uptake_ratios"] += [float(x.get("uptake_ratio", math.nan)) for x in scored]
        out["fp_scores"] += fps
        out["fp_truth"] += near
        out["n_slices"] += 1
        if (not les) if free is None else free[n]:
            out["free_fp_scores"] += fps
            out["free_fp_truth"] += near
            out["n_free"] += 1
    return out


def local_max(img: np.ndarray, radius_mm: float, spacing_mm: Sequence[float]) -> np.ndarray:
    """The maximum of a slice over the rectangle reaching `radius_mm` each way (the detector's neighbourhood).

    Args:
        img: (rows, cols), e.g. the HR truth (SUV); radius_mm: mm; spacing_mm: (row, col) mm.
    Returns:
        float64 (rows, cols) array.
    """
    import cv2

    half = [max(1, int(round(radius_mm / s))) for s in spacing_mm]
    return cv2.dilate(np.asarray(img, np.float64), np.ones((2 * half[0] + 1, 2 * half[1] + 1), np.uint8))


def fp_count(scores: Sequence[float], truth: Sequence[float] | None, threshold: float) -> int:
    """False positives at `threshold`: candidates with truth < threshold <= score (truth None: all -inf)."""
    s = np.asarray(scores, np.float64)
    t = np.full(s.shape, -np.inf) if truth is None else np.asarray(truth, np.float64)
    return int(np.sum((s >= threshold) & ((t < threshold) | np.isneginf(t))))


def merge_detections(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """`collect_detections` outputs of several sets of slices (e.g. studies) pooled into one."""
    out: dict[str, Any] = dict(lesion_scores=[], diameters=[], uptake_ratios=[], fp_scores=[], fp_truth=[],
                               free_fp_scores=[], free_fp_truth=[], n_slices=0, n_free=0)
    for d in parts:
        for k in out:
            out[k] = out[k] + (list(d.get(k, [])) if isinstance(out[k], list) else int(d.get(k, 0)))
        for k, ref in (("fp_truth", "fp_scores"), ("free_fp_truth", "free_fp_scores")):
            if k not in d:
                out[k] += [-math.inf] * len(d.get(ref, []))
    return out


def threshold_at_fp_rate(fp_scores: Sequence[float], n_slices: int, fp_per_slice: float,
                         fp_truth: Sequence[float] | None = None) -> float:
    """The lowest detection threshold from which on the false-positive rate never exceeds `fp_per_slice`.

    Args:
        fp_scores: scores (SUV) of every false-positive candidate; n_slices: slices they came from.
        fp_per_slice: the allowed rate (e.g. 0.5).
        fp_truth: the truth's local maximum at each candidate (`collect_detections`); a candidate is a false
            positive at t only when its truth < t (`fp_count`). None: always.
    Returns:
        threshold t (SUV): fp_count(t') / n_slices <= fp_per_slice for every t' >= t, t as low as possible (-inf
        when every candidate fits). Each method gets its own t: methods are compared at the same false-positive
        rate.
    """
    allowed = int(math.floor(float(fp_per_slice) * int(n_slices) + 1e-9))
    s = np.asarray(fp_scores, np.float64)
    if fp_truth is None:
        s = np.sort(s)[::-1]
        if s.size <= allowed:
            return float("-inf")
        return float(np.nextafter(s[allowed], np.inf))
    tr = np.asarray(fp_truth, np.float64)
    # fp_count is piecewise constant; it can only change at a score or just above a truth value
    grid = np.unique(np.concatenate([s, np.nextafter(s, np.inf), np.nextafter(tr[np.isfinite(tr)], np.inf)]))
    bad = [g for g in grid if fp_count(s, tr, g) > allowed]
    if not bad:
        return float("-inf")
    return float(grid[np.searchsorted(grid, max(bad), side="right")]) if max(bad) < grid[-1] else float(
        np.nextafter(grid[-1], np.inf))


def operating_point(det: Mapping[str, Any], threshold: float, *, diameter_range_mm: tuple[float, float] | None = None,
                    max_uptake_ratio: float | None = None) -> dict[str, float]:
    """Sensitivity and false positives of `collect_detections` output at one threshold.

    Args:
        det: `collect_detections` output; threshold: SUV.
        diameter_range_mm: only lesions with lo <= diameter <= hi count for the sensitivity (e.g. (6, 10)).
        max_uptake_ratio: only lesions with uptake_ratio <= this count (low contrast, e.g. 3 for 3:1).
    Returns:
        dict(threshold, sensitivity, n_lesions, fp_per_slice (all slices), hot_spots_per_free_slice (false
        positives on lesion-free slices / lesion-free slices: the hallucinations)); NaN where a count is 0.
    """
    ls, ds = np.asarray(det["lesion_scores"], np.float64), np.asarray(det["diameters"], np.float64)
    keep = np.ones(ls.shape, bool)
    if diameter_range_mm is not None:
        keep &= (ds >= diameter_range_mm[0]) & (ds <= diameter_range_mm[1])
    if max_uptake_ratio is not None:
        keep &= np.asarray(det.get("uptake_ratios", [math.nan] * ls.size), np.float64) <= max_uptake_ratio
    ls = ls[keep]
    nan = float("nan")
    n_fp = fp_count(det["fp_scores"], det.get("fp_truth"), threshold)
    n_free_fp = fp_count(det["free_fp_scores"], det.get("free_fp_truth"), threshold)
    return dict(threshold=float(threshold), sensitivity=float(np.mean(ls >= threshold)) if ls.size else nan,
                n_lesions=int(ls.size), fp_per_slice=n_fp / det["n_slices"] if det["n_slices"] else nan,
                hot_spots_per_free_slice=n_free_fp / det["n_free"] if det["n_free"] else nan)


def hot_spots_per_slice(images: Sequence[np.ndarray], *, threshold: float, spacing_mm: Sequence[float],
                        masks: Sequence[np.ndarray | None] | None = None, min_separation_mm: float = 5.0) -> float:
    """Mean number of hot spots (`metrics.detect_hot_spots` at `threshold` SUV) per slice, e.g. on lesion-free
    slices (every one a hallucination).

    Args:
        images: PET slices (SUV); threshold: SUV; spacing_mm: (row, col) mm; masks: per-slice body masks.
    Returns:
        hot spots / slice (NaN for no slices).
    """
    counts = [len(metrics.detect_hot_spots(img, threshold=threshold, spacing_mm=spacing_mm,
                                           min_separation_mm=min_separation_mm,
                                           mask=None if masks is None else masks[n])) for n, img in enumerate(images)]
    return float(np.mean(counts)) if counts else float("nan")
