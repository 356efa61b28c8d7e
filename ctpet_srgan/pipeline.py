"""tf.data input pipeline: TFRecord shards -> aligned LR/HR patches, augmented, batched, prefetched.

Elements are dicts {'lr_pet', 'lr_ct', 'hr_pet', 'hr_ct'} of float32 [B, h, w, 1] (LR) and
[B, h*s, w*s, 1] (HR) in normalised units (see normalization.py; constants from manifest.json).
Random crops and flips/rotations are stateless functions of (seed, element index), so a training run's
data order is a pure function of its seed: `skip(n)` reproduces an interrupted run exactly. Training may also
misregister the CT and drop it for the uninformative CT (`ctpet_srgan.augment`; off by default), drawn the same way.
With `context_slices` K > 1 (2.5-D) elements also carry lr_pet_ctx, lr_ct_ctx, hr_ct_ctx: [.., K] stacks of the
slice and its neighbours of the same study in z order (edge slices repeat the nearest slice of the study), built
from the shards in file order before any shuffle; the four 1-channel images stay the centre slice.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from ctpet_srgan import augment, records
from ctpet_srgan.manifest import Manifest
from ctpet_srgan.normalization import Normalization

IMAGE_KEYS = ("lr_pet", "lr_ct", "hr_pet", "hr_ct")
META_KEYS = ("study", "slice_index", "hr_affine", "has_truth")
CONTEXT_KEYS = ("lr_pet", "lr_ct", "hr_ct")  # the images a 2.5-D generator takes K slices of (as KEY_ctx)
_NEIGHBOUR_SPEC = {"study": tf.io.FixedLenFeature([], tf.string, default_value=""),
                   "slice_index": tf.io.FixedLenFeature([1], tf.int64, default_value=[-1])}


def ctx_key(key: str) -> str:
    """The element key of the K-slice stack of image `key` ("lr_pet" -> "lr_pet_ctx")."""
    return key + "_ctx"


def model_inputs(batch: dict, input_names, context_slices: int = 1) -> dict:
    """The generator's inputs from a batch: its 1-channel images (K = 1), or their K-slice stacks (K > 1)."""
    return {k: batch[ctx_key(k) if context_slices > 1 else k] for k in input_names}


def context_window(studies: tf.Tensor, slice_index: tf.Tensor, k: int) -> tf.Tensor:
    """Which of K consecutive records give the K-slice stack of the centre one (record K // 2).

    Args:
        studies: [K] study hashes of K consecutive records ("" for padding before/after the data).
        slice_index: [K] their slice indices. k: K, odd.
    Returns:
        [K] int32 positions: each one itself if it and every record between it and the centre belong to the
        centre's study, else the nearest one that does (the study's edge slice repeated).
    Raises (when run):
        InvalidArgumentError: the chosen records are not consecutive slices (a study not written in slice order).
    """
    h = k // 2
    same = tf.cast(tf.equal(studies, studies[h]), tf.int32)
    n_left = tf.reduce_sum(tf.math.cumprod(tf.reverse(same[: h + 1], [0]))) - 1
    n_right = tf.reduce_sum(tf.math.cumprod(same[h:])) - 1
    idx = tf.clip_by_value(tf.range(k), h - n_left, h + n_right)
    got = tf.gather(slice_index, idx)
    tf.debugging.assert_equal(got - got[h], tf.cast(idx - h, got.dtype), message=(
        "records of a study are not consecutive slices in slice order (2.5-D context needs them so)"))
    return idx


def context_stacks(serialized: tf.data.Dataset, k: int) -> tf.data.Dataset:
    """Serialized records in file order -> parsed examples with the K-slice stacks `ctx_key(KEY)` of CONTEXT_KEYS.

    Args:
        serialized: the records of a split in the order they were written (a study's slices consecutive, in slice
            order, as data_prep writes them). k: context slices, odd.
    Returns:
        One parsed example (records.parse_example, physical units) per record, in the same order, plus
        KEY_ctx [H, W, K] of its study's slices i - K//2 .. i + K//2 (edge slices repeated).
    """
    h = k // 2
    pad = tf.data.Dataset.from_tensors(tf.constant(b"")).repeat(h)
    ds = pad.concatenate(serialized).concatenate(pad)
    ds = ds.window(k, shift=1, drop_remainder=True).flat_map(lambda w: w.batch(k, drop_remainder=True))

    def stack(w):
        meta = tf.io.parse_example(w, _NEIGHBOUR_SPEC)
        idx = context_window(meta["study"], meta["slice_index"][:, 0], k)
        exs = [records.parse_example(w[idx[j]]) for j in range(k)]
        out = dict(exs[h])
        for key in CONTEXT_KEYS:
            out[ctx_key(key)] = tf.concat([e[key] for e in exs], axis=-1)
        return out

    return ds.map(stack, num_parallel_calls=tf.data.AUTOTUNE)


