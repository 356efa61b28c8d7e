"""Scores SR methods (interpolation baselines and trained generators) on the held-out split of a prepared data set.

The library behind `evaluate.py`. Every method runs on the same slices (the test split, by study); the results
dict is written as OUT/results.json (last: its presence means the evaluation finished), OUT/results.md and
OUT/figures/*.png (`ctpet_srgan.figures`). Metric definitions: `ctpet_srgan.metrics` and docs/metrics.md.

Conventions (all written into results.json's settings):
- PET PSNR/SSIM in SUVbw with peak R = pet_range_suv (default 10 SUV; values are not clipped, R only sets the
  PSNR peak and the SSIM constants). CT PSNR/SSIM in HU after clipping truth and output to ct_range_hu
  (default -1024..3071 HU, R = 4095 HU).
- "body": pixels where the HR CT > -500 HU. SSIM (body): mean of the SSIM map over windows centred in the body.
  PSNR of a study = 10 log10(R^2 / MSE pooled over its slices (or body pixels)); SSIM of a study = mean over its
  slices (whole) or the pooled body windows (body). A method's value = mean over studies, so every study weighs
  the same.
- Lesions (studies with true HR PET and lesions in manifest.json): each hot lesion is scored on the slice nearest
  its centre; NEMA CRC / BV / CNR with a ROI of the lesion's cross-section diameter on that slice, 12 background
  ROIs on a ring of radius D + 10 mm, kept when inside the body and clear of every lesion by 5 mm. Detector: local
  maxima >= det_threshold_suv SUV in the body, at least min_separation_mm apart; a detection within a lesion's
  cross-section is a hit, else a false positive. FROC: the same detector with candidates down to froc_min_suv,
  swept over thresholds. Lesion-free studies with true HR PET are scored for hallucinated hot spots: detections
  (>= the threshold) where the HR truth stays below the threshold within min_separation_mm, per slice.
- Fusion quality (each method's SR PET against its two sources: the bicubic-upsampled LR PET and the HR CT): MI
  (64 bins), SSIM and Qabf on images mapped to [0, 1] (PET over [0, R] SUV, CT over the CT range).
- results.json: NaN (nothing to score, e.g. CT metrics of a PET-only model) is null; an infinite value (PSNR of
  an exact output) is the string "inf".
- Fusion gain: per-study difference (fused model minus PET-only model) with a percentile bootstrap 95% CI over
  studies (2000 resamples, seed `seed`).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ctpet_srgan import figures, metrics, quantification, records
from ctpet_srgan import guidance as gd
from ctpet_srgan.atomic import write_bytes_atomic, write_json_atomic
from ctpet_srgan.geometry import Volume
from ctpet_srgan.quantification import TUMOUR_KEYS
from ctpet_srgan.report import clean, results_markdown

BODY_HU = gd.BODY_THRESHOLD_HU  # one body threshold for scoring, the ablation's CT and the guidance section
LESION_MARGIN_MM = 5.0
MI_BINS = 64
N_BOOT = 2000
BASELINES = {"bicubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4"}
FUSED, PET_ONLY = "fused_srgan", "pet_only"
IMAGE_METRICS = ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body",
                 "psnr_ct", "ssim_ct", "psnr_ct_body", "ssim_ct_body")
GAIN_METRICS = ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body", "crc_mean")
FUSION_KEYS = ("mi_pet", "mi_ct", "ssim_pet", "ssim_ct", "qabf")
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


# ----------------------------------------------------------------------------- data
def _slice_record(ex: dict) -> dict:
    """One parsed example -> the slice dict of `iter_studies` (2-D float32 images, index, affine, truth flag)."""
    sl = {k: np.asarray(ex[k])[..., 0].astype(np.float32) for k in records.IMAGE_KEYS}
    sl.update(slice_index=int(ex["slice_index"]), hr_affine=np.asarray(ex["hr_affine"], float),
              has_truth=bool(ex["has_truth"]))
    if "hr_mask" in ex and int(ex.get("has_mask", 0)):  # tumour mask on the HR grid (records with has_mask = 1)
        sl["hr_mask"] = np.asarray(ex["hr_mask"])[..., 0] > 0.5
    return sl


def iter_studies(data_dir: str | Path, split: str = "test",
                 max_slices: int | None = None) -> Iterator[tuple[str, list[dict]]]:
    """The studies of one split of a prepared data set, each as soon as all its slices have been read.

    Args:
        data_dir: prepared data set (manifest.json + shards). split: "train", "val" or "test".
        max_slices: read only the first N slices of the split (smoke runs).

    Returns:
        An iterator of (study_hash, slices), slices sorted by slice_index, each a dict of 2-D float32 images
        (hr_pet, lr_pet in SUV; hr_ct, lr_ct in HU), slice_index, hr_affine (4x4, index (i, j, 0) -> LPS mm),
        has_truth and, where the records carry a tumour mask (has_mask = 1), hr_mask (bool [H, W]).
    """
    import tensorflow as tf

    manifest = records.read_manifest(data_dir)
    paths = records.shard_paths(data_dir, manifest, split)
    ds = tf.data.TFRecordDataset(paths, compression_type=manifest.get("compression") or "")
    ds = ds.map(records.parse_example)
    expected = {h: int(s.get("slices", 0)) for h, s in manifest["studies"].items()}
    pending: dict[str, list[dict]] = {}
    for n, ex in enumerate(ds.as_numpy_iterator()):
        if max_slices is not None and n >= max_slices:
            break
        h = ex["study"].decode()
        pending.setdefault(h, []).append(_slice_record(ex))
        if len(pending[h]) == expected.get(h, -1):
            yield h, sorted(pending.pop(h), key=lambda s: s["slice_index"])
    for h, sl in pending.items():
        yield h, sorted(sl, key=lambda s: s["slice_index"])


def upsample(lr: np.ndarray, scale: int, method: str) -> np.ndarray:
    """Interpolation baseline.

    Args:
        lr: [n, h, w] images (any units). scale: integer factor. method: a cv2 INTER_* name.

    Returns:
        [n, h*scale, w*scale] float32 upsampled with OpenCV.
    """
    import cv2

    flag = getattr(cv2, method)
    return np.stack([cv2.resize(x, (x.shape[1] * scale, x.shape[0] * scale), interpolation=flag) for x in lr])


def run_method(method: Any, slices: list[dict], scale: int, batch_size: int,
               ct_hu: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """One method's SR PET and SR CT for one study.

    Args:
        method: a baseline's cv2 flag name (str) or a Predictor. slices: the study's slices.
        scale: HR/LR factor. batch_size: slices per model call.
        ct_hu: the HR CT (HU, [n, H, W]) given to a model that takes a CT; default the slices' own HR CT.

    Returns:
        {"sr_pet": [n, H, W] SUV, "sr_ct": [n, H, W] HU or None}.
    """
    lr_pet = np.stack([s["lr_pet"] for s in slices])
    if isinstance(method, str):
        return {"sr_pet": upsample(lr_pet, scale, method),
                "sr_ct": upsample(np.stack([s["lr_ct"] for s in slices]), scale, method)}
    ct = None
    if method.ct_input is not None:
        ct = np.stack([s["hr_ct"] for s in slices]) if ct_hu is None else ct_hu
    out = method.predict(lr_pet, ct, batch_size=batch_size)
    return {"sr_pet": np.asarray(out["sr_pet"], np.float32), "sr_ct": out.get("sr_ct")}


# ----------------------------------------------------------------------------- lesion geometry
def slice_volume(hr_affine: np.ndarray) -> Volume:
    """The HR grid of a slice as a `geometry.Volume` (index (i, j, k) -> LPS mm; k along the slice axis)."""
    return Volume(np.zeros((1, 1, 1), np.float32), np.asarray(hr_affine, float))


def spacing_rc(hr_affine: np.ndarray) -> tuple[float, float]:
    """(row, col) pixel spacing in mm of a slice grid."""
    i, j, _ = slice_volume(hr_affine).spacing_mm
    return (j, i)


def lesion_on_slice(center_mm, hr_affine) -> tuple[float, tuple[float, float]]:
    """Where a point lies relative to a slice.

    Args:
        center_mm: LPS point (mm). hr_affine: the slice grid (index (i, j, 0) -> LPS mm).

    Returns:
        (signed distance in mm from the slice plane along the slice axis, (row, col) in pixels of the point).
    """
    v = slice_volume(hr_affine)
    i, j, k = v.patient_to_index(np.asarray(center_mm, float))
    return float(k * v.spacing_mm[2]), (float(j), float(i))


def place_lesions(lesions: list[dict], slices: list[dict]) -> tuple[list[list[dict]], int]:
    """The hot lesions (uptake_ratio > 1) of a study on its slices.

    Args:
        lesions: manifest lesions (center_mm LPS, diameter_mm, uptake_ratio). slices: the study's slices.

    Returns:
        (per slice: the hot lesions crossing it as dicts of id, center_rc (px), radius_mm (cross-section radius),
        diameter_mm, uptake_ratio and scored (this is the slice nearest the centre); the number of hot lesions
        that cross none of the slices).
    """
    per_slice: list[list[dict]] = [[] for _ in slices]
    missing = 0
    for lid, les in enumerate(lesions):
        if float(les.get("uptake_ratio", 0)) <= 1:
            continue
        r = float(les["diameter_mm"]) / 2
        geo = [lesion_on_slice(les["center_mm"], s["hr_affine"]) for s in slices]
        k0 = int(np.argmin([abs(dz) for dz, _ in geo])) if geo else -1
        if k0 < 0 or abs(geo[k0][0]) >= r:
            missing += 1
            continue
        for k, (dz, rc) in enumerate(geo):
            if abs(dz) < r:
                per_slice[k].append(dict(id=lid, center_rc=rc, radius_mm=math.sqrt(r * r - dz * dz),
                                         diameter_mm=float(les["diameter_mm"]), uptake_ratio=float(les["uptake_ratio"]),
                                         scored=k == k0))
    return per_slice, missing


# ----------------------------------------------------------------------------- scoring
def _new_acc() -> dict:
    keys = ("pet_se", "pet_n", "pet_se_body", "pet_n_body", "ct_se", "ct_n", "ct_se_body", "ct_n_body",
            "pet_tt_body", "ct_tt_body")
    acc = {k: 0.0 for k in keys}
    acc.update(pet_ssim=[], ct_ssim=[], pet_ssim_body=[], ct_ssim_body=[], fusion=[], n_slices=0)
    return acc


def _accumulate_image(acc: dict, key: str, truth: np.ndarray, out: np.ndarray, body: np.ndarray,
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
    acc = _new_acc()
    lesion_rows, det = [], dict(lesion_scores=[], diameters=[], fp_scores=[], halluc=[], n_slices=0, n_free=0)
    for k, s in enumerate(slices):
        out = pred["sr_pet"][k]
        body = s["hr_ct"] > BODY_HU
        acc["n_slices"] += 1
        _accumulate_image(acc, "pet", s["hr_pet"], out, body, cfg["pet_range_suv"])
        if pred.get("sr_ct") is not None:
            _accumulate_image(acc, "ct", np.clip(s["hr_ct"], ct_lo, ct_hi), np.clip(pred["sr_ct"][k], ct_lo, ct_hi),
                              body, ct_hi - ct_lo)
        acc["fusion"].append(fusion_quality(s, out, cfg))
        if with_truth:
            _score_lesion_slice(out, s, body, lesions_per_slice[k], cfg, lesion_rows, det, lesion_free)
    return dict(acc=acc, lesions=lesion_rows, det=det)


# ----------------------------------------------------------------------------- aggregation
def _nanmean(v) -> float:
    """Mean ignoring NaN / None (an infinite value, e.g. the PSNR of an exact output, stays infinite)."""
    v = [x for x in v if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _nanmedian(v) -> float:
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
            out[f"ssim_{key}{suf}"] = _nanmean(a[f"{key}_ssim{suf}"])
    tt = a["pet_tt_body"]
    out["nrmse_pet_body"] = math.sqrt(a["pet_se_body"] / tt) if tt > 0 else float("nan")
    les = [row["crc"] for row in sc["lesions"]]
    out["crc_mean"] = _nanmean(les)
    return out


def _lesion_summary(per_study: dict[str, dict]) -> dict:
    """NEMA CRC / BV / CNR per lesion diameter (mean over lesions of that diameter) and the lesion count."""
    rows = [row for sc in per_study.values() for row in sc["lesions"]]
    sizes = sorted({row["diameter_mm"] for row in rows})
    res = {key: {f"{d:g}": _nanmean([row[key] for row in rows if row["diameter_mm"] == d]) for d in sizes}
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
    res: dict[str, Any] = {key: _nanmean([s[key] for s in sums.values()]) for key in IMAGE_METRICS}
    res["n_studies"] = len(per_study)
    res["n_slices"] = int(sum(sc["acc"]["n_slices"] for sc in per_study.values()))
    res.update(_lesion_summary(per_study))
    res.update(_detection_summary(per_study, cfg))
    fus = [f for sc in per_study.values() for f in sc["acc"]["fusion"]]
    res["fusion"] = {k: _nanmean([f[k] for f in fus]) for k in FUSION_KEYS}
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


# ----------------------------------------------------------------------------- tumour quantification (3-D)
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


def score_image_only(pred: dict, slices: list[dict], cfg: dict) -> dict:
    """PET image-quality accumulators of one method on a study (whole and body), without lesions or fusion."""
    acc = _new_acc()
    for k, s in enumerate(slices):
        acc["n_slices"] += 1
        _accumulate_image(acc, "pet", s["hr_pet"], pred["sr_pet"][k], s["hr_ct"] > BODY_HU, cfg["pet_range_suv"])
    return dict(acc=acc, lesions=[], det={})


# ----------------------------------------------------------------------------- patients, ablation, targets
def patient_rows(sums: dict[str, dict], tumour: dict[str, dict]) -> dict[str, dict]:
    """Per study: PATIENT_KEYS from study_summary's output and, where scored, the tumour numbers."""
    return {h: dict({k: sums[h][k] for k in PATIENT_KEYS}, **tumour.get(h, {})) for h in sums}


