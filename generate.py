"""Super-resolves a PET (SUVbw) with its CT (HU): `python generate.py --input_ct CT --input_pet PET --output_path OUT`.

Inputs (each of --input_ct / --input_pet): a DICOM file, a DICOM series folder, a NIfTI volume (.nii/.nii.gz), or a
2-D image (.png/.jpg/.tif) or .npy array; for 2-D inputs the grey levels are mapped to units with
--pet_scale (SUV per grey level) and --ct_scale/--ct_offset (HU = grey * scale + offset), and the two images are
taken to cover the same field of view (--pixel_mm is the PET pixel size). The CT is resampled onto the model's grid
in patient space; volumes run slice by slice in batches, in overlapping tiles for large slices, and the NIfTI,
NPY and DICOM outputs are written batch by batch as they come (memory: the inputs, the model and one batch).

Output, chosen by --output_path:
  X.nii.gz / X.nii  HR PET in SUVbw at X, HR CT in HU at X_ct.nii.gz (same affine: PET field of view, pixel / scale)
  X.png             fused view (PET colour map over grey CT, SUV colour bar) of --slice (default: the slice with the
                    highest SR PET uptake) or, with --mip, the maximum-intensity projection along the slices
  X.npy             HR PET in SUVbw at X ([slices, H, W], or [H, W] for a 2-D input), HR CT in HU at X_ct.npy
  a folder          a derived DICOM PET series (Bq/mL with the source PET's SUV tags, new Series/SOP UIDs,
                    ImageType DERIVED\\SECONDARY); needs a DICOM PET input. It carries the source's patient
                    name/ID/sex, study and frame UIDs and dates (so viewers fuse it); --anonymize drops them.
SR PET is clipped at 0 SUV in every output kind (activity is non-negative; the model's small undershoots near edges
are not data). CT and PET must share a FrameOfReferenceUID (when both say one) unless --allow_unregistered.
--model: a model folder or .keras file from train_keras.py, or a SavedModel export; default: the bundled demo model,
trained on synthetic phantoms only: NOT FOR CLINICAL USE. Serving an export with TF Serving: docs/serving.md.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
from absl import app, flags

from ctpet_srgan import cli
from ctpet_srgan.inference import DEMO_LABEL

F = flags.FLAGS

SERIES_DESCRIPTION = "SR PET (ctpet-srgan)"
DEMO_SERIES_DESCRIPTION = "SR PET (ctpet-srgan demo model, not for clinical use)"  # LO: <= 64 characters
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclasses.dataclass
class Options:
    """What the flags set (see _define_flags for their meaning)."""

    overwrite: bool = False
    slice: int | None = None
    mip: bool = False
    pet_units: str = "SUVbw"
    ct_units: str = "HU"
    pet_scale: float | None = None
    ct_scale: float | None = None
    ct_offset: float = 0.0
    pixel_mm: float = 4.0
    batch_size: int = 4  # 4 x 256^2 LR tiles: as fast as 8 on a CPU, half the model's memory (bench/RESULTS.md)
    tile: int = 256
    tile_overlap: int = 32
    progress: bool = True
    allow_unregistered: bool = False
    anonymize: bool = False


class GenerateError(Exception):
    """A problem reported to the user as one line."""


# ----------------------------------------------------------------------------------------------- inputs


def _is_2d(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES + (".npy",)


def read_2d(path: Path, scale: float | None, offset: float, what: str) -> np.ndarray:
    """A 2-D image or .npy -> float32 [H, W] in physical units (grey * scale + offset)."""
    from ctpet_srgan.errors import InputError

    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(path, f"not a readable .npy array ({e})") from None
        scale = 1.0 if scale is None else scale
    else:
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
        if arr is None:
            raise InputError(path, "not a readable image")
        if arr.ndim == 3:
            raise InputError(path, f"a colour image ({arr.shape[2]} channels); {what} needs one grey channel")
        if scale is None:
            flag = "--pet_scale" if what == "PET" else "--ct_scale (and --ct_offset)"
            raise InputError(path, f"the grey levels of an image have no units: give {flag}")
    arr = np.asarray(arr)
    if arr.ndim != 2 or min(arr.shape) < 1 or not np.issubdtype(arr.dtype, np.number):
        raise InputError(path, f"expected a 2-D numeric array, got shape {arr.shape} dtype {arr.dtype}")
    out = arr.astype(np.float32) * np.float32(scale) + np.float32(offset)
    if not np.all(np.isfinite(out)):
        raise InputError(path, "values are not finite")
    return out


def read_inputs(ct_path: Path, pet_path: Path, opts: Options):
    """(PET Volume in SUVbw, CT Volume in HU, is_2d). 2-D inputs become one-slice volumes on one field of view."""
    from ctpet_srgan.errors import InputError
    from ctpet_srgan.geometry import Volume, axial_affine
    from ctpet_srgan.volume_io import read_volume

    for p in (ct_path, pet_path):
        if not p.exists():
            raise InputError(p, "does not exist")
    if _is_2d(pet_path) or _is_2d(ct_path):
        if not (_is_2d(pet_path) and _is_2d(ct_path)):
            raise InputError(pet_path if not _is_2d(pet_path) else ct_path,
                             "a 2-D image/.npy input must be paired with a 2-D CT/PET image/.npy")
        pet = read_2d(pet_path, opts.pet_scale, 0.0, "PET")
        ct = read_2d(ct_path, opts.ct_scale, opts.ct_offset, "CT")
        if pet.min() < 0:
            raise InputError(pet_path, f"negative SUV ({pet.min():.3g}): check --pet_scale")
        p = opts.pixel_mm
        pet_vol = Volume(pet[None], axial_affine((0, 0, 0), (p, p, p)), "PT", "SUVbw", {})
        sy, sx = p * pet.shape[0] / ct.shape[0], p * pet.shape[1] / ct.shape[1]  # same field of view
        origin = (-p / 2 + sx / 2, -p / 2 + sy / 2, 0.0)
        ct_vol = Volume(ct[None], axial_affine(origin, (sx, sy, p)), "CT", "HU", {})
        return pet_vol, ct_vol, True
    pet_vol = read_volume(pet_path, modality="PT", nifti_units=opts.pet_units)
    ct_vol = read_volume(ct_path, modality="CT", nifti_units=opts.ct_units)
    if pet_vol.units != "SUVbw":
        raise InputError(pet_path, f"PET units are {pet_vol.units!r}, not SUVbw: not SUV-convertible")
    if ct_vol.units != "HU":
        raise InputError(ct_path, f"CT units are {ct_vol.units!r}, not HU")
    return pet_vol, ct_vol, False


def check_overlap(pet, ct, pet_path: Path, ct_path: Path, allow_unregistered: bool = False) -> None:
    """Refuses a CT that does not overlap the PET in patient space (LPS mm), or that is in another frame of
    reference (different FrameOfReferenceUID) unless `allow_unregistered` (as data_prep convert does)."""
    from ctpet_srgan.errors import InputError
    from ctpet_srgan.geometry import bounding_box_mm, overlap_mm

    if overlap_mm(pet, ct) is None:
        (a, b), (c, d) = bounding_box_mm(pet), bounding_box_mm(ct)
        box = lambda lo, hi: "[" + ", ".join(f"{x:.0f}..{y:.0f}" for x, y in zip(lo, hi)) + "] mm"  # noqa: E731
        raise InputError(ct_path, f"CT {box(c, d)} does not overlap the PET {pet_path} {box(a, b)} in patient space"
                                  " (LPS): not a co-registered pair")
    fo_pet, fo_ct = pet.meta.get("frame_of_reference_uid"), ct.meta.get("frame_of_reference_uid")
    if fo_pet and fo_ct and fo_pet != fo_ct:
        if not allow_unregistered:
            raise InputError(ct_path, f"CT and PET {pet_path} have different FrameOfReferenceUIDs (not registered);"
                                      " pass --allow_unregistered to pair them anyway")
        print("generate: warning: CT and PET have different FrameOfReferenceUIDs; --allow_unregistered: assuming "
              "they are registered", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- outputs


def output_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".nii.gz") or name.endswith(".nii"):
        return "nifti"
    if name.endswith(".png"):
        return "png"
    if name.endswith(".npy"):
        return "npy"
    if path.suffix == "" or path.is_dir():
        return "dicom"
    raise GenerateError(f"{path}: unknown output kind: use .nii.gz, .nii, .png, .npy or a folder (DICOM)")


def sibling(path: Path, tag: str) -> Path:
    """X.nii.gz -> X_ct.nii.gz, X.npy -> X_ct.npy."""
    name = path.name
    for ext in (".nii.gz", ".nii", ".npy"):
        if name.lower().endswith(ext):
            return path.with_name(name[: -len(ext)] + tag + name[-len(ext):])
    return path.with_name(name + tag)


def planned_outputs(path: Path, kind: str) -> list[Path]:
    return [path, sibling(path, "_ct")] if kind in ("nifti", "npy") else [path]


def check_outputs_free(paths: list[Path], overwrite: bool) -> None:
    for p in paths:
        if p.exists() and not overwrite:
            raise GenerateError(f"{p}: exists (pass --overwrite to replace it)")
        if not p.parent.exists():
            raise GenerateError(f"{p.parent}: output folder does not exist")


def _description(demo: bool) -> str:
    return DEMO_SERIES_DESCRIPTION if demo else SERIES_DESCRIPTION


def write_outputs(kind: str, out: Path, sr_pet, sr_ct, opts: Options, *, is_2d: bool, pet_src, label: str,
                  demo: bool) -> None:
    """Writes whole SR volumes (PET already clipped at 0 SUV) as `kind` at `out` (and its _ct sibling), each
    output renamed into place only when complete. A .png shows --slice (default: the hottest) or the MIP."""
    if kind in ("nifti", "npy"):
        from ctpet_srgan.slabs import write_volumes

        write_volumes(sr_pet, sr_ct, *planned_outputs(out, kind), two_d=is_2d)
    elif kind == "png":
        from ctpet_srgan.figures import save_fused_png

        if opts.mip:
            pet_img, ct_img, where = sr_pet.array.max(axis=0), sr_ct.array.mean(axis=0), "MIP"
        else:
            peaks = sr_pet.array.reshape(sr_pet.shape[0], -1).max(axis=1)
            k = opts.slice if opts.slice is not None else int(np.argmax(peaks))  # default: the hottest slice
            pet_img, ct_img, where = sr_pet.array[k], sr_ct.array[k], f"slice {k}"
        title = f"SR PET over CT ({where})\n" + (DEMO_LABEL.upper() if demo else f"model: {label}")
        save_fused_png(out, ct_img, pet_img, title, sr_pet.spacing_mm[:2],
                       direction=None if is_2d else sr_pet.direction)  # a 2-D input has no known orientation
    elif kind == "dicom":
        from ctpet_srgan.dicom_write import write_derived_series

        write_derived_series(out, sr_pet, pet_src, _description(demo), anonymize=opts.anonymize)


def write_streamed(kind: str, out: Path, stream, opts: Options, *, is_2d: bool, pet_src, demo: bool) -> None:
    """NIfTI, NPY and DICOM outputs written batch by batch as the model produces them (peak memory: the inputs, the
    model and one batch), renamed into place only when complete; the same bytes as write_outputs."""
    from ctpet_srgan import slabs

    if kind in ("nifti", "npy"):
        slabs.write_stream(stream, *planned_outputs(out, kind), two_d=is_2d)
    elif kind == "dicom":
        from ctpet_srgan.dicom_write import write_derived_series

        write_derived_series(out, slabs.streamed_pet_volume(stream), pet_src, _description(demo),
                             anonymize=opts.anonymize)
    else:
        raise ValueError(f"write_streamed: {kind} outputs need the whole volume (write_outputs)")


def load_model(model: str | None, pet, is_2d: bool):
    """The Predictor of --model, saying on stderr where it runs, that it is the demo model, and when the PET's
    pixels differ from the model's training grid by more than 25%."""
    from ctpet_srgan.inference import load_predictor

    predictor = load_predictor(model)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"generate: running on {'GPU ' + gpus[0].name if gpus else 'CPU'}", file=sys.stderr)
    if predictor.is_demo:
        print(f"generate: using the bundled {DEMO_LABEL.upper()}", file=sys.stderr)
    want = predictor.config.lr_spacing_mm if predictor.config is not None else None
    if want and not is_2d and np.max(np.abs(np.asarray(pet.spacing_mm[:2]) / np.asarray(want[:2]) - 1)) > 0.25:
        print(f"generate: warning: PET pixels are {pet.spacing_mm[0]:.2f} x {pet.spacing_mm[1]:.2f} mm, the model was"
              f" trained on {want[0]:.2f} x {want[1]:.2f} mm", file=sys.stderr)
    return predictor


