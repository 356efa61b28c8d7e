"""Writes a tiny prepared data set (shards + manifest.json) straight from records.py, for pipeline tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from ctpet_srgan import records
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.geometry import axial_affine
from ctpet_srgan.normalization import DEFAULT


def write_tiny_set(out: Path, *, studies: int = 3, slices: int = 4, lr: int = 12, scale: int = 2,
                   gzip: bool = False) -> dict:
    """Each slice's images encode (study, slice, position) so tests can check alignment exactly:
    hr_pet[y, x] = study*1000 + slice*100 + (y//scale)*0.5 + (x//scale)*0.01 (SUV), lr_pet likewise on the LR grid,
    hr_ct = 40 + (y//scale)*scale (HU), lr_ct = 40 + y*scale (HU)."""
    out.mkdir(parents=True, exist_ok=True)
    H = lr * scale
    splits = {s: {"studies": [], "examples": 0, "shards": []} for s in records.SPLITS}
    names = list(zip(records.SPLITS, range(studies)))
    study_meta = {}
    for split, s in names:
        h = records.study_hash(f"1.2.3.{s}")
        fname = f"{split}-00000-of-00001.tfrecord" + (".gz" if gzip else "")
        opts = tf.io.TFRecordOptions(compression_type="GZIP" if gzip else "")
        with tf.io.TFRecordWriter(str(out / fname), opts) as w:
            for k in range(slices):
                yy, xx = np.mgrid[0:H, 0:H]
                hr_pet = s * 1000 + k * 100 + (yy // scale) * 0.5 + (xx // scale) * 0.01
                ly, lx = np.mgrid[0:lr, 0:lr]
                lr_pet = s * 1000 + k * 100 + ly * 0.5 + lx * 0.01
                w.write(
                    records.serialize_example(
                        hr_pet=hr_pet, hr_ct=40.0 + (yy // scale) * scale, lr_pet=lr_pet, lr_ct=40.0 + ly * scale,
                        scale=scale, study=h, slice_index=k,
                        hr_affine=axial_affine((0, 0, 2.0 * k), (2, 2, 2)), has_truth=True,
                    )
                )
        splits[split] = {"studies": [h], "examples": slices, "shards": [{"file": fname, "examples": slices}]}
        study_meta[h] = {"split": split, "slices": slices, "hr_shape": [H, H], "has_truth": True, "lesions": []}
    manifest = {
        "schema_version": records.SCHEMA_VERSION,
        "scale": scale,
        "hr_spacing_mm": [2.0, 2.0, 2.0],
        "lr_spacing_mm": [2.0 * scale, 2.0 * scale, 2.0],
        "normalization": DEFAULT.to_dict(),
        "degradation": {},
        "compression": "GZIP" if gzip else "",
        "splits": splits,
        "studies": study_meta,
    }
    write_json_atomic(out / records.MANIFEST, manifest)
    return manifest
