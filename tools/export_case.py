"""Exports one study of a prepared data set as the inputs generate.py takes: LR PET and HR CT as DICOM series.

  python tools/export_case.py --data_dir data/real --split test --index 0 --out outputs/real_case/input
  python tools/export_case.py --data_dir data/real --study 3a9afc409f6332f9 --out outputs/real_case/input

A study is chosen by split and position in the manifest's list of that split (--split, --index), or by its study
hash (--study, the 16 hex digits of manifest.json); never by a patient folder name (the records do not know it).
Written into --out (a new folder, replaced whole and atomically; --overwrite to replace an existing one):
  lr_pet/       the records' LR PET (SUVbw; the project's documented degradation of the clinical PET) on the LR grid
                (`degradation.lr_grid_affine` of the records' hr_affine), a DICOM PET series in Bq/mL whose SUV tags
                (nominal weight, dose and times, below) give back the record's SUV exactly up to the int16 rescale
  ct/           the records' HR CT (HU) on the HR grid, a DICOM CT series
  hr_pet.nii.gz the records' HR PET (SUVbw, HR grid): the reference the super-resolved PET is compared with
  hr_mask.nii.gz the records' tumour mask (1 inside, HR grid), where the records carry one
  case.json     study hash, split, index, grids and what each file is
Both series share new Study and FrameOfReference UIDs (so they fuse), carry PatientName ANONYMOUS / PatientID ANON,
the date 2000-01-01, and a SeriesDescription saying what they are. The prepared records keep no weight or dose, so
the PET tags carry nominal ones (NOMINAL_WEIGHT_KG, NOMINAL_DOSE_BQ): the SUV read back is the record's SUV, the
Bq/mL values are not the patient's. Research use only, not for clinical use.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ctpet_srgan.errors import InputError  # noqa: E402
from ctpet_srgan.geometry import Volume  # noqa: E402
from ctpet_srgan.manifest import Manifest  # noqa: E402

NOMINAL_WEIGHT_KG = 70.0
NOMINAL_DOSE_BQ = 3.7e8
F18_HALF_LIFE_S = 6586.2
EPOCH = dt.datetime(2000, 1, 1, 10, 0, 0)  # injection time; the PET series starts 60 min later
UPTAKE = dt.timedelta(minutes=60)
GEOMETRY_TOL_MM = 0.01  # slice origins vs the first slice's grid (records keep float32 affines)
STUDY_HASH = re.compile(r"[0-9a-f]{16}")


@dataclasses.dataclass
class Case:
    """One study of a prepared set as volumes: lr_pet, hr_pet (SUVbw), hr_ct (HU), hr_mask (0/1 or None)."""

    study: str
    split: str
    index: int
    scale: int
    lr_pet: Volume
    hr_pet: Volume
    hr_ct: Volume
    hr_mask: Volume | None
    has_truth: bool


def choose_study(manifest: Manifest, data_dir: Path, *, split: str | None = None, index: int | None = None,
                 study: str | None = None) -> tuple[str, str, int]:
    """The (study hash, split, index in that split) asked for: by `study` hash, or by `split` and `index`.

    Raises InputError naming the data set when the study is not there.
    """
    if study is not None:
        if not STUDY_HASH.fullmatch(study):
            raise InputError(data_dir, f"--study {study!r} is not a study hash (16 hex digits, as in manifest.json);"
                                       " studies are never chosen by patient folder name")
        entry = manifest.studies.get(study)
        if entry is None:
            raise InputError(data_dir, f"no study {study} in manifest.json")
        sp = entry.split
        return study, sp, manifest.splits[sp].studies.index(study)
    sp = split or "test"
    names = manifest.split(sp, data_dir).studies
    i = 0 if index is None else int(index)
    if not 0 <= i < len(names):
        raise InputError(data_dir, f"--index {i} is outside the {len(names)} studies of split {sp!r}")
    return names[i], sp, i


def volume_affine(slices: Sequence[dict[str, Any]], where: Path) -> np.ndarray:
    """The 3-D HR affine (index (i, j, k) -> LPS mm) of a study's stacked slices, checked against every slice.

    Args:
        slices: the study's slices sorted by slice_index, each with hr_affine (4x4; its third column is the slice
            step, its origin the slice's own position). where: named in errors.

    Returns:
        The first slice's hr_affine (k counted from that slice). Raises InputError when the slice indices have
        gaps or a slice's origin is off the grid by more than GEOMETRY_TOL_MM.
    """
    idx = [int(s["slice_index"]) for s in slices]
    if idx != list(range(idx[0], idx[0] + len(idx))):
        raise InputError(where, f"the study's slice indices have gaps ({idx[0]}..{idx[-1]}, {len(idx)} slices)")
    a0 = np.asarray(slices[0]["hr_affine"], np.float64)
    for n, s in enumerate(slices):
        a = np.asarray(s["hr_affine"], np.float64)
        want = a0[:3, 3] + n * a0[:3, 2]
        if np.max(np.abs(a[:3, :3] - a0[:3, :3])) > 1e-4 or np.max(np.abs(a[:3, 3] - want)) > GEOMETRY_TOL_MM:
            raise InputError(where, f"slice {idx[n]} is not on the grid of slice {idx[0]} (hr_affine differs)")
    return a0


def load_case(data_dir: str | Path, *, split: str | None = None, index: int | None = None,
              study: str | None = None) -> Case:
    """Reads one study of a prepared set (records + manifest) as volumes on their own grids.

    Args:
        data_dir: the prepared set. split, index / study: which study (see `choose_study`).

    Returns:
        A Case: LR PET on `degradation.lr_grid_affine(hr_affine, scale)`, HR PET / CT / mask on the HR affine.
    """
    from ctpet_srgan.degradation import lr_grid_affine
    from ctpet_srgan.evaluation import iter_studies

    data_dir = Path(data_dir)
    manifest = Manifest.load(data_dir)
    h, sp, i = choose_study(manifest, data_dir, split=split, index=index, study=study)
    slices = next((sl for name, sl in iter_studies(data_dir, sp) if name == h), None)
    if not slices:
        raise InputError(data_dir, f"study {h} is listed in split {sp!r} but its records hold no slices")
    want = manifest.studies[h].slices if h in manifest.studies else len(slices)
    if len(slices) != want:
        raise InputError(data_dir, f"study {h}: {len(slices)} slices in the records, manifest.json says {want}")
    scale = manifest.scale
    hr_aff = volume_affine(slices, data_dir)
    stack = lambda k: np.stack([s[k] for s in slices]).astype(np.float32)  # noqa: E731
    mask = None
    if all("hr_mask" in s for s in slices):
        mask = Volume(np.stack([s["hr_mask"] for s in slices]).astype(np.float32), hr_aff, "SEG", "mask")
    return Case(study=h, split=sp, index=i, scale=scale,
                lr_pet=Volume(stack("lr_pet"), lr_grid_affine(hr_aff, scale), "PT", "SUVbw"),
                hr_pet=Volume(stack("hr_pet"), hr_aff, "PT", "SUVbw"),
                hr_ct=Volume(stack("hr_ct"), hr_aff, "CT", "HU"),
                hr_mask=mask, has_truth=all(s["has_truth"] for s in slices))


def _pet_info():
    from ctpet_srgan.dicom_write import PetInfo

    return PetInfo(injected_dose_bq=NOMINAL_DOSE_BQ, half_life_s=F18_HALF_LIFE_S, injection_datetime=EPOCH,
                   series_datetime=EPOCH + UPTAKE, acquisition_datetime=EPOCH + UPTAKE, decay_correction="START")


def suv_to_bqml_factor(n_slices: int) -> float:
    """SUVbw per Bq/mL that the nominal tags give, computed by the reader's own QIBA rules (ctpet_srgan.suv)."""
    from pydicom.dataset import Dataset

    from ctpet_srgan import suv
    from ctpet_srgan.dicom_write import set_pet_attributes

    template = Dataset()
    template.PatientWeight = NOMINAL_WEIGHT_KG
    set_pet_attributes(template, _pet_info())
    factor, _, _ = suv.suv_scale_factor(template, [EPOCH + UPTAKE] * n_slices)
    return float(factor)


