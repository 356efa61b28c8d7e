"""Per-example losses of the SRGAN (pixel, VGG content, adversarial) on normalised images.

Every function returns a float32 vector [B] (one value per example), so that a training step can sum it and divide by
the GLOBAL batch size, which is what tf.distribute needs for gradients summed over replicas to be a global mean.
"""

from __future__ import annotations

import tensorflow as tf

PIXEL_LOSSES = ("l1", "mse")
ADV_LOSSES = ("standard", "relativistic")
# SRGAN (Ledig et al. 2017) rescales VGG feature maps by 1/12.75 so the content loss is of the order of the MSE.
VGG_FEATURE_SCALE = 1.0 / 12.75


def _per_example_mean(x) -> tf.Tensor:
    x = tf.cast(x, tf.float32)
    return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def pixel_loss(y_true, y_pred, kind: str = "l1") -> tf.Tensor:
    """Mean absolute ("l1") or squared ("mse") error per example [B], in normalised units."""
    d = tf.cast(y_pred, tf.float32) - tf.cast(y_true, tf.float32)
    if kind == "l1":
        return _per_example_mean(tf.abs(d))
    if kind == "mse":
        return _per_example_mean(tf.square(d))
    raise ValueError(f"pixel loss must be one of {PIXEL_LOSSES}, got {kind!r}")


def content_loss(vgg, y_true, y_pred, feature_scale: float = VGG_FEATURE_SCALE) -> tf.Tensor:
    """VGG content loss per example [B]: MSE between feature maps of `vgg` (grey normalised input), rescaled."""
    f_true = tf.cast(vgg(y_true, training=False), tf.float32) * feature_scale
    f_pred = tf.cast(vgg(y_pred, training=False), tf.float32) * feature_scale
    return _per_example_mean(tf.square(f_pred - tf.stop_gradient(f_true)))


def _bce(labels_one: bool, logits) -> tf.Tensor:
    logits = tf.cast(tf.reshape(logits, [tf.shape(logits)[0], -1]), tf.float32)
    labels = tf.ones_like(logits) if labels_one else tf.zeros_like(logits)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=1)


def discriminator_loss(real_logits, fake_logits, kind: str = "standard") -> tf.Tensor:
    """Discriminator loss per example [B].

    standard: BCE(real -> 1) + BCE(fake -> 0). relativistic (ESRGAN's relativistic average GAN): BCE(C(real) -
    mean C(fake) -> 1) + BCE(C(fake) - mean C(real) -> 0); the means are over the (per-replica) batch.
    """
    if kind == "standard":
        return _bce(True, real_logits) + _bce(False, fake_logits)
    if kind == "relativistic":
        r, f = tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32)
        return _bce(True, r - tf.reduce_mean(f)) + _bce(False, f - tf.reduce_mean(r))
    raise ValueError(f"adversarial loss must be one of {ADV_LOSSES}, got {kind!r}")


def generator_adv_loss(real_logits, fake_logits, kind: str = "standard") -> tf.Tensor:
    """Adversarial loss of the generator per example [B] (standard: -log D(G(x)); relativistic: swapped labels)."""
    if kind == "standard":
        return _bce(True, fake_logits)
    if kind == "relativistic":
        r, f = tf.cast(real_logits, tf.float32), tf.cast(fake_logits, tf.float32)
        return _bce(False, r - tf.reduce_mean(f)) + _bce(True, f - tf.reduce_mean(r))
    raise ValueError(f"adversarial loss must be one of {ADV_LOSSES}, got {kind!r}")


def discriminator_accuracy(real_logits, fake_logits, kind: str = "standard") -> tf.Tensor:
    """Per-example accuracy [B] of the discriminator's decisions, 0.5 = chance.

    standard: mean of [C(real) > 0] and [C(fake) < 0]. relativistic: the decisions its loss trains, mean of
    [C(real) > mean C(fake)] and [C(fake) < mean C(real)] (means over the batch). Logits [B, ...] are averaged over
    any non-batch axes first.
    """
    r = tf.reduce_mean(tf.reshape(tf.cast(real_logits, tf.float32), [tf.shape(real_logits)[0], -1]), axis=1)
    f = tf.reduce_mean(tf.reshape(tf.cast(fake_logits, tf.float32), [tf.shape(fake_logits)[0], -1]), axis=1)
    if kind == "relativistic":
        r, f = r - tf.reduce_mean(f), f - tf.reduce_mean(r)
    elif kind != "standard":
        raise ValueError(f"adversarial loss must be one of {ADV_LOSSES}, got {kind!r}")
    return 0.5 * (tf.cast(r > 0, tf.float32) + tf.cast(f < 0, tf.float32))
