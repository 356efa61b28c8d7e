"""NIfTI <-> Volume. NIfTI affines are RAS; Volumes are LPS (first two rows negated).

A NIfTI carries no modality and no SUV tags, so the caller states both: CT is taken to be in HU,
PET in SUVbw (g/mL). Other units are refused rather than guessed. The one exception is this project's own output,
whose `descrip` ("CT HU", "PT SUVbw") says what it is.
"""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np

from ctpet_srgan.atomic import write_bytes_atomic
from ctpet_srgan.errors import InputError
from ctpet_srgan.geometry import RAS_TO_LPS, Volume

UNITS_BY_MODALITY = {"CT": ("HU",), "PT": ("SUVbw",)}
PROJECT_MARKERS = {"CT HU": "CT", "PT SUVbw": "PT"}  # the `descrip` write_nifti puts in the header
MAX_VOXELS = 1 << 31
NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


# 62 lines: one check per header and voxel problem, each with its own InputError, in the order the file is read.
def read_nifti(path: str | os.PathLike, modality: str | None = None, units: str | None = None) -> Volume:
    """Reads a 3-D NIfTI (a trailing 4th axis of length 1 is dropped) as a Volume.

    modality: "CT" (values in HU) or "PT" (values in SUVbw); units defaults to those and must match. May be None
    for a file this project wrote (its descrip marker says the modality).
    Raises InputError for unknown modality/units, 4-D data, an empty axis, a singular affine, a spacing that is
    not finite and between 0.001 and 1000 mm (also pixdim when sform and qform codes are 0), or NaN/inf voxels.
    """
    import nibabel as nib

    from ctpet_srgan.dicom_io import MAX_COORD_MM, check_spacing, exception_text

    path = Path(path)
    modality = (modality or "").strip().upper()
    if modality == "PET":
        modality = "PT"
    if not path.is_file():
        raise InputError(path, "does not exist" if not path.exists() else "is not a file")
    try:
        img = nib.load(str(path))
        hdr = img.header
        shape = tuple(int(n) for n in img.shape)
        if any(n <= 0 for n in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
            raise InputError(path, f"image of shape {shape} is empty or implausibly large")
        marker = _project_marker(hdr)
        if not modality and marker:
            modality = PROJECT_MARKERS[marker]  # the project's own output: its descrip says what it is
        if modality not in UNITS_BY_MODALITY:
            raise InputError(path, f"a NIfTI has no modality tag: say CT or PT (got {modality or 'none'!r})")
        if marker and PROJECT_MARKERS[marker] != modality:
            raise InputError(path, f"its header says {marker!r} (written by this project), not {modality}")
        allowed = UNITS_BY_MODALITY[modality]
        units = units or allowed[0]
        if units not in allowed:
            raise InputError(path, f"{modality} NIfTI in units {units!r} is not supported (only {', '.join(allowed)})")
        codes = (int(hdr["sform_code"]), int(hdr["qform_code"])) if "sform_code" in hdr else (0, 0)
        if codes == (0, 0):  # no orientation: nibabel builds the affine from pixdim (and would turn 0 into 1 mm)
            check_spacing(_raw_pixdim(path, type(hdr)), path, "pixdim (no sform/qform)")
        data = np.asarray(img.dataobj)
        affine_ras = np.asarray(img.affine, np.float64)
    except InputError:
        raise
    except Exception as e:
        raise InputError(path, f"not a readable NIfTI file ({exception_text(e)})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise InputError(path, f"expected a 3-D image, got {data.ndim}-D of shape {data.shape}")
    if np.iscomplexobj(data) or data.dtype.kind not in "biuf":
        raise InputError(path, f"unsupported voxel type {data.dtype}")
    data = data.astype(np.float32)
    bad = ~np.isfinite(data)
    if bad.any():
        raise InputError(path, f"{int(bad.sum())} voxels are NaN or infinite")
    if not np.all(np.isfinite(affine_ras)) or abs(np.linalg.det(affine_ras[:3, :3])) < 1e-12:
        raise InputError(path, "the voxel-to-world affine is singular or not finite")
    check_spacing([float(v) for v in np.linalg.norm(affine_ras[:3, :3], axis=0)], path)
    if np.any(np.abs(affine_ras[:3, 3]) > MAX_COORD_MM):
        raise InputError(path, f"origin {list(affine_ras[:3, 3])} mm is implausible: corrupt header")
    affine = RAS_TO_LPS @ affine_ras
    array = np.ascontiguousarray(np.transpose(data, (2, 1, 0)))  # (i, j, k) -> (k, j, i)
    return Volume(array, affine, modality, units, {"modality": modality, "source": "nifti"})


def _raw_pixdim(path: Path, header_class) -> list[float]:
    """pixdim[1:4] as stored: nibabel's checked header silently turns 0 into 1."""
    opener = gzip.open if str(path).lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(header_class.template_dtype.itemsize)
    raw = header_class.from_fileobj(io.BytesIO(head), check=False)
    return [float(v) for v in raw["pixdim"][1:4]]


def _project_marker(hdr) -> str | None:
    try:
        text = bytes(np.asarray(hdr["descrip"]).item()).split(b"\0")[0].decode("ascii").strip()
    except Exception:  # an odd descrip is no marker
        return None
    return text if text in PROJECT_MARKERS else None


def write_nifti(vol: Volume, path: str | os.PathLike) -> Path:
    """Writes `vol` (values in its own units: HU or SUVbw) as float32 NIfTI-1 (.nii or .nii.gz), atomically.

    The LPS affine is stored as RAS in both sform and qform (code 1, scanner); spatial units mm.
    """
    import nibabel as nib

    path = Path(path)
    if not is_nifti_path(path):
        raise ValueError(f"{path}: NIfTI file names end in .nii or .nii.gz")
    data = np.transpose(np.asarray(vol.array, np.float32), (2, 1, 0))  # (k, j, i) -> (i, j, k)
    affine_ras = RAS_TO_LPS @ np.asarray(vol.affine, np.float64)
    img = nib.Nifti1Image(data, affine_ras)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = f"{vol.modality} {vol.units}"[:79].encode()
    payload = img.to_bytes()
    if str(path).lower().endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    write_bytes_atomic(path, payload)
    return path


def _nifti_image(shape_kji, affine_lps, modality: str, units: str, data=None):
    """The Nifti1Image write_nifti writes (data defaults to zeros that take no memory, for the header alone)."""
    import nibabel as nib

    nk, nj, ni = (int(n) for n in shape_kji)
    if data is None:
        data = np.broadcast_to(np.float32(0), (ni, nj, nk))
    affine_ras = RAS_TO_LPS @ np.asarray(affine_lps, np.float64)
    img = nib.Nifti1Image(data, affine_ras)
    img.set_sform(affine_ras, code=1)
    img.set_qform(affine_ras, code=1)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = f"{modality} {units}"[:79].encode()
    return img


def nifti_header_bytes(shape_kji, affine_lps, modality: str, units: str) -> bytes:
    """The bytes write_nifti puts before the voxels of a float32 volume of `shape_kji` (header, extension flag and
    padding up to vox_offset), as nibabel's to_file_map writes them for float32 data (slope 1, intercept 0)."""
    img = _nifti_image(shape_kji, affine_lps, modality, units)
    img.update_header()
    hdr = img.header
    hdr.set_data_dtype(np.float32)
    hdr.set_slope_inter(1.0, 0.0)  # what nibabel's array writer reports for float32 written as float32
    bio = io.BytesIO()
    hdr.write_to(bio)
    head = bio.getvalue()
    offset = int(hdr.get_data_offset())
    return head + b"\0" * (offset - len(head)) if len(head) < offset else head[:offset]


class NiftiSlabWriter:
    """Writes a float32 volume into `path` (.nii or .nii.gz) slab by slab, slices in order, holding one slab.

    The file's bytes equal write_nifti's for the whole volume (NIfTI stores i fastest, then j, then k, so slice k
    of the (k, j, i) array is one contiguous run; .nii.gz goes through one zlib stream at level 9 with gzip
    framing, as gzip.compress(mtime=0) does). Not atomic by itself: write into a temporary path and rename it
    after `close()`, which refuses a volume with slices missing.
    """

    def __init__(self, path: str | os.PathLike, shape_kji, affine_lps, modality: str, units: str):
        import zlib

        self.path = Path(path)
        if not is_nifti_path(self.path):
            raise ValueError(f"{self.path}: NIfTI file names end in .nii or .nii.gz")
        self.shape = tuple(int(n) for n in shape_kji)
        self._next = 0
        self._gz = zlib.compressobj(9, zlib.DEFLATED, 31) if str(self.path).lower().endswith(".gz") else None
        self._f = open(self.path, "wb")
        self._put(nifti_header_bytes(self.shape, affine_lps, modality, units))

    def _put(self, data: bytes) -> None:
        self._f.write(self._gz.compress(data) if self._gz is not None else data)

    def write(self, slab: np.ndarray) -> None:
        """Appends the next slices: `slab` is [n, j, i] in the volume's units."""
        slab = np.asarray(slab, np.float32)
        if slab.ndim != 3 or slab.shape[1:] != self.shape[1:] or self._next + slab.shape[0] > self.shape[0]:
            raise ValueError(f"slab {slab.shape} does not continue a volume {self.shape} at slice {self._next}")
        self._put(np.ascontiguousarray(slab).tobytes())
        self._next += slab.shape[0]

    def close(self) -> None:
        """Finishes the file (flushed and fsynced); raises if not every slice was written."""
        try:
            if self._next != self.shape[0]:
                raise ValueError(f"{self.path}: {self._next} of {self.shape[0]} slices written")
            if self._gz is not None:
                self._f.write(self._gz.flush())
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()

    def abort(self) -> None:
        self._f.close()
