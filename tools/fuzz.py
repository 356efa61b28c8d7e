"""Fuzzes the readers: mutated DICOM files, mutated DICOM series and mutated NIfTI must each either read as a sane
Volume or fail with one InputError ("PATH: problem"). Anything else is a crash.

    python tools/fuzz.py --n 10000 --series 1000          # counts; exit 1 on any crash
    python tools/fuzz.py --n 1 --series 0 --case 4711     # replay one single-file case
    python tools/fuzz.py --n 2000 --keep /tmp/crashes     # keep the inputs of crashing cases
(absl flags: --flagfile=FILE reads them from a file; a bad flag is one line and exit status 2)

A plain seeded mutator (case i uses random.Random(f"{seed}:{kind}:{i}"), so every case replays alone). Seeds:
phantom CT and PET written by ctpet_srgan.dicom_write (plain and compressed), pydicom's bundled real CT files, the
real PET slice ../shared/data/real/acrin_flt_breast_pet_slice.dcm when present, NIfTI made on the fly. Mutations:
tag values (NaN, inf, 1e308, 1e-320, negatives, several values, text), VRs (valid and unknown such as 'QQ'),
deleted tags, flipped/truncated/inserted bytes, pixel data of the wrong length; series: one of those in one or
several files, dropped or duplicated files, removed SeriesInstanceUIDs. A returned volume must be non-empty with
finite, positive spacing and finite values.
"""

from __future__ import annotations

import collections
import datetime as dt
import io
import logging
import random
import shutil
import struct
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from absl import flags

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pydicom  # noqa: E402
import pydicom.config  # noqa: E402
from pydicom.dataelem import DataElement  # noqa: E402

from ctpet_srgan import cli  # noqa: E402
from ctpet_srgan.dicom_io import read_series, scan_dicom_tree  # noqa: E402
from ctpet_srgan.dicom_write import PetInfo, StudyInfo, write_series  # noqa: E402
from ctpet_srgan.errors import InputError  # noqa: E402
from ctpet_srgan.geometry import Volume, affine_from_axes  # noqa: E402
from ctpet_srgan.volume_io import read_volume  # noqa: E402

REAL_PET = ROOT.parent / "shared" / "data" / "real" / "acrin_flt_breast_pet_slice.dcm"
PYDICOM_SEEDS = ("CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm",
                 "JPEG2000.dcm", "rtdose.dcm")
TAGS = (
    "Rows", "Columns", "NumberOfFrames", "SeriesNumber", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "ImagePositionPatient", "ImageOrientationPatient", "RescaleSlope", "RescaleIntercept", "Modality", "Units",
    "PatientWeight", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "SamplesPerPixel",
    "PhotometricInterpretation", "SeriesInstanceUID", "SOPInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID",
    "SeriesDate", "SeriesTime", "AcquisitionDate", "AcquisitionTime", "DecayCorrection", "CorrectedImage",
    "RadiopharmaceuticalInformationSequence", "SOPClassUID", "InstanceNumber", "SeriesDescription", "PixelData",
)
VALUES = ("", "nan", "NaN", "inf", "-inf", "1e308", "-1e308", "1e-320", "0", "-0", "-1", "-12", "65535", "2147483648",
          "1\\2", "1\\2\\3", "0\\0", "1\\nan", "abc", "1.5", " ", "\x00\x01", "é" * 70, "9" * 80, "CT", "PT",
          "MR", "BQML", "CNTS", "GML", "20210304", "093000", "1.2.3", "1e30\\1e30", "-5\\2.5")
SHORT_VRS = {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM",
             "UI", "UL", "US"}  # explicit VR with a 2-byte length: an LO element can be relabelled in place
VRS = ("US", "SS", "UL", "SL", "FL", "FD", "IS", "DS", "LO", "SH", "CS", "UI", "OB", "OW", "UN", "SQ", "AT",
       "DA", "TM", "QQ", "\x00\x00", "zz")
T0 = dt.datetime(2021, 3, 4, 9, 30, 0)


