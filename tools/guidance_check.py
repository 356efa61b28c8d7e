"""Guidance metrics of a model on the guided phantom world, against bicubic (a check until evaluate.py has them).

  python tools/guidance_check.py --out runs/guidance_check [--model bundled:demo] [--cases 6] [--seed 100]
                                 [--fov_mm 256] [--pet_slices 24]

Writes guided-world phantom studies (`data_prep.phantom`, world="guided") under --out/dicom (resumable), prepares
each study as `data_prep.convert` does (scale 2; HR = the truth PET grid), and scores every method on all slices:
CT reliance (true CT vs the uninformative CT), a misregistration sweep (the CT shifted along +col by 0/2/5/10 mm),
CT-only imprint (structures where the CT shows them, from lesions.json), PET-only lesion CRC (slice nearest each
centre) and detection at 0.5 false positives per slice (hot spots on lesion-free slices, 6-10 mm sensitivity).
Prints one JSON document; --out/guidance.json holds the same.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ctpet_srgan import guidance as gd  # noqa: E402
from ctpet_srgan.atomic import write_json_atomic  # noqa: E402

SP = (2.0, 2.0)
DATA_RANGE = 10.0
FP_RATE = 0.5


def _slices(case_dir: Path):
    """(lr_pet [K,h,w], hr_ct [K,H,W], truth [K,H,W], hr_affine [K,4,4], lesions.json dict) of one study."""
    from ctpet_srgan import records
    from data_prep.convert import ConvertConfig, discover_studies, prepare_study

    (spec,) = discover_studies(case_dir, log=lambda *_: None)
    res = prepare_study(spec, ConvertConfig(scale=2))
    ex = [records.parse_example(e) for e in res.examples]

    def get(k):
        arrs = [np.asarray(e[k], np.float32) for e in ex]
        return np.stack([x[..., 0] if x.ndim == 3 else x for x in arrs])

    info = json.loads((case_dir / "lesions.json").read_text())
    return get("lr_pet"), get("hr_ct"), get("hr_pet"), get("hr_affine"), info


def _on_slice(center_mm, aff):
    a = np.asarray(aff, float)
    n = np.cross(a[:3, 0], a[:3, 1])
    n /= np.linalg.norm(n)
    d = np.asarray(center_mm, float) - a[:3, 3]
    dz = float(d @ n)
    ij = np.linalg.lstsq(a[:3, :2], d - dz * n, rcond=None)[0]
    return dz, (float(ij[1]), float(ij[0]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--model", default="bundled:demo")
    p.add_argument("--cases", type=int, default=6)
    p.add_argument("--seed", type=int, default=100)
    p.add_argument("--fov_mm", type=float, default=256.0, help="phantom field (mm), a multiple of 4")
    p.add_argument("--pet_slices", type=int, default=24)
    a = p.parse_args(argv)

    import cv2

    from ctpet_srgan.inference import load_predictor
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    out = Path(a.out)
    cfg = PhantomConfig(world="guided", fov_mm=a.fov_mm, pet_slices=a.pet_slices)
    paths = write_phantom_studies(out / "dicom", a.cases, a.seed, nema_every=0, cfg=cfg)
    studies = [_slices(d) for d in paths]
    lr, ct, truth, aff = (np.concatenate([s[i] for s in studies]) for i in range(4))
    pred_model = load_predictor(a.model)
    methods = {
        "bicubic": lambda lp, c: np.stack([cv2.resize(x, (x.shape[1] * 2, x.shape[0] * 2),
                                                      interpolation=cv2.INTER_CUBIC) for x in lp]),
        a.model: lambda lp, c: pred_model.predict(lp, c, tile=None)["sr_pet"],
    }
    # structures, lesions per slice
    k0 = np.cumsum([0] + [len(s[0]) for s in studies])
    body = gd.body_mask(ct)
    imprint_masks, lesion_rows, per_slice = [], [], [[] for _ in range(len(lr))]
    bkg = body.copy()
    for si, s in enumerate(studies):
        info = s[4]
        for k in range(len(s[0])):
            g = k0[si] + k
            for rec in info["ct_only"]:
                m = gd.structure_mask_on_slice(rec, aff[g], ct.shape[1:], at_ct=True)
                if m.sum() >= 4:
                    full = np.zeros(ct.shape, bool)
                    full[g] = m
                    imprint_masks.append(full)
        for les in info["lesions"]:
            r = les["diameter_mm"] / 2
            geo = [_on_slice(les["center_mm"], aff[k0[si] + k]) for k in range(len(s[0]))]
            near = int(np.argmin([abs(dz) for dz, _ in geo]))
            for k, (dz, rc) in enumerate(geo):
                if abs(dz) < r:
                    rad = math.sqrt(r * r - dz * dz)
                    per_slice[k0[si] + k].append(dict(center_rc=rc, radius_mm=max(rad, 2.0), scored=k == near,
                                                      diameter_mm=les["diameter_mm"]))
                    bkg[k0[si] + k] &= ~gd.metrics.disk_mask(ct.shape[1:], rc, rad + 4, SP)
            dz, rc = geo[near]
            if abs(dz) < r:
                lesion_rows.append((k0[si] + near, dict(les, center_rc=rc, diameter_mm=2 * math.sqrt(r * r - dz * dz))))
    lesion_free = [not ls and info_free for ls, info_free in
                   zip(per_slice, np.concatenate([[not s[4]["lesions"]] * len(s[0]) for s in studies]))]
    report = {"cases": a.cases, "seed": a.seed, "slices": int(len(lr)), "ct_only_masks": len(imprint_masks),
              "pet_only_lesions": sum(not les.get("has_ct_correlate") for _, les in lesion_rows), "methods": {}}
    for name, f in methods.items():
        pred = f(lr, ct)
        rel = gd.ct_reliance(f, lr, ct, truth, data_range=DATA_RANGE)
        sweep = gd.misregistration_sweep(f, lr, ct, truth, spacing_mm=SP, data_range=DATA_RANGE)
        imp = gd.ct_only_imprint(pred, truth, imprint_masks)
        crcs = [gd.pet_only_recovery(pred[k], [les], SP, background_mask=bkg[k])["crc"] for k, les in lesion_rows
                if not les.get("has_ct_correlate")]
        det = gd.collect_detections(list(pred), per_slice, SP, min_threshold=0.5, masks=list(body))
        det["free_fp_scores"] = [s for k, ls in enumerate(per_slice) if lesion_free[k]
                                 for s in gd.metrics.match_detections(
                                     gd.metrics.detect_hot_spots(pred[k], threshold=0.5, spacing_mm=SP,
                                                                 mask=body[k]), [], SP)[1]]
        det["n_free"] = int(sum(lesion_free))
        t = gd.threshold_at_fp_rate(det["fp_scores"], det["n_slices"], FP_RATE)
        report["methods"][name] = {
            "reliance_psnr_db": rel["reliance_psnr"], "psnr_true_ct": rel["true_psnr"],
            "psnr_uninformative_ct": rel["uninformative_psnr"],
            "sweep_psnr": {str(r["shift_mm"]): r["psnr"] for r in sweep},
            "ct_only_imprint": imp["imprint"],
            "pet_only_crc": float(np.nanmean(crcs)) if crcs else float("nan"),
            "at_0.5_fp_per_slice": gd.operating_point(det, t),
            "at_0.5_fp_per_slice_6_10mm": gd.operating_point(det, t, diameter_range_mm=(6.0, 10.0)),
        }
    write_json_atomic(out / "guidance.json", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
