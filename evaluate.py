"""Scores trained generators and interpolation baselines on the held-out split of a prepared data set.

    python evaluate.py --model RUN_DIR --pet_only PET_ONLY_RUN_DIR --srresnet SRRESNET_RUN_DIR \\
        --data_dir DATA_DIR --out OUT_DIR

Written into --out: results.json (written last; its presence means the evaluation finished), results.md (tables)
and figures/*.png. Models: anything `ctpet_srgan.inference.load_predictor` reads (a train_keras.py run dir, a
.keras file beside run_config.json, a SavedModel export). Baselines always scored: bicubic and Lanczos-4 (OpenCV).
What is scored and how: `ctpet_srgan/evaluation.py`; definitions: docs/metrics.md. On a set with tumour masks
(real patients) it adds per-patient tumour quantification, the CT ablation (--no_ct_ablation skips it) and the
issue-11 targets, one "target met/missed (margin ...)" line each; on a guided phantom world (or with --guidance) the
CT guidance section and the issue-12 targets the same way. Flags: absl (`--flagfile=FILE` reads them from a file).
A user error (missing or bad input, existing results) prints one line `PATH: problem` and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from ctpet_srgan import cli


def define_flags(fv: flags.FlagValues) -> None:
    """The command line (see --help), defined in `fv`."""
    from ctpet_srgan.evaluation import FUSED

    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "The fused (CT+PET) model: run dir, .keras or SavedModel.", required=True, **d)
    flags.DEFINE_string("model_name", FUSED, "Name of --model in the results.", **d)
    flags.DEFINE_string("pet_only", None, "PET-only baseline model (same architecture, no CT branch).", **d)
    flags.DEFINE_string("srresnet", None, "Pixel-loss-only generator (phase 1 only).", **d)
    flags.DEFINE_string("data_dir", None, "Prepared data set folder (manifest.json + shards).", required=True, **d)
    flags.DEFINE_alias("data", "data_dir", **d)
    flags.DEFINE_string("out", None, "Output folder for results.json, results.md and figures/.", required=True, **d)
    flags.DEFINE_string("split", "test", "The split scored.", **d)
    flags.DEFINE_float("pet_range_suv", 10.0, "PET PSNR/SSIM peak R in SUV.", **d)
    flags.DEFINE_list("ct_range_hu", ["-1024", "3071"], "CT clip range in HU: LO,HI.", **d)
    flags.DEFINE_float("det_threshold_suv", 2.5, "Detector operating threshold (SUV).", **d)
    flags.DEFINE_float("froc_min_suv", 1.0, "Lowest detector threshold of the FROC sweep (SUV).", **d)
    flags.DEFINE_float("min_separation_mm", 5.0, "Detector: local-maximum neighbourhood (mm).", **d)
    flags.DEFINE_integer("n_figures", 3, "Slices to draw (0: no figures).", **d)
    flags.DEFINE_integer("batch_size", 8, "Slices per model call.", **d)
    flags.DEFINE_integer("max_slices", None, "Score only the first N slices of the split (smoke).", **d)
    flags.DEFINE_integer("seed", 0, "Bootstrap seed.", **d)
    flags.DEFINE_integer("dpi", 100, "Figure resolution.", **d)
    flags.DEFINE_boolean("no_ct_ablation", False, "Skip the CT ablation (the fused model run again with a"
                         " water-filled body outline as CT).", **d)
    flags.DEFINE_boolean("guidance", None, "Add the CT guidance section (issue 12; default: when the set is a"
                         " guided phantom world).", **d)
    flags.DEFINE_boolean("no_guidance", None, "Skip the CT guidance section even on a guided phantom world.", **d)
    flags.mark_flags_as_mutual_exclusive(["guidance", "no_guidance"], **d)
    flags.DEFINE_boolean("overwrite", False, "Replace existing results in --out.", **d)


def ct_range(values: list[str]) -> tuple[float, float]:
    """--ct_range_hu's two numbers (HU), LO < HI; ValueError naming the flag otherwise."""
    try:
        lo, hi = (float(v) for v in values)
    except ValueError:
        raise ValueError(f"--ct_range_hu={','.join(values)}: give two numbers LO,HI (HU)") from None
    if not lo < hi:
        raise ValueError(f"--ct_range_hu={','.join(values)}: LO must be below HI")
    return lo, hi


def evaluate(F: flags.FlagValues, args: list[str]) -> int:
    """Runs the evaluation; returns the exit status (0 done, 2 user error)."""
    ct_values = list(F.ct_range_hu)
    if len(ct_values) == 1 and len(args) == 1:  # the former form `--ct_range_hu LO HI`
        ct_values, args = ct_values + args, []
    if args:
        return cli.fail(f"{args[0]}: unexpected argument (every input is a --flag; see --help)")
    ct_range_hu = ct_range(ct_values)
    guidance = F.guidance if F.guidance is not None else (False if F.no_guidance else None)
    if (Path(F.out) / "results.json").exists() and not F.overwrite:
        return cli.fail(f"{F.out}: results.json already exists; pass --overwrite to replace it")
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors (cuInit on a CPU machine, oneDNN)
    from ctpet_srgan import evaluation
    from ctpet_srgan.inference import load_predictor

    paths = {F.model_name: F.model, evaluation.PET_ONLY: F.pet_only, "srresnet": F.srresnet}
    paths = {k: v for k, v in paths.items() if v}
    models = {name: load_predictor(p) for name, p in paths.items()}
    res = evaluation.evaluate(
        F.data_dir, F.out, models, split=F.split, pet_range_suv=F.pet_range_suv, ct_range_hu=ct_range_hu,
        det_threshold_suv=F.det_threshold_suv, froc_min_suv=F.froc_min_suv, min_separation_mm=F.min_separation_mm,
        n_figures=F.n_figures, batch_size=F.batch_size, max_slices=F.max_slices, seed=F.seed, dpi=F.dpi,
        overwrite=F.overwrite, model_sources={k: str(v) for k, v in paths.items()}, fused_name=F.model_name,
        ct_ablation=not F.no_ct_ablation, guidance=guidance)
    print(f"{F.out}: {res['data']['n_studies']} studies, {res['data']['n_slices']} slices scored; see results.md")
    for t in (res.get("targets") or []) + ((res.get("guidance") or {}).get("targets") or []):
        verdict = {True: "met", False: "missed", None: "not measurable"}[t["met"]]
        margin = "" if t["margin"] is None else f" (margin {t['margin']:+.4g})"
        print(f"target {verdict}{margin}: {t['target']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python evaluate.py ARGS` in-process (argv: the arguments after the program name); returns the exit status."""
    return cli.main(define_flags, evaluate, argv, takes_args=True, prog="evaluate.py")


def run() -> None:
    """Console entry point `ctpet-evaluate` (same flags as `python evaluate.py`): absl.app.run."""
    cli.run(define_flags, evaluate, takes_args=True)


if __name__ == "__main__":
    run()