# ------------------------------------------------------------------------------------------------ seeds
def _phantom(kind: str, shape=(4, 16, 12), ts: str | None = None) -> list[bytes]:
    """One small synthetic CT or PET series (bytes per file), written by the project's own DICOM writer."""
    rng = np.random.default_rng(0)
    aff = affine_from_axes((-20.0, -15.0, 40.0), (1, 0, 0), (0, 1, 0), (2.0, 2.5), (0, 0, 3.0))
    study = StudyInfo("1.2.826.0.1.3680043.8.498.11", "1.2.826.0.1.3680043.8.498.12", T0, patient_weight_kg=70.0)
    with tempfile.TemporaryDirectory() as d:
        if kind == "CT":
            vol = Volume(rng.integers(-1000, 1500, shape).astype(np.float32), aff, "CT", "HU")
            kw = {}
        else:
            vol = Volume(rng.uniform(0, 20000, shape).astype(np.float32), aff, "PT", "BQML")
            kw = {"pet": PetInfo(3.7e8, 6586.2, T0, T0 + dt.timedelta(minutes=60), T0 + dt.timedelta(minutes=60))}
        if ts:
            kw["transfer_syntax"] = ts
        paths = write_series(vol, Path(d) / "s", study=study, series_number=3 if kind == "PT" else 2,
                             series_description=f"{kind} seed", **kw)
        return [p.read_bytes() for p in paths]


def dicom_seeds() -> tuple[list[tuple[str, bytes]], list[tuple[str, list[bytes]]]]:
    """(single-file seeds, series seeds), each with a label."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import JPEG2000Lossless, RLELossless

    series = [("phantom CT", _phantom("CT")), ("phantom PET", _phantom("PT")),
              ("phantom CT RLE", _phantom("CT", ts=RLELossless)),
              ("phantom PET J2K", _phantom("PT", shape=(3, 32, 36), ts=JPEG2000Lossless))]
    files = [(f"{label} slice {k}", b) for label, ss in series for k, b in enumerate(ss[:2])]
    for name in PYDICOM_SEEDS:
        try:
            path = get_testdata_file(name)
        except Exception:  # a pydicom without that test file
            path = None
        if path:
            files.append((f"pydicom {name}", Path(path).read_bytes()))
            if name.startswith("MR_small"):  # relabelled CT so the reader goes past the modality check
                ds = pydicom.dcmread(path)
                ds.Modality, ds.RescaleSlope, ds.RescaleIntercept = "CT", "1", "0"
                buf = io.BytesIO()
                ds.save_as(buf)
                files.append((f"pydicom {name} as CT", buf.getvalue()))
    if REAL_PET.is_file():
        files.append(("real PET slice", REAL_PET.read_bytes()))
    return files, series


# ------------------------------------------------------------------------------------------------ mutators
def _value(rng: random.Random) -> str:
    return rng.choice(VALUES) if rng.random() < 0.85 else "".join(chr(rng.randrange(32, 127)) for _ in range(9))


def _mutate_dataset(ds: pydicom.Dataset, rng: random.Random) -> tuple[str, tuple[int, str] | None]:
    """One tag-level mutation of `ds` in place; returns what it did and an optional (tag, VR) to patch into the
    saved bytes (a text value under a binary or numeric VR, which pydicom would not write)."""
    present = [kw for kw in TAGS if kw in ds]
    kw = rng.choice(present or list(TAGS))
    tag = pydicom.datadict.tag_for_keyword(kw)
    op = rng.choice(("value", "value", "vr", "multi", "delete", "numeric"))
    if op == "delete" and tag in ds:
        del ds[tag]
        return f"delete {kw}", None
    if op == "vr" and tag in ds:
        elem = ds[tag]
        vr = rng.choice(("LO", "SH", "UN", "OB", "IS", "DS"))
        raw = elem.value if isinstance(elem.value, (bytes, str)) else str(elem.value)
        ds[tag] = DataElement(tag, vr, raw if vr in ("OB", "UN") and isinstance(raw, bytes) else str(raw)[:64])
        return f"VR of {kw} -> {vr}", None
    if op == "multi":
        ds[tag] = DataElement(tag, "DS" if rng.random() < 0.5 else "IS", ["1", "2"] if rng.random() < 0.5 else
                              [str(rng.randint(-3, 3)) for _ in range(rng.randint(2, 7))])
        return f"{kw} several values", None
    if op == "numeric" and kw != "PixelData":
        vr = pydicom.datadict.dictionary_VR(tag)
        if vr in ("US", "SS", "UL", "SL"):
            ds[tag] = DataElement(tag, vr, rng.choice([0, 1, 2, 3, 8, 12, 15, 16, 32, 64, 65535 if vr == "US" else 7]))
        else:
            ds[tag] = DataElement(tag, "DS", rng.choice(["nan", "inf", "1e308", "1e-320", "-1", "0", "1e30"]))
        return f"{kw} numeric edge", None
    if kw == "PixelData":
        n = rng.choice([0, 1, 7, 100, len(ds.PixelData) // 2 if "PixelData" in ds else 10, 1 << 16])
        ds[tag] = DataElement(tag, "OB", bytes(rng.randrange(256) for _ in range(min(n, 4096))) * max(1, n // 4096))
        return f"PixelData {n} bytes", None
    value = _value(rng)
    ds[tag] = DataElement(tag, "LO", value)  # LO takes any text; the dictionary VR is patched in after saving
    vr = pydicom.datadict.dictionary_VR(tag)
    return f"{kw} = {value[:20]!r} as {vr}", ((tag, vr) if vr in SHORT_VRS and len(value) % 2 == 0 else None)


def _save(ds: pydicom.Dataset) -> bytes | None:
    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=False)
    except Exception:  # the mutation is not even writable: the byte mutators cover that ground
        return None
    return buf.getvalue()


def _mutate_bytes(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    b = bytearray(data)
    op = rng.choice(("flip", "flip", "truncate", "insert", "vr", "vr", "length"))
    if op == "truncate":
        n = rng.randrange(0, len(b))
        return bytes(b[:n]), f"truncate at {n}"
    if op == "insert":
        at = rng.randrange(0, len(b))
        return bytes(b[:at] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + b[at:]), f"insert at {at}"
    if op in ("vr", "length"):  # an explicit-VR element header: tag (4 bytes) + two capital letters
        starts = [i for i in range(132, len(b) - 8) if 65 <= b[i + 4] <= 90 and 65 <= b[i + 5] <= 90
                  and b[i + 1] == 0 and b[i] in (0x08, 0x10, 0x18, 0x20, 0x28, 0x54)]
        if starts:
            i = rng.choice(starts)
            if op == "vr":
                b[i + 4:i + 6] = rng.choice(VRS).encode("latin-1")[:2].ljust(2, b"\0")
                return bytes(b), f"VR at {i}"
            b[i + 6:i + 8] = struct.pack("<H", rng.choice([0, 1, 3, 0xFFFF, 0x7FFF, rng.randrange(65536)]))
            return bytes(b), f"length at {i}"
    for _ in range(rng.randint(1, 20)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b), "flip bytes"


def mutate_dicom(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One to three mutations of one DICOM file (tag level through pydicom, or raw bytes)."""
    what = []
    for _ in range(rng.choice((1, 1, 2, 3))):
        if rng.random() < 0.6:
            try:
                ds = pydicom.dcmread(io.BytesIO(data), force=True)
                for _ in ds.iterall():
                    pass
            except Exception:
                ds = None
            if ds is not None:
                try:
                    w, patch = _mutate_dataset(ds, rng)
                except Exception:  # pydicom refused to build that element: mutate bytes instead
                    w, patch = None, None
                out = _save(ds) if w else None
                if out is not None:
                    if patch:
                        tag, vr = patch
                        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"LO"
                        out = out.replace(head, head[:4] + vr.encode(), 1)
                    data = out
                    what.append(w)
                    continue
        data, w = _mutate_bytes(data, rng)
        what.append(w)
    return data, "; ".join(what)


