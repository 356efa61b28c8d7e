"""The TFRecord example schema of a prepared data set (its manifest.json: ctpet_srgan.manifest).

One example = one axial slice pair on the HR grid and the LR grid, in physical units:
  hr_pet, lr_pet: SUVbw (float32); hr_ct, lr_ct: HU (float32); images stored row-major as raw bytes.
  hr_mask (optional): the tumour mask on the HR slice grid (uint8 raw bytes, H*W, 1 inside), with has_mask = 1.
  A record without a mask (phantoms, or written before masks existed) has neither feature and parses to an all-zero
  hr_mask and has_mask = 0, so old data sets keep working and mask-free records are byte-identical to old ones.
Patient identifiers never enter a record: studies are named by `study_hash` (a salted SHA-256 of the
StudyInstanceUID, first 16 hex digits).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from ctpet_srgan.manifest import MANIFEST, SCHEMA_VERSION, SPLITS, Manifest

__all__ = ["MANIFEST", "SCHEMA_VERSION", "SPLITS", "Manifest", "study_hash", "serialize_example", "feature_spec",
           "parse_example", "read_manifest", "shard_paths"]

IMAGE_KEYS = ("hr_pet", "hr_ct", "lr_pet", "lr_ct")
_HASH_SALT = b"ctpet-srgan/v1"


def study_hash(uid: str) -> str:
    """A stable, non-reversible name for a study (16 hex digits)."""
    return hashlib.sha256(_HASH_SALT + uid.encode()).hexdigest()[:16]


# tf.train.Example is encoded here by hand (protobuf wire format, example.proto / feature.proto) so that the
# preparation workers, which only serialize, need not import TensorFlow (seconds per process). Decoding stays with
# TensorFlow (parse_example); tests/test_records.py checks that tf.train.Example parses these bytes back exactly.
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64 as two's complement, as protobuf writes negative int64 values
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _bytes(v: bytes) -> bytes:
    return _field(1, _field(1, v))  # Feature.bytes_list { value: v }


def _ints(v) -> bytes:
    return _field(3, _field(1, b"".join(_varint(int(x)) for x in v)))  # Feature.int64_list, packed


def _floats(v) -> bytes:
    return _field(2, _field(1, np.asarray(v, dtype="<f4").tobytes()))  # Feature.float_list, packed


def _example(feats: dict[str, bytes]) -> bytes:
    """Example { features: Features { feature: map<string, Feature> } }, map entries in sorted key order."""
    entries = b"".join(_field(1, _field(1, k.encode()) + _field(2, f)) for k, f in sorted(feats.items()))
    return _field(1, entries)


def serialize_example(
    *,
    hr_pet: np.ndarray,
    hr_ct: np.ndarray,
    lr_pet: np.ndarray,
    lr_ct: np.ndarray,
    scale: int,
    study: str,
    slice_index: int,
    hr_affine: np.ndarray,
    has_truth: bool,
    hr_mask: np.ndarray | None = None,
) -> bytes:
    """One slice pair -> serialized tf.train.Example (without importing TensorFlow).

    hr_affine: 4x4 affine of the HR slice grid (index (i, j, 0) -> LPS mm). has_truth: whether
    hr_pet is a true high-resolution PET (phantom) or an interpolated clinical PET. hr_mask: optional (H, W)
    tumour mask on the HR grid (nonzero = inside), stored as uint8 0/1.
    """
    H, W = hr_pet.shape
    h, w = lr_pet.shape
    if hr_ct.shape != (H, W) or lr_ct.shape != (h, w) or (H, W) != (h * scale, w * scale):
        raise ValueError(
            f"inconsistent shapes: hr_pet {hr_pet.shape}, hr_ct {hr_ct.shape}, lr_pet {lr_pet.shape},"
            f" lr_ct {lr_ct.shape}, scale {scale}"
        )
    feats = {
        k: _bytes(np.ascontiguousarray(v, dtype="<f4").tobytes())
        for k, v in (("hr_pet", hr_pet), ("hr_ct", hr_ct), ("lr_pet", lr_pet), ("lr_ct", lr_ct))
    }
    feats.update(
        hr_shape=_ints([H, W]),
        lr_shape=_ints([h, w]),
        scale=_ints([scale]),
        study=_bytes(study.encode()),
        slice_index=_ints([slice_index]),
        hr_affine=_floats(np.asarray(hr_affine, float).ravel()),
        has_truth=_ints([int(bool(has_truth))]),
    )
    if hr_mask is not None:
        if np.shape(hr_mask) != (H, W):
            raise ValueError(f"inconsistent shapes: hr_mask {np.shape(hr_mask)}, hr_pet {hr_pet.shape}")
        feats.update(hr_mask=_bytes((np.asarray(hr_mask) != 0).astype(np.uint8).tobytes()), has_mask=_ints([1]))
    return _example(feats)


def feature_spec() -> dict:
    import tensorflow as tf

    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in IMAGE_KEYS}
    spec.update(
        hr_shape=tf.io.FixedLenFeature([2], tf.int64),
        lr_shape=tf.io.FixedLenFeature([2], tf.int64),
        scale=tf.io.FixedLenFeature([1], tf.int64),
        study=tf.io.FixedLenFeature([], tf.string),
        slice_index=tf.io.FixedLenFeature([1], tf.int64),
        hr_affine=tf.io.FixedLenFeature([16], tf.float32),
        has_truth=tf.io.FixedLenFeature([1], tf.int64),
        hr_mask=tf.io.FixedLenFeature([], tf.string, default_value=b""),  # absent: no mask
        has_mask=tf.io.FixedLenFeature([1], tf.int64, default_value=[0]),
    )
    return spec


def parse_example(serialized):
    """Serialized example -> dict of tensors; images as float32 [H, W, 1] in physical units.

    hr_mask: float32 [H, W, 1] (1 inside the tumour; zeros without a mask); has_mask: int64 scalar (0 or 1).
    """
    import tensorflow as tf

    f = tf.io.parse_single_example(serialized, feature_spec())
    out = {}
    for k in IMAGE_KEYS:
        shape = f["hr_shape"] if k.startswith("hr") else f["lr_shape"]
        img = tf.io.decode_raw(f[k], tf.float32)
        out[k] = tf.reshape(img, tf.concat([tf.cast(shape, tf.int32), [1]], 0))
    out["study"] = f["study"]
    out["slice_index"] = f["slice_index"][0]
    out["scale"] = f["scale"][0]
    out["hr_affine"] = tf.reshape(f["hr_affine"], [4, 4])
    out["has_truth"] = f["has_truth"][0]
    hr_shape = tf.cast(f["hr_shape"], tf.int32)
    raw = tf.io.decode_raw(f["hr_mask"], tf.uint8)
    raw = tf.cond(tf.size(raw) > 0, lambda: raw, lambda: tf.zeros([hr_shape[0] * hr_shape[1]], tf.uint8))
    out["hr_mask"] = tf.reshape(tf.cast(raw, tf.float32), tf.concat([hr_shape, [1]], 0))
    out["has_mask"] = f["has_mask"][0]
    return out


def read_manifest(data_dir: str | Path) -> dict[str, Any]:
    """DIR/manifest.json as a plain dict, checked by `Manifest.load` (which library readers use directly).

    Raises:
        FileNotFoundError: no manifest.json (the set is missing or its preparation did not finish).
        InputError: unreadable or invalid (names the file and the problem).
    """
    return Manifest.load(data_dir).to_dict()


def shard_paths(data_dir: str | Path, manifest: Manifest | dict[str, Any], split: str) -> list[str]:
    """Absolute paths of the shards of `split`, checked to exist (`manifest`: a Manifest or its dict)."""
    if not isinstance(manifest, Manifest):
        manifest = Manifest.from_dict(manifest, Path(data_dir) / MANIFEST)
    return manifest.shard_paths(data_dir, split)
