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
import datetime as dt
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

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


def save_fused_png(path: Path, ct_hu: np.ndarray, pet_suv: np.ndarray, title: str, spacing_mm=(1.0, 1.0),
                   direction: np.ndarray | None = None) -> None:
    """Fused PET-over-CT figure with an SUV colour bar, a mm scale bar and (given `direction`, the Volume's 3x3
    LPS axes) orientation letters at the edges; written atomically. spacing_mm: (column, row) pixel size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ctpet_srgan.atomic import atomic_path
    from ctpet_srgan.fusion import fuse_rgb, orientation_labels, scale_bar_mm

    suv_max = max(float(np.percentile(pet_suv, 99.5)), 1.0)
    rgb = fuse_rgb(ct_hu, pet_suv, suv_max=suv_max)
    h, w = pet_suv.shape
    fig, ax = plt.subplots(figsize=(6, 6 * h * spacing_mm[1] / (w * spacing_mm[0]) + 0.6), dpi=100)
    ax.imshow(rgb, aspect=spacing_mm[1] / spacing_mm[0])
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    bar = scale_bar_mm(w * spacing_mm[0])
    x0, y0 = 0.04 * w, 0.95 * h
    ax.plot([x0, x0 + bar / spacing_mm[0]], [y0, y0], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0, y0 - 0.02 * h, f"{bar:g} mm", color="white", fontsize=8, va="bottom")
    if direction is not None:
        where = {"left": (0.01, 0.5, "left", "center"), "right": (0.99, 0.5, "right", "center"),
                 "top": (0.5, 0.99, "center", "top"), "bottom": (0.5, 0.01, "center", "bottom")}
        for edge, letter in orientation_labels(direction).items():
            x, y, ha, va = where[edge]
            ax.text(x, y, letter, transform=ax.transAxes, color="yellow", fontsize=11, fontweight="bold",
                    ha=ha, va=va)
    sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0.0, suv_max), cmap="hot")
    fig.colorbar(sm, ax=ax, fraction=0.046, pad=0.04).set_label("SUVbw (g/mL)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def pet_dicom_source(pet_path: Path):
    """Header (no pixels) of one slice of the DICOM PET input, or None if the input is not DICOM."""
    import pydicom

    from ctpet_srgan import dicom_io

    files = dicom_io.series_files(pet_path) if pet_path.is_dir() else [pet_path]
    for f in files:
        try:
            ds = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 (non-DICOM files in the folder)
            continue
        if str(ds.get("Modality", "")).upper() == "PT":
            return ds
    return None


def _tracer(rp) -> dict:
    """The source's tracer and radionuclide (PetInfo fields), so a derived FLT or Ga-68 series is not labelled FDG."""
    out = {}
    if rp.get("Radiopharmaceutical"):
        out["radiopharmaceutical"] = str(rp.Radiopharmaceutical)
    codes = rp.get("RadionuclideCodeSequence")
    if codes:
        c = codes[0]
        if c.get("CodeValue") and c.get("CodingSchemeDesignator"):
            out["radionuclide_code"] = (str(c.CodeValue), str(c.CodingSchemeDesignator))
        if c.get("CodeMeaning"):
            out["radionuclide"] = str(c.CodeMeaning)
    return out


ANONYMOUS_EPOCH = dt.datetime(2000, 1, 1)


