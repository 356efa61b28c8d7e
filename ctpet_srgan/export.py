"""SavedModel export for TF Serving: physical units in and out, normalisation inside the graph.

Layout: ROOT/<model_name>/<version>/{saved_model.pb, variables/, assets/metadata.json}, written into a
hidden temporary folder beside the version folder and renamed into place, so TF Serving (which watches
ROOT/<model_name>/ for integer folders) never sees a half-written version.

Signature `serving_default`:
  inputs  pet: float32 [batch, h, w, 1] LR PET in SUVbw;
          ct:  float32 [batch, h*scale, w*scale, 1] HR CT in HU (ct_input "hr"), or [batch, h, w, 1] (ct_input
               "lr"); absent for a PET-only model.
  outputs sr_pet: float32 [batch, h*scale, w*scale, 1] SUVbw; sr_ct: same shape, HU (absent for PET-only).
A request fails with InvalidArgument, naming the input and the reason, for batch 0, a wrong shape, NaN or Inf
values, PET outside [0, 1e4] SUVbw or CT outside [-1e4, 1e5] HU.
Built from a plain tf.Module + tf.function (only built-in TensorFlow ops), not keras' ExportArchive.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ctpet_srgan.atomic import replace_dir
from ctpet_srgan.normalization import Normalization
from ctpet_srgan.run_config import EXPORT_METADATA, RunConfig

PET_RANGE_SUV = (0.0, 1e4)  # activity is non-negative; SUV beyond 1e4 is Bq/mL or a corrupt request
CT_RANGE_HU = (-1e4, 1e5)  # metal reaches a few 10^4 HU; beyond is not HU
_META_KEYS = ("schema_version", "scale", "hr_spacing_mm", "lr_spacing_mm", "normalization", "data_dir", "steps",
              "git_commit", "vgg", "generator", "demo", "label", "bundled", "clinical_use", "trained_on")


def _checked(x, name: str, want: str, lo: float, hi: float, units: str, expect_hw=None):
    """x after run-time checks of shape and values; each failure is an InvalidArgument naming the input.

    tf.ensure_shape checks rank and channels when the request runs (tf.debugging.assert_rank would be decided
    at trace time from the signature): a wrong rank must fail the request, not reach a kernel that aborts.
    Values must be finite and within [lo, hi] `units`: one NaN would otherwise spread through every
    convolution into hundreds of NaN outputs."""
    import tensorflow as tf

    msg = f"{name} must be {want}"
    x = tf.ensure_shape(x, [None, None, None, 1], name=f"check_{name}")
    shape = tf.shape(x)
    checks = [tf.debugging.assert_positive(shape[:1], message=f"{name}: batch is 0; send at least one image"),
              tf.debugging.assert_positive(shape[1:3], message=msg)]
    if expect_hw is not None:
        checks.append(tf.debugging.assert_equal(shape[:3], expect_hw, message=msg))
    with tf.control_dependencies(checks):
        x = tf.debugging.assert_all_finite(x, message=f"{name} has NaN or Inf values; {name} must be finite "
                                                      f"{units}")
        low, high = tf.reduce_min(x), tf.reduce_max(x)
        checks = [tf.debugging.assert_greater_equal(low, tf.constant(lo, tf.float32), message=(
                      f"{name} has values below {lo:g} {units} (negative activity or not {units})")),
                  tf.debugging.assert_less_equal(high, tf.constant(hi, tf.float32), message=(
                      f"{name} has values above {hi:g} {units}: implausible, not {units}?"))]
    with tf.control_dependencies(checks):
        return tf.identity(x)


def build_serving_module(model, normalization: Normalization, scale: int, ct_input: str | None):
    """tf.Module whose `serve` maps HU / SUV inputs to HU / SUV outputs through the (normalised) `model`."""
    import tensorflow as tf

    norm = normalization
    s = int(scale)
    ct_key = {"hr": "hr_ct", "lr": "lr_ct", None: None}[ct_input]
    spec = tf.TensorSpec([None, None, None, 1], tf.float32)

    def run(pet, ct):
        pet = _checked(pet, "pet", "[batch, h, w, 1] float32 SUVbw with h, w >= 1", *PET_RANGE_SUV, "SUVbw")
        inputs = {"lr_pet": norm.pet_to_norm(pet)}
        if ct_key is not None:
            f = s if ct_input == "hr" else 1
            want = f"[batch, h*{s}, w*{s}, 1]" if f > 1 else "[batch, h, w, 1]"
            ct = _checked(ct, "ct", f"{want} float32 HU where pet is [batch, h, w, 1]", *CT_RANGE_HU, "HU",
                         expect_hw=tf.shape(pet)[:3] * [1, f, f])
            inputs[ct_key] = norm.ct_to_norm(ct, clip_fn=tf.clip_by_value)
        out = model(inputs, training=False)
        res = {"sr_pet": tf.identity(norm.pet_from_norm(tf.cast(out["sr_pet"], tf.float32)), name="sr_pet")}
        if "sr_ct" in out:
            res["sr_ct"] = tf.identity(norm.ct_from_norm(tf.cast(out["sr_ct"], tf.float32)), name="sr_ct")
        return res

    module = tf.Module()
    # the tf.Variables behind the Keras variables (tracking the Keras wrappers leaves them out of the TF1
    # restore path that saved_model_cli run and TF Serving use)
    module.net_variables = [v.value for v in model.variables]
    if ct_input is None:

        def serve(pet):
            return run(pet, None)

        module.serve = tf.function(serve, input_signature=[spec])
    else:

        def serve(pet, ct):  # noqa: F811 (argument names are the signature's input names)
            return run(pet, ct)

        module.serve = tf.function(serve, input_signature=[spec, spec])
    return module


def export_metadata(run_config: RunConfig | dict[str, Any], ct_input: str | None) -> dict[str, Any]:
    """assets/metadata.json: what a client needs to feed the export (grid, units, normalisation, provenance).

    Args:
        run_config: the model's RunConfig (or its dict); ct_input: the grid of its CT input ("hr", "lr", None).
    Returns:
        The run_config's provenance keys with the signature's inputs and outputs (a RunConfig document too).
    """
    cfg = RunConfig.coerce(run_config).to_dict()
    meta = {k: cfg[k] for k in _META_KEYS if k in cfg}
    scale = int(cfg["scale"])
    meta.update(
        scale=scale,
        ct_input=ct_input,
        inputs={"pet": "float32 [batch, h, w, 1], LR PET in SUVbw on a grid of lr_spacing_mm"},
        outputs={"sr_pet": f"float32 [batch, h*{scale}, w*{scale}, 1], SUVbw on a grid of hr_spacing_mm"},
        framework="ctpet-srgan",
    )
    if ct_input == "hr":
        meta["inputs"]["ct"] = f"float32 [batch, h*{scale}, w*{scale}, 1], CT in HU on the HR grid"
    elif ct_input == "lr":
        meta["inputs"]["ct"] = "float32 [batch, h, w, 1], CT in HU on the LR grid"
    if ct_input is not None:
        meta["outputs"]["sr_ct"] = f"float32 [batch, h*{scale}, w*{scale}, 1], CT in HU on the HR grid"
    return meta


def _input_channels(model) -> int:
    """The channels of a Keras generator's lr_pet input (K of a 2.5-D model), 1 when unknown."""
    inp = model.input.get("lr_pet") if isinstance(getattr(model, "input", None), dict) else None
    return int(inp.shape[-1] or 1) if inp is not None else 1


