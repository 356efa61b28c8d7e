"""Reads one DICOM series (CT or PET) into a Volume: CT in HU, PET in SUVbw (g/mL).

Slices are ordered by the projection of ImagePositionPatient on the slice normal (the cross product of
the two ImageOrientationPatient vectors), never by file name or InstanceNumber. Every slice must share
orientation, pixel spacing and size; slice spacing must be uniform (a missing slice, a duplicate position,
a sheared stack such as a gantry tilt, or irregular spacing are refused with an InputError naming the
file or folder). Compressed transfer syntaxes decode through pydicom's plugins (pylibjpeg, pyjpegls).
Volume.meta keeps the study/frame-of-reference UIDs in memory only, for pairing CT with PET.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import hashlib
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import Volume, affine_from_axes
from ctpet_srgan.suv import acquisition_datetime, philips_scale_factors, suv_scale_factor

log = logging.getLogger(__name__)

DICOM_SUFFIXES = {"", ".dcm", ".dicom", ".ima", ".dic"}
SKIP_NAMES = {"dicomdir"}
_HEADER_TAGS = [
    "SOPClassUID", "Modality", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID",
    "SeriesDescription", "SeriesNumber", "NumberOfFrames", "ImageOrientationPatient", "Rows", "Columns",
]
# Plausibility bounds of the library boundary: a spacing outside (0.001 mm, 1000 mm) or a coordinate beyond 1e6 mm
# is a corrupt header, not a scan.
MIN_SPACING_MM, MAX_SPACING_MM, MAX_COORD_MM = 1e-3, 1e3, 1e6
MAX_PIXELS = 1 << 26  # rows x columns of one slice (8192^2)
PET_UNITS = ("SUVbw", "stored")


def exception_text(e: BaseException, limit: int = 300) -> str:
    """"Type: message" of a third-party exception on one line, at most `limit` characters."""
    text = " ".join(f"{type(e).__name__}: {e}".split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def has_dicom_magic(path: str | os.PathLike) -> bool:
    """True if the file has the 128-byte preamble followed by b"DICM"."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def unfinished_write(path: str | os.PathLike) -> Path | None:
    """The hidden temporary folder or file of an unfinished atomic write (".NAME.XXXX.tmp", ".NAME.old.XXXX")
    that `path` is or lies in; None if there is none. Such paths are never read as input."""
    for part in (Path(path).absolute(), *Path(path).absolute().parents):
        name = part.name
        if name.startswith(".") and (re.search(r".\.tmp(\.|$)", name) or ".old." in name):
            return part
    return None


def _is_candidate(path: Path) -> bool:
    if path.name.startswith(".") or path.name.lower() in SKIP_NAMES or not path.is_file():
        return False
    return path.suffix.lower() in DICOM_SUFFIXES or has_dicom_magic(path)