def medians(rows: dict[str, dict]) -> dict:
    """Medians over studies (NaN ignored) of PATIENT_KEYS and the tumour numbers; |error| medians as abs_<key>_err.

    Returns:
        key -> median, plus n_studies and n_tumours (studies with tumour numbers).
    """
    med = _nanmedian
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
    return dict(median_diff={k: _nanmedian(v) for k, v in diffs.items()}, paired=paired_bootstrap(a, b, keys, seed))


TARGETS = dict(psnr_over_bicubic_db=1.5, suvmax_fraction_of_bicubic=0.5, suvmean_abs_error=0.02,
               real_over_water_ct_db=0.3)


def _target(name: str, value: float, limit: float | None, margin: float, met: bool | None = None) -> dict:
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
    out = [_target(f"{fused}: median PSNR (body) - bicubic's >= {t['psnr_over_bicubic_db']:g} dB", d_psnr,
                   t["psnr_over_bicubic_db"], d_psnr - t["psnr_over_bicubic_db"])]
    lim = t["suvmax_fraction_of_bicubic"] * b.get("abs_suvmax_err", nan)
    v = f.get("abs_suvmax_err", nan)
    out.append(_target(f"{fused}: median |SUVmax error| <= {t['suvmax_fraction_of_bicubic']:g} x bicubic's", v, lim,
                       lim - v))
    v = f.get("abs_suvmean_err", nan)
    out.append(_target(f"{fused}: median |SUVmean error| <= {t['suvmean_abs_error']:g}", v, t["suvmean_abs_error"],
                       t["suvmean_abs_error"] - v))
    g = (gain or {}).get("metrics", {}).get("psnr_pet_body", {})
    lo = (g.get("ci95") or [nan, nan])[0]
    lo = nan if lo is None else lo
    out.append(_target(f"{fused} - pet_only: mean PSNR (body) gain > 0 with its 95% CI above 0",
                       g.get("mean", nan) if g.get("mean") is not None else nan, 0.0, lo,
                       met=bool(lo > 0) if np.isfinite(lo) else None))
    v = (ablation or {}).get("median_diff", {}).get("psnr_pet_body", nan)
    out.append(_target(f"{fused}: real CT - water CT median PSNR (body) >= {t['real_over_water_ct_db']:g} dB", v,
                       t["real_over_water_ct_db"], v - t["real_over_water_ct_db"]))
    return out


