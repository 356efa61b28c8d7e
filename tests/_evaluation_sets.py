"""Tiny prepared sets and fake predictors for the tests of ctpet_srgan.evaluation and evaluate.py: a phantom set
(a 12 mm hot sphere and a lesion-free study), a tumour-mask set (real-data style), the Oracle and CtAware fakes."""

import numpy as np
import tensorflow as tf

from ctpet_srgan import evaluation, records
from ctpet_srgan.atomic import write_json_atomic
from ctpet_srgan.geometry import axial_affine
from ctpet_srgan.normalization import DEFAULT

SCALE, HR, SP, NSL = 2, 48, 2.0, 3  # HR 48x48 px of 2 mm, 3 slices 2 mm apart
LESION = dict(center_mm=[0.0, 0.0, 2.0], diameter_mm=12.0, uptake_ratio=4.0)  # centred on slice 1
ORIGIN = (-47.0, -47.0, 0.0)  # pixel (23.5, 23.5) is x = y = 0 mm
OFFSET_SUV, OFFSET_HU = 0.1, 10.0


def phantom_slice(k, lesion):
    aff = axial_affine((ORIGIN[0], ORIGIN[1], ORIGIN[2] + SP * k), (SP, SP, SP))
    jj, ii = np.mgrid[:HR, :HR]
    x, y = ORIGIN[0] + SP * ii, ORIGIN[1] + SP * jj
    body = x**2 + y**2 <= 40.0**2
    ct = np.where(body, 0.0, -1000.0)
    pet = np.where(body, 1.0, 0.0)
    if lesion:
        z = ORIGIN[2] + SP * k
        c = LESION["center_mm"]
        inside = (x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 <= (LESION["diameter_mm"] / 2) ** 2
        pet = np.where(inside, LESION["uptake_ratio"], pet)
    lr = lambda a: a.reshape(HR // SCALE, SCALE, HR // SCALE, SCALE).mean(axis=(1, 3))  # noqa: E731
    return dict(hr_pet=pet, hr_ct=ct, lr_pet=lr(pet), lr_ct=lr(ct), hr_affine=aff)


def write_phantom_set(out):
    """Test split: study A with one 12 mm hot sphere, study B lesion-free; 3 slices each."""
    out.mkdir(parents=True, exist_ok=True)
    studies, names = {}, {"A": records.study_hash("1.2.3.4"), "B": records.study_hash("1.2.3.5")}
    fname = "test-00000-of-00001.tfrecord"
    with tf.io.TFRecordWriter(str(out / fname)) as w:
        for key, h in names.items():
            for k in range(NSL):
                s = phantom_slice(k, key == "A")
                w.write(records.serialize_example(scale=SCALE, study=h, slice_index=k, has_truth=True, **s))
            studies[h] = dict(split="test", slices=NSL, hr_shape=[HR, HR], has_truth=True,
                              lesions=[LESION] if key == "A" else [])
    empty = {"studies": [], "examples": 0, "shards": []}
    manifest = dict(
        schema_version=records.SCHEMA_VERSION, scale=SCALE, hr_spacing_mm=[SP, SP, SP],
        lr_spacing_mm=[SP * SCALE, SP * SCALE, SP],
        normalization=DEFAULT.to_dict(), degradation={}, compression="",
        splits={"train": empty, "val": empty, "test": {"studies": list(names.values()), "examples": 2 * NSL,
                                                       "shards": [{"file": fname, "examples": 2 * NSL}]}},
        studies=studies,
    )
    write_json_atomic(out / records.MANIFEST, manifest)
    return names


class Oracle:
    """Fake predictor: returns the HR truth + a known offset (and optionally a planted hot spot)."""

    def __init__(self, data_dir, *, hot_spot=False, ct_input="hr"):
        self.scale, self.ct_input, self.hot_spot = SCALE, ct_input, hot_spot
        self.table = {}
        for _, slices in evaluation.iter_studies(data_dir):
            for s in slices:
                self.table[s["lr_pet"].tobytes()] = (s["hr_pet"], s["hr_ct"])

    def predict(self, lr_pet, ct_hu=None, *, batch_size=8):
        pet = np.stack([self.table[x.astype(np.float32).tobytes()][0] for x in lr_pet]) + OFFSET_SUV
        if self.hot_spot:
            pet[:, 8:10, 23:25] = 5.0  # 2x2 px at y ~ -30 mm, far from the lesion, inside the body
        out = {"sr_pet": pet.astype(np.float32)}
        if self.ct_input is not None:
            out["sr_ct"] = np.stack([self.table[x.astype(np.float32).tobytes()][1] for x in lr_pet]) + OFFSET_HU
        return out


# ----------------------------------------------------------------------------- real-data style: tumour masks
TUM_NSL, TUM_R, TUM_UPTAKE = 9, 8.0, 4.0  # 9 slices of 2 mm; an 8 mm radius tumour of 4 SUV in a 1 SUV body


def tumour_slice(k, shift_mm):
    z = ORIGIN[2] + SP * k
    aff = axial_affine((ORIGIN[0], ORIGIN[1], z), (SP, SP, SP))
    jj, ii = np.mgrid[:HR, :HR]
    x, y = ORIGIN[0] + SP * ii, ORIGIN[1] + SP * jj
    body = x**2 + y**2 <= 40.0**2
    ct = np.where(body, 40.0, -1000.0) + np.where(body & (x**2 + y**2 >= 34.0**2), 660.0, 0.0)  # soft tissue, bone
    tumour = (x - shift_mm) ** 2 + y**2 + (z - SP * (TUM_NSL // 2)) ** 2 <= TUM_R**2
    pet = np.where(tumour, TUM_UPTAKE, np.where(body, 1.0, 0.0))
    lr = lambda a: a.reshape(HR // SCALE, SCALE, HR // SCALE, SCALE).mean(axis=(1, 3))  # noqa: E731
    return dict(hr_pet=pet, hr_ct=ct, lr_pet=lr(pet), lr_ct=lr(ct), hr_affine=aff), tumour


def write_tumour_set(out):
    """Test split of two 'patients' (HR = clinical PET, has_truth 0) with tumour masks, 0 and 6 mm off centre."""
    out.mkdir(parents=True, exist_ok=True)
    names = [records.study_hash(f"1.2.9.{n}") for n in range(2)]
    fname = "test-00000-of-00001.tfrecord"
    studies = {}
    with tf.io.TFRecordWriter(str(out / fname)) as w:
        for h, shift in zip(names, (0.0, 6.0)):
            for k in range(TUM_NSL):
                s, tumour = tumour_slice(k, shift)
                w.write(records.serialize_example(scale=SCALE, study=h, slice_index=k, has_truth=False,
                                                  hr_mask=tumour, **s))
            studies[h] = dict(split="test", slices=TUM_NSL, hr_shape=[HR, HR], has_truth=False, has_mask=True,
                              lesions=[])
    empty = {"studies": [], "examples": 0, "shards": []}
    write_json_atomic(out / records.MANIFEST, dict(
        schema_version=records.SCHEMA_VERSION, scale=SCALE, hr_spacing_mm=[SP, SP, SP],
        lr_spacing_mm=[SP * SCALE, SP * SCALE, SP], normalization=DEFAULT.to_dict(), degradation={}, compression="",
        splits={"train": empty, "val": empty, "test": {"studies": names, "examples": 2 * TUM_NSL,
                                                       "shards": [{"file": fname, "examples": 2 * TUM_NSL}]}},
        studies=studies))
    return names


class CtAware(Oracle):
    """HR truth + 0.1 SUV with the real CT, + 0.3 SUV when the CT is only a water-filled outline."""

    def predict(self, lr_pet, ct_hu=None, *, batch_size=8):
        pet = np.stack([self.table[x.astype(np.float32).tobytes()][0] for x in lr_pet])
        water = ct_hu is not None and set(np.unique(ct_hu)) <= {0.0, -1000.0}
        return {"sr_pet": (pet + (0.3 if water else 0.1)).astype(np.float32)}
