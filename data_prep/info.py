"""`python -m data_prep.info PATH`: what the reader makes of a DICOM file, series folder or NIfTI.

Prints one JSON object (modality, shape [slices, rows, cols], spacing_mm [i, j, k], units, min/max/mean
in those units; for PET also suv_scale and the reference time used). No patient identifiers or UIDs are
printed. Flags: absl's argparse integration (--flagfile=FILE). Bad input: one line "PATH: problem" on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np
from absl import app, flags

from ctpet_srgan import cli
from ctpet_srgan.errors import InputError
from ctpet_srgan.volume_io import read_volume

_PET_KEYS = ("suv_scale", "suv_reference_time", "decay_correction", "units_source", "suv_rule")


def describe(path: str, modality: str | None = None, nifti_units: str | None = None,
             pet_units: str = "SUVbw") -> dict[str, Any]:
    """Reads PATH and summarises it; values in HU (CT) or SUVbw (PT; pet_units="stored": the DICOM's stored
    units, never SUV), lengths in mm."""
    vol = read_volume(path, modality=modality, nifti_units=nifti_units, pet_units=pet_units)
    a = vol.array
    out: dict[str, Any] = {
        "path": str(path),
        "modality": vol.modality,
        "units": vol.units,
        "shape": list(vol.shape),
        "shape_axes": "slices,rows,cols",
        "spacing_mm": [round(s, 6) for s in vol.spacing_mm],
        "origin_mm": [round(float(v), 4) for v in vol.affine[:3, 3]],
        "direction": [[round(float(v), 6) for v in row] for row in vol.direction],
        "min": float(np.min(a)),
        "max": float(np.max(a)),
        "mean": float(np.mean(a, dtype=np.float64)),
    }
    for key in ("n_files", "transfer_syntax", "slice_spacing_from", "source"):
        if key in vol.meta:
            out[key] = vol.meta[key]
    if vol.modality == "PT":
        for key in _PET_KEYS:
            if key in vol.meta:
                out[key] = vol.meta[key]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `info` (also the `python -m data_prep info` subcommand's)."""
    parser.add_argument("path", help="DICOM file, DICOM series folder, or .nii/.nii.gz")
    parser.add_argument("--modality", choices=["CT", "PT"], default=None,
                        help="required for NIfTI, except this project's own output (its header says)")
    parser.add_argument("--pet_units", dest="pet_units", choices=["SUVbw", "stored"], default="SUVbw",
                        help="stored: read a DICOM PET in its stored units (e.g. BQML, a phantom without weight or"
                        " dose), not converted to SUV")
    parser.add_argument("--nifti_units", dest="nifti_units", default=None,
                        help="NIfTI voxel units: HU (CT) or SUVbw (PT)")
    # the hyphenated spellings of earlier versions, still accepted (not shown in --help)
    parser.add_argument("--pet-units", dest="pet_units", choices=["SUVbw", "stored"],
                        default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    parser.add_argument("--nifti-units", dest="nifti_units", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def run_info(args: argparse.Namespace) -> int:
    """Prints the description of args.path; returns the exit status (2 with one stderr line on bad input)."""
    try:
        info = describe(args.path, modality=args.modality, nifti_units=args.nifti_units, pet_units=args.pet_units)
        text = json.dumps(info, sort_keys=True, allow_nan=False)
    except InputError as e:
        return cli.fail(cli.error_line(e))
    except Exception as e:  # one line, never a traceback, for unexpected reader failures
        return cli.fail(f"{args.path}: unexpected error ({type(e).__name__}: {e})")
    print(text)
    return 0


def _parser(fv: flags.FlagValues) -> cli.ArgumentParser:
    parser = cli.ArgumentParser(prog="python -m data_prep info", description=__doc__.splitlines()[0],
                                inherited_absl_flags=fv)
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m data_prep.info ARGS` in-process (argv: the arguments after the program name); the exit status."""
    try:
        args = _parser(flags.FlagValues()).parse_args(sys.argv[1:] if argv is None else list(argv))
    except SystemExit as e:  # a parse error (one line printed) or --help
        return int(e.code or 0)
    return run_info(args)


def run() -> None:
    """The program (`python -m data_prep.info`): absl.app.run with absl's argparse integration (--flagfile)."""
    app.run(run_info, flags_parser=lambda argv: _parser(flags.FLAGS).parse_args(argv[1:]))


if __name__ == "__main__":
    run()