def generate(ct_path: str, pet_path: str, output_path: str, model: str | None = None,
             opts: Options | None = None) -> list[Path]:
    """The whole command; returns the files/folders written."""
    from ctpet_srgan.atomic import remove_stale_temporaries
    from ctpet_srgan.dicom_write import pet_dicom_source
    from ctpet_srgan.slabs import clip_suv

    out = Path(output_path)
    kind = output_kind(out)
    opts = opts or Options()
    targets = planned_outputs(out, kind)
    check_outputs_free(targets, opts.overwrite)
    for p in remove_stale_temporaries(*targets):
        print(f"generate: removed {p.name}, left by an interrupted run", file=sys.stderr)
    ct_p, pet_p = Path(ct_path), Path(pet_path)
    pet, ct, is_2d = read_inputs(ct_p, pet_p, opts)
    check_overlap(pet, ct, pet_p, ct_p, opts.allow_unregistered)
    if kind == "png" and not opts.mip and opts.slice is not None and not 0 <= opts.slice < pet.shape[0]:
        raise GenerateError(f"--slice {opts.slice} is outside the PET's slices 0..{pet.shape[0] - 1}")
    pet_src = pet_dicom_source(pet_p) if kind == "dicom" and not is_2d else None
    if kind == "dicom" and pet_src is None:
        raise GenerateError(f"{out}: a DICOM output needs a DICOM PET input (its SUV tags); use .nii.gz or .npy")
    predictor = load_model(model, pet, is_2d)
    stream = predictor.stream_volume(pet, ct, batch_size=opts.batch_size, tile=opts.tile or None,
                                     overlap=opts.tile_overlap, progress=opts.progress)
    ct = None  # the stream keeps its own (int16 when lossless) copy of the CT: the float32 one can go
    if kind == "png":  # a figure of the whole volume: the slice with the highest uptake, or the MIP
        sr_pet, sr_ct = stream.collect()
        sr_pet = dataclasses.replace(sr_pet, array=clip_suv(sr_pet.array))
        write_outputs(kind, out, sr_pet, sr_ct, opts, is_2d=is_2d, pet_src=pet_src, label=predictor.label,
                      demo=predictor.is_demo)
    else:  # a PET-only model's CT output is the input CT on the HR grid
        write_streamed(kind, out, stream, opts, is_2d=is_2d, pet_src=pet_src, demo=predictor.is_demo)
    return targets