def mutate_series(files: list[bytes], rng: random.Random) -> tuple[list[bytes], str]:
    files = list(files)
    op = rng.choice(("one", "one", "several", "drop", "duplicate", "deidentify", "deidentify_then"))
    if op == "drop":
        del files[rng.randrange(len(files))]
        return files, "drop a file"
    if op == "duplicate":
        files.append(files[rng.randrange(len(files))])
        return files, "duplicate a file"
    what = []
    if op.startswith("deidentify"):
        for k, data in enumerate(files):
            ds = pydicom.dcmread(io.BytesIO(data), force=True)
            for kw in ("SeriesInstanceUID",) + (("StudyInstanceUID",) if rng.random() < 0.3 else ()):
                if kw in ds:
                    delattr(ds, kw)
            ds.SOPInstanceUID = ""
            files[k] = _save(ds) or data
        what.append("no SeriesInstanceUID")
        if op == "deidentify":
            return files, what[0]
    n = len(files)
    targets = [rng.randrange(n)] if op != "several" else rng.sample(range(n), rng.randint(2, n))
    for k in targets:
        files[k], w = mutate_dicom(files[k], rng)
        what.append(f"file {k}: {w}")
    return files, "; ".join(what)


def nifti_case(rng: random.Random) -> tuple[bytes, str, str]:
    """(bytes, suffix, what): a small NIfTI made on the fly, then header fields or bytes mutated."""
    import gzip

    import nibabel as nib

    shape = tuple(rng.randint(1, 9) for _ in range(3))
    data = np.random.default_rng(rng.randrange(1 << 30)).normal(size=shape).astype(np.float32)
    aff = np.diag([rng.choice([0.5, 1.0, 2.0]), 1.5, 3.0, 1.0])
    img = nib.Nifti1Image(data, aff)
    hdr = img.header
    what = []
    for _ in range(rng.randint(1, 3)):
        field = rng.choice(("dim", "pixdim", "sform_code", "qform_code", "srow_x", "scl_slope", "scl_inter",
                            "datatype", "vox_offset", "data", "descrip", "quatern_b"))
        try:
            if field == "dim":
                d = hdr["dim"].copy()
                d[rng.randint(0, 4)] = rng.choice([0, -1, 1, 2, 4, 7, 32767])
                hdr["dim"] = d
            elif field == "pixdim":
                p = hdr["pixdim"].copy()
                p[rng.randint(1, 3)] = rng.choice([0.0, -1.0, 1e30, 1e-30, np.inf, np.nan])
                hdr["pixdim"] = p
            elif field in ("sform_code", "qform_code"):
                hdr[field] = rng.choice([0, 0, 1, 2, 7, 255])
            elif field == "srow_x":
                hdr["srow_x"] = [rng.choice([0.0, np.nan, np.inf, 1e30]), 0, 0, 0]
            elif field in ("scl_slope", "scl_inter"):
                hdr[field] = rng.choice([0.0, np.nan, np.inf, 1e30, -1.0])
            elif field == "datatype":
                hdr["datatype"] = rng.choice([0, 1, 2, 4, 16, 32, 128, 255, 2304, 1792])
            elif field == "vox_offset":
                hdr["vox_offset"] = rng.choice([0, 1, 351, 100000, -5])
            elif field == "data":
                flat = data.reshape(-1)
                flat[rng.randrange(flat.size)] = rng.choice([np.nan, np.inf, -np.inf, 3e38])
            elif field == "descrip":
                hdr["descrip"] = rng.choice([b"PT SUVbw", b"CT HU", b"PT", b"\xff\xfe"])
            else:
                hdr["quatern_b"] = rng.choice([np.nan, 2.0, 1e30])
            what.append(field)
        except Exception:
            what.append(f"{field} (not settable)")
    try:
        raw = img.to_bytes()
    except Exception:
        raw = nib.Nifti1Image(data, aff).to_bytes()
        what.append("rebuilt")
    if rng.random() < 0.3:
        raw, w = _mutate_bytes(raw, rng)
        what.append(w)
    gz = rng.random() < 0.3
    return (gzip.compress(raw) if gz else raw), ".nii.gz" if gz else ".nii", ", ".join(what)


