"""What the adversarial phase changes: effective resolution and noise texture of SR PET on a phantom test split.

For bicubic and every model given, on the studies with a true HR PET:
- effective resolution: for each hot lesion of the manifest, on the slice nearest its centre, the excess FWHM of a
  square ROI (the lesion's cross-section radius + `--roi_margin_mm` each way) against the truth
  (`ctpet_srgan.resolution.excess_fwhm`: truth blurred by a Gaussian of that FWHM explains the SR; 0 mm = as sharp
  as the truth); median and mean over lesions, and the median per size (<= 10 mm, > 10 mm);
- noise texture: the radially averaged noise power spectrum of SR - truth in `--nps_roi_px` squares inside the
  uniform region (`resolution.uniform_mask`: in the body, `--margin_mm` from its border and from truth edges with
  |grad| > `--edge_suv_per_mm`), pooled over the split: NPS mean frequency, peak frequency, residual SD (SUV).
PSNR/SSIM and hot spots come from evaluate.py (README "What the adversarial phase changes").

    python tools/gan_study.py --data_dir data/guided12/set --model pixel=runs/gan_pixel \\
        --model gan_1e-3=runs/gan_rel_1e-3 --reference pixel --out outputs/gan_study/resolution.json
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
from absl import flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ctpet_srgan import cli, guidance, metrics  # noqa: E402
from ctpet_srgan import resolution as rs  # noqa: E402
from ctpet_srgan.atomic import write_json_atomic  # noqa: E402
from ctpet_srgan.errors import InputError  # noqa: E402
from ctpet_srgan.evaluation import iter_studies, place_lesions, run_method, spacing_rc  # noqa: E402
from ctpet_srgan.inference import load_predictor  # noqa: E402
from ctpet_srgan.manifest import Manifest  # noqa: E402

log = logging.getLogger("gan_study")


def study_measures(preds: dict[str, np.ndarray], slices: list[dict], lesions: list[dict], args) -> dict:
    """Per method: the lesions' excess FWHM rows and the noise ROIs of one study."""
    truth = np.stack([s["hr_pet"] for s in slices])
    body = guidance.body_mask(np.stack([s["hr_ct"] for s in slices]))
    spacing = spacing_rc(slices[0]["hr_affine"])
    per_slice, _ = place_lesions(lesions, slices)
    uniform = [rs.uniform_mask(truth[k], body[k], spacing, max_gradient_per_mm=args.edge_suv_per_mm,
                               margin_mm=args.margin_mm) for k in range(len(slices))]
    rois = [(k, sl) for k in range(len(slices)) for sl in rs.square_rois(uniform[k], args.nps_roi_px)]
    out = {}
    for name, sr in preds.items():
        rows = []
        for k, les in enumerate(per_slice):
            for le in les:
                if not le["scored"]:
                    continue
                roi = rs.roi_around(le["center_rc"], le["radius_mm"] + args.roi_margin_mm, spacing, truth[k].shape)
                if roi is None:
                    continue
                fit = rs.excess_fwhm(sr[k][roi], truth[k][roi], spacing)
                rows.append(dict(diameter_mm=le["diameter_mm"], uptake_ratio=le["uptake_ratio"], **fit))
        out[name] = {"lesions": rows, "noise": [sr[k][sl] - truth[k][sl] for k, sl in rois]}
    return out


def summarize(lesions: list[dict], noise: list[np.ndarray], spacing) -> dict:
    """Method summary: FWHM statistics over lesions and the pooled NPS."""
    f = np.array([r["fwhm_mm"] for r in lesions], float)
    d = np.array([r["diameter_mm"] for r in lesions], float)
    small = f[d <= 10]
    out = {"n_lesions": int(f.size), "fwhm_median_mm": float(np.median(f)) if f.size else None,
           "fwhm_mean_mm": float(np.mean(f)) if f.size else None,
           "fwhm_median_le10mm": float(np.median(small)) if small.size else None, "n_le10mm": int(small.size),
           "fwhm_median_gt10mm": float(np.median(f[d > 10])) if (d > 10).any() else None}
    if noise:
        nps = rs.noise_power_spectrum(noise, spacing)
        out.update(nps_f_mean=nps["f_mean"], nps_f_peak=nps["f_peak"], noise_sd_suv=nps["sd"], n_noise_rois=len(noise),
                   nps_freq=[float(v) for v in nps["freq"]], nps=[float(v) for v in nps["nps"]])
    return out


def paired(lesions: dict[str, list[dict]], reference: str, seed: int = 0, n_boot: int = 2000) -> dict:
    """Per method: lesion-by-lesion FWHM minus the reference's (same lesions, same order): median, mean with a
    percentile bootstrap 95% CI over lesions, and how many lesions are sharper than in the reference."""
    ref = np.array([r["fwhm_mm"] for r in lesions[reference]], float)
    out = {}
    for m, rows in lesions.items():
        if m == reference or not rows:
            continue
        d = np.array([r["fwhm_mm"] for r in rows], float) - ref
        # one seed for every method: the same resamples, whatever the others are
        mean, lo, hi = metrics.bootstrap_ci(d, n_boot=n_boot, seed=seed)
        out[m] = {"median_mm": float(np.median(d)), "mean_mm": mean, "mean_ci95_mm": [lo, hi],
                  "n_sharper": int((d < 0).sum()), "n": int(d.size)}
    return out


