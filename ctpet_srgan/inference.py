"""Running a trained generator on images in physical units (PET in SUVbw, CT in HU).

`load_predictor(path)` accepts a model directory written by train_keras.py (run_config.json beside
best_generator.keras / generator.keras, or only ckpt/), a `.keras` file beside a run_config.json, a
SavedModel export (a version folder, or its parent: the highest integer version is taken), a bundled model by
name (`bundled:demo`, the phantom-trained demo model; `bundled:real`, trained on 20 IBSI STS patients; both not
for clinical use), or None for `bundled:demo`.

`Predictor.predict` runs 2-D slices in batches and, for slices larger than `tile` LR pixels, in
overlapping tiles whose overlap is cropped (seams cut mid-band), so memory stays bounded whatever the
slice size. A 2.5-D model (run_config generator context_slices K > 1) takes each slice with its neighbours:
`predict` wants [B, h, w, K] stacks (`context_stack`), `predict_volume` / `stream_volume` build them from the volume
(edge slices repeated).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ctpet_srgan.degradation import degrade_ct
from ctpet_srgan.geometry import Volume
from ctpet_srgan.normalization import Normalization
from ctpet_srgan.run_config import RunConfig

DEMO_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "demo_model"
DEMO_LABEL = "phantom-trained demo model, not for clinical use"
REAL_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "real_model"
REAL_LABEL = "trained on 20 IBSI STS patients, research use only, not for clinical use"
BUNDLED = {"demo": DEMO_MODEL_DIR, "real": REAL_MODEL_DIR}  # `--model bundled:NAME`

# raw(pet_suv [B,h,w,K] float32, ct_hu [B,H,W,K] | [B,h,w,K] | None) -> (sr_pet SUV, sr_ct HU | None), [B,H,W,1]
RawFn = Callable[[np.ndarray, "np.ndarray | None"], "tuple[np.ndarray, np.ndarray | None]"]


def context_stack(images: np.ndarray, k: int) -> np.ndarray:
    """Consecutive slices -> each slice with its neighbours, the stacks a 2.5-D model takes.

    Args:
        images: [n, H, W] consecutive slices of one volume (any units), in z order. k: context slices (odd).
    Returns:
        [n, H, W, k]: channel j of slice i is slice i - k//2 + j, clipped to 0..n-1 (edge slices repeated).
    """
    arr = np.asarray(images)
    idx = np.clip(np.arange(arr.shape[0])[:, None] + np.arange(k)[None, :] - k // 2, 0, arr.shape[0] - 1)
    return np.moveaxis(arr[idx], 1, -1)


class Predictor:
    """A generator behind a physical-units interface.

    scale: HR/LR in-plane factor; ct_input: "hr" (model takes the HR CT), "lr" (LR CT) or None (PET only);
    metadata: the run_config.json / assets/metadata.json of the model, plus "source" and "format"; config: the
    checked RunConfig of that file (typed access: config.lr_spacing_mm, config.label, ...); context_slices: K, the
    slices (the slice and its neighbours) the model takes per output slice (1: a 2-D model).
    """

    def __init__(self, raw: RawFn, *, scale: int, ct_input: str | None, metadata: dict[str, Any],
                 config: RunConfig | None = None, context_slices: int = 1):
        self._raw = raw
        self.scale = int(scale)
        self.ct_input = ct_input
        self.metadata = metadata
        self.config = config
        self.context_slices = int(context_slices)

    @property
    def is_demo(self) -> bool:
        """True for the bundled phantom-trained demo model."""
        return bool(self.metadata.get("demo"))

    @property
    def label(self) -> str:
        """What to call the model in a figure or log: its run_config / export metadata "label", else `model_name`
        of its source path."""
        return str(self.metadata.get("label") or model_name(self.metadata.get("source", "")))

    def predict(
        self,
        lr_pet_suv: np.ndarray,
        ct_hu: np.ndarray | None = None,
        *,
        batch_size: int = 8,
        tile: int | None = 256,
        overlap: int = 32,
        progress: bool = False,
    ) -> dict[str, np.ndarray]:
        """LR PET (SUV) [B,h,w] (+ CT in HU [B,H,W] or [B,h,w]) -> {"sr_pet": SUV [B,H,W], "sr_ct": HU [B,H,W]}.

        A single [h,w] slice gives [H,W] outputs. H = h*scale. The CT may be given on either grid: an HR
        CT is block-averaged for a model that takes the LR CT; an LR CT for a model that needs the HR CT
        is refused. `tile` is the LR tile edge (None: whole slices); neighbouring tiles share `overlap` LR
        pixels and the seam is cut in the middle of that band (see `_tiles`). "sr_ct" is absent for a PET-only model.
        A 2.5-D model (context_slices K > 1) takes K-slice stacks instead, always batched (a [n, h, w] volume is
        refused, not mistaken for one stack): PET [B,h,w,K], CT [B,H,W,K] or [B,h,w,K] (`context_stack`); the
        outputs are the centre slices, [B,H,W].
        """
        pet = np.asarray(lr_pet_suv, np.float32)
        k = self.context_slices
        single = k == 1 and pet.ndim == 2
        if single:
            pet = pet[None]
        if k == 1 and pet.ndim != 3:
            raise ValueError(f"lr_pet_suv must be [B, h, w] or [h, w] (SUV), got shape {np.shape(lr_pet_suv)}")
        if k > 1 and (pet.ndim != 4 or pet.shape[-1] != k):
            raise ValueError(f"this model takes context_slices={k} neighbouring slices: lr_pet_suv must be"
                             f" [B, h, w, {k}] stacks (SUV; inference.context_stack, or predict_volume), got shape"
                             f" {np.shape(lr_pet_suv)}")
        if k == 1:
            pet = pet[..., None]
        ct = self._prepare_ct(pet, ct_hu, single)
        b, h, w = pet.shape[:3]
        s = self.scale
        out_pet = np.zeros((b, h * s, w * s), np.float32)
        out_ct = np.zeros_like(out_pet)
        has_ct_out = True
        tiles = [(ty, tx) for ty in _tiles(h, tile, overlap) for tx in _tiles(w, tile, overlap)]
        batches = [(t, i) for t in tiles for i in range(0, b, batch_size)]
        it = _progress(batches, "batches" if len(tiles) == 1 else "tiles x batches") if progress else batches
        f = s if self.ct_input == "hr" else 1
        for ((y0, y1, oy0, oy1), (x0, x1, ox0, ox1)), i in it:
            j = min(b, i + batch_size)
            c = None if ct is None else ct[i:j, y0 * f : y1 * f, x0 * f : x1 * f]
            sr_pet, sr_ct = self._raw(pet[i:j, y0:y1, x0:x1], c)
            src = (slice(None), slice((oy0 - y0) * s, (oy1 - y0) * s), slice((ox0 - x0) * s, (ox1 - x0) * s), 0)
            dst = (slice(i, j), slice(oy0 * s, oy1 * s), slice(ox0 * s, ox1 * s))
            out_pet[dst] = np.asarray(sr_pet)[src]
            if sr_ct is None:
                has_ct_out = False
            else:
                out_ct[dst] = np.asarray(sr_ct)[src]
        out = {"sr_pet": out_pet}
        if has_ct_out:
            out["sr_ct"] = out_ct
        if single:
            out = {k: v[0] for k, v in out.items()}
        return out

    def _prepare_ct(self, pet: np.ndarray, ct_hu, single: bool) -> np.ndarray | None:
        if self.ct_input is None:
            return None
        if ct_hu is None:
            raise ValueError(f"this model needs a CT (HU) on the {self.ct_input.upper()} grid")
        ct = np.asarray(ct_hu, np.float32)
        if single:
            ct = ct[None]
        b, h, w, k = pet.shape
        s = self.scale
        if k == 1 and (ct.ndim != 3 or ct.shape[0] != b):
            raise ValueError(f"ct_hu must be [B, H, W] like the PET's batch {b}, got shape {np.shape(ct_hu)}")
        if k > 1 and (ct.ndim != 4 or ct.shape[0] != b or ct.shape[-1] != k):
            raise ValueError(f"ct_hu must be [B, H, W, {k}] stacks like the PET's batch {b} (context_slices={k}),"
                             f" got shape {np.shape(ct_hu)}")
        if k == 1:
            ct = ct[..., None]
        if ct.shape[1:3] == (h * s, w * s):
            if self.ct_input == "lr" and s > 1:  # the LR CT exactly as data_prep made it for training
                ct = np.stack([degrade_ct(ct[..., j], s) for j in range(k)], axis=-1)
            return ct
        if ct.shape[1:3] == (h, w) and (self.ct_input == "lr" or s == 1):
            return ct
        want = f"[{b}, {h * s}, {w * s}]" + (f" or [{b}, {h}, {w}]" if self.ct_input == "lr" else "")
        got = list(ct.shape[:3] if k == 1 else ct.shape)
        raise ValueError(f"ct_hu must be {want} (HU) for LR PET {list(pet.shape[:3])} at scale {s}, got {got}")

    def predict_volume(
        self,
        pet: Volume,
        ct: Volume | None = None,
        *,
        batch_size: int = 8,
        tile: int | None = 256,
        overlap: int = 32,
        progress: bool = True,
    ) -> tuple[Volume, Volume | None]:
        """PET volume (SUVbw, the LR grid) + CT volume (HU, any grid overlapping it) -> (SR PET, SR CT).

        The CT is resampled onto the HR grid (`hr_affine`) or the PET grid, as the model needs. The outputs
        lie on the HR grid: same field of view and slices as the PET, in-plane spacing / scale. SR CT is None for
        a PET-only model. The whole volumes of `stream_volume` (same arguments).
        """
        return self.stream_volume(pet, ct, batch_size=batch_size, tile=tile, overlap=overlap,
                                  progress=progress).collect(pet_only_ct=False)

    def stream_volume(
        self,
        pet: Volume,
        ct: Volume | None = None,
        *,
        batch_size: int = 8,
        tile: int | None = 256,
        overlap: int = 32,
        progress: bool = True,
    ) -> "VolumeStream":
        """`predict_volume` one batch of slices at a time: the returned VolumeStream yields (k0, SR PET, SR CT)
        slabs, slices k0:k0+n of the SR volumes, and holds the PET, a copy of the CT (int16 when its values are
        int16 exactly) and one batch, never the whole HR volumes. The caller may drop its own reference to `ct`
        afterwards. The CT (HU, any grid overlapping the PET) is resampled onto the HR or the PET grid, as the model
        needs, one slab at a time; `batch_size` slices go through `predict` at once (in tiles of `tile` LR pixels
        sharing `overlap`); `progress` draws a bar over the batches. A 2.5-D model gets each slice with its
        neighbours from the volume (edge slices repeated, `context_stack`)."""
        nk, nj, ni = pet.shape
        s = self.scale
        aff = hr_affine(pet.affine, s)
        hr_shape = (nk, nj * s, ni * s)
        ct_in = ct_hr = None
        if self.ct_input is not None and ct is None:
            raise ValueError("this model needs a CT volume (HU)")
        if ct is not None:
            if self.ct_input == "lr":
                ct_in = SlabResampler(ct, pet.affine, pet.shape)
            ct_hr = SlabResampler(ct, aff, hr_shape)  # the model's HR CT input, and the CT shown with SR PET
            if self.ct_input == "hr":
                ct_in = ct_hr
        meta = dict(pet.meta)
        meta["model"] = self.metadata.get("label", "ctpet-srgan")
        ct_meta = dict(ct.meta) if ct is not None else {}

        def batches() -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
            starts = list(range(0, nk, batch_size))
            h = self.context_slices // 2
            for k0 in _progress(starts, "batches") if progress else starts:
                k1 = min(nk, k0 + batch_size)
                lo, hi = max(0, k0 - h), min(nk, k1 + h)  # the slab with its neighbours
                c = None if ct_in is None else ct_in(lo, hi)
                p = pet.array[lo:hi]
                if h:
                    p, c = (None if a is None else context_stack(a, 2 * h + 1)[k0 - lo : k1 - lo] for a in (p, c))
                out = self.predict(p, c, batch_size=batch_size, tile=tile, overlap=overlap)
                yield k0, out["sr_pet"], out.get("sr_ct")

        return VolumeStream(aff, hr_shape, meta, ct_meta, batches, ct_hr)


class VolumeStream:
    """What `Predictor.stream_volume` returns: the HR grid (`affine`, `shape` (k, j, i)), the metadata the SR PET
    and CT Volumes carry, `batches()` (an iterator of (k0, sr_pet [n,H,W] SUV, sr_ct [n,H,W] HU or None for a
    PET-only model), and `hr_ct(k0, k1)`: the input CT resampled onto slices k0:k1 of the HR grid."""

    def __init__(self, affine, shape, pet_meta, ct_meta, batches, ct_hr):
        self.affine, self.shape, self.pet_meta, self.ct_meta = affine, tuple(shape), pet_meta, ct_meta
        self._batches, self._ct_hr = batches, ct_hr

    def batches(self) -> Iterator[tuple[int, np.ndarray, np.ndarray | None]]:
        return self._batches()

    def hr_ct(self, k0: int, k1: int) -> np.ndarray:
        if self._ct_hr is None:
            raise ValueError("no CT was given")
        return self._ct_hr(k0, k1)

    def collect(self, pet_only_ct: bool = True) -> tuple[Volume, Volume | None]:
        """The whole volumes (SR PET in SUVbw, SR CT in HU) on the HR grid.

        Args:
            pet_only_ct: for a PET-only model (no SR CT), give the input CT resampled onto the HR grid as the SR CT
                (True) or None (False, as `predict_volume`).
        """
        pet = np.zeros(self.shape, np.float32)
        ct = np.zeros(self.shape, np.float32)
        model_ct = True
        for k0, p, c in self.batches():
            k1 = k0 + p.shape[0]
            pet[k0:k1] = p
            model_ct = c is not None
            if model_ct or pet_only_ct:
                ct[k0:k1] = c if model_ct else self.hr_ct(k0, k1)
        sr_pet = Volume(pet, self.affine, "PT", "SUVbw", self.pet_meta)
        if not (model_ct or pet_only_ct):
            return sr_pet, None
        return sr_pet, Volume(ct, self.affine.copy(), "CT", "HU", self.ct_meta)


def _exact_int16(arr: np.ndarray) -> np.ndarray | None:
    """`arr` as int16 if that is lossless (integers in range, no -0.0), else None; checked slice by slice."""
    if arr.dtype == np.int16:
        return arr
    out = np.empty(arr.shape, np.int16)
    for k in range(arr.shape[0]):
        a = arr[k]
        if a.size and not (a.min() >= -32768 and a.max() <= 32767):
            return None
        out[k] = a
        if not np.array_equal(out[k], a) or np.any(np.signbit(a) & (a == 0)):
            return None
    return out


class SlabResampler:
    """Resamples a Volume onto slabs of a target grid: `r(k0, k1)` equals slices k0:k1 of
    `geometry.resample(vol, target_affine, target_shape)` (linear, the same fill value), one slab at a time.

    Keeps its own SimpleITK copy of the source, int16 when that is lossless (half the memory; ITK interpolates
    either in double, so the values are the same)."""

    def __init__(self, vol: Volume, target_affine: np.ndarray, target_shape: tuple[int, int, int]):
        import SimpleITK as sitk

        from ctpet_srgan.geometry import _to_sitk

        self._fill = -1024.0 if vol.units == "HU" else 0.0  # geometry.resample's default
        geo = _to_sitk(np.zeros((1, 1, 1), np.float32), vol.affine)
        as16 = _exact_int16(np.asarray(vol.array))
        if as16 is not None:
            src = sitk.GetImageFromArray(as16)
        else:
            src = sitk.GetImageFromArray(np.ascontiguousarray(vol.array, dtype=np.float32))
        del as16
        src.SetSpacing(geo.GetSpacing())
        src.SetOrigin(geo.GetOrigin())
        src.SetDirection(geo.GetDirection())
        self._src = src
        self._ref = _to_sitk(np.zeros((1, 1, 1), np.float32), np.asarray(target_affine, float))
        self.shape = tuple(int(n) for n in target_shape)

    def __call__(self, k0: int, k1: int) -> np.ndarray:
        import SimpleITK as sitk

        nk, nj, ni = self.shape
        k0, k1 = max(0, int(k0)), min(nk, int(k1))
        origin = self._ref.TransformIndexToPhysicalPoint((0, 0, k0))
        out = sitk.Resample(self._src, [ni, nj, k1 - k0], sitk.Transform(), sitk.sitkLinear, origin,
                            self._ref.GetSpacing(), self._ref.GetDirection(), float(self._fill), sitk.sitkFloat32)
        return sitk.GetArrayFromImage(out)


_GENERIC_NAMES = ("best_generator.keras", "generator.keras", "saved_model.pb", "ckpt")


def model_name(source: str | Path) -> str:
    """The meaningful name in a model's path: the nearest component that is not an export's integer version folder,
    a generic file name (generator.keras, best_generator.keras) or a checkpoint ("ckpt", "ckpt-N"). For example
    "exports/ctpet_srgan/1" -> "ctpet_srgan", "runs/demo/ckpt/ckpt-12" -> "demo", "runs/x/best_generator.keras"
    -> "x"; "model" when nothing is left."""
    for part in reversed(Path(str(source)).parts):
        if part in ("", "/", ".", "..") or part.isdigit() or part in _GENERIC_NAMES:
            continue
        if part.startswith("ckpt-") and part[5:].split(".")[0].isdigit():
            continue
        return part
    return "model"


def hr_affine(lr_affine: np.ndarray, scale: int) -> np.ndarray:
    """Affine of the HR grid: each LR pixel split into scale x scale pixels, same field of view and slices.

    HR index I maps to LR index (I - (scale-1)/2) / scale, so HR pixel centres tile each LR pixel.
    """
    a = np.asarray(lr_affine, float).copy()
    off = -(scale - 1) / (2.0 * scale)
    a[:3, 3] = a[:3, 3] + a[:3, 0] * off + a[:3, 1] * off
    a[:3, 0] /= scale
    a[:3, 1] /= scale
    return a


def _tiles(n: int, tile: int | None, overlap: int) -> list[tuple[int, int, int, int]]:
    """Splits an axis of n LR pixels into tiles: (start, stop, own_start, own_stop) each.

    Neighbouring tiles share at least `overlap` pixels; each output pixel is taken from the one tile that
    owns it (the cut lies in the middle of the shared band), so with overlap >= 2 x the generator's
    receptive-field radius the stitched result equals whole-slice inference.
    """
    if tile is None or n <= tile:
        return [(0, n, 0, n)]
    if overlap >= tile:
        raise ValueError(f"tile overlap ({overlap}) must be smaller than the tile ({tile})")
    starts = list(range(0, n - tile, tile - overlap)) + [n - tile]
    cuts = [0] + [(starts[t + 1] + starts[t] + tile) // 2 for t in range(len(starts) - 1)] + [n]
    return [(a, a + tile, cuts[t], cuts[t + 1]) for t, a in enumerate(starts)]


def _progress(items: list, what: str) -> Iterator:
    """Yields `items`, drawing a text progress bar on stderr."""
    n = len(items)
    t0 = time.time()
    for k, item in enumerate(items):
        yield item
        done = k + 1
        bar = "#" * int(30 * done / n)
        sys.stderr.write(f"\r[{bar:<30}] {done}/{n} {what} {time.time() - t0:.1f}s")
        sys.stderr.flush()
    sys.stderr.write("\n")


# ---------------------------------------------------------------------------------------- loading


def load_predictor(path: str | Path | None = None) -> Predictor:
    """Loads a model for inference; see the module docstring for what `path` may be (None: demo model)."""
    path = _resolve(path)
    if path.is_dir():
        sm = _savedmodel_dir(path)
        if sm is not None:
            return _load_savedmodel(sm)
    model, cfg, source = load_generator(path)
    return predictor_from_keras(model, cfg, source)


def bundled_model_dir(name: str) -> Path:
    """The folder of the bundled model `name` ("demo" or "real"), checked to hold one."""
    if name not in BUNDLED:
        raise ValueError(f"bundled:{name}: no such bundled model (have: {', '.join('bundled:' + n for n in BUNDLED)})")
    path = BUNDLED[name]
    if not (path / "run_config.json").exists():
        raise FileNotFoundError(
            f"{path}: the bundled {name} model is missing; build it with "
            f"`python tools/bundle_demo_model.py --name {name} --model_dir RUN_DIR` or pass --model"
        )
    return path


def _resolve(path: str | Path | None) -> Path:
    if path is None:
        path = "bundled:demo"
    if isinstance(path, str) and path.startswith("bundled:"):
        return bundled_model_dir(path.split(":", 1)[1])
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such model file or folder")
    return path


def load_generator(path: str | Path | None = None) -> tuple[Any, RunConfig, str]:
    """(Keras generator in normalised units, its RunConfig, source) from a model folder (run_config.json
    with best_generator.keras, generator.keras or ckpt/) or a .keras file beside a run_config.json."""
    path = _resolve(path)
    if path.is_dir():
        cfg_path = path / "run_config.json"
        if cfg_path.exists():
            for name in ("best_generator.keras", "generator.keras"):
                if (path / name).exists():
                    return _load_keras(path / name, cfg_path)
            if (path / "ckpt").is_dir():
                return _load_checkpoint(path / "ckpt", cfg_path)
        raise ValueError(
            f"{path}: not a model: expected run_config.json with generator.keras or ckpt/, "
            "or a SavedModel (saved_model.pb, or integer version folders holding one)"
        )
    if path.suffix == ".keras":
        cfg = path.parent / "run_config.json"
        if not cfg.exists():
            raise ValueError(f"{path}: no run_config.json beside it (needed for scale and normalisation)")
        return _load_keras(path, cfg)
    raise ValueError(f"{path}: not a model (.keras file, model folder or SavedModel folder)")


def _savedmodel_dir(path: Path) -> Path | None:
    """`path` itself if it holds saved_model.pb, else its highest integer version folder holding one."""
    if (path / "saved_model.pb").exists():
        return path
    versions = [p for p in path.iterdir() if p.is_dir() and p.name.isdigit() and (p / "saved_model.pb").exists()]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def _read_config(path: Path) -> RunConfig:
    """The checked RunConfig of a run_config.json / assets/metadata.json (InputError "PATH: problem")."""
    return RunConfig.load(path)


def _keras_raw(model, norm: Normalization, ct_key: str | None) -> RawFn:
    """Wraps a Keras generator (normalised units) as a physical-units function."""
    import tensorflow as tf


    @tf.function(reduce_retracing=True)
    def run(inputs):
        return model(inputs, training=False)

    def raw(pet, ct):
        inputs = {"lr_pet": tf.constant(norm.pet_to_norm(pet), tf.float32)}
        if ct_key is not None:
            inputs[ct_key] = tf.constant(norm.ct_to_norm(ct), tf.float32)
        out = run(inputs)
        sr_pet = norm.pet_from_norm(out["sr_pet"].numpy())
        sr_ct = norm.ct_from_norm(out["sr_ct"].numpy()) if "sr_ct" in out else None
        return sr_pet, sr_ct

    return raw


def predictor_from_keras(model, run_config: RunConfig | dict[str, Any], source: str = "") -> Predictor:
    """A Predictor around an in-memory Keras generator and its run_config (a RunConfig or its dict: scale,
    normalisation)."""
    from ctpet_srgan.models import CT_INPUT_NAME, ct_input_of

    names = _input_names(model)
    cfg = RunConfig.coerce(run_config, source or "run_config")
    try:
        ct_input = ct_input_of(names, cfg.ct_mode)  # the model's CT input, checked against the ct_mode
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    ct_key = CT_INPUT_NAME.get(ct_input)
    scale, norm = cfg.scale, cfg.normalization
    meta = cfg.to_dict()
    meta.update(source=source, format="keras", ct_input=ct_input)
    return Predictor(_keras_raw(model, norm, ct_key), scale=scale, ct_input=ct_input, metadata=meta, config=cfg,
                     context_slices=cfg.context_slices)


def _input_names(model) -> list[str]:
    inputs = model.inputs
    if isinstance(inputs, dict):
        return list(inputs)
    return [t.name.split(":")[0] for t in inputs] if isinstance(inputs, (list, tuple)) else [inputs.name]


def _import_models() -> None:
    """Registers the project's custom layers (needed before loading a .keras file)."""
    try:
        import ctpet_srgan.models  # noqa: F401
    except ModuleNotFoundError as e:
        if e.name != "ctpet_srgan.models":
            raise


def _load_keras(path: Path, config_path: Path) -> tuple[Any, RunConfig, str]:
    import keras

    _import_models()
    cfg = _read_config(config_path)
    try:
        model = keras.saving.load_model(str(path), safe_mode=True, compile=False)
    except Exception as e:  # keras raises many types for a corrupt or foreign file
        raise ValueError(f"{path}: cannot load the Keras model ({type(e).__name__}: {e})") from e
    return model, cfg, str(path)


def _load_checkpoint(ckpt_dir: Path, config_path: Path) -> tuple[Any, RunConfig, str]:
    import tensorflow as tf

    from ctpet_srgan import models

    cfg = _read_config(config_path)
    model = models.build_generator(cfg.generator_config())
    latest = tf.train.latest_checkpoint(str(ckpt_dir))
    if latest is None:
        raise ValueError(f"{ckpt_dir}: no checkpoint found")
    try:  # the training checkpoint names the generator "generator" (ctpet_srgan.training.Trainer)
        tf.train.Checkpoint(generator=model).restore(latest).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError) as e:
        raise ValueError(f"{latest}: the checkpoint holds no generator matching run_config ({e})"[:500]) from e
    return model, cfg, latest


def _load_savedmodel(path: Path) -> Predictor:
    import tensorflow as tf

    meta_path = path / "assets" / "metadata.json"
    if not meta_path.exists():
        raise ValueError(f"{path}: SavedModel without assets/metadata.json (not a ctpet-srgan export)")
    cfg = _read_config(meta_path)
    loaded = tf.saved_model.load(str(path))
    fn = loaded.signatures["serving_default"]
    has_ct = "ct" in fn.structured_input_signature[1]

    def raw(pet, ct):
        kw = {"pet": tf.constant(pet, tf.float32)}
        if has_ct:
            kw["ct"] = tf.constant(ct, tf.float32)
        out = fn(**kw)
        return out["sr_pet"].numpy(), (out["sr_ct"].numpy() if "sr_ct" in out else None)

    raw.loaded = loaded  # keep the restored object alive
    meta = cfg.to_dict()
    meta.update(source=str(path), format="saved_model")
    return Predictor(raw, scale=cfg.scale, ct_input=cfg.ct_input if has_ct else None, metadata=meta, config=cfg)