def export_savedmodel(
    model,
    run_config: RunConfig | dict[str, Any],
    export_root: str | os.PathLike,
    model_name: str,
    version: int,
    *,
    overwrite: bool = False,
) -> Path:
    """Writes ROOT/model_name/version atomically and returns that folder.

    `model`: a Keras generator in normalised units; `run_config`: its RunConfig or run_config.json dict (scale,
    normalization, spacings, data_dir, steps, git_commit). Refuses an existing version unless `overwrite`.
    """
    import tensorflow as tf

    version = int(version)
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if not model_name or os.sep in model_name or model_name.startswith("."):
        raise ValueError(f"model_name must be a plain folder name, got {model_name!r}")
    names = set(model.input_names if hasattr(model, "input_names") else [])
    names = names or set(model.input.keys() if isinstance(model.input, dict) else [])
    from ctpet_srgan.models import ct_input_of

    cfg = RunConfig.coerce(run_config)
    k = max(cfg.context_slices, _input_channels(model))
    if k > 1:  # the signature takes one slice per output slice, not a K-slice stack
        raise ValueError(f"context_slices > 1 cannot be exported yet (this model takes {k} neighbouring slices per"
                         " output slice, the serving signature one): run it with generate.py / ctpet_srgan.inference")
    ct_input = ct_input_of(names, cfg.ct_mode)  # the model's CT input, checked against the run_config's ct_mode
    meta = export_metadata(cfg, ct_input)
    norm = cfg.normalization
    final = Path(export_root) / model_name / str(version)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final}: version {version} exists (pass --overwrite to replace it)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", suffix=".tmp", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the server may run as another user
    try:
        module = build_serving_module(model, norm, meta["scale"], ct_input)
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
        RunConfig.from_dict(meta, final / EXPORT_METADATA).save(tmp / EXPORT_METADATA)
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