def _description(what: str, spacing_mm: Sequence[float]) -> str:
    return f"ctpet-srgan {what} {spacing_mm[0]:.2f} mm, research only"[:64]


def write_case(case: Case, out_dir: Path) -> dict[str, Any]:
    """Writes the Case's files into the (empty or new) folder `out_dir`; returns the case.json content."""
    from pydicom.uid import generate_uid

    from ctpet_srgan.atomic import write_json_atomic
    from ctpet_srgan.dicom_write import StudyInfo, write_series
    from ctpet_srgan.nifti_io import write_nifti

    study = StudyInfo(generate_uid(), generate_uid(), EPOCH, patient_weight_kg=NOMINAL_WEIGHT_KG)
    factor = suv_to_bqml_factor(case.lr_pet.shape[0])
    bqml = dataclasses.replace(case.lr_pet, array=(case.lr_pet.array / factor).astype(np.float32), units="BQML")
    pet_desc = _description("degraded LR PET", case.lr_pet.spacing_mm)
    ct_desc = _description("HR CT", case.hr_ct.spacing_mm)
    derived = ("DERIVED", "SECONDARY", "AXIAL")
    write_series(bqml, out_dir / "lr_pet", study=study, series_number=2, series_description=pet_desc,
                 pet=_pet_info(), image_type=derived, file_prefix="PT")
    write_series(case.hr_ct, out_dir / "ct", study=study, series_number=1, series_description=ct_desc,
                 image_type=derived, file_prefix="CT")
    write_nifti(case.hr_pet, out_dir / "hr_pet.nii.gz")
    if case.hr_mask is not None:
        write_nifti(case.hr_mask, out_dir / "hr_mask.nii.gz")
    info = {
        "study": case.study, "split": case.split, "index": case.index, "scale": case.scale,
        "slices": case.lr_pet.shape[0],
        "lr_shape": list(case.lr_pet.shape), "hr_shape": list(case.hr_pet.shape),
        "lr_spacing_mm": [round(v, 6) for v in case.lr_pet.spacing_mm],
        "hr_spacing_mm": [round(v, 6) for v in case.hr_pet.spacing_mm],
        "has_truth": case.has_truth, "has_mask": case.hr_mask is not None,
        "files": {"lr_pet": f"DICOM PET, SUVbw via nominal tags: {pet_desc}", "ct": f"DICOM CT, HU: {ct_desc}",
                  "hr_pet.nii.gz": "HR PET (SUVbw), the reference" + ("" if case.has_truth else
                                                                       " (the clinical PET itself: no truth)"),
                  **({"hr_mask.nii.gz": "tumour mask on the HR grid (1 inside)"} if case.hr_mask is not None else {})},
        "nominal_pet_tags": {
            "patient_weight_kg": NOMINAL_WEIGHT_KG, "injected_dose_bq": NOMINAL_DOSE_BQ,
            "note": "the records keep SUV only; these make SUV computable, they are not the patient's"},
    }
    write_json_atomic(out_dir / "case.json", info)
    return info