def main(argv):
    del argv
    from ctpet_srgan.errors import InputError

    missing = [n for n in ("input_ct", "input_pet", "output_path") if not getattr(F, n)]
    if missing:
        return cli.fail(f"--{', --'.join(missing)}: required, not given")
    opts = Options(**{f.name: getattr(F, f.name) for f in dataclasses.fields(Options)})
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors (cuInit on a CPU machine, oneDNN)
    try:
        written = generate(F.input_ct, F.input_pet, F.output_path, F.model, opts)
    except (GenerateError, InputError, FileNotFoundError, FileExistsError, ValueError) as e:
        return cli.fail(cli.error_line(e))  # "PATH: problem", exit status 2
    for p in written:
        print(f"wrote {p}")
    return 0


def _define_flags() -> None:
    """The CLI's flags (defined only when run as a script, so importing this module defines no absl flags)."""
    flags.DEFINE_string("input_ct", None, "CT: DICOM file or series folder, NIfTI (HU), 2-D image or .npy.")
    flags.DEFINE_string("input_pet", None, "PET: DICOM file or series folder (SUV-convertible), NIfTI (SUVbw),"
                        " 2-D image or .npy.")
    flags.DEFINE_string("output_path", None, "X.nii.gz, X.nii, X.png, X.npy, or a folder (derived DICOM PET series).")
    flags.DEFINE_string("model", None, "Model folder / .keras file / SavedModel. Default: bundled phantom-trained"
                        " demo model (not for clinical use).")
    flags.DEFINE_boolean("overwrite", False, "Replace existing outputs.")
    flags.DEFINE_integer("slice", None, "Slice index (of the PET) shown in a .png output.")
    flags.DEFINE_boolean("mip", False, "For a .png output: maximum-intensity projection along the slices.")
    flags.DEFINE_string("pet_units", "SUVbw", "Units of a NIfTI PET's voxels (only SUVbw is accepted by the model).")
    flags.DEFINE_string("ct_units", "HU", "Units of a NIfTI CT's voxels.")
    flags.DEFINE_float("pet_scale", None, "2-D PET image/.npy: SUV per grey level (default 1 for .npy; required for"
                       " images).")
    flags.DEFINE_float("ct_scale", None, "2-D CT image/.npy: HU per grey level (default 1 for .npy; required for"
                       " images).")
    flags.DEFINE_float("ct_offset", 0.0, "2-D CT image/.npy: HU of grey level 0.")
    flags.DEFINE_float("pixel_mm", 4.0, "2-D inputs: PET pixel size in mm (sets the output affine).")
    flags.DEFINE_integer("batch_size", 4, "Slices per batch (outputs are written batch by batch; 4 is as fast as 8"
                         " on a CPU with half the peak memory; a GPU may like more).")
    flags.DEFINE_integer("tile", 256, "LR tile edge in pixels for large slices (0: whole slices).")
    flags.DEFINE_integer("tile_overlap", 32, "LR pixels shared by neighbouring tiles (the seam is cut mid-band).")
    flags.DEFINE_boolean("progress", True, "Show a progress bar.")
    flags.DEFINE_boolean("allow_unregistered", False, "Accept a CT and PET with different FrameOfReferenceUIDs "
                         "(assume they are registered), as data_prep convert --allow_unregistered does.")
    flags.DEFINE_boolean("anonymize", False, "Derived DICOM output: no patient name/ID, new (hashed) study and frame "
                         "UIDs, dates shifted to 2000-01-01 (SUV unchanged). Default: the source's identity, so "
                         "viewers file and fuse the series with the source.")


def run() -> None:
    """Console entry point `ctpet-generate` (same flags as `python generate.py`)."""
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)  # a flag error: one line, exit status 2


if __name__ == "__main__":
    run()