def _dcmread(path: Path, *, header_only: bool) -> Dataset | None:
    """Reads a file; None for a magic-less, extension-less file that is not DICOM (skipped). One open per file:
    the preamble check and the parse share it.

    A full read leaves element values raw (pydicom converts one when it is first read): converting all of them
    here cost more than decoding the pixels, and most are never read. Every reader of a dataset's values does so
    inside `_blame(path)` of its file, so a value that fails to convert names the file; one never read (a corrupt
    description in a later slice) does not block the series."""
    kwargs: dict[str, Any] = {}
    if header_only:
        kwargs.update(stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    magic = False
    try:
        with open(path, "rb") as f:
            head = f.read(132)
            magic = len(head) == 132 and head[128:132] == b"DICM"
            f.seek(0)
            ds = pydicom.dcmread(f, force=not magic, **kwargs)
            if header_only:  # the few scanned tags are converted now: a file whose pairing tags fail is skipped
                for _ in ds.iterall():
                    pass
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # pydicom raises many types on corrupt input
        if not magic and path.suffix == "":
            return None
        raise InputError(path, f"not a readable DICOM file ({exception_text(e)})") from None
    if not magic and "SOPClassUID" not in ds and "Modality" not in ds:
        if path.suffix == "":
            return None
        raise InputError(path, "not a DICOM file (no DICM header and no SOPClassUID/Modality)")
    return ds


def series_files(folder: Path) -> list[Path]:
    """The DICOM candidates of one series folder, sorted; InputError if there are none."""
    files = sorted(p for p in folder.iterdir() if _is_candidate(p))
    if not files:
        subdirs = [p for p in folder.iterdir() if p.is_dir()]
        hint = f" (it has {len(subdirs)} subfolders: point at one series folder)" if subdirs else ""
        raise InputError(folder, f"no DICOM files in this folder{hint}")
    return files


def _series_label(ds: Dataset) -> str:
    return f"'{ds.get('SeriesDescription', '') or '?'}' (series number {ds.get('SeriesNumber', '?')})"


def _float_list(ds: Dataset, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None or value == "":
        raise InputError(path, f"missing {keyword}: cannot place the slice in patient space")
    values = value if isinstance(value, Iterable) and not isinstance(value, str) else [value]
    try:
        arr = np.array([float(v) for v in values])
    except (TypeError, ValueError):
        raise InputError(path, f"{keyword} is not numeric: {value!r}"[:300]) from None
    if arr.shape != (n,) or not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > MAX_COORD_MM):
        raise InputError(path, f"{keyword} must have {n} finite values (|v| <= {MAX_COORD_MM:g}), got {value!r}"[:300])
    return arr


def _int_tag(ds: Dataset, keyword: str, path: Path, default: int | None = None) -> int | None:
    """One integer tag (US, IS, or a wrongly typed string of one integer); `default` when absent or empty.

    Raises InputError for several values, a non-integer, NaN or infinity."""
    value = ds.get(keyword)
    if value is None or value == "" or value == b"":
        return default
    if isinstance(value, (MultiValue, list, tuple)):
        if len(value) != 1:
            raise InputError(path, f"{keyword} must be one integer, got {len(value)} values {list(value)!r}"[:300])
        value = value[0]
    try:
        f = float(value.decode("ascii", "replace") if isinstance(value, bytes) else value)
    except (TypeError, ValueError):
        raise InputError(path, f"{keyword} is not an integer: {value!r}"[:300]) from None
    if not math.isfinite(f) or f != int(f):
        raise InputError(path, f"{keyword} is not an integer: {value!r}"[:300])
    return int(f)


@contextlib.contextmanager
def _blame(path: Path):
    """Turns any unexpected exception from a pydicom element (wrong VR, unparsable value, lazy decoding) into
    an InputError naming `path`."""
    try:
        yield
    except (InputError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # also a decoder's pyo3 PanicException, a BaseException
        raise InputError(path, f"invalid header value ({exception_text(e)})") from None


def check_spacing(spacing_mm: Sequence[float], where: str | os.PathLike, what: str = "voxel spacing") -> None:
    """Raises InputError unless every spacing is finite and within (MIN_SPACING_MM, MAX_SPACING_MM) mm."""
    for s in spacing_mm:
        if not (math.isfinite(s) and MIN_SPACING_MM <= s <= MAX_SPACING_MM):
            shown = ", ".join(f"{float(v):g}" for v in spacing_mm)
            raise InputError(where, f"{what} ({shown} mm) must be finite and between {MIN_SPACING_MM:g} and "
                                    f"{MAX_SPACING_MM:g} mm: corrupt header")


def _rescale(ds: Dataset, path: Path, required: bool) -> tuple[float, float]:
    slope, icpt = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if required and (slope is None or icpt is None):
        missing = "RescaleSlope (0028,1053)" if slope is None else "RescaleIntercept (0028,1052)"
        raise InputError(path, f"missing {missing}: cannot convert pixels to physical units")
    try:
        out = float(1.0 if slope is None or slope == "" else slope), float(0.0 if icpt is None or icpt == "" else icpt)
    except (TypeError, ValueError):
        raise InputError(path, f"RescaleSlope/RescaleIntercept not numeric: {slope!r}, {icpt!r}"[:300]) from None
    if not all(math.isfinite(v) for v in out):
        raise InputError(path, f"RescaleSlope/RescaleIntercept not finite: {slope!r}, {icpt!r}")
    return out


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    try:
        if str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "")) == pydicom.uid.RLELossless:
            # pydicom's own RLE decoder: pylibjpeg-rle panics (and prints a Rust backtrace) on corrupt segments
            ds.pixel_array_options(decoding_plugin="pydicom")
        arr = ds.pixel_array
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # decoders written in Rust panic (pyo3 PanicException is a BaseException)
        raise InputError(path, f"cannot decode pixel data ({exception_text(e)})") from None
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(path, f"expected a single grey-scale frame, got pixel array of shape {arr.shape}")
    return arr