def derived_pet_series(sr_pet, src, out_dir: Path, description: str, anonymize: bool = False) -> None:
    """Writes the SR PET (SUVbw) as a derived DICOM PET series in Bq/mL carrying the source's SUV tags.

    The Bq/mL values are SR SUV / the SUV factor that the written tags give (computed with the same QIBA rules
    a reader uses), so SUV read from the new series equals the SR SUV.
    Identity (a choice): by default the series joins the source's patient and study (PatientName, PatientID,
    PatientSex, StudyInstanceUID, FrameOfReferenceUID, real dates) so a viewer or PACS files it beside the source
    and fuses it. `anonymize`: PatientName ANONYMOUS, PatientID ANON, sex O, new Study and FrameOfReference UIDs
    (one-way hashes of the source's, so the outputs of one study still fuse with each other), and every date
    shifted by whole days so the study falls on 2000-01-01 (times of day and intervals kept: SUV is unchanged).
    Weight, dose and half-life stay (SUV needs them).
    """

    from pydicom.dataset import Dataset

    from ctpet_srgan import suv
    from ctpet_srgan.dicom_write import PetInfo, StudyInfo, set_pet_attributes, write_series
    from ctpet_srgan.errors import InputError
    from ctpet_srgan.geometry import Volume

    try:
        rp = src.RadiopharmaceuticalInformationSequence[0]
        series_t = suv.parse_da_tm(src.get("SeriesDate"), src.get("SeriesTime"))
        if series_t is None:
            raise ValueError("missing SeriesDate/SeriesTime")
        inj, _ = suv.injection_datetime(src, rp, series_t)
        acq = suv.acquisition_datetime(src) or series_t
        pet = PetInfo(
            injected_dose_bq=float(rp.RadionuclideTotalDose), half_life_s=float(rp.RadionuclideHalfLife),
            injection_datetime=inj, series_datetime=series_t, acquisition_datetime=acq,
            decay_correction=str(src.get("DecayCorrection", "START")).upper(), units="BQML",
            frame_duration_ms=int(src.get("ActualFrameDuration") or 180_000), **_tracer(rp))
        if None in (inj, series_t, acq):
            raise ValueError("missing dates/times")
        weight = float(src.PatientWeight)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        raise InputError(out_dir, f"the PET input lacks the dose/time/weight tags a derived SUV series needs ({e})")
    study_t = suv.parse_da_tm(src.get("StudyDate"), src.get("StudyTime")) or series_t
    if anonymize:
        from pydicom.uid import generate_uid

        shift = dt.datetime.combine(study_t.date(), dt.time()) - ANONYMOUS_EPOCH
        pet = dataclasses.replace(pet, injection_datetime=pet.injection_datetime - shift,
                                  series_datetime=pet.series_datetime - shift,
                                  acquisition_datetime=pet.acquisition_datetime - shift)
        study_t, acq = study_t - shift, acq - shift
        hashed = lambda uid: generate_uid(entropy_srcs=["ctpet-srgan anonymize", str(uid)])  # noqa: E731
        study = StudyInfo(hashed(src.get("StudyInstanceUID", "")), hashed(src.get("FrameOfReferenceUID", "")),
                          study_t, patient_name="ANONYMOUS", patient_id="ANON", patient_weight_kg=weight,
                          patient_sex="O")
    else:  # the derived series belongs to the source's patient and study (that is what lets a viewer fuse it)
        study = StudyInfo(str(src.get("StudyInstanceUID", "")), str(src.get("FrameOfReferenceUID", "")), study_t,
                          patient_name=str(src.get("PatientName", "")), patient_id=str(src.get("PatientID", "")),
                          patient_weight_kg=weight, patient_sex=str(src.get("PatientSex", "") or "O"))
    template = Dataset()
    template.PatientWeight = weight
    set_pet_attributes(template, pet)
    factor, _, _ = suv.suv_scale_factor(template, [acq] * sr_pet.shape[0])
    factor = np.broadcast_to(np.asarray(factor, np.float64), (sr_pet.shape[0],))
    # slice by slice (sr_pet.array may be a read-once SlabSlices): the same values as the whole-volume expression
    bqml = MappedSlices(sr_pet.array, lambda k, a: (np.maximum(a, 0.0) / factor[k : k + 1, None]).astype(np.float32))
    vol = Volume(bqml, sr_pet.affine, "PT", "BQML")
    number = int(src.get("SeriesNumber") or 0) + 1000
    write_series(vol, out_dir, study=study, series_number=number, series_description=description, pet=pet,
                 image_type=("DERIVED", "SECONDARY", "AXIAL"), file_prefix="SR")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(out: Path, min_age_s: float = 3600.0) -> list[Path]:
    """Removes what killed runs left beside `out`: hidden ".OUT.PID.XXXX.tmp" / ".OUT.old.PID.XXXX" folders whose
    process is gone, older-style ones without a PID, and temporary files of the outputs older than `min_age_s`.

    Returns the removed paths. Folders of a live run are kept (two runs may share an output folder)."""
    removed = []
    if not out.parent.is_dir():
        return removed
    names = {p.name for p in planned_outputs(out, output_kind(out))} | {out.name}
    now = time.time()
    for p in out.parent.iterdir():
        owner = next((n for n in names if p.name.startswith(f".{n}.")), None)
        if owner is None:
            continue
        rest = p.name[len(owner) + 2:]
        if p.is_dir() and (rest.endswith(".tmp") or rest.startswith("old.")):
            m = re.match(r"(?:old\.)?(\d+)\.", rest)
            if m and _pid_alive(int(m.group(1))) and int(m.group(1)) != os.getpid():
                continue
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif p.is_file() and re.search(r"\.tmp(\.|$)", rest) and now - p.stat().st_mtime > min_age_s:
            p.unlink(missing_ok=True)
            removed.append(p)
    for p in removed:
        print(f"generate: removed {p.name}, left by an interrupted run", file=sys.stderr)
    return removed


