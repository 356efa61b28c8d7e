"""Scores trained generators and interpolation baselines on the held-out split of a prepared data set.

    python evaluate.py --model RUN_DIR --pet_only PET_ONLY_RUN_DIR --srresnet SRRESNET_RUN_DIR \\
        --data_dir DATA_DIR --out OUT_DIR

Written into --out: results.json (written last; its presence means the evaluation finished), results.md (tables)
and figures/*.png. Models: anything `ctpet_srgan.inference.load_predictor` reads (a train_keras.py run dir, a
.keras file beside run_config.json, a SavedModel export). Baselines always scored: bicubic and Lanczos-4 (OpenCV).
What is scored and how: `ctpet_srgan/evaluation.py`; definitions: docs/metrics.md. On a set with tumour masks
(real patients) it adds per-patient tumour quantification, the CT ablation (--no_ct_ablation skips it) and the
issue-11 targets, one "target met/missed (margin ...)" line each; on a guided phantom world (or with --guidance) the
CT guidance section and the issue-12 targets the same way. A user error (missing or bad input, existing
results) prints one line `PATH: problem` and exits with status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def parse_args(argv=None) -> argparse.Namespace:
    """The command line (see --help)."""
    from ctpet_srgan.evaluation import FUSED

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="the fused (CT+PET) model: run dir, .keras or SavedModel")
    p.add_argument("--model_name", default=FUSED, help="name of --model in the results (default fused_srgan)")
    p.add_argument("--pet_only", help="PET-only baseline model (same architecture, no CT branch)")
    p.add_argument("--srresnet", help="pixel-loss-only generator (phase 1 only)")
    p.add_argument("--data_dir", "--data", dest="data", required=True,
                   help="prepared data set folder (manifest.json + shards)")
    p.add_argument("--out", required=True, help="output folder for results.json, results.md and figures/")
    p.add_argument("--split", default="test")
    p.add_argument("--pet_range_suv", type=float, default=10.0, help="PET PSNR/SSIM peak R in SUV (default 10)")
    p.add_argument("--ct_range_hu", type=float, nargs=2, default=(-1024.0, 3071.0), help="CT clip range in HU")
    p.add_argument("--det_threshold_suv", type=float, default=2.5, help="detector operating threshold (SUV)")
    p.add_argument("--froc_min_suv", type=float, default=1.0, help="lowest detector threshold of the FROC sweep (SUV)")
    p.add_argument("--min_separation_mm", type=float, default=5.0, help="detector: local-maximum neighbourhood (mm)")
    p.add_argument("--n_figures", type=int, default=3, help="slices to draw (0: no figures)")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_slices", type=int, default=None, help="score only the first N slices of the split (smoke)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--no_ct_ablation", action="store_true",
                   help="skip the CT ablation (the fused model run again with a water-filled body outline as CT)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--guidance", dest="guidance", action="store_const", const=True, default=None,
                   help="add the CT guidance section (issue 12; default: when the set is a guided phantom world)")
    g.add_argument("--no_guidance", dest="guidance", action="store_const", const=False,
                   help="skip the CT guidance section even on a guided phantom world")
    p.add_argument("--overwrite", action="store_true", help="replace existing results in --out")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Runs the evaluation; returns the exit status (0 done, 2 user error)."""
    a = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is first imported
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors (cuInit on a CPU machine, oneDNN)
    from ctpet_srgan import evaluation
    from ctpet_srgan.inference import load_predictor

    if (Path(a.out) / "results.json").exists() and not a.overwrite:
        print(f"{a.out}: results.json already exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    paths = {a.model_name: a.model, evaluation.PET_ONLY: a.pet_only, "srresnet": a.srresnet}
    paths = {k: v for k, v in paths.items() if v}
    try:
        models = {name: load_predictor(p) for name, p in paths.items()}
        res = evaluation.evaluate(
            a.data, a.out, models, split=a.split, pet_range_suv=a.pet_range_suv, ct_range_hu=tuple(a.ct_range_hu),
            det_threshold_suv=a.det_threshold_suv, froc_min_suv=a.froc_min_suv,
            min_separation_mm=a.min_separation_mm, n_figures=a.n_figures, batch_size=a.batch_size,
            max_slices=a.max_slices, seed=a.seed, dpi=a.dpi, overwrite=a.overwrite,
            model_sources={k: str(v) for k, v in paths.items()}, fused_name=a.model_name,
            ct_ablation=not a.no_ct_ablation, guidance=a.guidance)
    except (FileNotFoundError, FileExistsError, ValueError) as e:  # InputError is a ValueError
        print(str(e).splitlines()[0] if str(e) else type(e).__name__, file=sys.stderr)
        return 2
    print(f"{a.out}: {res['data']['n_studies']} studies, {res['data']['n_slices']} slices scored; see results.md")
    for t in (res.get("targets") or []) + ((res.get("guidance") or {}).get("targets") or []):
        verdict = {True: "met", False: "missed", None: "not measurable"}[t["met"]]
        margin = "" if t["margin"] is None else f" (margin {t['margin']:+.4g})"
        print(f"target {verdict}{margin}: {t['target']}")
    return 0


def run() -> None:
    """Console entry point `ctpet-evaluate` (same flags as `python evaluate.py`)."""
    sys.exit(main())


if __name__ == "__main__":
    run()