def _sort_and_space(
    positions: np.ndarray, paths: Sequence[Path], where: Path
) -> tuple[np.ndarray, float]:
    """Returns the sort order along the normal and the uniform slice spacing (mm); refuses gaps."""
    order = np.argsort(positions, kind="stable")
    z = positions[order]
    if len(z) < 2:
        return order, 0.0
    diffs = np.diff(z)
    for n, d in enumerate(diffs):
        if d < 0.01:
            raise InputError(
                where,
                f"duplicate slice position z={z[n]:.3f} mm along the slice normal "
                f"({paths[order[n]].name} and {paths[order[n + 1]].name}); one position per slice is required",
            )
    base = float(np.min(diffs))
    tol = max(0.02, 0.02 * base)
    bad = np.abs(diffs - base) > tol
    if not bad.any():
        return order, float((z[-1] - z[0]) / (len(z) - 1))
    ratios = diffs / base
    gaps = bad & (np.abs(ratios - np.round(ratios)) * base <= tol) & (np.round(ratios) >= 2)
    if gaps.any() and not (bad & ~gaps).any():
        n = int(np.flatnonzero(gaps)[0])
        k = int(round(ratios[n])) - 1
        raise InputError(
            where,
            f"missing slice between z={z[n]:.2f} and z={z[n + 1]:.2f} mm ({k} slice(s) of {base:.3f} mm missing; "
            f"files {paths[order[n]].name} and {paths[order[n + 1]].name})",
        )
    uniq = sorted({round(float(d), 3) for d in diffs})
    raise InputError(
        where,
        f"non-uniform slice spacing along the slice normal ({', '.join(f'{d:g}' for d in uniq[:6])} mm): "
        "not supported; resample the series to uniform spacing first",
    )


def _derived_series_key(ds: Dataset, path: Path) -> str:
    """A grouping key for a file without SeriesInstanceUID (anonymisers drop it): what the file still says about
    its series (study, series number, frame of reference, orientation, modality, image size). Never shown."""
    with _blame(path):
        iop = ds.get("ImageOrientationPatient")
        iop_key = ",".join(f"{float(v):.4f}" for v in iop) if iop else ""
        parts = [str(ds.get(k, "")) for k in ("StudyInstanceUID", "SeriesNumber", "FrameOfReferenceUID", "Modality")]
        parts += [iop_key, str(_int_tag(ds, "Rows", path, 0)), str(_int_tag(ds, "Columns", path, 0))]
    return "derived:" + hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]


def series_key(ds: Dataset, path: Path) -> tuple[str, bool]:
    """(key, derived): the SeriesInstanceUID, or for a file without one a key derived from its other tags."""
    uid = ds.get("SeriesInstanceUID")
    if uid and str(uid).strip():
        return str(uid), False
    missing = [k for k in ("Modality", "Rows", "Columns", "ImageOrientationPatient") if ds.get(k) in (None, "")]
    if missing:
        raise InputError(path, f"no SeriesInstanceUID (0020,000E) and no {', '.join(missing)} to group it by: "
                               "truncated, or not an image")
    return _derived_series_key(ds, path), True


def _group_by_series(datasets: Sequence[tuple[Path, Dataset]], where: Path) -> None:
    groups: dict[str, list[Dataset]] = collections.defaultdict(list)
    derived: list[Path] = []
    for p, ds in datasets:
        with _blame(p):
            key, was_derived = series_key(ds, p)
        if was_derived:
            derived.append(p)
        groups[key].append(ds)
    if derived and len(derived) < len(datasets):
        raise InputError(derived[0], "no SeriesInstanceUID (0020,000E) while other files of the series have one: "
                                     "truncated, or not from this series")
    if len(groups) > 1:
        labels = [f"{_series_label(g[0])}: {len(g)} files" for g in groups.values()]
        why = f" ({len(derived)} files without SeriesInstanceUID, grouped by their other tags)" if derived else ""
        raise InputError(where, f"{len(groups)} series in one folder{why}: {'; '.join(labels)}; pass one series")
    if derived:
        log.warning("%s: %d files have no SeriesInstanceUID (de-identified?): read as one series because study, "
                    "series number, frame of reference, orientation, modality and image size agree",
                    where, len(derived))