def export_case(data_dir: str | Path, out: str | Path, *, split: str | None = None, index: int | None = None,
                study: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Reads one study and writes it into `out`, atomically: a temporary folder beside it renamed into place.

    Raises InputError when `out` exists (without `overwrite`) or the study is not in the set.
    """
    from ctpet_srgan.atomic import replace_dir

    out = Path(out)
    if out.exists() and not overwrite:
        raise InputError(out, "exists; choose another --out or pass --overwrite")
    case = load_case(data_dir, split=split, index=index, study=study)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=out.parent))
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes 0700; the finished folder gets the usual mode
    try:
        info = write_case(case, tmp)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    return info


def define_flags(fv) -> None:
    """The command line (absl flags, defined in the FlagValues `fv`)."""
    from absl import flags

    d = dict(flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Prepared data set (manifest.json + shards).", required=True, **d)
    flags.DEFINE_string("split", None, "train, val or test (default test).", **d)
    flags.DEFINE_integer("index", None, "Position in the split's study list (default 0).", **d)
    flags.DEFINE_string("study", None, "Study hash (16 hex digits of manifest.json), instead of --index.", **d)
    flags.DEFINE_string("out", None, "Folder to write (lr_pet/, ct/, hr_pet.nii.gz, case.json).", required=True, **d)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out.", **d)


def _export(a) -> int:
    if a.study is not None and (a.index is not None or a.split is not None):
        raise ValueError("--study: names the study; do not combine it with --split/--index")
    info = export_case(a.data_dir, a.out, split=a.split, index=a.index, study=a.study, overwrite=a.overwrite)
    print(f"export_case: study {info['study']} ({info['split']} #{info['index']}, {info['slices']} slices): LR PET"
          f" {info['lr_spacing_mm'][0]:.2f} mm, HR {info['hr_spacing_mm'][0]:.2f} mm -> {a.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """`python tools/export_case.py ARGS` in-process (argv: the arguments after the program name); the exit status
    (0 written; 2 with one line `PATH: problem` on stderr for bad input or flags)."""
    from ctpet_srgan import cli

    return cli.main(define_flags, _export, argv, prog="tools/export_case.py")


if __name__ == "__main__":
    from ctpet_srgan import cli

    cli.run(define_flags, _export)
