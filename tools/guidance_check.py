"""Guidance metrics of a model on a fresh guided phantom world, end to end (phantom -> convert -> evaluate).

  python tools/guidance_check.py --out runs/guidance_check [--model bundled:demo] [--pet_only RUN] [--srresnet RUN]
                                 [--cases 6] [--seed 100] [--fov_mm 256] [--pet_slices 24]

Writes guided-world phantom studies (`data_prep.phantom`, world="guided", no NEMA cases) under --out/dicom,
prepares them with `data_prep.convert` (scale 2, every study in the test split) into --out/set and runs
`ctpet_srgan.evaluation.evaluate` with its guidance section into --out/eval (results.json, results.md). Every step
resumes. Prints the guidance section as JSON; --out/guidance.json holds the same. On a set you already have:
`python evaluate.py ... --guidance` (automatic on a guided world). Flags: absl (--flagfile=FILE); a user error is one
line `PATH: problem` and exit status 2.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_string("out", None, "Output folder (dicom/, set/, eval/, guidance.json).", required=True, **d)
    flags.DEFINE_string("model", "bundled:demo", "The CT-guided model (named fused_srgan in the results).", **d)
    flags.DEFINE_string("pet_only", None, "PET-only model.", **d)
    flags.DEFINE_string("srresnet", None, "Pixel-loss-only model.", **d)
    flags.DEFINE_integer("cases", 6, "Guided-world phantom studies.", **d)
    flags.DEFINE_integer("seed", 100, "Seed of the phantoms.", **d)
    flags.DEFINE_float("fov_mm", 256.0, "Phantom field (mm), a multiple of 4.", **d)
    flags.DEFINE_integer("pet_slices", 24, "PET slices per phantom.", **d)


def main(argv: list[str] | None = None) -> int:
    """`python tools/guidance_check.py ARGS` in-process (argv: the arguments after the program name); the exit
    status."""
    from ctpet_srgan import cli

    return cli.main(define_flags, guidance_check, argv, prog="tools/guidance_check.py")


def run() -> None:
    """The program: absl.app.run (--flagfile; a user error is one line and exit status 2)."""
    from ctpet_srgan import cli

    cli.run(define_flags, guidance_check)


def guidance_check(a) -> int:
    """Phantoms -> set -> evaluation with the guidance section; prints it; returns the exit status."""
    from ctpet_srgan import evaluation
    from ctpet_srgan.atomic import write_json_atomic
    from ctpet_srgan.inference import load_predictor
    from data_prep.convert import ConvertConfig, convert, discover_studies
    from data_prep.phantom import PhantomConfig, write_phantom_studies

    paths = {evaluation.FUSED: a.model, evaluation.PET_ONLY: a.pet_only, "srresnet": a.srresnet}
    models = {k: load_predictor(v) for k, v in paths.items() if v}  # first: a bad --model fails before any work
    out, quiet = Path(a.out), (lambda *_: None)
    cfg = PhantomConfig(world="guided", fov_mm=a.fov_mm, pet_slices=a.pet_slices)
    write_phantom_studies(out / "dicom", a.cases, a.seed, nema_every=0, cfg=cfg)
    convert(discover_studies(out / "dicom", log=quiet), out / "set", ConvertConfig(scale=2), val_fraction=0.0,
            test_fraction=1.0, log=quiet)
    res = evaluation.evaluate(out / "set", out / "eval", models, n_figures=0, ct_ablation=False, guidance=True,
                              overwrite=True, model_sources={k: str(v) for k, v in paths.items() if v})
    report = dict(cases=a.cases, seed=a.seed, slices=res["data"]["n_slices"], models=res["models"],
                  **res["guidance"])
    write_json_atomic(out / "guidance.json", report)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    run()