def normalize(ex: dict, norm: Normalization) -> dict:
    """Physical units (HU, SUV) -> network units, for the four images of an example."""
    out = dict(ex)
    for k in ("lr_ct", "hr_ct", "lr_ct_ctx", "hr_ct_ctx"):
        if k in ex:
            out[k] = norm.ct_to_norm(ex[k], clip_fn=tf.clip_by_value)
    for k in ("lr_pet", "hr_pet", "lr_pet_ctx"):
        if k in ex:
            out[k] = norm.pet_to_norm(ex[k])
    return out


def random_patch(ex: dict, scale: int, patch_size: int, seed: tf.Tensor) -> dict:
    """Crops an aligned LR patch (patch_size^2) and HR patch ((patch_size*scale)^2), then applies one
    of the 8 flips/rotations, all drawn from the stateless `seed` (shape [2], int64). K-slice stacks (`ctx_key`) in
    `ex` are cropped alike."""
    h = tf.shape(ex["lr_pet"])[0]
    w = tf.shape(ex["lr_pet"])[1]
    tf.debugging.assert_greater_equal(
        tf.minimum(h, w), patch_size, message=f"a slice is smaller than the LR patch size {patch_size}"
    )
    r = tf.random.stateless_uniform([4], seed=seed, minval=0, maxval=2**30, dtype=tf.int32)
    y = r[0] % (h - patch_size + 1)
    x = r[1] % (w - patch_size + 1)
    hp = patch_size * scale
    out = {}
    for k in IMAGE_KEYS + tuple(ctx_key(c) for c in CONTEXT_KEYS if ctx_key(c) in ex):
        if k.startswith("lr"):
            img = ex[k][y : y + patch_size, x : x + patch_size, :]
            size = patch_size
        else:
            img = ex[k][y * scale : y * scale + hp, x * scale : x * scale + hp, :]
            size = hp
        img = tf.image.rot90(img, k=r[2] % 4)
        img = tf.cond(r[3] % 2 == 1, lambda: tf.image.flip_left_right(img), lambda: img)
        out[k] = tf.ensure_shape(img, [size, size, ex[k].shape[-1] or 1])
    return out


def _check_args(training: bool, patch_size: int | None, ct_shift_max_mm: float, ct_dropout: float,
                context_slices: int) -> None:
    """Refuses (ValueError) a combination of `make_dataset` arguments that it cannot honour."""
    if training and not patch_size:
        raise ValueError("make_dataset(training=True) needs a patch_size (LR pixels)")
    if ct_shift_max_mm < 0 or not 0.0 <= ct_dropout <= 1.0:
        raise ValueError(f"ct_shift_max_mm must be >= 0 and ct_dropout in [0, 1], got {ct_shift_max_mm}, {ct_dropout}")
    if (ct_shift_max_mm or ct_dropout) and not training:
        raise ValueError("CT misregistration / dropout augment training data only (training=True)")
    k_ctx = int(context_slices)
    if k_ctx < 1 or k_ctx % 2 == 0:
        raise ValueError(f"context_slices must be an odd integer >= 1, got {context_slices}")


def _read_examples(files: list, compression: str | None, k_ctx: int, training: bool, seed: int,
                   deterministic: bool) -> tf.data.Dataset:
    """The parsed examples of the shards `files`: K-slice stacks in file order when k_ctx > 1, else the shards
    interleaved (in a seeded random order when training)."""
    if k_ctx > 1:  # neighbours need the written order: a study's slices are consecutive, possibly across shards
        return context_stacks(tf.data.TFRecordDataset(files, compression_type=compression), k_ctx)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=compression),
        cycle_length=min(len(files), 4),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    return ds.map(records.parse_example, num_parallel_calls=tf.data.AUTOTUNE)


def _options(training: bool, deterministic: bool) -> tf.data.Options:
    """The tf.data options of `make_dataset`: element order and how tf.distribute shards the data."""
    options = tf.data.Options()
    options.deterministic = bool(deterministic or not training)
    # Training data is sharded by element across workers; evaluation data is read whole by every worker (equal batch
    # counts, so no collective hangs; Trainer.evaluate relies on it).
    options.experimental_distribute.auto_shard_policy = (tf.data.experimental.AutoShardPolicy.DATA if training
                                                         else tf.data.experimental.AutoShardPolicy.OFF)
    return options


