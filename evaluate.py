"""Scores trained generators and interpolation baselines on the held-out split of a prepared data set.

    python evaluate.py --model RUN_DIR --pet_only PET_ONLY_RUN_DIR --srresnet SRRESNET_RUN_DIR \
        --data DATA_DIR --out OUT_DIR

Every method runs on the same slices (the test split, by study). Written into --out: results.json
(written last; its presence means the evaluation finished), results.md (tables) and figures/*.png.
Models: anything `ctpet_srgan.inference.load_predictor` reads (a train_keras.py run dir, a .keras file
beside run_config.json, a SavedModel export). Baselines always scored: bicubic and Lanczos-4 (OpenCV)
upsampling of the LR PET (and LR CT). Metric definitions: ctpet_srgan/metrics.py and docs/metrics.md.

Settings (all written into results.json):
- PET PSNR/SSIM in SUVbw with peak R = --pet_range_suv (default 10 SUV; values are not clipped, R only
  sets the PSNR peak and the SSIM constants). CT PSNR/SSIM in HU after clipping truth and output to
  --ct_range_hu (default -1024..3071 HU, R = 4095 HU).
- "body": pixels where the HR CT > -500 HU. SSIM (body): mean of the SSIM map over windows centred in
  the body. PSNR of a study = 10 log10(R^2 / MSE pooled over its slices (or body pixels)); SSIM of a
  study = mean over its slices (whole) or the pooled body windows (body). A method's value = mean over
  studies, so every study weighs the same.
- Lesions (studies with true HR PET and lesions in manifest.json): each hot lesion is scored on the
  slice nearest its centre; NEMA CRC / BV / CNR with a ROI of the lesion's cross-section diameter on
  that slice, 12 background ROIs on a ring of radius D + 10 mm, kept when inside the body and clear
  of every lesion by 5 mm. Detector: local maxima >= --det_threshold_suv SUV in the body, at least
  --min_separation_mm apart; a detection within a lesion's cross-section is a hit, else a false
  positive. FROC: the same detector with candidates down to --froc_min_suv, swept over thresholds.
  Lesion-free studies with true HR PET are scored for hallucinated hot spots: detections (>= the
  threshold) where the HR truth stays below the threshold within --min_separation_mm, per slice.
- Fusion quality (each method's SR PET against its two sources: the bicubic-upsampled LR PET and
  the HR CT): MI (64 bins), SSIM and Qabf on images mapped to [0, 1] (PET over [0, R] SUV, CT over
  the CT range).
- results.json: NaN (nothing to score, e.g. CT metrics of a PET-only model) is null; an infinite value
  (PSNR of an exact output) is the string "inf".
- Fusion gain: per-study difference (fused model minus PET-only model) with a percentile bootstrap
  95% CI over studies (2000 resamples, seed --seed).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ctpet_srgan import metrics, records  # noqa: E402
from ctpet_srgan.atomic import atomic_path, write_bytes_atomic, write_json_atomic  # noqa: E402

BODY_HU = -500.0
LESION_MARGIN_MM = 5.0
MI_BINS = 64
N_BOOT = 2000
BASELINES = {"bicubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4"}
FUSED, PET_ONLY = "fused_srgan", "pet_only"


# ----------------------------------------------------------------------------- data
def iter_studies(data_dir: str | Path, split: str = "test", max_slices: int | None = None):
    """Yields (study_hash, slices) with slices sorted by slice_index, each a dict of 2-D float32 images
    (hr_pet, lr_pet in SUV; hr_ct, lr_ct in HU), slice_index, hr_affine (4x4), has_truth. A study is
    yielded as soon as all the slices manifest.json lists for it have been read."""
    import tensorflow as tf

    manifest = records.read_manifest(data_dir)
    paths = records.shard_paths(data_dir, manifest, split)
    ds = tf.data.TFRecordDataset(paths, compression_type=manifest.get("compression") or "").map(records.parse_example)
    expected = {h: int(s.get("slices", 0)) for h, s in manifest["studies"].items()}
    pending: dict[str, list[dict]] = {}
    for n, ex in enumerate(ds.as_numpy_iterator()):
        if max_slices is not None and n >= max_slices:
            break
        h = ex["study"].decode()
        sl = {k: np.asarray(ex[k])[..., 0].astype(np.float32) for k in records.IMAGE_KEYS}
        sl.update(slice_index=int(ex["slice_index"]), hr_affine=np.asarray(ex["hr_affine"], float), has_truth=bool(ex["has_truth"]))
        pending.setdefault(h, []).append(sl)
        if len(pending[h]) == expected.get(h, -1):
            yield h, sorted(pending.pop(h), key=lambda s: s["slice_index"])
    for h, sl in pending.items():
        yield h, sorted(sl, key=lambda s: s["slice_index"])


def upsample(lr: np.ndarray, scale: int, method: str) -> np.ndarray:
    """[n, h, w] -> [n, h*scale, w*scale] with OpenCV (method: a cv2 INTER_* name)."""
    import cv2

    flag = getattr(cv2, method)
    return np.stack([cv2.resize(x, (x.shape[1] * scale, x.shape[0] * scale), interpolation=flag) for x in lr])


def run_method(method: Any, slices: list[dict], scale: int, batch_size: int) -> dict[str, np.ndarray | None]:
    """SR PET (SUV) and SR CT (HU, or None) [n, H, W] for one study. `method` is a baseline name's cv2
    flag (str) or a Predictor."""
    lr_pet = np.stack([s["lr_pet"] for s in slices])
    if isinstance(method, str):
        return {"sr_pet": upsample(lr_pet, scale, method), "sr_ct": upsample(np.stack([s["lr_ct"] for s in slices]), scale, method)}
    ct = np.stack([s["hr_ct"] for s in slices]) if method.ct_input is not None else None
    out = method.predict(lr_pet, ct, batch_size=batch_size)
    return {"sr_pet": np.asarray(out["sr_pet"], np.float32), "sr_ct": out.get("sr_ct")}


# ----------------------------------------------------------------------------- lesion geometry
def slice_geometry(hr_affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """(origin, unit normal, (row, col) spacing mm) of a slice grid whose index (i, j, 0) maps to LPS."""
    a = np.asarray(hr_affine, float)
    n = np.cross(a[:3, 0], a[:3, 1])
    return a[:3, 3], n / np.linalg.norm(n), (float(np.linalg.norm(a[:3, 1])), float(np.linalg.norm(a[:3, 0])))


def lesion_on_slice(center_mm, hr_affine) -> tuple[float, tuple[float, float]]:
    """(signed distance in mm from the slice plane, (row, col) of the projected centre in pixels)."""
    a = np.asarray(hr_affine, float)
    o, n, _ = slice_geometry(a)
    d = np.asarray(center_mm, float) - o
    dz = float(d @ n)
    ij = np.linalg.lstsq(a[:3, :2], d - dz * n, rcond=None)[0]
    return dz, (float(ij[1]), float(ij[0]))


def place_lesions(lesions: list[dict], slices: list[dict]) -> tuple[list[list[dict]], int]:
    """Per slice: the hot lesions crossing it (center_rc, radius_mm = cross-section radius,
    diameter_mm, uptake_ratio, scored = this is the slice nearest the centre, id). Also returns
    how many hot lesions cross none of the slices."""
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
                per_slice[k].append(
                    dict(id=lid, center_rc=rc, radius_mm=math.sqrt(r * r - dz * dz), diameter_mm=float(les["diameter_mm"]),
                         uptake_ratio=float(les["uptake_ratio"]), scored=k == k0)
                )
    return per_slice, missing


# ----------------------------------------------------------------------------- scoring
def _new_acc() -> dict:
    keys = ("pet_se", "pet_n", "pet_se_body", "pet_n_body", "ct_se", "ct_n", "ct_se_body", "ct_n_body")
    acc = {k: 0.0 for k in keys}
    acc.update(pet_ssim=[], ct_ssim=[], pet_ssim_body=[], ct_ssim_body=[], fusion=[], n_slices=0)
    return acc


def score_study(pred: dict, slices: list[dict], lesions_per_slice: list[list[dict]], cfg: dict, *, with_truth: bool, lesion_free: bool) -> dict:
    """All per-study numbers of one method: image quality accumulators, lesion contrast records,
    detection scores and fusion metrics."""
    R, (ct_lo, ct_hi) = cfg["pet_range_suv"], cfg["ct_range_hu"]
    acc = _new_acc()
    lesion_rows, det = [], dict(lesion_scores=[], diameters=[], fp_scores=[], halluc=[], n_slices=0, n_free=0)
    for k, s in enumerate(slices):
        truth, out = s["hr_pet"], pred["sr_pet"][k]
        body = s["hr_ct"] > BODY_HU
        has_body = bool(body.any())
        acc["n_slices"] += 1
        for key, t, x, rng in (("pet", truth, out, R), ("ct", None, None, ct_hi - ct_lo)):
            if key == "ct":
                if pred.get("sr_ct") is None:
                    continue
                t, x = np.clip(s["hr_ct"], ct_lo, ct_hi), np.clip(pred["sr_ct"][k], ct_lo, ct_hi)
            se, n = metrics.masked_mse(t, x)
            acc[f"{key}_se"] += se
            acc[f"{key}_n"] += n
            smap = metrics.ssim_map(t, x, data_range=rng)
            acc[f"{key}_ssim"].append(float(smap.mean()))
            if has_body:
                se, n = metrics.masked_mse(t, x, body)
                acc[f"{key}_se_body"] += se
                acc[f"{key}_n_body"] += n
                acc[f"{key}_ssim_body"].extend(smap[metrics.crop_to_ssim_map(body)].tolist())
        # fusion quality: the SR PET against its sources (upsampled LR PET, HR CT) on a [0, 1] scale
        src_pet = metrics.to_unit_range(s["bicubic_pet"], 0.0, R)
        src_ct = metrics.to_unit_range(s["hr_ct"], ct_lo, ct_hi)
        f = metrics.to_unit_range(out, 0.0, R)
        acc["fusion"].append(
            dict(
                mi_pet=metrics.mutual_information(f, src_pet, bins=MI_BINS, range_a=(0, 1), range_b=(0, 1)),
                mi_ct=metrics.mutual_information(f, src_ct, bins=MI_BINS, range_a=(0, 1), range_b=(0, 1)),
                ssim_pet=metrics.ssim(src_pet, f, data_range=1.0),
                ssim_ct=metrics.ssim(src_ct, f, data_range=1.0),
                qabf=metrics.qabf(src_pet, src_ct, f),
            )
        )
        if not with_truth:
            continue
        # lesions: NEMA contrast on the slice nearest each centre, detection on every slice
        _, _, sp = slice_geometry(s["hr_affine"])
        les = lesions_per_slice[k]
        mask = body if has_body else np.ones_like(body)
        bkg = mask.copy()
        for l in les:
            bkg &= ~metrics.disk_mask(body.shape, l["center_rc"], l["radius_mm"] + LESION_MARGIN_MM, sp)
        for l in les:
            if l["scored"]:
                c = metrics.sphere_contrast(out, l["center_rc"], 2 * l["radius_mm"], sp, l["uptake_ratio"], background_mask=bkg)
                lesion_rows.append(dict(id=l["id"], diameter_mm=l["diameter_mm"], **c))
        dets = metrics.detect_hot_spots(out, threshold=cfg["froc_min_suv"], spacing_mm=sp, min_separation_mm=cfg["min_separation_mm"], mask=mask)
        accept = [dict(l, radius_mm=max(l["radius_mm"], max(sp))) for l in les]
        scores, fps = metrics.match_detections(dets, accept, sp)
        det["lesion_scores"] += scores
        det["diameters"] += [l["diameter_mm"] for l in les if l["scored"]]
        det["fp_scores"] += fps
        det["n_slices"] += 1
        if lesion_free:  # no lesions: every detection is a false positive; hallucinated if the truth is not hot there
            det["halluc"] += [sc for r, c, sc in dets
                              if truth[metrics.disk_mask(truth.shape, (r, c), cfg["min_separation_mm"], sp)].max() < cfg["det_threshold_suv"]]
            det["n_free"] += 1
    return dict(acc=acc, lesions=lesion_rows, det=det)


def _nanmean(v) -> float:
    """Mean ignoring NaN / None (an infinite value, e.g. the PSNR of an exact output, stays infinite)."""
    v = [x for x in v if x is not None and not np.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def study_summary(sc: dict, cfg: dict) -> dict:
    """Per-study image-quality numbers from the accumulators (see module docstring)."""
    a, R, ct_r = sc["acc"], cfg["pet_range_suv"], cfg["ct_range_hu"][1] - cfg["ct_range_hu"][0]
    out = {}
    for key, rng in (("pet", R), ("ct", ct_r)):
        for suf in ("", "_body"):
            n = a[f"{key}_n{suf}"]
            out[f"psnr_{key}{suf}"] = metrics.psnr_from_mse(a[f"{key}_se{suf}"] / n, rng) if n else float("nan")
            out[f"ssim_{key}{suf}"] = _nanmean(a[f"{key}_ssim{suf}"])
    les = [l["crc"] for l in sc["lesions"]]
    out["crc_mean"] = _nanmean(les)
    return out


def summarize_method(per_study: dict[str, dict], cfg: dict) -> dict:
    """A method's results over all studies."""
    sums = {h: study_summary(sc, cfg) for h, sc in per_study.items()}
    res: dict[str, Any] = {}
    for key in ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body", "psnr_ct", "ssim_ct", "psnr_ct_body", "ssim_ct_body"):
        vals = [s[key] for s in sums.values()]
        res[key] = _nanmean(vals)
    res["n_studies"] = len(per_study)
    res["n_slices"] = int(sum(sc["acc"]["n_slices"] for sc in per_study.values()))
    # lesions (NEMA)
    rows = [l for sc in per_study.values() for l in sc["lesions"]]
    sizes = sorted({l["diameter_mm"] for l in rows})
    for key in ("crc", "bv", "cnr"):
        res[key] = {f"{d:g}": _nanmean([l[key] for l in rows if l["diameter_mm"] == d]) for d in sizes}
    res["n_lesions_scored"] = len(rows)
    # detection
    det = {k: [] for k in ("lesion_scores", "diameters", "fp_scores", "halluc")}
    n_sl = n_free = 0
    for sc in per_study.values():
        for k in det:
            det[k] += sc["det"][k]
        n_sl += sc["det"]["n_slices"]
        n_free += sc["det"]["n_free"]
    summ = metrics.detection_summary(det["lesion_scores"], det["diameters"], det["fp_scores"], n_sl, cfg["det_threshold_suv"])
    res.update(
        sensitivity=summ["sensitivity"], sensitivity_per_size=summ["sensitivity_per_size"], fp_per_slice=summ["fp_per_slice"],
        n_lesions=summ["n_lesions"], n_detection_slices=n_sl, n_lesion_free_slices=n_free,
        hallucinations_per_slice=(int(np.sum(np.asarray(det["halluc"]) >= cfg["det_threshold_suv"])) / n_free) if n_free else None,
        froc=metrics.froc(det["lesion_scores"], det["fp_scores"], n_sl) if n_sl else [],
    )
    fus = [f for sc in per_study.values() for f in sc["acc"]["fusion"]]
    res["fusion"] = {k: _nanmean([f[k] for f in fus]) for k in ("mi_pet", "mi_ct", "ssim_pet", "ssim_ct", "qabf")}
    res["_per_study"] = sums
    return res