def read_series(path: str | os.PathLike | Sequence[str | os.PathLike], *, pet_units: str = "SUVbw") -> Volume:
    """Reads a DICOM series (a folder holding one series, one file, or a list of files) as a Volume.

    CT comes back in HU (units "HU"), PET in SUVbw (units "SUVbw", meta suv_scale / suv_reference_time).
    pet_units="stored" reads PET in its stored units (RescaleSlope/Intercept applied, no SUV conversion; units
    are the file's Units tag, e.g. "BQML", or "stored"): for phantoms without weight or dose, never SUV.
    Raises InputError naming the file or folder on any problem.
    """
    if pet_units not in PET_UNITS:
        raise ValueError(f"pet_units must be one of {PET_UNITS}, got {pet_units!r}")
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise InputError(p, "does not exist")
        if unfinished_write(p) is not None:
            raise InputError(p, f"lies in {unfinished_write(p).name}, the temporary folder of an unfinished write "
                                "(an interrupted run): not a series; rerun the job that wrote it")
        files, where = (series_files(p), p) if p.is_dir() else ([p], p)
    else:
        files = [Path(f) for f in path]
        if not files:
            raise InputError("<no files>", "empty list of DICOM files")
        where = files[0].parent
    datasets = []
    for f in files:
        ds = _dcmread(f, header_only=False)
        if ds is not None:
            datasets.append((f, ds))
    if not datasets:
        raise InputError(where, "no DICOM files found")
    _group_by_series(datasets, where)
    with _blame(where):
        return _build_volume(datasets, where, pet_units=pet_units)


def _build_volume(datasets: Sequence[tuple[Path, Dataset]], where: Path, *, pet_units: str = "SUVbw") -> Volume:
    paths = [p for p, _ in datasets]
    first_path, first = datasets[0]
    with _blame(first_path):
        return _build_volume_checked(datasets, paths, where, pet_units)


def _shape(ds: Dataset, path: Path) -> tuple[int, int]:
    rows, cols = _int_tag(ds, "Rows", path, 0), _int_tag(ds, "Columns", path, 0)
    if rows <= 0 or cols <= 0 or rows * cols > MAX_PIXELS:
        raise InputError(path, f"image size Rows x Columns = {rows} x {cols} is empty, negative or implausible")
    return rows, cols


def _single_slice_step(ds: Dataset, path: Path, meta: dict[str, Any]) -> float:
    """Slice spacing (mm) of a one-slice series: SpacingBetweenSlices, else SliceThickness, else 1 mm (said in
    meta["slice_spacing_from"]). A present value that is not a plausible spacing (0, inf, 1e308) is refused."""
    present = []
    for kw in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(kw)
        if value is None or value == "":
            continue
        try:
            step = float(value)
        except (TypeError, ValueError):
            raise InputError(path, f"{kw} is not one number: {value!r}"[:300]) from None
        if math.isfinite(step) and MIN_SPACING_MM <= step <= MAX_SPACING_MM:
            meta["slice_spacing_from"] = kw
            return step
        present.append(f"{kw} {value!r}")
    if present:
        raise InputError(path, f"single slice with implausible {' and '.join(present)}: cannot set the slice "
                               f"spacing (must be finite, between {MIN_SPACING_MM:g} and {MAX_SPACING_MM:g} mm)")
    meta["slice_spacing_from"] = "assumed 1 mm (single slice)"
    return 1.0


