"""Generator / discriminator: shapes, parameter counts, interpolation start, mixed precision, safe_mode reload."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ctpet_srgan.models import GeneratorConfig, build_discriminator, build_generator


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def expected_generator_params(scale, f, blocks, ct_mode, k=1):
    """Parameter count written out from the architecture description (independent of the Keras code)."""
    n = _conv(9, k, f) + f  # PET encoder conv + PReLU (k context slices in)
    if ct_mode != "none":
        n += _conv(9, k * (scale * scale if ct_mode == "s2d" else 1), f) + f  # CT encoder
        n += _conv(1, 2 * f, f)  # merge
    n += blocks * (2 * _conv(3, f, f) + f) + _conv(3, f, f)  # residual blocks + trunk conv
    n += int(np.log2(scale)) * (_conv(3, f, 4 * f) + f)  # x2 stages: conv, sub-pixel, PReLU
    n += _conv(3, f, 1 if ct_mode == "none" else 2)  # one 3x3 head: HR PET (and HR CT) channels
    return n


def _inputs(cfg, h=6, w=5, b=2, seed=0):
    rng = np.random.default_rng(seed)
    s = cfg.scale
    all_in = {"lr_pet": rng.random((b, h, w, 1)), "lr_ct": rng.random((b, h, w, 1)),
              "hr_ct": rng.random((b, h * s, w * s, 1))}
    return {k: all_in[k].astype("float32") for k in cfg.input_names()}


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("ct_mode", ["s2d", "lr", "none"])
def test_generator_shapes_and_parameter_counts(scale, ct_mode):
    cfg = GeneratorConfig(scale=scale, filters=8, num_blocks=2, ct_mode=ct_mode)
    g = build_generator(cfg)
    assert g.count_params() == expected_generator_params(scale, 8, 2, ct_mode)
    out = g(_inputs(cfg, h=6, w=5))
    assert set(out) == ({"sr_pet"} if ct_mode == "none" else {"sr_pet", "sr_ct"})
    for v in out.values():
        assert tuple(v.shape) == (2, 6 * scale, 5 * scale, 1)
    # fully convolutional: another size works with the same model
    assert tuple(g(_inputs(cfg, h=3, w=7, b=1))["sr_pet"].shape) == (1, 3 * scale, 7 * scale, 1)


def test_full_size_srgan_generator_parameter_count():
    cfg = GeneratorConfig(scale=4, filters=64, num_blocks=16, ct_mode="none")
    # SRResNet x4 without batch norm: ~1.5 M parameters (SRGAN paper's generator has 1.55 M with BN)
    n = build_generator(cfg).count_params()
    assert n == expected_generator_params(4, 64, 16, "none")
    assert 1.4e6 < n < 1.6e6


def test_untrained_generator_starts_from_interpolation():
    cfg = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="s2d")
    x = _inputs(cfg, h=8, w=8)
    out = build_generator(cfg)(x)
    bilinear = tf.image.resize(x["lr_pet"], (16, 16), method="bilinear")
    np.testing.assert_allclose(out["sr_pet"].numpy(), bilinear.numpy(), atol=1e-6)
    np.testing.assert_allclose(out["sr_ct"].numpy(), x["hr_ct"], atol=1e-6)


def test_ct_input_changes_pet_output_only_with_ct_branch():
    cfg = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="lr")
    g = build_generator(cfg)
    for w in g.get_layer("head").weights:  # non-zero head so the trunk reaches the output
        w.assign(tf.random.normal(w.shape, stddev=0.1, seed=1))
    x = _inputs(cfg)
    y = dict(x, lr_ct=x["lr_ct"] + 0.5)
    assert not np.allclose(g(x)["sr_pet"], g(y)["sr_pet"])


def test_mixed_precision_outputs_are_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        cfg = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="s2d")
        out = build_generator(cfg)(_inputs(cfg))
        d = build_discriminator(filters=4, num_stages=2)
        logits = d({"pet": out["sr_pet"], "ct": out["sr_ct"]})
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out["sr_pet"].dtype == tf.float32 and out["sr_ct"].dtype == tf.float32
    assert logits.dtype == tf.float32


@pytest.mark.parametrize("size", [16, 24, 40])
def test_discriminator_any_patch_size(size):
    d = build_discriminator(filters=4, num_stages=3)
    x = {"pet": np.zeros((3, size, size, 1), "float32"), "ct": np.ones((3, size, size, 1), "float32")}
    assert tuple(d(x).shape) == (3, 1)


def test_discriminator_uses_ct_context():
    d = build_discriminator(filters=4, num_stages=2)
    rng = np.random.default_rng(0)
    pet = rng.random((2, 16, 16, 1)).astype("float32")
    a = d({"pet": pet, "ct": np.zeros_like(pet)})
    b = d({"pet": pet, "ct": rng.random(pet.shape).astype("float32")})
    assert not np.allclose(a, b)


def test_saved_generator_reloads_with_safe_mode(tmp_path):
    cfg = GeneratorConfig(scale=4, filters=8, num_blocks=1, ct_mode="s2d")
    g = build_generator(cfg)
    for w in g.weights:
        w.assign(tf.random.normal(w.shape, stddev=0.05, seed=2))
    x = _inputs(cfg)
    path = tmp_path / "g.keras"
    g.save(path)
    g2 = keras.saving.load_model(path, safe_mode=True)
    for k, v in g(x).items():
        np.testing.assert_allclose(g2(x)[k].numpy(), v.numpy(), rtol=1e-6, atol=1e-6)


def test_generator_config_round_trip_and_validation():
    cfg = GeneratorConfig(scale=4, filters=16, num_blocks=3, ct_mode="lr")
    assert GeneratorConfig.from_dict({**cfg.to_dict(), "unrelated": 1}) == cfg
    with pytest.raises(ValueError, match="scale"):
        GeneratorConfig(scale=3)
    with pytest.raises(ValueError, match="ct_mode"):
        GeneratorConfig(ct_mode="hr")


def test_spectral_norm_discriminator_normalises_its_kernels_and_reloads_with_safe_mode(tmp_path):
    d = build_discriminator(filters=4, num_stages=2, spectral_norm=True)
    plain = build_discriminator(filters=4, num_stages=2)
    wrapped = [layer for layer in d.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert len(wrapped) == 2 + 2 + 1 + 1  # d_conv0..3, d_dense, d_logits
    assert d.count_params() == plain.count_params() + sum(int(w.layer.kernel.shape[-1]) for w in wrapped)  # + u
    rng = np.random.default_rng(1)
    x = {"pet": rng.random((2, 16, 16, 1)).astype("float32"), "ct": rng.random((2, 16, 16, 1)).astype("float32")}
    for w in wrapped:  # big weights: spectral norms well above 1 before normalisation
        w.layer.kernel.assign(3.0 * tf.random.normal(w.layer.kernel.shape, seed=3))
    for _ in range(30):  # one power iteration per training call
        out = d(x, training=True)
    assert out.shape == (2, 1) and out.dtype == "float32"
    for w in wrapped:
        k = w.layer.kernel.numpy().reshape(-1, w.layer.kernel.shape[-1])
        assert np.linalg.svd(k, compute_uv=False)[0] == pytest.approx(1.0, abs=0.05), w.name
    path = tmp_path / "d.keras"
    d.save(path)
    d2 = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(d2(x).numpy(), d(x).numpy(), rtol=1e-5, atol=1e-6)


def test_spectral_norm_discriminator_keeps_float32_logits_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        d = build_discriminator(filters=4, num_stages=2, spectral_norm=True)
        x = {"pet": np.zeros((1, 8, 8, 1), "float32"), "ct": np.zeros((1, 8, 8, 1), "float32")}
        assert d(x, training=True).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_ct_input_of_each_built_generator_and_a_mismatched_ct_mode():
    from ctpet_srgan.models import CT_INPUT_OF_MODE, ct_input_of

    for mode in ("s2d", "lr", "none"):
        cfg = GeneratorConfig(scale=2, filters=4, num_blocks=0, ct_mode=mode)
        names = [t.name for t in build_generator(cfg).inputs]
        assert tuple(sorted(names)) == tuple(sorted(cfg.input_names()))
        assert ct_input_of(names, mode) == CT_INPUT_OF_MODE[mode] == {"s2d": "hr", "lr": "lr", "none": None}[mode]
    with pytest.raises(ValueError, match="does not match"):
        ct_input_of(["lr_pet", "lr_ct"], "s2d")
    with pytest.raises(ValueError, match="does not match"):
        ct_input_of(["lr_pet"], "lr")


@pytest.mark.parametrize("ct_mode", ["s2d", "lr", "none"])
def test_context_generator_takes_k_slices_and_returns_the_centre(ct_mode):
    k = 3
    cfg = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode=ct_mode, context_slices=k)
    g = build_generator(cfg)
    assert g.count_params() == expected_generator_params(2, 8, 1, ct_mode, k=3)
    rng = np.random.default_rng(1)
    x = {"lr_pet": rng.random((2, 6, 5, k)), "lr_ct": rng.random((2, 6, 5, k)), "hr_ct": rng.random((2, 12, 10, k))}
    x = {n: x[n].astype("float32") for n in cfg.input_names()}
    out = g(x)
    assert tuple(out["sr_pet"].shape) == (2, 12, 10, 1)
    # untrained (zero head): the interpolated CENTRE slice, not a neighbour
    up = tf.image.resize(x["lr_pet"][..., 1:2], (12, 10), method="bilinear").numpy()
    np.testing.assert_allclose(out["sr_pet"].numpy(), up, atol=1e-5)
    if ct_mode == "s2d":
        np.testing.assert_allclose(out["sr_ct"].numpy(), x["hr_ct"][..., 1:2], atol=1e-6)
    with pytest.raises(ValueError):  # one slice where three are expected
        g({n: v[..., :1] for n, v in x.items()})


def test_context_one_keeps_the_2d_layer_names_and_weights():
    a = build_generator(GeneratorConfig(scale=2, filters=8, num_blocks=2, ct_mode="s2d"))
    b = build_generator(GeneratorConfig(scale=2, filters=8, num_blocks=2, ct_mode="s2d", context_slices=1))
    assert [ly.name for ly in a.layers] == [ly.name for ly in b.layers]
    assert a.count_params() == b.count_params() == expected_generator_params(2, 8, 2, "s2d")
    assert not any("centre" in ly.name for ly in a.layers)
    c = build_generator(GeneratorConfig(scale=2, filters=8, num_blocks=2, ct_mode="s2d", context_slices=3))
    assert {ly.name for ly in a.layers} < {ly.name for ly in c.layers}  # K=3 adds only the centre slices


@pytest.mark.parametrize("bad", [0, 2, 4, -1, 1.0, True])
def test_context_slices_must_be_odd_positive(bad):
    with pytest.raises(ValueError, match="context_slices"):
        GeneratorConfig(context_slices=bad)


def test_context_generator_reloads_with_safe_mode(tmp_path):
    cfg = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="lr", context_slices=3)
    g = build_generator(cfg)
    p = tmp_path / "g.keras"
    g.save(p)
    h = keras.saving.load_model(p, safe_mode=True)
    x = {"lr_pet": np.random.default_rng(0).random((1, 4, 4, 3), "float32"),
         "lr_ct": np.random.default_rng(1).random((1, 4, 4, 3), "float32")}
    np.testing.assert_allclose(g(x)["sr_pet"].numpy(), h(x)["sr_pet"].numpy(), atol=1e-6)