# ----------------------------------------------------------------------------- guidance (issue 12)
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
                    " method's matched threshold",
    ct_only_imprint="mean over CT-only structures (lesions.json ct_only, where the CT shows them) of"
                    " |mean(SR) - mean(truth)| / mean(truth) inside them; truth: 0",
    pet_only_crc="NEMA CRC of the hot lesions with has_ct_correlate false, slice nearest the centre",
    detection=f"local maxima >= t SUV in the body; t per method = the lowest threshold with <= {GUIDANCE_FP_RATE:g}"
              " false positives per slice (all slices of the split), a candidate outside the lesions being a false"
              " positive at t when the HR truth's maximum within min_separation_mm of it is < t (a truly hot organ"
              " is no hallucination); hot spots = false positives on slices clear"
              f" of every lesion by {LESION_MARGIN_MM:g} mm; small = {SMALL_LESION_MM[0]:g}-{SMALL_LESION_MM[1]:g} mm,"
              f" low contrast = uptake ratio <= {LOW_CONTRAST_RATIO:g}",
)


def is_guided(manifest: dict) -> bool:
    """Whether a prepared set holds guided-world phantom studies (manifest studies with world "guided")."""
    return any(s.get("world") == "guided" for s in manifest.get("studies", {}).values())


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
    R, sp = cfg["pet_range_suv"], g["spacing"]
    se, n = metrics.masked_mse(g["truth"], pred, g["body"])
    ssim = ([metrics.ssim(t, p, data_range=R, mask=b) for t, p, b in zip(g["truth"], pred, g["body"]) if b.any()]
            if with_ssim else [])
    crc = [metrics.sphere_contrast(pred[k], les["center_rc"], 2 * les["radius_mm"], sp, les["uptake_ratio"],
                                   background_mask=g["bkg"][k])["crc"]
           for k, ls in enumerate(g["per_slice"]) for les in ls if les["scored"]]
    det = gd.collect_detections(list(pred), g["accept"], sp, min_threshold=cfg["froc_min_suv"],
                                min_separation_mm=cfg["min_separation_mm"], masks=list(g["body"]), free=g["free"],
                                truth_near=g["truth_near"])
    return dict(se=se, n=n, ssim=ssim, crc=crc, det=det)


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
            les["pet_only"] = lesions[les["id"]].get("has_ct_correlate") is False
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
    cts.update({f"shift_{s:g}": gd.shift_image_mm(ct, (0.0, s), sp) for s in GUIDANCE_SHIFTS_MM if s})
    out = {}
    for m, uses_ct in takes_ct.items():
        pred = np.asarray(run(m, None), np.float64)
        row = {"true": _variant_scores(pred, g, cfg, with_ssim=True)}
        for v, c in cts.items():
            row[v] = (_variant_scores(np.asarray(run(m, c), np.float64), g, cfg, with_ssim=v == "uninformative")
                      if uses_ct else row["true"])
        row["imprint"] = gd.ct_only_imprint(pred, truth, masks)["per_structure"]
        row["pet_only_crc"] = [metrics.sphere_contrast(pred[k], les["center_rc"], 2 * les["radius_mm"], sp,
                                                       les["uptake_ratio"], background_mask=bkg[k])["crc"]
                               for k, ls in enumerate(per_slice) for les in ls if les["scored"] and les["pet_only"]]
        out[m] = row
    return out