def _check_slice(ds: Dataset, p: Path, modality: str, iop0: np.ndarray, ps0: np.ndarray,
                 shape0: tuple[int, int]) -> np.ndarray:
    """Checks one slice against the first; returns its ImagePositionPatient (mm)."""
    if str(ds.get("Modality", "")).strip().upper() != modality:
        raise InputError(p, f"modality {ds.get('Modality')!r} differs from {modality!r} in the same series")
    if _int_tag(ds, "NumberOfFrames", p, 1) != 1:
        raise InputError(p, "multi-frame (enhanced) DICOM is not supported; export single-frame slices")
    iop = _float_list(ds, "ImageOrientationPatient", 6, p)
    if np.max(np.abs(iop - iop0)) > 1e-4:
        raise InputError(p, f"ImageOrientationPatient {list(iop)} differs from {list(iop0)} in the same series")
    ps = _float_list(ds, "PixelSpacing", 2, p)
    if np.max(np.abs(ps - ps0)) > 1e-4 * max(1.0, float(ps0.max())):
        raise InputError(p, f"PixelSpacing {list(ps)} differs from {list(ps0)} in the same series")
    shape = _shape(ds, p)
    if shape != shape0:
        raise InputError(p, f"image size {shape} differs from {shape0} in the same series")
    ipp = _float_list(ds, "ImagePositionPatient", 3, p)
    return ipp