def _ct_augmenter(seed: int, scale: int, ct_shift_max_mm: float, ct_dropout: float, levels, k_ctx: int):
    """The map function `(i, ex) -> (i, ex)` of the CT augmentation (`augment.augment_ct`) of element i.

    Args:
        seed: the dataset seed (with i, the stateless draw of the element).
        scale: HR pixels per LR pixel.
        ct_shift_max_mm: largest in-plane CT shift (mm); ct_dropout: probability of the uninformative CT.
        levels: `augment.ct_levels` of the set's normalization.
        k_ctx: context slices K; K > 1 moves or drops every slice of the stack alike.
    Returns:
        The function for `Dataset.map` on an enumerated dataset.
    """
    def _ct(i, ex):
        s = tf.random.experimental.stateless_fold_in(tf.stack([tf.cast(seed, tf.int64), i]), 1)
        sp = augment.spacing_from_affine(ex["hr_affine"])
        kw = dict(scale=scale, spacing_mm=sp, max_shift_mm=ct_shift_max_mm, dropout=ct_dropout, levels=levels)
        out = augment.augment_ct(ex, s, **kw)
        if k_ctx > 1:  # the same draw (seed) for every slice of the stack; the centre is the 1-channel CT
            hr, lr = ex[ctx_key("hr_ct")], ex[ctx_key("lr_ct")]
            chans = [augment.augment_ct({"hr_ct": hr[..., j:j + 1], "lr_ct": lr[..., j:j + 1]}, s, **kw)
                     for j in range(k_ctx)]
            for key in ("hr_ct", "lr_ct"):
                out[ctx_key(key)] = tf.concat([c[key] for c in chans], axis=-1)
        return i, out

    return _ct


# Over 60 lines only by its 13 keyword arguments and their docstring; the steps are the helpers above.
def make_dataset(
    data_dir: str | Path,
    split: str,
    *,
    batch_size: int,
    patch_size: int | None = None,
    training: bool = False,
    seed: int | None = None,
    deterministic: bool = False,
    repeat: bool = False,
    include_meta: bool = False,
    cache: bool = False,
    shuffle_buffer: int = 512,
    ct_shift_max_mm: float = 0.0,
    ct_dropout: float = 0.0,
    context_slices: int = 1,
) -> tf.data.Dataset:
    """Builds the dataset of `split` ("train", "val" or "test") of a prepared set.

    training: shuffle (seeded), random aligned patches of `patch_size` LR pixels, flips/rotations, and
    drop_remainder batches (what tf.distribute wants). Otherwise whole slices in file order
    (`include_meta` adds study, slice_index, hr_affine and has_truth). `deterministic` fixes the
    element order even with parallel reads/maps (slower); `cache` keeps parsed slices in memory.
    Training only: `ct_shift_max_mm` > 0 shifts each slice's CT in-plane by a random 0..max mm, `ct_dropout` is
    the probability of the uninformative CT instead (`augment.augment_ct`, on the whole slice before the crop;
    the PET is untouched). `context_slices` K > 1 adds the K-slice stacks (`context_stacks`; the records are then
    read in file order, one shard after another, and shuffled after stacking; a CT augmentation moves or drops every
    slice of a stack alike).
    """
    manifest = Manifest.load(data_dir)
    files = manifest.shard_paths(data_dir, split)
    norm = manifest.normalization
    scale = manifest.scale
    compression = manifest.compression or None
    _check_args(training, patch_size, ct_shift_max_mm, ct_dropout, context_slices)
    seed = 0 if seed is None else int(seed)
    ct_aug = bool(ct_shift_max_mm or ct_dropout)
    k_ctx = int(context_slices)
    levels = augment.ct_levels(norm)

    options = _options(training, deterministic)

    ds = _read_examples(files, compression, k_ctx, training, seed, options.deterministic)
    ds = ds.map(lambda ex: normalize(ex, norm), num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache()
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if training:
        ds = ds.enumerate()
        if ct_aug:
            ds = ds.map(_ct_augmenter(seed, scale, ct_shift_max_mm, ct_dropout, levels, k_ctx),
                        num_parallel_calls=tf.data.AUTOTUNE)
        ds = ds.map(
            lambda i, ex: random_patch(ex, scale, patch_size, tf.stack([tf.cast(seed, tf.int64), i])),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    else:
        keys = (IMAGE_KEYS + (tuple(ctx_key(c) for c in CONTEXT_KEYS) if k_ctx > 1 else ())
                + (META_KEYS if include_meta else ()))
        ds = ds.map(lambda ex: {k: ex[k] for k in keys})
    ds = ds.batch(batch_size, drop_remainder=training, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds.with_options(options)
