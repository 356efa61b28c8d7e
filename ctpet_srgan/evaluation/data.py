"""Reading a prepared split study by study and running a method (baseline or model) on a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ctpet_srgan import records
from ctpet_srgan.manifest import Manifest

BASELINES = {"bicubic": "INTER_CUBIC", "lanczos": "INTER_LANCZOS4"}
FUSED, PET_ONLY = "fused_srgan", "pet_only"


def _slice_record(ex: dict) -> dict:
    """One parsed example -> the slice dict of `iter_studies` (2-D float32 images, index, affine, truth flag)."""
    sl = {k: np.asarray(ex[k])[..., 0].astype(np.float32) for k in records.IMAGE_KEYS}
    sl.update(slice_index=int(ex["slice_index"]), hr_affine=np.asarray(ex["hr_affine"], float),
              has_truth=bool(ex["has_truth"]))
    if "hr_mask" in ex and int(ex.get("has_mask", 0)):  # tumour mask on the HR grid (records with has_mask = 1)
        sl["hr_mask"] = np.asarray(ex["hr_mask"])[..., 0] > 0.5
    return sl


def iter_studies(data_dir: str | Path, split: str = "test",
                 max_slices: int | None = None) -> Iterator[tuple[str, list[dict]]]:
    """The studies of one split of a prepared data set, each as soon as all its slices have been read.

    Args:
        data_dir: prepared data set (manifest.json + shards). split: "train", "val" or "test".
        max_slices: read only the first N slices of the split (smoke runs).

    Returns:
        An iterator of (study_hash, slices), slices sorted by slice_index, each a dict of 2-D float32 images
        (hr_pet, lr_pet in SUV; hr_ct, lr_ct in HU), slice_index, hr_affine (4x4, index (i, j, 0) -> LPS mm),
        has_truth and, where the records carry a tumour mask (has_mask = 1), hr_mask (bool [H, W]).
    """
    import tensorflow as tf

    manifest = Manifest.load(data_dir)
    paths = manifest.shard_paths(data_dir, split)
    ds = tf.data.TFRecordDataset(paths, compression_type=manifest.compression)
    ds = ds.map(records.parse_example)
    expected = {h: e.slices for h, e in manifest.studies.items()}
    pending: dict[str, list[dict]] = {}
    for n, ex in enumerate(ds.as_numpy_iterator()):
        if max_slices is not None and n >= max_slices:
            break
        h = ex["study"].decode()
        pending.setdefault(h, []).append(_slice_record(ex))
        if len(pending[h]) == expected.get(h, -1):
            yield h, sorted(pending.pop(h), key=lambda s: s["slice_index"])
    for h, sl in pending.items():
        yield h, sorted(sl, key=lambda s: s["slice_index"])


def upsample(lr: np.ndarray, scale: int, method: str) -> np.ndarray:
    """Interpolation baseline.

    Args:
        lr: [n, h, w] images (any units). scale: integer factor. method: a cv2 INTER_* name.

    Returns:
        [n, h*scale, w*scale] float32 upsampled with OpenCV.
    """
    import cv2

    flag = getattr(cv2, method)
    return np.stack([cv2.resize(x, (x.shape[1] * scale, x.shape[0] * scale), interpolation=flag) for x in lr])


def run_method(method: Any, slices: list[dict], scale: int, batch_size: int,
               ct_hu: np.ndarray | None = None) -> dict[str, np.ndarray | None]:
    """One method's SR PET and SR CT for one study.

    Args:
        method: a baseline's cv2 flag name (str) or a Predictor. slices: the study's slices.
        scale: HR/LR factor. batch_size: slices per model call.
        ct_hu: the HR CT (HU, [n, H, W]) given to a model that takes a CT; default the slices' own HR CT.
            A 2.5-D model (context_slices K > 1) gets each slice with its K - 1 neighbours (edge slices repeated).

    Returns:
        {"sr_pet": [n, H, W] SUV, "sr_ct": [n, H, W] HU or None}.
    """
    lr_pet = np.stack([s["lr_pet"] for s in slices])
    if isinstance(method, str):
        return {"sr_pet": upsample(lr_pet, scale, method),
                "sr_ct": upsample(np.stack([s["lr_ct"] for s in slices]), scale, method)}
    ct = None
    if method.ct_input is not None:
        ct = np.stack([s["hr_ct"] for s in slices]) if ct_hu is None else ct_hu
    k = int(getattr(method, "context_slices", 1))
    if k > 1:  # a 2.5-D model: each slice with its neighbours in the study (slices are in slice order)
        from ctpet_srgan.inference import context_stack

        lr_pet, ct = context_stack(lr_pet, k), (None if ct is None else context_stack(ct, k))
    out = method.predict(lr_pet, ct, batch_size=batch_size)
    return {"sr_pet": np.asarray(out["sr_pet"], np.float32), "sr_ct": out.get("sr_ct")}