def define_flags(fv: flags.FlagValues) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Prepared phantom set (manifest.json + shards).", required=True, **d)
    flags.DEFINE_multi_string("model", [], "NAME=PATH: a model (run dir, .keras or SavedModel) under a name; repeat.",
                              **d)
    flags.DEFINE_string("split", "test", "Split to score.", **d)
    flags.DEFINE_string("out", None, "JSON written (atomically).", required=True, **d)
    flags.DEFINE_integer("batch_size", 8, "Slices per batch.", **d)
    flags.DEFINE_string("reference", None, "Method NAME the others are compared with lesion by lesion.", **d)
    flags.DEFINE_float("roi_margin_mm", 10.0, "Lesion ROI: radius + this each way (mm).", **d)
    flags.DEFINE_float("edge_suv_per_mm", 0.05, "Uniform region: truth |grad| below this (SUV/mm).", **d)
    flags.DEFINE_float("margin_mm", 6.0, "Uniform region: distance from edges (mm).", **d)
    flags.DEFINE_integer("nps_roi_px", 16, "NPS ROI edge (HR pixels).", **d)


def main(argv: list[str] | None = None) -> int:
    """`python tools/gan_study.py ARGS` in-process (argv: the arguments after the program name); the exit status."""
    return cli.main(define_flags, gan_study, argv, prog="tools/gan_study.py")


def gan_study(args) -> int:
    """Scores every method on the split; writes --out and prints the table; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    manifest = Manifest.load(args.data_dir)
    methods: dict = {"bicubic": "INTER_CUBIC"}
    for item in args.model:
        name, sep, path = item.partition("=")
        if not sep:
            raise InputError(item, "--model wants NAME=PATH")
        methods[name] = load_predictor(path)
    acc = {m: {"lesions": [], "noise": []} for m in methods}
    spacing, n_studies, n_slices = None, 0, 0
    for study, slices in iter_studies(args.data_dir, args.split):
        slices = [s for s in slices if s["has_truth"]]
        if not slices:
            continue
        spacing = spacing_rc(slices[0]["hr_affine"])
        scale = manifest.scale
        preds = {m: run_method(fn, slices, scale, args.batch_size)["sr_pet"] for m, fn in methods.items()}
        lesions = manifest.studies[study].lesions if study in manifest.studies else []
        for m, v in study_measures(preds, slices, lesions, args).items():
            acc[m]["lesions"] += v["lesions"]
            acc[m]["noise"] += v["noise"]
        n_studies, n_slices = n_studies + 1, n_slices + len(slices)
        log.info("%s: %d slices", study[:8], len(slices))
    result = {"data_dir": str(args.data_dir), "split": args.split, "n_studies": n_studies, "n_slices": n_slices,
              "settings": {k: getattr(args, k) for k in ("roi_margin_mm", "edge_suv_per_mm", "margin_mm",
                                                          "nps_roi_px")},
              "models": {m: str(p) for m, p in (i.partition("=")[::2] for i in args.model)},
              "methods": {m: summarize(v["lesions"], v["noise"], spacing) for m, v in acc.items()},
              "lesions": {m: v["lesions"] for m, v in acc.items()}}
    if args.reference:
        result["fwhm_vs_reference"] = {"reference": args.reference,
                                       **paired(result["lesions"], args.reference)}
    write_json_atomic(Path(args.out), result)
    print(f"{n_studies} studies, {n_slices} slices -> {args.out}")
    print(f"{'method':<16} {'n':>3} {'FWHM med':>9} {'<=10mm':>7} {'>10mm':>7} {'NPS f_mean':>10} {'f_peak':>7} "
          f"{'noise SD':>9} {'ROIs':>5}")
    for m, s in result["methods"].items():
        fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
        print(f"{m:<16} {s['n_lesions']:>3} {fmt(s['fwhm_median_mm']):>9} {fmt(s['fwhm_median_le10mm']):>7} "
              f"{fmt(s['fwhm_median_gt10mm']):>7} {fmt(s.get('nps_f_mean'), 4):>10} {fmt(s.get('nps_f_peak'), 4):>7} "
              f"{fmt(s.get('noise_sd_suv'), 4):>9} {s.get('n_noise_rois', 0):>5}")
    if args.reference:
        print(f"excess FWHM minus {args.reference}'s, lesion by lesion (mm): median, mean [95% CI], lesions sharper")
        for m, v in result["fwhm_vs_reference"].items():
            if isinstance(v, dict):
                lo, hi = v["mean_ci95_mm"]
                print(f"{m:<20} {v['median_mm']:+.2f} {v['mean_mm']:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                      f" {v['n_sharper']}/{v['n']}")
    return 0


if __name__ == "__main__":
    cli.run(define_flags, gan_study)