def fusion_gain(fused: dict, base: dict, seed: int) -> dict:
    """Per-study fused minus baseline (PSNR/SSIM of PET, whole and body; mean CRC) with bootstrap CIs."""
    out = {}
    for key in ("psnr_pet", "ssim_pet", "psnr_pet_body", "ssim_pet_body", "crc_mean"):
        diffs = [fused[h][key] - base[h][key] for h in fused if h in base]
        m, lo, hi = metrics.bootstrap_ci(diffs, n_boot=N_BOOT, seed=seed)
        out[key] = dict(mean=m, ci95=[lo, hi], n_studies=int(np.sum(np.isfinite(diffs))))
    return out


# ----------------------------------------------------------------------------- output
def _clean(x):
    """JSON-safe copy: NaN (nothing to score) -> None, +-inf (e.g. PSNR of an exact output) -> "inf" /
    "-inf", numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, (np.floating, float)):
        if np.isnan(x):
            return None
        return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, np.integer):
        return int(x)
    return x


def _fmt(v, nd=3) -> str:
    if isinstance(v, str):
        return v
    return "n/a" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def results_markdown(res: dict) -> str:
    """The Markdown report: image quality, lesions, detection, fusion, fusion gain, settings."""
    m, d, st = res["methods"], res["data"], res["settings"]
    lines = [
        "# Evaluation results",
        "",
        f"Split `{d['split']}`: {d['n_studies']} studies, {d['n_slices']} slices "
        f"({d['n_studies_with_truth']} studies / {d['n_slices_with_truth']} slices with a true HR PET; "
        f"{d['n_lesions']} hot lesions, {d['n_lesion_free_studies']} lesion-free studies). Scale x{d['scale']}.",
        "",
        f"PET in SUVbw, PSNR peak {st['pet_range_suv']:g} SUV; CT in HU clipped to {st['ct_range_hu']}; body = HR CT > {BODY_HU:g} HU.",
        "",
        "## Image quality",
        "",
        "| method | PSNR PET (dB) | SSIM PET | PSNR PET body | SSIM PET body | PSNR CT (dB) | SSIM CT | PSNR CT body | SSIM CT body |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in m.items():
        lines.append(
            f"| {name} | {_fmt(r['psnr_pet'], 2)} | {_fmt(r['ssim_pet'], 4)} | {_fmt(r['psnr_pet_body'], 2)} | {_fmt(r['ssim_pet_body'], 4)}"
            f" | {_fmt(r['psnr_ct'], 2)} | {_fmt(r['ssim_ct'], 4)} | {_fmt(r['psnr_ct_body'], 2)} | {_fmt(r['ssim_ct_body'], 4)} |"
        )
    sizes = sorted({s for r in m.values() for s in r["crc"]}, key=float)
    lines += ["", "## Lesions (NEMA NU 2 hot-sphere CRC / BV / CNR, detection)", ""]
    if sizes:
        lines += ["| method | " + " | ".join(f"CRC {s} mm" for s in sizes) + " | " + " | ".join(f"CNR {s} mm" for s in sizes) + " |",
                  "|---|" + "---|" * (2 * len(sizes))]
        for name, r in m.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(r["crc"].get(s)) for s in sizes) + " | " + " | ".join(_fmt(r["cnr"].get(s), 2) for s in sizes) + " |")
    else:
        lines.append("No hot lesions in the scored slices.")
    lines += ["", f"Detector: local maxima >= {st['det_threshold_suv']:g} SUV, >= {st['min_separation_mm']:g} mm apart, in the body.", "",
              "| method | sensitivity | FP / slice | hallucinated hot spots / lesion-free slice |", "|---|---|---|---|"]
    for name, r in m.items():
        lines.append(f"| {name} | {_fmt(r['sensitivity'])} | {_fmt(r['fp_per_slice'])} | {_fmt(r['hallucinations_per_slice'])} |")
    lines += ["", "## Fusion quality (SR PET vs its sources: bicubic LR PET, HR CT; images on [0, 1]; bicubic is itself the PET source)", "",
              "| method | MI(F;PET) bits | MI(F;CT) bits | SSIM(F,PET) | SSIM(F,CT) | Qabf |", "|---|---|---|---|---|---|"]
    for name, r in m.items():
        f = r["fusion"]
        lines.append(f"| {name} | {_fmt(f['mi_pet'])} | {_fmt(f['mi_ct'])} | {_fmt(f['ssim_pet'])} | {_fmt(f['ssim_ct'])} | {_fmt(f['qabf'])} |")
    if res.get("fusion_gain"):
        g = res["fusion_gain"]
        lines += ["", f"## Fusion gain ({g['fused']} minus {g['baseline']}, per study; bootstrap 95% CI)", "",
                  "| metric | mean | 95% CI | studies |", "|---|---|---|---|"]
        for key, v in g["metrics"].items():
            lines.append(f"| {key} | {_fmt(v['mean'], 4)} | [{_fmt(v['ci95'][0], 4)}, {_fmt(v['ci95'][1], 4)}] | {v['n_studies']} |")
    lines += ["", "## Figures", ""] + [f"![{p}]({p})" for p in res.get("figures", [])]
    return "\n".join(lines) + "\n"


def _savefig(fig, path: Path, dpi: int) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight")


def write_figures(out_dir: Path, fig_slices: list[dict], methods: dict, dpi: int, pet_range: float, model: str) -> list[str]:
    """Slice panels, lesion line profiles, CRC vs size and FROC (PNG). Returns paths relative to out_dir."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctpet_srgan.fusion import fuse_rgb

    written = []
    fig_dir = out_dir / "figures"
    if model not in methods:
        model = list(methods)[-1]
    for n, fs in enumerate(fig_slices):
        panels = [("LR PET", fs["lr_pet"]), ("bicubic", fs["preds"]["bicubic"])]
        if PET_ONLY in fs["preds"]:
            panels.append(("PET-only", fs["preds"][PET_ONLY]))
        panels += [(model, fs["preds"][model]), ("HR truth", fs["hr_pet"])]
        fig, axes = plt.subplots(1, len(panels) + 2, figsize=(2.6 * (len(panels) + 2), 2.9))
        for ax, (title, img) in zip(axes, panels):
            ax.imshow(img, cmap="gray_r", vmin=0, vmax=pet_range)
            ax.set_title(title, fontsize=8)
        axes[-2].imshow(fuse_rgb(fs["hr_ct"], fs["preds"][model], suv_max=pet_range))
        axes[-2].set_title(f"{model} on CT", fontsize=8)
        err = fs["preds"][model] - fs["hr_pet"]
        lim = max(float(np.abs(err).max()), 1e-6)
        im = axes[-1].imshow(err, cmap="RdBu_r", vmin=-lim, vmax=lim)
        axes[-1].set_title("error (SUV)", fontsize=8)
        fig.colorbar(im, ax=axes[-1], fraction=0.046)
        for ax in axes:
            ax.axis("off")
        p = fig_dir / f"slice_{n}.png"
        _savefig(fig, p, dpi)
        plt.close(fig)
        written.append(f"figures/{p.name}")
        if fs["lesion"] is not None:
            les, sp = fs["lesion"], fs["spacing_mm"]
            r0 = int(round(les["center_rc"][0]))
            c0 = les["center_rc"][1]
            half = int(math.ceil((les["diameter_mm"] + 10) / sp[1]))
            cols = np.arange(max(0, int(c0) - half), min(fs["hr_pet"].shape[1], int(c0) + half + 1))
            x_mm = (cols - c0) * sp[1]
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.plot(x_mm, fs["hr_pet"][r0, cols], "k-", lw=2, label="HR truth")
            for name, img in fs["preds"].items():
                ax.plot(x_mm, img[r0, cols], lw=1, label=name)
            ax.set_xlabel("mm from lesion centre (along a row)")
            ax.set_ylabel("SUV")
            ax.set_title(f"line profile, {les['diameter_mm']:g} mm lesion", fontsize=9)
            ax.legend(fontsize=7)
            p = fig_dir / f"profile_{n}.png"
            _savefig(fig, p, dpi)
            plt.close(fig)
            written.append(f"figures/{p.name}")
    if any(r["crc"] for r in methods.values()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, r in methods.items():
            ds = sorted(r["crc"], key=float)
            ax.plot([float(d) for d in ds], [r["crc"][d] for d in ds], "o-", label=name)
        ax.axhline(1.0, color="gray", lw=0.5)
        ax.set_xlabel("lesion diameter (mm)")
        ax.set_ylabel("CRC (NEMA hot sphere)")
        ax.legend(fontsize=7)
        _savefig(fig, fig_dir / "crc_vs_size.png", dpi)
        plt.close(fig)
        written.append("figures/crc_vs_size.png")
    if any(r["froc"] for r in methods.values()):
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for name, r in methods.items():
            pts = r["froc"]
            ax.step([p["fp_per_slice"] for p in pts], [p["sensitivity"] for p in pts], where="post", label=name)
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlabel("false positives per slice")
        ax.set_ylabel("sensitivity")
        ax.set_title("FROC (threshold sweep of the detector)", fontsize=9)
        ax.legend(fontsize=7)
        _savefig(fig, fig_dir / "froc.png", dpi)
        plt.close(fig)
        written.append("figures/froc.png")
    return written


# ----------------------------------------------------------------------------- driver
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
) -> dict:
    """Runs the baselines and `models` (name -> Predictor) on the same slices and writes the results.

    The fusion gain is `fused_name` minus "pet_only" when both are among `models`.

    Returns the results dict also written to OUT/results.json (None for non-finite numbers).
    """
    out_dir = Path(out_dir)
    if (out_dir / "results.json").exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: results.json already exists; pass --overwrite to replace it")
    manifest = records.read_manifest(data_dir)
    scale = int(manifest["scale"])
    for name, p in models.items():
        if int(p.scale) != scale:
            raise ValueError(f"{name}: model scale x{p.scale} does not match the data set's x{scale} ({data_dir})")
    cfg = dict(pet_range_suv=float(pet_range_suv), ct_range_hu=[float(ct_range_hu[0]), float(ct_range_hu[1])],
               det_threshold_suv=float(det_threshold_suv), froc_min_suv=float(min(froc_min_suv, det_threshold_suv)),
               min_separation_mm=float(min_separation_mm))
    methods: dict[str, Any] = dict(BASELINES)
    methods.update(models)
    per_method: dict[str, dict[str, dict]] = {m: {} for m in methods}
    data = dict(split=split, scale=scale, n_studies=0, n_slices=0, n_studies_with_truth=0, n_slices_with_truth=0,
                n_lesions=0, n_lesions_outside_slices=0, n_lesion_free_studies=0)
    fig_slices: list[dict] = []
    for h, slices in iter_studies(data_dir, split, max_slices):
        info = manifest["studies"].get(h, {})
        with_truth = bool(info.get("has_truth", slices[0]["has_truth"]))
        lesions = info.get("lesions") or []
        per_slice, missing = place_lesions(lesions, slices) if with_truth else ([[] for _ in slices], 0)
        data["n_studies"] += 1
        data["n_slices"] += len(slices)
        if with_truth:
            data["n_studies_with_truth"] += 1
            data["n_slices_with_truth"] += len(slices)
            data["n_lesions"] += sum(l["scored"] for ls in per_slice for l in ls)
            data["n_lesions_outside_slices"] += missing
            data["n_lesion_free_studies"] += int(not lesions)
        preds = {m: run_method(p, slices, scale, batch_size) for m, p in methods.items()}
        for k, s in enumerate(slices):
            s["bicubic_pet"] = preds["bicubic"]["sr_pet"][k]
        for m in methods:
            per_method[m][h] = score_study(preds[m], slices, per_slice, cfg, with_truth=with_truth, lesion_free=with_truth and not lesions)
        # figure slices: the centre slice of the study's largest lesion, else its middle slice
        if len(fig_slices) < n_figures:
            cands = [(l["diameter_mm"], k, l) for k, ls in enumerate(per_slice) for l in ls if l["scored"]]
            d, k, les = max(cands, key=lambda c: c[0]) if cands else (0, len(slices) // 2, None)
            s = slices[k]
            fig_slices.append(dict(lr_pet=s["lr_pet"], hr_pet=s["hr_pet"], hr_ct=s["hr_ct"], lesion=les,
                                   spacing_mm=slice_geometry(s["hr_affine"])[2], preds={m: preds[m]["sr_pet"][k] for m in methods}))
    if data["n_studies"] == 0:
        raise ValueError(f"{data_dir}: split {split!r} has no slices")
    results_methods = {m: summarize_method(per_method[m], cfg) for m in methods}
    gain = None
    if fused_name in models and PET_ONLY in models and fused_name != PET_ONLY:
        gain = dict(fused=fused_name, baseline=PET_ONLY,
                    metrics=fusion_gain(results_methods[fused_name]["_per_study"], results_methods[PET_ONLY]["_per_study"], seed))
    for r in results_methods.values():
        r.pop("_per_study")
    settings = dict(
        cfg, body_mask=f"HR CT > {BODY_HU:g} HU", psnr_data_range_pet_suv=cfg["pet_range_suv"],
        psnr_data_range_ct_hu=cfg["ct_range_hu"][1] - cfg["ct_range_hu"][0],
        ssim=dict(implementation="tf.image.ssim", filter_size=metrics.SSIM_FILTER_SIZE, filter_sigma=metrics.SSIM_FILTER_SIGMA,
                  k1=metrics.SSIM_K1, k2=metrics.SSIM_K2, masked="mean of the SSIM map over windows centred in the mask"),
        psnr="tf.image.psnr definition; per study from the MSE pooled over its slices; methods: mean over studies",
        nema=dict(background_rois=12, ring_mm="diameter + 10", lesion_margin_mm=LESION_MARGIN_MM, roi="lesion cross-section on the slice nearest its centre"),
        detector="local maxima >= threshold SUV within the body, merged if touching; hit = inside a lesion cross-section",
        fusion=dict(sources="bicubic-upsampled LR PET and HR CT", scale="PET [0, pet_range_suv] and CT [ct_range_hu] mapped to [0, 1]",
                    mi_bins=MI_BINS, qabf="Xydeas & Petrovic 2000, Sobel 3x3"),
        bootstrap=dict(resamples=N_BOOT, seed=seed, ci="percentile 95%"),
        upsampling_baselines={k: f"cv2.resize {v}" for k, v in BASELINES.items()},
    )
    results = dict(schema="ctpet-srgan/evaluate/1", data=data, settings=settings, methods=results_methods,
                   models=model_sources or {}, fusion_gain=gain)
    results["figures"] = write_figures(out_dir, fig_slices, results_methods, dpi, pet_range_suv, fused_name) if n_figures > 0 else []
    results = _clean(results)
    write_bytes_atomic(out_dir / "results.md", results_markdown(results).encode())
    write_json_atomic(out_dir / "results.json", results)  # last: its presence means the evaluation finished
    return results


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the fused (CT+PET) model: run dir, .keras or SavedModel")
    p.add_argument("--model_name", default=FUSED, help="name of --model in the results (default fused_srgan)")
    p.add_argument("--pet_only", help="PET-only baseline model (same architecture, no CT branch)")
    p.add_argument("--srresnet", help="pixel-loss-only generator (phase 1 only)")
    p.add_argument("--data", required=True, help="prepared data set folder (manifest.json + shards)")
    p.add_argument("--out", required=True, help="output folder for results.json, results.md and figures/")
    p.add_argument("--split", default="test")
    p.add_argument("--pet_range_suv", type=float, default=10.0, help="PET PSNR/SSIM peak R in SUV (default 10)")
    p.add_argument("--ct_range_hu", type=float, nargs=2, default=(-1024.0, 3071.0), help="CT clip range in HU")
    p.add_argument("--det_threshold_suv", type=float, default=2.5, help="detector operating threshold (SUV)")
    p.add_argument("--froc_min_suv", type=float, default=1.0, help="lowest detector threshold of the FROC sweep (SUV)")
    p.add_argument("--min_separation_mm", type=float, default=5.0, help="detector: local-maximum neighbourhood (mm)")
    p.add_argument("--n_figures", type=int, default=3, help="slices to draw (0: no figures)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_slices", type=int, default=None, help="score only the first N slices of the split (smoke runs)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    if (Path(a.out) / "results.json").exists() and not a.overwrite:
        print(f"error: {a.out}: results.json already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    from ctpet_srgan.inference import load_predictor

    paths = {a.model_name: a.model, PET_ONLY: a.pet_only, "srresnet": a.srresnet}
    paths = {k: v for k, v in paths.items() if v}
    try:
        models = {name: load_predictor(p) for name, p in paths.items()}
        res = evaluate(a.data, a.out, models, split=a.split, pet_range_suv=a.pet_range_suv, ct_range_hu=tuple(a.ct_range_hu),
                       det_threshold_suv=a.det_threshold_suv, froc_min_suv=a.froc_min_suv, min_separation_mm=a.min_separation_mm,
                       n_figures=a.n_figures, batch_size=a.batch_size, max_slices=a.max_slices, seed=a.seed, dpi=a.dpi,
                       overwrite=a.overwrite, model_sources={k: str(v) for k, v in paths.items()}, fused_name=a.model_name)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{a.out}: {res['data']['n_studies']} studies, {res['data']['n_slices']} slices scored; see results.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
