"""Losses: per-example values against NumPy formulas, GAN loss identities, content-loss gradients."""

import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan import losses


def _bce(labels, logits):
    p = 1 / (1 + np.exp(-logits))
    return -(labels * np.log(p) + (1 - labels) * np.log(1 - p))


def test_pixel_losses_per_example():
    rng = np.random.default_rng(0)
    a = rng.random((3, 4, 5, 1)).astype("float32")
    b = rng.random((3, 4, 5, 1)).astype("float32")
    np.testing.assert_allclose(losses.pixel_loss(a, b, "l1"), np.abs(a - b).mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(losses.pixel_loss(a, b, "mse"), ((a - b) ** 2).mean(axis=(1, 2, 3)), rtol=1e-6)
    with pytest.raises(ValueError, match="pixel loss"):
        losses.pixel_loss(a, b, "huber")


def test_standard_gan_losses():
    real = np.array([[2.0], [-1.0]], "float32")
    fake = np.array([[0.5], [-3.0]], "float32")
    d = losses.discriminator_loss(real, fake, "standard").numpy()
    np.testing.assert_allclose(d, _bce(1, real[:, 0]) + _bce(0, fake[:, 0]), rtol=1e-5)
    g = losses.generator_adv_loss(real, fake, "standard").numpy()
    np.testing.assert_allclose(g, _bce(1, fake[:, 0]), rtol=1e-5)
    # at chance (logits 0) the discriminator loss is 2 log 2
    np.testing.assert_allclose(losses.discriminator_loss(np.zeros((1, 1)), np.zeros((1, 1))), [2 * np.log(2)],
                               rtol=1e-6)


def test_relativistic_average_gan_losses():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(4, 1)).astype("float32")
    fake = rng.normal(size=(4, 1)).astype("float32")
    r, f = real[:, 0], fake[:, 0]
    expected_d = _bce(1, r - f.mean()) + _bce(0, f - r.mean())
    np.testing.assert_allclose(losses.discriminator_loss(real, fake, "relativistic"), expected_d, rtol=1e-5)
    # the generator's loss is the discriminator's with the roles of real and fake swapped
    np.testing.assert_allclose(losses.generator_adv_loss(fake, real, "relativistic"), expected_d, rtol=1e-5)
    with pytest.raises(ValueError, match="adversarial"):
        losses.generator_adv_loss(real, fake, "wgan")


def test_content_loss_zero_for_identical_and_gradient_only_to_prediction():
    import keras

    inp = keras.Input((None, None, 1))
    vgg = keras.Model(inp, keras.layers.Conv2D(4, 3, padding="same")(inp))
    rng = np.random.default_rng(2)
    hr = tf.constant(rng.random((2, 8, 8, 1)), tf.float32)
    sr = tf.constant(rng.random((2, 8, 8, 1)), dtype=tf.float32)
    np.testing.assert_allclose(losses.content_loss(vgg, hr, hr), [0.0, 0.0], atol=1e-8)
    with tf.GradientTape() as tape:
        tape.watch([hr, sr])
        c = losses.content_loss(vgg, hr, sr)
        total = tf.reduce_sum(c)
    g_hr, g_sr = tape.gradient(total, [hr, sr])
    assert np.all(c.numpy() > 0)
    assert g_hr is None and float(tf.reduce_sum(tf.abs(g_sr))) > 0
    # the SRGAN rescaling: features x (1/12.75) -> loss x (1/12.75)^2
    raw = losses.content_loss(vgg, hr, sr, feature_scale=1.0)
    np.testing.assert_allclose(c, raw * losses.VGG_FEATURE_SCALE**2, rtol=1e-5)