def _pool(parts: list[dict], cfg: dict) -> dict:
    se, n = sum(p["se"] for p in parts), sum(p["n"] for p in parts)
    return dict(psnr=metrics.psnr_from_mse(se / n, cfg["pet_range_suv"]) if n else float("nan"),
                ssim=_nanmean([x for p in parts for x in p["ssim"]]),
                crc=_nanmean([x for p in parts for x in p["crc"]]),
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
        rel = {}
        for k in ("psnr", "ssim", "crc"):
            rel[f"true_{k}"], rel[f"uninformative_{k}"] = v["true"][k], v["uninformative"][k]
            rel[f"reliance_{k}"] = v["true"][k] - v["uninformative"][k]
        sweep = [dict(shift_mm=s, psnr=v[key]["psnr"], crc=v[key]["crc"],
                      hot_spots_per_free_slice=gd.operating_point(v[key]["det"], t)["hot_spots_per_free_slice"])
                 for s in GUIDANCE_SHIFTS_MM for key in ["true" if s == 0 else f"shift_{s:g}"]]
        imp = [abs(x) for r in rows for x in r["imprint"] if math.isfinite(x)]
        crcs = [x for r in rows for x in r["pet_only_crc"]]
        det = v["true"]["det"]
        op = gd.operating_point(det, t)
        small = gd.operating_point(det, t, diameter_range_mm=SMALL_LESION_MM)
        low = gd.operating_point(det, t, diameter_range_mm=SMALL_LESION_MM, max_uptake_ratio=LOW_CONTRAST_RATIO)
        res[m] = dict(
            reliance=rel, misregistration=sweep,
            ct_only_imprint=dict(imprint=float(np.mean(imp)) if imp else float("nan"), n_structures=len(imp)),
            pet_only_lesions=dict(crc=_nanmean(crcs), n_lesions=int(np.sum(np.isfinite(crcs)))),
            detection=dict(threshold_suv=t, fp_per_slice=op["fp_per_slice"], sensitivity=op["sensitivity"],
                           n_lesions=op["n_lesions"], hot_spots_per_free_slice=op["hot_spots_per_free_slice"],
                           n_free_slices=det["n_free"], sensitivity_6_10mm=small["sensitivity"],
                           n_6_10mm=small["n_lesions"], sensitivity_6_10mm_low_contrast=low["sensitivity"],
                           n_6_10mm_low_contrast=low["n_lesions"]),
        )
    for m in res:  # the imprint against the two references
        for ref in ("bicubic", PET_ONLY):
            b = res.get(ref, {}).get("ct_only_imprint", {}).get("imprint", float("nan"))
            a = res[m]["ct_only_imprint"]["imprint"]
            res[m]["ct_only_imprint"][f"over_{ref}"] = a / b if b > 0 else math.inf if a > 0 else math.nan
    return dict(conventions=GUIDANCE_CONVENTIONS, n_studies=len(per_study), methods=res)


def guidance_targets(g: dict, models: list[str]) -> list[dict]:
    """The issue-12 targets of each CT-reading model in the guidance section (`_target` rows; margin > 0 met).

    Args:
        g: guidance_summary's output. models: the CT-reading models to judge (bicubic and pet_only are references).
    """
    nan, t, out = float("nan"), GUIDANCE_TARGETS, []
    ms, bic, po = g["methods"], g["methods"].get("bicubic"), g["methods"].get(PET_ONLY)
    for m in models:
        r = ms[m]
        v = r["reliance"]["reliance_psnr"]
        out.append(_target(f"{m}: CT reliance (true - uninformative CT PSNR) >= {t['reliance_psnr_db']:g} dB", v,
                           t["reliance_psnr_db"], v - t["reliance_psnr_db"]))
        v = r["ct_only_imprint"]["imprint"]
        lim = t["imprint_over_bicubic"] * bic["ct_only_imprint"]["imprint"] if bic else nan
        out.append(_target(f"{m}: CT-only imprint <= {t['imprint_over_bicubic']:g} x bicubic's", v, lim, lim - v))
        v = r["misregistration"][-1]["psnr"]
        lim = r["reliance"]["uninformative_psnr"]
        out.append(_target(f"{m}: PSNR with a {GUIDANCE_SHIFTS_MM[-1]:g} mm misregistered CT >= with the"
                           " uninformative CT", v, lim, v - lim))
        v = r["pet_only_lesions"]["crc"]
        lim = po["pet_only_lesions"]["crc"] if po else nan
        out.append(_target(f"{m}: PET-only lesion CRC >= pet_only's", v, lim, v - lim))
        lim = bic["detection"]["hot_spots_per_free_slice"] if bic else nan
        v = r["detection"]["hot_spots_per_free_slice"]
        out.append(_target(f"{m}: hot spots per lesion-free slice at {GUIDANCE_FP_RATE:g} FP/slice <= bicubic's",
                           v, lim, lim - v))
        v = r["detection"]["sensitivity_6_10mm"]
        out.append(_target(f"{m}: {SMALL_LESION_MM[0]:g}-{SMALL_LESION_MM[1]:g} mm lesion sensitivity >= "
                           f"{t['sensitivity_6_10mm']:g} at {GUIDANCE_FP_RATE:g} FP/slice", v,
                           t["sensitivity_6_10mm"], v - t["sensitivity_6_10mm"]))
    return out


# ----------------------------------------------------------------------------- driver
def scoring_config(pet_range_suv: float, ct_range_hu: tuple[float, float], det_threshold_suv: float,
                   froc_min_suv: float, min_separation_mm: float) -> dict:
    """The scoring settings shared by every method (SUV, HU, mm; the FROC floor never above the threshold)."""
    return dict(pet_range_suv=float(pet_range_suv), ct_range_hu=[float(ct_range_hu[0]), float(ct_range_hu[1])],
                det_threshold_suv=float(det_threshold_suv), froc_min_suv=float(min(froc_min_suv, det_threshold_suv)),
                min_separation_mm=float(min_separation_mm))


def settings_record(cfg: dict, seed: int) -> dict:
    """Everything that defines the numbers, as written into results.json's "settings"."""
    return dict(
        cfg, body_mask=f"HR CT > {BODY_HU:g} HU", psnr_data_range_pet_suv=cfg["pet_range_suv"],
        psnr_data_range_ct_hu=cfg["ct_range_hu"][1] - cfg["ct_range_hu"][0],
        ssim=dict(implementation="tf.image.ssim", filter_size=metrics.SSIM_FILTER_SIZE,
                  filter_sigma=metrics.SSIM_FILTER_SIGMA, k1=metrics.SSIM_K1, k2=metrics.SSIM_K2,
                  masked="mean of the SSIM map over windows centred in the mask"),
        psnr="tf.image.psnr definition; per study from the MSE pooled over its slices; methods: mean over studies",
        nema=dict(background_rois=12, ring_mm="diameter + 10", lesion_margin_mm=LESION_MARGIN_MM,
                  roi="lesion cross-section on the slice nearest its centre"),
        detector="local maxima >= threshold SUV within the body, merged if touching;"
                 " hit = inside a lesion cross-section",
        fusion=dict(sources="bicubic-upsampled LR PET and HR CT",
                    scale="PET [0, pet_range_suv] and CT [ct_range_hu] mapped to [0, 1]",
                    mi_bins=MI_BINS, qabf="Xydeas & Petrovic 2000, Sobel 3x3"),
        bootstrap=dict(resamples=N_BOOT, seed=seed, ci="percentile 95%"),
        upsampling_baselines={k: f"cv2.resize {v}" for k, v in BASELINES.items()},
    )


def _check_scale(manifest: dict, models: dict[str, Any], data_dir) -> int:
    """The data set's scale, refusing any model trained for another."""
    scale = int(manifest["scale"])
    for name, p in models.items():
        if int(p.scale) != scale:
            raise ValueError(f"{name}: model scale x{p.scale} does not match the data set's x{scale} ({data_dir})")
    return scale


def _figure_slice(slices: list[dict], per_slice: list[list[dict]], preds: dict, ref: dict | None,
                  with_truth: bool = True) -> dict:
    """The slice to draw for a study: the centre slice of its largest scored lesion, else (with a tumour mask) the
    slice with the largest tumour area, else its middle slice."""
    cands = [(les["diameter_mm"], k, les) for k, ls in enumerate(per_slice) for les in ls if les["scored"]]
    _, k, les = max(cands, key=lambda c: c[0]) if cands else (0, len(slices) // 2, None)
    if not cands and ref is not None:
        k = int(np.argmax(ref["mask"].sum(axis=(1, 2))))
    s = slices[k]
    fs = dict(lr_pet=s["lr_pet"], hr_pet=s["hr_pet"], hr_ct=s["hr_ct"], lesion=les,
              spacing_mm=spacing_rc(s["hr_affine"]), preds={m: p["sr_pet"][k] for m, p in preds.items()},
              hr_label="HR truth" if with_truth else "HR PET (clinical)")
    if ref is not None:
        fs["hr_mask"] = ref["mask"][k]
    return fs


def _new_data_record(split: str, scale: int) -> dict:
    return dict(split=split, scale=scale, n_studies=0, n_slices=0, n_studies_with_truth=0, n_slices_with_truth=0,
                n_lesions=0, n_lesions_outside_slices=0, n_lesion_free_studies=0)


def _count_study(data: dict, slices: list[dict], per_slice: list[list[dict]], missing: int, with_truth: bool,
                 lesions: list) -> None:
    data["n_studies"] += 1
    data["n_slices"] += len(slices)
    if with_truth:
        data["n_studies_with_truth"] += 1
        data["n_slices_with_truth"] += len(slices)
        data["n_lesions"] += sum(les["scored"] for ls in per_slice for les in ls)
        data["n_lesions_outside_slices"] += missing
        data["n_lesion_free_studies"] += int(not lesions)


def score_split(data_dir, manifest: dict, methods: dict[str, Any], cfg: dict, *, split: str, batch_size: int,
                max_slices: int | None, n_figures: int, ablate: str | None = None, guidance: bool = False) -> dict:
    """Runs and scores every method on every study of the split.

    Args:
        ablate: a model among `methods` also run with water_ct instead of the real CT (the CT ablation).
        guidance: also collect the guidance numbers (guidance_study) of bicubic and every model, on the studies
            with a true HR PET (st["guidance"]: study -> method -> raw).

    Returns:
        data (counts), per_method (method -> study -> score_study output), tumour (method -> study ->
        tumour_scores), references (study -> HR tumour numbers), ablation (study -> score_image_only output,
        and "tumour") and fig_slices.
    """
    scale = int(manifest["scale"])
    st = dict(data=_new_data_record(split, scale), per_method={m: {} for m in methods},
              tumour={m: {} for m in methods}, references={}, ablation={}, ablation_tumour={}, fig_slices=[],
              guidance={})
    takes_ct = {m: not isinstance(p, str) and getattr(p, "ct_input", None) is not None for m, p in methods.items()
                if m == "bicubic" or not isinstance(p, str)}
    for h, slices in iter_studies(data_dir, split, max_slices):
        info = manifest["studies"].get(h, {})
        with_truth = bool(info.get("has_truth", slices[0]["has_truth"]))
        lesions = info.get("lesions") or []
        per_slice, missing = place_lesions(lesions, slices) if with_truth else ([[] for _ in slices], 0)
        _count_study(st["data"], slices, per_slice, missing, with_truth, lesions)
        preds = {m: run_method(p, slices, scale, batch_size) for m, p in methods.items()}
        for k, s in enumerate(slices):
            s["bicubic_pet"] = preds["bicubic"]["sr_pet"][k]
        ref = tumour_reference(slices)
        for m in methods:
            st["per_method"][m][h] = score_study(preds[m], slices, per_slice, cfg, with_truth=with_truth,
                                                 lesion_free=with_truth and not lesions)
            if ref is not None:
                st["tumour"][m][h] = tumour_scores(preds[m]["sr_pet"], ref)
        if ref is not None:
            st["references"][h] = dict(ref["stats"], tumour_volume_ml=ref["tumour_volume_ml"],
                                       n_background_voxels=ref["n_background_voxels"],
                                       peak_sphere_ml=ref["peak_sphere_ml"], spacing_mm=list(ref["spacing_mm"]),
                                       slices=len(slices))
        if ablate is not None:
            water = run_method(methods[ablate], slices, scale, batch_size, ct_hu=water_ct(slices))
            st["ablation"][h] = score_image_only(water, slices, cfg)
            if ref is not None:
                st["ablation_tumour"][h] = tumour_scores(water["sr_pet"], ref)
        if guidance and with_truth:
            def run(m, ct, slices=slices, preds=preds):
                return preds[m]["sr_pet"] if ct is None else run_method(methods[m], slices, scale, batch_size,
                                                                        ct_hu=ct)["sr_pet"]
            st["guidance"][h] = guidance_study(slices, info, run, takes_ct, cfg)
        if len(st["fig_slices"]) < n_figures:
            st["fig_slices"].append(_figure_slice(slices, per_slice, preds, ref, with_truth))
    if st["data"]["n_studies"] == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no slices")
    return st


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


def evaluate(
    data_dir: str | Path,
    out_dir: str | Path,
    models: dict[str, Any],
    *,
    split: str = "test",
    pet_range_suv: float = 10.0,
    ct_range_hu: tuple[float, float] = (-1024.0, 3071.0),
    det_threshold_suv: float = 2.5,
    froc_min_suv: float = 1.0,
    min_separation_mm: float = 5.0,
    n_figures: int = 3,
    batch_size: int = 8,
    max_slices: int | None = None,
    seed: int = 0,
    dpi: int = 100,
    overwrite: bool = False,
    model_sources: dict[str, str] | None = None,
    fused_name: str = FUSED,
    ct_ablation: bool = True,
    guidance: bool | None = None,
) -> dict:
    """Runs the baselines and `models` on the same slices and writes results.json, results.md and figures.

    Args:
        data_dir: prepared data set. out_dir: output folder. models: name -> Predictor.
        split: the split scored. pet_range_suv: PET PSNR peak / SSIM range (SUV). ct_range_hu: CT clip range (HU).
        det_threshold_suv, froc_min_suv: detector threshold and FROC floor (SUV). min_separation_mm: detector
        neighbourhood (mm). n_figures: slices drawn. batch_size: slices per model call. max_slices: smoke runs.
        seed: bootstrap seed. dpi: figure resolution. overwrite: replace existing results.
        model_sources: name -> where the model was read (recorded). fused_name: the CT-guided model; the fusion
        gain is it minus "pet_only" when both are among `models`. ct_ablation: also run `fused_name` (when it takes
        a CT) with water_ct, to measure what its CT contributes. guidance: the "guidance" section (CT reliance,
        misregistration, CT-only imprint, PET-only lesions, hallucinations; issue 12); None = when the set is a
        guided phantom world (is_guided).

    Returns:
        The results dict also written to OUT/results.json (None for NaN, "inf" for infinite numbers).
    """
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: results.json already exists; pass --overwrite to replace it")
    manifest = records.read_manifest(data_dir)
    _check_scale(manifest, models, data_dir)
    cfg = scoring_config(pet_range_suv, ct_range_hu, det_threshold_suv, froc_min_suv, min_separation_mm)
    methods: dict[str, Any] = dict(BASELINES)
    methods.update(models)
    ablate = fused_name if ct_ablation and getattr(models.get(fused_name), "ct_input", None) is not None else None
    guidance = is_guided(manifest) if guidance is None else bool(guidance)
    st = score_split(data_dir, manifest, methods, cfg, split=split, batch_size=batch_size, max_slices=max_slices,
                     n_figures=n_figures, ablate=ablate, guidance=guidance)
    results_methods = {m: summarize_method(st["per_method"][m], cfg) for m in methods}
    sums = {m: r.pop("_per_study") for m, r in results_methods.items()}
    gain = None
    if fused_name in models and PET_ONLY in models and fused_name != PET_ONLY:
        gain = dict(fused=fused_name, baseline=PET_ONLY, metrics=fusion_gain(sums[fused_name], sums[PET_ONLY], seed))
    results = dict(schema="ctpet-srgan/evaluate/1", data=st["data"], settings=settings_record(cfg, seed),
                   methods=results_methods, models=model_sources or {}, fusion_gain=gain)
    results["figures"] = (figures.write_figures(out_dir, st["fig_slices"], results_methods, dpi, pet_range_suv,
                                                fused_name) if n_figures > 0 else [])
    patients, ablation = patients_section(st, sums, cfg, fused_name, seed)
    results.update(patients=patients, ct_ablation=ablation,
                   targets=targets(patients["median"], gain, ablation, fused_name))
    results["guidance"] = None
    if guidance and st["guidance"]:
        g = guidance_summary(st["guidance"], cfg)
        g["targets"] = guidance_targets(g, [m for m in models if getattr(models[m], "ct_input", None) is not None])
        results["guidance"] = g
    results = clean(results)
    write_bytes_atomic(out_dir / "results.md", results_markdown(results).encode())
    write_json_atomic(out_dir / "results.json", results)  # last: its presence means the evaluation finished
    return results