class MappedSlices:
    """`fn(k, source[k])` for slice k of `source` (an array or SlabSlices): a lazy [k, H, W] for write_series."""

    def __init__(self, source, fn):
        self.source, self.fn, self.shape = source, fn, tuple(source.shape)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.fn(k, self.source[k])


class SlabSlices:
    """A read-once [k, H, W] view of a stream of (k0, slab) in slice order: slice k is taken from the current slab,
    reading the next one when needed (so a writer of one slice at a time holds one slab, not the volume)."""

    def __init__(self, shape, slabs):
        self.shape, self._slabs = tuple(shape), iter(slabs)
        self._k0, self._slab = 0, np.zeros((0,) + self.shape[1:], np.float32)

    def __getitem__(self, k: int) -> np.ndarray:
        if not isinstance(k, (int, np.integer)) or k < self._k0:
            raise IndexError(f"slice {k!r}: a slab stream is read once, slices in order")
        while k >= self._k0 + self._slab.shape[0]:
            self._k0, self._slab = next(self._slabs)
        return self._slab[k - self._k0]


def clipped_pet_slabs(stream):
    """(k0, SR PET slab clipped at 0 SUV) of a VolumeStream, batch by batch."""
    for k0, p, _ in stream.batches():
        yield k0, np.maximum(p, 0.0)  # one rule: activity is >= 0 SUV


def write_streamed(kind: str, out: Path, stream, opts: Options, *, is_2d: bool, pet_src, demo: bool) -> None:
    """NIfTI, NPY and DICOM outputs written batch by batch as the model produces them (peak memory: the inputs, the
    model and one batch), into temporary paths renamed into place only when complete; the same bytes as
    write_outputs of the whole volumes."""
    from ctpet_srgan.atomic import atomic_path

    targets = planned_outputs(out, kind)
    shape = stream.shape
    if kind in ("nifti", "npy"):
        with atomic_path(targets[0]) as t0, atomic_path(targets[1]) as t1:
            a, b = t0, t1
            if kind == "nifti":
                ext = ".nii.gz" if out.name.lower().endswith(".gz") else ".nii"
                a, b = t0.with_name(t0.name + ext), t1.with_name(t1.name + ext)  # the writer wants the suffix
            writers = []
            try:
                if kind == "nifti":
                    from ctpet_srgan.nifti_io import NiftiSlabWriter

                    writers.append(NiftiSlabWriter(a, shape, stream.affine, "PT", "SUVbw"))
                    writers.append(NiftiSlabWriter(b, shape, stream.affine, "CT", "HU"))
                else:
                    writers.extend(_NpySlabWriter(t, shape[1:] if is_2d else shape) for t in (t0, t1))
                for k0, p, c in stream.batches():
                    writers[0].write(np.maximum(p, 0.0))  # one rule: activity is >= 0 SUV
                    writers[1].write(c if c is not None else stream.hr_ct(k0, k0 + p.shape[0]))
                for w in writers:
                    w.close()
                if kind == "nifti":
                    os.replace(a, t0)
                    os.replace(b, t1)
            finally:
                for w in writers:
                    w.abort()
                if kind == "nifti":
                    for p in (a, b):
                        p.unlink(missing_ok=True)
    elif kind == "dicom":
        from ctpet_srgan.geometry import Volume

        sr_pet = Volume(SlabSlices(shape, clipped_pet_slabs(stream)), stream.affine, "PT", "SUVbw",
                        stream.pet_meta)
        _write_dicom(out, sr_pet, opts, pet_src=pet_src, demo=demo)
    else:
        raise ValueError(f"write_streamed: {kind} outputs need the whole volume (write_outputs)")


