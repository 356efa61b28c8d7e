"""Training: overfit check, both phases, fit() and the custom loop, SIGTERM checkpoint + exact resume, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from _synthetic import synthetic_arrays, synthetic_dataset, write_tiny_dataset

from ctpet_srgan import losses, training
from ctpet_srgan.models import GeneratorConfig, build_discriminator, build_generator
from ctpet_srgan.vgg import load_vgg_features

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GEN = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="s2d")


def _cfg(**kw):
    base = dict(batch_size=4, patch_size=8, pretrain_steps=3, gan_steps=3, g_lr=1e-3, d_lr=1e-3,
                content_loss="none", d_filters=4, checkpoint_every=2, log_every=100, eval_every=0, eval_batches=1)
    return training.TrainConfig(**{**base, **kw})


def _weights(model):
    return [w.numpy().copy() for w in model.weights]


def _srgan(cfg, vgg=None):
    keras.utils.set_random_seed(0)
    m = training.SRGAN(build_generator(GEN), build_discriminator(4, num_stages=2), GEN, cfg, vgg=vgg)
    m.compile(keras.optimizers.Adam(cfg.g_lr), keras.optimizers.Adam(cfg.d_lr))
    return m


def test_fit_lowers_pixel_loss_on_a_tiny_batch():
    cfg = _cfg()
    m = _srgan(cfg)
    batch = synthetic_arrays(2, hr=16, seed=1)
    ds = tf.data.Dataset.from_tensors(batch).repeat()

    def pixel():
        return float(tf.reduce_mean(training.losses.pixel_loss(batch["hr_pet"], m(batch)["sr_pet"], "l1")))

    before = pixel()
    hist = m.fit(ds, steps_per_epoch=90, epochs=1, verbose=0)
    after = pixel()
    assert after < 0.7 * before, (before, after)
    assert hist.history["pixel"][0] > 0 and "d_loss" not in hist.history  # pre-training: no D


def test_fit_gan_phase_updates_discriminator_and_reports_metrics():
    cfg = _cfg(adv_loss="relativistic")
    m = _srgan(cfg)
    ds = synthetic_dataset(batch_size=2, n=4, hr=16)
    d0 = _weights(m.discriminator)
    m.fit(ds, steps_per_epoch=1, epochs=1, verbose=0)  # pre-training: D untouched
    assert all(np.array_equal(a, b) for a, b in zip(d0, _weights(m.discriminator)))
    m.set_phase("gan")
    hist = m.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    assert not all(np.array_equal(a, b) for a, b in zip(d0, _weights(m.discriminator)))
    assert hist.history["d_loss"][0] > 0 and hist.history["adv"][0] > 0
    val = m.evaluate(synthetic_dataset(batch_size=2, n=2, hr=16, repeat=False), return_dict=True, verbose=0)
    assert 5 < val["psnr"] < 80 and 0 < val["ssim"] <= 1


def test_gan_phase_discriminator_learns_to_tell_interpolation_from_truth():
    # G frozen (g_lr=0) at its zero-initialised start, i.e. bilinear interpolation: the GAN step must teach D to
    # score the truth above it (in the demo run D(real) = D(fake) = 0.5, so this shows D can learn at all).
    cfg = _cfg(g_lr=0.0, d_lr=2e-3)
    m = _srgan(cfg)
    m.set_phase("gan")
    m.fit(synthetic_dataset(batch_size=4, n=16, hr=16), steps_per_epoch=80, epochs=1, verbose=0)
    b = {k: tf.constant(v) for k, v in synthetic_arrays(8, hr=16, seed=5).items()}
    real = m.discriminator({"pet": b["hr_pet"], "ct": b["hr_ct"]})
    fake = m.discriminator({"pet": m(b)["sr_pet"], "ct": b["hr_ct"]})
    # Decisions of the configured loss (the default is relativistic: only C(real) - C(fake) carries meaning).
    acc = float(tf.reduce_mean(losses.discriminator_accuracy(real, fake, cfg.adv_loss)))
    assert acc >= 0.9, (cfg.adv_loss, real.numpy().ravel(), fake.numpy().ravel())


def _trainer(model_dir, cfg, resume=False, on_step=None, vgg=None, label="none"):
    return training.Trainer(
        gen_cfg=GEN, cfg=cfg, model_dir=model_dir, strategy=tf.distribute.get_strategy(),
        train_dataset_fn=lambda seed: synthetic_dataset(cfg.batch_size, n=8, hr=16, seed=seed),
        val_dataset_fn=lambda: synthetic_dataset(2, n=2, hr=16, repeat=False, shuffle=False),
        run_config={"generator": GEN.to_dict(), "vgg": label}, resume=resume, vgg=vgg, vgg_label=label,
        on_step=on_step)


def test_custom_loop_runs_both_phases_and_writes_outputs(tmp_path):
    vgg, label = load_vgg_features("random", "block1_conv2")
    cfg = _cfg(pretrain_steps=2, gan_steps=2, content_loss="vgg", vgg_weights="random", eval_every=2, log_every=1)
    seen = {}
    t = _trainer(tmp_path, cfg, vgg=vgg, label=label)
    g0, d0 = _weights(t.generator), _weights(t.discriminator)
    t.on_step = lambda s: seen.setdefault(s, (_weights(t.generator), _weights(t.discriminator)))
    metrics = t.fit()
    assert int(t.step.numpy()) == 4 and int(t.phase.numpy()) == 1
    g2, d2 = seen[2]
    assert all(np.array_equal(a, b) for a, b in zip(d0, d2))  # D frozen in pre-training
    assert not all(np.array_equal(a, b) for a, b in zip(g0, g2))
    assert not all(np.array_equal(a, b) for a, b in zip(d2, seen[4][1]))  # D trained in the GAN phase
    assert {"psnr", "ssim", "psnr_bicubic", "val_pixel"} <= set(metrics)
    assert json.loads((tmp_path / "run_config.json").read_text())["vgg"] == label
    g = keras.saving.load_model(tmp_path / "best_generator.keras", safe_mode=True)
    x = synthetic_arrays(1, hr=16)
    np.testing.assert_allclose(g({"lr_pet": x["lr_pet"], "hr_ct": x["hr_ct"]})["sr_pet"],
                               keras.saving.load_model(tmp_path / "generator.keras", safe_mode=True)(
                                   {"lr_pet": x["lr_pet"], "hr_ct": x["hr_ct"]})["sr_pet"], atol=1e-2)
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-4")
    tags = set()
    for sub in ("train", "val"):
        for f in (tmp_path / "logs" / sub).iterdir():
            for ev in tf.compat.v1.train.summary_iterator(str(f)):
                tags.update(v.tag for v in ev.summary.value)
    assert {"loss/pixel", "loss/content", "loss/d_loss", "lr/generator", "val/psnr", "val/ssim",
            "panels/lr_bicubic_sr_hr_pet", "panels/sr_pet_on_ct"} <= tags


def test_sigterm_checkpoint_then_resume_equals_uninterrupted_run(tmp_path):
    cfg = _cfg(pretrain_steps=3, gan_steps=3, checkpoint_every=4)
    full = _trainer(tmp_path / "full", cfg)
    full.fit()
    expected = _weights(full.generator) + _weights(full.discriminator)

    def kill_at_3(step):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        part = _trainer(tmp_path / "part", cfg, on_step=kill_at_3)
        part.install_signal_handlers()
        with pytest.raises(training.Interrupted) as e:
            part.fit()
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])
    assert e.value.step == 3 and e.value.signum == signal.SIGTERM
    assert tf.train.latest_checkpoint(str(tmp_path / "part" / "ckpt")).endswith("ckpt-3")
    with pytest.raises(FileExistsError, match="--resume"):
        _trainer(tmp_path / "part", cfg)
    resumed = _trainer(tmp_path / "part", cfg, resume=True)
    assert int(resumed.step.numpy()) == 3
    resumed.fit()
    assert int(resumed.step.numpy()) == 6
    got = _weights(resumed.generator) + _weights(resumed.discriminator)
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(resumed.model.g_optimizer.iterations.numpy(), full.model.g_optimizer.iterations)


def _run(args, **kw):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, os.path.join(ROOT, "train_keras.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120, **kw)


def test_cli_missing_vgg_weights_is_a_clear_error(tmp_path):
    missing = tmp_path / "vgg19.h5"
    r = _run([f"--data_dir={tmp_path / 'data'}", f"--model_dir={tmp_path / 'm'}", f"--vgg_weights={missing}"])
    assert r.returncode != 0
    assert str(missing) in r.stderr and "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5" in r.stderr
    assert "--vgg_weights=random" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m").exists()


TINY = ["--filters=8", "--num_blocks=1", "--d_filters=4", "--batch_size=4", "--patch_size=8", "--log_every=1",
        "--eval_every=0", "--eval_batches=1", "--content_loss=none", "--deterministic", "--checkpoint_every=2",
        "--strategy=default"]


def test_cli_sigterm_then_resume(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", hr=16, n_train=8, n_val=2)
    m = tmp_path / "m"
    args = [f"--data_dir={data}", f"--model_dir={m}", "--pretrain_steps=15", "--gan_steps=15", *TINY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, os.path.join(ROOT, "train_keras.py"), *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 90
        while tf.train.latest_checkpoint(str(m / "ckpt")) is None and p.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "rerun with --resume" in err
    stopped = int(tf.train.latest_checkpoint(str(m / "ckpt")).rsplit("-", 1)[1])
    assert 2 <= stopped < 15  # stopped in pre-training; the resumed run goes through the GAN phase
    assert not (m / "generator.keras").exists()  # an interrupted run does not look finished
    r = _run([*args, "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    assert "remapper failed" not in r.stderr  # grappler's non-error E-line of the GAN phase (train_keras.py)
    assert f"step {stopped + 1}/30" in r.stdout and "step 30/30 [gan]" in r.stdout
    assert "step 1/30" not in r.stdout
    assert (m / "generator.keras").exists()
    assert tf.train.latest_checkpoint(str(m / "ckpt")).endswith("ckpt-30")
    cfg = json.loads((m / "run_config.json").read_text())
    assert cfg["vgg"] == "none" and cfg["scale"] == 2 and cfg["steps"] == {"pretrain": 15, "gan": 15}


def test_mixed_float16_trains_both_phases(tmp_path):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        vgg, label = load_vgg_features("random", "block1_conv1")
        cfg = _cfg(pretrain_steps=1, gan_steps=1, content_loss="vgg", mixed_precision="mixed_float16")
        t = _trainer(tmp_path, cfg, vgg=vgg, label=label)
        g0 = _weights(t.generator)
        t.fit()
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert isinstance(t.model.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert len(t.history) == 2 and all(np.isfinite(list(h.values())).all() for h in t.history)
    assert {"content", "adv", "d_loss"} <= set(t.history[1])
    assert t.generator.weights[0].dtype == "float32"  # float32 master weights
    assert not all(np.array_equal(a, b) for a, b in zip(g0, _weights(t.generator)))


def test_xla_compiled_steps_match_eager_steps(tmp_path):
    runs = []
    for jit in (False, True):
        t = _trainer(tmp_path / str(jit), _cfg(pretrain_steps=1, gan_steps=1, jit_compile=jit))
        t.fit()
        runs.append((t.history, _weights(t.generator)))
    (h0, w0), (h1, w1) = runs
    assert set(h1[1]) == set(h0[1]) and "d_loss" in h1[1]
    for a, b in zip(h0, h1):
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-4, atol=1e-6)
    for a, b in zip(w0, w1):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_pet_only_model_trains_without_ct_inputs():
    gen = GeneratorConfig(scale=2, filters=8, num_blocks=1, ct_mode="none")
    cfg = _cfg()
    m = training.SRGAN(build_generator(gen), build_discriminator(4, num_stages=2), gen, cfg)
    m.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
    assert set(m.generator.input) == {"lr_pet"}
    ds = synthetic_dataset(batch_size=2, n=4, hr=16)
    m.set_phase("gan")
    hist = m.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)
    assert np.isfinite(hist.history["g_loss"][0]) and hist.history["d_loss"][0] > 0


def test_spectral_norm_discriminator_trains_checkpoints_and_resumes(tmp_path):
    cfg = _cfg(pretrain_steps=1, gan_steps=3, d_spectral_norm=True)
    t = _trainer(tmp_path, cfg)
    sn = [layer for layer in t.discriminator.layers if isinstance(layer, keras.layers.SpectralNormalization)]
    assert sn and not any(isinstance(layer, keras.layers.SpectralNormalization) for layer in
                          _trainer(tmp_path / "plain", _cfg(pretrain_steps=0, gan_steps=0)).discriminator.layers)
    u0 = [v.numpy().copy() for layer in sn for v in layer.non_trainable_weights]
    d0 = _weights(t.discriminator)
    t.fit()
    assert int(t.step.numpy()) == 4
    d1 = _weights(t.discriminator)
    assert not all(np.array_equal(a, b) for a, b in zip(d0, d1))  # D trained in the GAN phase
    u1 = [v.numpy() for layer in sn for v in layer.non_trainable_weights]
    assert not all(np.array_equal(a, b) for a, b in zip(u0, u1))  # the power iteration ran
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")).endswith("ckpt-4")
    assert json.loads((tmp_path / "run_config.json").read_text()).get("generator") == GEN.to_dict()
    resumed = _trainer(tmp_path, cfg, resume=True)
    assert int(resumed.step.numpy()) == 4
    for a, b in zip(d1, _weights(resumed.discriminator)):  # kernels and power-iteration vectors restored
        np.testing.assert_array_equal(a, b)