# ------------------------------------------------------------------------------------------------ checks
def check_volume(vol: Volume) -> str | None:
    """None if the volume is sane; otherwise what is wrong with it."""
    if vol.array.size == 0 or vol.array.ndim != 3:
        return f"empty or not 3-D: shape {vol.array.shape}"
    spacing = np.asarray(vol.spacing_mm, np.float64)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return f"spacing {spacing.tolist()} mm"
    if not np.all(np.isfinite(vol.affine)):
        return "affine not finite"
    if not np.all(np.isfinite(vol.array)):
        return "non-finite values"
    return None


def run_one(fn: Callable[[], object]) -> tuple[str, str]:
    """("ok" | "error" | "crash", detail)."""
    try:
        out = fn()
    except InputError as e:
        if "\n" in str(e) or not str(e).strip():
            return "crash", f"InputError not one line: {e!r}"
        return "error", str(e)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # a pyo3 PanicException is a BaseException: still a crash
        return "crash", "".join(traceback.format_exception_only(type(e), e)).strip() + "\n" + traceback.format_exc()
    vols = out if isinstance(out, list) else [out]
    for v in vols:
        bad = check_volume(v)
        if bad:
            return "crash", f"returned volume with {bad}"
    return "ok", ""


class Fuzzer:
    def __init__(self, seed: int, workdir: Path, keep: Path | None = None):
        self.seed, self.work, self.keep = seed, workdir, keep
        self.files, self.series = dicom_seeds()
        self.counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        self.crashes: list[str] = []

    def _rng(self, kind: str, i: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind}:{i}")

    def _record(self, kind: str, i: int, what: str, outcome: tuple[str, str], where: Path) -> None:
        self.counts[kind][outcome[0]] += 1
        if outcome[0] == "crash":
            self.crashes.append(f"[{kind} case {i}] {what}\n    {outcome[1]}")
            if self.keep:
                dest = self.keep / f"{kind}_{i}"
                shutil.rmtree(dest, ignore_errors=True)
                (shutil.copytree if where.is_dir() else shutil.copy)(where, dest)

    def file_case(self, i: int) -> None:
        rng = self._rng("file", i)
        if rng.random() < 0.15:
            data, suffix, what = nifti_case(rng)
            path = self.work / f"case{suffix}"
            path.write_bytes(data)
            modality = rng.choice(["CT", "PT", None])
            self._record("nifti", i, what, run_one(lambda: read_volume(path, modality=modality)), path)
            path.unlink()
            return
        label, seed = self.files[rng.randrange(len(self.files))]
        data, what = mutate_dicom(seed, rng)
        path = self.work / "case.dcm"
        path.write_bytes(data)
        pet_units = "stored" if rng.random() < 0.2 else "SUVbw"
        self._record("file", i, f"{label}: {what}", run_one(lambda: read_volume(path, pet_units=pet_units)), path)
        path.unlink()

    def series_case(self, i: int) -> None:
        rng = self._rng("series", i)
        label, seed = self.series[rng.randrange(len(self.series))]
        files, what = mutate_series(seed, rng)
        root = self.work / "tree"
        folder = root / "study" / "series"
        shutil.rmtree(root, ignore_errors=True)
        folder.mkdir(parents=True)
        for k, data in enumerate(files):
            (folder / f"IM{k:05d}.dcm").write_bytes(data)

        def scan_and_read():
            found = scan_dicom_tree(root)  # skips unreadable files; must itself never fail
            vols = [read_series(folder)]
            for s in found:
                try:
                    vols.append(read_series(s["files"]))
                except InputError:
                    pass
            return vols
        self._record("series", i, f"{label}: {what}", run_one(scan_and_read), folder)

    def report(self) -> str:
        lines = []
        for kind in ("file", "nifti", "series"):
            c = self.counts.get(kind)
            if c:
                lines.append(f"{kind:7s} {sum(c.values()):6d} cases: ok {c['ok']}, clean error {c['error']}, "
                             f"crash {c['crash']}")
        return "\n".join(lines)


