"""Training augmentations that teach a fused model to survive a wrong or empty CT (pure TensorFlow, in tf.data).

- Misregistration: the example's CT is shifted in-plane by a random distance of 0..`max_shift_mm` mm in a random
  direction (bilinear; air enters at the edge), as a CT that does not line up with the PET would be.
- CT dropout: with probability `dropout` the CT is replaced by the uninformative CT: the body outline filled
  with water (`uninformative_ct`, the same rule as `ctpet_srgan.guidance.uninformative_ct`: 0 HU inside the
  body, i.e. above -500 HU plus the holes it encloses, -1000 HU outside).

Only the CT changes: hr_ct is augmented and lr_ct is rebuilt from it by area averaging (the relation
`data_prep.convert` writes: lr_ct = area-downsample(hr_ct)); lr_pet and hr_pet are returned untouched. The CT
output's target and the discriminator's condition are then that augmented CT (the CT branch reconstructs what it
was given). Images are [H, W, 1] float32 in normalised units (`Normalization`); every draw is a stateless function
of `seed`, so a run's augmentations are a function of its seed.
"""

from __future__ import annotations

import math

import tensorflow as tf

from ctpet_srgan.guidance import AIR_HU, BODY_THRESHOLD_HU  # the uninformative CT of guidance, in TF
from ctpet_srgan.normalization import Normalization


def ct_levels(norm: Normalization) -> dict[str, float]:
    """Air (-1000 HU), water (0 HU) and the body threshold (-500 HU) in normalised CT units.

    Args:
        norm: the data set's normalisation.
    Returns:
        dict(air, water, threshold), floats in normalised units.
    """
    return {"air": float(norm.ct_to_norm(AIR_HU)), "water": float(norm.ct_to_norm(0.0)),
            "threshold": float(norm.ct_to_norm(BODY_THRESHOLD_HU))}


def shift_image(img: tf.Tensor, shift_px: tf.Tensor, fill: float) -> tf.Tensor:
    """Moves an image's content in-plane by a (fractional) number of pixels.

    Args:
        img: [H, W, C] float32.
        shift_px: [2] (d_row, d_col) pixels: the content moves toward +row by d_row and +col by d_col.
        fill: value of what enters from outside the image.
    Returns:
        [H, W, C] float32: out(r, c) = img(r - d_row, c - d_col), bilinear (exact for whole pixels).
    """
    img = tf.convert_to_tensor(img, tf.float32)
    d = tf.cast(shift_px, tf.float32)
    one, zero = tf.ones([], tf.float32), tf.zeros([], tf.float32)
    transform = tf.stack([one, zero, -d[1], zero, one, -d[0], zero, zero])[None]  # output (x, y) <- input
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=img[None], transforms=transform, output_shape=tf.shape(img)[:2], fill_value=tf.cast(fill, tf.float32),
        interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def _dilate4(m: tf.Tensor) -> tf.Tensor:
    p = tf.pad(m, [[1, 1], [1, 1]])
    return tf.reduce_max(tf.stack([p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]), axis=0)


def body_mask(ct: tf.Tensor, threshold: float) -> tf.Tensor:
    """The body: pixels above `threshold` plus the background regions that do not reach the image border.

    Args:
        ct: [H, W, 1] CT (normalised units); threshold: the body threshold in the same units (`ct_levels`).
    Returns:
        [H, W, 1] bool (4-connected background flood from the border, as `guidance.body_mask`).
    """
    tissue = ct[..., 0] > threshold
    bg = tf.cast(~tissue, tf.float32)
    border = tf.pad(tf.zeros(tf.shape(bg) - 2, tf.float32), [[1, 1], [1, 1]], constant_values=1.0)
    outside0 = bg * border

    def grow(prev, cur):
        return cur, _dilate4(cur) * bg

    _, outside = tf.while_loop(lambda prev, cur: tf.reduce_any(tf.not_equal(prev, cur)), grow,
                               (tf.zeros_like(outside0), outside0))
    return (outside < 0.5)[..., None]


def uninformative_ct(ct: tf.Tensor, *, threshold: float, water: float, air: float) -> tf.Tensor:
    """The body outline filled with water: `water` inside `body_mask`, `air` outside.

    Args:
        ct: [H, W, 1] CT (normalised units); threshold, water, air: from `ct_levels`.
    Returns:
        [H, W, 1] float32.
    """
    return tf.where(body_mask(ct, threshold), tf.cast(water, tf.float32), tf.cast(air, tf.float32))


def draw(seed: tf.Tensor, max_shift_mm: float, dropout: float) -> tuple[tf.Tensor, tf.Tensor]:
    """The random part of `augment_ct`: (shift [2] (d_row, d_col) mm, drop: bool).

    Args:
        seed: [2] int64 stateless seed; max_shift_mm: shift distance uniform in [0, max] mm, direction uniform;
        dropout: probability of replacing the CT.
    Returns:
        (shift_mm [2] float32, dropped bool scalar).
    """
    u = tf.random.stateless_uniform([3], seed=seed, dtype=tf.float32)
    dist = u[0] * float(max_shift_mm)
    ang = u[1] * 2.0 * math.pi
    return tf.stack([dist * tf.sin(ang), dist * tf.cos(ang)]), u[2] < float(dropout)


def augment_ct(ex: dict, seed: tf.Tensor, *, scale: int, spacing_mm: tf.Tensor, max_shift_mm: float = 0.0,
               dropout: float = 0.0, levels: dict[str, float]) -> dict:
    """Misregistration and CT dropout of one example (whole slice), the PET untouched.

    Args:
        ex: dict with hr_ct [H, W, 1], lr_ct [H/scale, W/scale, 1] (normalised), and any other keys.
        seed: [2] int64 stateless seed. scale: HR/LR factor. spacing_mm: [2] (row, col) HR pixel size in mm.
        max_shift_mm: largest in-plane shift (mm); 0: none. dropout: probability of the uninformative CT.
        levels: `ct_levels(norm)`.
    Returns:
        a new dict: hr_ct shifted by the drawn mm (or the uninformative CT), lr_ct = area average of that hr_ct;
        when nothing is drawn (shift 0 and no drop) both are the inputs unchanged; the other keys as given.
    """
    shift_mm, drop = draw(seed, max_shift_mm, dropout)
    hr = tf.convert_to_tensor(ex["hr_ct"], tf.float32)
    sp = tf.cast(spacing_mm, tf.float32)

    def changed():
        out = tf.cond(drop, lambda: uninformative_ct(hr, **levels),
                      lambda: shift_image(hr, shift_mm / sp, levels["air"]))
        lr = tf.nn.avg_pool2d(out[None], scale, scale, "VALID")[0]
        return out, lr

    apply = tf.logical_or(drop, tf.reduce_any(tf.not_equal(shift_mm, 0.0)))
    hr_out, lr_out = tf.cond(apply, changed, lambda: (hr, tf.convert_to_tensor(ex["lr_ct"], tf.float32)))
    out = dict(ex)
    out["hr_ct"], out["lr_ct"] = hr_out, lr_out
    return out


def spacing_from_affine(hr_affine: tf.Tensor) -> tf.Tensor:
    """[2] (row, col) pixel size in mm of a slice grid from its 4x4 affine (columns: i = col, j = row).

    Args:
        hr_affine: [4, 4] float32 (index (i, j, 0) -> LPS mm).
    Returns:
        [2] float32 (|a_j|, |a_i|) in mm.
    """
    a = tf.cast(hr_affine, tf.float32)
    return tf.stack([tf.norm(a[:3, 1]), tf.norm(a[:3, 0])])
