"""Small synthetic CT/PET data for the model and training tests (no DICOM, no phantom generator).

HR PET: a few Gaussian hot spots (SUV) on a body disc; HR CT: body disc of soft tissue with a bone ring (HU);
LR = HR averaged over scale x scale blocks (a crude PSF + downsampling). Physical units on disk, normalised units
from `synthetic_dataset` (the same dict structure as ctpet_srgan.pipeline.make_dataset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ctpet_srgan.normalization import DEFAULT


def slice_pair(rng: np.random.Generator, hr: int, scale: int) -> dict[str, np.ndarray]:
    """One synthetic slice: {'hr_pet' SUV, 'hr_ct' HU, 'lr_pet', 'lr_ct'} float32 [H, W] / [H/s, W/s]."""
    yy, xx = np.mgrid[0:hr, 0:hr].astype(np.float32) / hr - 0.5
    r = np.hypot(yy, xx)
    body = (r < 0.45).astype(np.float32)
    ct = -1000.0 + body * 1040.0 + ((r > 0.35) & (r < 0.42)) * 700.0
    pet = body * 1.0
    for _ in range(3):
        cy, cx = rng.uniform(-0.3, 0.3, 2)
        pet = pet + rng.uniform(2, 8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 0.05**2))
    pool = lambda a: a.reshape(hr // scale, scale, hr // scale, scale).mean(axis=(1, 3))  # noqa: E731
    return {"hr_pet": pet.astype(np.float32), "hr_ct": ct.astype(np.float32),
            "lr_pet": pool(pet).astype(np.float32), "lr_ct": pool(ct).astype(np.float32)}


def synthetic_arrays(n: int, hr: int = 16, scale: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """n slices in NORMALISED units, each key float32 [n, H, W, 1]."""
    rng = np.random.default_rng(seed)
    pairs = [slice_pair(rng, hr, scale) for _ in range(n)]
    out = {}
    for k in ("lr_pet", "lr_ct", "hr_pet", "hr_ct"):
        a = np.stack([p[k] for p in pairs])[..., None]
        out[k] = (DEFAULT.pet_to_norm(a) if k.endswith("pet") else DEFAULT.ct_to_norm(a)).astype(np.float32)
    return out


def synthetic_dataset(batch_size: int, n: int = 8, hr: int = 16, scale: int = 2, seed: int = 0,
                      repeat: bool = True, shuffle: bool = True):
    """A tf.data.Dataset of batches like make_dataset's (normalised units, drop_remainder)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(synthetic_arrays(n, hr, scale, seed))
    if shuffle:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=True)


def write_tiny_dataset(out: Path, *, scale: int = 2, hr: int = 32, n_train: int = 8, n_val: int = 2,
                       seed: int = 0) -> Path:
    """Writes a minimal prepared data set (uncompressed shards + manifest.json) readable by make_dataset."""
    import tensorflow as tf

    from ctpet_srgan import records
    from ctpet_srgan.atomic import write_bytes_atomic, write_json_atomic

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    splits, studies = {}, {}
    for split, n in (("train", n_train), ("val", n_val)):
        study = records.study_hash(f"synthetic-{split}-{seed}")
        name = f"{split}-00000-of-00001.tfrecord"
        tmp = out / f".{name}.tmp"
        with tf.io.TFRecordWriter(str(tmp)) as w:
            for i in range(n):
                p = slice_pair(rng, hr, scale)
                w.write(records.serialize_example(**p, scale=scale, study=study, slice_index=i,
                                                  hr_affine=np.eye(4), has_truth=True))
        write_bytes_atomic(out / name, tmp.read_bytes())
        tmp.unlink()
        splits[split] = {"studies": [study], "examples": n, "shards": [{"file": name, "examples": n}]}
        studies[study] = {"split": split, "slices": n, "hr_shape": [hr, hr], "has_truth": True, "lesions": []}
    splits["test"] = {"studies": [], "examples": 0, "shards": []}
    write_json_atomic(out / records.MANIFEST, {
        "schema_version": records.SCHEMA_VERSION, "scale": scale, "hr_spacing_mm": [2.0, 2.0, 2.0],
        "lr_spacing_mm": [2.0 * scale, 2.0 * scale, 2.0], "normalization": DEFAULT.to_dict(),
        "degradation": {"kind": "block-average"}, "compression": "", "splits": splits, "studies": studies})
    return out
