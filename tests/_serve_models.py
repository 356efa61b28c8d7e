"""Small models for the inference / export / generate tests."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np

from ctpet_srgan import models
from ctpet_srgan.normalization import DEFAULT

SCALE = 2


def run_config(cfg: models.GeneratorConfig, **extra) -> dict:
    rc = {
        "generator": cfg.to_dict(),
        "normalization": DEFAULT.to_dict(),
        "scale": cfg.scale,
        "hr_spacing_mm": [2.0, 2.0, 3.0],
        "lr_spacing_mm": [4.0, 4.0, 3.0],
        "data_dir": "data/phantom",
        "steps": {"pretrain": 10, "gan": 5},
        "git_commit": "0123abc",
        "vgg": "none",
    }
    rc.update(extra)
    return rc


def tiny_generator(ct_mode: str = "s2d", seed: int = 0) -> tuple[keras.Model, dict]:
    """models.build_generator(filters=8, num_blocks=1) with fixed random weights, and its run_config."""
    keras.utils.set_random_seed(seed)
    cfg = models.GeneratorConfig(scale=SCALE, filters=8, num_blocks=1, ct_mode=ct_mode)
    model = models.build_generator(cfg)
    rng = np.random.default_rng(seed)
    for v in model.weights:  # zero-initialised kernels (the output heads) get random values, so outputs differ
        if "kernel" in v.path and not np.any(v.numpy()):
            v.assign(rng.normal(0.0, 0.05, v.shape).astype("float32"))
    return model, run_config(cfg)


def passthrough_generator(ct_mode: str = "s2d") -> tuple[keras.Model, dict]:
    """A stand-in with the generator's input/output names whose result is known exactly:
    sr_pet = nearest-neighbour upsampled lr_pet; sr_ct = hr_ct ("s2d") or upsampled lr_ct ("lr")."""
    up = lambda name: keras.layers.UpSampling2D(SCALE, interpolation="nearest", name=name)  # noqa: E731
    inputs = {"lr_pet": keras.Input((None, None, 1), name="lr_pet")}
    outputs = {"sr_pet": up("pet_up")(inputs["lr_pet"])}
    if ct_mode == "s2d":
        inputs["hr_ct"] = keras.Input((None, None, 1), name="hr_ct")
        outputs["sr_ct"] = keras.layers.Identity(name="ct_id")(inputs["hr_ct"])
    elif ct_mode == "lr":
        inputs["lr_ct"] = keras.Input((None, None, 1), name="lr_ct")
        outputs["sr_ct"] = up("ct_up")(inputs["lr_ct"])
    cfg = models.GeneratorConfig(scale=SCALE, filters=8, num_blocks=1, ct_mode=ct_mode)
    return keras.Model(inputs, outputs), run_config(cfg)


def save_model_dir(model: keras.Model, rc: dict, folder: Path, name: str = "generator.keras") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / name)
    (folder / "run_config.json").write_text(json.dumps(rc))
    return folder


def keras_physical(model: keras.Model, pet_suv: np.ndarray, ct_hu: np.ndarray | None, ct_key: str | None):
    """Reference: the Keras model run by hand with the normalisation outside (arrays [B,h,w,1])."""
    inputs = {"lr_pet": DEFAULT.pet_to_norm(pet_suv)}
    if ct_key:
        inputs[ct_key] = DEFAULT.ct_to_norm(ct_hu)
    out = model(inputs, training=False)
    res = {"sr_pet": DEFAULT.pet_from_norm(np.asarray(out["sr_pet"]))}
    if "sr_ct" in out:
        res["sr_ct"] = DEFAULT.ct_from_norm(np.asarray(out["sr_ct"]))
    return res


def previous_slice_generator(ct_mode: str = "s2d"):
    """A 2.5-D (K = 3) stand-in that returns the PREVIOUS slice: sr_pet = nearest-upsampled channel 0 of lr_pet,
    sr_ct = channel 0 of hr_ct ("s2d") or of the upsampled lr_ct ("lr")."""
    prev = lambda name: models.ChannelSlice(0, 1, name=name)  # noqa: E731
    up = lambda name: keras.layers.UpSampling2D(SCALE, interpolation="nearest", name=name)  # noqa: E731
    inputs = {"lr_pet": keras.Input((None, None, 3), name="lr_pet")}
    outputs = {"sr_pet": up("pet_up")(prev("pet_prev")(inputs["lr_pet"]))}
    if ct_mode == "s2d":
        inputs["hr_ct"] = keras.Input((None, None, 3), name="hr_ct")
        outputs["sr_ct"] = prev("ct_prev")(inputs["hr_ct"])
    elif ct_mode == "lr":
        inputs["lr_ct"] = keras.Input((None, None, 3), name="lr_ct")
        outputs["sr_ct"] = up("ct_up")(prev("ct_prev")(inputs["lr_ct"]))
    cfg = models.GeneratorConfig(scale=SCALE, filters=8, num_blocks=1, ct_mode=ct_mode, context_slices=3)
    return keras.Model(inputs, outputs), run_config(cfg)
