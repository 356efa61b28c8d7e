"""`python -m data_prep {phantom,convert,inspect,info}`: synthetic studies, data preparation, and checks.

  phantom  --out DIR --cases N --seed S     synthetic PET/CT studies as DICOM (+ HR PET truth, lesions.json)
  convert  --out DIR (--studies ROOT | --ct PATH --pet PATH)   sharded TFRecords + manifest.json
           [--runner local|direct|<Beam runner> [Beam pipeline options]]   local process pool (default) or Beam
  inspect  DIR (or --data_dir DIR)         what a prepared set holds
  info     PATH                             what the reader makes of one DICOM/NIfTI input
Flags: absl's argparse integration (`--flagfile=FILE` reads flags from a file, one per line). Errors in the input or
the flags print one line "PATH: problem" on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence

from absl import app, flags

from ctpet_srgan import cli

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# Argument definitions only (one line per flag of the subcommands); nothing to split.
def _parser(fv: flags.FlagValues) -> cli.ArgumentParser:
    """The command line: absl's argparse integration (`--flagfile=FILE` anywhere), one-line errors (exit 2).

    Args:
      fv: the absl flags the parsers also take: absl's FLAGS under app.run, an empty FlagValues in-process.
    """
    kw = dict(inherited_absl_flags=fv)
    p = cli.ArgumentParser(prog="python -m data_prep", description=__doc__.splitlines()[0],
                           formatter_class=argparse.RawDescriptionHelpFormatter, **kw)
    sub = p.add_subparsers(dest="command", required=True, metavar="{phantom,convert,inspect,info}")

    ph = sub.add_parser("phantom", help="write synthetic PET/CT studies as DICOM series", **kw)
    ph.add_argument("--out", required=True, help="output folder (case_NNN/ subfolders)")
    ph.add_argument("--cases", type=int, default=8)
    ph.add_argument("--seed", type=int, default=0)
    ph.add_argument("--nema_every", type=int, default=4,
                    help="every Nth case (from 0) is the NEMA IEC phantom; 0: none")
    ph.add_argument("--fov_mm", type=float, default=256.0, help="transaxial field (mm), multiple of --pet_spacing_mm")
    ph.add_argument("--pet_slices", type=int, default=24)
    ph.add_argument("--pet_spacing_mm", type=float, default=4.0)
    ph.add_argument("--ct_spacing_mm", type=float, default=1.0)
    ph.add_argument("--ct_slice_mm", type=float, default=2.0)
    ph.add_argument("--pet_fwhm_mm", type=float, default=6.0)
    ph.add_argument("--counts_per_suv", type=float, default=40.0, help="clinical PET counts per voxel per SUV")
    ph.add_argument("--compress", choices=["none", "rle", "jpegls", "j2k"], default="none",
                    help="transfer syntax of the written DICOM (lossless)")
    ph.add_argument("--world", choices=["default", "guided"], default="default",
                    help="guided: CT can be right or wrong (heterogeneity, CT-only structures, PET-only lesions,"
                         " misregistration, scanner variety; see data_prep/phantom.py)")

    cv = sub.add_parser("convert", help="prepare sharded TFRecords + manifest.json", allow_abbrev=False,
                        epilog="Options it does not know (or all after `--`) go to Beam's PipelineOptions when"
                               " --runner is not local, e.g. --runner=direct --direct_num_workers=2"
                               " --direct_running_mode=multi_processing; Beam: pip install -r requirements-beam.txt",
                        **kw)
    cv.add_argument("--out", required=True)
    cv.add_argument("--studies", help="a tree of DICOM studies (CT and PET paired by study and frame of reference)")
    cv.add_argument("--ct", help="one study: CT series folder, DICOM file or NIfTI")
    cv.add_argument("--pet", help="one study: PET series folder, DICOM file or NIfTI")
    cv.add_argument("--pet_truth", help="one study: optional HR PET truth (folder or NIfTI)")
    cv.add_argument("--lesions", help="one study: optional lesions.json")
    cv.add_argument("--rtstruct", help="one study: optional RTSTRUCT file with the tumour contour (the mask)")
    cv.add_argument("--roi_pattern", default="GTV_Mass*", help="RTSTRUCT ROI name of the tumour (fnmatch, any case)")
    cv.add_argument("--nifti_pet_units", default=None, help="units of NIfTI PET voxels (default SUVbw)")
    cv.add_argument("--scale", type=int, choices=[2, 4], default=2)
    cv.add_argument("--hr_spacing_mm", default=None,
                    help="HR in-plane spacing: mm, or median_pet (the median PET in-plane spacing of the set: HR ="
                         " the clinical PET); default: each study's PET in-plane spacing / scale")
    cv.add_argument("--lr_fwhm_mm", type=float, default=6.0, help="LR PET resolution when a truth PET is the HR")
    cv.add_argument("--truth_fwhm_mm", type=float, default=2.0)
    cv.add_argument("--no_truth_fwhm_mm", type=float, default=4.0, help="extra blur of a clinical PET for its LR")
    cv.add_argument("--counts_per_suv", type=float, default=40.0, help="LR noise: counts per LR voxel per SUV; 0: none")
    cv.add_argument("--seed", type=int, default=0)
    cv.add_argument("--workers", type=int, default=1,
                    help="local: processes of the pool; direct: Beam worker processes (unless Beam options say)")
    cv.add_argument("--runner", default="local",
                    help="local (process pool), direct (Beam's local runner) or a Beam runner: DataflowRunner,"
                         " FlinkRunner, SparkRunner, PortableRunner, ...")
    cv.add_argument("--shard_size", type=int, default=256, help="examples (slices) per shard")
    cv.add_argument("--compression", default="none", choices=["GZIP", "gzip", "none"])
    cv.add_argument("--val_fraction", type=float, default=0.1)
    cv.add_argument("--test_fraction", type=float, default=0.1)
    cv.add_argument("--split_seed", type=int, default=None,
                    help="seed of the split by study (written in the manifest); default: sorted-hash order")
    cv.add_argument("--allow_unregistered", action="store_true",
                    help="pair CT and PET even when their FrameOfReferenceUIDs differ")
    cv.add_argument("--strict", action="store_true",
                    help="stop without a manifest when any study fails (default: skip it, listed in the manifest)")
    cv.add_argument("--overwrite", action="store_true", help="redo a finished or unfinished set from scratch")

    ins = sub.add_parser("inspect", help="print what a prepared set holds", **kw)
    ins.add_argument("dir", nargs="?", help="the prepared set (the --out of convert); or --data_dir DIR")
    ins.add_argument("--data_dir", help="the prepared set, as every program that reads one names it")
    ins.add_argument("--verify", action="store_true", help="count the records of every shard")
    ins.add_argument("--json", action="store_true", help="print JSON")

    from data_prep.info import add_arguments

    add_arguments(sub.add_parser("info", help="describe one DICOM file, series folder or NIfTI (see `info --help`)",
                                 **kw))
    return p


def _phantom(a) -> int:
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

    from data_prep.phantom import PhantomConfig, case_plan, write_phantom_studies

    ts = {"none": ExplicitVRLittleEndian, "rle": RLELossless, "jpegls": JPEGLSLossless, "j2k": JPEG2000Lossless}
    cfg = PhantomConfig(fov_mm=a.fov_mm, pet_slices=a.pet_slices, pet_spacing_mm=a.pet_spacing_mm,
                        ct_spacing_mm=a.ct_spacing_mm, ct_slice_mm=a.ct_slice_mm, pet_fwhm_mm=a.pet_fwhm_mm,
                        counts_per_suv=a.counts_per_suv, transfer_syntax=ts[a.compress], world=a.world)
    paths = write_phantom_studies(a.out, a.cases, a.seed, nema_every=a.nema_every, cfg=cfg)
    for p, (variant, lesions) in zip(paths, case_plan(a.cases, a.nema_every)):
        print(f"{p}: {variant}{'' if lesions else ' (lesion-free)'}")
    return 0


def _convert(a, beam_args: Sequence[str] = ()) -> int:
    from data_prep.convert import ConvertConfig, convert, discover_studies, single_study

    if a.runner != "local":
        from data_prep.beam_pipeline import MISSING, beam_available

        if not beam_available():
            return cli.fail(f"convert --runner={a.runner}: {MISSING}")
    if bool(a.studies) == bool(a.ct or a.pet) or (not a.studies and not (a.ct and a.pet)):
        return cli.fail("convert: give either --studies ROOT, or --ct PATH and --pet PATH")
    if a.hr_spacing_mm not in (None, "median_pet"):
        try:
            a.hr_spacing_mm = float(a.hr_spacing_mm)
        except ValueError:
            return cli.fail(f"convert: --hr_spacing_mm must be a number (mm) or median_pet, not {a.hr_spacing_mm!r}")
    cfg = ConvertConfig(scale=a.scale, lr_fwhm_mm=a.lr_fwhm_mm, truth_fwhm_mm=a.truth_fwhm_mm,
                        no_truth_fwhm_mm=a.no_truth_fwhm_mm, counts_per_suv=a.counts_per_suv, seed=a.seed,
                        allow_unregistered=a.allow_unregistered, nifti_pet_units=a.nifti_pet_units,
                        roi_pattern=a.roi_pattern)
    median_in_convert = a.hr_spacing_mm == "median_pet" and a.runner == "local"  # after the workers' scan
    if a.studies and (a.hr_spacing_mm != "median_pet" or median_in_convert):  # the workers scan the headers
        from data_prep.convert import StudyTree

        specs = StudyTree(a.studies, allow_unregistered=a.allow_unregistered)
    elif a.studies:
        specs = discover_studies(a.studies, allow_unregistered=a.allow_unregistered)
        if not specs:
            from ctpet_srgan.errors import InputError

            raise InputError(a.studies, "no study with both a CT and a PET series was found")
    else:
        specs = [single_study(a.ct, a.pet, a.pet_truth, a.lesions, a.rtstruct)]
    cfg = dataclasses.replace(cfg, hr_spacing_mm=None if a.hr_spacing_mm == "median_pet" else a.hr_spacing_mm)
    if a.hr_spacing_mm == "median_pet" and not median_in_convert:  # Beam: known before the pipeline starts
        from data_prep.convert import with_median_pet_spacing

        cfg = with_median_pet_spacing(cfg, specs)
    kw = dict(workers=a.workers, shard_size=a.shard_size, compression=a.compression, val_fraction=a.val_fraction,
              test_fraction=a.test_fraction, split_seed=a.split_seed, strict=a.strict, overwrite=a.overwrite)
    if a.runner == "local":
        convert(specs, a.out, cfg, median_pet=median_in_convert, **kw)
    else:
        from data_prep.beam_pipeline import convert_beam

        convert_beam(specs, a.out, cfg, runner=a.runner, pipeline_args=beam_args, log=print, **kw)
    return 0


def _inspect(a) -> int:
    from data_prep.inspect import format_report, inspect

    if bool(a.dir) == bool(a.data_dir):
        return cli.fail("inspect: give the prepared set once: DIR or --data_dir DIR")
    info = inspect(a.dir or a.data_dir, verify=a.verify)
    print(json.dumps(info, sort_keys=True, default=list) if a.json else format_report(info))
    return 0 if info["complete"] else 1


def _dispatch(parsed: tuple[argparse.Namespace, list[str]]) -> int:
    """Runs the parsed subcommand; returns the exit status (2 with one stderr line for a user error)."""
    a, extra = parsed
    extra = [x for x in extra if x != "--"]
    if extra and (a.command != "convert" or a.runner == "local"):
        return cli.fail(f"python -m data_prep {a.command}: unrecognized arguments: {' '.join(extra)}"
                        + (" (Beam pipeline options need --runner=direct or another Beam runner)"
                           if a.command == "convert" else ""))
    if a.command == "info":
        from data_prep.info import run_info

        return run_info(a)
    try:
        if a.command == "convert":
            return _convert(a, extra)
        return {"phantom": _phantom, "inspect": _inspect}[a.command](a)
    except cli.USER_ERRORS as e:
        return cli.fail(cli.error_line(e))


def _parse(fv: flags.FlagValues, argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    return _parser(fv).parse_known_args(list(argv))  # what the convert parser does not know goes to Beam


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m data_prep ARGS` in-process (argv: the arguments after the program name); the exit status."""
    try:
        parsed = _parse(flags.FlagValues(), sys.argv[1:] if argv is None else argv)
    except SystemExit as e:  # a parse error (one line printed) or --help
        return int(e.code or 0)
    return _dispatch(parsed)


def run() -> None:
    """The program (`python -m data_prep`, console script `ctpet-prepare`): absl.app.run with absl's argparse
    integration of subcommands as its flags_parser."""
    app.run(_dispatch, flags_parser=lambda argv: _parse(flags.FLAGS, argv[1:]))


if __name__ == "__main__":
    run()