def _slice_order_and_affine(datasets: Sequence[tuple[Path, Dataset]], paths: list[Path], where: Path, modality: str,
                            iop0: np.ndarray, ps0: np.ndarray, shape0: tuple[int, int],
                            meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Checks every slice against the first and that they stack along the slice normal, evenly spaced.

    Args:
        datasets, paths: the series' files (unsorted); where: the series, for errors about the whole stack.
        iop0, ps0, shape0: the first file's ImageOrientationPatient, PixelSpacing (mm) and Rows x Columns.
        meta: gets the slice-thickness source of a single-slice series.
    Returns:
        (the slice order along the normal, the 4x4 voxel-to-patient affine in mm, LPS).
    """
    first_path, first = datasets[0]
    row, col = iop0[:3], iop0[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(col) - 1) > 1e-3 or abs(row @ col) > 1e-3:
        raise InputError(first_path, f"ImageOrientationPatient {list(iop0)} is not two orthogonal unit vectors")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    check_spacing([float(v) for v in ps0], first_path, "PixelSpacing")
    positions, ipps = [], []
    for p, ds in datasets:
        with _blame(p):
            ipp = _check_slice(ds, p, modality, iop0, ps0, shape0)
        ipps.append(ipp)
        positions.append(float(ipp @ normal))
    order, step = _sort_and_space(np.asarray(positions), paths, where)
    ipps_sorted = np.asarray(ipps)[order]
    inplane = (ipps_sorted - ipps_sorted[0]) @ np.stack([row, col], axis=1)
    tol = max(0.05, 0.02 * float(ps0.min()))
    if np.max(np.abs(inplane)) > tol:
        worst = int(np.argmax(np.max(np.abs(inplane), axis=1)))
        raise InputError(
            where,
            f"slice positions are not along the slice normal (in-plane shift {np.abs(inplane[worst]).max():.2f} mm at "
            f"{paths[order[worst]].name}: gantry tilt or sheared stack): not supported",
        )
    if len(datasets) == 1:
        step = _single_slice_step(first, first_path, meta)
    else:
        check_spacing([step], where, "slice spacing")
    return order, affine_from_axes(ipps_sorted[0], row, col, (ps0[1], ps0[0]), normal * step)


def _units_and_factors(first: Dataset, sorted_ds: Sequence[tuple[Path, Dataset]], modality: str, pet_units: str,
                       meta: dict[str, Any]) -> tuple[str, np.ndarray]:
    """The volume's units and the per-slice factor from rescaled stored values to them (SUV tags checked here,
    before any pixel is decoded).

    Args:
        first: the series' first file as listed (its Units tag is the stored units).
        sorted_ds: the series' (path, dataset) in slice order; pet_units: "stored" keeps the stored units (PET).
        meta: gets the units source and, for SUV, the scale, reference time, decay correction and rule.
    Returns:
        ("HU", "SUVbw" or the stored units, factors: one per slice, 1 unless converted to SUV).
    """
    factors = np.ones(len(sorted_ds))
    if modality == "CT":
        units = "HU"
    elif pet_units == "stored":  # asked for: the stored units, never called SUV
        units = str(first.get("Units", "") or "").strip() or "stored"
        if units.upper() == "SUVBW":
            units = "SUVbw"
        meta["units_source"] = "stored (no SUV conversion asked)"
    else:  # SUV tags are checked before any pixel is decoded
        units = "SUVbw"
        times = []
        for p, ds in sorted_ds:
            with _blame(p):
                times.append(acquisition_datetime(ds))
        with _blame(sorted_ds[0][0]):
            factor, ref, details = suv_scale_factor(sorted_ds[0][1], times)
        factors = factors * np.asarray(factor, np.float64)
        if str(details.get("units_source", "")).startswith("CNTS"):
            with _blame(sorted_ds[0][0]):
                ref_scales = philips_scale_factors(sorted_ds[0][1])
            for p, ds in sorted_ds:
                with _blame(p):
                    scales = philips_scale_factors(ds)
                if scales != ref_scales:
                    raise InputError(p, "Philips private scale factors (7053,1000/1009) differ between slices")
        meta["suv_scale"] = [float(f) for f in factor] if np.ndim(factor) else float(factor)
        meta["suv_reference_time"] = ref.isoformat() if ref is not None else None
        meta["decay_correction"] = details.get("decay_correction")
        meta["units_source"] = details.get("units_source")
        meta["suv_rule"] = details.get("rule")
    return units, factors


def _build_volume_checked(datasets: Sequence[tuple[Path, Dataset]], paths: list[Path], where: Path,
                          pet_units: str) -> Volume:
    first_path, first = datasets[0]
    modality = str(first.get("Modality", "")).strip().upper()
    if modality not in ("CT", "PT"):
        raise InputError(first_path, f"modality {modality or 'missing'!r} is not CT or PT")
    iop0 = _float_list(first, "ImageOrientationPatient", 6, first_path)
    ps0 = _float_list(first, "PixelSpacing", 2, first_path)
    shape0 = _shape(first, first_path)
    meta: dict[str, Any] = {}
    order, affine = _slice_order_and_affine(datasets, paths, where, modality, iop0, ps0, shape0, meta)

    sorted_ds = [datasets[i] for i in order]
    meta.update(
        modality=modality,
        study_uid=str(first.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")),
        series_description=str(first.get("SeriesDescription", "")),
        series_number=_int_tag(first, "SeriesNumber", first_path),
        n_files=len(datasets),
        transfer_syntax=str(getattr(getattr(first, "file_meta", None), "TransferSyntaxUID", "") or ""),
    )
    units, factors = _units_and_factors(first, sorted_ds, modality, pet_units, meta)
    array = np.empty((len(sorted_ds), *shape0), np.float32)
    for k, (p, ds) in enumerate(sorted_ds):  # per-slice RescaleSlope/Intercept (PET slopes differ per slice)
        with _blame(p):
            slope, icpt = _rescale(ds, p, required=(modality == "CT"))
        pix = _pixels(ds, p)
        if pix.shape != shape0:
            raise InputError(p, f"pixel data shape {pix.shape} differs from Rows x Columns {shape0}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow becomes inf, refused below
            array[k] = (pix.astype(np.float64) * slope + icpt) * factors[k]
    bad = ~np.isfinite(array)
    if bad.any():
        k = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
        raise InputError(sorted_ds[k][0], f"{int(bad.sum())} pixel values are not finite after rescaling "
                                          f"(to {units}): RescaleSlope or units factor out of range")
    if not np.all(np.isfinite(affine)):
        raise InputError(where, "the voxel-to-patient geometry is not finite")
    return Volume(array, affine, modality, units, meta)


def _scan_entry(ds: Dataset, p: Path, key: str) -> dict[str, Any]:
    return {
        "files": [],
        "modality": str(ds.get("Modality", "")).strip().upper(),
        "study_uid": str(ds.get("StudyInstanceUID", "")),
        "frame_of_reference_uid": str(ds.get("FrameOfReferenceUID", "")),
        "series_uid": key,
        "series_description": str(ds.get("SeriesDescription", "")),
        "series_number": _int_tag(ds, "SeriesNumber", p),
    }


def scan_dicom_tree(root: str | os.PathLike, *, on_error: str = "skip", map_fn=map) -> list[dict[str, Any]]:
    """Finds every DICOM series under `root` (headers only) for pairing CT with PET.

    Returns one dict per series: files (sorted paths as str), n_files, modality, study_uid,
    frame_of_reference_uid, series_uid, series_description, series_number; an RTSTRUCT series also has
    referenced_series {file: the SeriesInstanceUIDs it references}. Unreadable files are skipped
    with a warning (on_error="skip") or raise InputError (on_error="raise"). `map_fn` (e.g. a process pool's
    map) scans the folders of `dicom_folders(root)`, each with `scan_dicom_folder`; the result does not depend on it.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "is not a folder")
    parts = list(map_fn(functools.partial(scan_dicom_folder, on_error=on_error), dicom_folders(root)))
    n_derived = sum(n for _, n in parts)
    if n_derived:
        log.warning("%s: %d files have no SeriesInstanceUID (de-identified?): grouped into series by study, series "
                    "number, frame of reference, orientation, modality, image size and folder", root, n_derived)
    return merge_series(s for part, _ in parts for s in part)


