"""Writing an SR PET / CT pair slab by slab, as `inference.VolumeStream` yields it, so that peak memory is the
inputs, the model and one batch, never the whole HR volumes.

`write_stream` writes the pair as NIfTI or NPY (by the file name) into temporary files renamed into place only
when complete; `write_volumes` writes whole in-memory volumes the same way (write_nifti / np.save): the reference
the streamed files equal byte for byte. For a DICOM series, `streamed_pet_volume` gives a read-once Volume whose
slices `dicom_write.write_series` takes one at a time. SR PET is clipped at 0 SUV in every output (`clip_suv`).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ctpet_srgan.atomic import atomic_path
from ctpet_srgan.geometry import Volume


def clip_suv(pet_suv: np.ndarray) -> np.ndarray:
    """SR PET (SUV) clipped at 0: activity is non-negative (the model's small undershoots are not data).

    Args:
        pet_suv: SR PET in SUVbw, any shape.

    Returns:
        max(pet_suv, 0) in SUVbw, same shape.
    """
    return np.maximum(pet_suv, 0.0)


class MappedSlices:
    """`fn(k, source[k])` for slice k of `source` (an array or SlabSlices): a lazy [k, H, W] for write_series."""

    def __init__(self, source, fn: Callable[[int, np.ndarray], np.ndarray]):
        self.source, self.fn, self.shape = source, fn, tuple(source.shape)

    def __getitem__(self, k: int) -> np.ndarray:
        return self.fn(k, self.source[k])


class SlabSlices:
    """A read-once [k, H, W] view of a stream of (k0, slab) in slice order: slice k is taken from the current slab,
    reading the next one when needed (so a writer of one slice at a time holds one slab, not the volume)."""

    def __init__(self, shape, slabs: Iterable[tuple[int, np.ndarray]]):
        self.shape, self._slabs = tuple(shape), iter(slabs)
        self._k0, self._slab = 0, np.zeros((0,) + self.shape[1:], np.float32)

    def __getitem__(self, k: int) -> np.ndarray:
        if not isinstance(k, (int, np.integer)) or k < self._k0:
            raise IndexError(f"slice {k!r}: a slab stream is read once, slices in order")
        while k >= self._k0 + self._slab.shape[0]:
            self._k0, self._slab = next(self._slabs)
        return self._slab[k - self._k0]


def clipped_pet_slabs(stream) -> Iterator[tuple[int, np.ndarray]]:
    """(k0, SR PET slab clipped at 0 SUV) of a VolumeStream, batch by batch."""
    for k0, p, _ in stream.batches():
        yield k0, clip_suv(p)


def streamed_pet_volume(stream) -> Volume:
    """The SR PET of a VolumeStream (clipped at 0 SUV) as a read-once Volume on the HR grid: slices must be read
    in order, once (as `dicom_write.write_series` does), and the model runs as they are read."""
    return Volume(SlabSlices(stream.shape, clipped_pet_slabs(stream)), stream.affine, "PT", "SUVbw", stream.pet_meta)


class NpySlabWriter:
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
        """Appends `slab` ([n, H, W]; for a 2-D array the one [1, H, W] or [H, W] slice)."""
        slab = np.asarray(slab, np.float32)
        if len(self.shape) == 2:
            slab = slab.reshape(self.shape)
        self._f.write(np.ascontiguousarray(slab).tobytes())
        self._done += 1 if len(self.shape) == 2 else slab.shape[0]

    def close(self) -> None:
        """Flushes and closes the file; ValueError if fewer slices than the shape says were written."""
        if self._done != self._rows:
            raise ValueError(f"{self.path}: {self._done} of {self._rows} slices written")
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        """Closes the file without checks (the caller removes it)."""
        self._f.close()


def is_nifti(path: Path) -> bool:
    """True for a .nii / .nii.gz name, False for anything else (an .npy)."""
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def _nifti_ext(path: Path) -> str:
    return ".nii.gz" if Path(path).name.lower().endswith(".gz") else ".nii"


@contextlib.contextmanager
def _pair_temporaries(pet_path: Path, ct_path: Path) -> Iterator[tuple[Path, Path]]:
    """Two temporary paths beside `pet_path` / `ct_path` (with the .nii / .nii.gz suffix a NIfTI writer wants),
    renamed onto them only when the block succeeds; removed in every case."""
    with atomic_path(pet_path) as t0, atomic_path(ct_path) as t1:
        if not is_nifti(pet_path):
            yield t0, t1
            return
        ext = _nifti_ext(pet_path)
        a, b = t0.with_name(t0.name + ext), t1.with_name(t1.name + ext)
        try:
            yield a, b
            os.replace(a, t0)
            os.replace(b, t1)
        finally:
            for p in (a, b):
                p.unlink(missing_ok=True)


def write_stream(stream, pet_path: Path, ct_path: Path, *, two_d: bool = False) -> None:
    """Writes a VolumeStream's SR PET (SUVbw, clipped at 0) to `pet_path` and its SR CT (HU; a PET-only model's:
    the input CT on the HR grid) to `ct_path` as they come, batch by batch; both appear only when complete.

    Args:
        stream: an `inference.VolumeStream`.
        pet_path, ct_path: both .nii / .nii.gz (NIfTI, the stream's affine) or both .npy (float32 [k, H, W]).
        two_d: an .npy output of a one-slice 2-D input is [H, W].
    """
    shape = stream.shape
    with _pair_temporaries(pet_path, ct_path) as (a, b):
        if is_nifti(pet_path):
            from ctpet_srgan.nifti_io import NiftiSlabWriter

            makers = [lambda: NiftiSlabWriter(a, shape, stream.affine, "PT", "SUVbw"),
                      lambda: NiftiSlabWriter(b, shape, stream.affine, "CT", "HU")]
        else:
            makers = [lambda t=t: NpySlabWriter(t, shape[1:] if two_d else shape) for t in (a, b)]
        writers = []
        try:
            for make in makers:
                writers.append(make())
            for k0, p, c in stream.batches():
                writers[0].write(clip_suv(p))
                writers[1].write(c if c is not None else stream.hr_ct(k0, k0 + p.shape[0]))
            for w in writers:
                w.close()
        finally:
            for w in writers:
                w.abort()


def write_volumes(sr_pet: Volume, sr_ct: Volume, pet_path: Path, ct_path: Path, *, two_d: bool = False) -> None:
    """Writes whole SR PET (SUVbw) and CT (HU) volumes to `pet_path` / `ct_path` (NIfTI by write_nifti, or float32
    .npy by np.save, as `write_stream`), into temporary files renamed into place when both are written.

    Args:
        sr_pet, sr_ct: the volumes (the caller clips the PET: `clip_suv`).
        pet_path, ct_path: both .nii / .nii.gz or both .npy.
        two_d: an .npy output of a one-slice 2-D input is [H, W].
    """
    with _pair_temporaries(pet_path, ct_path) as (a, b):
        if is_nifti(pet_path):
            from ctpet_srgan.nifti_io import write_nifti

            write_nifti(sr_pet, a)
            write_nifti(sr_ct, b)
        else:
            for arr, t in ((sr_pet.array, a), (sr_ct.array, b)):
                with open(t, "wb") as f:
                    np.save(f, (arr[0] if two_d else arr).astype(np.float32))