class _NpySlabWriter:
    """A float32 C-order .npy written slab by slab: np.save's header (open_memmap writes the same, sized for the
    whole array, without touching the data pages), then the slabs in order. close() refuses missing slices."""

    def __init__(self, path: Path, shape):
        from numpy.lib.format import open_memmap

        self.path, self.shape = path, tuple(shape)
        m = open_memmap(path, mode="w+", dtype=np.float32, shape=self.shape)
        offset = m.offset
        del m
        self._f = open(path, "r+b")
        self._f.seek(offset)
        self._done = 0
        self._rows = self.shape[0] if len(self.shape) == 3 else 1  # a 2-D output is one slice

    def write(self, slab: np.ndarray) -> None:
        slab = np.asarray(slab, np.float32)
        if len(self.shape) == 2:
            slab = slab.reshape(self.shape)
        self._f.write(np.ascontiguousarray(slab).tobytes())
        self._done += 1 if len(self.shape) == 2 else slab.shape[0]

    def close(self) -> None:
        if self._done != self._rows:
            raise ValueError(f"{self.path}: {self._done} of {self._rows} slices written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        self._f.close()


def _write_dicom(out: Path, sr_pet, opts: Options, *, pet_src, demo: bool) -> None:
    """The derived DICOM series written into a hidden temporary folder, then renamed onto `out`."""
    description = DEMO_SERIES_DESCRIPTION if demo else SERIES_DESCRIPTION
    parent = out.parent
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    try:
        (tmp / "series").mkdir(mode=0o755)
        derived_pet_series(sr_pet, pet_src, tmp / "series", description, anonymize=opts.anonymize)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.{os.getpid()}.", dir=parent))
            os.replace(out, old / "x")
            os.replace(tmp / "series", out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp / "series", out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_outputs(kind: str, out: Path, sr_pet, sr_ct, opts: Options, *, is_2d: bool, pet_src, label: str,
                  demo: bool) -> None:
    """Writes everything into temporary paths beside the outputs, then renames them into place."""
    from ctpet_srgan.atomic import atomic_path

    targets = planned_outputs(out, kind)
    if kind == "nifti":
        from ctpet_srgan.nifti_io import write_nifti

        with atomic_path(targets[0]) as t0, atomic_path(targets[1]) as t1:
            ext = ".nii.gz" if out.name.lower().endswith(".gz") else ".nii"
            a, b = t0.with_name(t0.name + ext), t1.with_name(t1.name + ext)  # write_nifti wants the suffix
            try:
                write_nifti(sr_pet, a)
                write_nifti(sr_ct, b)
                os.replace(a, t0)
                os.replace(b, t1)
            finally:
                for p in (a, b):
                    p.unlink(missing_ok=True)
    elif kind == "npy":
        squeeze = (lambda x: x[0]) if is_2d else (lambda x: x)  # noqa: E731
        with atomic_path(targets[0]) as t0, atomic_path(targets[1]) as t1:
            for arr, t in ((sr_pet.array, t0), (sr_ct.array, t1)):
                with open(t, "wb") as f:
                    np.save(f, squeeze(arr).astype(np.float32))
    elif kind == "png":
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
        _write_dicom(out, sr_pet, opts, pet_src=pet_src, demo=demo)


def generate(ct_path: str, pet_path: str, output_path: str, model: str | None = None,
             opts: Options | None = None) -> list[Path]:
    """The whole command; returns the files/folders written."""
    from ctpet_srgan.inference import load_predictor

    out = Path(output_path)
    kind = output_kind(out)
    opts = opts or Options()
    check_outputs_free(planned_outputs(out, kind), opts.overwrite)
    remove_stale_temporaries(out)
    ct_p, pet_p = Path(ct_path), Path(pet_path)
    pet, ct, is_2d = read_inputs(ct_p, pet_p, opts)
    check_overlap(pet, ct, pet_p, ct_p, opts.allow_unregistered)
    if kind == "png" and not opts.mip and opts.slice is not None and not 0 <= opts.slice < pet.shape[0]:
        raise GenerateError(f"--slice {opts.slice} is outside the PET's slices 0..{pet.shape[0] - 1}")
    pet_src = pet_dicom_source(pet_p) if kind == "dicom" and not is_2d else None
    if kind == "dicom" and pet_src is None:
        raise GenerateError(f"{out}: a DICOM output needs a DICOM PET input (its SUV tags); use .nii.gz or .npy")
    predictor = load_predictor(model)
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"generate: running on {'GPU ' + gpus[0].name if gpus else 'CPU'}", file=sys.stderr)
    demo = predictor.is_demo
    label = predictor.metadata.get("label") or Path(str(predictor.metadata.get("source", "model"))).name
    if demo:
        print(f"generate: using the bundled {DEMO_LABEL.upper()}", file=sys.stderr)
    want = predictor.metadata.get("lr_spacing_mm")
    if want and not is_2d and np.max(np.abs(np.asarray(pet.spacing_mm[:2]) / np.asarray(want[:2]) - 1)) > 0.25:
        print(f"generate: warning: PET pixels are {pet.spacing_mm[0]:.2f} x {pet.spacing_mm[1]:.2f} mm, the model was"
              f" trained on {want[0]:.2f} x {want[1]:.2f} mm", file=sys.stderr)
    stream = predictor.stream_volume(pet, ct, batch_size=opts.batch_size, tile=opts.tile or None,
                                     overlap=opts.tile_overlap, progress=opts.progress)
    ct = None  # the stream keeps its own (int16 when lossless) copy of the CT: the float32 one can go
    if kind == "png":  # a figure of the whole volume: the slice with the highest uptake, or the MIP
        sr_pet, sr_ct = stream.collect()
        sr_pet = dataclasses.replace(sr_pet, array=np.maximum(sr_pet.array, 0.0))  # one rule: activity is >= 0 SUV
        write_outputs(kind, out, sr_pet, sr_ct, opts, is_2d=is_2d, pet_src=pet_src, label=label, demo=demo)
    else:  # a PET-only model's CT output is the input CT on the HR grid
        write_streamed(kind, out, stream, opts, is_2d=is_2d, pet_src=pet_src, demo=demo)
    return planned_outputs(out, kind)


def main(argv):
    del argv
    from ctpet_srgan.errors import InputError

    missing = [n for n in ("input_ct", "input_pet", "output_path") if not getattr(F, n)]
    if missing:
        print(f"generate: error: missing --{', --'.join(missing)}", file=sys.stderr)
        return 2
    opts = Options(**{f.name: getattr(F, f.name) for f in dataclasses.fields(Options)})
    from ctpet_srgan.tf_quiet import import_tensorflow

    import_tensorflow()  # without the start-up lines that are not errors (cuInit on a CPU machine, oneDNN)
    try:
        written = generate(F.input_ct, F.input_pet, F.output_path, F.model, opts)
    except (GenerateError, InputError, FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"generate: error: {e}", file=sys.stderr)
        return 2
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
    app.run(main)


if __name__ == "__main__":
    run()