def dicom_folders(root: str | os.PathLike) -> list[tuple[str, tuple[str, ...]]]:
    """(folder, its file names) of every non-hidden folder under `root` that has files, in walk order (sorted);
    no file is opened (the cheap listing a driver does before workers scan the headers)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if filenames:
            out.append((dirpath, tuple(sorted(filenames))))
    return out


def scan_dicom_folder(folder: tuple[str, Sequence[str]], *, on_error: str = "skip") -> tuple[list[dict[str, Any]], int]:
    """The series of one folder's files (headers only; see scan_dicom_tree), and how many files had no
    SeriesInstanceUID. A series that spans folders comes back once per folder; `merge_series` joins them."""
    dirpath, names = folder
    series: dict[str, dict[str, Any]] = {}
    n_derived = 0
    for name in names:
        p = Path(dirpath) / name
        if not _is_candidate(p):
            continue
        try:
            ds = _dcmread(p, header_only=True)
        except InputError as e:
            if on_error == "raise":
                raise
            log.warning("skipping %s", e)
            continue
        if ds is None:
            continue
        try:
            with _blame(p):
                key, derived = series_key(ds, p)
                if derived:  # de-identified: group within one folder by what the file still says
                    key = "derived:" + hashlib.sha1(f"{key}|{dirpath}".encode()).hexdigest()[:16]
                    n_derived += 1
                s = series.get(key) or _scan_entry(ds, p, key)
        except InputError as e:
            if on_error == "raise":
                raise
            log.warning("skipping %s", e)
            continue
        series[key] = s
        s["files"].append(str(p))
        if s["modality"] == "RTSTRUCT":  # read here, in the worker, for pairing (convert._pick_rtstruct)
            s.setdefault("referenced_series", {})[str(p)] = rtstruct_referenced_series(p)
    return list(series.values()), n_derived


def rtstruct_referenced_series(path: str | os.PathLike) -> list[str]:
    """SeriesInstanceUIDs (sorted) that an RTSTRUCT's ReferencedFrameOfReferenceSequence names; empty when the
    file or the sequence is unreadable (the rasteriser reports a bad file when the file is used)."""
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return sorted({str(se.get("SeriesInstanceUID", "")) for fr in ds.get("ReferencedFrameOfReferenceSequence", [])
                       for st in fr.get("RTReferencedStudySequence", [])
                       for se in st.get("RTReferencedSeriesSequence", [])})
    except Exception:  # noqa: BLE001 - pydicom raises many types for a bad file
        return []


def merge_series(parts: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Joins per-folder series (`scan_dicom_folder`, given in walk order) by series UID: the first folder's header
    fields, all files sorted; returns them sorted by (study, modality, series number, first file)."""
    series: dict[str, dict[str, Any]] = {}
    for s in parts:
        m = series.setdefault(s["series_uid"], {**s, "files": []})
        m["files"].extend(s["files"])
        if "referenced_series" in s:  # a new dict: the parts are left as they are
            m["referenced_series"] = {**m.get("referenced_series", {}), **s["referenced_series"]}
    out = []
    for s in series.values():
        s["files"].sort()
        s["n_files"] = len(s["files"])
        out.append(s)
    out.sort(key=lambda s: (s["study_uid"], s["modality"], s["series_number"] or 0, s["files"][0]))
    return out