def define_flags(fv: flags.FlagValues) -> None:
    """The command line (absl flags, defined in `fv`)."""
    d = dict(flag_values=fv)
    flags.DEFINE_integer("n", 1000, "Mutated single files (DICOM and ~15% NIfTI).", **d)
    flags.DEFINE_integer("series", 100, "Mutated DICOM series.", **d)
    flags.DEFINE_integer("seed", 0, "Seed of the mutations.", **d)
    flags.DEFINE_integer("case", None, "Replay only this single-file case.", **d)
    flags.DEFINE_integer("series_case", None, "Replay only this series case.", **d)
    flags.DEFINE_string("keep", None, "Copy the inputs of crashing cases into this folder.", **d)
    flags.DEFINE_integer("show", 10, "Crashes to print.", **d)


def main(argv: list[str] | None = None) -> int:
    """`python tools/fuzz.py ARGS` in-process (argv: the arguments after the program name); the exit status
    (0 no crash, 1 a crash, 2 a user error)."""
    return cli.main(define_flags, fuzz, argv, prog="tools/fuzz.py")


def run() -> None:
    """The program: absl.app.run (--flagfile; a user error is one line and exit status 2)."""
    cli.run(define_flags, fuzz)


def fuzz(args: flags.FlagValues) -> int:
    """Runs the cases of args; returns 1 when any crashed, else 0."""
    keep = Path(args.keep) if args.keep else None
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    pydicom.config.settings.reading_validation_mode = pydicom.config.WARN
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ctpet_fuzz_") as d:
        fz = Fuzzer(args.seed, Path(d), keep)
        files = [args.case] if args.case is not None else ([] if args.series_case is not None else range(args.n))
        series = [args.series_case] if args.series_case is not None else (
            [] if args.case is not None else range(args.series))
        for i in files:
            fz.file_case(i)
        for i in series:
            fz.series_case(i)
    print(f"seeds: {len(fz.files)} files, {len(fz.series)} series (seed {args.seed})")
    print(fz.report())
    for c in fz.crashes[: args.show]:
        print(c)
    return 1 if fz.crashes else 0


if __name__ == "__main__":
    run()
